"""Scripts written with combining marks: keep a target-script word and its marks in one pre-tokenizer piece.

GPT-2-style pre-tokenizers cut text with a regex whose word class is `\\p{L}` (letters). Combining marks
(`\\p{M}`: the vowel signs and viramas of Devanagari, Bengali or Tamil, Thai's vowels and tone marks) are
not letters, so the regex puts them in its punctuation class: a Hindi word is cut at every vowel sign, and
since no token, old or new, crosses a piece, no merge can ever rebuild the word. An expansion of such a
script runs out of pieces after a few hundred tokens, all of them fragments.

The change: in every regex of the pre-tokenizer, the target script's combining marks count as letters
(`\\p{L}` becomes `[\\p{L}<marks>]`; inside a class, `\\p{L}<marks>`, so a negated class such as
`[^\\s\\p{L}\\p{N}]` stops taking them). A text without a target character holds none of those marks, so
every regex matches it exactly as before: same pieces, same ids. A `ByteLevel` pre-tokenizer that runs
GPT-2's regex itself becomes that regex as a `Split` followed by `ByteLevel` without a regex of its own
(the shape Llama-3 and Qwen ship), which cuts every text the same way.

Which marks, and when: the Unicode categories Mn, Mc and Me inside the language's script ranges; applied
when they make up at least `AUTO_MARK_SHARE` of the training text's target characters (a Devanagari or
Thai corpus, not the four ideographic tone marks a CJK punctuation block happens to hold).
"""

from __future__ import annotations

import copy
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from xlang.errors import XlangError
from xlang.tokenizer.families import TargetScripts

JoinMarks = Literal["auto", "on", "off"]
MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
AUTO_MARK_SHARE = 0.01
"""`auto` changes the pre-tokenizer when at least this share of the training text's target characters are
combining marks (Devanagari text: about a third; Thai: about a sixth; Chinese: none)."""
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
"""The regex a `ByteLevel` pre-tokenizer with `use_regex` runs (tokenizers' `byte_level.rs`), split `Isolated`."""
_LETTERS = (r"\p{L}", r"\pL")
_NEGATED_LETTERS = (r"\P{L}", r"\PL", r"\p{^L}")


def script_marks(scripts: TargetScripts) -> tuple[tuple[int, int], ...]:
    """The combining marks (Mn, Mc, Me) inside the target intervals, as merged code-point ranges."""
    ranges: list[list[int]] = []
    for start, end in scripts.intervals:
        for point in range(start, end + 1):
            if unicodedata.category(chr(point)) not in MARK_CATEGORIES:
                continue
            if ranges and ranges[-1][1] == point - 1:
                ranges[-1][1] = point
            else:
                ranges.append([point, point])
    return tuple((start, end) for start, end in ranges)


def mark_share(texts: Iterable[str], scripts: TargetScripts, marks: Sequence[tuple[int, int]]) -> float:
    """Share of the target characters of `texts` that are combining marks of the target script."""
    if not marks:
        return 0.0
    mark_points = {point for start, end in marks for point in range(start, end + 1)}
    target = marked = 0
    for text in texts:
        for char in scripts.pattern.findall(text):
            target += 1
            marked += ord(char) in mark_points
    return marked / target if target else 0.0


def mark_class(marks: Sequence[tuple[int, int]]) -> str:
    """The marks as the inside of an Oniguruma character class (`\\x{0901}-\\x{0903}\\x{093C}...`)."""
    return "".join(
        f"\\x{{{start:04X}}}" if start == end else f"\\x{{{start:04X}}}-\\x{{{end:04X}}}" for start, end in marks
    )


