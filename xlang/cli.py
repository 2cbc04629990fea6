"""The `xlang` command. Bad input prints one line naming the input and the fix, and exits with status 2."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from xlang import plugins, resolve
from xlang.errors import XlangError
from xlang.settings import XlangSettings, load_settings

console = Console()
err_console = Console(stderr=True)


class XlangGroup(click.Group):
    """Turns XlangError into one red line and exit status 2, wherever it is raised."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except XlangError as error:
            err_console.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
            ctx.exit(error.exit_code)


def settings_from(ctx: click.Context, **overrides: Any) -> XlangSettings:
    root = ctx.find_root()
    settings = load_settings(root.params.get("config"), **overrides)
    settings.apply_environment()
    return settings


@click.group(cls=XlangGroup)
@click.option(
    "--config", type=click.Path(dir_okay=False), default=None, help="TOML settings file (default: ./xlang.toml)."
)
@click.version_option(package_name="xlang")
def cli(config: str | None) -> None:
    """Teach an existing LLM or LLaVA-style model a new language."""


@cli.command("languages")
@click.pass_context
def languages_command(ctx: click.Context) -> None:
    """List the languages that installed plugins offer."""
    settings = settings_from(ctx)
    table = Table(title="Languages")
    for column in ("code", "name", "scripts", "corpus (cached chars)", "plugin"):
        table.add_column(column)
    for code, registered in sorted(plugins.languages().items()):
        spec = registered.value
        scripts = ", ".join(sorted({script.name for script in spec.scripts})) or "(base script)"
        sizes = []
        for source in spec.offline_corpora():
            meta = resolve.cached_corpus_meta(source, settings)
            sizes.append(f"{source.name}: {_human(meta_total_chars(meta))}" if meta else f"{source.name}: not fetched")
        table.add_row(code, spec.name, scripts, "\n".join(sizes) or "-", registered.plugin)
    console.print(table)


def meta_total_chars(meta: dict[str, Any]) -> int:
    splits = meta.get("splits", {})
    return sum(int(split.get("chars", 0)) for split in splits.values())


def _human(count: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


@cli.command("plugins")
def plugins_command() -> None:
    """List loaded plugins, where they come from and the hooks they implement."""
    table = Table(title="Plugins")
    for column in ("name", "distribution", "version", "hooks"):
        table.add_column(column)
    for info in plugins.plugin_infos():
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks))
    console.print(table)


@cli.command("recipes")
def recipes_command() -> None:
    """List the recipes `xlang extend --recipe` can run."""
    table = Table(title="Recipes")
    for column in ("name", "stages", "description", "plugin"):
        table.add_column(column)
    for name, registered in sorted(plugins.recipes().items()):
        recipe = registered.value
        table.add_row(name, " → ".join(recipe.stage_names()), recipe.description, registered.plugin)
    console.print(table)


@cli.group("assets", cls=XlangGroup)
def assets_group() -> None:
    """Download and prepare the embedded models and corpora."""


@assets_group.command("fetch")
@click.option("--lang", "codes", multiple=True, help="Language code (repeatable; default: every language).")
@click.option("--models/--no-models", default=True, help="Also convert the embedded base model.")
@click.pass_context
def assets_fetch(ctx: click.Context, codes: tuple[str, ...], models: bool) -> None:
    """Fetch and build corpora (and the embedded base model) into the cache."""
    settings = settings_from(ctx)
    specs = [resolve.language(code) for code in codes] if codes else [r.value for r in plugins.languages().values()]
    for spec in specs:
        for source in spec.offline_corpora() + spec.parallel_corpora():
            with console.status(f"[bold]{spec.code}[/]: building {source.name}"):
                for split in resolve.SPLITS:
                    resolve.load_source(source, split, settings)
            console.print(f"[green]✓[/] {spec.code}: {source.name}")
    if models:
        with console.status("converting smollm2-135m"):
            path = resolve.base_model("smollm2-135m", settings)
        console.print(f"[green]✓[/] smollm2-135m → {path}")


@cli.group("corpus", cls=XlangGroup)
def corpus_group() -> None:
    """Inspect a language's corpora."""


@corpus_group.command("stats")
@click.option("--lang", "code", required=True, help="Language code, e.g. ko.")
@click.pass_context
def corpus_stats(ctx: click.Context, code: str) -> None:
    """Characters, target-script share and split sizes of a language's offline corpora."""
    from xlang.data import corpus_stats as compute_stats

    settings = settings_from(ctx)
    spec = resolve.language(code)
    loaded = {
        source.name: {split: resolve.load_source(source, split, settings) for split in resolve.SPLITS}
        for source in spec.offline_corpora()
    }
    stats = compute_stats(spec, loaded)
    table = Table(title=f"Corpus of {spec.name} ({spec.code})")
    for column in ("source", "split", "documents", "characters", "target-script chars", "target share"):
        table.add_column(column, justify="right" if column != "source" else "left")
    for row in stats.rows:
        table.add_row(
            row.source,
            row.split,
            f"{row.documents:,}",
            f"{row.chars:,}",
            f"{row.target_chars:,}",
            f"{row.target_share:.1%}",
        )
    console.print(table)
    console.print(
        f"total: {stats.total_chars:,} characters, {stats.total_target_chars:,} in the target scripts "
        f"({stats.target_share:.1%})"
    )


