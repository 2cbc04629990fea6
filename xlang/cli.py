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

import errno
import json
import re
import shlex
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic_settings import SettingsError
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

from xlang import plugins
from xlang.contract import STRATEGY_KINDS, Flag, Recipe, kind_label, stage_flags
from xlang.errors import XlangError
from xlang.settings import DISTRIBUTED_MODES, XlangSettings, load_settings, merge_nested

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
    """Turns a user's fault into one red line and exit status 2, wherever it is raised: an XlangError, a
    usage error, a filesystem fault (read-only, full, not a folder: the path named) or an exception out of a
    third-party plugin's hook (the plugin and hook named). A programming error in xlang keeps its traceback.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as error:
            if isinstance(error, OneLineError):
                raise
            raise OneLineError(usage_message(error)) from error

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, OneLineError):
            raise
        except KeyboardInterrupt:
            err_console.print("[bold yellow]interrupted.[/]", highlight=False, soft_wrap=True)
            ctx.exit(EXIT_SIGINT)
        except Exception as error:
            message = fault_message(error)
            if message is None:
                raise
            raise OneLineError(message, getattr(error, "exit_code", 2)) from error


class OneLineError(click.ClickException):
    """What click shows for a fault: `error: MESSAGE` on one line of stderr, then exit status 2."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]error:[/] {escape(self.message)}", highlight=False, soft_wrap=True)


