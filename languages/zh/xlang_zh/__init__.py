"""Chinese (中文, Simplified) for xlang: Han script, offline Debian corpora, en–zh parallel text, Chinese prompts."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, ScriptRange, Strategies, VocabularySource

_POOL = "pool/main/libr/libreoffice"
_HELP_ZH = f"{_POOL}/libreoffice-help-zh-cn_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_ZH_SHA256 = "db867cdece4c2f9c7eebe65e519c6cf386fdcf49d6e061db3dffec893b3e1dee"
_HELP_EN = f"{_POOL}/libreoffice-help-en-us_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_EN_SHA256 = "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"
_MANPAGES_ZH = "pool/main/m/manpages-zh/manpages-zh_1.6.4.0-1_all.deb"
_MANPAGES_ZH_SHA256 = "81bae29495f6445db290e3f329f1203eb19b651c2a7ea165b74ebdc853a32ac1"

SPEC = LanguageSpec(
    code="zh",
    name="Chinese",
    native_name="中文",
    # Han ideographs plus the full-width punctuation that Chinese text is written with (，。、：“”
    # are one in eight characters of it): merges across them are what make Chinese cheap to encode,
    # and English text never contains them, so the base model's English encoding stays untouched.
    scripts=(
        ScriptRange(name="CJK Unified Ideographs", start=0x4E00, end=0x9FFF),
        ScriptRange(name="CJK Unified Ideographs Extension A", start=0x3400, end=0x4DBF),
        ScriptRange(name="CJK Unified Ideographs Extensions B-F", start=0x20000, end=0x2EBEF),
        ScriptRange(name="CJK Compatibility Ideographs", start=0xF900, end=0xFAFF),
        ScriptRange(name="CJK Symbols and Punctuation", start=0x3000, end=0x303F),
        ScriptRange(name="Fullwidth Forms", start=0xFF01, end=0xFF5E),
    ),
    # Not NFKC: it would turn full-width ，：（） into ASCII and change how Chinese is written.
    normalizer="NFC",
    corpora=(
        CorpusSource(
            name="libreoffice-help-zh-cn",
            uri=f"debian://libreoffice-help?deb={_HELP_ZH}&sha256={_HELP_ZH_SHA256}&require=cjk&validation_chars=36000",
            license="MPL-2.0",
        ),
        CorpusSource(
            name="manpages-zh",
            uri=(
                f"debian://manpages?deb={_MANPAGES_ZH}&sha256={_MANPAGES_ZH_SHA256}"
                "&manpath=zh_CN&require=cjk&validation_chars=20000"
            ),
            license="GFDL-1.2-or-later",
        ),
        CorpusSource(
            name="libreoffice-help-en-zh",
            uri=(
                f"debian://libreoffice-help-parallel?deb={_HELP_EN}&sha256={_HELP_EN_SHA256}"
                f"&deb={_HELP_ZH}&sha256={_HELP_ZH_SHA256}&require=cjk&validation_chars=60000"
            ),
            parallel=("en", "zh"),
            license="MPL-2.0",
        ),
        CorpusSource(
            name="wikipedia-zh",
            uri="hf://wikimedia/wikipedia?config=20231101.zh&field=text&split=train",
            kind="hub",
            license="CC-BY-SA-4.0",
        ),
    ),
    vocabularies=(
        VocabularySource(name="jieba-dict", uri="pypi://jieba==0.42.1/jieba/dict.txt", license="MIT"),
        VocabularySource(
            name="wordfreq-zh",
            uri="pypi://wordfreq==3.1.1/wordfreq/data/large_zh.msgpack.gz",
            license="Apache-2.0 AND CC-BY-SA-4.0",
        ),
    ),
    prompts={
        "object-centric": (
            "请仔细观察图片中的各个物体，针对它们的种类、数量、颜色、形状、材质和状态等用户可能关心的方面提出问题，"
            "并只依据图片中清楚可见的内容给出详细、准确的回答。问题和回答都请用自然流畅的中文书写。"
        ),
        "location-centric": (
            "请针对图片中物体和人物所在的位置，以及它们之间的空间关系（上、下、左、右、前、后、旁边、里面）提出问题，"
            "并根据图片具体描述它们的空间布局。问题和回答都请用自然流畅的中文书写。"
        ),
        "atmosphere-centric": (
            "请就这张图片的氛围和给人的感受提出问题，并结合光线与色调、天气或时间、场所的性质、人物的表情与情绪等"
            "构成氛围的要素，生动地描述观看者得到的印象。问题和回答都请用自然流畅的中文书写。"
        ),
        "conversation": (
            "请编写一段用户与 AI 助手围绕这张图片进行的多轮自然对话：用户依次询问图片的内容、细节以及需要推理的问题，"
            "助手依据图片友好而准确地回答。对话全部使用自然流畅的中文。"
        ),
    },
    chat=ChatBits(
        system_prompt="你是一个能够理解图像和文字的得力 AI 助手。请用准确、友好、自然的中文回答用户的问题。",
        answer_in_language="请用中文回答。",
    ),
    defaults=Strategies(),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
