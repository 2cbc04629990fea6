"""Build `debian://` corpora into the cache: download, verify, extract, split, write atomically.

URI form (the pin lives in the URI, so the core names no package and no language)::

    debian://EXTRACTOR?deb=POOL_PATH&sha256=HEX[&deb=POOL_PATH&sha256=HEX]&require=SCRIPT[&...]

- EXTRACTOR: `libreoffice-help` (one package: identified help paragraphs), `manpages` (one package,
  `manpath=` e.g. `zh_CN`: troff pages as paragraphs) or `libreoffice-help-parallel` (two help
  packages, source language first: paragraphs sharing page and element id become aligned pairs).
- POOL_PATH: path under the mirror (`pool/main/...deb`; a `+` may stay `+` or be written `%2B`), each
  followed by its SHA256.
- require: comma-separated Unicode script words (`hangul`, `cjk`: first words of letter names, see
  `extract.script_words`); a paragraph (the last language's side for parallel pairs) without a letter
  of those scripts is an untranslated fallback and dropped. Without it every script is kept.
- Optional: `min_chars` (default 2), `validation_chars` (48000), `max_share` (0.05), `seed` (xlang).

The options, their types and defaults are declared in `options.py`, which this parser reads and from
which xlang's docs/plugin-reference.md is generated (with an example of each option).

Output: `<cache_dir>/corpora/<name>/{train,validation}.jsonl` and `meta.json`, built in a temporary
folder and moved into place with one rename, so an interrupted build leaves no partial corpus.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlang.assets.integrity import record_entry, reuse_entry
from xlang.atomic import make_staging, move_into_place, remove_dead_staging
from xlang.data.splits import SPLITS, SplitRule, validation_documents
from xlang.errors import XlangError
from xlang_debian.archive import DebPin, FetchedDeb, PackageLookup, apt_resolve, deb_files, fetch_deb, query_values
from xlang_debian.extract import (
    has_script,
    help_page_key,
    help_paragraphs,
    man_page_text,
    man_paragraphs,
    script_counts,
    script_words,
)
from xlang_debian.options import CORPUS_OPTIONS, option_default
from xlang_debian.options import EXTRACTORS as EXTRACTOR_TABLE

FORMAT_VERSION = 2
"""Bumped whenever extraction or splitting changes, so cached corpora are rebuilt."""

EXTRACTORS: dict[str, int] = {extractor.name: extractor.packages for extractor in EXTRACTOR_TABLE}
"""Extractor name -> number of packages it reads (declared in `options.EXTRACTORS`)."""

_OPTIONS = frozenset(option.name for option in CORPUS_OPTIONS)

Record = dict[str, str]


@dataclass(frozen=True)
class DebianRequest:
    """A parsed `debian://` URI."""

    extractor: str
    pins: tuple[DebPin, ...]
    require: frozenset[str]
    manpath: str
    min_chars: int
    rule: SplitRule


def parse_debian_uri(uri: str) -> DebianRequest:
    """Check a `debian://` URI and say exactly what is wrong with it."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "debian":
        raise XlangError(f"{uri!r} is not a debian:// URI")
    extractor = parsed.netloc
    if extractor not in EXTRACTORS:
        raise XlangError(f"corpus URI {uri!r}: unknown extractor {extractor!r}; known: {', '.join(EXTRACTORS)}")
    query = query_values(parsed.query)
    unknown = sorted(set(query) - _OPTIONS)
    if unknown:
        raise XlangError(
            f"corpus URI {uri!r}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTIONS))}"
        )
    debs, hashes = query.get("deb", []), query.get("sha256", [])
    if len(debs) != EXTRACTORS[extractor] or len(hashes) != len(debs):
        raise XlangError(
            f"corpus URI {uri!r}: {extractor} reads {EXTRACTORS[extractor]} package(s), each given as "
            f"deb=POOL_PATH&sha256=HEX; found {len(debs)} deb and {len(hashes)} sha256"
        )
    for digest in hashes:
        if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise XlangError(f"corpus URI {uri!r}: sha256 {digest!r} is not 64 hex digits")
    manpath = (query.get("manpath") or [""])[-1]
    if extractor == "manpages" and not manpath:
        raise XlangError(f"corpus URI {uri!r}: manpages needs manpath= (the folder under usr/share/man, e.g. zh_CN)")

    def number(key: str, default: float, kind: type) -> float:
        raw = (query.get(key) or [None])[-1]
        if raw is None:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise XlangError(f"corpus URI {uri!r}: {key}={raw!r} is not a number") from None

    def declared(name: str, kind: type) -> float:
        return kind(option_default(CORPUS_OPTIONS, name))

    rule = SplitRule(
        seed=(query.get("seed") or [option_default(CORPUS_OPTIONS, "seed")])[-1],
        validation_chars=int(number("validation_chars", declared("validation_chars", int), int)),
        max_share=float(number("max_share", declared("max_share", float), float)),
    )
    min_chars = int(number("min_chars", declared("min_chars", int), int))
    if rule.validation_chars < 1 or not 0 < rule.max_share <= 1 or min_chars < 1:
        raise XlangError(
            f"corpus URI {uri!r}: validation_chars and min_chars must be at least 1 and max_share in (0, 1]"
        )
    require = frozenset(
        word.strip().upper() for value in query.get("require", []) for word in value.split(",") if word.strip()
    )
    unknown_scripts = sorted(require - script_words())
    if unknown_scripts:
        raise XlangError(
            f"corpus URI {uri!r}: require={','.join(unknown_scripts).lower()} names no script; a script word is "
            "the first word of the Unicode names of its letters (e.g. hangul, cjk, hiragana, katakana, thai, "
            "cyrillic, arabic, devanagari, greek, latin)"
        )
    return DebianRequest(
        extractor=extractor,
        pins=tuple(DebPin(pool, digest.lower()) for pool, digest in zip(debs, hashes, strict=True)),
        require=require,
        manpath=manpath,
        min_chars=min_chars,
        rule=rule,
    )


