"""English for xlang: the base language, so no new script; its corpora anchor the bilingual mix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.hookspecs import hookimpl
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, Strategies

_HELP_EN = "pool/main/libr/libreoffice/libreoffice-help-en-us_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_EN_SHA256 = "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"

SPEC = LanguageSpec(
    code="en",
    name="English",
    native_name="English",
    # No target script: English is what the base model already reads; expansion adds nothing for it.
    scripts=(),
    normalizer="NFC",
    corpora=(
        CorpusSource(
            name="libreoffice-help-en-us",
            uri=f"debian://libreoffice-help?deb={_HELP_EN}&sha256={_HELP_EN_SHA256}",
            license="MPL-2.0",
        ),
        CorpusSource(
            name="wikipedia-en",
            uri="hf://wikimedia/wikipedia?config=20231101.en&field=text&split=train",
            kind="hub",
            license="CC-BY-SA-4.0",
        ),
    ),
    chat=ChatBits(
        system_prompt=(
            "You are a helpful AI assistant who understands images and text. Answer the user's questions "
            "accurately and kindly."
        ),
    ),
    companions=(),
    vit_data=(f"file://{Path(__file__).resolve().parent / 'vit_seed.jsonl'}",),
    defaults=Strategies(),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
