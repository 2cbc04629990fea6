"""Loading and saving model folders safely: safetensors only, no remote code, atomic writes.

A pickle checkpoint (``pytorch_model.bin``) can run arbitrary code when loaded, so a folder that has
nothing else is refused with a message instead of being unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.assets.loading import load_pretrained
from xlang.errors import XlangError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors(model_dir: str | Path) -> None:
    """Raise XlangError unless a local model folder holds safetensors weights.

    Hub ids (not a local folder) are checked by ``from_pretrained(use_safetensors=True)`` instead.
    """
    path = Path(model_dir)
    if not path.is_dir():
        return
    if not (path / "config.json").is_file():
        raise XlangError(f"{path} is not a Hugging Face model folder: it has no config.json")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise XlangError(
            f"{path} holds only pickle weights ({', '.join(pickles)}); xlang never unpickles checkpoints. "
            "Convert them to safetensors once with a tool you trust, then point xlang at that folder"
        )
    raise XlangError(f"{path} holds no model weights (*.safetensors)")


def load_causal_lm(model_dir: str | Path, dtype: str = "float32", device: str | None = None) -> Any:
    """A causal LM from a folder or hub id, safetensors only and without remote code, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    check_safetensors(model_dir)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype, None)
    if torch_dtype != "auto" and not isinstance(torch_dtype, torch.dtype):
        raise XlangError(f"unknown dtype {dtype!r}; use auto (the checkpoint's), float32, bfloat16 or float16")
    model = load_pretrained(AutoModelForCausalLM, model_dir, dtype=torch_dtype)
    if device is not None:
        model.to(device)
    model.eval()
    return model


def load_tokenizer(tokenizer_dir: str | Path) -> Any:
    """A fast tokenizer from a folder or hub id, without remote code."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer, tokenizer_dir, weights=False)
