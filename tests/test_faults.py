"""Run-folder integrity under faults, through the `xlang` command in real processes: two runs on one
folder, a run killed with SIGKILL in the middle of a stage, a stage folder deleted by hand, and bad
inputs that must stop a run before any work.

The runner's behaviour does not depend on what a stage computes, so most tests use a two-stage recipe
(`expand`, `init`) from a plugin installed into a site folder with its own entry point, as a third party
would ship it: `expand` writes a random token, `init` copies it, so a stale `init` is visible; `init`
can be told (through a folder in `FAULTS_HOLD`) to announce itself and wait for a release file, which
lets a test act while a stage is known to be running without sleeping. The up-front checks use the
shipped X-LLaVA recipe, since they are its checks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from file_limits import limit_file_size

REPO = Path(__file__).resolve().parent.parent

PLUGIN = '''
"""A two-stage recipe for fault tests."""

import os
import secrets
import time
from pathlib import Path

from pydantic import BaseModel

from xlang import hookimpl
from xlang.contract import Recipe, Stage, StageOutput


class Knobs(BaseModel):
    value: int = 1


def expand(context):
    (context.out_dir / "token.txt").write_text(secrets.token_hex(8))
    return StageOutput(metrics={"value": context.config.value}, report="## expand")


def init(context):
    (context.out_dir / "model").mkdir()
    (context.out_dir / "model" / "token.txt").write_text((context.stage_dir("expand") / "token.txt").read_text())
    (context.out_dir / "model" / "weights.bin").write_bytes(bytes(1 << 20))
    hold = os.environ.get("FAULTS_HOLD")
    if hold:
        (Path(hold) / f"ready-{os.getpid()}").write_text(str(context.out_dir))
        deadline = time.monotonic() + 120
        while not (Path(hold) / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return StageOutput(report="## init", model_dir="model")


RECIPE = Recipe(
    name="faults",
    description="two stages for fault tests",
    stages=(Stage("expand", "a token", Knobs, expand), Stage("init", "a copy of it", Knobs, init)),
)


@hookimpl
def register_recipes(register):
    register(RECIPE)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the recipe plugin and its entry point, and a base model folder."""
    root = tmp_path_factory.mktemp("faults")
    site = root / "site"
    site.mkdir()
    (site / "faults_recipe.py").write_text(PLUGIN)
    info = site / "xlang_faults-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xlang-faults\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[xlang]\nfaults = faults_recipe\n")
    base = root / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    return root


