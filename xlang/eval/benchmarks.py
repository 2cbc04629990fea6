"""Benchmarks in their published formats, loaded into plain items that evaluators score.

Three formats, each also read from the Hugging Face hub (`hf://OWNER/NAME?config=C&split=S`):

- `llava-bench`: LLaVA-Bench (in-the-wild) and K-LLaVA-W. The published folder holds `questions.jsonl`
  (`question_id`, `image`, `text`, `category`), `answers_gpt4.jsonl` (`question_id`, `text`: the reference),
  `images/` and optionally `context.jsonl` (`image`, `caption`). A single JSONL with
  `question_id, image, text, category, answer` is read too.
- `mmbench-tsv`: MMBench's TSV (`index, question, hint, A..D, answer, category, image, ...`), also MMBench-CN,
  K-MMBench and CCBench. `image` holds base64 image data, the `index` of another row (as the published files do
  to avoid repeating an image), or a reference: `skimage:NAME`, `sklearn:FILE` or a path relative to the TSV.
- `short-answer`: JSONL with `question_id, image, question, answers` (several accepted answers, VQAv2-style;
  `answer` with one string is read too).

Every problem a file can have (a missing column, a row that is not JSON, bad base64, a missing image file, a
duplicate id, an answer letter that is not an option, no rows at all) raises `XlangError` with one line naming
the file and the row, so that the user can open the file at that line. Rows count as lines of the file (a TSV
header is row 1), or as record numbers for hub datasets.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from xlang.errors import XlangError
from xlang.vlm.images import BUILTIN_SCHEMES

FORMATS: tuple[str, ...] = ("llava-bench", "mmbench-tsv", "short-answer")
OPTION_LETTERS: tuple[str, ...] = tuple("ABCDEFGH")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_MISSING_VALUES = frozenset({"", "nan", "none", "null"})  # pandas writes a missing cell as `nan` in some exports
_INDEX_REFERENCE_MAX = 64  # MMBench points at another row's image with that row's index, never longer than this

ImageRef = str | bytes | None
"""An image reference for `xlang.vlm.images.load_image` (relative to the benchmark file), image file bytes, or
None for a text-only question."""


@dataclass(frozen=True)
class OpenEndedItem:
    """A question with a free answer, judged against a reference answer (LLaVA-Bench)."""

    id: str
    image: ImageRef
    question: str
    reference: str
    category: str
    source: str
    row: int
    context: str | None = None
    """A description of the image for a text-only judge (LLaVA-Bench's `context.jsonl` caption)."""


@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice question (MMBench): `options` holds (letter, text) for the non-empty option columns."""

    id: str
    image: ImageRef
    question: str
    hint: str
    options: tuple[tuple[str, str], ...]
    answer: str
    category: str
    source: str
    row: int


@dataclass(frozen=True)
class ShortAnswerItem:
    """A question with a few accepted short answers, scored by normalized exact match (VQAv2-style)."""

    id: str
    image: ImageRef
    question: str
    answers: tuple[str, ...]
    source: str
    row: int


Item = OpenEndedItem | ChoiceItem | ShortAnswerItem


def item_image(item: Item, base_dir: Path | None = None) -> Any:
    """The item's image as an RGB PIL image, or None for a text-only question.

    A path reference resolves against `base_dir`, by default the folder of the file the item came from.
    """
    from xlang.vlm.images import load_image

    if item.image is None:
        return None
    if isinstance(item.image, bytes):
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(item.image))
            image.load()
        except Exception as error:  # PIL raises several types for damaged data
            raise XlangError(f"{item.source} row {item.row}: the image data cannot be decoded ({error})") from error
        return load_image(image)
    if base_dir is None and not _is_hub(item.source):
        base_dir = Path(item.source).parent
    return load_image(item.image, base_dir)


def detect_format(path: str | Path) -> str:
    """The format of a local benchmark file or folder, from its layout and first row."""
    path = Path(_local_path(str(path)))
    if path.is_dir():
        if (path / "questions.jsonl").is_file():
            return "llava-bench"
        raise XlangError(f"{path}: a benchmark folder needs questions.jsonl (the LLaVA-Bench layout)")
    if not path.is_file():
        raise XlangError(f"{path}: no such benchmark file or folder")
    if path.suffix.lower() == ".tsv":
        return "mmbench-tsv"
    if path.suffix.lower() in (".jsonl", ".json"):
        for row, record in _jsonl_records(path, str(path)):
            if "question" in record or "answers" in record:
                return "short-answer"
            if "text" in record:
                return "llava-bench"
            raise XlangError(
                f"{path} row {row}: neither `question`/`answers` (short-answer) nor `text`/`answer` (llava-bench)"
                " keys; name the format"
            )
        raise XlangError(f"{path}: the file holds no rows")
    raise XlangError(f"{path}: cannot tell the benchmark format from the name; name it ({', '.join(FORMATS)})")


def load_benchmark(path_or_uri: str | Path, format: str | None = None) -> list[Item]:
    """Every item of a benchmark, checked: a local file or folder, `file://PATH` or `hf://NAME?config=&split=`.

    `format` is one of FORMATS; None detects it (from the layout for local files, the columns for the hub).
    """
    if format is not None and format not in FORMATS:
        raise XlangError(f"benchmark format {format!r} is unknown; use one of {', '.join(FORMATS)}")
    text = str(path_or_uri)
    if _is_hub(text):
        return _load_hub(text, format)
    path = Path(_local_path(text))
    format = format or detect_format(path)
    if format == "llava-bench":
        items: list[Item] = list(_load_llava_bench(path))
    elif format == "mmbench-tsv":
        if not path.is_file():
            raise XlangError(f"{path}: no such TSV file")
        items = list(_choice_items(*_tsv_records(path, str(path)), source=str(path), base_dir=path.parent))
    else:
        if not path.is_file():
            raise XlangError(f"{path}: no such JSONL file")
        items = list(_short_answer_items(_jsonl_records(path, str(path)), source=str(path), base_dir=path.parent))
    if not items:
        raise XlangError(f"{path}: the benchmark holds no items; check the file (format {format})")
    _refuse_duplicates(items)
    return items


# --- reading rows --------------------------------------------------------------------------------------------


def _is_hub(text: str) -> bool:
    return text.startswith("hf://")


def _local_path(text: str) -> str:
    return text.removeprefix("file://")


def _fail(source: str, row: int, message: str) -> XlangError:
    return XlangError(f"{source} row {row}: {message}")


def _jsonl_records(path: Path, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise XlangError(f"{source}: cannot be read ({error.strerror})") from error
    with handle:
        try:
            for row, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise _fail(
                        source, row, f"not valid JSON ({error.msg} at column {error.colno}); fix the line"
                    ) from error
                if not isinstance(record, dict):
                    raise _fail(source, row, f"expected a JSON object, found {type(record).__name__}")
                yield row, record
        except UnicodeDecodeError as error:
            raise XlangError(f"{source}: not UTF-8 text ({error.reason}); save it as UTF-8") from error


def _tsv_records(path: Path, source: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The header and (first line of the record, record) for each row; quoted cells may span lines."""
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default cell limit
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            if header is None:
                raise XlangError(f"{source}: the file is empty; an MMBench TSV starts with a header row")
            header = [name.strip().lstrip("\ufeff") for name in header]
            records = []
            start = reader.line_num + 1
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    if len(cells) != len(header):
                        raise _fail(
                            source, start, f"{len(cells)} cells where the header has {len(header)}; check the tabs"
                        )
                    records.append((start, dict(zip(header, cells, strict=True))))
                start = reader.line_num + 1
    except csv.Error as error:
        raise XlangError(f"{source}: not a readable TSV ({error})") from error
    except UnicodeDecodeError as error:
        raise XlangError(f"{source}: not UTF-8 text ({error.reason}); save it as UTF-8") from error
    except OSError as error:
        raise XlangError(f"{source}: cannot be read ({error.strerror})") from error
    finally:
        csv.field_size_limit(limit)
    return header, records


def _load_hub(uri: str, format: str | None) -> list[Item]:
    """Rows of a hub dataset (`hf://OWNER/NAME?config=C&split=S`), images kept as their file bytes."""
    parts = urlsplit(uri)
    name = (parts.netloc + parts.path).strip("/") if parts.netloc else parts.path
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"config", "split", "revision"}
    if not name or unknown:
        raise XlangError(f"{uri}: write hub benchmarks as hf://OWNER/NAME?config=CONFIG&split=SPLIT")
    try:
        import datasets

        loaded = datasets.load_dataset(
            name, query.get("config"), split=query.get("split"), revision=query.get("revision")
        )
    except Exception as error:  # datasets raises many types for a missing dataset, config or split
        raise XlangError(f"{uri}: cannot load the dataset ({type(error).__name__}: {error})".splitlines()[0]) from error
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise XlangError(f"{uri}: the dataset has splits {', '.join(loaded)}; add &split=NAME")
        loaded = next(iter(loaded.values()))
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.Image):
            loaded = loaded.cast_column(column, datasets.Image(decode=False))
    columns = list(loaded.column_names)
    format = format or _format_from_columns(columns, uri)
    records = [(row, _hub_record(record, format)) for row, record in enumerate(loaded, start=1)]
    if format == "llava-bench":
        items: list[Item] = list(_open_ended_items(records, uri, None, answers=None, contexts={}))
    elif format == "mmbench-tsv":
        items = list(_choice_items(columns, records, source=uri, base_dir=None))
    else:
        items = list(_short_answer_items(records, source=uri, base_dir=None))
    if not items:
        raise XlangError(f"{uri}: the dataset holds no items")
    _refuse_duplicates(items)
    return items


