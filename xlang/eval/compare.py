"""Pairwise preference: two models answer the same open-ended questions and a judge picks the better answer,
asked in both orders so that a judge's taste for the first (or second) position cancels out.

Answers are kept per model in the output folder (`answers-A.jsonl`, `answers-B.jsonl`) and verdicts in
`verdicts.jsonl`, so a stopped comparison resumes. Win/tie/loss shares of model A come with percentile
bootstrap intervals over questions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.spec import EvaluationSet, LanguageSpec

OPEN_ENDED_FORMATS = ("llava-bench",)


def compare_models(
    *,
    folders: Sequence[str | Path],
    languages: Sequence[LanguageSpec],
    sets: Mapping[str, Sequence[EvaluationSet]],
    judge: Any,
    out_dir: Path,
    local_path: Callable[[str], str],
    max_tokens: int = 64,
    resamples: int = 2000,
) -> dict[str, Any]:
    """`{"models": [A, B], "judge", "languages": {code: win_rates + "pairs"}, "metrics": {...}, "pairs": [...]}`."""
    from xlang.eval.answers import Answerer
    from xlang.eval.benchmarks import item_image
    from xlang.eval.judge import JudgeGaveNoVerdict
    from xlang.eval.scoring import pairwise_outcome, win_rates
    from xlang.eval.suite import eval_lock, load_sets
    from xlang.serve.engine import ChatModel

    loaded = {
        code: load_sets([entry for entry in chosen if entry.format in OPEN_ENDED_FORMATS], local_path)
        for code, chosen in sets.items()
    }
    for spec in languages:
        if not any(items for _, items in loaded[spec.code]):
            raise XlangError(
                f"the suite has no open-ended (llava-bench) questions in {spec.code}; pairwise preference compares "
                "free answers: pass --bench with a LLaVA-Bench-style file"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    answers: dict[str, dict[str, dict[str, str]]] = {}
    with eval_lock(out_dir):
        for side, folder in zip("AB", folders, strict=True):
            chat = ChatModel.load(folder)
            for spec in languages:
                answerer = Answerer(chat, spec, out_dir / f"answers-{side}.jsonl", max_tokens=max_tokens)
                try:
                    for entry, items in loaded[spec.code]:
                        answerer.scope = entry.name
                        for item in items:
                            image = item_image(item)
                            found = answerer.ask(item.id, item.question, image)
                            answers.setdefault(spec.code, {}).setdefault(f"{entry.name}/{item.id}", {})[side] = (
                                found.text
                            )
                finally:
                    answerer.close()
            del chat
        results: dict[str, Any] = {
            "models": [str(folder) for folder in folders],
            "judge": judge.describe(),
            "languages": {},
            "metrics": {},
            "pairs": [],
        }
        for spec in languages:
            outcomes = []
            for entry, items in loaded[spec.code]:
                for item in items:
                    pair = answers[spec.code][f"{entry.name}/{item.id}"]
                    try:
                        first = judge.prefer(question=item.question, first=pair["A"], second=pair["B"], language=spec)
                        swapped = judge.prefer(question=item.question, first=pair["B"], second=pair["A"], language=spec)
                    except JudgeGaveNoVerdict as error:
                        raise XlangError(
                            f"{item.source} row {item.row}: {error.message}; the answers and verdicts so far are kept "
                            f"in {out_dir}; rerun the same command to resume, or use another --judge"
                        ) from None
                    outcome = pairwise_outcome(first, swapped)
                    outcomes.append(outcome)
                    results["pairs"].append(
                        {
                            "language": spec.code,
                            "set": entry.name,
                            "id": item.id,
                            "verdicts": [first, swapped],
                            "outcome": outcome,
                        }
                    )
            rates = win_rates(outcomes, resamples=resamples)
            rates["pairs"] = len(outcomes)
            results["languages"][spec.code] = rates
            for name in ("win", "tie", "loss"):
                results["metrics"][f"{spec.code}/{name}"] = rates[name]
    return results


def write_compare_report(out_dir: Path, results: dict[str, Any]) -> Path:
    """`report.md` and `preference.png` from a comparison's `results.json` content."""
    from xlang.eval.report import plot_preference, write_text_atomically

    first, second = (Path(model).name for model in results["models"])
    plot = plot_preference(results["languages"], out_dir / "preference.png", first=first, second=second)
    lines = [
        f"# Pairwise preference: {first} (A) vs {second} (B)",
        "",
        f"Judge: `{results.get('judge')}`; suite `{results.get('suite', '?')}`. Every question was judged twice, "
        "with each answer shown first once; verdicts that disagree count as a tie.",
        "",
        "| language | pairs | A wins | ties | B wins | A win share, 95% bootstrap interval |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for code, rates in results["languages"].items():
        low, high = rates["win_interval"]
        lines.append(
            f"| {code} | {rates['pairs']} | {100 * rates['win']:.0f}% | {100 * rates['tie']:.0f}% | "
            f"{100 * rates['loss']:.0f}% | {100 * low:.0f}–{100 * high:.0f}% |"
        )
    lines += ["", f"![preference]({plot.name})", ""]
    path = out_dir / "report.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path