@pytest.fixture
def env(site: Path, cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    environment = {key: value for key, value in cli_env.items() if not key.startswith("XLANG_")}
    environment.update(
        XLANG_CACHE_DIR=cli_env["XLANG_CACHE_DIR"],
        PYTHONPATH=os.pathsep.join([str(site / "site"), str(REPO)]),
    )
    return environment


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from xlang.cli import main; main()", *args]


def _extend(site: Path, run: Path, *more: str) -> list[str]:
    return _command(
        "extend", "--recipe", "faults", "--lang", "en", "--base", str(site / "base"), "--out", str(run), *more
    )


def _xlang(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _wait_for(condition, process: subprocess.Popen[str], what: str, seconds: float = 60) -> None:
    """Poll `condition` until it holds; fail early if the process ends first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {seconds}s")
        time.sleep(0.02)


def _staging(run: Path) -> list[str]:
    return sorted(entry.name for entry in run.iterdir() if "-stage-" in entry.name)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_finishes_unaffected(
    site: Path, env: dict[str, str], tmp_path: Path
) -> None:
    run, hold = tmp_path / "run", tmp_path / "hold"
    hold.mkdir()
    first = subprocess.Popen(
        _extend(site, run), env={**env, "FAULTS_HOLD": str(hold)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: any(hold.glob("ready-*")), first, "init running")
        second = _xlang(_extend(site, run), env)
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.strip().count("\n") == 0 and second.stderr.startswith("error: ")
        assert f"in use by another xlang run (pid {first.pid}: " in second.stderr
        assert "extend" in second.stderr and "wait for it to finish or choose another --out" in second.stderr
        (hold / "release").write_text("")
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out + err
    manifest = json.loads((run / "manifest.json").read_text())
    assert [manifest["stages"][name]["status"] for name in ("expand", "init")] == ["done", "done"]
    assert (run / "init" / "model" / "token.txt").read_text() == (run / "expand" / "token.txt").read_text()
    assert manifest["final_model"] == "init/model"
    assert not (run / ".xlang-run.lock").exists() and _staging(run) == []


def test_a_run_killed_in_a_stage_leaves_nothing_after_the_next_run(
    site: Path, env: dict[str, str], tmp_path: Path
) -> None:
    run, hold = tmp_path / "run", tmp_path / "hold"
    hold.mkdir()
    killed = subprocess.Popen(
        _extend(site, run), env={**env, "FAULTS_HOLD": str(hold)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    _wait_for(lambda: any(hold.glob("ready-*")), killed, "init running")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    left = _staging(run)
    assert len(left) == 1 and left[0].startswith(f".init-stage-{killed.pid}-"), left  # what a kill leaves

    resumed = _xlang(_extend(site, run), env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "finished earlier expand" in resumed.stdout and "running init" in resumed.stdout
    assert _staging(run) == []
    assert sorted(entry.name for entry in run.iterdir()) == ["expand", "init", "manifest.json", "report.md"]


def test_deleting_an_earlier_stage_folder_redoes_the_later_stages_too(
    site: Path, env: dict[str, str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert _xlang(_extend(site, run, "--until", "init"), env).returncode == 0
    before = json.loads((run / "manifest.json").read_text())["stages"]
    assert before["init"]["inputs"] == {"expand": before["expand"]["identity"]}

    again = _xlang(_extend(site, run, "--until", "init"), env)  # nothing changed: both skipped
    assert "finished earlier expand" in again.stdout and "finished earlier init" in again.stdout

    shutil.rmtree(run / "expand")
    redone = _xlang(_extend(site, run, "--until", "init"), env)
    assert redone.returncode == 0, redone.stdout + redone.stderr
    assert "↻ redo expand: its folder expand/ is gone" in redone.stdout
    assert "↻ redo init: expand was redone" in redone.stdout
    after = json.loads((run / "manifest.json").read_text())["stages"]
    assert after["expand"]["identity"] != before["expand"]["identity"]
    assert after["init"]["inputs"] == {"expand": after["expand"]["identity"]}
    assert (run / "init" / "model" / "token.txt").read_text() == (run / "expand" / "token.txt").read_text()


X_LLAVA_REFUSALS = [
    (["--until", "nope"], "unknown stage 'nope' for --until"),
    (["--initializer", "nope"], "'nope'"),
    (["--mix", "ko=0.5,xx=0.5"], "--mix names 'xx', not a language of this run"),
    (["--mix", "ko=inf,en=1"], "--mix weight ko=inf is not a finite number"),
]


def test_bad_inputs_stop_the_run_before_any_work(site: Path, env: dict[str, str], tmp_path: Path) -> None:
    """Each is exit status 2 with one `error:` line, and no run folder is made."""
    for number, (flags, message) in enumerate(X_LLAVA_REFUSALS):
        run = tmp_path / f"run{number}"
        result = _xlang(
            _command("extend", "--lang", "ko", "--base", str(site / "base"), "--out", str(run), *flags), env
        )
        assert result.returncode == 2, (flags, result.stdout + result.stderr)
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr
        assert not run.exists(), flags


@contextmanager
def _small_tmpfs(where: Path, *options: str) -> Iterator[bool]:
    """A 512 KiB tmpfs mounted at `where` (with `options`, e.g. `ro`), when this process may mount one;
    yields whether it did, and unmounts it afterwards."""
    where.mkdir()
    mount = shutil.which("mount")
    mounted = (
        mount is not None
        and subprocess.run(
            [mount, "-t", "tmpfs", "-o", ",".join(("size=512k", *options)), "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=True)


_limit_file_size = limit_file_size(512 * 1024)
"""In the child: no file may grow past 512 KiB (EFBIG), and the signal that would kill it is ignored."""


def _assert_one_line_and_nothing_half_written(result: subprocess.CompletedProcess[str], run: Path, says: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]
    if run.exists():
        # a stage's `.NAME.work` folder is kept on purpose (checkpoints to resume from), with the record of the
        # attempt that wrote them (`.NAME.attempt.json`); staging is not
        kept = (".work", ".attempt.json")
        leftovers = [entry.name for entry in run.rglob(".*") if not entry.name.endswith(kept)]
        assert not leftovers, f"temporary entries were left behind: {leftovers}"
        assert not (run / "init").exists()


def test_a_full_disk_is_one_line_naming_the_file(site: Path, env: dict[str, str], tmp_path: Path) -> None:
    """A 512 KiB tmpfs where mounting is allowed (ENOSPC); otherwise a 512 KiB file-size limit in the child
    (EFBIG, SIGXFSZ ignored). Either way `init` writes 1 MiB and cannot."""
    with _small_tmpfs(tmp_path / "small") as mounted:
        run = tmp_path / "small" / "run"
        command = _extend(site, run, "--until", "init")
        limit = None if mounted else _limit_file_size
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limit)
        says = "the disk is full" if mounted else "the file grew past the size"
        _assert_one_line_and_nothing_half_written(result, run, says)
        assert str(run) in result.stderr


def test_a_read_only_out_folder_is_one_line_naming_it(site: Path, env: dict[str, str], tmp_path: Path) -> None:
    """A read-only tmpfs where mounting is allowed (EROFS); otherwise a path under /sys, which no process
    may create folders in (EPERM, or EACCES for a user)."""
    with _small_tmpfs(tmp_path / "readonly", "ro") as mounted:
        run = (tmp_path / "readonly" / "run") if mounted else Path("/sys/xlang-run")
        result = _xlang(_extend(site, run, "--until", "init"), env)
        _assert_one_line_and_nothing_half_written(result, run, str(run))
        assert not run.exists()


@pytest.mark.slow
def test_a_full_disk_under_tokenizer_expand_names_out_and_leaves_nothing(
    cli_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    """The OS names no file when a write fails (only the scratch file's descriptor is known), so xlang names the
    folder the user asked for. The command runs once with room (which also fetches what it reads), then again
    with a 512 KiB file-size limit in the child: the expanded tokenizer.json is 3.5 MB."""

    def expand(out: Path, limit: Any = None) -> subprocess.CompletedProcess[str]:
        command = _command(
            "tokenizer", "expand", "--lang", "ko", "--base", str(smollm2_dir), "--budget", "300", "--out", str(out)
        )
        return subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=300, preexec_fn=limit)

    with_room = expand(tmp_path / "with-room")
    assert with_room.returncode == 0, with_room.stderr
    outs = tmp_path / "outs"
    out = outs / "ko-tokenizer"
    result = expand(out, _limit_file_size)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: the file grew past the size"), result.stderr
    assert list(outs.iterdir()) == []  # no tokenizer folder, no scratch folder
