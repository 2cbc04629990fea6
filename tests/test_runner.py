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
    # the work folder (its checkpoints) survives, with the record of the attempt that wrote them
    assert leftovers == [".two.attempt.json", ".two.work", "manifest.json", "one", "report.md"]
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


def test_a_redone_stage_redoes_every_later_stage_and_says_why(tmp_path: Path):
    calls: list[str] = []
    events: list[tuple[str, str]] = []
    settings = load_settings(cache_dir=tmp_path / "cache")
    run = tmp_path / "run"
    first = run_recipe(_recipe(calls), SPEC, settings, run, "base")
    assert first["stages"]["three"]["inputs"] == {name: first["stages"][name]["identity"] for name in ("one", "two")}

    (run / "one").rename(tmp_path / "gone")  # deleted by hand, as the changed-settings error suggests

    def record(name: str, event: str) -> None:
        events.append((name, event))

    run_recipe(_recipe(calls), SPEC, settings, run, "base", until="two", on_stage=record)
    assert ("one", "redo: its folder one/ is gone") in events and ("two", "redo: one was redone") in events
    assert calls == ["one", "two", "three", "one", "two"]

    manifest = run_recipe(_recipe(calls), SPEC, settings, run, "base", on_stage=record)
    assert events[-3:] == [("three", "redo: one, two were redone"), ("three", "start"), ("three", "done")]
    assert calls[-1] == "three" and manifest["final_model"] == "three/model"
    run_recipe(_recipe(calls), SPEC, settings, run, "base", on_stage=record)  # and now nothing is redone
    assert calls.count("three") == 2 and events[-1] == ("three", "skip")


def test_a_second_run_on_a_held_folder_is_refused_with_the_holders_pid(tmp_path: Path):
    import os

    from xlang.runner import run_lock

    calls: list[str] = []
    settings = load_settings(cache_dir=tmp_path / "cache")
    run = tmp_path / "run"
    run_recipe(_recipe(calls), SPEC, settings, run, "base", until="one")
    manifest = (run / "manifest.json").read_text()
    with run_lock(run):
        with pytest.raises(XlangError, match=f"in use by another xlang run \\(pid {os.getpid()}"):
            run_recipe(_recipe(calls), SPEC, settings, run, "base")
    assert calls == ["one"] and (run / "manifest.json").read_text() == manifest
    run_recipe(_recipe(calls), SPEC, settings, run, "base")  # released: the run goes on
    assert calls == ["one", "two", "three"]


def test_only_dead_runs_leftovers_are_removed(tmp_path: Path):
    """Staging folders in the run folder and in a stage's work folder: a dead owner's go (also one from
    before folders carried a pid), a live process's stay, checkpoints stay."""
    import subprocess
    import sys

    from xlang import atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        run = tmp_path / "run"
        host = atomic.owned_prefix("x").split("-")[3]
        gone = [
            run / f".two-stage-{dead_pid}-{host}-abcd1234",
            run / ".two-k2j4h5g6",
            run / ".two.work" / "checkpoints" / f".step-2-stage-{dead_pid}-{host}-zz",
        ]
        kept = [run / f".two-stage-{live.pid}-{host}-abcd1234", run / ".two.work" / "checkpoints" / "step-1"]
        for folder in gone + kept:
            folder.mkdir(parents=True)
        calls: list[str] = []
        run_recipe(_recipe(calls, fail_on="two"), SPEC, load_settings(cache_dir=tmp_path), run, "base", until="one")
        assert [folder.exists() for folder in gone] == [False] * 3
        assert all(folder.exists() for folder in kept)
    finally:
        live.stdin.close()
        live.wait()


def test_the_manifest_holds_only_paths_relative_to_the_run_folder(tmp_path: Path):
    def absolute(context: StageContext) -> StageOutput:
        (context.out_dir / "model").mkdir()
        return StageOutput(model_dir=str(context.out_dir / "model"))

    def outside(context: StageContext) -> StageOutput:
        return StageOutput(model_dir=str(tmp_path))

    recipe = Recipe(name="paths", description="", stages=(Stage("one", "", CountConfig, absolute),))
    manifest = run_recipe(recipe, SPEC, load_settings(cache_dir=tmp_path), tmp_path / "run", "base")
    assert manifest["stages"]["one"]["model_dir"] == "model" and manifest["final_model"] == "one/model"
    recipe = Recipe(name="paths", description="", stages=(Stage("one", "", CountConfig, outside),))
    with pytest.raises(XlangError, match="outside its output folder"):
        run_recipe(recipe, SPEC, load_settings(cache_dir=tmp_path), tmp_path / "run2", "base")


