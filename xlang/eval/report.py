"""Reports of evaluations: markdown tables people read and PNG bar charts they would rather look at.

The same drawing serves `xlang eval run` (one model, one language), the evaluate stage (the base beside
every model a run made, per language) and the A/B recipe (two arms side by side): rows of (model, language,
metrics), one panel per metric, one bar per model and language, each language in its run-wide colour.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xlang.atomic import owned_prefix

METRIC_LABELS: dict[str, str] = {
    "relative_score": "judge score, % of the reference's",
    "chrf": "chrF vs reference",
    "circular_accuracy": "circular accuracy",
    "accuracy": "accuracy (published order)",
    "unparsed_share": "replies naming no option",
    "exact_match": "exact match",
    "reply_language_rate": "replies in the language",
    "replacement_char_share": "replies holding U+FFFD",
    "looping_share": "replies looping on one phrase",
    "in_language_looping_share": "replies in the language looping on one phrase",
    "chars_per_s": "characters/s generated",
    "tokens_per_s": "tokens/s generated",
    "chars_per_token": "characters per generated token",
    "in_language_share": "speed probe: replies in the language",
    "in_language_chars_per_s": "characters/s, replies in the language",
    "in_language_chars_per_token": "characters per token, replies in the language",
    "same_text_chars_per_s": "characters/s writing the reference replies",
    "same_text_reply_chars_per_s": "characters/s writing the reference replies, after the prompt",
    "same_text_chars_per_token": "characters per token of the reference replies",
    "same_text_skipped": "reference replies too long for a model's context",
    "bpc": "bits/char",
    "bpc_ood": "bits/char, out-of-domain text",
    "tokens_per_char": "tokens/char",
    "tokens_per_char_ood": "tokens/char, out-of-domain text",
}
SHARES = frozenset(
    {
        "reply_language_rate",
        "replacement_char_share",
        "looping_share",
        "in_language_looping_share",
        "in_language_share",
        "circular_accuracy",
        "accuracy",
        "exact_match",
        "unparsed_share",
    }
)
"""Metrics that are shares of answers (0 to 1), drawn on that scale and written as percentages."""
LOWER_IS_BETTER = frozenset(
    {
        "unparsed_share",
        "replacement_char_share",
        "looping_share",
        "in_language_looping_share",
        "bpc",
        "bpc_ood",
        "tokens_per_char",
        "tokens_per_char_ood",
        "same_text_skipped",
    }
)
PLOTTED_FIRST = (
    "relative_score",
    "chrf",
    "circular_accuracy",
    "exact_match",
    "reply_language_rate",
    "replacement_char_share",
    "chars_per_s",
    "bpc",
)

Row = tuple[str, str, dict[str, float]]
"""(model label, language code, metrics)."""


def write_text_atomically(path: Path, text: str) -> None:
    """The file appears whole or not at all (a temporary sibling named with this pid, then a rename)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, prefix=owned_prefix(path.name, "-tmp"), suffix=".tmp", encoding="utf-8"
    ) as handle:
        handle.write(text)
        temporary = handle.name
    os.replace(temporary, path)


def write_json(path: Path, payload: Any) -> None:
    write_text_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def metric_label(name: str) -> str:
    """`smoke-open/chrf` -> `smoke-open: chrF vs reference`."""
    head, _, last = name.rpartition("/")
    label = METRIC_LABELS.get(last, last)
    if head and "/" in head:  # SET/relative_score/CATEGORY
        head, _, category = head.rpartition("/")
        label = f"{METRIC_LABELS.get(category, category)} ({last})"
    return f"{head}: {label}" if head else label


def _base_name(name: str) -> str:
    parts = name.split("/")
    return parts[1] if len(parts) > 2 else parts[-1]


def _order(names: Sequence[str]) -> list[str]:
    def rank(name: str) -> tuple[int, str]:
        base = _base_name(name)
        return (PLOTTED_FIRST.index(base) if base in PLOTTED_FIRST else len(PLOTTED_FIRST), name)

    return sorted(names, key=rank)


def metrics_table(rows: Sequence[Row]) -> list[str]:
    """Markdown: one line per metric, one column per (model, language)."""
    names = _order({name for _, _, metrics in rows for name in metrics})
    columns = [f"{label} {code}" for label, code, _ in rows]
    lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in names:
        cells = [_cell(name, metrics.get(name)) for _, _, metrics in rows]
        arrow = " (lower is better)" if _base_name(name) in LOWER_IS_BETTER else ""
        lines.append(f"| {metric_label(name)}{arrow} | " + " | ".join(cells) + " |")
    return lines


