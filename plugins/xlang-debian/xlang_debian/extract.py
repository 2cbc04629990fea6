"""Turn documentation formats into plain paragraphs: LibreOffice help HTML and troff man pages.

Both keep the unit a human wrote (a help paragraph, a man-page paragraph), because that is what a
language model should see and what the parallel alignment keys on. Scripts are recognized by Unicode
character names ("HANGUL ...", "CJK UNIFIED IDEOGRAPH-...") so the stage code names no language.
"""

from __future__ import annotations

import gzip
import html
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
_SKIP_TAGS = frozenset({"script", "style"})


def collapse(text: str) -> str:
    """Collapse every run of whitespace (NBSP included) to one space and strip the ends."""
    return " ".join(text.split())


@lru_cache(maxsize=65536)
def char_script(char: str) -> str:
    """First word of the Unicode name of a letter ("HANGUL", "CJK", "LATIN"), "" for other characters."""
    if not unicodedata.category(char).startswith("L"):
        return ""
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else ""


@lru_cache(maxsize=1)
def script_words() -> frozenset[str]:
    """Every word `char_script` can return: the first words of all Unicode letter names (about 170,
    computed once per process in about half a second), so a misspelt `require=` is caught early."""
    words = set()
    for code_point in range(sys.maxunicode + 1):
        word = char_script(chr(code_point))
        if word:
            words.add(word)
    return frozenset(words)


def has_script(text: str, scripts: frozenset[str]) -> bool:
    """True when a letter of `text` belongs to one of `scripts` (upper-case first words of Unicode names)."""
    return any(char_script(char) in scripts for char in set(text))


def script_counts(texts: Iterable[str]) -> Counter[str]:
    """Letters per script over `texts`; counting distinct characters first keeps this at C speed."""
    chars: Counter[str] = Counter()
    for text in texts:
        chars.update(text)
    scripts: Counter[str] = Counter()
    for char, count in chars.items():
        script = char_script(char)
        if script:
            scripts[script] += count
    return scripts


_BLOCK = re.compile(r"<(p|h[1-6])\b([^>]*)>(.*?)</\1\s*>", re.S | re.I)
_ID = re.compile(r"""\bid\s*=\s*["']([^"']*)["']""", re.I)
_HIDDEN = re.compile(r"(?:^|\s)hidden(?:\s*=|\s|/|$)", re.I)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)([^>]*)>|<!--.*?-->", re.S)


def _inline_text(inner: str) -> str:
    """Visible text of a paragraph's inner HTML.

    LibreOffice marks platform and application variants (`switchinline`) as hidden spans; only the
    `default...` variant is kept, so "Command/Ctrl" does not become "CommandCtrl".
    """
    parts: list[str] = []
    stack: list[str] = []
    skip_depth: int | None = None
    position = 0
    for tag in _TAG.finditer(inner):
        if skip_depth is None:
            parts.append(inner[position : tag.start()])
        position = tag.end()
        closing, name, attrs = tag.group(1), (tag.group(2) or "").lower(), tag.group(3) or ""
        if not name:
            continue
        if name in _VOID_TAGS or attrs.rstrip().endswith("/"):
            if name == "br" and skip_depth is None:
                parts.append(" ")
            continue
        if closing:
            if name in stack:
                while stack.pop() != name:
                    pass
                if skip_depth is not None and len(stack) < skip_depth:
                    skip_depth = None
            continue
        stack.append(name)
        if skip_depth is None:
            element_id = _ID.search(attrs)
            keep_variant = element_id is not None and element_id.group(1).startswith("default")
            if name in _SKIP_TAGS or (_HIDDEN.search(attrs) and not keep_variant):
                skip_depth = len(stack)
    if skip_depth is None:
        parts.append(inner[position:])
    return collapse(html.unescape("".join(parts)))


