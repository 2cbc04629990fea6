"""A launched process leaves without the interpreter's finalization, its output flushed.

Finalization is where a gloo group that another library still holds is destroyed, and where a finished
two-process run once aborted (SIGABRT) after printing its final model. A real one-process gloo group on
127.0.0.1 stands in for a launch; the exit the command reaches is `xlang`'s own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from launching import free_port

SCRIPT = """
import atexit, sys
from pathlib import Path
from xlang import cli, collective

marker = Path(sys.argv[1])
atexit.register(marker.write_text, "finalized")
if sys.argv[2] == "joined":
    collective.start_process_group()
cli.main(sys.argv[3:])
"""


def run(tmp_path: Path, joined: bool, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    marker = tmp_path / f"finalized-{joined}-{len(args)}"
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "ACCELERATE_USE_CPU": "true",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    command = [sys.executable, "-c", SCRIPT, str(marker), "joined" if joined else "alone", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return done, marker.exists()


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [(["frobnicate"], 2, "No such command"), (["--help"], 0, "Usage: xlang")],
    ids=["error", "help"],
)
def test_a_launched_process_exits_with_its_code_and_output_but_no_finalization(
    tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    joined, finalized = run(tmp_path, True, *args)
    assert joined.returncode == code, joined.stderr[-2000:]
    assert said in joined.stdout + joined.stderr  # flushed before the process left
    assert not finalized  # atexit handlers (and the interpreter's teardown) never ran
    alone, finalized_alone = run(tmp_path, False, *args)
    assert alone.returncode == code and said in alone.stdout + alone.stderr
    assert finalized_alone  # a process that joined no group exits as every Python program does
