"""Evaluation stage: scores that compare models across tokenizers and stages.

    bits_per_character(model, tokenizer, texts, window=, stride=, max_chars=) -> BpcResult
    bits_per_character_of(model_dir, texts, ...) -> BpcResult
    character_bits(model, tokenizer, texts, ...) -> per-document bits per character (where the bits go)
    tokens_per_character(tokenizer, texts, max_chars=) -> float
    load_for_text(folder) -> (model, tokenizer)   (a causal LM or a LLaVA's language side, loaded one way)
    BpcOptions: the ``bpc`` evaluator's options (window, stride, batch size), one default everywhere
    copy_probe(model, token_ids, separator) -> CopyProbe   (can the model copy these tokens in context?)

Import stays light: torch loads inside the functions.
"""

from __future__ import annotations

from xlang.eval.bpc import (
    BpcOptions,
    BpcResult,
    bits_per_character,
    bits_per_character_of,
    character_bits,
    load_for_text,
    tokens_per_character,
)
from xlang.eval.copying import CopyProbe, copy_probe

__all__ = [
    "CopyProbe",
    "copy_probe",
    "BpcResult",
    "bits_per_character",
    "bits_per_character_of",
    "character_bits",
    "BpcOptions",
    "load_for_text",
    "tokens_per_character",
]
