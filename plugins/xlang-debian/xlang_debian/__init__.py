"""Debian archive corpora for xlang: the `debian://` corpus source (apt pool fetch, help-HTML and troff
extraction, deterministic splits) and `debian://file` fetches (word lists, fonts).

It plugs in through the `xlang` entry-point group like any third-party plugin. The URI forms and their
options are declared in `options` (xlang's docs/plugin-reference.md is generated from it); `archive`
fetches and unpacks packages, `extract` turns help pages and man pages into paragraphs, `build` makes
the cached train/validation splits, and `pin` prints a pinned URI (`xlang corpus pin PACKAGE`).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Any

import click

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


@hookimpl(trylast=True)
def register_commands(cli: Any) -> None:
    """`xlang corpus pin`, added to the `corpus` group the shipped recipes register (trylast: after them), or
    to a `corpus` group of its own when they are not installed."""
    from xlang.cli import XlangGroup

    group = cli.commands.get("corpus")
    if not isinstance(group, click.Group):
        group = XlangGroup("corpus", help="Inspect and pin corpora.")
        cli.add_command(group)
    group.add_command(pin_command)


@click.command("pin")
@click.argument("packages", nargs=-1, required=True)
@click.option("--require", multiple=True, help="Script word(s) a paragraph must contain, e.g. devanagari (repeatable).")
@click.option("--manpath", default=None, help="For a manpages-* package: the folder under usr/share/man/, e.g. zh_CN.")
@click.option("--path", "member", default=None, help="One file inside the package: prints a debian://file URI.")
def pin_command(packages: tuple[str, ...], require: tuple[str, ...], manpath: str | None, member: str | None) -> None:
    """Print a pinned debian:// URI for PACKAGE (two libreoffice-help-* packages: a parallel corpus).

    The pool path and SHA256 come from apt's package index; the URI goes to stdout alone, notes to stderr.
    """
    from xlang_debian.pin import pin_uri

    pinned = pin_uri(packages, require=require, manpath=manpath, path=member)  # an XlangError: one line, exit 2
    click.echo(pinned.uri)
    click.echo(f"# pinned: {', '.join(pinned.versions)} (from apt's package index)", err=True)
    for note in pinned.notes:
        click.echo(f"note: {note}", err=True)