def help_paragraphs(page: str) -> list[tuple[str, str]]:
    """(element id, text) of every `<p id=...>` and `<h1-6 id=...>` of a LibreOffice help page.

    Help pages are generated, well-formed XHTML in which paragraphs never nest, so a regular
    expression finds them several times faster than `html.parser`, which matters at 2,500 pages.
    """
    found = []
    for block in _BLOCK.finditer(page):
        element_id = _ID.search(block.group(2))
        if element_id and element_id.group(1):
            found.append((element_id.group(1), _inline_text(block.group(3))))
    return found


def help_page_key(path: str) -> tuple[str, str] | None:
    """(help language, page key) for `usr/share/libreoffice/help/<lang>/text/....html`, else None.

    The page key (`text/swriter/main0000.html`) is the same in every language, which is what lets
    paragraphs of two help packages be aligned.
    """
    match = re.match(r"^usr/share/libreoffice/help/([^/]+)/(text/.+\.html)$", path)
    return (match.group(1), match.group(2)) if match else None


# --- troff -------------------------------------------------------------------------------------

_SPECIAL_CHARS = {
    "lq": "\u201c", "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "dq": '"', "aq": "'",
    "em": "\u2014", "en": "\u2013", "hy": "-", "mi": "-", "bu": "\u2022", "co": "\u00a9",
    "rg": "\u00ae", "tm": "\u2122", "ti": "~", "ha": "^", "ga": "`", "aa": "\u00b4", "pl": "+",
    "eq": "=", "mu": "\u00d7", "di": "\u00f7", "<=": "\u2264", ">=": "\u2265", "!=": "\u2260",
    "->": "\u2192", "<-": "\u2190", "de": "\u00b0", "sc": "\u00a7", "ba": "|", "rs": "\\",
    "R": "\u00ae", "Tm": "\u2122", "ua": "\u2191", "da": "\u2193", "sl": "/", "ul": "_",
}  # fmt: skip
_ESCAPE = re.compile(
    r"""\\(?:
        [fFmM*YV] (?: \(.. | \[[^\]]*\] | . )  # font, color, string, device and env names
      | s [+-]? (?: \(\d\d | \[[^\]]*\] | \d )   # size change
      | n [+-]? (?: \(.. | \[[^\]]*\] | . )     # number register
      | [hvwlLoDbxNRSHXZCABO] '[^']*'           # motions, widths, drawings, conditionals
      | \(..                                    # special character \(xx
      | \[[^\]]*\]                              # special character \[name]
      | [$kgz] .?                               # argument, mark, format, zero-width
      | .                                       # one-character escapes
    )""",
    re.VERBOSE,
)
_REQUEST = re.compile(r"^[.']\s*(\S*)\s*(.*)$")
_STRUCTURE = frozenset({"PP", "LP", "P", "TP", "TQ", "IP", "HP", "RS", "RE", "sp", "br", "bp", "nf", "fi", "Pp", "Lp"})
_STRUCTURE |= frozenset({"Bl", "El", "Bd", "Ed", "It", "EX", "EE", "Vb", "Ve", "Sp", "in", "ti", "ce"})
_HEADINGS = frozenset({"SH", "SS", "Sh", "Ss"})
_ALTERNATING = frozenset({"BI", "BR", "IB", "IR", "RB", "RI"})
_FONT = frozenset({"B", "I", "SM", "SB", "R"})
_IGNORED_MACROS = frozenset({"TH", "Dd", "Dt", "Os", "PD", "UC", "IX", "DT", "UN"})
_MDOC_CALLS = frozenset(
    "Ad An Ar Cd Cm Dv Er Ev Fa Fd Fl Fn Ft Ic Li Nm Op Oo Oc Pa Va Vt Xr Em Sy Dq Qq Sq Ql Pq Ns No Aq Bq Brq".split()
)


