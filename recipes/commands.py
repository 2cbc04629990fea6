"""Commands that run one stage's code on its own, added to `xlang` through `register_commands`.

`xlang tokenizer expand` uses the recipe's own expand config and function, and `xlang eval bpc` the
evaluate stage's evaluator and text, so a command and a run give the same result for the same input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from xlang.cli import XlangGroup, console, format_option, print_json, resolver_from

CACHE_FOLDERS: dict[str, str] = {
    "models": "converted base models",
    "corpora": "built corpus splits (train/validation JSONL)",
    "downloads": "verified package downloads",
    "debian-files": "files taken out of Debian packages (word lists, fonts)",
    "wheels": "pinned wheels from PyPI",
    "sdists": "pinned source distributions from PyPI (read, never built)",
    "wheel-files": "files taken out of wheels",
    "hf": "Hugging Face cache (datasets' Arrow files, hub downloads)",
}
"""What the folders of xlang's cache hold, for `xlang assets where`."""

LOW_TARGET_SHARE = 0.5
"""A corpus with fewer of its non-space characters in the language's scripts is mostly another language."""


def _stage_config(config_class: type[Any], knobs: dict[str, Any], stage: str) -> Any:
    """A stage's config from settings and flags, with the runner's message for a bad knob."""
    from pydantic import ValidationError

    from xlang.contract import validation_problems
    from xlang.errors import XlangError

    try:
        return config_class(**knobs)
    except ValidationError as error:
        raise XlangError(f"invalid settings for stage {stage!r}: {validation_problems(error)}") from error


def add_commands(cli: click.Group) -> None:
    for group in (assets_group, corpus_group, tokenizer_group, eval_group):
        cli.add_command(group)


@click.group("assets", cls=XlangGroup)
def assets_group() -> None:
    """Download and prepare the embedded models and corpora."""


