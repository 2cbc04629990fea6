"""English for xlang: the base language, so no new script; its corpora anchor the bilingual mix."""

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
    evaluation_sets_in,
)

_HELP_EN = "pool/main/libr/libreoffice/libreoffice-help-en-us_7.4.7-1%2Bdeb12u14_all.deb"
_HELP_EN_SHA256 = "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712"

PROMPTS = TeacherPrompts(
    system=(
        "You write visual-instruction training data. Answer in natural English, using only what the image "
        "actually shows; do not invent what cannot be seen."
    ),
    tasks={
        "caption": TaskPrompts(
            questions=(
                "Describe the image briefly.",
                "Summarize this photo in one or two sentences.",
                "What does this photo show?",
            ),
            guidance="Summarize the whole image in one or two sentences.",
        ),
        "object-centric": TaskPrompts(
            questions=(
                "What are the main objects in this photo, and what are they like?",
                "Describe the objects you can see in detail.",
                "What colour, shape and material is the most noticeable object?",
                "What might the things in this photo be used for?",
            ),
            guidance="Describe visible attributes concretely: kind, number, colour, shape and material.",
        ),
        "location-centric": TaskPrompts(
            questions=(
                "Where in the photo is the main subject?",
                "Describe how the objects in the photo are placed relative to each other.",
                "What is in the background, and what is in the foreground?",
                "What can be seen on the left and on the right?",
            ),
            guidance="Say clearly where things are: above, below, left, right, in front, behind.",
        ),
        "atmosphere-centric": TaskPrompts(
            questions=(
                "What is the mood of this photo?",
                "How does this photo feel, and why?",
                "How do the light and colours shape the atmosphere?",
                "What situation or time of day does this scene suggest?",
            ),
            guidance="Describe the atmosphere and what in the light, colours, faces or setting creates it.",
        ),
        "conversation": TaskPrompts(
            questions=(
                "What can you see in the photo?",
                "What is the most interesting part of it?",
                "What seems to be happening in this scene?",
                "Where might this photo have been taken?",
                "What else can we tell from this photo?",
            ),
            turns=3,
            guidance="Answer as in a conversation, following on from the earlier questions and answers.",
        ),
    },
    translate=(
        "Rewrite the following text in natural English, keeping its meaning; write only the translation.\n\n{text}"
    ),
)

_EVAL = Path(__file__).resolve().parent / "eval"
EVALUATION_SETS = (
    # written for the seed photos held out of training (coffee, chelsea, flower)
    *evaluation_sets_in(_EVAL / "smoke", "smoke"),
    # needs the hub; MMBench (OpenCompass), English
    EvaluationSet(name="mmbench-en", suite="full", format="mmbench-tsv", uri="hf://lmms-lab/MMBench_EN?split=dev"),
    # needs the hub; LLaVA-Bench (in-the-wild)
    EvaluationSet(
        name="llava-bench-wild",
        suite="full",
        format="llava-bench",
        uri="hf://lmms-lab/llava-bench-in-the-wild?split=train",
    ),
)


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
    prompts=PROMPTS,
    evaluation_sets=EVALUATION_SETS,
    # English shares the base model's script, so `scripts` is empty; a reply in English is told apart from
    # one in another language by its Latin letters.
    reply_scripts=(
        ScriptRange(name="Basic Latin letters (upper)", start=0x41, end=0x5A),
        ScriptRange(name="Basic Latin letters (lower)", start=0x61, end=0x7A),
        ScriptRange(name="Latin-1 letters", start=0xC0, end=0xFF),
        ScriptRange(name="Latin Extended-A", start=0x100, end=0x17F),
    ),
    defaults=Strategies(),
)


@hookimpl
def register_languages(register: Any) -> None:
    register(SPEC)
