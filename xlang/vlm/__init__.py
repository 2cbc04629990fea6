"""Vision stage: assemble a LLaVA (tower + projector + extended LLM), align it (stage 1), instruction-tune
it in several languages (stage 2), export a plain `LlavaForConditionalGeneration` folder, report.

    build_llava(llm_path, cache_dir, target, vision_tower=loader, system_prompts=..., target_lang=...,
                config=AssembleConfig())
    train_vit_stage(model_dir, records, AlignConfig(), out_dir, default_lang=CODE)      # -> out_dir/model
    train_vit_stage(stage1_model, records, InstructConfig(), out_dir, default_lang=CODE)  # -> out_dir/model
    before_after_report(stage1_model, stage2_model, heldout_records, report_dir, languages=specs)

A tower `loader` is a `vision_towers` strategy with its options bound; records come from the
`load_vit_data` hook (`file://PATH.jsonl`, `hf://...`), usually the languages' own `vit_data`. This
package never reaches the plugin manager: the recipe looks things up and passes them in. Importing it is
light: torch loads inside the functions that need it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "AssembleConfig": "xlang.vlm.config",
    "AlignConfig": "xlang.vlm.config",
    "InstructConfig": "xlang.vlm.config",
    "VitStageConfig": "xlang.vlm.config",
    "build_llava": "xlang.vlm.assemble",
    "base_chat_template": "xlang.vlm.assemble",
    "build_chat_template": "xlang.vlm.assemble",
    "train_vit_stage": "xlang.vlm.train",
    "before_after_report": "xlang.vlm.report",
    "report_fonts": "xlang.vlm.report",
    "answer_without_xlang": "xlang.vlm.export",
    "save_llava": "xlang.vlm.export",
    "load_vit_uri": "xlang.vlm.data",
    "read_vit_jsonl": "xlang.vlm.data",
    "split_heldout": "xlang.vlm.data",
    "load_image": "xlang.vlm.images",
    "load_hf_tower": "xlang.vlm.towers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xlang.vlm' has no attribute {name!r}")