@assets_group.command("where")
@format_option
@click.pass_context
def assets_where(ctx: click.Context, output_format: str) -> None:
    """Print the cache folder every xlang entry point uses (make, the command, Python), what sets it, and
    what it holds with sizes."""
    import os

    from xlang.settings import setting_origin

    resolver = resolver_from(ctx)
    cache = Path(resolver.settings.cache_dir).expanduser().resolve()
    origin = setting_origin("cache_dir", ctx.find_root().params.get("config"))
    entries = []
    if cache.is_dir():
        for child in sorted(cache.iterdir()):
            entries.append(
                {"name": child.name, "bytes": _disk_bytes(child), "holds": CACHE_FOLDERS.get(child.name, "")}
            )
    hf_home = os.environ.get("HF_HOME", str(resolver.settings.hf_cache))
    found = {
        "cache_dir": str(cache),
        "set_by": origin,
        "exists": cache.is_dir(),
        "hf_home": hf_home,
        "entries": entries,
        "total_bytes": sum(entry["bytes"] for entry in entries),
    }
    if output_format == "json":
        print_json(found)
        return
    console.print(f"cache: {cache}  ({origin})", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Hugging Face cache (HF_HOME): {hf_home}", markup=False, highlight=False, soft_wrap=True)
    if not entries:
        console.print("empty: assets are fetched into it on first use (`xlang assets fetch` fetches them now)")
        return
    table = Table(title="Cache contents")
    for column in ("folder", "size", "holds"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for entry in entries:
        table.add_row(entry["name"], _bytes(entry["bytes"]), entry["holds"])
    table.add_row("total", _bytes(found["total_bytes"]), "")
    console.print(table)
    console.print("Move it with XLANG_CACHE_DIR=/path or cache_dir in xlang.toml; make, xlang and Python all follow.")


def _disk_bytes(path: Path) -> int:
    """Bytes under `path` (files counted once, symbolic links not followed)."""
    import os

    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # a file removed while counting (another process cleaning up)
                continue
    return total


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


@assets_group.command("fetch")
@click.option("--lang", "codes", multiple=True, help="Language code (repeatable; default: every language).")
@click.option("--models/--no-models", default=True, help="Also convert the embedded base model.")
@click.pass_context
def assets_fetch(ctx: click.Context, codes: tuple[str, ...], models: bool) -> None:
    """Fetch and build corpora (and the configured base model) into the cache."""
    resolver = resolver_from(ctx)
    kind = resolver.settings.corpus_kind
    specs = [resolver.language(code) for code in codes] if codes else list(resolver.languages().values())
    for spec in specs:
        for source in spec.monolingual_corpora(kind) + spec.parallel_corpora(kind):
            with console.status(f"[bold]{spec.code}[/]: building {source.name}"):
                for split in ("train", "validation"):
                    resolver.load(source, split)
            console.print(f"[green]✓[/] {spec.code}: {source.name}")
    if models:
        with console.status(f"preparing {resolver.settings.base_model}"):
            path = resolver.base_model()
        console.print(f"[green]✓[/] {escape(str(resolver.settings.base_model))} → {escape(str(path))}", soft_wrap=True)


@assets_group.command("verify")
@click.option("--repair", is_flag=True, help="Remove damaged entries so their next use rebuilds them.")
@format_option
@click.pass_context
def assets_verify(ctx: click.Context, repair: bool, output_format: str) -> None:
    """Hash every cache entry against the sizes and sha256 it recorded; exit status 2 when one is damaged."""
    from xlang.assets.integrity import verify_cache
    from xlang.errors import XlangError

    cache = Path(resolver_from(ctx).settings.cache_dir).expanduser()
    with console.status(f"hashing the entries in {cache}"):
        states = verify_cache(cache, repair=repair)
    if output_format == "json":
        print_json(
            [
                {"entry": str(s.path), "kind": s.kind, "bytes": s.size, "state": s.state, "problem": s.problem}
                for s in states
            ]
        )
    else:
        table = Table(title=f"Cache entries in {cache}")
        for column in ("entry", "kind", "size", "state"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for s in states:
            state = "[green]ok[/]" if s.problem is None else f"[red]{s.state}[/]: {s.problem}"
            table.add_row(str(s.path.relative_to(cache)), s.kind, f"{s.size / 1e6:,.1f} MB", state)
        console.print(table)
    damaged = [str(s.path.relative_to(cache)) for s in states if s.problem is not None and not s.repaired]
    if damaged:
        raise XlangError(
            f"{len(damaged)} damaged cache entr{'y' if len(damaged) == 1 else 'ies'} in {cache}: "
            f"{', '.join(damaged)}; run `xlang assets verify --repair` to remove them (the next use rebuilds "
            "them), or delete them by hand"
        )


@click.group("corpus", cls=XlangGroup)
def corpus_group() -> None:
    """Inspect a language's corpora."""


@corpus_group.command("stats")
@click.option("--lang", "code", required=True, help="Language code, e.g. ko.")
@click.pass_context
def corpus_stats(ctx: click.Context, code: str) -> None:
    """Characters, target-script share, split sizes and licenses of a language's corpora."""
    from xlang.data import corpus_stats as compute_stats

    resolver = resolver_from(ctx)
    spec = resolver.language(code)
    sources = resolver.sources(spec)
    loaded = {
        source.name: {split: resolver.load(source, split) for split in ("train", "validation")} for source in sources
    }
    stats = compute_stats(spec, loaded)
    licenses = {source.name: source.license or "(not stated)" for source in sources}
    table = Table(title=f"Corpus of {spec.name} ({spec.code})")
    columns = ("source", "license", "split", "documents", "characters", "non-space", "target-script", "target share")
    for column in columns:
        table.add_column(column, justify="left" if column in ("source", "license", "split") else "right")
    for name, per_split in stats.by_source.items():
        for split, counted in per_split.items():
            table.add_row(
                name,
                licenses.get(name, ""),
                split,
                f"{counted.documents:,}",
                f"{counted.chars:,}",
                f"{counted.visible_chars:,}",
                f"{counted.target_chars:,}",
                f"{counted.target_share:.1%}",
            )
    console.print(table)
    visible = sum(counted.visible_chars for counted in stats.splits.values())
    console.print(
        f"total: {stats.total_chars:,} characters, {stats.total_target_chars:,} in the target scripts: "
        f"{stats.target_share:.1%} of the {visible:,} non-space characters (spaces count in characters, not in "
        "the share)",
        highlight=False,
        soft_wrap=True,
    )
    if spec.scripts:
        for name, per_split in stats.by_source.items():
            for warning in low_share_warnings(name, per_split, spec):
                console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def low_share_warnings(name: str, per_split: dict[str, Any], spec: Any) -> list[str]:
    """A warning for a corpus source whose characters are mostly outside the language's scripts: help
    packages fall back to English where a string is untranslated, and nothing drops those paragraphs
    unless the source asks (`require=` of a debian:// URI)."""
    visible = sum(counted.visible_chars for counted in per_split.values())
    target = sum(counted.target_chars for counted in per_split.values())
    if not visible or target / visible >= LOW_TARGET_SHARE:
        return []
    word = spec.scripts[0].name.split()[0].lower()
    return [
        f"source {name!r}: only {target / visible:.1%} of its non-space characters are in the {spec.name} scripts; "
        f"if it is a debian:// source, add require={word} (a script word, see docs/plugin-reference.md) so "
        "untranslated paragraphs are dropped, or check that it is the right text"
    ]


@click.group("tokenizer", cls=XlangGroup)
def tokenizer_group() -> None:
    """Expand a tokenizer for a language and measure it."""


@tokenizer_group.command("expand")
@click.option("--lang", "code", required=True, help="Target language code.")
@click.option("--base", default=None, help="Embedded name, folder or SentencePiece .model file (default: setting).")
@click.option("--budget", type=int, default=None, help="New vocabulary entries (default: the expand stage's).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--source", "sources", multiple=True, help="Candidate source name (repeatable; default: language's).")
@click.option("--expander", default=None, help="Expander name (default: the language's).")
@click.option("--pad-to-multiple-of", type=int, default=None, help="0 disables padding (default: the stage's).")
@click.pass_context
def tokenizer_expand(
    ctx: click.Context,
    code: str,
    base: str | None,
    budget: int | None,
    out_dir: str,
    sources: tuple[str, ...],
    expander: str | None,
    pad_to_multiple_of: int | None,
) -> None:
    """Add real BPE merges for LANG's script; other text keeps its exact ids.

    Knobs not given here come from the settings of the expand stage (`[stages.expand]` in xlang.toml),
    then from its defaults, exactly as `xlang extend` would use them.
    """
    from xlang_recipes.x_llava import ExpandConfig, expand_for

    from xlang.tokenizer import stats_table

    resolver = resolver_from(ctx)
    spec = resolver.language(code)
    given = {"budget": budget, "candidate_sources": sources or None, "expander": expander}
    given["pad_to_multiple_of"] = pad_to_multiple_of
    knobs = {**resolver.settings.stage("expand"), **{key: value for key, value in given.items() if value is not None}}
    config = _stage_config(ExpandConfig, knobs, "expand")
    # a SentencePiece model file or a tokenizer-only folder is a base too (no model weights needed here)
    base_path = base if base and Path(base).exists() else resolver.base_model(base)
    with console.status(f"expanding {base_path} for {spec.name} (budget {config.budget:,})"):
        result, rows = expand_for(spec, resolver, base_path, config, Path(out_dir))
    console.print(
        f"[green]✓[/] {len(result.new_token_ids):,} new tokens ({result.family}), vocabulary "
        f"{result.base_vocab_size:,} → {result.vocab_size:,}, {result.seconds:.1f} s → {result.out_dir}"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(stats_table(rows))


@tokenizer_group.command("stats")
@click.option("--lang", "code", required=True, help="Language whose validation split is measured.")
@click.option("--tokenizer", "tokenizer_dir", type=click.Path(exists=True), required=True, help="Expanded folder.")
@click.option("--base", default=None, help="Base tokenizer to compare with (default: the one it was expanded from).")
@click.pass_context
def tokenizer_stats_command(ctx: click.Context, code: str, tokenizer_dir: str, base: str | None) -> None:
    """Tokens per character and per word, before and after, for the language and its companions, and the
    floor: tokens per character if every piece the pre-tokenizer cuts the text into were one token.

    Measured on the text a run's figures use (the first `stages.evaluate.max_chars` characters of each
    validation split, as whole documents: `in-domain`), so the numbers match a run's report; first, the same
    budget of each language's `heldout_corpora` (`out-of-domain`: text of another kind, never trained on).
    """
    from xlang_recipes.x_llava import heldout_texts, measured_texts

    from xlang.data.heldout import IN_DOMAIN, OUT_OF_DOMAIN
    from xlang.tokenizer import stats_table, tokenizer_stats

    resolver = resolver_from(ctx)
    spec = resolver.language(code)
    base_path = resolver.base_model(base) if base else None
    languages = (spec, *resolver.companions(spec))
    texts = {f"{code} {OUT_OF_DOMAIN}": values for code, values in heldout_texts(resolver, languages).items()}
    texts |= measured_texts(resolver, languages)
    title = f"tokens per character and per word: CODE {OUT_OF_DOMAIN} rows first, then CODE alone ({IN_DOMAIN})"
    console.print(stats_table(tokenizer_stats(tokenizer_dir, texts, base=base_path), title=title))


@click.group("eval", cls=XlangGroup)
def eval_group() -> None:
    """Measure models."""


@eval_group.command("bpc")
@click.option("--model", "model_dir", required=True, help="Model folder (its own tokenizer is used).")
@click.option("--lang", "codes", multiple=True, required=True, help="Language code (repeatable).")
@click.option(
    "--max-chars", type=int, default=None, help="Characters per language and text (default: the evaluate stage's)."
)
@click.pass_context
def eval_bpc(ctx: click.Context, model_dir: str, codes: tuple[str, ...], max_chars: int | None) -> None:
    """Bits per character on each language's out-of-domain text (its `heldout_corpora`, never trained on) and
    validation documents (in-domain), lower is better.

    The same evaluator, options and texts as a run's evaluate stage (`[stages.evaluate]` settings
    included), so the figures for a run's model match its report.
    """
    from xlang_recipes.x_llava import EvaluateConfig, heldout_texts

    from xlang.data.heldout import IN_DOMAIN, OUT_OF_DOMAIN
    from xlang.data.views import documents
    from xlang.eval import load_for_text

    resolver = resolver_from(ctx)
    specs = [resolver.language(code) for code in codes]
    knobs = resolver.settings.stage("evaluate")
    if max_chars is not None:
        knobs["max_chars"] = max_chars
    config = _stage_config(EvaluateConfig, knobs, "evaluate")
    evaluator = resolver.strategy("evaluators", "bpc")
    options = evaluator.configure(config.evaluator_options.get("bpc"))
    folder = resolver.base_model(model_dir)
    model, tokenizer = load_for_text(folder)
    table = Table(title=f"Bits per character: {model_dir}")
    for column in ("language", "characters", "tokens/char", "bits/char", "text"):
        table.add_column(column, justify="left" if column in ("language", "text") else "right")
    heldout = heldout_texts(resolver, tuple(specs), config.max_chars)
    undeclared = [spec.code for spec in specs if spec.code not in heldout]
    if undeclared:
        table.caption = f"no {OUT_OF_DOMAIN} text declared (heldout_corpora) for {', '.join(undeclared)}"
    for spec in specs:
        texts_by_domain = {OUT_OF_DOMAIN: heldout[spec.code]} if spec.code in heldout else {}
        texts_by_domain[IN_DOMAIN] = documents(resolver.dataset(spec, "validation"), spec, config.max_chars)
        for domain, texts in texts_by_domain.items():
            with console.status(f"scoring {spec.name} ({domain})"):
                found: dict[str, Any] = evaluator(options, model=model, tokenizer=tokenizer, texts=texts, language=spec)
            characters = sum(len(text) for text in texts)
            table.add_row(
                spec.code, f"{characters:,}", f"{found['tokens_per_char']:.4f}", f"{found['bpc']:.4f}", domain
            )
    console.print(table)