def one_line(text: str) -> str:
    """`text` with its lines joined by "; " (a message is printed as one line)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip()) or "(no message)"


def usage_message(error: click.ClickException) -> str:
    """A click usage error as one line, with where to read the usage."""
    message = error.format_message()
    ctx = getattr(error, "ctx", None)
    if isinstance(error, click.UsageError) and ctx is not None:
        return f"{message} (see `{ctx.command_path} --help`)"
    return message


def fault_message(error: Exception) -> str | None:
    """The one-line message for an error a user can act on, or None for a bug that should show its traceback."""
    if isinstance(error, XlangError):
        return error.message
    if isinstance(error, click.ClickException):
        return usage_message(error)
    if isinstance(error, OSError):
        return os_error_message(error)
    if isinstance(error, SettingsError):
        return settings_source_message(error)
    if isinstance(error, RecursionError | MemoryError):
        return None
    return plugin_fault_message(error)


def settings_source_message(error: SettingsError) -> str:
    """A setting pydantic-settings could not parse from the environment (a nested one must be JSON)."""
    found = re.search(r'field "(\w+)"', str(error))
    variable = f"XLANG_{found[1].upper()}" if found else "an XLANG_* variable"
    return (
        f"invalid settings: {one_line(str(error))}; {variable} must hold JSON for this setting, e.g. "
        f"""XLANG_STAGES='{{"expand": {{"budget": 4000}}}}', or set one key: XLANG_STAGES__EXPAND__BUDGET=4000"""
    )


_OS_FAULT_HINTS: dict[int, str] = {
    errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or choose a folder on another disk",
    errno.EFBIG: "the file grew past the size this process may write (ulimit -f) or the filesystem allows",
    errno.EROFS: "the filesystem is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you may write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you may write",
    errno.ENOTDIR: "a part of this path is a file, not a folder; move the file or choose another path",
    errno.EISDIR: "this is a folder where a file was expected; choose a file",
    errno.ENOENT: "no such file or folder; check the path",
    errno.EEXIST: "it already exists; remove it or choose another path",
    errno.EIO: "the device reported an input/output error; check the disk",
    errno.ENAMETOOLONG: "the name is too long for the filesystem; choose a shorter path",
}


def os_error_message(error: OSError) -> str:
    """`PATH: what went wrong; what to do`, for an OSError out of the filesystem or a model loader."""
    paths = [str(name) for name in (error.filename, error.filename2) if name is not None]
    hint = _OS_FAULT_HINTS.get(error.errno or -1)
    if hint is None:
        detail = error.strerror or one_line(str(error))
        hint = detail if error.errno is None else f"{detail} (errno {error.errno})"
    if paths:
        return f"{' -> '.join(paths)}: {hint}"
    if error.errno is None:  # raised by a library (e.g. a model loader) with its own message
        return one_line(str(error))
    return f"{error.strerror or type(error).__name__}: {hint}"


_HOOK_CALLERS = {
    ("_multicall", "pluggy._callers"),
    ("_multicall", "pluggy._execution"),
    ("_collect", "xlang.plugins"),
}
"""Where hook implementations are called from: pluggy's loop, and the manager's register-callback loop."""


def plugin_fault_message(error: BaseException) -> str | None:
    """`plugin P's hook H raised ...` when `error` came out of a hook implementation of a plugin installed
    from outside xlang; None otherwise (xlang's own code: a bug, shown with its traceback). With
    XLANG_TRACE_HOOKS=1 the traceback is kept."""
    if plugins.tracing():
        return None
    traceback = error.__traceback__
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for caller, callee in zip(frames, frames[1:], strict=False):
        if (caller.f_code.co_name, caller.f_globals.get("__name__")) not in _HOOK_CALLERS:
            continue
        module = callee.f_globals.get("__name__", "")
        hook = callee.f_code.co_name
        plugin = _plugin_defined_in(module)
        if plugin is None or plugin.builtin:
            return None
        return (
            f"plugin {plugin.name!r} ({plugin.distribution}) failed in its hook {hook}: "
            f"{type(error).__name__}: {one_line(str(error))}; update or uninstall it, or set "
            f"XLANG_DISABLE_PLUGIN_AUTOLOAD=1 (XLANG_TRACE_HOOKS=1 shows the traceback)"
        )
    return None


def _plugin_defined_in(module: str) -> plugins.PluginInfo | None:
    """The loaded plugin whose hook implementations live in `module` (a plugin module or a class in it)."""
    pm = plugins.get_plugin_manager()
    names = {
        name
        for name, plugin in pm.list_name_plugin()
        if module in (getattr(plugin, "__name__", None), getattr(plugin, "__module__", None))
    }
    return next((info for info in plugins.plugin_infos(pm) if info.name in names), None)


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


def _option_rows(strategy: Any) -> list[dict[str, str]]:
    """Each option of a strategy: name, type, default and its description (the docstring under the field)."""
    rows = []
    for name, field in strategy.options.model_fields.items():
        annotation = field.annotation
        kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        description = " ".join((field.description or "").split())
        rows.append({"name": name, "type": kind, "default": default, "description": description})
    return rows


@cli.command("strategies")
@click.argument("name", required=False)
@click.option(
    "--kind",
    type=click.Choice(list(STRATEGY_KINDS)),
    default=None,
    help="Only strategies of this kind (e.g. embedding_initializers).",
)
@format_option
def strategies_command(name: str | None, kind: str | None, output_format: str) -> None:
    """List the strategies plugins registered and their options; with NAME, every option of that strategy
    (the table shows each description's first sentence, `--format json` all of it).

    An option is set under `[stages.STAGE.options]` in xlang.toml or, for the initializer, with
    `xlang extend --init-option NAME=VALUE`.
    """
    found = [
        strategy
        for each_kind in ([kind] if kind else STRATEGY_KINDS)
        for strategy in plugins.strategies(each_kind).values()
        if name is None or strategy.name == name
    ]
    if name is not None and not found:
        raise XlangError(f"no strategy named {name!r}; `xlang strategies` lists them")
    if output_format == "json":
        print_json([{"kind": s.kind, "name": s.name, "plugin": s.plugin, "options": _option_rows(s)} for s in found])
        return
    if name is None:
        table = Table(title="Strategies")
        for column in ("kind", "name", "options", "plugin"):
            table.add_column(column)
        for strategy in found:
            options = ", ".join(row["name"] for row in _option_rows(strategy)) or "-"
            table.add_row(kind_label(strategy.kind), strategy.name, options, strategy.plugin)
        console.print(table)
        return
    for strategy in found:
        if not strategy.options.model_fields:
            console.print(f"{strategy.label} ({strategy.plugin}) takes no options", markup=False, highlight=False)
            continue
        table = Table(title=f"{strategy.label} ({strategy.plugin})")
        for column in ("option", "type", "default", "description"):
            table.add_column(column, overflow="fold")
        for row in _option_rows(strategy):
            first_sentence = re.split(r"(?<=[a-z0-9)`])\. (?=[A-Z])", row["description"], maxsplit=1)[0]
            shown = first_sentence.rstrip(".") + "." if first_sentence else ""
            table.add_row(row["name"], row["type"], row["default"], shown)
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
            if flag.keyed:
                try:
                    parsed: Any = dict(keyed_entry(entry) for entry in value)
                except XlangError as error:
                    raise XlangError(f"--{name} {error}") from None
            else:
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
    "--distributed",
    type=click.Choice(DISTRIBUTED_MODES),
    default=None,
    help="Under torchrun or accelerate launch: each process holds the whole model (ddp), a shard of it "
    "(fsdp), or DeepSpeed (deepspeed: ZeRO stage 2, gradients and optimizer state sharded; stage 3, the "
    "parameters too, with ACCELERATE_DEEPSPEED_ZERO_STAGE=3) (setting `distributed`).  [default: ddp]",
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
    from xlang import collective, runner

    run_keys = ("language", "base_model", "recipe", "out", "companions", "distributed")
    run_settings = {key: values.pop(key) for key in run_keys}
    if run_settings["companions"] is not None:
        run_settings["companions"] = parse_companions(run_settings["companions"])
    base_settings = settings_from(ctx, config_file, **run_settings)
    stages = _stage_overrides(values, base_settings.recipe, ExtendCommand.recipe_flags)
    settings = settings_from(ctx, config_file, **run_settings, stages=stages) if stages else base_settings

    with _interrupting_signals():
        try:
            manifest = runner.extend(settings=settings, until=until, on_stage=runner.print_stage_events(_stage_line))
        except KeyboardInterrupt as interrupt:
            ctx.exit(_report_interrupt(interrupt))
        except OSError as error:
            if error.filename is None:  # a failed write names no file: the run folder is where it went
                error.filename = str(runner.run_folder(settings, settings.recipe, settings.language or ""))
            raise
    if collective.rank() != 0:  # rank 0 says where the run is
        return
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
def _interrupting_signals() -> Iterator[None]:
    """While a run is in progress, SIGTERM stops it the way Ctrl-C does (the stage is recorded as
    interrupted and can be resumed) instead of killing the process mid-write. Both signals are also noted
    in `xlang.interrupts`, so one whose exception is lost (raised inside a `__del__`) still stops the run."""
    from xlang import interrupts

    def stop(signum: int, frame: Any) -> None:
        interrupts.stop(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    # Ctrl-C only where Python's own handler is installed: a shell that starts a job in the background
    # hands it SIGINT ignored, and that stays so
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)
        interrupts.clear()


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
                multiple=flag.multiple or flag.keyed,
                default=None,
                metavar="NAME=VALUE" if flag.keyed else "N" if flag.parse is int else "VALUE",
                help=f"{flag.help} [{recipes}]" + (f"  [default: {default}]" if default else ""),
            )
        )


def keyed_entry(entry: str) -> tuple[str, Any]:
    """`fit_steps=150` as `("fit_steps", 150)`: the value as JSON when it parses, else as text."""
    name, sep, text = entry.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise XlangError(f"{entry!r} is not NAME=VALUE; write the option's name, '=' and its value, e.g. fit_steps=150")
    try:
        return name, json.loads(text)
    except json.JSONDecodeError:
        return name, text


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
    except Exception as error:
        message = fault_message(error)
        if message is None:
            raise
        OneLineError(message).show()
        sys.exit(getattr(error, "exit_code", 2))
    try:
        group.main(args=argv, prog_name="xlang")
    except SystemExit as leaving:
        from xlang import collective

        if collective.process_group_started():
            if isinstance(leaving.code, str):  # what the interpreter would print on its way out
                print(leaving.code, file=sys.stderr)
            collective.exit_launched_process(leaving.code if isinstance(leaving.code, int) else int(bool(leaving.code)))
        raise


if __name__ == "__main__":
    main()