# the hub's LLaVA-Bench copies (lmms-lab/llava-bench-in-the-wild) name the columns differently
_HUB_OPEN_ENDED_COLUMNS = {"question": "text", "gpt_answer": "answer", "caption": "context"}


def _hub_record(record: dict[str, Any], format: str) -> dict[str, Any]:
    image = record.get("image")
    if isinstance(image, dict) and image.get("bytes"):
        record = {**record, "image": image["bytes"]}
    if format == "llava-bench":
        for hub_name, name in _HUB_OPEN_ENDED_COLUMNS.items():
            if hub_name in record and name not in record:
                record[name] = record.pop(hub_name)
    return record


def _format_from_columns(columns: list[str], source: str) -> str:
    if {"A", "B", "answer"} <= set(columns):
        return "mmbench-tsv"
    if "question" in columns and ("answers" in columns or "answer" in columns):
        return "short-answer"
    if {"text", "answer"} <= set(columns) or {"question", "gpt_answer"} <= set(columns):
        return "llava-bench"
    raise XlangError(f"{source}: cannot tell the format from columns {', '.join(columns)}; name the format")


# --- building items ------------------------------------------------------------------------------------------


def _required(record: dict[str, Any], key: str, source: str, row: int, fix: str = "") -> Any:
    if key not in record:
        raise _fail(source, row, f"column {key!r} is missing{'; ' + fix if fix else ''}")
    return record[key]