def _worth_keeping(text: str, min_chars: int) -> bool:
    """Long enough and with at least one letter: drops empty bookmarks, bare numbers and symbols."""
    visible = len(text) - text.count(" ")
    return visible >= min_chars and any(char.isalpha() for char in text)


def _help_pages(deb: FetchedDeb) -> dict[str, list[tuple[str, str]]]:
    """Page key -> [(element id, text)] of a LibreOffice help package."""
    pages: dict[str, list[tuple[str, str]]] = {}
    for path, content in deb_files(deb.path, lambda path: help_page_key(path) is not None):
        _, page = help_page_key(path)  # type: ignore[misc]
        pages[page] = help_paragraphs(content.decode("utf-8", errors="replace"))
    if not pages:
        raise XlangError(
            f"{deb.path.name} holds no LibreOffice help pages (usr/share/libreoffice/help/*/text/); check the deb= pin"
        )
    return pages


def _kept(texts: list[str], request: DebianRequest, dropped: dict[str, int]) -> list[Record]:
    """Records of the paragraphs worth keeping; counts the others by reason in `dropped`."""
    records = []
    for text in texts:
        if not _worth_keeping(text, request.min_chars):
            dropped["tiny"] += 1
        elif request.require and not has_script(text, request.require):
            dropped["untranslated"] += 1
        else:
            records.append({"text": text})
    return records


def _help_documents(deb: FetchedDeb, request: DebianRequest, dropped: dict[str, int]) -> dict[str, list[Record]]:
    pages = _help_pages(deb)
    documents = {page: _kept([text for _, text in pages[page]], request, dropped) for page in sorted(pages)}
    return {page: records for page, records in documents.items() if records}


def _man_documents(deb: FetchedDeb, request: DebianRequest, dropped: dict[str, int]) -> dict[str, list[Record]]:
    prefix = f"usr/share/man/{request.manpath}/"
    documents: dict[str, list[Record]] = {}
    found = 0
    for path, content in deb_files(deb.path, lambda path: path.startswith(prefix)):
        found += 1
        records = _kept(man_paragraphs(man_page_text(content, path)), request, dropped)
        if records:
            documents[path[len(prefix) :].removesuffix(".gz")] = records
    if not found:
        raise XlangError(f"{deb.path.name} has no man pages under {prefix}; check manpath= in the corpus URI")
    return dict(sorted(documents.items()))


