"""One model, one language, one suite: every evaluation set scored by its evaluator, the reply metrics of all
answers, and the results written where `xlang eval report` can draw them again.

The output folder holds `answers.jsonl` and `verdicts.jsonl` (appended as they come, so a stopped run
resumes), `results.json` (written whole at the end: `{"metrics": {name: value}, ...}`), `report.md` and PNGs.
A lock on the folder refuses a second evaluation writing into it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.locks import ExclusiveLock, Holder
from xlang.spec import EvaluationSet, LanguageSpec

RESULTS = "results.json"
ANSWERS = "answers.jsonl"
VERDICTS = "verdicts.jsonl"
EXAMPLES_PER_SET = 3


@dataclass
class SuiteResult:
    """What `results.json` holds."""

    metrics: dict[str, float]
    model: str
    language: str
    suite: str
    sets: list[dict[str, Any]]
    judge: dict[str, Any] | None
    saw_images: bool
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    text_metrics_note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "metrics": {name: round(value, 4) for name, value in self.metrics.items()},
            "model": self.model,
            "language": self.language,
            "suite": self.suite,
            "sets": self.sets,
            "judge": self.judge,
            "saw_images": self.saw_images,
            "seconds": round(self.seconds, 1),
            "examples": self.examples,
            "text_metrics_note": self.text_metrics_note,
        }


def eval_lock(out_dir: Path) -> ExclusiveLock:
    def busy(holder: Holder) -> str:
        return (
            f"{out_dir} is being written by another xlang evaluation ({holder.describe()}); wait or choose "
            "another --out"
        )

    return ExclusiveLock(out_dir / ".xlang-eval.lock", busy)


def load_sets(sets: Sequence[EvaluationSet], local_path: Callable[[str], str]) -> list[tuple[EvaluationSet, list[Any]]]:
    """Every set's items, loaded before any model runs, so a bad file stops the evaluation at once."""
    from xlang.eval.benchmarks import load_benchmark

    return [(entry, load_benchmark(local_path(entry.uri), entry.format)) for entry in sets]


def run_suite(
    *,
    chat: Any,
    language: LanguageSpec,
    suite: str,
    sets: Sequence[tuple[EvaluationSet, list[Any]]],
    evaluator_for: Callable[[str], Any],
    evaluator_options: dict[str, Any],
    judge: Any | None,
    out_dir: Path,
    max_tokens: int = 64,
    valid_utf8: bool = False,
    text_metrics: Callable[[], dict[str, float]] | None = None,
    on_set: Callable[[str, int], None] | None = None,
    on_answer: Callable[[Any], None] | None = None,
) -> SuiteResult:
    """Score `chat` (a loaded `ChatModel`) on every set; metrics are `SET/NAME` plus the reply metrics
    (`reply_language_rate`, `replacement_char_share`, `chars_per_s`, ...) over all answers."""
    from xlang.eval.answers import Answerer, reply_metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    answerer = Answerer(chat, language, out_dir / ANSWERS, max_tokens=max_tokens, valid_utf8=valid_utf8)
    answerer.on_answer = on_answer
    metrics: dict[str, float] = {}
    described: list[dict[str, Any]] = []
    try:
        for entry, items in sets:
            if on_set is not None:
                on_set(entry.name, len(items))
            answerer.scope = entry.name
            evaluator = evaluator_for(entry.scored_by())
            names, _ = evaluator.accepted()
            if "items" not in names:
                raise XlangError(
                    f"evaluation set {entry.name!r} names evaluator {entry.scored_by()!r}, which does not score "
                    "benchmark items (it takes no items=); name a benchmark evaluator"
                )
            found = evaluator(
                evaluator_options.get(entry.scored_by()),
                items=items,
                answerer=answerer,
                judge=judge,
                language=language,
            )
            for name, value in found.items():
                metrics[f"{entry.name}/{name}"] = float(value)
            described.append(
                {
                    "name": entry.name,
                    "format": entry.format,
                    "evaluator": entry.scored_by(),
                    "uri": entry.uri,
                    "items": len(items),
                    "license": entry.license,
                }
            )
        answers = list(answerer.asked.values())
        metrics.update(reply_metrics(answers, language))
        if text_metrics is not None:
            metrics.update(text_metrics())
    finally:
        answerer.close()
    examples = []
    for entry, items in sets:
        for item in items[:EXAMPLES_PER_SET]:
            key = f"{entry.name}/{item.id}"
            answer = answerer.asked.get(key) or answerer.asked.get(f"{key}@r0")
            if answer is not None:
                examples.append(
                    {"set": entry.name, "question": item.question, "answer": answer.text[:300], "id": item.id}
                )
    return SuiteResult(
        metrics=metrics,
        model=str(chat.folder),
        language=language.code,
        suite=suite,
        sets=described,
        judge=judge.describe() if judge is not None else None,
        saw_images=answerer.reads_images,
        seconds=time.perf_counter() - began,
        examples=examples,
    )
