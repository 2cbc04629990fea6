"""The `debian://` URI forms, declared once: the parser (`build.parse_debian_uri`, `archive.parse_file_uri`)
takes its option names and defaults from here, and xlang's plugin reference (docs/plugin-reference.md)
is generated from the same tables, so the page and the code cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlang.data.splits import SplitRule

CORPUS_FORM = "debian://EXTRACTOR?deb=POOL_PATH&sha256=HEX[&deb=POOL_PATH&sha256=HEX][&OPTION=VALUE...]"
FILE_FORM = "debian://file?deb=POOL_PATH&sha256=HEX&path=PATH/IN/DEB"


@dataclass(frozen=True)
class UriOption:
    """One `NAME=VALUE` of a URI's query."""

    name: str
    type: str
    """What the value is, in words (`int`, `float`, `script words`, ...)."""
    default: str | None
    """The value when the option is absent; None: required."""
    meaning: str
    example: str
    repeated: bool = False
    """Given once per package (`deb=`, `sha256=`) rather than once."""


@dataclass(frozen=True)
class Extractor:
    """A way of turning packages into corpus records (the host part of a `debian://` corpus URI)."""

    name: str
    packages: int
    records: str
    """What becomes a record."""


EXTRACTORS: tuple[Extractor, ...] = (
    Extractor(
        "libreoffice-help",
        1,
        "every `<p id=...>` and `<h1-6 id=...>` of the help pages under `usr/share/libreoffice/help/<lang>/text/`; "
        "`doc` is the page (`text/swriter/main0000.html`)",
    ),
    Extractor(
        "manpages",
        1,
        "every paragraph of the troff pages under `usr/share/man/<manpath>/` (man and mdoc macros; headings are "
        "paragraphs of their own); `doc` is the page (`man1/ls.1`)",
    ),
    Extractor(
        "libreoffice-help-parallel",
        2,
        "a pair of help paragraphs with the same page, element id and occurrence in both packages, source "
        "language first; the `CorpusSource` names the two codes in `parallel=(source, target)`, which become "
        "the record's fields",
    ),
)

_POOL = "pool/main/m/manpages-zh/manpages-zh_1.6.4.0-1_all.deb"
_DIGEST = "81bae29495f6445db290e3f329f1203eb19b651c2a7ea165b74ebdc853a32ac1"

CORPUS_OPTIONS: tuple[UriOption, ...] = (
    UriOption(
        "deb",
        "pool path",
        None,
        "path of the package under the mirror, as in the pool; once per package, in order. A `+` may be written "
        "as is or as `%2B` (both mean `+`, never a space). `xlang corpus pin PACKAGE` prints it with its sha256",
        f"deb={_POOL}",
        repeated=True,
    ),
    UriOption(
        "sha256",
        "64 hex digits",
        None,
        "the package file's SHA256, right after its `deb=`; every download is checked against it",
        f"sha256={_DIGEST}",
        repeated=True,
    ),
    UriOption(
        "require",
        "script words, comma-separated",
        "none",
        "a paragraph without a letter of one of these scripts is an untranslated fallback and is dropped (counted in "
        "`meta.json` under `dropped.untranslated`); a script word is the first word of the Unicode names of its "
        "letters (`hangul`, `cjk`, `devanagari`, `thai`, `cyrillic`, `latin`...). Without it nothing is dropped "
        "for its script: help packages fall back to English where a string is untranslated",
        "require=hangul",
    ),
    UriOption(
        "manpath",
        "folder name",
        "required for `manpages`",
        "the folder under `usr/share/man/` whose pages are read",
        "manpath=zh_CN",
    ),
    UriOption(
        "min_chars",
        "int",
        "2",
        "a paragraph needs at least this many non-space characters, and a letter",
        "min_chars=8",
    ),
    UriOption(
        "validation_chars",
        "int",
        str(SplitRule.validation_chars),
        "characters the validation split aims for (whole pages go to one split)",
        "validation_chars=36000",
    ),
    UriOption(
        "max_share",
        "float in (0, 1]",
        str(SplitRule.max_share),
        "validation never takes more than this share of the corpus's characters",
        "max_share=0.1",
    ),
    UriOption(
        "seed",
        "str",
        SplitRule.seed,
        "key of the hash that ranks pages for validation; another seed picks other pages",
        "seed=2024",
    ),
)
"""The options of a `debian://EXTRACTOR?...` corpus URI."""

FILE_OPTIONS: tuple[UriOption, ...] = (
    UriOption("deb", "pool path", None, "the package's path under the mirror", f"deb={_POOL}"),
    UriOption("sha256", "64 hex digits", None, "the package file's SHA256", f"sha256={_DIGEST}"),
    UriOption(
        "path",
        "path in the package",
        None,
        "the file inside the package, without a leading `./`; no `..`",
        "path=usr/share/hunspell/ko.dic",
    ),
)
"""The options of a `debian://file?...` URI (each exactly once, nothing else)."""


def option_default(options: tuple[UriOption, ...], name: str) -> str:
    """The declared default of an optional option."""
    found = next(option for option in options if option.name == name)
    if found.default is None:
        raise KeyError(f"{name} is required and has no default")
    return found.default