def letters_with_marks(regex: str, marks: Sequence[tuple[int, int]]) -> str:
    """`regex` with every `\\p{L}` also matching `marks`: outside a character class `\\p{L}` becomes
    `[\\p{L}<marks>]`, inside one the marks join the class. A negated letter property (`\\P{L}`) cannot be
    rewritten that way and is refused; a regex without `\\p{L}` comes back unchanged."""
    body = mark_class(marks)
    out: list[str] = []
    depth = index = 0
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            if regex.startswith(_NEGATED_LETTERS, index):
                raise XlangError(
                    f"the pre-tokenizer regex {regex!r} uses a negated letter class; xlang cannot make the "
                    "script's combining marks count as letters in it (set the expander option join_marks='off')"
                )
            matched = next((name for name in _LETTERS if regex.startswith(name, index)), None)
            if matched is not None:
                out.append(f"\\p{{L}}{body}" if depth else f"[\\p{{L}}{body}]")
                index += len(matched)
                continue
            out.append(regex[index : index + 2])
            index += 2
            continue
        if char == "[":
            depth += 1
            out.append(char)
            if regex.startswith("[^]", index) or regex.startswith("[]", index):
                # a `]` right after the opening bracket is a literal
                closing = index + (3 if regex[index + 1] == "^" else 2)
                out.append(regex[index + 1 : closing])
                index = closing
                continue
        elif char == "]" and depth:
            depth -= 1
            out.append(char)
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _rewrite(component: dict[str, Any], marks: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """One pre-tokenizer step as the steps that replace it."""
    kind = component.get("type")
    if kind == "Sequence":
        steps = [step for inner in component.get("pretokenizers") or [] for step in _rewrite(inner, marks)]
        return [{**component, "pretokenizers": steps}]
    if kind == "Split" and "Regex" in (component.get("pattern") or {}):
        regex = component["pattern"]["Regex"]
        return [{**component, "pattern": {"Regex": letters_with_marks(regex, marks)}}]
    if kind == "ByteLevel" and component.get("use_regex", True):
        if component.get("add_prefix_space"):
            raise XlangError(
                "the base's ByteLevel pre-tokenizer adds a prefix space before its own regex, which a separate "
                "Split cannot reproduce; xlang cannot keep combining marks with their letters in this tokenizer "
                "(set the expander option join_marks='off')"
            )
        split = {
            "type": "Split",
            "pattern": {"Regex": letters_with_marks(GPT2_REGEX, marks)},
            "behavior": "Isolated",
            "invert": False,
        }
        return [split, {**component, "use_regex": False}]
    return [component]


def join_marks_pre_tokenizer(
    pre_tokenizer: dict[str, Any] | None, marks: Sequence[tuple[int, int]]
) -> dict[str, Any] | None:
    """The pre-tokenizer JSON with the target script's combining marks counted as letters in each regex
    (a copy; the input is not changed). None when there is no pre-tokenizer. Raises `XlangError` when a
    regex cannot be rewritten safely."""
    if pre_tokenizer is None:
        return None
    steps = _rewrite(copy.deepcopy(pre_tokenizer), marks)
    if len(steps) == 1:
        return steps[0]
    return {"type": "Sequence", "pretokenizers": steps}


def marked_pre_tokenizer(
    tokenizer_json: dict[str, Any], scripts: TargetScripts, texts: Sequence[str], mode: JoinMarks
) -> tuple[dict[str, Any] | None, float]:
    """The pre-tokenizer an expansion should use under `mode`, and the measured mark share of `texts`.

    `off` keeps the base's; `auto` changes it when the script has combining marks that make up at least
    `AUTO_MARK_SHARE` of the target characters and the pre-tokenizer can be rewritten (otherwise the base's
    is kept); `on` changes it whenever the script has marks, and a pre-tokenizer that cannot be rewritten
    is an error."""
    base = tokenizer_json.get("pre_tokenizer")
    if mode == "off":
        return base, 0.0
    marks = script_marks(scripts)
    share = mark_share(texts, scripts, marks)
    if not marks or (mode == "auto" and share < AUTO_MARK_SHARE):
        return base, share
    try:
        return join_marks_pre_tokenizer(base, marks), share
    except XlangError:
        if mode == "on":
            raise
        return base, share
