"""The benchmark evaluators (`register_evaluators`): open-ended VQA graded by a judge, multiple choice with
circular evaluation, short-answer VQA by exact match.

Each is called with the items of one evaluation set, an `Answerer` (the model under test) and a `Judge` (or
None), and returns metrics. An open-ended answer that is not in the language asked scores zero, whatever its
content: a Korean question answered in English is a failure of the thing being taught.
"""

from __future__ import annotations

import statistics
from typing import Any, Literal

from pydantic import Field

from xlang.contract import Options
from xlang.errors import XlangError
from xlang.eval.benchmarks import item_image
from xlang.spec import LanguageSpec


class OpenEndedOptions(Options):
    """How open-ended answers are asked for and graded."""

    max_tokens: int | None = Field(default=None, gt=0)
    """The longest answer, in tokens; unset: the run's (`--max-tokens`, 128 by default)."""


class MultipleChoiceOptions(Options):
    """How a multiple-choice question is put and answered."""

    instruction: str = "Answer with the option's letter from the given choices directly."
    """Appended after the options (MMBench's own wording)."""
    mode: Literal["likelihood", "generate"] = "likelihood"
    """`likelihood`: the option letter the model finds likeliest as its reply (always names an option; one
    forward pass, as lm-eval-harness scores small models); `generate`: a free reply, the letter read from it
    (MMBench's protocol, for models that follow the instruction)."""
    max_tokens: int = Field(default=8, gt=0)
    """The longest free reply, in `generate` mode."""


class ShortAnswerOptions(Options):
    """How a short-answer question is put."""

    instruction: str = "Answer the question using a single word or phrase."
    """Appended after the question (LLaVA's wording for VQAv2-style questions)."""
    max_tokens: int = Field(default=16, gt=0)


def _where(item: Any) -> str:
    return f"{item.source} row {item.row}"


def open_ended_evaluator(
    *, items: list[Any], answerer: Any, judge: Any | None, language: LanguageSpec, options: OpenEndedOptions
) -> dict[str, float]:
    """chrF against the reference always; with a judge, LLaVA-Bench's relative score (answer ÷ reference × 100),
    overall and per category. Wrong-language answers score zero in both."""
    from xlang.eval.judge import JudgeGaveNoVerdict
    from xlang.eval.scoring import chrf

    chrf_scores: list[float] = []
    relative: dict[str, list[float]] = {}
    for item in items:
        answer = answerer.ask(item.id, item.question, item_image(item), max_tokens=options.max_tokens)
        in_language = language.is_reply_in_language(answer.text)
        chrf_scores.append(chrf(answer.text, item.reference) if in_language else 0.0)
        if judge is None:
            continue
        try:
            reference_score, answer_score = judge.grade(
                question=item.question,
                reference=item.reference,
                answer=answer.text,
                language=language,
                context=getattr(item, "context", "") or "",
            )
        except JudgeGaveNoVerdict as error:
            raise XlangError(f"{_where(item)}: {error.message}; {_resume_hint(answerer)}") from None
        score = 100.0 * answer_score / max(reference_score, 1.0) if in_language else 0.0
        relative.setdefault(item.category or "all", []).append(score)
    metrics = {"chrf": statistics.fmean(chrf_scores)} if chrf_scores else {}
    if relative:
        every = [score for scores in relative.values() for score in scores]
        metrics["relative_score"] = statistics.fmean(every)
        if len(relative) > 1:
            for category, scores in sorted(relative.items()):
                metrics[f"relative_score/{category}"] = statistics.fmean(scores)
    return metrics


def multiple_choice_evaluator(
    *, items: list[Any], answerer: Any, language: LanguageSpec, options: MultipleChoiceOptions
) -> dict[str, float]:
    """MMBench's circular evaluation: every rotation of the options must be answered right. Plain accuracy
    (the published order only) and the share of replies that named no option are reported beside it."""
    from xlang.eval.scoring import circular_score, circular_variants, extract_choice, first_rotation_accuracy

    results: dict[str, list[bool]] = {}
    unparsed = asked = 0
    for item in items:
        image = item_image(item)
        for variant in circular_variants(item):
            answer = answerer.ask(
                variant.id,
                _choice_prompt(variant, options.instruction),
                image,
                max_tokens=options.max_tokens,
                language_bearing=False,
                choices=tuple(letter for letter, _ in variant.options) if options.mode == "likelihood" else None,
            )
            picked = extract_choice(answer.text, variant.options)
            unparsed += picked is None
            asked += 1
            results.setdefault(item.id, []).append(picked == variant.answer)
    if not results:
        return {}
    return {
        "circular_accuracy": circular_score(results),
        "accuracy": first_rotation_accuracy(results),
        "unparsed_share": unparsed / asked,
    }


def _choice_prompt(item: Any, instruction: str) -> str:
    lines = [item.hint] if item.hint else []
    lines.append(item.question)
    lines += [f"{letter}. {text}" for letter, text in item.options]
    lines.append(instruction)
    return "\n".join(lines)


def short_answer_evaluator(
    *, items: list[Any], answerer: Any, language: LanguageSpec, options: ShortAnswerOptions
) -> dict[str, float]:
    """Normalized exact match against any accepted answer; an answer in another language cannot match."""
    from xlang.eval.scoring import exact_match

    hits = []
    for item in items:
        answer = answerer.ask(
            item.id, f"{item.question}\n{options.instruction}", item_image(item), max_tokens=options.max_tokens
        )
        hits.append(exact_match(answer.text, item.answers))
    return {"exact_match": sum(hits) / len(hits)} if hits else {}


def _resume_hint(answerer: Any) -> str:
    where = f" in {answerer.book.parent}" if answerer.book is not None else ""
    return f"the answers and verdicts so far are kept{where}; rerun the same command to resume, or use another --judge"
