"""What a visual-instruction file holds: records per language and task, how they were made, why answers
were rejected (from the rejects file beside it), what they cost, and how long the answers are per
language (a histogram per language saved as a PNG)."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xlang.datagen.store import iter_lines, reject_lines


@dataclass
class DataStats:
    file: str
    records: int
    counts: dict[str, dict[str, int]]
    """language -> task -> records."""
    origins: dict[str, int]
    rejects: dict[str, int]
    """rejection reason -> answers rejected for it."""
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    """Records and rejected answers together; None when no line carries a cost."""
    answer_chars: dict[str, dict[str, float]] = field(default_factory=dict)
    """language -> answers, mean, median, p95 and max length in characters."""
    png: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_stats(path: Path, png: Path | None = None, *, draw: bool = True) -> DataStats:
    """Count the records of `path` (and its rejects file) and draw the answer-length histograms at `png`
    (default: `DATA.lengths.png` beside the file)."""
    path = Path(path)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    origins: Counter[str] = Counter()
    lengths: dict[str, list[int]] = defaultdict(list)
    prompt_tokens = completion_tokens = 0
    cost = 0.0
    priced = False
    records = 0
    for _, record in iter_lines(path, require_key=False):
        records += 1
        lang = str(record.get("lang", "?"))
        counts[lang][str(record.get("task", "?"))] += 1
        origins[str(record.get("origin", "unknown"))] += 1
        for turn in record["conversations"]:
            if isinstance(turn, dict) and turn.get("from") == "gpt" and isinstance(turn.get("value"), str):
                lengths[lang].append(len(turn["value"]))
        prompt, completion, line_cost = _usage(record)
        prompt_tokens, completion_tokens = prompt_tokens + prompt, completion_tokens + completion
        if line_cost is not None:
            cost, priced = cost + line_cost, True
    reasons: Counter[str] = Counter()
    for line in reject_lines(path):
        reasons[str(line.get("reason", "unknown"))] += 1
        prompt, completion, line_cost = _usage(line)
        prompt_tokens, completion_tokens = prompt_tokens + prompt, completion_tokens + completion
        if line_cost is not None:
            cost, priced = cost + line_cost, True
    stats = DataStats(
        file=str(path),
        records=records,
        counts={lang: dict(sorted(tasks.items())) for lang, tasks in sorted(counts.items())},
        origins=dict(sorted(origins.items())),
        rejects=dict(reasons.most_common()),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=round(cost, 10) if priced else None,
        answer_chars={lang: _summary(values) for lang, values in sorted(lengths.items())},
    )
    if draw and lengths:
        target = png or path.with_name(f"{path.stem}.lengths.png")
        write_length_histograms(dict(sorted(lengths.items())), target)
        stats.png = str(target)
    return stats


def _usage(line: dict[str, Any]) -> tuple[int, int, float | None]:
    usage = line.get("usage") if isinstance(line.get("usage"), dict) else {}
    cost = line.get("cost_usd")
    return (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        float(cost) if isinstance(cost, int | float) else None,
    )


def _summary(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "answers": len(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "median": float(statistics.median(ordered)),
        "p95": float(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]),
        "max": float(ordered[-1]),
    }


def write_length_histograms(lengths: dict[str, list[int]], target: Path) -> Path:
    """One histogram of answer lengths (characters) per language, side by side, as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xlang.eval.plots import language_colours

    colours = language_colours(lengths)
    figure, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths), 3), squeeze=False)
    for axis, (lang, values) in zip(axes[0], lengths.items(), strict=True):
        axis.hist(values, bins=min(30, max(5, len(set(values)))), color=colours[lang])
        axis.set_title(f"{lang}: {len(values)} answers")
        axis.set_xlabel("characters")
        axis.set_ylabel("answers")
    figure.tight_layout()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".png", delete=False) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)
    os.replace(handle.name, target)
    return target
