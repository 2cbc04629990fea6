"""Vision stage: assemble a LLaVA (tower + projector + extended LLM), align it (stage 1), instruction-tune
it in several languages (stage 2), export a plain `LlavaForConditionalGeneration` folder, report.

    build_llava(llm_path, cache_dir, target, system_prompts=..., target_lang=..., config=AssembleConfig())
    train_vit_stage(model_dir, records, AlignConfig(), out_dir)      # stage 1 -> out_dir/model
    train_vit_stage(stage1_model, records, InstructConfig(), out_dir)  # stage 2 -> out_dir/model
    before_after_report(stage1_model, stage2_model, heldout_records, report_dir)

Records come from `load_vit_uri("seed://?split=train")` (or the `load_vit_data` hook). Importing this
package is light: torch loads inside the functions that need it.
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
    "build_chat_template": "xlang.vlm.assemble",
    "train_vit_stage": "xlang.vlm.train",
    "before_after_report": "xlang.vlm.report",
    "answer_without_xlang": "xlang.vlm.export",
    "save_llava": "xlang.vlm.export",
    "load_vit_uri": "xlang.vlm.data",
    "seed_records": "xlang.vlm.data",
    "export_seed_files": "xlang.vlm.data",
    "load_image": "xlang.vlm.images",
    "ensure_dinov2_small": "xlang.vlm.dinov2_onnx",
    "load_vision_tower": "xlang.vlm.towers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xlang.vlm' has no attribute {name!r}")
