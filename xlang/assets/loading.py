"""Loading a user-named folder with `from_pretrained`: safetensors only, remote code only when allowed, and a
damaged folder reported as one line naming it.

A pickle checkpoint (`pytorch_model.bin`) can run code when it is loaded, so weights are read only from
safetensors files (`use_safetensors=True`); a folder that has only pickle weights is refused with the fix.
Code shipped inside a model folder (`trust_remote_code`) runs only when the `trust_remote_code` setting is
on (`XLANG_TRUST_REMOTE_CODE=1`, `trust_remote_code = true` in xlang.toml); it is off by default. Stage
code takes no settings object, so the setting reaches it through the variable `XlangSettings.apply_environment`
sets, like `progress_every_s`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.settings import TRUST_REMOTE_CODE_VARIABLE

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def trust_remote_code() -> bool:
    """Whether the user turned the `trust_remote_code` setting on (off unless the variable says 1/true)."""
    return os.environ.get(TRUST_REMOTE_CODE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def refuse_pickle_only(folder: str | Path) -> None:
    """Raise XlangError when a local folder holds pickle weights and no safetensors file."""
    path = Path(folder)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise XlangError(
            f"{path} holds only pickle weights ({', '.join(pickles)}); xlang never unpickles checkpoints: "
            "re-save the model with safetensors (`model.save_pretrained(folder, safe_serialization=True)` "
            "in a session you trust) and point xlang at that folder"
        )


def load_pretrained(loader: Any, folder: str | Path, *, weights: bool = True, **options: Any) -> Any:
    """`loader.from_pretrained(folder, ...)` (a model, tokenizer, processor or config class), safetensors only
    when `weights`, with the `trust_remote_code` setting; a folder that cannot be read is one XlangError
    naming it."""
    if weights:
        refuse_pickle_only(folder)
        options.setdefault("use_safetensors", True)
    options.setdefault("trust_remote_code", trust_remote_code())
    try:
        return loader.from_pretrained(str(folder), **options)
    except XlangError:
        raise
    except Exception as error:
        if not _is_unreadable_folder(error):
            raise
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise XlangError(
            f"cannot load {folder} ({type(error).__name__}: {first}); the folder is incomplete or damaged: "
            "re-create it (run the step that wrote it again) or point xlang at another folder"
        ) from error


def _is_unreadable_folder(error: Exception) -> bool:
    """An error that says the files are missing, truncated or malformed (not a bug in the caller)."""
    if isinstance(error, OSError | EOFError | UnicodeDecodeError):
        return True
    if type(error).__name__ in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "JSONDecodeError"):
        return True
    return isinstance(error, ValueError)  # transformers' word for a config or file it cannot read
