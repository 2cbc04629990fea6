"""The output file: append-only JSONL that a kill at any moment leaves whole, and the files beside it.

- `DATA.jsonl`: one record per line, each written with a single `os.write` of the whole line on a file
  opened with `O_APPEND`, so a killed run leaves only whole lines; fsynced every few records and at the end.
- `DATA.rejects.jsonl`: answers that failed validation and teacher failures, one line each (same rule).
- `DATA.jsonl.lock`: held (`flock`) by the run writing the file, with its pid inside. The kernel drops
  the lock when its process dies, so a killed run's lock is taken over by the next; a live one makes a
  second run on the same output stop with the pid.

On start the existing file is read: records whose key is there are not asked for again; a line that is
not a whole record stops the run with the file and line number, before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlang.errors import XlangError
from xlang.locks import ExclusiveLock, Holder


def rejects_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.rejects.jsonl")


def lock_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.lock")


def json_line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")


@dataclass
class ExistingOutput:
    """What an earlier run left: record keys, the records themselves (for translations' sources and
    near-duplicate checks) and what they cost."""

    keys: set[str] = field(default_factory=set)
    records: list[dict[str, Any]] = field(default_factory=list)
    spent_usd: float = 0.0


def iter_lines(path: Path, *, require_key: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL file written by `xlang data generate`; a line that is not a JSON
    object with `conversations` (and `key`, when required), or a last line without its newline, raises
    XlangError."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                raise XlangError(
                    f"{path}:{number} is cut off (no newline at the end of the file); fix or remove that line"
                )
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                detail = getattr(error, "msg", None) or "not UTF-8"
                raise XlangError(f"{path}:{number} is not valid JSON ({detail}); fix or remove that line") from None
            if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
                raise XlangError(f"{path}:{number} is not a LLaVA record (no 'conversations' list); fix or remove it")
            if require_key and not isinstance(record.get("key"), str):
                raise XlangError(
                    f"{path}:{number} has no 'key': the file was not written by xlang data generate; "
                    "choose another --out"
                )
            yield number, record


def read_existing(out: Path, cost_of: Callable[[dict[str, Any]], float]) -> ExistingOutput:
    """The records already in `out` (none when it does not exist) and the spend of records and rejects."""
    found = ExistingOutput()
    if out.exists():
        if not out.is_file():
            raise XlangError(f"--out {out} is not a file; choose a .jsonl path")
        for _, record in iter_lines(out):
            found.keys.add(record["key"])
            found.records.append(record)
            found.spent_usd += cost_of(record)
    for line in reject_lines(out):
        found.spent_usd += cost_of(line)
    return found


def reject_lines(out: Path) -> Iterator[dict[str, Any]]:
    """The rejects side file's entries; it is a log, so a line that does not parse is passed over."""
    yield from log_lines(rejects_path(out))


def log_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of an append-only log (none when the file is missing); a line that does not parse,
    such as the cut-off last line of a killed writer, is passed over."""
    if not path.is_file():
        return
    with path.open("rb") as handle:
        for raw in handle:
            try:
                line = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(line, dict):
                yield line


class OutputLock(ExclusiveLock):
    """An exclusive `flock` on `DATA.jsonl.lock`, with the holder's pid written inside."""

    def __init__(self, out: Path) -> None:
        super().__init__(lock_path(out), busy=_busy_message(out))

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self


def _busy_message(out: Path) -> Callable[[Holder], str]:
    def busy(holder: Holder) -> str:
        return (
            f"{out} is being written by another xlang data generate (pid {holder.pid}); wait for it to "
            "finish or choose another --out"
        )

    return busy


class AppendOnlyFile:
    """Whole lines appended with one `write` each; fsync every `fsync_every` lines and on close. The file
    is created on the first line, so a run that writes nothing leaves no file behind."""

    def __init__(self, path: Path, fsync_every: int) -> None:
        self.path = path
        self.fsync_every = fsync_every
        self._fd: int | None = None
        self._unsynced = 0
        self.lines = 0

    def append(self, payload: dict[str, Any]) -> None:
        data = json_line(payload)
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            written = os.write(self._fd, data)
        except OSError as error:
            raise XlangError(
                f"could not append to {self.path} ({error.strerror}); check the disk and permissions"
            ) from None
        if written != len(data):  # a full disk: take the partial line back rather than leave it
            os.ftruncate(self._fd, size)
            raise XlangError(f"could not append to {self.path} (wrote {written} of {len(data)} bytes); free disk space")
        self.lines += 1
        self._unsynced += 1
        if self._unsynced >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
