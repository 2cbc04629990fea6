"""Chinese (中文, Simplified) for xlang: Han script, offline Debian corpora, en–zh parallel text, seed VIT data."""

from __future__ import annotations

from pathlib import Path
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

_FONT = (  # Droid Sans Fallback draws Hangul and Han: the report's images use it when no installed font does
    "debian://file?deb=pool/main/f/fonts-android/fonts-droid-fallback_6.0.1r16-1.1_all.deb"
    "&sha256=d2096d4edde128fedf6749be2dd204a5810210a6201126d99b8d412344f71056"
    "&path=usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf"
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
        ),
    ),
    chat=ChatBits(
        system_prompt="你是一个能够理解图像和文字的得力 AI 助手。请用准确、友好、自然的中文回答用户的问题。",
    ),
    companions=("en",),
    vit_data=(f"file://{Path(__file__).resolve().parent / 'vit_seed.jsonl'}",),
    font=_FONT,
    defaults=Strategies(),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
