"""Out-of-domain text: a language's `heldout_corpora`, read as whole documents within one character budget.

A model that learned its new tokens and rows from software manuals can look fine on the manuals' own
validation split and fail on news or law. The held-out sources are text of another kind that no stage trains
on; every figure is measured on them next to the in-domain validation split, with the same budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from xlang.data.views import documents
from xlang.spec import LanguageSpec

IN_DOMAIN = "in-domain"
OUT_OF_DOMAIN = "out-of-domain"
DOMAINS: tuple[str, str] = (OUT_OF_DOMAIN, IN_DOMAIN)
"""How figures name the two texts; out-of-domain first, since it is the one that tells whether a change holds."""


def heldout_documents(language: LanguageSpec, splits: Sequence[Iterable[Any]], max_chars: int | None) -> list[str]:
    """Whole documents of the held-out sources' `splits` (one dataset per source, in declaration order), at most
    `max_chars` characters in all, shared evenly: each source gets what is left divided by the sources left,
    so a short source leaves its unused share to the next and no single source fills the budget."""
    taken: list[str] = []
    left = max_chars
    for index, split in enumerate(splits):
        share = None if left is None else left // (len(splits) - index)
        found = documents(split, language, share)
        taken += found
        if left is not None:
            left -= sum(len(text) for text in found)
    return taken
