"""English for xlang: the base language, so no new script; its corpora anchor the bilingual mix."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl
from xlang.spec import ChatBits, CorpusSource, LanguageSpec, Strategies, VocabularySource

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
    vocabularies=(
        VocabularySource(
            name="wordfreq-en",
            uri="pypi://wordfreq==3.1.1/wordfreq/data/large_en.msgpack.gz",
            license="Apache-2.0 AND CC-BY-SA-4.0",
        ),
    ),
    prompts={
        "object-centric": (
            "Look at the objects in the image one by one. Ask questions a user might have about their kind, "
            "number, color, shape, material and condition, and answer each in detail using only what is "
            "clearly visible in the image. Write the questions and answers in natural English."
        ),
        "location-centric": (
            "Ask questions about where the objects and people in the image are and how they are placed "
            "relative to each other (above, below, left, right, in front of, behind, next to, inside), and "
            "answer by describing the spatial layout concretely, based on the image. Write in natural English."
        ),
        "atmosphere-centric": (
            "Ask about the mood and feeling of this image, and answer with a rich description of the "
            "impression it gives, grounded in what creates it: light and color, weather or time of day, the "
            "kind of place, people's expressions and emotions. Write in natural English."
        ),
        "conversation": (
            "Write a natural multi-turn conversation between a user looking at this image and an AI assistant. "
            "The user asks in turn about its content, its details and things that need reasoning; the assistant "
            "answers helpfully and accurately from the image. Write the whole conversation in natural English."
        ),
    },
    chat=ChatBits(
        system_prompt=(
            "You are a helpful AI assistant who understands images and text. Answer the user's questions "
            "accurately and kindly."
        ),
        answer_in_language="Answer in English.",
    ),
    defaults=Strategies(),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
