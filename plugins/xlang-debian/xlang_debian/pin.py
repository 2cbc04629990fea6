"""`xlang corpus pin PACKAGE [PACKAGE]`: a ready, pinned `debian://` URI for a language plugin to paste.

The pool path and SHA256 come from apt's signed package index, the same lookup the plugin falls back to
when a pinned file has left the archive (`archive.apt_resolve`). The extractor follows from the package
names (`libreoffice-help-*`, `manpages-*`; two help packages make a parallel source), or `--path` asks
for one file (`debian://file`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from xlang.errors import XlangError
from xlang_debian.archive import PackageLookup, apt_resolve
from xlang_debian.extract import script_words
from xlang_debian.options import FILE_FORM


@dataclass(frozen=True)
class Pinned:
    """A pinned URI and what a user should know about it."""

    uri: str
    versions: tuple[str, ...]
    notes: tuple[str, ...] = ()


def pool_path(url: str) -> str:
    """`pool/main/...deb` out of apt's download URL (percent escapes decoded: a `+` stays a `+`)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    start = path.find("/pool/")
    if start < 0:
        raise XlangError(f"apt's URL {url} has no /pool/ path; pin the package by hand (deb=pool/...&sha256=...)")
    return path[start + 1 :]


def _extractor(packages: Sequence[str], path: str | None) -> str:
    if path is not None:
        if len(packages) != 1:
            raise XlangError("--path takes one file out of one package; name a single PACKAGE")
        return "file"
    if len(packages) == 2 and all(name.startswith("libreoffice-help-") for name in packages):
        return "libreoffice-help-parallel"
    if len(packages) == 1 and packages[0].startswith("libreoffice-help-"):
        return "libreoffice-help"
    if len(packages) == 1 and packages[0].startswith("manpages-"):
        return "manpages"
    raise XlangError(
        f"cannot tell how to read {' '.join(packages)}: name one libreoffice-help-* or manpages-* package, two "
        f"libreoffice-help-* packages (source language first) for a parallel corpus, or one file with --path "
        f"({FILE_FORM})"
    )


def pin_uri(
    packages: Sequence[str],
    *,
    require: Sequence[str] = (),
    manpath: str | None = None,
    path: str | None = None,
    lookup: PackageLookup = apt_resolve,
) -> Pinned:
    """The pinned URI for `packages` with the current version apt names for each."""
    if not 1 <= len(packages) <= 2:
        raise XlangError("name one package (or two libreoffice-help-* packages for a parallel corpus)")
    extractor = _extractor(packages, path)
    words = [word.strip().lower() for value in require for word in value.split(",") if word.strip()]
    unknown = sorted({word for word in words if word.upper() not in script_words()})
    if unknown:
        raise XlangError(
            f"--require {','.join(unknown)} names no script; a script word is the first word of the Unicode names "
            "of its letters (e.g. hangul, cjk, devanagari, thai, cyrillic, arabic, latin)"
        )
    if extractor == "manpages" and not manpath:
        raise XlangError("a manpages corpus needs --manpath, the folder under usr/share/man/ (e.g. zh_CN)")
    query, versions = [], []
    for package in packages:
        found = lookup(package)
        if found is None:
            raise XlangError(
                f"apt names no package {package!r}: check the name (apt-cache search {package.split('-')[0]}) or "
                "run apt-get update so apt's package lists exist"
            )
        url, filename, sha256 = found
        query += [f"deb={pool_path(url)}", f"sha256={sha256}"]
        parts = urllib.parse.unquote(filename).split("_")
        versions.append(f"{package} {parts[1] if len(parts) >= 3 else '?'}")
    notes: list[str] = []
    if extractor == "file":
        query.append(f"path={path.strip('/') if path else ''}")
    else:
        if manpath and extractor == "manpages":
            query.append(f"manpath={manpath}")
        if words:
            query.append(f"require={','.join(dict.fromkeys(words))}")
        else:
            notes.append(
                "no --require: paragraphs in any script are kept, so a help package's untranslated (English) "
                "fallbacks stay in the corpus; add e.g. --require devanagari (see docs/plugin-reference.md)"
            )
        if extractor == "libreoffice-help-parallel":
            notes.append(
                f"a parallel source: its CorpusSource needs parallel=(SOURCE, TARGET), the codes of {packages[0]} "
                f"and {packages[1]} in that order"
            )
    return Pinned(f"debian://{extractor}?{'&'.join(query)}", tuple(versions), tuple(notes))
