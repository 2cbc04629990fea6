"""Built-in `load_corpus` for the `hf://`, `file://` and `pypi://` URI schemes.

Other schemes return None so that a plugin can claim them (`debian://` is the `xlang-debian` plugin's).
The work is in `xlang.data.sources`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlang.data.sources import load_source
from xlang.hookspecs import hookimpl


@hookimpl
def load_corpus(source: Any, split: str, cache_dir: Any) -> Any:
    """A split of `source` (a CorpusSource, or a bare URI string) if its scheme is one of ours."""
    uri = getattr(source, "uri", source)
    if not isinstance(uri, str):
        return None
    return load_source(uri, split, Path(cache_dir))
