"""Built-in embedding initializers (`random`, `mean`, `covariance`, `subword-mean`, `subword-freq`),
registered like any plugin's. `subword-fit` is the `xlang-subword-fit` plugin."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl


@hookimpl
def register_embedding_initializers(register: Any) -> None:
    from xlang.embeddings.initializers import (
        SubwordFreqOptions,
        covariance_init,
        mean_init,
        random_init,
        subword_freq_init,
        subword_mean_init,
    )

    register("random", random_init)
    register("mean", mean_init)
    register("covariance", covariance_init)
    register("subword-mean", subword_mean_init)
    register("subword-freq", subword_freq_init, options=SubwordFreqOptions)
