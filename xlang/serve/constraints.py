"""Constrained decoding at the byte level: replies that are valid UTF-8, and replies in a language's script.

A byte-level tokenizer (GPT-2 style, or SentencePiece with byte fallback) has tokens that are single bytes
or end in the middle of a character. An untrained or half-trained model picks them freely and its reply
then holds U+FFFD where the bytes do not decode. The processor here masks, at each step, every token whose
bytes cannot continue the reply into valid text under a `CharRule`:

- `utf8_rule()`: any character; an incomplete character is allowed only when it can still be completed,
  and the reply never ends (EOS) in the middle of one;
- `script_rule(ranges)`: additionally every letter (Unicode category L*) and combining mark (M*) is in
  `ranges`, the reply opens with such a letter, and the other characters are digits, punctuation, symbols,
  format characters and whitespace (no control, unassigned or private-use characters). The opening letter
  matters: without it a model could answer with punctuation alone, which holds no letter of any language.

The decoding state is the bytes of the character still being written (at most three) and whether the reply
has opened; masks are cached per state, so a reply costs a few hundred vectorised mask lookups at most.
"""

from __future__ import annotations

import codecs
import functools
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from xlang.tokenizer.families import byte_token_value, from_byte_symbols, utf8_length

CODE_POINTS = 0x110000
_DISALLOWED_CATEGORIES = frozenset({"Cc", "Cn", "Co", "Cs"})
_ALLOWED_CONTROLS = "\t\n\r"


@dataclass(frozen=True)
class TokenBytes:
    """Each token id's bytes as the tokenizer's decoder writes them; None for special tokens and ids past the
    tokenizer (a model's embedding matrix may be padded)."""

    table: tuple[bytes | None, ...]
    kind: str
    """`byte-level` (GPT-2 style) or `sentencepiece` (`▁` for spaces, `<0xAB>` byte fallback)."""
    strip_leading_space: bool = False
    """SentencePiece decoders drop the space the first piece carries."""

    def text(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.table[i] or b"" for i in ids if 0 <= i < len(self.table))

    @functools.cached_property
    def shapes(self) -> TokenShapes:
        return TokenShapes.of(self.table)


@dataclass(frozen=True)
class TokenShapes:
    """How each token's bytes sit against character boundaries, computed once per tokenizer: the count of
    leading continuation bytes (which finish a character begun earlier), and for the rest whether it is a
    valid UTF-8 prefix, the code points it completes (flat, `starts`/`ends` per token) and its unfinished
    tail. Rules then check whole vocabularies with array lookups."""

    has_bytes: np.ndarray
    leading_continuations: np.ndarray
    rest_valid: np.ndarray
    points: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    tails: dict[int, bytes]

    @classmethod
    def of(cls, table: Sequence[bytes | None]) -> TokenShapes:
        size = len(table)
        has_bytes = np.zeros(size, dtype=bool)
        leading = np.zeros(size, dtype=np.int64)
        rest_valid = np.zeros(size, dtype=bool)
        starts = np.zeros(size, dtype=np.int64)
        ends = np.zeros(size, dtype=np.int64)
        points: list[int] = []
        tails: dict[int, bytes] = {}
        for index, data in enumerate(table):
            starts[index] = len(points)
            if data:
                has_bytes[index] = True
                count = 0
                while count < len(data) and 0x80 <= data[count] <= 0xBF:
                    count += 1
                leading[index] = count
                decoded = _decode_prefix(data[count:])
                if decoded is not None:
                    rest_valid[index] = True
                    points.extend(map(ord, decoded[0]))
                    if decoded[1]:
                        tails[index] = decoded[1]
            ends[index] = len(points)
        return cls(has_bytes, leading, rest_valid, np.array(points, dtype=np.int64), starts, ends, tails)