def _by_occurrence(paragraphs: list[tuple[str, str]]) -> dict[tuple[str, int], str]:
    """Key paragraphs by (element id, occurrence): a page may repeat an id (embedded sections)."""
    seen: dict[str, int] = {}
    keyed = {}
    for element_id, text in paragraphs:
        seen[element_id] = seen.get(element_id, -1) + 1
        keyed[(element_id, seen[element_id])] = text
    return keyed


def _parallel_documents(
    debs: Sequence[FetchedDeb], request: DebianRequest, fields: tuple[str, str], dropped: dict[str, int]
) -> dict[str, list[Record]]:
    """Pairs of paragraphs with the same (page, element id, occurrence) in two help packages.

    A pair whose two sides are equal is an untranslated fallback, like a target side without the
    required script.
    """
    source_pages, target_pages = _help_pages(debs[0]), _help_pages(debs[1])
    documents: dict[str, list[Record]] = {}
    for page in sorted(set(source_pages) & set(target_pages)):
        source, target = _by_occurrence(source_pages[page]), _by_occurrence(target_pages[page])
        records = []
        for key, source_text in source.items():
            target_text = target.get(key)
            if target_text is None:
                continue
            if not (_worth_keeping(source_text, request.min_chars) and _worth_keeping(target_text, request.min_chars)):
                dropped["tiny"] += 1
            elif source_text == target_text or (request.require and not has_script(target_text, request.require)):
                dropped["untranslated"] += 1
            else:
                records.append({fields[0]: source_text, fields[1]: target_text})
        if records:
            documents[page] = records
    return documents


def _split_stats(records: list[Record], fields: Sequence[str], require: frozenset[str]) -> dict[str, object]:
    stats: dict[str, object] = {"records": len(records), "documents": len({r["doc"] for r in records})}
    for field in fields:
        values = [record[field] for record in records]
        scripts = script_counts(values)
        prefix = "" if fields == ("text",) else f"{field}_"
        stats[f"{prefix}chars"] = sum(map(len, values))
        stats[f"{prefix}target_chars"] = sum(scripts[script] for script in require)
        stats[f"{prefix}letters_by_script"] = dict(scripts.most_common(6))
    return stats


def _write_jsonl(path: Path, records: list[Record]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False))
            handle.write("\n")


def _current(folder: Path, uri: str, fields: Sequence[str]) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        meta.get("format") == FORMAT_VERSION
        and meta.get("uri") == uri
        and meta.get("fields") == list(fields)
        and all((folder / f"{split}.jsonl").exists() for split in SPLITS)
    )


