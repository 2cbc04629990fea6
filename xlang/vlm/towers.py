"""Vision towers: what assembly needs to know about one, and the `hf` loader for Hugging Face folders.

A tower reaches assembly through a loader (a `vision_towers` strategy): `loader(cache_dir=, image_size=)
-> (vision_model, image_processor)`. This module turns that pair into a `VisionTower`, checks the
requested image size against what the tower allows, and loads a tower from a local folder or hub id
(`load_hf_tower`: CLIP, SigLIP, DINOv2..., safetensors only). A full dual-encoder folder (CLIPModel,
SiglipModel) contributes its `vision_config` and vision weights only.

What LLaVA needs to know about a tower is how many tokens an image becomes: one per patch, plus the
class token and register tokens the encoder prepends (`extra_tokens`); the `default` feature
strategy drops the first of those, `full` keeps them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlang.assets.loading import load_pretrained
from xlang.errors import XlangError

TowerLoader = Callable[..., tuple[Any, Any]]
"""`loader(cache_dir=Path, image_size=int | None) -> (vision_model, image_processor)`."""
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


def tower_from_loader(loader: TowerLoader, cache_dir: Path, *, image_size: int | None, source: str) -> VisionTower:
    """Call a tower loader and check what it returns: a vision model with a patch size, and a processor."""
    loaded = loader(cache_dir=Path(cache_dir), image_size=image_size)
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise XlangError(
            f"vision tower {source!r} returned {type(loaded).__name__}, not (vision_model, image_processor); "
            "fix the plugin that registers it"
        )
    model, image_processor = loaded
    if getattr(getattr(model, "config", None), "patch_size", None) is None or image_processor is None:
        raise XlangError(
            f"vision tower {source!r} did not return a vision model with a patch size and an image processor; "
            "fix the plugin that registers it"
        )
    model.eval()
    return wrap_tower(model, image_processor, image_size=image_size, source=source)


def load_hf_tower(path: str, *, dtype: Any = None) -> tuple[Any, Any]:
    """(vision model, image processor) from a local Hugging Face folder or a hub id, safetensors weights only.

    A dual encoder (CLIP, SigLIP) gives its vision half. Remote code stays off, and weights that only come
    as pickles (`pytorch_model.bin`) are refused: xlang never unpickles.
    """
    import torch
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    folder = Path(path).expanduser()
    if folder.exists():
        if not (folder / "config.json").is_file():
            raise XlangError(
                f"vision tower folder {folder} has no config.json; point `path` at a Hugging Face model folder"
            )
        where = str(folder)
    elif path.count("/") == 1 and not path.startswith((".", "/", "~")):
        where = path
    else:
        raise XlangError(
            f"vision tower path {path!r} is neither an existing folder nor a hub id (owner/name); fix `path`"
        )
    try:
        vision_config = vision_config_of(load_pretrained(AutoConfig, where, weights=False))
        image_processor = load_pretrained(AutoImageProcessor, where, weights=False)
    except (OSError, ValueError) as error:
        raise XlangError(f"cannot load vision tower {path!r}: {error}") from error
    model_class = MODEL_MAPPING.get(type(vision_config), None)
    if model_class is None or getattr(vision_config, "patch_size", None) is None:
        raise XlangError(
            f"{path} holds a {vision_config.model_type!r} model, not a vision tower transformers can build "
            "(CLIP, SigLIP, DINOv2, ...); choose a vision model"
        )
    refusal = (
        "xlang loads safetensors only (it never unpickles): save the checkpoint again with transformers' "
        "save_pretrained, or choose another tower"
    )
    if folder.exists() and not any(folder.glob("*.safetensors")):
        raise XlangError(f"vision tower folder {folder} has no safetensors weights; {refusal}")
    model = load_pretrained(model_class, where, config=vision_config, dtype=dtype or torch.float32)
    model.eval()
    return model, image_processor