def _text(record: dict[str, Any], key: str, source: str, row: int, fix: str = "") -> str:
    value = _required(record, key, source, row, fix)
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, row, f"column {key!r} must be non-empty text, found {_show(value)}")
    return value.strip()


def _identifier(record: dict[str, Any], key: str, source: str, row: int) -> str:
    value = _required(record, key, source, row)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise _fail(source, row, f"column {key!r} must be a number or text, found {_show(value)}")
    return str(value).strip()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path_image(value: str, source: str, row: int, base_dir: Path | None) -> str:
    """A file path or package reference, checked to exist (package references are checked when loaded)."""
    scheme, sep, _ = value.partition(":")
    if sep and scheme in BUILTIN_SCHEMES:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise _fail(source, row, f"image file {path} does not exist; fix the path (relative to the benchmark file)")
    return value


def _json_image(record: dict[str, Any], source: str, row: int, base_dir: Path | None) -> ImageRef:
    value = _required(record, "image", source, row, "use null for a question without an image")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise _fail(source, row, f"column 'image' must be a file name or reference, found {_show(value)}")
    return _path_image(value.strip(), source, row, base_dir)


def _open_ended_items(
    records: Iterable[tuple[int, dict[str, Any]]],
    source: str,
    base_dir: Path | None,
    answers: dict[str, str] | None,
    contexts: dict[str, str],
) -> Iterator[OpenEndedItem]:
    """Items from question rows; `answers` maps question ids to references (the folder layout) or is None
    when each row carries its own `answer`."""
    for row, record in records:
        item_id = _identifier(record, "question_id", source, row)
        if answers is None:
            reference = _text(record, "answer", source, row)
        elif item_id in answers:
            reference = answers[item_id]
        else:
            raise _fail(source, row, f"question_id {item_id} has no reference answer in the answers file")
        image = record.get("image")
        if answers is not None and isinstance(image, str) and image.strip() and base_dir is not None:
            if (base_dir / "images" / image.strip()).is_file():  # the published layout keeps images in images/
                image = f"images/{image.strip()}"
            record = {**record, "image": image}
        context = record.get("context") or (contexts.get(image.rsplit("/", 1)[-1]) if isinstance(image, str) else None)
        category = record.get("category") or ""
        yield OpenEndedItem(
            id=item_id,
            image=_json_image(record, source, row, base_dir),
            question=_text(record, "text", source, row),
            reference=reference,
            category=str(category),
            source=source,
            row=row,
            context=str(context) if context else None,
        )


