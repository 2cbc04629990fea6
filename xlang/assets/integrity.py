"""Cache entries that say what they hold: the size and sha256 of each file, checked when the entry is opened.

An entry is a folder (a converted model, a built corpus, the files extracted from one wheel or package)
whose record is `xlang-entry.json` inside it, or a single file (a downloaded wheel) whose record is the
sibling `NAME.xlang-entry.json`. Opening an entry compares sizes always (a `stat` per file) and hashes a
file only when its modification time differs from the record, so reusing an entry costs milliseconds
while a truncated, replaced or edited file is caught on its first use after the change. `xlang assets
verify` hashes everything.

An entry written before records existed is adopted on first use: its files are hashed once and recorded,
after a structural check of the formats that carry their own length (a safetensors header, JSON).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from xlang.atomic import write_file_atomically

RECORD = "xlang-entry.json"
RECORD_SUFFIX = "." + RECORD
_FORMAT = 1
_BLOCK = 1 << 20


def record_path(entry: Path) -> Path:
    """Where the record of `entry` lives: inside a folder, next to a file."""
    entry = Path(entry)
    return entry / RECORD if entry.is_dir() else entry.with_name(entry.name + RECORD_SUFFIX)


def _members(entry: Path) -> list[Path]:
    """The files an entry holds: every file under a folder except records and hidden temporary files."""
    if entry.is_file():
        return [entry]
    return sorted(
        path
        for path in entry.rglob("*")
        if path.is_file()
        and path.name != RECORD
        and not path.name.endswith(RECORD_SUFFIX)
        and not any(part.startswith(".") for part in path.relative_to(entry).parts)
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _name(entry: Path, path: Path) -> str:
    return path.name if path == entry else path.relative_to(entry).as_posix()


def record_entry(entry: Path) -> Path:
    """Hash every file of `entry` and write its record (atomically); call it when the entry is complete."""
    entry = Path(entry)
    files = {}
    for path in _members(entry):
        status = path.stat()
        files[_name(entry, path)] = {"size": status.st_size, "sha256": sha256_of(path), "mtime_ns": status.st_mtime_ns}
    record = {"format": _FORMAT, "files": files}
    return write_file_atomically(record_path(entry), json.dumps(record, indent=1, sort_keys=True) + "\n")


def _read_record(entry: Path) -> dict | None:
    try:
        record = json.loads(record_path(entry).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return None
    return record


def check_entry(entry: Path, *, full: bool = False, adopt: bool = True) -> str | None:
    """None when `entry` holds what its record says; otherwise what is wrong, e.g. `file model.safetensors:
    size differs (1024 bytes, recorded 538090408)`.

    Sizes are compared always; a file is hashed when `full` or when its modification time differs from the
    record (a file that hashes the same gets its new time recorded, so the next check is cheap again). An
    entry without a record is checked for structure and, when `adopt`, recorded as it is."""
    entry = Path(entry)
    if not entry.exists():
        return "it is missing"
    record = _read_record(entry)
    if record is None:
        for path in _members(entry):
            problem = structure_problem(path)
            if problem:
                return f"file {_name(entry, path)}: {problem}"
        if not _members(entry):
            return "it holds no file"
        if adopt:
            try:
                record_entry(entry)
            except OSError:  # a read-only cache is still usable; it is checked again next time
                pass
        return None
    touched = False
    for name, expected in sorted(record["files"].items()):
        path = entry if entry.is_file() else entry / name
        try:
            status = path.stat()
        except OSError:
            return f"file {name} is missing"
        if status.st_size != expected.get("size"):
            return f"file {name}: size differs ({status.st_size} bytes, recorded {expected.get('size')})"
        if full or status.st_mtime_ns != expected.get("mtime_ns"):
            if sha256_of(path) != expected.get("sha256"):
                return f"file {name}: content differs from its recorded sha256"
            if status.st_mtime_ns != expected.get("mtime_ns"):
                expected["mtime_ns"] = status.st_mtime_ns
                touched = True
    if touched:
        try:
            write_file_atomically(record_path(entry), json.dumps(record, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass
    return None


def structure_problem(path: Path) -> str | None:
    """What is wrong with a file whose format says how long it is (safetensors, JSON), without a record."""
    try:
        if path.suffix == ".safetensors":
            size = path.stat().st_size
            with path.open("rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    return "truncated (no safetensors header)"
                (header_length,) = struct.unpack("<Q", head)
                if header_length > size - 8:
                    return "truncated (its safetensors header is cut off)"
                header = json.loads(handle.read(header_length))
            ends = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
            if 8 + header_length + max(ends, default=0) != size:
                return f"truncated ({size} bytes, its safetensors header describes {8 + header_length + max(ends)})"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, IndexError) as error:
        return f"malformed ({type(error).__name__})"
    return None


def reuse_entry(entry: Path) -> bool:
    """True when `entry` is there and sound; False when it must be built (again): a damaged entry gets a
    one-line note on stderr and is removed, so the caller rebuilds it in place."""
    entry = Path(entry)
    if not entry.exists():
        return False
    problem = check_entry(entry)
    if problem is None:
        return True
    print(f"note: cache entry {entry} was damaged ({problem}); rebuilding", file=sys.stderr, flush=True)
    remove_entry(entry)
    return False


def remove_entry(entry: Path) -> None:
    """Delete an entry and its record."""
    entry = Path(entry)
    record = record_path(entry)
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
    record.unlink(missing_ok=True)


@dataclass(frozen=True)
class EntryState:
    """One cache entry as `xlang assets verify` reports it."""

    path: Path
    kind: str
    size: int
    problem: str | None
    repaired: bool = False

    @property
    def state(self) -> str:
        if self.problem is None:
            return "ok"
        return "removed (rebuilt on next use)" if self.repaired else "damaged"


ENTRY_KINDS: dict[str, str] = {
    "models": "converted model",
    "corpora": "built corpus",
    "wheel-files": "files from a wheel",
    "debian-files": "files from a Debian package",
    "wheels": "downloaded wheel",
    "sdists": "downloaded source distribution",
}
"""Cache folders whose children are entries (a folder each, or a `.whl` file under `wheels`)."""


def cache_entries(cache_dir: Path) -> list[tuple[str, Path]]:
    """(kind, path) of every entry in the cache, hidden temporary folders left out."""
    found = []
    for folder, kind in ENTRY_KINDS.items():
        parent = Path(cache_dir) / folder
        if not parent.is_dir():
            continue
        for child in sorted(parent.iterdir()):
            if child.name.startswith(".") or child.name.endswith(RECORD_SUFFIX):
                continue
            if folder == "sdists" and not child.name.endswith(".tar.gz"):
                continue
            if folder == "wheels" and child.suffix != ".whl":
                continue
            found.append((kind, child))
    return found


def verify_cache(cache_dir: Path, *, repair: bool = False) -> list[EntryState]:
    """Every entry hashed against its record (one without a record is checked for structure and recorded);
    with `repair`, damaged entries are removed so the next use rebuilds them."""
    states = []
    for kind, path in cache_entries(cache_dir):
        problem = check_entry(path, full=True)
        size = sum(member.stat().st_size for member in _members(path)) if path.exists() else 0
        if problem is not None and repair:
            remove_entry(path)
        states.append(EntryState(path, kind, size, problem, repaired=problem is not None and repair))
    return states
