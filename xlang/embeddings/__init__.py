"""Embeddings stage: give the new tokens' rows values that keep the model sane before any training.

    initialize_embeddings(base_model, tokenizer, out_dir, initializer) -> InitResult
    BUILTIN_INITIALIZERS: random, mean, covariance, subword-mean (registered by xlang.builtin)

Import stays light: torch loads inside the functions.
"""

from __future__ import annotations

from xlang.embeddings.initializers import BUILTIN_INITIALIZERS
from xlang.embeddings.stage import InitResult, initialize_embeddings

__all__ = ["BUILTIN_INITIALIZERS", "InitResult", "initialize_embeddings"]
