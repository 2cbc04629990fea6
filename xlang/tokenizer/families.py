"""The two tokenizer families xlang expands, told apart from `tokenizer.json`, and the safety rule of each.

Both are BPE models inside a Hugging Face `tokenizer.json`; they differ in what a symbol is:

- **byte-level BPE** (GPT-2, Llama-3, Qwen, SmolLM2): symbols are bytes written with GPT-2's printable
  byte alphabet (space is `Ġ`); a token may hold part of a UTF-8 character.
- **SentencePiece-style BPE** (Llama-2, Mistral v1): symbols are characters, spaces become `▁`, and a
  character missing from the vocabulary falls back to byte tokens `<0xNN>`.

The safety rule answers one question per new merge `(left, right)` whose operands are both old tokens:
can these two be adjacent in a text with no target-script character? New merges rank after every old
merge, so on such text they could only fire on the base's final tokens; a merge whose operands force a
target character can never fire there, and a merge with a new operand cannot either (by induction: no
new token ever forms on such text). See docs/tokenizer.md for the argument in full.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from xlang.errors import XlangError
from xlang.spec import LanguageSpec

BYTE_LEVEL = "byte-level-bpe"
SENTENCEPIECE = "sentencepiece-bpe"
METASPACE = "\u2581"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@cache
def byte_alphabet() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte value: printable Latin-1 bytes stand for themselves, the
    other 68 bytes (controls, space, soft hyphen...) take the code points from U+0100 upwards in order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet: dict[int, str] = {value: chr(value) for value in printable}
    shifted = 0
    for value in range(256):
        if value not in alphabet:
            alphabet[value] = chr(0x100 + shifted)
            shifted += 1
    return tuple(alphabet[value] for value in range(256))


@cache
def _byte_values() -> dict[str, int]:
    return {char: value for value, char in enumerate(byte_alphabet())}


def to_byte_symbols(text: str) -> str:
    """`text` in the byte-level alphabet (what the model's vocabulary and merges are written in)."""
    alphabet = byte_alphabet()
    return "".join(alphabet[value] for value in text.encode("utf-8"))


def from_byte_symbols(symbols: str) -> bytes:
    values = _byte_values()
    return bytes(values[char] for char in symbols)


@dataclass(frozen=True)
class TargetScripts:
    """The language's scripts as merged code-point intervals plus a compiled character class.

    Equivalent to `LanguageSpec.is_target_char`, in a form that answers "is every character of this
    code-point interval target?" (needed for partial UTF-8 prefixes) and scans text quickly.
    """

    intervals: tuple[tuple[int, int], ...]
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, language: LanguageSpec) -> TargetScripts:
        if not language.scripts:
            raise XlangError(
                f"language {language.code!r} lists no scripts, so no character is new to the base tokenizer; "
                "tokenizer expansion only applies to languages written in their own script"
            )
        merged: list[list[int]] = []
        for start, end in sorted((script.start, script.end) for script in language.scripts):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        intervals = tuple((start, end) for start, end in merged)
        char_class = "".join(f"\\U{start:08x}-\\U{end:08x}" for start, end in intervals)
        return cls(intervals=intervals, pattern=re.compile(f"[{char_class}]"))

    def has_target(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def covers(self, low: int, high: int) -> bool:
        """Whether every Unicode scalar value in [low, high] is a target character (surrogates, which
        valid text cannot contain, are skipped)."""
        for start, end in _without_surrogates(low, high):
            point = start
            for interval_start, interval_end in self.intervals:
                if interval_end < point:
                    continue
                if interval_start > point:
                    return False
                point = interval_end + 1
                if point > end:
                    break
            if point <= end:
                return False
        return True


def _without_surrogates(low: int, high: int) -> Iterator[tuple[int, int]]:
    if high < 0xD800 or low > 0xDFFF:
        yield low, high
        return
    if low < 0xD800:
        yield low, 0xD7FF
    if high > 0xDFFF:
        yield 0xE000, high


def utf8_length(lead: int) -> int:
    """How many bytes the character starting with `lead` has (0: not a lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # a continuation byte or a byte valid UTF-8 never uses


_LENGTH_RANGE = {1: (0, 0x7F), 2: (0x80, 0x7FF), 3: (0x800, 0xFFFF), 4: (0x10000, 0x10FFFF)}


def _prefix_interval(prefix: bytes) -> tuple[int, int] | None:
    """The code points whose UTF-8 encoding starts with `prefix` (a lead byte and fewer continuation bytes
    than its character needs), or None when no valid character starts that way."""
    length = utf8_length(prefix[0])
    missing = length - len(prefix)
    lead_bits = prefix[0] & (0xFF >> (length + 1))
    value = lead_bits
    for byte in prefix[1:]:
        value = (value << 6) | (byte & 0x3F)
    low, high = value << (6 * missing), ((value + 1) << (6 * missing)) - 1
    floor, ceiling = _LENGTH_RANGE[length]
    low, high = max(low, floor), min(high, ceiling)
    if low > high:
        return None
    if all(0xD800 <= point <= 0xDFFF for point in (low, high)):
        return None
    return low, high


def bytes_force_target(data: bytes, scripts: TargetScripts) -> bool:
    """Whether every valid UTF-8 text in which `data` occurs as a run of bytes has a target character.

    True when `data` holds a whole target character, or ends in the start of a character whose every
    completion is a target character (e.g. b"\\xea\\xb0", the start of U+AC00..U+AC3F, all Hangul).
    Leading continuation bytes end a character that started earlier and prove nothing. A run that valid
    UTF-8 cannot contain is answered False (such a merge could never fire, so it is never worth adding).
    """
    index = 0
    while index < len(data) and 0x80 <= data[index] <= 0xBF:
        index += 1
    while index < len(data):
        length = utf8_length(data[index])
        if length == 0:
            return False
        chunk = data[index : index + length]
        if any(not 0x80 <= byte <= 0xBF for byte in chunk[1:]):
            return False
        if len(chunk) < length:
            interval = _prefix_interval(chunk)
            return interval is not None and scripts.covers(*interval)
        try:
            char = chunk.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if scripts.has_target(char):
            return True
        index += length
    return False


def detect_family(tokenizer_json: dict[str, Any], where: str = "the tokenizer") -> str:
    """`BYTE_LEVEL` or `SENTENCEPIECE`, or an `XlangError` naming what the tokenizer is instead."""
    model = tokenizer_json.get("model") or {}
    model_type = model.get("type") or ("BPE" if "merges" in model else None)
    if model_type != "BPE":
        raise XlangError(
            f"{where} uses a {model_type or 'unknown'} model; xlang expands BPE tokenizers only (byte-level BPE "
            "like GPT-2/Llama-3/Qwen/SmolLM2, or SentencePiece-style BPE with byte fallback like Llama-2/Mistral). "
            "Adding plain tokens to other models would bypass the model and change how other text is split"
        )
    if model.get("dropout"):
        raise XlangError(f"{where} uses BPE dropout, so its encoding is random; save it with dropout off first")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise XlangError(
            f"{where} is a BPE with word-piece affixes (continuing_subword_prefix/end_of_word_suffix); "
            "xlang expands byte-level and SentencePiece-style BPE only"
        )
    if _mentions(tokenizer_json.get("pre_tokenizer"), "ByteLevel") or _mentions(
        tokenizer_json.get("decoder"), "ByteLevel"
    ):
        return BYTE_LEVEL
    metaspace = _mentions(tokenizer_json.get("pre_tokenizer"), "Metaspace") or any(
        step.get("type") == "Replace" and step.get("content") == METASPACE
        for step in _steps(tokenizer_json.get("normalizer"))
    )
    if metaspace and model.get("byte_fallback"):
        return SENTENCEPIECE
    if metaspace:
        raise XlangError(
            f"{where} is a SentencePiece-style BPE without byte fallback: characters it does not know become "
            "<unk>, and xlang cannot prove new merges leave other text alone; use a byte-fallback tokenizer"
        )
    raise XlangError(
        f"{where} is a BPE with neither byte-level pre-tokenization nor a '▁' metaspace; xlang expands "
        "byte-level BPE (GPT-2/Llama-3 style) and SentencePiece-style BPE (Llama-2/Mistral style) only"
    )


def _steps(component: dict[str, Any] | None) -> Iterable[dict[str, Any]]:
    if not component:
        return ()
    for key in ("normalizers", "pretokenizers", "decoders"):
        if key in component:
            return [step for inner in component[key] for step in _steps(inner)]
    return (component,)


def _mentions(component: dict[str, Any] | None, type_name: str) -> bool:
    return any(step.get("type") == type_name for step in _steps(component))


def byte_token_value(token: str) -> int | None:
    """The byte a SentencePiece byte-fallback token like `<0xEA>` stands for, or None."""
    match = _BYTE_TOKEN.match(token)
    return int(match.group(1), 16) if match else None
