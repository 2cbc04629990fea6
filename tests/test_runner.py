"""The runner: one manifest, atomic stage folders, resume that skips finished stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from xlang.errors import XlangError
from xlang.runner import Recipe, Stage, StageContext, StageOutput, run_recipe
from xlang.settings import load_settings
from xlang.spec import ChatBits, LanguageSpec

SPEC = LanguageSpec(
    code="th",
    name="Thai",
    chat=ChatBits(system_prompt="s"),
)


class CountConfig(BaseModel):
    value: int = 1


def _recipe(calls: list[str], fail_on: str | None = None) -> Recipe:
    def make(name: str) -> Stage:
        def run(context: StageContext) -> StageOutput:
            calls.append(name)
            (context.out_dir / "model").mkdir()
            (context.out_dir / "model" / "weights.txt").write_text(str(context.config.value))
            if name == fail_on:
                raise RuntimeError(f"{name} broke")
            return StageOutput(metrics={"value": context.config.value}, report=f"## {name}\nfine", model_dir="model")

        return Stage(name=name, description=name, config=CountConfig, run=run)

    return Recipe(name="counting", description="test", stages=(make("one"), make("two"), make("three")))


def test_finished_stages_are_skipped_on_resume(tmp_path: Path):
    calls: list[str] = []
    settings = load_settings(cache_dir=tmp_path / "cache")
    run_recipe(_recipe(calls), SPEC, settings, tmp_path / "run", "base", until="two")
    assert calls == ["one", "two"]
    manifest = run_recipe(_recipe(calls), SPEC, settings, tmp_path / "run", "base")
    assert calls == ["one", "two", "three"]
    assert manifest["final_model"].endswith("three/model")
    assert [manifest["stages"][s]["status"] for s in ("one", "two", "three")] == ["done"] * 3
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.index("## one") < report.index("## two") < report.index("## three")


def test_a_failing_stage_leaves_no_half_written_folder(tmp_path: Path):
    calls: list[str] = []
    settings = load_settings(cache_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError):
        run_recipe(_recipe(calls, fail_on="two"), SPEC, settings, tmp_path / "run", "base")
    leftovers = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert leftovers == [".two.work", "manifest.json", "one", "report.md"]  # work dir: checkpoints survive
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["two"]["status"] == "failed"
    assert manifest["stages"]["two"]["error"] == "RuntimeError: two broke"
    run_recipe(_recipe(calls), SPEC, settings, tmp_path / "run", "base")
    assert calls == ["one", "two", "two", "three"]
    assert not (tmp_path / "run" / ".two.work").exists()


def test_changed_settings_of_a_finished_stage_are_refused(tmp_path: Path):
    calls: list[str] = []
    run_recipe(_recipe(calls), SPEC, load_settings(cache_dir=tmp_path), tmp_path / "run", "base", until="one")
    changed = load_settings(cache_dir=tmp_path, stages={"one": {"value": 5}})
    with pytest.raises(XlangError, match="finished with other settings"):
        run_recipe(_recipe(calls), SPEC, changed, tmp_path / "run", "base")


def test_unknown_stage_names_and_knobs_fail_before_work(tmp_path: Path):
    calls: list[str] = []
    with pytest.raises(XlangError, match="unknown stage 'four'"):
        run_recipe(_recipe(calls), SPEC, load_settings(cache_dir=tmp_path), tmp_path / "run", "base", until="four")
    with pytest.raises(XlangError, match="valeu"):
        run_recipe(
            _recipe(calls),
            SPEC,
            load_settings(cache_dir=tmp_path, stages={"one": {"valeu": 2}}),
            tmp_path / "run2",
            "base",
        )
    assert calls == []


def test_a_run_folder_of_another_language_is_refused(tmp_path: Path):
    calls: list[str] = []
    run_recipe(_recipe(calls), SPEC, load_settings(cache_dir=tmp_path), tmp_path / "run", "base", until="one")
    other = SPEC.model_copy(update={"code": "lo"})
    with pytest.raises(XlangError, match="language='th'"):
        run_recipe(_recipe(calls), other, load_settings(cache_dir=tmp_path), tmp_path / "run", "base")


def test_an_interrupted_stage_is_recorded_as_interrupted_and_resumes(tmp_path: Path):
    """Ctrl-C inside a stage: `interrupted` with the signal (not `failed`), the event reported, and
    `RunInterrupted` naming the stage; the same call again skips what finished and redoes that stage."""
    from xlang.runner import RunInterrupted, Terminated

    calls: list[str] = []
    events: list[tuple[str, str]] = []
    interrupt_in = {"two": KeyboardInterrupt, "three": Terminated}

    def make(name: str) -> Stage:
        def run(context: StageContext) -> StageOutput:
            calls.append(name)
            if name in interrupt_in:
                raise interrupt_in.pop(name)()
            return StageOutput(metrics={}, report=f"## {name}")

        return Stage(name=name, description=name, config=CountConfig, run=run)

    recipe = Recipe(name="counting", description="test", stages=(make("one"), make("two"), make("three")))
    settings = load_settings(cache_dir=tmp_path / "cache")

    def record(name: str, event: str) -> None:
        events.append((name, event))

    with pytest.raises(RunInterrupted) as stopped:
        run_recipe(recipe, SPEC, settings, tmp_path / "run", "base", on_stage=record)
    assert stopped.value.stage == "two" and stopped.value.signal_name == "SIGINT"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["two"]["status"] == "interrupted" and manifest["stages"]["two"]["signal"] == "SIGINT"
    assert events[-1] == ("two", "interrupted")
    assert "| two | interrupted |" in (tmp_path / "run" / "report.md").read_text()

    with pytest.raises(RunInterrupted) as stopped:  # SIGTERM, as the command's handler raises it
        run_recipe(recipe, SPEC, settings, tmp_path / "run", "base", on_stage=record)
    assert stopped.value.stage == "three" and stopped.value.signal_name == "SIGTERM"
    assert ("one", "skip") in events
    manifest = run_recipe(recipe, SPEC, settings, tmp_path / "run", "base", on_stage=record)
    assert [manifest["stages"][s]["status"] for s in ("one", "two", "three")] == ["done"] * 3
    assert calls == ["one", "two", "two", "three", "three"]


def test_stage_lines_say_when_and_how_long(capsys):
    from xlang.runner import print_stage_events

    lines: list[str] = []
    on_stage = print_stage_events(lines.append)
    on_stage("expand", "start")
    on_stage("expand", "done")
    on_stage("init", "skip")
    assert lines[0].startswith("▶ running expand (started ") and lines[1].startswith("✓ done expand after 0s (")
    assert lines[2] == "↷ finished earlier init"
    print_stage_events()("pretrain", "failed")
    assert capsys.readouterr().out.startswith("✗ failed pretrain (")
