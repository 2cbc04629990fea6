"""A third-party plugin as a user would write it, for the end-to-end recipe test: two languages made of
real text (files written by the test from the cached corpora) and a tiny random CLIP vision tower.

The codes are from ISO 639's private-use range (`qaa`, `qab`): nothing in xlang knows them. The target
is written in Hangul, the companion in the base model's script. The folder with the data files comes
from `XLANG_TESTLANG_DATA`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from xlang import hookimpl
from xlang.contract import Options
from xlang.spec import ChatBits, CorpusSource, EvaluationSet, LanguageSpec, ScriptRange

DATA = Path(os.environ.get("XLANG_TESTLANG_DATA", "."))


def smoke_sets(code: str) -> tuple[EvaluationSet, ...]:
    """The `smoke` suite from the files the test writes (the first lines of the shipped languages' smoke files)."""
    return (
        EvaluationSet(name="open", suite="smoke", format="llava-bench", uri=(DATA / f"{code}_open.jsonl").as_uri()),
        EvaluationSet(name="choice", suite="smoke", format="mmbench-tsv", uri=(DATA / f"{code}_choice.tsv").as_uri()),
        EvaluationSet(name="short", suite="smoke", format="short-answer", uri=(DATA / f"{code}_short.jsonl").as_uri()),
    )


TARGET = LanguageSpec(
    code="qaa",
    name="Testish",
    native_name="Testish",
    scripts=(ScriptRange(name="Hangul Syllables", start=0xAC00, end=0xD7A3),),
    corpora=(CorpusSource(name="qaa-text", uri=(DATA / "qaa.jsonl").as_uri() + "?validation_chars=2000"),),
    chat=ChatBits(system_prompt="You answer in Testish."),
    companions=("qab",),
    vit_data=((DATA / "qaa_vit.jsonl").as_uri(),),
    evaluation_sets=smoke_sets("qaa"),
)
COMPANION = LanguageSpec(
    code="qab",
    name="Testish companion",
    corpora=(CorpusSource(name="qab-text", uri=(DATA / "qab.jsonl").as_uri() + "?validation_chars=2000"),),
    chat=ChatBits(system_prompt="You answer in the companion language."),
    vit_data=((DATA / "qab_vit.jsonl").as_uri(),),
    evaluation_sets=smoke_sets("qab"),
)

NO_VIT_DATA = TARGET.model_copy(update={"code": "qac", "name": "Testish without images", "vit_data": ()})
"""The target language again, without visual-instruction data of its own."""


class TinyClipOptions(Options):
    hidden_size: int = Field(default=32, gt=0)
    seed: int = 0


def tiny_clip(*, image_size: int | None, options: TinyClipOptions) -> tuple[Any, Any]:
    """A one-layer random CLIP vision tower and an image processor sized to it (weights are not the point)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    size = image_size or 28
    torch.manual_seed(options.seed)
    config = CLIPVisionConfig(
        hidden_size=options.hidden_size,
        intermediate_size=2 * options.hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=size,
        patch_size=14,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPVisionModel(config).eval(), processor


@hookimpl
def register_languages(register: Any) -> None:
    register(TARGET)
    register(COMPANION)
    register(NO_VIT_DATA)


@hookimpl
def register_vision_towers(register: Any) -> None:
    register("tiny-clip", tiny_clip, options=TinyClipOptions)
