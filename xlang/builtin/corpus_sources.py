"""Built-in `load_corpus` for the `debian://`, `hf://` and `file://` URI schemes.

Other schemes return None so that a plugin can claim them. The work is in `xlang.data.sources`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from xlang.data.sources import load_source
from xlang.hookspecs import hookimpl

SCHEMES = ("debian", "hf", "file")


@hookimpl
def load_corpus(source: Any, split: str, cache_dir: Any) -> Any:
    """A split of `source` (a CorpusSource, or a bare URI string) if its scheme is one of ours."""
    uri = getattr(source, "uri", source)
    if not isinstance(uri, str) or uri.split("://", 1)[0] not in SCHEMES or "://" not in uri:
        return None
    name = getattr(source, "name", None) or f"uri-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"
    return load_source(name, uri, split, Path(cache_dir), fields=getattr(source, "parallel", None))
