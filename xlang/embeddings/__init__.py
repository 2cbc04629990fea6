"""Embeddings stage: give the new tokens' rows values that keep the model sane before any training.

    initialize_embeddings(base_model, tokenizer, out_dir, initializer, options=) -> InitResult
    expand_model(model, base_tokenizer, tokenizer, initializer) -> dict   (in memory, no files)
    BUILTIN_INITIALIZERS: random, mean, covariance, subword-mean, subword-freq, subword-fit (registered by
    xlang.builtin.embedding_strategies; choose one by name through the plugin manager)

Import stays light: torch loads inside the functions.
"""

from __future__ import annotations

from typing import Any

from xlang.embeddings.fitted import subword_fit_init
from xlang.embeddings.initializers import (
    covariance_init,
    mean_init,
    random_init,
    subword_freq_init,
    subword_mean_init,
)
from xlang.embeddings.stage import InitResult, expand_model, initialize_embeddings

BUILTIN_INITIALIZERS: dict[str, Any] = {
    "random": random_init,
    "mean": mean_init,
    "covariance": covariance_init,
    "subword-mean": subword_mean_init,
    "subword-freq": subword_freq_init,
    "subword-fit": subword_fit_init,
}

__all__ = ["BUILTIN_INITIALIZERS", "InitResult", "expand_model", "initialize_embeddings"]
