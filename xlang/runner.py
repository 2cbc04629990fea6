"""The recipe runner: one run folder, one manifest, stages that finish once.

A run folder holds `manifest.json` (config, package versions, per-stage status, output folder and
metrics, and `final_model`), one subfolder per finished stage and `report.md`, which each stage adds a
section to. A stage writes into a hidden temporary folder that is renamed into place only when the
stage succeeds, so a killed run never leaves a half stage behind; starting the run again skips the
finished stages.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from xlang.errors import XlangError
from xlang.settings import XlangSettings
from xlang.spec import LanguageSpec

MANIFEST = "manifest.json"
REPORT = "report.md"
TRACKED_PACKAGES = ("xlang", "torch", "transformers", "peft", "tokenizers", "accelerate", "datasets", "pluggy")


@dataclass
class StageOutput:
    """What a stage hands back: numbers for the manifest, a report section, the model a user should load."""

    metrics: dict[str, Any] = field(default_factory=dict)
    report: str = ""
    model_dir: str | None = None
    """Relative to the stage folder; the last stage that sets it becomes the run's `final_model`."""


@dataclass
class StageContext:
    """Everything a stage may use. `out_dir` is the (temporary) folder the stage writes into."""

    run_dir: Path
    out_dir: Path
    language: LanguageSpec
    settings: XlangSettings
    config: BaseModel
    base_model: str
    manifest: dict[str, Any]
    work_dir: Path
    """A folder that survives a failed or killed attempt (checkpoints live here), removed once the stage is done."""

    def stage_dir(self, name: str) -> Path:
        """The output folder of an earlier, finished stage."""
        record = self.manifest["stages"].get(name)
        if not record or record.get("status") != "done":
            raise XlangError(
                f"stage {name!r} has not finished in {self.run_dir}; run it first (xlang extend --until {name})"
            )
        return self.run_dir / record["output"]

    def model_of(self, name: str) -> Path | None:
        record = self.manifest["stages"].get(name) or {}
        if record.get("status") == "done" and record.get("model_dir"):
            return self.run_dir / record["output"] / record["model_dir"]
        return None

    def latest_model(self) -> str:
        """The newest model folder a finished stage produced, or the base model."""
        for name in reversed(list(self.manifest["stages"])):
            model = self.model_of(name)
            if model is not None:
                return str(model)
        return self.base_model


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    config: type[BaseModel]
    run: Callable[[StageContext], StageOutput]


@dataclass(frozen=True)
class Recipe:
    """A named, ordered list of stages; each stage validates its own knobs with its pydantic config."""

    name: str
    description: str
    stages: tuple[Stage, ...]

    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]


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


def stage_configs(recipe: Recipe, settings: XlangSettings) -> dict[str, BaseModel]:
    """Validate every stage's knobs up front, so a typo fails before an hour of work, not after."""
    unknown = sorted(set(settings.stages) - set(recipe.stage_names()))
    if unknown:
        raise XlangError(
            f"settings name stage(s) {', '.join(unknown)} that recipe {recipe.name!r} does not have; "
            f"its stages: {', '.join(recipe.stage_names())}"
        )
    configs = {}
    for stage in recipe.stages:
        knobs = settings.stage(stage.name)
        unknown_knobs = sorted(set(knobs) - set(stage.config.model_fields))
        if unknown_knobs:
            raise XlangError(
                f"stage {stage.name!r} has no setting {', '.join(unknown_knobs)}; "
                f"its settings: {', '.join(stage.config.model_fields) or 'none'}"
            )
        try:
            configs[stage.name] = stage.config(**knobs)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise XlangError(f"invalid settings for stage {stage.name!r}: {problems}") from error
    return configs


def _load_manifest(run_dir: Path, recipe: Recipe, language: LanguageSpec, base_model: str) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise XlangError(
                f"{path} is not valid JSON ({error}); remove the run folder or choose another --out"
            ) from error
        for key, value in (("recipe", recipe.name), ("language", language.code), ("base_model", base_model)):
            if manifest.get(key) != value:
                raise XlangError(
                    f"run folder {run_dir} belongs to a run with {key}={manifest.get(key)!r}, not {value!r}; "
                    "choose another --out to start a new run"
                )
        return manifest
    return {
        "recipe": recipe.name,
        "language": language.code,
        "base_model": base_model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        "config": {},
        "stages": {},
        "final_model": None,
    }


def _write_report(run_dir: Path, manifest: dict[str, Any], recipe: Recipe) -> None:
    lines = [f"# xlang run: {manifest['recipe']} for {manifest['language']}", ""]
    lines.append(f"Base model: `{manifest['base_model']}`  ")
    lines.append(f"Final model: `{manifest.get('final_model') or '(none yet)'}`")
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
) -> dict[str, Any]:
    """Run the recipe's stages in order (up to and including `until`), skipping finished ones.

    `on_stage(name, event)` is told "start", "skip" or "done" for progress display. Returns the manifest.
    """
    names = recipe.stage_names()
    if until is not None and until not in names:
        raise XlangError(f"unknown stage {until!r} for --until; stages of recipe {recipe.name!r}: {', '.join(names)}")
    configs = stage_configs(recipe, settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(run_dir, recipe, language, base_model)
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
        context = StageContext(run_dir, staging, language, settings, config, base_model, manifest, work_dir)
        try:
            output = stage.run(context)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            manifest["stages"][stage.name] = {"status": "failed", "config_hash": _config_hash(config)}
            write_json_atomic(run_dir / MANIFEST, manifest)
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
            manifest["final_model"] = str((final / output.model_dir).resolve())
        write_json_atomic(run_dir / MANIFEST, manifest)
        _write_report(run_dir, manifest, recipe)
        if on_stage:
            on_stage(stage.name, "done")
    _write_report(run_dir, manifest, recipe)
    return manifest


def extend(
    lang: str,
    recipe: str | Recipe = "x-llava",
    base: str = "smollm2-135m",
    out: str | Path | None = None,
    until: str | None = None,
    config_file: str | Path | None = None,
    stages: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`xlang extend` from Python: resolve the language, recipe and base model by name, then run.

    `stages` overrides knobs per stage (`{"expand": {"budget": 4000}}`) on top of env and TOML.
    """
    from xlang import plugins, resolve
    from xlang.settings import load_settings

    settings = load_settings(config_file, stages=stages or {})
    settings.apply_environment()
    chosen = plugins.get_recipe(recipe) if isinstance(recipe, str) else recipe
    spec = resolve.language(lang)
    run_dir = Path(out) if out is not None else settings.runs_dir / f"{chosen.name}-{spec.code}"
    return run_recipe(chosen, spec, settings, run_dir, resolve.base_model(base, settings), until=until)
