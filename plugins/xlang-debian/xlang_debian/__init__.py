"""Debian archive corpora for xlang: the `debian://` corpus source (apt pool fetch, help-HTML and troff
extraction, deterministic splits) and `debian://file` fetches (word lists, fonts).

It plugs in through the `xlang` entry-point group like any third-party plugin; the URI reference is
in this distribution's README.md. `archive` fetches and unpacks packages, `extract` turns help pages
and man pages into paragraphs, `build` makes the cached train/validation splits.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Any

from xlang import hookimpl
from xlang.errors import XlangError
from xlang_debian.archive import FILE_URI_FORM, fetch_debian_file
from xlang_debian.build import load_debian_corpus

SCHEME = "debian"


def _scheme_and_host(uri: Any) -> tuple[str, str]:
    if not isinstance(uri, str) or "://" not in uri:
        return "", ""
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme, parsed.netloc


@hookimpl
def load_corpus(source: Any, split: str, cache_dir: Any) -> Any:
    """A split of a `debian://EXTRACTOR?...` source (a CorpusSource, or a bare URI string), else None.

    The corpus is cached under `<cache_dir>/corpora/<source name>/`; a bare URI is named by its hash.
    """
    uri = getattr(source, "uri", source)
    scheme, host = _scheme_and_host(uri)
    if scheme != SCHEME:
        return None
    if host == "file":
        raise XlangError(
            f"{uri!r} names one file of a package, not a corpus; use it as a vocabulary or font URI, "
            "or write debian://libreoffice-help?..., debian://manpages?... or debian://libreoffice-help-parallel?..."
        )
    name = getattr(source, "name", None) or f"uri-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"
    return load_debian_corpus(name, uri, split, Path(cache_dir), fields=getattr(source, "parallel", None))


@hookimpl
def fetch_file(uri: str, cache_dir: Any) -> Path | None:
    """The local copy of `debian://file?deb=POOL_PATH&sha256=HEX&path=PATH/IN/DEB`, else None."""
    scheme, host = _scheme_and_host(uri)
    if scheme != SCHEME:
        return None
    if host != "file":
        raise XlangError(f"{uri!r} is a debian:// corpus, not one file; write {FILE_URI_FORM}")
    return fetch_debian_file(uri, Path(cache_dir))
