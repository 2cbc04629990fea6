"""What a run will ask for: the images (each verified and hashed up front), the task types, and one job
per image × language × task, keyed so that a rerun skips what is already written.

Images come from a folder (searched recursively, sorted by path) or from a `datasets` dataset (a folder
saved with `save_to_disk`, or a parquet / JSONL file) whose image column holds bytes or file paths; a
dataset's images are written once as PNG files beside the output, named by their hash. Nothing is
written while planning: a corrupt image stops the run before any request is sent.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlang.datagen.config import GenerateConfig
from xlang.errors import XlangError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
DATASET_FILE_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}
DATA_URL_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
"""Formats OpenAI-compatible endpoints take as they are; other images are sent re-encoded as PNG."""
NATIVE, TRANSLATED = "native", "translated"


@dataclass(frozen=True)
class PlannedImage:
    """One distinct image: its hash (of the bytes as found), where its file is, and how to send it."""

    sha256: str
    path: Path
    """The file the record points to: the original in a folder, the exported PNG for a dataset."""
    label: str
    """How messages name it (a path, or a dataset row)."""
    mime: str | None
    """The data-URL type when the file can be sent as it is; None: re-encode as PNG."""
    export_from: DatasetRow | None = None
    """For a dataset image: the row whose image is written as `path` (a PNG) before the run starts."""


@dataclass(frozen=True, eq=False)
class DatasetRow:
    """Where a dataset image is read from again when it is exported (rows are not held in memory)."""

    dataset: Any
    column: str
    index: int
    base: Path
    label: str

    def read(self) -> bytes:
        return _dataset_bytes(self.dataset[self.index][self.column], self.base, self.label)


@dataclass(frozen=True)
class Job:
    """One record to write: an image in one language and task, native or translated."""

    image: PlannedImage
    lang: str
    task: str
    origin: str
    source_lang: str | None = None

    @property
    def key(self) -> str:
        return record_key(self.image.sha256, self.lang, self.task, self.origin, self.source_lang)

    @property
    def source_key(self) -> str | None:
        """The key of the native record a translation is made from."""
        if self.source_lang is None:
            return None
        return record_key(self.image.sha256, self.source_lang, self.task, NATIVE, None)


def record_key(sha256: str, lang: str, task: str, origin: str, source_lang: str | None) -> str:
    """The idempotency key of a record: image, language, task and origin (with its source language for a
    translation); readable, and the same in every run."""
    tail = f"{origin}-from-{source_lang}" if source_lang else origin
    return f"{sha256[:16]}-{lang}-{task}-{tail}"


# --- images -----------------------------------------------------------------------------------------------


def _verify(data: bytes, label: str) -> str | None:
    """Decode the whole image (truncated files fail here, not mid-run); its data-URL type or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return DATA_URL_MIME.get(image.format or "")
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for damaged files
        raise XlangError(
            f"image {label} cannot be decoded ({type(error).__name__}: {error}); remove or replace it"
        ) from None


def _is_dataset_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json"))


def plan_images(config: GenerateConfig) -> list[PlannedImage]:
    """Every distinct image of `config.images`, verified, in a stable order (the first `max_images`)."""
    source = Path(config.images).expanduser()
    if not source.exists():
        raise XlangError(f"--images {source} does not exist; pass a folder of images or a dataset")
    if _is_dataset_folder(source) or (source.is_file() and source.suffix.lower() in DATASET_FILE_SUFFIXES):
        images = _dataset_images(source, config)
    elif source.is_dir():
        images = _folder_images(source, config.max_images)
    else:
        raise XlangError(
            f"--images {source} is neither a folder nor a dataset file ({', '.join(DATASET_FILE_SUFFIXES)})"
        )
    if not images:
        raise XlangError(
            f"no images found in {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); check --images"
        )
    return images


def _folder_images(folder: Path, limit: int | None) -> list[PlannedImage]:
    files = sorted(
        (path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()),
        key=lambda path: path.relative_to(folder).as_posix(),
    )
    found: dict[str, PlannedImage] = {}
    for path in files:
        data = path.read_bytes()
        mime = _verify(data, str(path))
        sha = hashlib.sha256(data).hexdigest()
        found.setdefault(sha, PlannedImage(sha, path.absolute(), str(path), mime))
        if limit is not None and len(found) >= limit:
            break
    return list(found.values())


