"""Folders that appear whole or not at all: write into a hidden sibling, then swap it into place.

Models, converted assets and stage outputs all use this, so a killed process never leaves a folder that
a later run would mistake for a finished one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_folder_atomically(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(staging)`` on a temporary sibling folder, then move it to ``out_dir`` in one step.

    A crash or an error leaves ``out_dir`` as it was (absent or the previous result), never half-written.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
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
        retired = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
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
