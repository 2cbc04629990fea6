"""Built-in embedding initializers (`random`, `mean`, `covariance`, `subword-mean`, `subword-freq`, `subword-fit`),
registered like any plugin's."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl


@hookimpl
def register_embedding_initializers(register: Any) -> None:
    from xlang.embeddings import BUILTIN_INITIALIZERS

    for name, initializer in BUILTIN_INITIALIZERS.items():
        register(name, initializer)
