"""Evaluation stage: scores that compare models across tokenizers and stages.

    bits_per_character(model, tokenizer, texts, window=, stride=, max_chars=) -> BpcResult
    bits_per_character_of(model_dir, texts, ...) -> BpcResult
    tokens_per_character(tokenizer, texts, max_chars=) -> float

Import stays light: torch loads inside the functions.
"""

from __future__ import annotations

from xlang.eval.bpc import (
    BpcResult,
    bits_per_character,
    bits_per_character_of,
    join_documents,
    take_chars,
    tokens_per_character,
)

__all__ = [
    "BpcResult",
    "bits_per_character",
    "bits_per_character_of",
    "join_documents",
    "take_chars",
    "tokens_per_character",
]
