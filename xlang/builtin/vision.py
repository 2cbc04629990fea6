"""Built-in `load_vit_data` for `seed://` (the embedded en/ko/zh seed set), `file://` LLaVA JSONL and
`hf://` hub datasets in the same format. Other URIs return None so that a plugin can claim them.

The work is in `xlang.vlm.data`; importing it stays light (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.hookspecs import hookimpl
from xlang.vlm.data import load_vit_uri


@hookimpl
def load_vit_data(uri: str, cache_dir: Any) -> Any:
    """Records `{"id", "image", "lang", "task", "conversations", ...}` when the URI is ours, else None."""
    if not isinstance(uri, str):
        return None
    return load_vit_uri(uri, Path(cache_dir) if cache_dir is not None else None)
