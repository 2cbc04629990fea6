"""The recipe runner: one run folder, one manifest, stages that finish once.

A run folder holds `manifest.json` (config, package versions, per-stage status, output folder and
metrics, and `final_model`), one subfolder per finished stage and `report.md`, which each stage adds a
section to. A stage writes into a hidden temporary folder that is renamed into place only when the
stage succeeds, so a killed run never leaves a half stage behind; starting the run again skips the
finished stages (and a stage that checkpoints, such as pretraining, continues from its last checkpoint).

One run at a time: a run holds an exclusive lock on the folder (`.xlang-run.lock`, with its pid and
command) from before it reads the manifest until it returns; a second run on the same folder stops with
the holder's pid. Under the lock, the staging folders of killed runs (`.NAME-stage-PID-...`, whose
process is gone) are removed.

A finished stage counts as finished only for the inputs it was made from: its record keeps the
fingerprints (`output_id`) of every earlier stage's output it ran after (`inputs`). When an earlier stage
is redone (for example after its folder was deleted), every later stage is redone too, and the event says
why (`redo: expand was redone`). Changed settings of a finished stage itself are refused.

A stage that raises is recorded as `failed` with the error; one stopped by Ctrl-C (SIGINT) or SIGTERM is
recorded as `interrupted` with the signal, and `RunInterrupted` (a `KeyboardInterrupt`) says which stage.
Stage events ("start", "skip", "redo: <why>", "done", "failed", "interrupted") go to `on_stage`; by default they are
printed as one plain line each, for Python callers as for the command line.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from xlang import collective, interrupts
from xlang.atomic import make_staging, remove_dead_staging, write_file_atomically
from xlang.contract import Recipe, Resolver, Stage, StageContext, StageOutput, validation_problems
from xlang.errors import XlangError
from xlang.interrupts import Terminated
from xlang.locks import ExclusiveLock, Holder
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
LOCK = ".xlang-run.lock"
TRACKED_PACKAGES = ("xlang", "torch", "transformers", "peft", "tokenizers", "accelerate", "datasets", "pluggy")


StageEvents = Callable[[str, str], None]
"""`on_stage(stage_name, event)`, event one of "start", "skip", "redo: <why>" (a finished stage done
again, before its "start"), "done", "failed", "interrupted"."""


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
        elif event.startswith("redo: "):
            emit(f"↻ redo {name}: {event.removeprefix('redo: ')}")
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
    write_file_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str))


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
    if path.exists() and not path.is_file():
        raise XlangError(f"{path} is not a file; remove it or choose another --out")
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise XlangError(
                f"{path} is not valid JSON ({error}); remove the run folder or choose another --out"
            ) from error
        problem = _manifest_shape_problem(manifest)
        if problem:
            raise XlangError(
                f"{path} is not an xlang manifest ({problem}); remove the run folder or choose another --out"
            )
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


def _manifest_shape_problem(manifest: Any) -> str:
    """What is wrong with the shape of a manifest read from disk ("" when nothing is)."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    if not isinstance(manifest.get("stages"), dict):
        return "no `stages` object"
    for name, record in manifest["stages"].items():
        if not isinstance(record, dict):
            return f"the record of stage {name!r} is not an object"
    for key in ("config", "versions"):
        if key in manifest and not isinstance(manifest[key], dict):
            return f"`{key}` is not an object"
    if manifest.get("final_model") is not None and not isinstance(manifest["final_model"], str):
        return "`final_model` is not a path"
    return ""


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
    write_file_atomically(run_dir / REPORT, "\n".join(lines) + "\n")


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

    Every config is resolved before the run folder is made; the folder's lock is held from before the
    manifest is read until the last stage is recorded. `on_stage(name, event)` is told "start", "skip",
    "redo: <why>", "done", "failed" or "interrupted" for progress display. Returns the manifest.
    """
    from xlang.resolve import Resolver

    resolver = resolver or Resolver(settings)
    names = recipe.stage_names()
    if until is not None and until not in names:
        raise XlangError(f"unknown stage {until!r} for --until; stages of recipe {recipe.name!r}: {', '.join(names)}")
    companions = resolver.companions(language)
    configs = stage_configs(recipe, settings, language, resolver, until)
    run_dir.mkdir(parents=True, exist_ok=True)
    belongs_to = {
        "recipe": recipe.name,
        "language": language.code,
        "companions": [spec.code for spec in companions],
        "base_model": base_model,
    }
    with run_lock(run_dir):
        remove_leftovers(run_dir, recipe)
        manifest = _load_manifest(run_dir, recipe, belongs_to)
        last = names.index(until) if until is not None else len(names) - 1
        for position, stage in enumerate(recipe.stages[: last + 1]):
            inputs = {
                earlier.name: manifest["stages"][earlier.name].get("identity") for earlier in recipe.stages[:position]
            }
            if _finished(run_dir, manifest, stage, configs[stage.name], inputs, on_stage):
                continue
            _mark_stale(manifest, recipe.stages[position:], because=stage.name)
            _run_stage(
                run_dir,
                manifest,
                recipe,
                stage,
                configs[stage.name],
                inputs,
                on_stage,
                language,
                companions,
                settings,
                base_model,
                resolver,
            )
        _write_report(run_dir, manifest, recipe)
    return manifest


def _mark_stale(manifest: dict[str, Any], stages: Sequence[Stage], *, because: str) -> None:
    """Records of the stage about to run and of every later one stop counting as done: their outputs were
    made from what is being redone, so no stage may read them as its input (`StageContext.latest_model`)
    until they are redone in turn."""
    for stage in stages:
        record = manifest["stages"].get(stage.name)
        if record and record.get("status") == "done":
            record["status"] = "stale"
            record["stale_because"] = f"{because} is being redone"


def run_lock(run_dir: Path) -> ExclusiveLock:
    """The run folder's lock, naming this process's command; a live holder is an error naming its pid."""

    def busy(holder: Holder) -> str:
        return (
            f"run folder {run_dir} is in use by another xlang run ({holder.describe()}); wait for it to finish "
            "or choose another --out"
        )

    command = shlex.join([Path(sys.argv[0]).name or "python", *sys.argv[1:]]) if sys.argv else ""
    return ExclusiveLock(run_dir / LOCK, busy, command=command)


def remove_leftovers(run_dir: Path, recipe: Recipe) -> list[Path]:
    """Staging folders and temporary files of killed runs in the run folder and its stages' work folders
    (only those whose owning process is gone); called under the run lock. Staging folders from before
    they carried a pid (`.NAME-` and eight random letters) can only be a dead run's under the lock, and go too."""
    removed = remove_dead_staging(run_dir)
    for work in sorted(run_dir.glob(".*.work")):
        for folder, _, _ in os.walk(work):
            removed += remove_dead_staging(Path(folder))
    for stage in recipe.stages:
        for entry in run_dir.glob(f".{stage.name}-*"):
            if re.fullmatch(rf"\.{re.escape(stage.name)}-[a-z0-9_]{{8}}", entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    for entry in run_dir.glob("tmp*.tmp"):  # the manifest's temporary file, before it carried a pid
        if re.fullmatch(r"tmp[a-z0-9_]{8}\.tmp", entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _finished(
    run_dir: Path,
    manifest: dict[str, Any],
    stage: Stage,
    config: BaseModel,
    inputs: dict[str, str | None],
    on_stage: StageEvents | None,
) -> bool:
    """Whether the stage's output can be kept: done, its folder there, its settings and its inputs (the
    identities of the earlier stages' outputs) the same. Changed settings are refused; a stage whose folder
    is gone, whose inputs were redone or that a redo made stale is reported as redone (`redo: ...`) and
    returns False."""
    record = manifest["stages"].get(stage.name) or {}
    status = record.get("status")
    if status not in ("done", "stale"):
        if record.get("inputs", inputs) != inputs:  # checkpoints of an attempt on other inputs are stale
            shutil.rmtree(run_dir / f".{stage.name}.work", ignore_errors=True)
        return False
    if not (run_dir / record["output"]).is_dir():
        why = f"its folder {record['output']}/ is gone"
    else:
        if status == "done" and record.get("config_hash") != _config_hash(config):
            raise XlangError(
                f"stage {stage.name!r} in {run_dir} finished with other settings; choose another --out, "
                f"or delete {run_dir / stage.name} to redo it"
            )
        recorded = record.get("inputs") or {}
        redone = [name for name, identity in inputs.items() if recorded.get(name) != identity]
        if not redone and status == "done":
            if on_stage:
                on_stage(stage.name, "skip")
            return True
        if redone:
            why = f"{', '.join(redone)} {'was' if len(redone) == 1 else 'were'} redone"
        else:
            why = record.get("stale_because", "an earlier stage was redone")
    if on_stage:
        on_stage(stage.name, f"redo: {why}")
    return False


def _attempt_record(run_dir: Path, stage: Stage) -> Path:
    """Beside a stage's work folder: the settings and inputs of the attempt that wrote its checkpoints."""
    return run_dir / f".{stage.name}.attempt.json"


def _work_dir(
    run_dir: Path, stage: Stage, config_hash: str, inputs: dict[str, str | None], on_stage: StageEvents | None
) -> Path:
    """The stage's work folder, kept from an interrupted attempt with the same settings and inputs (its
    checkpoints resume), emptied when they changed: those checkpoints belong to another run."""
    work_dir = run_dir / f".{stage.name}.work"
    attempt = {"config": config_hash, "inputs": inputs}
    record = _attempt_record(run_dir, stage)
    if work_dir.is_dir() and any(work_dir.iterdir()):
        try:
            earlier = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return work_dir  # written before attempts were recorded: the stage's own checks decide
        if earlier == attempt:
            return work_dir
        shutil.rmtree(work_dir)
        if on_stage:
            on_stage(
                stage.name,
                "redo: its settings or inputs changed since the interrupted attempt, whose checkpoints are set aside",
            )
    work_dir.mkdir(exist_ok=True)
    write_json_atomic(record, attempt)
    return work_dir


def _run_stage(
    run_dir: Path,
    manifest: dict[str, Any],
    recipe: Recipe,
    stage: Stage,
    config: BaseModel,
    inputs: dict[str, str | None],
    on_stage: StageEvents | None,
    language: LanguageSpec,
    companions: tuple[LanguageSpec, ...],
    settings: XlangSettings,
    base_model: str,
    resolver: Resolver,
) -> None:
    """Run one stage into a staging folder named with this process's pid, then swap it into place and
    record it with its identity: a hash of its settings, its inputs and a fresh nonce."""
    if on_stage:
        on_stage(stage.name, "start")
    staging = make_staging(run_dir, stage.name)
    started = time.perf_counter()
    work_dir = _work_dir(run_dir, stage, _config_hash(config), inputs, on_stage)
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
        interrupts.raise_pending()  # a signal whose exception was lost in an earlier stage stops the run here
        output = stage.run(context)
        model_dir = _relative_model_dir(stage, output, staging)
    except KeyboardInterrupt as interrupt:
        signal_name = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
        _record_stop(run_dir, manifest, recipe, stage, config, inputs, started, staging, signal=signal_name)
        if on_stage:
            on_stage(stage.name, "interrupted")
        raise RunInterrupted(stage.name, signal_name, run_dir) from interrupt
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        _record_stop(run_dir, manifest, recipe, stage, config, inputs, started, staging, error=reason)
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
    _attempt_record(run_dir, stage).unlink(missing_ok=True)
    config_hash = _config_hash(config)
    finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    nonce = secrets.token_hex(8)
    identity = hashlib.sha256(json.dumps([config_hash, inputs, finished, nonce], sort_keys=True).encode()).hexdigest()
    manifest["config"][stage.name] = config.model_dump(mode="json")
    manifest["stages"][stage.name] = {
        "status": "done",
        "output": stage.name,
        "config_hash": config_hash,
        "inputs": inputs,
        "identity": identity[:16],
        "finished": finished,
        "seconds": round(time.perf_counter() - started, 2),
        "metrics": output.metrics,
        "model_dir": model_dir,
    }
    if model_dir:
        manifest["final_model"] = f"{stage.name}/{model_dir}"
    write_json_atomic(run_dir / MANIFEST, manifest)
    _write_report(run_dir, manifest, recipe)
    if on_stage:
        on_stage(stage.name, "done")


def _relative_model_dir(stage: Stage, output: StageOutput, staging: Path) -> str | None:
    """`StageOutput.model_dir` relative to the stage folder, so the manifest holds no absolute path (the
    run folder may be moved); an absolute one inside the staging folder is made relative."""
    if output.model_dir is None:
        return None
    model_dir = Path(output.model_dir)
    if model_dir.is_absolute():
        try:
            model_dir = model_dir.resolve().relative_to(staging.resolve())
        except ValueError:
            raise XlangError(
                f"stage {stage.name!r} returned model_dir {output.model_dir}, outside its output folder; "
                "return a path relative to out_dir"
            ) from None
    if ".." in model_dir.parts:
        raise XlangError(f"stage {stage.name!r} returned model_dir {output.model_dir}, outside its output folder")
    return model_dir.as_posix()


def _record_stop(
    run_dir: Path,
    manifest: dict[str, Any],
    recipe: Recipe,
    stage: Stage,
    config: BaseModel,
    inputs: dict[str, str | None],
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
        "inputs": inputs,
        "seconds": round(time.perf_counter() - started, 2),
        "stopped": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(run_dir / MANIFEST, manifest)
    _write_report(run_dir, manifest, recipe)


def _check_run_folder_path(run_dir: Path) -> None:
    """The run folder is, or can become, a folder: no part of its path is a file."""
    for part in (run_dir, *run_dir.parents):
        if part.exists():
            if not part.is_dir():
                raise XlangError(
                    f"--out {run_dir}: {part} is a file, not a folder; move the file or choose another --out"
                )
            return


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
    Launched as several processes (torchrun, accelerate launch), rank 0 runs the recipe and every rank trains
    (`xlang.collective`); the other ranks return the manifest rank 0 wrote.
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
    run_dir = run_folder(settings, recipe.name, language.code)
    _check_run_folder_path(run_dir)  # before the base model is converted: a bad --out costs nothing
    if collective.world_size() > 1:  # launched as several processes: rank 0 runs, the others train with it
        collective.start_process_group()
        if collective.rank() != 0:
            collective.serve_calls()
            collective.end_process_group()
            manifest_path = run_dir / MANIFEST
            return json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    base_model = resolver.base_model()
    events = on_stage if on_stage is not None else print_stage_events()
    manifest = run_recipe(recipe, language, settings, run_dir, base_model, until, events, resolver)
    # only after a whole run: a failed rank 0 may have left the others inside a training call, where a message
    # would meet the wrong collective; its exit ends them instead (torchrun stops every rank when one fails)
    collective.stop_serving()
    collective.end_process_group()
    return manifest
