"""Built-in evaluators: `bpc` and `tokens-per-char` on text; `open-ended`, `multiple-choice` and
`short-answer` on benchmark items."""

from __future__ import annotations

from typing import Any

from xlang.hookspecs import hookimpl


@hookimpl
def register_evaluators(register: Any) -> None:
    from xlang.eval.bpc import BpcOptions, bpc_evaluator, tokens_per_char_evaluator
    from xlang.eval.vqa import (
        MultipleChoiceOptions,
        OpenEndedOptions,
        ShortAnswerOptions,
        multiple_choice_evaluator,
        open_ended_evaluator,
        short_answer_evaluator,
    )

    register("bpc", bpc_evaluator, options=BpcOptions)
    register("tokens-per-char", tokens_per_char_evaluator)
    register("open-ended", open_ended_evaluator, options=OpenEndedOptions)
    register("multiple-choice", multiple_choice_evaluator, options=MultipleChoiceOptions)
    register("short-answer", short_answer_evaluator, options=ShortAnswerOptions)
