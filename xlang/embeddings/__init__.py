"""Embeddings stage: give the new tokens' rows values that keep the model sane before any training.

    initialize_embeddings(base_model, tokenizer, out_dir, initializer, options=) -> InitResult
    expand_model(model, base_tokenizer, tokenizer, initializer) -> dict   (in memory, no files)
    BUILTIN_INITIALIZERS: random, mean, covariance, subword-mean, subword-freq (registered by
    xlang.builtin.embedding_strategies; choose one by name through the plugin manager)

Import stays light: torch loads inside the functions.
"""

from __future__ import annotations

from xlang.embeddings.initializers import BUILTIN_INITIALIZERS
from xlang.embeddings.stage import InitResult, expand_model, initialize_embeddings

__all__ = ["BUILTIN_INITIALIZERS", "InitResult", "expand_model", "initialize_embeddings"]