def _cell(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    base = _base_name(name)
    if base in SHARES:
        return f"{100 * value:.0f}%"
    if base in ("chars_per_s", "tokens_per_s", "relative_score", "chrf"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def plot_rows(rows: Sequence[Row], path: Path, *, title: str = "") -> Path | None:
    """One panel per metric (at most 12), grouped bars per model and language, values written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xlang.eval.plots import language_colours

    names = [
        name
        for name in _order({n for _, _, m in rows for n in m})
        if "/" not in name.split("/", 1)[-1] or name.count("/") == 1
    ][:12]
    if not names:
        return None
    labels = list(dict.fromkeys(label for label, _, _ in rows))
    codes = list(dict.fromkeys(code for _, code, _ in rows))
    colours = language_colours(codes)
    columns = min(3, len(names))
    lines = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 2.9 * lines), squeeze=False)
    width = 0.8 / max(len(codes), 1)
    for axis, name in zip(axes.flat, names, strict=False):
        for offset, code in enumerate(codes):
            values = [
                next(
                    (m.get(name, math.nan) for label_, code_, m in rows if label_ == label and code_ == code), math.nan
                )
                for label in labels
            ]
            bars = axis.bar(
                [i + offset * width for i in range(len(labels))], values, width, label=code, color=colours[code]
            )
            axis.bar_label(
                bars, labels=[_cell(name, v) if not math.isnan(v) else "" for v in values], fontsize=7, padding=1
            )
        axis.set_xticks([i + width * (len(codes) - 1) / 2 for i in range(len(labels))], labels, fontsize=8)
        if _base_name(name) in SHARES:
            axis.set_ylim(0, 1.1)
        else:
            shown = [m.get(name) for _, _, m in rows if isinstance(m.get(name), int | float)]
            highest = max((v for v in shown if math.isfinite(v)), default=0.0)
            axis.set_ylim(0, highest * 1.18 or 1.0)
        heading = metric_label(name)
        if _base_name(name) in LOWER_IS_BETTER:
            heading += " ↓"
        axis.set_title(heading, fontsize=8)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    # fixed margins, not tight_layout: measuring every label's box took a third of the plot's time
    inch_w, inch_h = figure.get_size_inches()
    figure.subplots_adjust(
        left=0.45 / inch_w,
        right=1 - 0.15 / inch_w,
        bottom=0.4 / inch_h,
        top=1 - (0.55 if title else 0.35) / inch_h,
        wspace=0.28,
        hspace=0.55,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_preference(outcomes: dict[str, dict[str, Any]], path: Path, *, first: str, second: str) -> Path:
    """Stacked win/tie/loss bars per language with the bootstrap interval of the win share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = list(outcomes)
    figure, axis = plt.subplots(figsize=(5.5, 0.8 + 0.6 * len(codes)))
    for index, code in enumerate(codes):
        rates = outcomes[code]
        left = 0.0
        for part, colour in (("win", "tab:green"), ("tie", "tab:gray"), ("loss", "tab:red")):
            share = rates[part]
            axis.barh(index, share, left=left, color=colour, label=part if index == 0 else None)
            if share >= 0.08:
                axis.text(
                    left + share / 2, index, f"{100 * share:.0f}%", ha="center", va="center", fontsize=8, color="white"
                )
            left += share
        low, high = rates["win_interval"]
        axis.errorbar(
            rates["win"], index, xerr=[[rates["win"] - low], [high - rates["win"]]], color="black", capsize=3, lw=1
        )
    axis.set_yticks(range(len(codes)), codes)
    axis.set_xlim(0, 1)
    axis.set_xlabel(
        f"{first} vs {second}: judged win / tie / loss (bar: 95% bootstrap interval of the win share)", fontsize=8
    )
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def model_label(folder: str) -> str:
    """`runs/x-llava-ko/vit/model` -> `vit/model`: the stage says more than the folder's own name."""
    return "/".join(Path(folder).parts[-2:])


def write_run_report(out_dir: Path, results: dict[str, Any]) -> Path:
    """`report.md` and `scores.png` of one `xlang eval run` from its `results.json` content."""
    rows: list[Row] = [(model_label(results["model"]), results["language"], results["metrics"])]
    plot = plot_rows(rows, out_dir / "scores.png", title=f"{results['suite']} suite, {results['language']}")
    judge = results.get("judge")
    lines = [
        f"# Evaluation: {results['suite']} suite, {results['language']}",
        "",
        f"Model `{results['model']}` "
        + ("(reads the images)" if results.get("saw_images") else "(text only: answered without the images)")
        + f"; {results.get('seconds', 0):.0f} s.",
        "",
        *metrics_table(rows),
        "",
    ]
    if plot is not None:
        lines += [f"![scores]({plot.name})", ""]
    lines += ["## Sets", "", "| set | format | evaluator | items | source |", "|---|---|---|---:|---|"]
    for entry in results.get("sets", []):
        lines.append(
            f"| {entry['name']} | {entry['format']} | {entry['evaluator']} | {entry['items']} | `{entry['uri']}` |"
        )
    lines += ["", "## How measured", "", *how_measured(judge), ""]
    if results.get("text_metrics_note"):
        lines += [results["text_metrics_note"], ""]
    if results.get("examples"):
        lines += ["## Example answers", "", "| set | question | answer |", "|---|---|---|"]
        for example in results["examples"]:
            lines.append(f"| {example['set']} | {_inline(example['question'])} | {_inline(example['answer'])} |")
    path = out_dir / "report.md"
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path


def how_measured(judge: dict[str, Any] | None) -> list[str]:
    judged = (
        f"Open-ended answers are graded by the judge {json.dumps(judge, ensure_ascii=False)} against the reference "
        "(LLaVA-Bench's relative score: the answer's score over the reference's, ×100)."
        if judge
        else "No judge was set, so open-ended answers have chrF against the reference but no judge score "
        "(`--judge openai --teacher-url URL --teacher-model NAME` adds it)."
    )
    return [
        f"- {judged} An answer not in the language asked scores zero in every open-ended measure.",
        "- Multiple choice: MMBench's circular evaluation; an item counts only when every rotation of its options "
        "is answered right.",
        "- Short answers: exact match after normalization (case, punctuation, articles, number words).",
        "- Replies in the language: share of free-text answers whose letters are at least the language's "
        "`min_reply_share` in its scripts. U+FFFD: share of answers holding a broken character.",
        "- Characters/s: characters of free-text answers per second of greedy generation on this machine "
        "(the payoff of a shorter tokenization).",
    ]


def _inline(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:160]
