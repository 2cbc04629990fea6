"""Folders that appear whole or not at all (`xlang/atomic.py`), on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from file_limits import limit_file_size

from xlang import atomic


def _write_files(files: dict[str, str]):
    def write(staging: Path) -> None:
        for name, text in files.items():
            (staging / name).write_text(text)

    return write


def test_a_new_folder_replaces_the_old_one_whole(tmp_path: Path) -> None:
    out = tmp_path / "model"
    atomic.write_folder_atomically(out, _write_files({"a.txt": "1", "b.txt": "1"}))
    atomic.write_folder_atomically(out, _write_files({"a.txt": "2"}))
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert (out / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or retired folder left


def test_a_failed_write_leaves_the_previous_folder_and_no_debris(tmp_path: Path) -> None:
    out = tmp_path / "model"
    atomic.write_folder_atomically(out, _write_files({"a.txt": "old"}))

    def fail(staging: Path) -> None:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.write_folder_atomically(out, fail)
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_copy_another_process_installed_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds of the same cache entry race; the loser's rename fails on the non-empty folder (a real
    OSError from the file system). Only the other process's timing is simulated: it installs its copy
    just before our rename."""
    out = tmp_path / "corpus"
    staging = tmp_path / ".corpus-ours"
    staging.mkdir()
    (staging / "train.jsonl").write_text("ours")
    real_replace = os.replace

    def other_process_wins(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == out and not out.exists():
            out.mkdir()
            (out / "train.jsonl").write_text("theirs")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", other_process_wins)
    atomic.move_into_place(staging, out)
    assert (out / "train.jsonl").read_text() == "theirs"
    assert not staging.exists()


HOLD_IN_WRITE = """
import sys
from pathlib import Path
from xlang import atomic

def write(staging: Path) -> None:
    (staging / "weights.bin").write_bytes(bytes(1024))
    print(staging.name, flush=True)
    sys.stdin.read()  # held until the test closes stdin or kills the process

atomic.write_folder_atomically(Path(sys.argv[1]), write)
"""


def _writer(out: Path) -> tuple[subprocess.Popen[str], str]:
    """A process inside `write_folder_atomically(out, ...)`, and its staging folder's name."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_WRITE, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    return process, process.stdout.readline().strip()


def test_a_killed_writers_staging_is_removed_by_the_next_build_and_a_live_ones_kept(tmp_path: Path) -> None:
    killed, killed_staging = _writer(tmp_path / "model")
    live, live_staging = _writer(tmp_path / "tower")
    try:
        assert killed_staging.startswith(f".model-stage-{killed.pid}-")
        assert atomic.owner_pid(tmp_path / killed_staging) == killed.pid
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert (tmp_path / killed_staging / "weights.bin").is_file()  # SIGKILL: nothing could clean up

        atomic.write_folder_atomically(tmp_path / "corpus", _write_files({"a.txt": "1"}))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["corpus", live_staging])
    finally:
        live.stdin.close()
        live.wait(timeout=60)
        if killed.poll() is None:
            killed.kill()
    assert live.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "tower"]


def test_only_names_with_a_pid_of_this_host_count_as_owned(tmp_path: Path) -> None:
    """Another machine's staging folder in a shared cache is never judged by this machine's processes."""
    ours = atomic.owned_prefix("model") + "abc_1234"
    assert atomic.owner_pid(tmp_path / ours) == os.getpid()
    host = ours.split("-")[3]
    other_host = ours.replace(f"-{host}-", f"-{'0' if host[0] != '0' else '1'}{host[1:]}-")
    for name in ("model", ".model-abc12345", ".model-stage-12-zzzzzzzz-abc", other_host):
        assert atomic.owner_pid(tmp_path / name) is None, name


WRITE_UNDER_A_SIZE_LIMIT = """
import json, sys
from pathlib import Path
from xlang import atomic

folder, file = Path(sys.argv[1]), Path(sys.argv[2])
named = []
for write in (
    lambda: atomic.write_folder_atomically(folder, lambda staging: (staging / "weights.bin").write_bytes(bytes(4096))),
    lambda: atomic.write_file_atomically(file, bytes(4096)),
):
    try:
        write()
    except OSError as error:
        named.append(error.filename)
print(json.dumps(named))
"""


def test_a_write_that_hits_the_size_limit_names_the_destination_and_leaves_nothing(tmp_path: Path) -> None:
    """A real EFBIG (a 1 KiB file-size limit in a child process, SIGXFSZ ignored): the OS names no file, so the
    error names the folder or file the caller asked for, the one a user would recognise."""
    folder, file = tmp_path / "model", tmp_path / "record.json"
    child = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_A_SIZE_LIMIT, str(folder), str(file)],
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size(1024),
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == [str(folder), str(file)]
    assert list(tmp_path.iterdir()) == []
