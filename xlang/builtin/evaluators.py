"""Built-in evaluators (`bpc`, `tokens-per-char`), adapted from the eval stage into hook implementations."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl


@hookimpl
def register_evaluators(register: Any) -> None:
    from xlang.eval.bpc import BpcOptions, bpc_evaluator, tokens_per_char_evaluator

    register("bpc", bpc_evaluator, options=BpcOptions)
    register("tokens-per-char", tokens_per_char_evaluator)
