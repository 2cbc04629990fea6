"""Why an expansion added fewer tokens than its budget, measured on the corpus rather than guessed.

BPE merges never cross the pieces the base's pre-tokenizer cuts text into, and a merge seen fewer than
`min_frequency` times is not worth an entry. So the corpus's target-script pieces bound what any
expansion can add: making each distinct piece a single token takes at most (its base tokens - 1) new
entries. Short pieces (a pre-tokenizer that splits a script at its combining marks) and a small corpus
both keep that bound low; a candidate source that proposes little keeps the pool small. The note names
the figures, so the user can tell which one applies (docs/tokenizer.md, "Fewer new tokens than the budget").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlang.tokenizer.families import TargetScripts

SHORTFALL_SHARE = 0.5
"""An expansion that fills less than this share of its budget explains itself."""
SHORT_PIECES_CHARS = 2.5
"""Target pieces shorter than this on average (in characters) mean the pre-tokenizer splits the script."""
SMALL_CORPUS_CHARS = 200_000
"""Fewer target-script characters than this are a small corpus for a budget in the thousands."""
LOW_TARGET_SHARE = 0.5
"""Below this share of training paragraphs with a target character, the corpus is mostly something else."""
DOCS = "docs/tokenizer.md#fewer-new-tokens-than-the-budget"


@dataclass(frozen=True)
class PieceCensus:
    """The target-script pieces of a corpus as the base pre-tokenizer cuts them."""

    target_chars: int
    """Characters of the target scripts in the corpus."""
    pieces: int
    """Pre-tokenizer pieces holding a target character, counted with repeats."""
    distinct: int
    frequent: int
    """Distinct pieces seen at least `min_frequency` times."""
    piece_chars: int
    """Characters in those pieces, counted with repeats (spaces and punctuation inside them included)."""
    bound: int
    """Entries that would make every frequent target piece one token: about the most an expansion can add,
    since a merge must be seen `min_frequency` times (rare pieces may share a pair, so this is not exact)."""

    @property
    def chars_per_piece(self) -> float:
        return self.piece_chars / self.pieces if self.pieces else 0.0


def census(backend: Any, family: str, texts: Sequence[str], scripts: TargetScripts, min_frequency: int) -> PieceCensus:
    """Count the target-script pieces of `texts` under the base tokenizer `backend` (a `tokenizers.Tokenizer`)."""
    from xlang.tokenizer.expand import pre_tokens
    from xlang.tokenizer.families import BYTE_LEVEL, from_byte_symbols

    counts: Counter[str] = Counter()
    target_chars = 0
    for text in texts:
        target_chars += len(scripts.pattern.findall(text))
        counts.update(pre_tokens(backend, family, text))
    distinct = frequent = bound = pieces = piece_chars = 0
    for piece, count in counts.items():
        text = from_byte_symbols(piece).decode("utf-8", errors="replace") if family == BYTE_LEVEL else piece
        if not scripts.has_target(text):
            continue
        distinct += 1
        pieces += count
        piece_chars += len(text) * count
        if count >= min_frequency:
            frequent += 1
            bound += max(len(backend.model.tokenize(piece)) - 1, 0)
    return PieceCensus(target_chars, pieces, distinct, frequent, piece_chars, bound)


def shortfall_note(
    added: int, budget: int, found: PieceCensus, candidates: int, min_frequency: int, language_name: str
) -> str:
    """One line: how much of the budget was used, the measured limits, and where the docs explain them."""
    limits = [
        f"merges never cross the base pre-tokenizer's pieces, and the corpus's {found.target_chars:,} "
        f"{language_name} characters fall into {found.distinct:,} distinct pieces "
        f"({found.chars_per_piece:.1f} characters each on average); making each of the {found.frequent:,} seen "
        f"at least {min_frequency} times a single token takes about {found.bound:,} entries"
    ]
    causes = []
    if found.bound < budget:
        causes.append("the corpus's frequent pieces cannot use the whole budget")
    if found.chars_per_piece < SHORT_PIECES_CHARS:
        causes.append(
            "the pre-tokenizer cuts the script into short pieces (for a script with combining marks, the "
            "merges expander's option join_marks='on' keeps them with their letters; a base whose pre-tokenizer "
            "keeps words whole allows more)"
        )
    if found.target_chars < SMALL_CORPUS_CHARS:
        causes.append("the corpus is small (more text allows more)")
    if candidates < budget:
        causes.append(f"the candidate sources proposed only {candidates:,} tokens")
    if not causes:
        causes.append("most pairs are seen fewer than min_frequency times")
    return (
        f"{added:,} new tokens for a budget of {budget:,} ({added / budget:.0%}): {limits[0]}; "
        f"limiting here: {'; '.join(causes)}. See {DOCS}"
    )


def low_share_note(target_paragraphs: int, paragraphs: int, language_name: str) -> str | None:
    """A note when most training paragraphs hold no target character (untranslated fallbacks, a wrong
    corpus), or None."""
    if not paragraphs or target_paragraphs / paragraphs >= LOW_TARGET_SHARE:
        return None
    return (
        f"only {target_paragraphs:,} of {paragraphs:,} training paragraphs ({target_paragraphs / paragraphs:.0%}) "
        f"contain a {language_name} character: the corpus is mostly text in other scripts; filter its source "
        "(a debian:// corpus drops untranslated paragraphs with require=SCRIPT; see docs/plugin-reference.md)"
    )
