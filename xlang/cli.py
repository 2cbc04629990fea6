"""The `xlang` command. Bad input prints one line naming the input and the fix, and exits with status 2.

The core commands are here: `languages`, `plugins`, `recipes` and `extend`. `extend` turns its flags
into settings and calls `xlang.runner.extend`, the same entry path Python users take; the flags that
set stage knobs are declared by the installed recipes (`Recipe.flags`), so a third-party recipe gets
its flags without a change here. Commands that run one stage's code (`xlang tokenizer expand`,
`xlang eval bpc`, `xlang corpus stats`, ...) come from plugins through `register_commands`.

Output piped or written to a file is plain: tables are as wide as their content (never cut at 80
columns), progress is periodic lines instead of bars, and the listing commands take `--format json`.
Ctrl-C during `xlang extend` exits with status 130 (SIGTERM: 143), the stage recorded as `interrupted`.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

from xlang import plugins
from xlang.contract import Flag, Recipe, stage_flags
from xlang.errors import XlangError
from xlang.settings import XlangSettings, load_settings, merge_nested

PIPE_WIDTH = 10_000
"""Console width when output is not a terminal: a pipe or a log file has no width, so nothing is wrapped
or cut (`xlang languages | cat`, `xlang plugins > plugins.txt`)."""


class PipeFriendlyConsole(Console):
    """A rich console that is as wide as the terminal, or as wide as its content when it writes to a pipe or
    a file (rich would assume 80 columns there). An explicit width or `COLUMNS` still wins."""

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, dimensions.height)
        return dimensions

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = PipeFriendlyConsole()
err_console = PipeFriendlyConsole(stderr=True)

EXIT_SIGINT = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report a process killed by it."""
EXIT_SIGTERM = 143
"""Exit status after SIGTERM (128 + 15)."""


class XlangGroup(click.Group):
    """Turns XlangError into one red line and exit status 2, wherever it is raised."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except XlangError as error:
            err_console.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
            ctx.exit(error.exit_code)


def settings_from(ctx: click.Context, config: str | None = None, **overrides: Any) -> XlangSettings:
    """Settings for a command: `config` (a command's own `--config`), else the root group's `--config`, env,
    TOML, then the command's own flags."""
    root = ctx.find_root()
    settings = load_settings(config or root.params.get("config"), **overrides)
    settings.apply_environment()
    return settings


def resolver_from(ctx: click.Context, **overrides: Any) -> Any:
    from xlang.resolve import Resolver

    return Resolver(settings_from(ctx, **overrides))


@click.group(cls=XlangGroup)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file (default: $XLANG_CONFIG, else ./xlang.toml if present).",
)
@click.version_option(package_name="xlang")
def cli(config: str | None) -> None:
    """Teach an existing LLM or LLaVA-style model a new language."""


format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for reading, or JSON for scripts.",
)


def print_json(payload: Any) -> None:
    """JSON on stdout, unwrapped and uncoloured, for `--format json`."""
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


@cli.command("languages")
@format_option
@click.pass_context
def languages_command(ctx: click.Context, output_format: str) -> None:
    """List the languages that installed plugins offer."""
    resolver = resolver_from(ctx)
    rows = []
    for code, registered in sorted(plugins.languages(resolver.pm).items()):
        spec = registered.value
        corpora = []
        for source in spec.monolingual_corpora(resolver.settings.corpus_kind):
            meta = resolver.cached_corpus_meta(source)
            corpora.append({"name": source.name, "cached_chars": meta_total_chars(meta) if meta else None})
        rows.append(
            {
                "code": code,
                "name": spec.name,
                "native_name": spec.native_name,
                "scripts": sorted({script.name for script in spec.scripts}),
                "companions": list(spec.companions),
                "corpora": corpora,
                "plugin": registered.plugin,
            }
        )
    if output_format == "json":
        print_json(rows)
        return
    table = Table(title="Languages")
    for column in ("code", "name", "scripts", "companions", "corpus (cached chars)", "plugin"):
        table.add_column(column)
    for row in rows:
        sizes = [
            f"{c['name']}: {_human(c['cached_chars'])}"
            if c["cached_chars"] is not None
            else f"{c['name']}: not fetched"
            for c in row["corpora"]
        ]
        native = row["native_name"]
        name = f"{row['name']} ({native})" if native and native != row["name"] else row["name"]
        table.add_row(
            row["code"],
            name,
            ", ".join(row["scripts"]) or "(base script)",
            ", ".join(row["companions"]) or "-",
            "\n".join(sizes) or "-",
            row["plugin"],
        )
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
@format_option
def plugins_command(output_format: str) -> None:
    """List loaded plugins, where they come from and the hooks they implement."""
    infos = plugins.plugin_infos()
    if output_format == "json":
        print_json(
            [
                {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "hooks": list(info.hooks),
                    "builtin": info.builtin,
                }
                for info in infos
            ]
        )
        return
    table = Table(title="Plugins")
    for column in ("name", "distribution", "version", "hooks"):
        table.add_column(column)
    for info in infos:
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks))
    console.print(table)