def _clean_abandoned(corpora: Path, name: str, older_than_s: float = 3600) -> None:
    """Remove temporary folders that builds of earlier versions (named `.NAME.build.*`, without their pid)
    left when killed, once old enough not to be a live build; current builds' folders name their pid and
    are swept by `remove_dead_staging`."""
    for leftover in corpora.glob(f".{name}.build.*"):
        try:
            if time.time() - leftover.stat().st_mtime > older_than_s:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def build_debian_corpus(
    name: str,
    uri: str,
    cache_dir: Path,
    fields: tuple[str, str] | None = None,
    mirror: str | None = None,
    resolve: PackageLookup | None = apt_resolve,
) -> Path:
    """The built corpus folder for source `name`; builds it unless an up-to-date one is cached.

    `fields` names the two languages of a parallel source (its records get one field per language);
    `mirror` and `resolve` override the Debian mirror and the fallback for packages that left the pool.
    """
    request = parse_debian_uri(uri)
    parallel = request.extractor == "libreoffice-help-parallel"
    if parallel and (fields is None or len(fields) != 2):
        raise XlangError(f"corpus {name!r} ({uri}) is parallel: its CorpusSource needs parallel=(source, target) codes")
    record_fields: tuple[str, ...] = tuple(fields) if parallel and fields else ("text",)
    cache_dir = Path(cache_dir)
    corpora = cache_dir / "corpora"
    folder = corpora / name
    if _current(folder, uri, record_fields) and reuse_entry(folder):
        return folder

    debs = [fetch_deb(pin, cache_dir / "downloads", mirror=mirror, resolve=resolve) for pin in request.pins]
    started = time.perf_counter()
    dropped = {"tiny": 0, "untranslated": 0, "duplicate": 0}
    if parallel:
        documents = _parallel_documents(debs, request, (record_fields[0], record_fields[1]), dropped)
    elif request.extractor == "manpages":
        documents = _man_documents(debs[0], request, dropped)
    else:
        documents = _help_documents(debs[0], request, dropped)
    if not documents:
        raise XlangError(
            f"corpus {name!r} is empty after extraction ({dropped['tiny']} paragraphs too short, "
            f"{dropped['untranslated']} without the required script {', '.join(sorted(request.require))}); "
            f"check the packages and require= in {uri}"
        )

    sizes = {doc: sum(len(r[f]) for r in records for f in record_fields) for doc, records in documents.items()}
    held_out = validation_documents(sizes, request.rule)
    splits: dict[str, list[Record]] = {"validation": [], "train": []}
    held_texts: dict[str, set[str]] = {field: set() for field in record_fields}
    for doc in sorted(held_out):
        for record in documents[doc]:
            splits["validation"].append({**record, "doc": doc})
            for field in record_fields:
                held_texts[field].add(record[field])
    for doc in documents:
        if doc in held_out:
            continue
        for record in documents[doc]:
            if any(record[field] in held_texts[field] for field in record_fields):
                dropped["duplicate"] += 1  # the same text in validation: keep the two splits disjoint
                continue
            splits["train"].append({**record, "doc": doc})
    if not splits["train"] or not splits["validation"]:
        raise XlangError(f"corpus {name!r} is too small to split ({len(documents)} documents); check {uri}")

    corpora.mkdir(parents=True, exist_ok=True)
    _clean_abandoned(corpora, name)
    remove_dead_staging(corpora)
    building = make_staging(corpora, name)
    building.chmod(0o755)  # mkdtemp makes it private; a corpus cache is shared like any download
    try:
        for split in SPLITS:
            _write_jsonl(building / f"{split}.jsonl", splits[split])
        meta = {
            "format": FORMAT_VERSION,
            "name": name,
            "uri": uri,
            "extractor": request.extractor,
            "fields": list(record_fields),
            "packages": [deb.record() for deb in debs],
            "require_scripts": sorted(request.require),
            "min_chars": request.min_chars,
            "split": request.rule.as_dict(),
            "dropped": dropped,
            "splits": {split: _split_stats(splits[split], record_fields, request.require) for split in SPLITS},
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (building / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        record_entry(building)
        if _current(folder, uri, record_fields):  # another process finished the same build meanwhile
            shutil.rmtree(building, ignore_errors=True)
            return folder
        move_into_place(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder


def read_meta(folder: Path) -> dict[str, object]:
    return json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))


def load_debian_corpus(
    name: str,
    uri: str,
    split: str,
    cache_dir: Path,
    fields: tuple[str, str] | None = None,
    mirror: str | None = None,
    resolve: PackageLookup | None = apt_resolve,
) -> Any:
    """One split of a `debian://` corpus as a memory-mapped `datasets.Dataset`, building the corpus on
    first use (Arrow cache under `<cache_dir>/hf/datasets`, shared with xlang's other sources)."""
    if split not in SPLITS:
        raise XlangError(f"unknown split {split!r}; a debian:// corpus has {' and '.join(SPLITS)}")
    folder = build_debian_corpus(name, uri, Path(cache_dir), fields=fields, mirror=mirror, resolve=resolve)
    import datasets

    return datasets.load_dataset(
        "json",
        data_files=str(folder / f"{split}.jsonl"),
        split="train",
        cache_dir=str(Path(cache_dir) / "hf" / "datasets"),
    )
