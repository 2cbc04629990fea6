"""The `xlang` command. Bad input prints one line naming the input and the fix, and exits with status 2.

The core commands are here: `languages`, `plugins`, `recipes` and `extend`. `extend` turns its flags
into settings and calls `xlang.runner.extend`, the same entry path Python users take; the flags that
set stage knobs are declared by the installed recipes (`Recipe.flags`), so a third-party recipe gets
its flags without a change here. Commands that run one stage's code (`xlang tokenizer expand`,
`xlang eval bpc`, `xlang corpus stats`, ...) come from plugins through `register_commands`.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from xlang import plugins
from xlang.contract import Flag, Recipe, stage_flags
from xlang.errors import XlangError
from xlang.settings import XlangSettings, load_settings, merge_nested

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
    """Settings for a command: `--config` of the root group, env, TOML, then the command's own flags."""
    root = ctx.find_root()
    settings = load_settings(root.params.get("config"), **overrides)
    settings.apply_environment()
    return settings


def resolver_from(ctx: click.Context, **overrides: Any) -> Any:
    from xlang.resolve import Resolver

    return Resolver(settings_from(ctx, **overrides))


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
    resolver = resolver_from(ctx)
    table = Table(title="Languages")
    for column in ("code", "name", "scripts", "companions", "corpus (cached chars)", "plugin"):
        table.add_column(column)
    for code, registered in sorted(plugins.languages(resolver.pm).items()):
        spec = registered.value
        scripts = ", ".join(sorted({script.name for script in spec.scripts})) or "(base script)"
        sizes = []
        for source in spec.monolingual_corpora(resolver.settings.corpus_kind):
            meta = resolver.cached_corpus_meta(source)
            sizes.append(f"{source.name}: {_human(meta_total_chars(meta))}" if meta else f"{source.name}: not fetched")
        name = f"{spec.name} ({spec.native_name})" if spec.native_name and spec.native_name != spec.name else spec.name
        companions = ", ".join(spec.companions) or "-"
        table.add_row(code, name, scripts, companions, "\n".join(sizes) or "-", registered.plugin)
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
    """List the recipes `xlang extend --recipe` can run, and the flags each adds."""
    table = Table(title="Recipes")
    for column in ("name", "stages", "flags", "description", "plugin"):
        table.add_column(column)
    for name, registered in sorted(plugins.recipes().items()):
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
            "knobs of the chosen recipe; every knob is also a setting (xlang.toml, XLANG_* variables)."
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
    "--base", "base_model", default=None, help="Embedded name, local HF folder or hub id (default smollm2-135m)."
)
@click.option("--recipe", default=None, help="Recipe name (see `xlang recipes`; default x-llava).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--until", default=None, help="Last stage to run.")
@click.option(
    "--companions",
    default=None,
    help="Companion language codes, comma-separated (empty: none; default: the language's own).",
)
@click.pass_context
def extend(ctx: click.Context, until: str | None, **values: Any) -> None:
    from xlang import runner

    run_keys = ("language", "base_model", "recipe", "out", "companions")
    run_settings = {key: values.pop(key) for key in run_keys}
    if run_settings["companions"] is not None:
        run_settings["companions"] = parse_companions(run_settings["companions"])
    base_settings = settings_from(ctx, **run_settings)
    stages = _stage_overrides(values, base_settings.recipe, ExtendCommand.recipe_flags)
    settings = settings_from(ctx, **run_settings, stages=stages) if stages else base_settings

    def on_stage(name: str, event: str) -> None:
        label = {"start": "[bold cyan]▶ running[/]", "skip": "[dim]↷ finished earlier[/]", "done": "[green]✓ done[/]"}
        console.print(f"{label[event]} {name}")

    manifest = runner.extend(settings=settings, until=until, on_stage=on_stage)
    run_dir = runner.run_folder(settings, manifest["recipe"], manifest["language"])
    console.print(f"run folder: {run_dir}  report: {run_dir / 'report.md'}")
    if manifest.get("final_model"):
        console.print(f"final model: {run_dir / manifest['final_model']}")


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
        command.params.append(
            click.Option(
                [f"--{name}", key],
                multiple=flag.multiple,
                default=None,
                metavar="N" if flag.parse is int else "VALUE",
                help=f"{flag.help} [{recipes}]",
            )
        )


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
