"""The `subword-fit` embedding initializer for xlang: `subword-freq` rows plus a map fitted with the model frozen.

It plugs in through the `xlang` entry-point group like any third-party plugin and registers two
initializers: `subword-fit`, whose options are :class:`SubwordFitOptions`, and `subword-copy`, the same fit
with :class:`SubwordCopyOptions`' defaults (a short copy-only map phase, anchored, confined to the directions
the output layer hardly reads). `fit` holds the initializer and its phases, `text` the target text it reads,
`kept` the companion languages' states it protects, `directions` the final states' strong directions.
"""

from __future__ import annotations

from typing import Any

from xlang import hookimpl
from xlang_subword_fit.fit import subword_fit_init
from xlang_subword_fit.options import SubwordCopyOptions, SubwordFitOptions

__all__ = ["SubwordCopyOptions", "SubwordFitOptions", "subword_fit_init"]


@hookimpl
def register_embedding_initializers(register: Any) -> None:
    register("subword-fit", subword_fit_init, options=SubwordFitOptions)
    register("subword-copy", subword_fit_init, options=SubwordCopyOptions)