@cli.group("tokenizer", cls=XlangGroup)
def tokenizer_group() -> None:
    """Expand a tokenizer for a language and measure it."""


@tokenizer_group.command("expand")
@click.option("--lang", "code", required=True, help="Target language code.")
@click.option("--base", default="smollm2-135m", show_default=True, help="Embedded name, folder or .model file.")
@click.option("--budget", type=int, default=8000, show_default=True, help="Number of new vocabulary entries.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--source", "sources", multiple=True, help="Candidate source name (repeatable; default: language's).")
@click.option("--expander", default=None, help="Expander name (default: the language's).")
@click.option("--pad-to-multiple-of", type=int, default=64, show_default=True, help="0 disables padding.")
@click.pass_context
def tokenizer_expand(
    ctx: click.Context,
    code: str,
    base: str,
    budget: int,
    out_dir: str,
    sources: tuple[str, ...],
    expander: str | None,
    pad_to_multiple_of: int,
) -> None:
    """Add real BPE merges for LANG's script; other text keeps its exact ids."""
    from xlang.tokenizer import expand_tokenizer, stats_table, tokenizer_stats

    settings = settings_from(ctx)
    spec = resolve.language(code)
    # a SentencePiece model file or a tokenizer-only folder is a base too (no model weights needed here)
    base_path = base if Path(base).exists() else resolve.base_model(base, settings)
    names = sources or spec.defaults.candidate_sources
    with console.status(f"expanding {base} for {spec.name} (budget {budget:,})"):
        result = expand_tokenizer(
            base=base_path,
            language=spec,
            train_texts=resolve.corpus_texts(spec, "train", settings),
            budget=budget,
            out_dir=Path(out_dir),
            candidate_sources={name: resolve.strategy("token_candidate_sources", name) for name in names},
            expander=resolve.strategy("tokenizer_expanders", expander or spec.defaults.tokenizer_expander),
            pad_to_multiple_of=pad_to_multiple_of,
        )
    console.print(
        f"[green]✓[/] {len(result.new_token_ids):,} new tokens ({result.family}), vocabulary "
        f"{result.base_vocab_size:,} → {result.vocab_size:,}, {result.seconds:.1f} s → {result.out_dir}"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(
        stats_table(tokenizer_stats(result.out_dir, resolve.validation_texts(spec, settings), base=base_path))
    )


@tokenizer_group.command("stats")
@click.option("--lang", "code", required=True, help="Language whose validation split is measured.")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(exists=True), required=True, help="Expanded folder.")
@click.option("--base", default=None, help="Base tokenizer to compare with (default: the one it was expanded from).")
@click.pass_context
def tokenizer_stats_command(ctx: click.Context, code: str, tokenizer_dir: str, base: str | None) -> None:
    """Tokens per character and per word, before and after, per language."""
    from xlang.tokenizer import stats_table, tokenizer_stats

    settings = settings_from(ctx)
    spec = resolve.language(code)
    base_path = resolve.base_model(base, settings) if base else None
    console.print(stats_table(tokenizer_stats(tokenizer_dir, resolve.validation_texts(spec, settings), base=base_path)))


@cli.group("eval", cls=XlangGroup)
def eval_group() -> None:
    """Measure models."""