def token_bytes(tokenizer: Any, vocab_size: int) -> TokenBytes | None:
    """The byte table of a fast tokenizer whose decoder is byte-level or SentencePiece-style; None for others
    (their replies are decoded as text, and constraints are refused)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    steps = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    step_types = {step.get("type") for step in steps}
    if "ByteLevel" in step_types:
        kind = "byte-level"
    elif "ByteFallback" in step_types or any(
        step.get("type") == "Replace" and step.get("pattern", {}).get("String") == "\u2581" for step in steps
    ):
        kind = "sentencepiece"
    else:
        return None
    special = {int(i) for i, added in tokenizer.added_tokens_decoder.items() if added.special}
    special.update(int(i) for i in tokenizer.all_special_ids)
    added = {int(i): added.content for i, added in tokenizer.added_tokens_decoder.items()}
    table: list[bytes | None] = [None] * vocab_size
    for piece, index in tokenizer.get_vocab().items():
        if index >= vocab_size or index in special:
            continue
        if index in added:
            table[index] = added[index].encode("utf-8")
        elif kind == "byte-level":
            try:
                table[index] = from_byte_symbols(piece)
            except KeyError:  # a piece outside the byte alphabet: no bytes to constrain with
                table[index] = None
        elif (value := byte_token_value(piece)) is not None:
            table[index] = bytes([value])
        else:
            table[index] = piece.replace("\u2581", " ").encode("utf-8")
    strip = kind == "sentencepiece" and "Strip" in step_types
    return TokenBytes(tuple(table), kind, strip)


@functools.cache
def _category_classes() -> np.ndarray:
    """Per code point: 0 never allowed in a constrained reply, 1 a letter, 2 a combining mark, 3 any other
    allowed character."""

    def classify(char: str) -> int:
        category = unicodedata.category(char)
        if category[0] == "L":
            return 1
        if category[0] == "M":
            return 2
        return 0 if category in _DISALLOWED_CATEGORIES and char not in _ALLOWED_CONTROLS else 3

    return np.fromiter((classify(chr(point)) for point in range(CODE_POINTS)), dtype=np.uint8, count=CODE_POINTS)


def _prefixes(points: np.ndarray) -> frozenset[bytes]:
    """Every proper, non-empty prefix of the UTF-8 encodings of `points`."""
    found: set[bytes] = set()
    for length, low, high in ((2, 0x80, 0x7FF), (3, 0x800, 0xFFFF), (4, 0x10000, 0x10FFFF)):
        region = points[(points >= low) & (points <= high)]
        for dropped in range(1, length):
            _, first = np.unique(region >> (6 * dropped), return_index=True)
            found.update(chr(int(point)).encode("utf-8")[: length - dropped] for point in region[first])
    return frozenset(found)


@dataclass(frozen=True, eq=False)
class CharRule:
    """Which characters a reply may hold (`allowed`, indexed by code point) and which it must open with
    (`opening`; None: any allowed character, and an empty reply is fine)."""

    allowed: np.ndarray
    opening: np.ndarray | None
    name: str
    prefixes_any: frozenset[bytes] = field(init=False)
    prefixes_opening: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefixes_any", _prefixes(np.flatnonzero(self.allowed)))
        opening = self.allowed if self.opening is None else self.opening
        object.__setattr__(self, "prefixes_opening", _prefixes(np.flatnonzero(opening)))

    def allows(self, char: str, *, opened: bool) -> bool:
        point = ord(char)
        if not self.allowed[point]:
            return False
        return opened or self.opening is None or bool(self.opening[point])

    def allows_prefix(self, prefix: bytes, *, opened: bool) -> bool:
        return prefix in (self.prefixes_any if opened or self.opening is None else self.prefixes_opening)


@functools.cache
def utf8_rule() -> CharRule:
    """Any character at all, as long as the bytes are valid UTF-8 (surrogates are not characters)."""
    allowed = np.ones(CODE_POINTS, dtype=bool)
    allowed[0xD800:0xE000] = False
    return CharRule(allowed, None, "valid UTF-8")


@functools.cache
def script_rule(ranges: tuple[tuple[int, int], ...]) -> CharRule:
    """Letters only from `ranges` (inclusive code-point ranges), opening with one; see the module docstring."""
    classes = _category_classes()
    in_ranges = np.zeros(CODE_POINTS, dtype=bool)
    for start, end in ranges:
        in_ranges[start : end + 1] = True
    if not ranges:  # a language without declared scripts: any letter
        in_ranges[:] = True
    letters = (classes == 1) & in_ranges
    allowed = letters | ((classes == 2) & in_ranges) | (classes == 3)
    return CharRule(allowed, letters, "letters of " + ", ".join(f"U+{s:04X}-U+{e:04X}" for s, e in ranges))


State = tuple[bytes, bool]
"""The bytes of the character being written (empty at a boundary) and whether the reply has opened."""


def _decode_prefix(data: bytes) -> tuple[str, bytes] | None:
    """(complete characters, incomplete tail) of `data`, or None when it is not a prefix of valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(data, final=False)
    except UnicodeDecodeError:
        return None
    return text, decoder.getstate()[0]


