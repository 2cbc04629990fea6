"""Folders that appear whole or not at all: write into a hidden sibling, then swap it into place.

Models, converted assets and stage outputs all use this, so a killed process never leaves a folder that
a later run would mistake for a finished one.

A staging folder is named `.NAME-stage-PID-HOST-RANDOM` (HOST: a short hash of the host name, so that a
folder shared between machines is never judged by another machine's process table). A process killed
with SIGKILL cannot clean up, so the next build in the same parent folder removes the staging folders
of this host whose process is gone; a live process's folder is never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.error import URLError

_OWNED = re.compile(r"^\..+?(?:-stage|-tmp|\.old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[A-Za-z0-9_]+(?:\.tmp)?$")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def owned_prefix(name: str, kind: str = "-stage") -> str:
    """`.NAME-stage-PID-HOST-` (kind `-stage`, `-tmp` or `.old`): the start of a temporary entry's name
    that says which process owns it."""
    return f".{name}{kind}-{os.getpid()}-{_host_tag()}-"


def make_staging(parent: Path, name: str) -> Path:
    """A new, empty staging folder for `name` in `parent`, named with this process's pid."""
    return Path(tempfile.mkdtemp(dir=parent, prefix=owned_prefix(name)))


def owner_pid(entry: Path) -> int | None:
    """The pid in a temporary entry's name, when it is one of ours made on this host; otherwise None."""
    match = _OWNED.match(entry.name)
    if match is None or match["host"] != _host_tag():
        return None
    return int(match["pid"])


def is_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_staging(parent: Path) -> list[Path]:
    """Remove the staging and retired entries in `parent` whose owning process is dead; return them."""
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        pid = owner_pid(entry)
        if pid is None or pid == os.getpid() or is_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def naming_destination(path: Path) -> Iterator[None]:
    """A write that fails on a full disk or a file-size limit raises an OSError that names no file (the
    temporary one is all the OS knows); name the destination the user chose, so the message says where."""
    try:
        yield
    except OSError as error:
        name_destination(error, path)
        raise


def name_destination(error: OSError, path: Path) -> None:
    """Set `path` as the file an OSError is about when the OS named none (see `naming_destination`)."""
    if error.filename is None and error.errno is not None:
        error.filename = str(path)


def write_all(out: BinaryIO, data: bytes, destination: Path) -> None:
    """Write all of `data` to the unbuffered file `out` (which may take part of it per call), naming
    `destination` if the disk refuses. Unbuffered, so no write is left for close(), where it would fail
    without a name."""
    with naming_destination(destination):
        view = memoryview(data)
        while view:
            view = view[out.write(view) :]


def failed_on_disk(error: BaseException) -> bool:
    """Whether a download failed writing its file (`write_all` named it) rather than reading the network,
    whose errors name no file: the message must then say the disk, not the network."""
    return isinstance(error, OSError) and not isinstance(error, URLError) and error.filename is not None


def write_folder_atomically(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(staging)`` on a temporary sibling folder, then move it to ``out_dir`` in one step.

    A crash or an error leaves ``out_dir`` as it was (absent or the previous result), never half-written;
    what a killed process left in the same parent folder is removed first.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(out_dir.parent)
    staging = make_staging(out_dir.parent, out_dir.name)
    try:
        with naming_destination(out_dir):
            write(staging)
            move_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished folder ``staging`` (a sibling of ``out_dir``) to ``out_dir``.

    A previous ``out_dir`` is renamed away first and deleted after, so the path always holds a whole
    folder. When another process installed its own copy in between, that copy stays and ours goes.
    """
    staging, out_dir = Path(staging), Path(out_dir)
    retired = None
    if out_dir.exists():
        # named like the corpus build's other temporary folders, so its clean-up of killed builds
        # (`.{name}.*`) also removes one left behind by a kill between the two renames
        retired = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=owned_prefix(out_dir.name, ".old")))
        os.replace(out_dir, retired / out_dir.name)
    try:
        os.replace(staging, out_dir)
    except OSError:
        if not out_dir.exists():
            if retired is not None:  # put the previous folder back rather than leave nothing
                os.replace(retired / out_dir.name, out_dir)
            raise
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


def write_file_atomically(path: Path, data: str | bytes) -> Path:
    """Write `data` (text is UTF-8) to a temporary sibling of `path`, then rename it over `path`.

    A full disk or any other error removes the temporary file and leaves `path` as it was; a killed
    process's temporary file carries its pid, so `remove_dead_staging` sweeps it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=owned_prefix(path.name, "-tmp"), suffix=".tmp")
    try:
        with naming_destination(path), os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
