"""Folders that appear whole or not at all (`xlang/atomic.py`), on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