def _load_llava_bench(path: Path) -> Iterator[OpenEndedItem]:
    if path.is_file():
        yield from _open_ended_items(_jsonl_records(path, str(path)), str(path), path.parent, None, {})
        return
    if not path.is_dir():
        raise XlangError(f"{path}: no such LLaVA-Bench folder or JSONL file")
    questions = path / "questions.jsonl"
    if not questions.is_file():
        raise XlangError(f"{path}: the folder has no questions.jsonl (the LLaVA-Bench layout)")
    candidates = [path / "answers_gpt4.jsonl"] if (path / "answers_gpt4.jsonl").is_file() else []
    candidates = candidates or sorted(path.glob("answers*.jsonl"))
    if len(candidates) != 1:
        raise XlangError(f"{path}: expected one reference answers file (answers_gpt4.jsonl), found {len(candidates)}")
    answers: dict[str, str] = {}
    answer_source = str(candidates[0])
    for row, record in _jsonl_records(candidates[0], answer_source):
        question_id = _identifier(record, "question_id", answer_source, row)
        if question_id in answers:
            raise _fail(answer_source, row, f"question_id {question_id} has a second reference answer")
        answers[question_id] = _text(record, "text", answer_source, row)
    contexts: dict[str, str] = {}
    if (path / "context.jsonl").is_file():
        context_source = str(path / "context.jsonl")
        for row, record in _jsonl_records(path / "context.jsonl", context_source):
            image = _text(record, "image", context_source, row)
            contexts[image.rsplit("/", 1)[-1]] = _text(record, "caption", context_source, row)
    yield from _open_ended_items(_jsonl_records(questions, str(questions)), str(questions), path, answers, contexts)


def _cell(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):  # NaN from a hub dataset
        return ""
    text = str(value).strip()
    return "" if text.casefold() in _MISSING_VALUES else text


def _tsv_image(value: Any, source: str, row: int, base_dir: Path | None, images_by_index: dict[str, Any]) -> ImageRef:
    """Image bytes or a checked reference from an MMBench `image` cell."""
    if isinstance(value, bytes):
        return value
    text = "" if value is None else str(value).strip()
    if text.casefold() in _MISSING_VALUES:
        return None
    scheme, sep, _ = text.partition(":")
    if sep and scheme in BUILTIN_SCHEMES:
        return text
    if len(text) <= _INDEX_REFERENCE_MAX and text in images_by_index:
        target = images_by_index[text]
        target_text = target.strip() if isinstance(target, str) else ""
        if target_text != text and target_text not in images_by_index:  # one hop only: no chains, no loops
            return _tsv_image(target, source, row, base_dir, {})
    if Path(text).suffix.lower() in IMAGE_SUFFIXES or (
        base_dir is not None and len(text) < 1024 and (base_dir / text).is_file()
    ):
        return _path_image(text, source, row, base_dir)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise _fail(
            source, row, f"column 'image' is neither base64 image data nor an image file or reference ({error})"
        ) from error
    _check_image_bytes(data, source, row)
    return data