@cli.command("recipes")
@format_option
def recipes_command(output_format: str) -> None:
    """List the recipes `xlang extend --recipe` can run, and the flags each adds."""
    found = sorted(plugins.recipes().items())
    if output_format == "json":
        print_json(
            [
                {
                    "name": name,
                    "description": registered.value.description,
                    "stages": list(registered.value.stage_names()),
                    "flags": [
                        {"name": flag.name, "sets": [flag.path, *flag.also], "help": flag.help}
                        for flag in registered.value.flags
                    ],
                    "plugin": registered.plugin,
                }
                for name, registered in found
            ]
        )
        return
    table = Table(title="Recipes")
    for column in ("name", "stages", "flags", "description", "plugin"):
        table.add_column(column)
    for name, registered in found:
        recipe = registered.value
        flags = " ".join(f"--{flag.name}" for flag in recipe.flags) or "-"
        table.add_row(name, " → ".join(recipe.stage_names()), flags, recipe.description, registered.plugin)
    console.print(table)


# --- extend ----------------------------------------------------------------------------------------------


def parse_companions(text: str) -> tuple[str, ...]:
    """`en,ja` -> ("en", "ja"); an empty string means no companion language."""
    return tuple(code.strip() for code in text.split(",") if code.strip())


class ExtendCommand(click.Command):
    """`xlang extend`: its stage flags are the installed recipes' (added by `build_cli`)."""

    recipe_flags: dict[str, list[tuple[Recipe, Flag]]] = {}

    def get_help(self, ctx: click.Context) -> str:
        try:
            names = ", ".join(f"{name} ({' → '.join(r.value.stage_names())})" for name, r in plugins.recipes().items())
        except XlangError:
            names = "(none installed)"
        self.help = (
            "Run a recipe for one language (default: the X-LLaVA recipe).\n\n"
            f"Recipes: {names}. A finished stage is skipped when the run starts again. Stage flags set "
            "knobs of the chosen recipe; every knob is also a setting (xlang.toml, XLANG_* variables).\n\n"
            "Ctrl-C (or SIGTERM) stops the run with exit status 130 (143), the stage recorded as "
            "interrupted; the same command resumes it. Piped or logged output gets plain progress lines."
        )
        return super().get_help(ctx)


def _stage_overrides(
    flag_values: dict[str, Any], recipe_name: str, flags: dict[str, list[tuple[Recipe, Flag]]]
) -> dict:
    """The stage knobs the given flags set, for the chosen recipe; a flag of another recipe is an error."""
    overrides: dict[str, Any] = {}
    for key, value in flag_values.items():
        if value is None or value == ():
            continue
        name = key.replace("_", "-")
        owners = {recipe.name: flag for recipe, flag in flags.get(name, [])}
        if recipe_name not in owners:
            raise XlangError(
                f"--{name} is a flag of recipe(s) {', '.join(sorted(owners))}, not of {recipe_name!r}; "
                "drop it or choose that recipe"
            )
        flag = owners[recipe_name]
        try:
            parsed = tuple(flag.parse(v) for v in value) if flag.multiple else flag.parse(value)
        except (ValueError, TypeError) as error:
            raise XlangError(f"--{name} {value!r}: {error}") from error
        overrides = merge_nested(overrides, flag.nested(parsed))
    return overrides