def _load_dataset(source: Path) -> Any:
    import datasets

    try:
        if source.is_dir():
            loaded = datasets.load_from_disk(str(source))
        else:
            kind = DATASET_FILE_SUFFIXES[source.suffix.lower()]
            loaded = datasets.load_dataset(kind, data_files=str(source), split="train")
    except Exception as error:  # datasets raises many types for a broken folder or file
        raise XlangError(f"dataset {source} cannot be read ({type(error).__name__}: {error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            return loaded["train"]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise XlangError(f"dataset {source} has splits {', '.join(loaded)} and no 'train'; save one split")
    return loaded


def _dataset_images(source: Path, config: GenerateConfig) -> list[PlannedImage]:
    import datasets

    dataset = _load_dataset(source)
    column = config.image_column
    if column not in dataset.column_names:
        raise XlangError(
            f"dataset {source} has no column {column!r} (its columns: {', '.join(dataset.column_names)}); "
            "set data.image_column"
        )
    if isinstance(dataset.features.get(column), datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    base = source if source.is_dir() else source.parent
    export_dir = images_dir(config.out)
    found: dict[str, PlannedImage] = {}
    for index, row in enumerate(dataset.select_columns([column])):
        label = f"{source} row {index} ({column})"
        data = _dataset_bytes(row[column], base, label)
        _verify(data, label)
        sha = hashlib.sha256(data).hexdigest()
        if sha not in found:
            origin = DatasetRow(dataset, column, index, base, label)
            found[sha] = PlannedImage(sha, (export_dir / f"{sha}.png").absolute(), label, "image/png", origin)
        if config.max_images is not None and len(found) >= config.max_images:
            break
    return list(found.values())


def _dataset_bytes(value: Any, base: Path, label: str) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise XlangError(f"image {label}: file {path} does not exist")
        return path.read_bytes()
    raise XlangError(f"image {label} is neither bytes nor a file path ({type(value).__name__})")


def images_dir(out: Path) -> Path:
    """`DATA.images/` beside `DATA.jsonl`: where a dataset's images are written."""
    out = Path(out)
    return out.with_name(f"{out.stem}.images")


def export_dataset_images(images: Iterable[PlannedImage]) -> int:
    """Write each dataset image once as a PNG (atomically); the number written now."""
    from PIL import Image

    written = 0
    for image in images:
        if image.export_from is None or image.path.is_file():
            continue
        image.path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(io.BytesIO(image.export_from.read())) as loaded:
            converted = loaded.convert("RGBA" if "A" in loaded.getbands() else "RGB")
        with tempfile.NamedTemporaryFile(dir=image.path.parent, suffix=".png", delete=False) as handle:
            converted.save(handle, format="PNG")
        os.replace(handle.name, image.path)
        written += 1
    return written


@functools.lru_cache(maxsize=64)
def image_payload(path: Path, mime: str | None) -> tuple[bytes, str]:
    """The bytes and type to send for an image file (re-encoded as PNG when its format cannot be sent)."""
    data = Path(path).read_bytes()
    if mime is not None:
        return data, mime
    from PIL import Image

    with Image.open(io.BytesIO(data)) as loaded:
        buffer = io.BytesIO()
        loaded.convert("RGBA" if "A" in loaded.getbands() else "RGB").save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def record_image_path(image: PlannedImage, out: Path) -> str:
    """The record's `image`: relative to the output file's folder (as LLaVA loaders resolve it)."""
    try:
        return Path(os.path.relpath(image.path, Path(out).absolute().parent)).as_posix()
    except ValueError:  # another drive
        return image.path.as_posix()


# --- tasks and jobs ---------------------------------------------------------------------------------------


def resolve_tasks(config: GenerateConfig, languages: Mapping[str, Any]) -> tuple[str, ...]:
    """The task names to write. Languages written natively must declare prompts and every task asked for;
    translated-to languages need prompts (for their translate instruction)."""
    for code in (*config.source_langs, *config.target_langs):
        spec = languages[code]
        if spec.prompts is None:
            raise XlangError(
                f"language {code!r} ({spec.name}) has no teacher prompts, so no data can be generated in it; "
                "add `prompts` to its LanguageSpec or drop it from --langs"
            )
    native = [languages[code] for code in config.source_langs]
    known = list(dict.fromkeys(name for spec in native for name in spec.prompts.tasks))
    if config.tasks == ("all",):
        tasks = tuple(known)
    else:
        unknown = [name for name in config.tasks if name not in known]
        if unknown:
            raise XlangError(
                f"unknown task {', '.join(repr(name) for name in unknown)}; the languages declare: {', '.join(known)} "
                "(or pass --tasks all)"
            )
        tasks = tuple(dict.fromkeys(config.tasks))
    for spec in native:
        missing = [name for name in tasks if name not in spec.prompts.tasks]
        if missing:
            raise XlangError(
                f"language {spec.code!r} ({spec.name}) has no task {', '.join(repr(n) for n in missing)} "
                f"(its tasks: {', '.join(spec.prompts.tasks)}); choose --tasks it declares"
            )
    return tasks


def plan_jobs(images: Sequence[PlannedImage], config: GenerateConfig, tasks: Sequence[str]) -> list[Job]:
    """Jobs in a stable order: per image and task, the native source record before its translations."""
    jobs = []
    for image in images:
        for task in tasks:
            for code in config.source_langs:
                jobs.append(Job(image, code, task, NATIVE))
            for code in config.target_langs:
                jobs.append(Job(image, code, task, TRANSLATED, source_lang=config.translate_from))
    return jobs
