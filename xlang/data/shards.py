"""Stream a local corpus of many shard files (`*.parquet`, `*.jsonl`, `*.jsonl.gz`) without loading it.

Why: a corpus that does not fit in memory (a Wikipedia dump converted to parquet, a crawl split into
JSONL files) is read one row group or line block at a time through `datasets`' streaming builders, so
memory stays flat whatever the corpus size; one file is one shard, which lets training shuffle the
shard order per pass and checkpoint its position (`IterableDataset.state_dict()`: shard index plus
row offset) instead of replaying the stream on resume.

    from xlang.data.shards import stream_shards

    dataset = stream_shards("corpora/wiki/")           # a folder: every shard below it, sorted by path
    dataset = stream_shards("corpora/wiki/*.parquet")  # or a glob pattern, or one file
    dataset = stream_shards("corpora/wiki/", field="body", seed=0)  # seeded shard + buffer shuffle

The shard order is the sorted path order, so two machines see the same stream. `seed=` adds
`datasets`' own shuffle (shard order, then a `buffer_size` buffer); that buffer is not part of a
`state_dict()`, so a training run leaves `seed=None` and shuffles resumably itself
(`xlang.train.data.StreamingDocs`).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from xlang.errors import XlangError

SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")

SHARD_DIGEST = "xlang_shard_digest"
"""Attribute of the stream `stream_shards` returns: a digest of its shard files' names and sizes. A training
checkpoint stores it with the stream's position, so a resume after shards were added, removed, renamed or
resized stops instead of continuing at a position that now points at other text (a shard rewritten at the
same size is not noticed: hashing the contents would read the whole corpus)."""


def shard_digest(files: list[Path]) -> str:
    """sha256 of each shard's path below the shards' common folder and its size, in stream order."""
    import hashlib

    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _format_of(path: Path) -> str:
    return "parquet" if path.name.endswith(".parquet") else "json"


def shard_files(source: str | os.PathLike[str]) -> list[Path]:
    """The shard files a folder, glob pattern or single file names, in sorted path order."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    elif glob.has_magic(text):
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    elif path.is_file():
        candidates = [path]
    else:
        raise XlangError(f"shard source {text!r} is neither a folder, a glob pattern nor a file; check the path")
    files = sorted((p for p in candidates if p.name.endswith(SHARD_SUFFIXES)), key=lambda p: str(p))
    if not files:
        raise XlangError(f"no {', '.join(SHARD_SUFFIXES)} shards under {text!r}; point at the folder holding them")
    formats = {_format_of(p) for p in files}
    if len(formats) > 1:
        raise XlangError(
            f"{text!r} mixes parquet and JSONL shards; convert them to one format or point at one kind "
            "with a glob pattern (e.g. DIR/*.parquet)"
        )
    return files


def stream_shards(
    source: str | os.PathLike[str],
    field: str = "text",
    *,
    seed: int | None = None,
    buffer_size: int = 10_000,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """A `datasets.IterableDataset` with one `field` column over the shards of `source`, one shard per file.

    `seed` shuffles with `datasets` (shard order and a `buffer_size` buffer: not exactly resumable);
    `None` keeps the sorted order. Raises XlangError naming the source when a shard lacks `field`.
    """
    import datasets

    files = shard_files(source)
    kind = _format_of(files[0])
    options: dict[str, Any] = {"columns": [field]} if kind == "parquet" else {}
    if kind == "parquet":
        import pyarrow.parquet as pq

        columns = pq.read_schema(files[0]).names
        if field not in columns:
            raise XlangError(f"shard {files[0]} has no column {field!r} (it has {', '.join(columns)}); pass field=")
    dataset = datasets.load_dataset(
        kind,
        data_files={"train": [str(p) for p in files]},
        split="train",
        streaming=True,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        **options,
    )
    if dataset.features is not None:
        if field not in dataset.features:
            found = ", ".join(dataset.features) or "none"
            raise XlangError(f"shards under {str(source)!r} have no field {field!r} (they have {found}); pass field=")
        dataset = dataset.select_columns([field])
    if seed is not None:
        dataset = dataset.shuffle(seed=seed, buffer_size=buffer_size)
    setattr(dataset, SHARD_DIGEST, shard_digest(files))
    return dataset
