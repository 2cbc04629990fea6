"""Built-in vision pieces: the `hf` vision tower and `load_vit_data` for `file://` LLaVA JSONL and `hf://`
hub datasets in the same format (other URIs return None so that a plugin can claim them).

The work is in `xlang.vlm.towers` and `xlang.vlm.data`; importing this module stays light (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from xlang.contract import Options
from xlang.hookspecs import hookimpl
from xlang.vlm.data import load_vit_uri


class HfTowerOptions(Options):
    """Where the `hf` tower's weights are."""

    path: str = Field(min_length=1)
    """A local Hugging Face folder or a hub id of a vision model (CLIP, SigLIP, DINOv2, or a dual encoder
    whose vision half is taken), with safetensors weights."""


def hf_tower(options: HfTowerOptions) -> tuple[Any, Any]:
    """The tower loader: the model at `options.path` and its own image processor. It takes no `image_size`:
    assembly applies a requested size where the tower allows it (DINOv2) and refuses it where not."""
    from xlang.vlm.towers import load_hf_tower

    return load_hf_tower(options.path)


@hookimpl
def register_vision_towers(register: Any) -> None:
    register("hf", hf_tower, options=HfTowerOptions)


@hookimpl
def load_vit_data(uri: str, cache_dir: Any) -> Any:
    """Records `{"id", "image", "lang", "task", "conversations", ...}` when the URI is ours, else None."""
    if not isinstance(uri, str):
        return None
    return load_vit_uri(uri, Path(cache_dir) if cache_dir is not None else None)