@eval_group.command("bpc")
@click.option("--model", "model_dir", required=True, help="Model folder (its own tokenizer is used).")
@click.option("--lang", "codes", multiple=True, required=True, help="Language code (repeatable).")
@click.option("--max-chars", type=int, default=20_000, show_default=True, help="Validation characters per language.")
@click.pass_context
def eval_bpc(ctx: click.Context, model_dir: str, codes: tuple[str, ...], max_chars: int) -> None:
    """Bits per character on each language's validation split (lower is better)."""
    from xlang.embeddings.checkpoint import load_causal_lm, load_tokenizer
    from xlang.eval.bpc import bits_per_character

    settings = settings_from(ctx)
    folder = resolve.base_model(model_dir, settings)
    specs = [resolve.language(code) for code in codes]
    model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    table = Table(title=f"Bits per character: {model_dir}")
    for column in ("language", "characters", "tokens/char", "bits/char"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for spec in specs:
        texts = resolve.validation_documents(spec, settings, max_chars)
        with console.status(f"scoring {spec.name}"):
            result = bits_per_character(model, tokenizer, texts, max_chars=None)
        table.add_row(spec.code, f"{result.characters:,}", f"{result.tokens_per_char:.3f}", f"{result.bpc:.4f}")
    console.print(table)


def _extend_help() -> str:
    try:
        recipe = plugins.get_recipe("x-llava")
        stages = ", ".join(recipe.stage_names())
    except XlangError:
        stages = "(recipe not installed)"
    return (
        "Run a recipe for one language (default: the X-LLaVA recipe).\n\n"
        f"Stages of the x-llava recipe, in order: {stages}. A finished stage is skipped when the run starts again."
    )


STAGE_FLAGS: dict[str, tuple[str, str]] = {
    "budget": ("expand", "budget"),
    "initializer": ("init", "initializer"),
    "fit_steps": ("init", "fit_steps"),
    "row_steps": ("init", "row_steps"),
    "steps": ("pretrain", "steps"),
    "seq_len": ("pretrain", "seq_len"),
    "mix": ("pretrain", "mix"),
}


class ExtendCommand(click.Command):
    """Builds its help from the installed recipe only when help is asked for (plugins load lazily)."""

    def get_help(self, ctx: click.Context) -> str:
        self.help = _extend_help()
        return super().get_help(ctx)


@cli.command("extend", cls=ExtendCommand, short_help="Run a recipe for one language.")
@click.option("--lang", "code", required=True, help="Target language code, e.g. ko.")
@click.option("--base", default="smollm2-135m", show_default=True, help="Embedded name, local HF folder or hub id.")
@click.option("--recipe", "recipe_name", default=None, help="Recipe name (see `xlang recipes`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Run folder.")
@click.option("--until", default=None, help="Last stage to run.")
@click.option("--budget", type=int, default=None, help="expand: number of new tokens.")
@click.option("--initializer", default=None, help="init: embedding initializer name.")
@click.option("--fit-steps", "fit_steps", type=int, default=None, help="init: steps of a fitting initializer.")
@click.option("--row-steps", "row_steps", type=int, default=None, help="init: subword-fit's per-row phase steps.")
@click.option("--steps", type=int, default=None, help="pretrain: optimizer steps.")
@click.option("--seq-len", "seq_len", type=int, default=None, help="pretrain: block length in tokens.")
@click.option("--mix", default=None, help="pretrain: language weights, e.g. ko=0.5,en=0.5.")
@click.pass_context
def extend(
    ctx: click.Context,
    code: str,
    base: str,
    recipe_name: str | None,
    out_dir: str | None,
    until: str | None,
    **flags: Any,
) -> None:
    from xlang.runner import run_recipe, stage_configs
    from xlang.train.config import parse_mix

    if flags.get("mix"):
        flags["mix"] = parse_mix(flags["mix"])
    stage_overrides: dict[str, dict[str, Any]] = {}
    for flag, value in flags.items():
        if value is not None:
            stage, knob = STAGE_FLAGS[flag]
            stage_overrides.setdefault(stage, {})[knob] = value
    settings = settings_from(ctx, recipe=recipe_name, stages=stage_overrides)
    spec = resolve.language(code)
    recipe = plugins.get_recipe(settings.recipe)
    unused = sorted(set(stage_overrides) - set(recipe.stage_names()))
    if unused:
        raise XlangError(f"recipe {recipe.name!r} has no stage {', '.join(unused)} for the flags given")
    run_dir = Path(out_dir) if out_dir else settings.runs_dir / f"{recipe.name}-{spec.code}"
    stage_configs(recipe, settings)  # a typo in a knob fails now, before a model is downloaded or converted
    base_model = resolve.base_model(base, settings)

    def on_stage(name: str, event: str) -> None:
        label = {"start": "[bold cyan]▶ running[/]", "skip": "[dim]↷ finished earlier[/]", "done": "[green]✓ done[/]"}
        console.print(f"{label[event]} {name}")

    manifest = run_recipe(recipe, spec, settings, run_dir, base_model, until=until, on_stage=on_stage)
    console.print(f"run folder: {run_dir}  report: {run_dir / 'report.md'}")
    if manifest.get("final_model"):
        console.print(f"final model: {manifest['final_model']}")


def build_cli() -> click.Group:
    """The root group with plugin commands added (once per process)."""
    if not getattr(cli, "_plugin_commands_added", False):
        plugins.call_each("register_commands", cli=cli)
        cli._plugin_commands_added = True  # type: ignore[attr-defined]
    return cli


def main(argv: list[str] | None = None) -> None:
    # xlang draws its own progress for long work; the libraries' per-file bars (loading weights, writing
    # shards, generating splits) would interleave with it. Set either variable to 0 to see them again.
    for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(variable, "1")
    # peft reads a property that transformers has deprecated: nothing an xlang user can act on
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        group = build_cli()
    except XlangError as error:
        err_console.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    group.main(args=argv, prog_name="xlang")


if __name__ == "__main__":
    main()
