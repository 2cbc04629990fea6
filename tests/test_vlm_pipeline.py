"""The real thing, small: SmolLM2-135M + the converted DINOv2-small (the `xlang-dinov2` plugin's tower, 56 px,
16 image tokens) through stage 1 and stage 2 on the language plugins' seed data, then the exported folder
answers a Korean question in a process where xlang cannot be imported."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SYSTEM_PROMPTS = {"en": "Be helpful.", "ko": "친절하게 답하세요.", "zh": "请友好地回答。"}


def hangul_share(text: str) -> float:
    visible = [c for c in text if not c.isspace()]
    return sum(0xAC00 <= ord(c) <= 0xD7A3 for c in visible) / max(1, len(visible))


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, test_cache_dir: Path) -> dict[str, Any]:
    from xlang import plugins
    from xlang.vlm.assemble import build_llava
    from xlang.vlm.config import AlignConfig, AssembleConfig, InstructConfig
    from xlang.vlm.data import load_vit_uri, split_heldout
    from xlang.vlm.train import train_vit_stage

    pm = plugins.make_plugin_manager()
    tower = plugins.get_strategy("vision_towers", "dinov2-small", pm)
    root = tmp_path_factory.mktemp("vlm-real")
    assembled = build_llava(
        str(smollm2_dir),
        test_cache_dir,
        root / "assembled",
        vision_tower=functools.partial(tower, options=tower.configure({})),
        system_prompts=SYSTEM_PROMPTS,
        target_lang="ko",
        config=AssembleConfig(image_size=56),
    )
    records, _ = split_heldout(
        [r for code in ("en", "ko", "zh") for uri in plugins.get_language(code, pm).vit_data for r in load_vit_uri(uri)]
    )
    align = train_vit_stage(
        assembled,
        records,
        AlignConfig(steps=4, micro_batch=4, lr=3e-3, eval_samples=4, lang_weights={"en": 1, "ko": 1}, progress=False),
        root / "stage1",
        default_lang="ko",
    )
    instruct = train_vit_stage(
        align.model_dir,
        records,
        InstructConfig(
            steps=6,
            micro_batch=2,
            lr=1e-3,
            eval_samples=4,
            lang_weights={"ko": 1},
            tasks=("caption", "object-centric"),
            progress=False,
        ),
        root / "stage2",
        default_lang="ko",
    )
    return {"align": align, "instruct": instruct, "root": root}


def test_both_stages_lower_the_loss_on_the_seed_data(stages: dict[str, Any]) -> None:
    for name in ("align", "instruct"):
        result = stages[name]
        assert not result.skipped
        assert result.eval_loss_end < result.eval_loss_start, (name, result.eval_loss_start, result.eval_loss_end)
    assert stages["align"].samples == 19 * 2  # en and ko captions of the training photos


def test_exported_model_answers_korean_without_xlang(stages: dict[str, Any], tmp_path: Path) -> None:
    from xlang.vlm.export import answer_without_xlang
    from xlang.vlm.images import export_png

    image = export_png("skimage:chelsea", tmp_path / "cat.png")  # a held-aside photo
    answer = answer_without_xlang(stages["instruct"].model_dir, image, "사진 속 동물은 무엇인가요?", max_new_tokens=16)
    assert answer["xlang_importable"] is False and answer["xlang_loaded"] is False
    assert answer["model_class"] == "LlavaForConditionalGeneration"
    for route in ("generate", "pipeline"):
        text = answer[route]
        assert text.strip() and hangul_share(text) >= 0.5, (route, text)
