"""The recipe runner: one run folder, one manifest, stages that finish once.

A run folder holds `manifest.json` (config, package versions, per-stage status, output folder and
metrics, and `final_model`), one subfolder per finished stage and `report.md`, which each stage adds a
section to. A stage writes into a hidden temporary folder that is renamed into place only when the
stage succeeds, so a killed run never leaves a half stage behind; starting the run again skips the
finished stages (and a stage that checkpoints, such as pretraining, continues from its last checkpoint).

A stage that raises is recorded as `failed` with the error; one stopped by Ctrl-C (SIGINT) or SIGTERM is
recorded as `interrupted` with the signal, and `RunInterrupted` (a `KeyboardInterrupt`) says which stage.
Stage events ("start", "skip", "done", "failed", "interrupted") go to `on_stage`; by default they are
printed as one plain line each, for Python callers as for the command line.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from xlang.contract import Recipe, Resolver, Stage, StageContext, StageOutput, validation_problems
from xlang.errors import XlangError
from xlang.settings import XlangSettings
from xlang.spec import LanguageSpec

__all__ = [
    "Recipe",
    "RunInterrupted",
    "Stage",
    "StageContext",
    "StageOutput",
    "Terminated",
    "extend",
    "print_stage_events",
    "run_recipe",
]

MANIFEST = "manifest.json"
REPORT = "report.md"
TRACKED_PACKAGES = ("xlang", "torch", "transformers", "peft", "tokenizers", "accelerate", "datasets", "pluggy")


StageEvents = Callable[[str, str], None]
"""`on_stage(stage_name, event)`, event one of "start", "skip", "done", "failed", "interrupted"."""


class Terminated(KeyboardInterrupt):
    """Raised by a SIGTERM handler (the `xlang` command installs one) so that a terminated run is recorded
    like Ctrl-C: the stage is `interrupted`, its checkpoints are kept, and the same command resumes."""


class RunInterrupted(KeyboardInterrupt):
    """A stage was stopped by a signal; the manifest records it as `interrupted`, and running the same
    command (or call) again resumes: finished stages are skipped, checkpoints are reused."""

    def __init__(self, stage: str, signal_name: str, run_dir: Path) -> None:
        super().__init__(f"stage {stage!r} interrupted by {signal_name}")
        self.stage = stage
        self.signal_name = signal_name
        self.run_dir = run_dir


def _duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`: how long a stage ran, for a log line."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def print_stage_events(write: Callable[[str], None] | None = None) -> StageEvents:
    """The stage lines `xlang extend` prints, one plain line per event with the time and how long the stage
    ran; `write` receives each line (default: print to stdout and flush, so a log file gets it at once)."""
    started: dict[str, float] = {}

    def emit(line: str) -> None:
        if write is not None:
            write(line)
        else:
            print(line, file=sys.stdout, flush=True)

    def on_stage(name: str, event: str) -> None:
        clock = time.strftime("%H:%M:%S")
        if event == "start":
            started[name] = time.monotonic()
            emit(f"▶ running {name} (started {clock})")
            return
        took = f" after {_duration(time.monotonic() - started[name])}" if name in started else ""
        if event == "skip":
            emit(f"↷ finished earlier {name}")
        elif event == "done":
            emit(f"✓ done {name}{took} ({clock})")
        elif event == "interrupted":
            emit(f"✗ interrupted {name}{took} ({clock})")
        else:
            emit(f"✗ {event} {name}{took} ({clock})")

    return on_stage


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _config_hash(config: BaseModel) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False, default=str)
        temporary = handle.name
    os.replace(temporary, path)


def stage_configs(
    recipe: Recipe,
    settings: XlangSettings,
    language: LanguageSpec | None = None,
    resolver: Resolver | None = None,
    until: str | None = None,
) -> dict[str, BaseModel]:
    """Validate every stage's knobs up front, so a typo fails before an hour of work, not after.

    With `language` and `resolver`, the `resolve` of each stage up to `until` also fills the defaults that
    depend on them (strategy names, strategy options, the data a stage needs), so the configs are what
    will run; a stage after `until` is not asked (a run up to `init` needs no images).
    """
    unknown = sorted(set(settings.stages) - set(recipe.stage_names()))
    if unknown:
        raise XlangError(
            f"settings name stage(s) {', '.join(unknown)} that recipe {recipe.name!r} does not have; "
            f"its stages: {', '.join(recipe.stage_names())}"
        )
    configs = {}
    names = recipe.stage_names()
    last = names.index(until) if until in names else len(names) - 1
    for position, stage in enumerate(recipe.stages):
        knobs = settings.stage(stage.name)
        unknown_knobs = sorted(set(knobs) - set(stage.config.model_fields))
        if unknown_knobs:
            raise XlangError(
                f"stage {stage.name!r} has no setting {', '.join(unknown_knobs)}; "
                f"its settings: {', '.join(stage.config.model_fields) or 'none'}"
            )
        try:
            config = stage.config(**knobs)
        except ValidationError as error:
            raise XlangError(f"invalid settings for stage {stage.name!r}: {validation_problems(error)}") from error
        if stage.resolve is not None and language is not None and resolver is not None and position <= last:
            config = stage.resolve(config, language, resolver)
        configs[stage.name] = config
    return configs


def _load_manifest(run_dir: Path, recipe: Recipe, identity: dict[str, Any]) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise XlangError(
                f"{path} is not valid JSON ({error}); remove the run folder or choose another --out"
            ) from error
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
            raise XlangError(f"{path} is not an xlang manifest; remove the run folder or choose another --out")
        for key, value in identity.items():
            if manifest.get(key) != value:
                raise XlangError(
                    f"run folder {run_dir} belongs to a run with {key}={manifest.get(key)!r}, not {value!r}; "
                    "choose another --out to start a new run"
                )
        return manifest
    return {
        **identity,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        "config": {},
        "stages": {},
        "final_model": None,
    }


def _write_report(run_dir: Path, manifest: dict[str, Any], recipe: Recipe) -> None:
    lines = [f"# xlang run: {manifest['recipe']} for {manifest['language']}", ""]
    companions = ", ".join(manifest.get("companions") or []) or "none"
    lines.append(f"Base model: `{manifest['base_model']}`; companion languages: {companions}  ")
    lines.append(f"Final model: `{manifest.get('final_model') or '(none yet)'}` (relative to the run folder)")
    lines.append("")
    lines.append("| stage | status | seconds | output |")
    lines.append("|---|---|---|---|")
    for stage in recipe.stages:
        record = manifest["stages"].get(stage.name, {})
        seconds = record.get("seconds")
        lines.append(
            f"| {stage.name} | {record.get('status', 'pending')} | {'' if seconds is None else f'{seconds:.1f}'} "
            f"| {record.get('output', '')} |"
        )
    for stage in recipe.stages:
        section = run_dir / stage.name / "report.md"
        if section.is_file():
            lines += ["", section.read_text(encoding="utf-8").rstrip()]
    temporary = run_dir / (REPORT + ".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, run_dir / REPORT)


def run_recipe(
    recipe: Recipe,
    language: LanguageSpec,
    settings: XlangSettings,
    run_dir: Path,
    base_model: str,
    until: str | None = None,
    on_stage: Callable[[str, str], None] | None = None,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Run the recipe's stages in order (up to and including `until`), skipping finished ones.

    `on_stage(name, event)` is told "start", "skip" or "done" for progress display. Returns the manifest.
    """
    from xlang.resolve import Resolver

    resolver = resolver or Resolver(settings)
    names = recipe.stage_names()
    if until is not None and until not in names:
        raise XlangError(f"unknown stage {until!r} for --until; stages of recipe {recipe.name!r}: {', '.join(names)}")
    companions = resolver.companions(language)
    configs = stage_configs(recipe, settings, language, resolver, until)
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = {
        "recipe": recipe.name,
        "language": language.code,
        "companions": [spec.code for spec in companions],
        "base_model": base_model,
    }
    manifest = _load_manifest(run_dir, recipe, identity)
    last = names.index(until) if until is not None else len(names) - 1
    for stage in recipe.stages[: last + 1]:
        config = configs[stage.name]
        record = manifest["stages"].get(stage.name)
        if record and record.get("status") == "done" and (run_dir / record["output"]).is_dir():
            if record.get("config_hash") != _config_hash(config):
                raise XlangError(
                    f"stage {stage.name!r} in {run_dir} finished with other settings; choose another --out, "
                    f"or delete {run_dir / stage.name} to redo it"
                )
            if on_stage:
                on_stage(stage.name, "skip")
            continue
        if on_stage:
            on_stage(stage.name, "start")
        staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{stage.name}-"))
        started = time.perf_counter()
        work_dir = run_dir / f".{stage.name}.work"
        work_dir.mkdir(exist_ok=True)
        context = StageContext(
            run_dir=run_dir,
            out_dir=staging,
            language=language,
            companions=companions,
            settings=settings,
            config=config,
            base_model=base_model,
            manifest=manifest,
            work_dir=work_dir,
            resolver=resolver,
        )
        try:
            output = stage.run(context)
        except KeyboardInterrupt as interrupt:
            signal_name = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
            _record_stop(run_dir, manifest, recipe, stage, config, started, staging, signal=signal_name)
            if on_stage:
                on_stage(stage.name, "interrupted")
            raise RunInterrupted(stage.name, signal_name, run_dir) from interrupt
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            _record_stop(run_dir, manifest, recipe, stage, config, started, staging, error=reason)
            if on_stage:
                on_stage(stage.name, "failed")
            raise
        if output.report:
            (staging / "report.md").write_text(output.report.rstrip() + "\n", encoding="utf-8")
        final = run_dir / stage.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        shutil.rmtree(work_dir, ignore_errors=True)
        manifest["config"][stage.name] = config.model_dump(mode="json")
        manifest["stages"][stage.name] = {
            "status": "done",
            "output": stage.name,
            "config_hash": _config_hash(config),
            "seconds": round(time.perf_counter() - started, 2),
            "metrics": output.metrics,
            "model_dir": output.model_dir,
        }
        if output.model_dir:
            manifest["final_model"] = f"{stage.name}/{output.model_dir}"
        write_json_atomic(run_dir / MANIFEST, manifest)
        _write_report(run_dir, manifest, recipe)
        if on_stage:
            on_stage(stage.name, "done")
    _write_report(run_dir, manifest, recipe)
    return manifest