def _check_image_bytes(data: bytes, source: str, row: int) -> None:
    """Reads only the header: cheap, and catches base64 that decodes to something other than an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):
            pass
    except (UnidentifiedImageError, OSError) as error:
        raise _fail(source, row, "column 'image' decodes from base64 but is not an image file") from error


def _choice_items(
    columns: list[str], records: list[tuple[int, dict[str, Any]]], source: str, base_dir: Path | None
) -> Iterator[ChoiceItem]:
    for column in ("index", "question", "A", "B", "image"):
        if column not in columns:
            raise _fail(
                source, 1, f"column {column!r} is missing; an MMBench TSV has index, question, A, B, ..., image"
            )
    if "answer" not in columns:
        raise _fail(
            source, 1, "column 'answer' is missing: a test split without answers cannot be scored; use the dev split"
        )
    images_by_index = {_cell(record, "index"): record.get("image") for _, record in records}
    for row, record in records:
        item_id = _cell(record, "index")
        if not item_id:
            raise _fail(source, row, "column 'index' is empty; give each row a unique index")
        question = _cell(record, "question")
        if not question:
            raise _fail(source, row, "column 'question' is empty")
        options = tuple((letter, _cell(record, letter)) for letter in OPTION_LETTERS if _cell(record, letter))
        if len(options) < 2:
            raise _fail(source, row, "fewer than two options in columns A, B, ...; a choice needs two at least")
        answer = _cell(record, "answer").upper()
        if not answer:
            raise _fail(source, row, "column 'answer' is missing a value: an item without an answer cannot be scored")
        if answer not in dict(options):
            letters = ", ".join(letter for letter, _ in options)
            raise _fail(source, row, f"answer {answer!r} is not among the options {letters}; fix the answer column")
        yield ChoiceItem(
            id=item_id,
            image=_tsv_image(record.get("image"), source, row, base_dir, images_by_index),
            question=question,
            hint=_cell(record, "hint"),
            options=options,
            answer=answer,
            category=_cell(record, "category"),
            source=source,
            row=row,
        )


def _short_answer_items(
    records: Iterable[tuple[int, dict[str, Any]]], source: str, base_dir: Path | None
) -> Iterator[ShortAnswerItem]:
    for row, record in records:
        if "answers" in record:
            raw = record["answers"]
            raw = raw if isinstance(raw, list) else [raw]
        elif "answer" in record:
            raw = [record["answer"]]
        else:
            raise _fail(source, row, "column 'answers' is missing; give a list of accepted answers")
        answers = []
        for value in raw:
            if isinstance(value, dict):  # VQAv2 annotations: {"answer": ..., "answer_confidence": ...}
                value = value.get("answer")
            if not isinstance(value, str) or not value.strip():
                raise _fail(source, row, f"every answer must be non-empty text, found {_show(value)}")
            if value.strip() not in answers:
                answers.append(value.strip())
        if not answers:
            raise _fail(source, row, "column 'answers' is empty; give at least one accepted answer")
        yield ShortAnswerItem(
            id=_identifier(record, "question_id", source, row),
            image=_json_image(record, source, row, base_dir),
            question=_text(record, "question", source, row),
            answers=tuple(answers),
            source=source,
            row=row,
        )


def _refuse_duplicates(items: list[Item]) -> None:
    seen: dict[str, Item] = {}
    for item in items:
        if item.id in seen:
            first = seen[item.id]
            raise _fail(item.source, item.row, f"id {item.id} repeats row {first.row}; ids must be unique")
        seen[item.id] = item