@click.command("extend", cls=ExtendCommand, short_help="Run a recipe for one language.")
@click.option("--lang", "language", default=None, help="Target language code (setting `language`).")
@click.option(
    "--base",
    "base_model",
    default=None,
    help="Embedded name, local HF folder or hub id (setting `base_model`).  [default: smollm2-135m]",
)
@click.option("--recipe", default=None, help="Recipe name (see `xlang recipes`).  [default: x-llava]")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Run folder (setting `out`).  [default: RUNS_DIR/RECIPE-LANG, e.g. runs/x-llava-ko]",
)
@click.option("--until", default=None, help="Last stage to run.  [default: the recipe's last stage]")
@click.option(
    "--companions",
    default=None,
    help="Companion language codes, comma-separated (empty: none).  [default: the language's own]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML settings file.  [default: $XLANG_CONFIG, else ./xlang.toml if present]",
)
@click.pass_context
def extend(ctx: click.Context, until: str | None, config_file: str | None, **values: Any) -> None:
    from xlang import runner

    run_keys = ("language", "base_model", "recipe", "out", "companions")
    run_settings = {key: values.pop(key) for key in run_keys}
    if run_settings["companions"] is not None:
        run_settings["companions"] = parse_companions(run_settings["companions"])
    base_settings = settings_from(ctx, config_file, **run_settings)
    stages = _stage_overrides(values, base_settings.recipe, ExtendCommand.recipe_flags)
    settings = settings_from(ctx, config_file, **run_settings, stages=stages) if stages else base_settings

    with _sigterm_interrupts():
        try:
            manifest = runner.extend(settings=settings, until=until, on_stage=runner.print_stage_events(_stage_line))
        except KeyboardInterrupt as interrupt:
            ctx.exit(_report_interrupt(interrupt))
    run_dir = runner.run_folder(settings, manifest["recipe"], manifest["language"])
    console.print(
        f"run folder: {run_dir}  report: {run_dir / 'report.md'}", markup=False, highlight=False, soft_wrap=True
    )
    if manifest.get("final_model"):
        console.print(
            f"final model: {run_dir / manifest['final_model']}", markup=False, highlight=False, soft_wrap=True
        )


def _stage_line(line: str) -> None:
    """A stage line from the runner, coloured on a terminal (plain text in a pipe or a log file)."""
    styles = {"▶": "bold cyan", "↷": "dim", "✓": "green", "✗": "bold red"}
    style = styles.get(line[:1])
    console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a run is in progress, SIGTERM stops it the way Ctrl-C does (the stage is recorded as
    interrupted and can be resumed) instead of killing the process mid-write."""
    from xlang.runner import Terminated

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report_interrupt(interrupt: KeyboardInterrupt) -> int:
    """Say what an interrupted run kept and how to resume; the exit status (130 for SIGINT, 143 for SIGTERM)."""
    from xlang.runner import RunInterrupted, Terminated

    terminated = isinstance(interrupt, Terminated) or getattr(interrupt, "signal_name", "") == "SIGTERM"
    signal_name = "SIGTERM" if terminated else "SIGINT"
    command = shlex.join(["xlang", *sys.argv[1:]])
    if isinstance(interrupt, RunInterrupted):
        where = (
            f"stage {interrupt.stage!r} interrupted ({signal_name}) and recorded as interrupted in "
            f"{interrupt.run_dir / 'manifest.json'}; finished stages and checkpoints are kept"
        )
    else:
        where = f"interrupted ({signal_name}) outside a stage; finished stages are kept"
    err_console.print(
        f"[bold yellow]{escape(where)}.[/] To resume, run the same command again: {escape(command)}",
        soft_wrap=True,
        highlight=False,
    )
    return EXIT_SIGTERM if terminated else EXIT_SIGINT


def _add_recipe_flags(command: click.Command) -> None:
    """One option per flag name the installed recipes declare (help names the recipes that take it)."""
    flags = stage_flags([registered.value for registered in plugins.recipes().values()])
    ExtendCommand.recipe_flags = flags
    taken = {param.name for param in command.params}
    for name, owners in sorted(flags.items()):
        key = name.replace("-", "_")
        if key in taken:
            raise XlangError(f"recipe flag --{name} clashes with a core option of xlang extend; rename it")
        recipe, flag = owners[0]
        recipes = ", ".join(r.name for r, _ in owners)
        default = _flag_default(recipe, flag)
        command.params.append(
            click.Option(
                [f"--{name}", key],
                multiple=flag.multiple,
                default=None,
                metavar="N" if flag.parse is int else "VALUE",
                help=f"{flag.help} [{recipes}]" + (f"  [default: {default}]" if default else ""),
            )
        )


def _flag_default(recipe: Recipe, flag: Flag) -> str:
    """The default of the stage knob a flag sets, from the stage's config class ("" when the knob is nested
    in a strategy's options or has no plain default: the strategy decides, and the manifest records it)."""
    stage_name, _, knob = flag.path.partition(".")
    stage = next((stage for stage in recipe.stages if stage.name == stage_name), None)
    field = stage.config.model_fields.get(knob) if stage is not None and "." not in knob else None
    if field is None or field.default is None or field.default_factory is not None:
        return ""
    value = field.default
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else ""
    return str(value)


def build_cli() -> click.Group:
    """The root group with `extend`'s recipe flags and plugin commands added (once per process)."""
    if not getattr(cli, "_plugins_added", False):
        _add_recipe_flags(extend)
        cli.add_command(extend)
        plugins.call_each("register_commands", cli=cli)
        cli._plugins_added = True  # type: ignore[attr-defined]
    return cli


def main(argv: list[str] | None = None) -> None:
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
