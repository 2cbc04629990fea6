"""Deterministic train/validation splits by document, sized in characters.

Whole documents (a page, a file, a record's `doc`) go to one split, so validation text is never a sibling
paragraph of training text. Documents are ranked by a keyed hash of their name, which does not
depend on file order, Python's hash seed or the machine; validation takes them in that order until
it holds `validation_chars` characters, never more than `max_share` of the corpus. A character budget
(not a percentage) keeps validation large enough for stable bits-per-character and tokens-per-
character numbers and small enough to evaluate quickly on a CPU, whatever the corpus size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

SPLITS: tuple[str, str] = ("train", "validation")


@dataclass(frozen=True)
class SplitRule:
    seed: str = "xlang"
    validation_chars: int = 48_000
    max_share: float = 0.05
    overshoot: float = 1.25
    """A document that would push validation past `overshoot * budget` stays in train."""

    def describe(self) -> str:
        return (
            f"documents ranked by sha256('{self.seed}' + NUL + document key); validation takes them in that "
            f"order until it holds min({self.validation_chars}, {self.max_share} x corpus) characters, "
            f"skipping a document that would exceed {self.overshoot} x that budget (if none fits, the smallest "
            f"document, when there are two or more); the rest is train; "
            f"a validation text is then removed from train wherever else it occurs"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "validation_chars": self.validation_chars,
            "max_share": self.max_share,
            "overshoot": self.overshoot,
            "rule": self.describe(),
        }


def document_rank(key: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def validation_documents(sizes: Mapping[str, int], rule: SplitRule) -> set[str]:
    """The documents (keys of `sizes`, their character counts) that form the validation split."""
    total = sum(sizes.values())
    budget = min(rule.validation_chars, int(rule.max_share * total))
    chosen: set[str] = set()
    held = 0
    for key in sorted(sizes, key=lambda name: document_rank(name, rule.seed)):
        if held >= budget:
            break
        size = sizes[key]
        if size == 0 or held + size > rule.overshoot * budget:
            continue
        chosen.add(key)
        held += size
    if not chosen and len(sizes) > 1:  # a tiny corpus: every document is bigger than the budget
        chosen.add(min(sizes, key=lambda name: (sizes[name], document_rank(name, rule.seed))))
    return chosen