def _record_stop(
    run_dir: Path,
    manifest: dict[str, Any],
    recipe: Recipe,
    stage: Stage,
    config: BaseModel,
    started: float,
    staging: Path,
    **why: str,
) -> None:
    """A stage that did not finish: its staging folder goes (its work folder and checkpoints stay), and the
    manifest says `interrupted` (with the signal) or `failed` (with the error)."""
    shutil.rmtree(staging, ignore_errors=True)
    manifest["stages"][stage.name] = {
        "status": "interrupted" if "signal" in why else "failed",
        **why,
        "config_hash": _config_hash(config),
        "seconds": round(time.perf_counter() - started, 2),
        "stopped": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(run_dir / MANIFEST, manifest)
    _write_report(run_dir, manifest, recipe)


def run_folder(settings: XlangSettings, recipe: str, language: str) -> Path:
    """`settings.out`, else `<runs_dir>/<recipe>-<language>`."""
    return Path(settings.out) if settings.out is not None else Path(settings.runs_dir) / f"{recipe}-{language}"


def extend(
    lang: str | None = None,
    *,
    until: str | None = None,
    config_file: str | Path | None = None,
    settings: XlangSettings | None = None,
    on_stage: Callable[[str, str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """`xlang extend`, from Python and from the command line alike: settings in, manifest out.

    `overrides` are settings (`recipe=`, `base_model=`, `out=`, `companions=`, `corpus_kind=`, and
    `stages={"expand": {"budget": 4000}}`, merged into the stages from env and TOML); they win over
    `XLANG_*` variables and the TOML file. `recipe=` may also be a `Recipe` object composed in Python,
    which then needs no registration. Pass `settings` instead to use settings made elsewhere.

    Stage lines are printed as `xlang extend` prints them (`on_stage` replaces that; pass
    `on_stage=lambda name, event: None` for silence), and the libraries' own progress bars stay off.
    Ctrl-C raises `RunInterrupted` after recording the stage as interrupted; calling again resumes.
    """
    from xlang.resolve import Resolver
    from xlang.settings import load_settings

    composed = overrides.pop("recipe", None) if isinstance(overrides.get("recipe"), Recipe) else None
    if composed is not None:
        overrides["recipe"] = composed.name
    if settings is None:
        settings = load_settings(config_file, language=lang, **overrides)
    elif lang is not None or overrides:
        raise XlangError("pass either settings= or the language and overrides, not both")
    settings.apply_environment()
    resolver = Resolver(settings)
    recipe = composed or resolver.recipe()
    language = resolver.language()
    # every knob, strategy name and strategy option is checked before a model is downloaded or converted
    if until is not None and until not in recipe.stage_names():
        raise XlangError(
            f"unknown stage {until!r} for --until; stages of recipe {recipe.name!r}: {', '.join(recipe.stage_names())}"
        )
    stage_configs(recipe, settings, language, resolver, until)
    resolver.companions(language)
    base_model = resolver.base_model()
    run_dir = run_folder(settings, recipe.name, language.code)
    events = on_stage if on_stage is not None else print_stage_events()
    return run_recipe(recipe, language, settings, run_dir, base_model, until, events, resolver)