def _escape(match: re.Match[str]) -> str:
    token = match.group(0)[1:]
    if token.startswith("("):
        return _SPECIAL_CHARS.get(token[1:], "")
    if token.startswith("["):
        name = token[1:-1]
        if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _SPECIAL_CHARS.get(name, "")
    if token.startswith("*"):
        name = token[1:].strip("()[]")
        return _SPECIAL_CHARS.get(name, "")
    if token in ("-", "e", "\\"):
        return "-" if token == "-" else "\\"
    if token in (" ", "~", "0", "t"):
        return " "
    if token in (".", "'", "`"):
        return token
    return ""


def troff_text(line: str) -> str:
    """Inline escapes of one troff text line resolved to plain characters."""
    line = re.split(r'\\"|\\#', line, maxsplit=1)[0]
    return _ESCAPE.sub(_escape, line)


def _macro_args(rest: str) -> list[str]:
    """Arguments of a macro line: space-separated, double quotes group, `""` is a literal quote."""
    args = []
    for match in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', rest):
        quoted, bare = match.group(1), match.group(2)
        args.append(quoted.replace('""', '"') if quoted is not None else bare)
    return args


_TAG_END = "\x00"
"""Marks the end of a `.TP` tag in a paragraph's lines: the tag and its description always get a space."""


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _join(lines: list[str]) -> str:
    """Join filled lines; no space between two wide (CJK) characters, as a Chinese reader expects."""
    text = ""
    forced = False
    for line in lines:
        if line == _TAG_END:
            forced = True
            continue
        line = line.strip()
        if not line:
            continue
        if text and (forced or not (_wide(text[-1]) and _wide(line[0]))):
            text += " "
        text += line
        forced = False
    return collapse(text)


def man_paragraphs(source: str) -> list[str]:
    """Plain paragraphs of a troff man page (man or mdoc macros): macro definitions, conditionals,
    comments and formatting requests go; headings become paragraphs of their own."""
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            text = _join(current)
            if text:
                paragraphs.append(text)
            current.clear()

    skip_until: str | None = None
    brace_depth = 0
    tag_pending = False

    def add(text: str) -> None:
        nonlocal tag_pending
        current.append(text)
        if tag_pending:
            current.append(_TAG_END)
            tag_pending = False

    for raw in source.splitlines():
        if skip_until is not None:
            if raw.strip() == skip_until:
                skip_until = None
            continue
        if brace_depth:
            brace_depth += raw.count("\\{") - raw.count("\\}")
            brace_depth = max(brace_depth, 0)
            continue
        match = _REQUEST.match(raw)
        if match is None:
            if raw.strip():
                add(troff_text(raw))
            else:
                flush()
            continue
        name, rest = match.group(1), match.group(2)
        if name.startswith('\\"') or name.startswith("\\#") or name in ("", "\\}"):
            continue
        if name in ("de", "am", "ig", "de1", "ami"):
            args = rest.split()
            end = args[0] if name == "ig" and args else (args[1] if name != "ig" and len(args) > 1 else "")
            skip_until = f".{end}" if end else ".."
            continue
        if name in ("if", "ie", "el", "while"):
            brace_depth = max(rest.count("\\{") - rest.count("\\}"), 0)
            continue
        if name in _HEADINGS:
            flush()
            add(troff_text(" ".join(_macro_args(rest))))
            flush()
        elif name in _STRUCTURE:
            flush()
            tag_pending = name in ("TP", "TQ")
            args = _macro_args(rest) if name == "IP" else []
            if args and args[0]:
                tag_pending = True
                add(troff_text(args[0]))
        elif name in _ALTERNATING:
            add(troff_text("".join(_macro_args(rest))))
        elif name in _FONT:
            if rest:
                add(troff_text(" ".join(_macro_args(rest))))
        elif name[:1].isupper() and name not in _IGNORED_MACROS:
            words = [word for word in _macro_args(rest) if word not in _MDOC_CALLS]
            if words:
                add(troff_text(" ".join(words)))
    flush()
    return paragraphs


def man_page_text(data: bytes, path: str) -> str:
    """Decoded man page source (gzip or plain); undecodable bytes are replaced, never fatal."""
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")
