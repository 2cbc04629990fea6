"""`xlang eval run`, `xlang eval compare` and `xlang eval report`: benchmark suites, pairwise preference by a
judge, and reports drawn again from what a run wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from xlang_recipes.commands import eval_group

from xlang.cli import console, resolver_from
from xlang.errors import XlangError

judge_options = [
    click.option("--judge", default=None, help="Teacher that grades answers (e.g. openai, local); none: no judge."),
    click.option("--teacher-url", default=None, help="The judge's endpoint base URL (setting teacher_url)."),
    click.option("--teacher-model", default=None, help="The judge's model name or folder (setting teacher_model)."),
]


def with_judge_options(command: Any) -> Any:
    for option in reversed(judge_options):
        command = option(command)
    return command


def add_eval_commands() -> None:
    for command in (eval_run, eval_compare, eval_report):
        eval_group.add_command(command)


@click.command("run")
@click.option("--model", "model_dir", required=True, help="Model folder: a LLaVA or a causal LM xlang wrote.")
@click.option("--suite", default="smoke", show_default=True, help="Suite name from the language plugin.")
@click.option("--lang", "code", required=True, help="Language code.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for results and report.")
@click.option("--bench", "benches", multiple=True, help="A benchmark file or folder to add (repeatable).")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Longest open-ended answer.")
@click.option("--valid-utf8", is_flag=True, help="Never generate bytes that are not UTF-8.")
@click.option("--text/--no-text", "with_text", default=True, help="Also bits/char and tokens/char on validation text.")
@with_judge_options
@click.pass_context
def eval_run(
    ctx: click.Context,
    model_dir: str,
    suite: str,
    code: str,
    out: str,
    benches: tuple[str, ...],
    max_tokens: int,
    valid_utf8: bool,
    with_text: bool,
    judge: str | None,
    teacher_url: str | None,
    teacher_model: str | None,
) -> None:
    """Score a model on a suite: judged open-ended VQA, circular multiple choice, short answers, replies in
    the language, U+FFFD share and characters/s; writes results.json, report.md and PNGs into --out.

    Answers and verdicts are kept as they come, so the same command resumes a stopped evaluation."""
    from xlang_recipes.suites import evaluate_judged, suite_sets

    resolver = resolver_from(ctx, teacher_url=teacher_url, teacher_model=teacher_model)
    language = resolver.language(code)
    sets = suite_sets(language, suite, benches)
    folder = resolver.base_model(model_dir)
    out_dir = Path(out)
    text_metrics = _text_metrics(resolver, language, folder) if with_text else None
    with console.status("loading") as status:
        progress = {"set": "", "answers": 0}

        def on_set(name: str, count: int) -> None:
            progress["set"] = name
            status.update(f"{name}: {count} items")

        def on_answer(answer: Any) -> None:
            progress["answers"] += 1
            status.update(f"{progress['set']}: {progress['answers']} answers ({answer.seconds:.1f} s the last)")

        results = evaluate_judged(
            resolver,
            judge,
            out_dir=out_dir,
            model_dir=folder,
            language=language,
            suite=suite,
            sets=sets,
            max_tokens=max_tokens,
            valid_utf8=valid_utf8,
            text_metrics=text_metrics,
            on_set=on_set,
            on_answer=on_answer,
        )
    console.print(_results_table(results))
    console.print(f"→ {out_dir / 'report.md'}", markup=False, highlight=False, soft_wrap=True)


def _text_metrics(resolver: Any, language: Any, folder: str) -> Any:
    """Bits/char and tokens/char on the evaluate stage's validation text, as `xlang eval bpc` measures them."""

    def measure(_chat: Any) -> dict[str, float]:
        from xlang_recipes.x_llava import EvaluateConfig

        from xlang.data.views import documents
        from xlang.eval import load_for_text

        config = EvaluateConfig(**resolver.settings.stage("evaluate"))
        evaluator = resolver.strategy("evaluators", "bpc")
        texts = documents(resolver.dataset(language, "validation"), language, config.max_chars)
        model, tokenizer = load_for_text(folder)
        options = evaluator.configure(config.evaluator_options.get("bpc"))
        return dict(evaluator(options, model=model, tokenizer=tokenizer, texts=texts, language=language))

    return measure


