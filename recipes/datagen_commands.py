"""`xlang data generate` and `xlang data stats`: multilingual visual-instruction data from a teacher.

The flags are settings: `--teacher`, `--teacher-url` and `--teacher-model` set `teacher`, `teacher_url`
and `teacher_model`; the rest set knobs of the `data` setting (`[data]` in xlang.toml, `XLANG_DATA__*`),
laid over what the settings already hold and validated by `GenerateConfig`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from xlang.cli import XlangGroup, console, resolver_from

DATA_FLAGS: dict[str, str] = {
    "langs": "langs",
    "images": "images",
    "tasks": "tasks",
    "out": "out",
    "translate_from": "translate_from",
    "concurrency": "concurrency",
    "budget_usd": "budget_usd",
    "rpm": "requests_per_minute",
    "tpm": "tokens_per_minute",
    "max_attempts": "max_attempts",
    "max_tokens": "max_tokens",
    "max_images": "max_images",
    "seed": "seed",
}
"""Flag (its Python name) -> knob of the `data` setting."""


def add_data_commands(cli: click.Group) -> None:
    cli.add_command(data_group)


@click.group("data", cls=XlangGroup)
def data_group() -> None:
    """Generate and inspect multilingual visual-instruction data."""


@data_group.command("generate")
@click.option("--langs", default=None, help="Language codes, comma-separated (e.g. en,ko,zh).")
@click.option("--images", default=None, help="Image folder, a save_to_disk dataset folder, or a parquet/JSONL file.")
@click.option("--teacher", default=None, help="Teacher name (setting `teacher`; default openai).")
@click.option("--tasks", default=None, help="Task types, comma-separated, or `all` (default).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="JSONL file to append records to.")
@click.option("--teacher-url", default=None, help="Endpoint base URL, e.g. https://api.openai.com/v1.")
@click.option("--teacher-model", default=None, help="Model name the endpoint serves, e.g. gpt-4o.")
@click.option("--translate-from", default=None, help="Translate this language's records into the others.")
@click.option("--concurrency", type=int, default=None, help="Requests in flight (default 8).")
@click.option("--budget-usd", type=float, default=None, help="Most the output may cost, across runs.")
@click.option("--rpm", type=float, default=None, help="Requests per minute, at most.")
@click.option("--tpm", type=float, default=None, help="Tokens per minute, at most.")
@click.option("--max-attempts", type=int, default=None, help="Attempts per request (default 6).")
@click.option("--max-tokens", type=int, default=None, help="Longest answer in tokens (default 512).")
@click.option("--max-images", type=int, default=None, help="Use only the first N images.")
@click.option("--seed", type=int, default=None, help="Seed mixed into every request (default 0).")
@click.pass_context
def data_generate(
    ctx: click.Context, teacher: str | None, teacher_url: str | None, teacher_model: str | None, **flags: Any
) -> None:
    """Ask a teacher model about every image in every language and task; append the answers to --out.

    Records already in --out are skipped, so the same command resumes a stopped run. Endpoints: any
    OpenAI-compatible server (hosted, vLLM, Ollama, LM Studio, `xlang serve`); the key comes from
    XLANG_TEACHER_API_KEY or OPENAI_API_KEY.
    """
    from xlang.datagen import generate, generate_config, plan_run
    from xlang.datagen.progress import reporter_for
    from xlang.settings import merge_nested

    resolver = resolver_from(ctx, teacher=teacher, teacher_url=teacher_url, teacher_model=teacher_model)
    knobs = {DATA_FLAGS[name]: value for name, value in flags.items() if value is not None}
    config = generate_config(merge_nested(dict(resolver.settings.data), knobs))
    codes = list(dict.fromkeys([*config.langs, *([config.translate_from] if config.translate_from else [])]))
    languages = {code: resolver.language(code) for code in codes}
    plan = plan_run(config, languages)  # tasks and images checked before the teacher is built
    chosen = resolver.teacher()
    result = generate(config, languages=languages, teacher=chosen, reporter=reporter_for(console), plan=plan)
    cost = f"${result.spent_usd:.4f}" if result.priced else "n/a (no price for the teacher's model)"
    console.print(
        f"{result.written} records written, {result.skipped} there before, {result.rejected} answers rejected, "
        f"{result.retried} requests retried; {result.prompt_tokens} prompt + {result.completion_tokens} "
        f"completion tokens, cost {cost}, {result.seconds:.1f} s → {result.out}",
        highlight=False,
        soft_wrap=True,
    )
    if result.gave_up:
        console.print(
            f"[yellow]{len(result.gave_up)} records left out: their answers were rejected {config.max_attempts} "
            f"times (see {result.out.with_name(result.out.stem + '.rejects.jsonl')}); rerun to try them again[/]",
            soft_wrap=True,
        )
    if result.budget_reached:
        console.print(
            f"budget reached: ${result.total_spent_usd:.4f} of ${result.budget_usd:.4f} spent, "
            f"{result.records_in_file} records; rerun with a larger --budget-usd to continue",
            highlight=False,
            soft_wrap=True,
        )
    elif result.gave_up:
        ctx.exit(1)


@data_group.command("stats")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--png", "png", default=None, type=click.Path(dir_okay=False), help="Where to draw the histograms.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def data_stats_command(ctx: click.Context, file: str, png: str | None, as_json: bool) -> None:
    """Records per language and task, rejection reasons, cost, and answer-length histograms (PNG)."""
    from xlang.datagen import data_stats
    from xlang.errors import XlangError

    path = Path(file)
    if not path.is_file():
        raise XlangError(f"{path} does not exist; pass a JSONL file written by xlang data generate")
    stats = data_stats(path, Path(png) if png else None)
    if as_json:
        click.echo(json.dumps(stats.as_dict(), ensure_ascii=False, indent=2))
        return
    tasks = sorted({task for per_lang in stats.counts.values() for task in per_lang})
    table = Table(title=f"{path.name}: {stats.records} records")
    table.add_column("lang")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("total", justify="right")
    for lang, per_task in stats.counts.items():
        table.add_row(lang, *(str(per_task.get(task, 0)) for task in tasks), str(sum(per_task.values())))
    console.print(table)
    if stats.origins:
        console.print("origin: " + ", ".join(f"{name} {count}" for name, count in stats.origins.items()))
    if stats.rejects:
        rejects = Table(title="answers not kept (rejects file)")
        rejects.add_column("reason")
        rejects.add_column("answers", justify="right")
        for reason, count in stats.rejects.items():
            rejects.add_row(reason, str(count))
        console.print(rejects)
    lengths = Table(title="answer length (characters)")
    for column in ("lang", "answers", "mean", "median", "p95", "max"):
        lengths.add_column(column, justify="left" if column == "lang" else "right")
    for lang, summary in stats.answer_chars.items():
        lengths.add_row(lang, *(f"{summary[key]:g}" for key in ("answers", "mean", "median", "p95", "max")))
    console.print(lengths)
    cost = f"${stats.cost_usd:.4f}" if stats.cost_usd is not None else "n/a"
    console.print(f"tokens: {stats.prompt_tokens} prompt + {stats.completion_tokens} completion; cost {cost}")
    if stats.png:
        console.print(f"histograms: {stats.png}", markup=False, highlight=False, soft_wrap=True)