class ByteConstraint:
    """The token masks of one `CharRule` over one tokenizer's bytes, computed per state and cached."""

    def __init__(self, tokens: TokenBytes, rule: CharRule, eos_ids: Sequence[int]) -> None:
        self.tokens = tokens
        self.rule = rule
        self.eos_ids = tuple(i for i in eos_ids if 0 <= i < len(tokens.table))
        shapes = tokens.shapes
        size = len(tokens.table)
        self.leading_continuations = shapes.leading_continuations
        self.usable = shapes.has_bytes.copy()
        self.usable[list(self.eos_ids)] = False
        # every complete character of a token's rest allowed: a difference of cumulative counts of refusals
        refused = np.concatenate([[0], np.cumsum(~rule.allowed[shapes.points])])
        all_allowed = refused[shapes.ends] == refused[shapes.starts]
        has_chars = shapes.ends > shapes.starts
        has_tail = np.zeros(size, dtype=bool)
        tail_any = np.ones(size, dtype=bool)
        tail_opening = np.zeros(size, dtype=bool)
        for index, tail in shapes.tails.items():
            has_tail[index] = True
            tail_any[index] = tail in rule.prefixes_any
            tail_opening[index] = tail in rule.prefixes_opening
        base = self.usable & shapes.rest_valid & (has_chars | has_tail)
        self.rest_ok_opened = base & all_allowed & tail_any
        if rule.opening is None:
            self.rest_ok_fresh = self.rest_ok_opened
        else:
            first_opens = np.zeros(size, dtype=bool)
            first_opens[has_chars] = rule.opening[shapes.points[shapes.starts[has_chars]]]
            self.rest_ok_fresh = base & np.where(has_chars, first_opens & all_allowed & tail_any, tail_opening)
        self.by_continuations = {
            count: np.flatnonzero(self.usable & (self.leading_continuations == count)) for count in (1, 2, 3)
        }
        self._masks: dict[State, torch.Tensor] = {}
        self._penalties: dict[tuple[State, int], torch.Tensor] = {}

    def mask(self, state: State) -> torch.Tensor:
        """True for every token id that may come next in `state`."""
        cached = self._masks.get(state)
        if cached is None:
            cached = self._masks[state] = torch.from_numpy(self._compute(state))
        return cached

    def penalty(self, state: State, width: int) -> torch.Tensor:
        """0 for the allowed tokens, -inf for the others, over `width` logits (ids past the tokenizer are
        never allowed): one addition per step, cached like the masks."""
        cached = self._penalties.get((state, width))
        if cached is None:
            allowed = np.zeros(width, dtype=bool)
            mask = self.mask(state).numpy()
            allowed[: min(width, mask.shape[0])] = mask[:width]
            cached = self._penalties[(state, width)] = torch.from_numpy(
                np.where(allowed, 0.0, -np.inf).astype(np.float32)
            )
        return cached

    def _compute(self, state: State) -> np.ndarray:
        pending, opened = state
        if not pending:
            allowed = self.usable & (self.leading_continuations == 0)
            allowed &= self.rest_ok_opened if opened else self.rest_ok_fresh
            if opened or self.rule.opening is None:
                allowed[list(self.eos_ids)] = True
            return allowed
        allowed = np.zeros(len(self.tokens.table), dtype=bool)
        missing = utf8_length(pending[0]) - len(pending)
        for count in range(1, missing + 1):
            for index in self.by_continuations[count]:
                data = self.tokens.table[index]
                assert data is not None
                if count == missing:
                    decoded = _decode_prefix(pending + data[:count])
                    if decoded is None or len(decoded[0]) != 1:
                        continue
                    if not self.rule.allows(decoded[0], opened=opened):
                        continue
                    allowed[index] = len(data) == count or self.rest_ok_opened[index]
                elif len(data) == count:
                    allowed[index] = self.rule.allows_prefix(pending + data, opened=opened)
        return allowed

    def advance(self, state: State, token_id: int) -> State:
        """The state after `token_id` (unchanged by tokens without bytes: specials, EOS)."""
        data = self.tokens.table[token_id] if 0 <= token_id < len(self.tokens.table) else None
        if not data:
            return state
        decoded = _decode_prefix(state[0] + data)
        if decoded is None:  # only reachable without the mask; start over at a boundary
            return (b"", state[1])
        text, tail = decoded
        return (tail, state[1] or bool(text))


class ConstraintProcessor(LogitsProcessor):
    """A `transformers` logits processor applying a `ByteConstraint` to every row of a batch; tokens after
    `prompt_length` are the reply. Usable with `model.generate(logits_processor=[...])` as well."""

    def __init__(self, constraint: ByteConstraint, prompt_length: int) -> None:
        self.constraint = constraint
        self.prompt_length = prompt_length
        self._states: list[State] = []
        self._seen: list[int] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = input_ids.shape[0]
        if not self._states:
            self._states = [(b"", False)] * rows
            self._seen = [self.prompt_length] * rows
        for row in range(rows):
            for token in input_ids[row, self._seen[row] :].tolist():
                self._states[row] = self.constraint.advance(self._states[row], token)
            self._seen[row] = input_ids.shape[1]
            penalty = self.constraint.penalty(self._states[row], scores.shape[1])
            scores[row] += penalty.to(device=scores.device, dtype=scores.dtype)
        return scores

    def pending(self, row: int = 0) -> bytes:
        """The bytes of the unfinished character at the end of a row's reply (empty at a boundary)."""
        return self._states[row][0] if self._states else b""
