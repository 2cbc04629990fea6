"""Embeddings stage: give the new tokens' rows values that keep the model sane before any training.

    initialize_embeddings(base_model, tokenizer_dir, out_dir, initializer, *, initializer_name=, options=,
                          inputs=) -> InitResult
    expand_model(model, base_tokenizer, tokenizer, initializer, *, options=, inputs=) -> dict   (in memory)

``initializer`` is a :class:`xlang.contract.Strategy` chosen by name (the built-ins ``random``, ``mean``,
``covariance``, ``subword-mean`` and ``subword-freq`` live in ``initializers`` and are registered by
``xlang.builtin.embedding_strategies``; ``subword-fit`` is the ``xlang-subword-fit`` plugin). ``options``
are its validated options; ``inputs`` are what the stage offers (``seed``, ``texts``, ``keep_texts``).

Import stays light: torch loads inside the functions.
"""

from __future__ import annotations

from xlang.embeddings.initializers import (
    SubwordFreqOptions,
    covariance_init,
    mean_init,
    random_init,
    subword_freq_init,
    subword_mean_init,
)
from xlang.embeddings.stage import InitResult, expand_model, initialize_embeddings

__all__ = [
    "InitResult",
    "SubwordFreqOptions",
    "covariance_init",
    "expand_model",
    "initialize_embeddings",
    "mean_init",
    "random_init",
    "subword_freq_init",
    "subword_mean_init",
]