def _results_table(results: dict[str, Any]) -> Table:
    from xlang.eval.report import _cell, metric_label

    table = Table(title=f"{Path(results['model']).name}: {results['suite']} suite, {results['language']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in results["metrics"].items():
        table.add_row(metric_label(name), _cell(name, value))
    return table


@click.command("compare")
@click.option("--models", nargs=2, required=True, help="Two model folders: A B.")
@click.option("--suite", default="smoke", show_default=True, help="Suite name from the language plugin.")
@click.option("--lang", "codes", multiple=True, required=True, help="Language code (repeatable).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for results and report.")
@click.option("--bench", "benches", multiple=True, help="A benchmark file or folder to add (repeatable).")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Longest answer.")
@click.option("--resamples", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@with_judge_options
@click.pass_context
def eval_compare(
    ctx: click.Context,
    models: tuple[str, str],
    suite: str,
    codes: tuple[str, ...],
    out: str,
    benches: tuple[str, ...],
    max_tokens: int,
    resamples: int,
    judge: str | None,
    teacher_url: str | None,
    teacher_model: str | None,
) -> None:
    """Which of two models answers better, by a judge: every open-ended question of the suite, each pair
    asked in both orders (a verdict that flips with the order is a tie); win/tie/loss of A with a bootstrap
    interval, per language."""
    from xlang_recipes.suites import local_path, make_judge, suite_sets

    from xlang.eval.compare import compare_models
    from xlang.eval.report import write_json

    if not judge:
        raise XlangError(
            "eval compare needs a judge: pass --judge openai --teacher-url URL --teacher-model NAME "
            "(or --judge local --teacher-model FOLDER)"
        )
    resolver = resolver_from(ctx, teacher_url=teacher_url, teacher_model=teacher_model)
    languages = [resolver.language(code) for code in codes]
    folders = [resolver.base_model(model) for model in models]
    out_dir = Path(out)
    sets = {spec.code: suite_sets(spec, suite, benches) for spec in languages}
    grader = make_judge(resolver, judge, out_dir)
    try:
        with console.status("comparing"):
            results = compare_models(
                folders=folders,
                languages=languages,
                sets=sets,
                judge=grader,
                out_dir=out_dir,
                local_path=lambda uri: local_path(resolver, uri),
                max_tokens=max_tokens,
                resamples=resamples,
            )
    finally:
        grader.close()
    results["suite"] = suite
    from xlang.eval.compare import write_compare_report

    write_json(out_dir / "results.json", results)
    write_compare_report(out_dir, results)
    table = Table(title=f"{Path(folders[0]).name} (A) vs {Path(folders[1]).name} (B): judged by {judge}")
    for column in ("language", "pairs", "A wins", "ties", "B wins", "A win share, 95% interval"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for code, rates in results["languages"].items():
        low, high = rates["win_interval"]
        table.add_row(
            code,
            str(rates["pairs"]),
            f"{100 * rates['win']:.0f}%",
            f"{100 * rates['tie']:.0f}%",
            f"{100 * rates['loss']:.0f}%",
            f"{100 * low:.0f}–{100 * high:.0f}%",
        )
    console.print(table)
    console.print(f"→ {out_dir / 'report.md'}", markup=False, highlight=False, soft_wrap=True)


@click.command("report")
@click.argument("folder", type=click.Path(file_okay=False))
@click.pass_context
def eval_report(ctx: click.Context, folder: str) -> None:
    """Draw a report again (markdown and PNGs) from what an evaluation or a run folder holds:
    `results.json` of `xlang eval run`/`compare`, or a run folder's manifest."""
    from xlang.eval.report import write_run_report

    path = Path(folder)
    results_file = path / "results.json"
    if results_file.is_file():
        try:
            results = json.loads(results_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise XlangError(f"{results_file} cannot be read ({error}); rerun the evaluation") from None
        if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
            raise XlangError(f"{results_file} is not an xlang evaluation's results (no metrics); rerun the evaluation")
        if "models" in results:
            from xlang.eval.compare import write_compare_report

            written = write_compare_report(path, results)
        else:
            written = write_run_report(path, results)
    elif (path / "manifest.json").is_file():
        from xlang_recipes.x_llava import redraw_run_report

        written = redraw_run_report(path, resolver_from(ctx))
    else:
        raise XlangError(
            f"{path} holds neither results.json (xlang eval run/compare) nor manifest.json (xlang extend); "
            "pass one of those folders"
        )
    console.print(f"→ {written}", markup=False, highlight=False, soft_wrap=True)