def _checkpointing_stage(seen: list[list[str]]):
    """A stage that records what its work folder holds, writes a checkpoint there, and is interrupted on its
    first two attempts."""

    def checkpointing(context: StageContext) -> StageOutput:
        seen.append(sorted(p.name for p in context.work_dir.iterdir()))
        (context.work_dir / f"checkpoint-{len(seen)}").mkdir()
        if len(seen) < 3:
            raise KeyboardInterrupt
        return StageOutput()

    return checkpointing


def test_checkpoints_of_an_attempt_on_other_inputs_are_not_resumed(tmp_path: Path):
    """A stage interrupted after checkpointing resumes from its work folder, unless an earlier stage was
    redone in between: then the checkpoints were made from other inputs and are dropped."""
    from xlang.runner import RunInterrupted

    seen: list[list[str]] = []
    checkpointing = _checkpointing_stage(seen)

    def plain(context: StageContext) -> StageOutput:
        return StageOutput()

    recipe = Recipe(
        name="ckpt",
        description="",
        stages=(Stage("one", "", CountConfig, plain), Stage("two", "", CountConfig, checkpointing)),
    )
    settings = load_settings(cache_dir=tmp_path / "cache")
    run = tmp_path / "run"
    quiet = lambda name, event: None  # noqa: E731
    for _ in range(2):  # interrupted twice; the second attempt resumes from the first one's checkpoint
        with pytest.raises(RunInterrupted):
            run_recipe(recipe, SPEC, settings, run, "base", on_stage=quiet)
    (run / "one").rename(tmp_path / "one-gone")  # one is redone before the third attempt
    run_recipe(recipe, SPEC, settings, run, "base", on_stage=quiet)
    assert seen == [[], ["checkpoint-1"], []]


def test_a_redone_stage_reads_the_model_before_it_never_a_stale_later_one(tmp_path: Path):
    """When a middle stage is redone, its input is the model of the stage before it: the later stages'
    records from the previous run (and its own) are stale until they are redone, and the manifest says so."""
    seen: list[tuple[str, str]] = []

    def make(name: str) -> Stage:
        def run(context: StageContext) -> StageOutput:
            seen.append((name, str(Path(context.latest_model()).relative_to(context.run_dir))))
            (context.out_dir / "model").mkdir()
            return StageOutput(model_dir="model")

        return Stage(name=name, description=name, config=CountConfig, run=run)

    recipe = Recipe(name="counting", description="test", stages=(make("base-model"), make("two"), make("three")))
    settings = load_settings(cache_dir=tmp_path / "cache")
    run = tmp_path / "run"
    (run / "base").mkdir(parents=True)
    run_recipe(recipe, SPEC, settings, run, str(run / "base"))
    assert seen == [("base-model", "base"), ("two", "base-model/model"), ("three", "two/model")]

    (run / "two").rename(tmp_path / "gone")
    seen.clear()
    run_recipe(recipe, SPEC, settings, run, str(run / "base"), until="two")
    assert seen == [("two", "base-model/model")]  # not three/model, nor the deleted two/model
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["three"]["status"] == "stale"
    assert manifest["stages"]["three"]["stale_because"] == "two is being redone"


def test_checkpoints_of_an_attempt_with_other_settings_are_set_aside(tmp_path: Path):
    """Settings changed after an interrupted attempt: its checkpoints belong to another run, so the stage
    starts from an empty work folder and says so, instead of refusing to continue."""
    from xlang.runner import RunInterrupted

    seen: list[list[str]] = []
    checkpointing = _checkpointing_stage(seen)

    recipe = Recipe(name="ckpt", description="", stages=(Stage("one", "", CountConfig, checkpointing),))
    run = tmp_path / "run"
    events: list[str] = []
    for count in (1, 1, 2):  # interrupted, resumed from its checkpoint, then other settings
        settings = load_settings(cache_dir=tmp_path / "cache", stages={"one": {"value": count}})
        try:
            run_recipe(recipe, SPEC, settings, run, "base", on_stage=lambda name, event: events.append(event))
        except RunInterrupted:
            pass
    assert seen == [[], ["checkpoint-1"], []]
    assert any("settings or inputs changed" in event for event in events)
    assert not (run / ".one.work").exists() and not (run / ".one.attempt.json").exists()
