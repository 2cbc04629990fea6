"""Corpora stage: texts and statistics of the corpora a language offers.

Callers hand in what a loader returned (`datasets` objects); this stage never asks the plugin
manager. The loaders for the built-in URI schemes (`hf://`, `file://`) live in `xlang.data.sources` and
are exposed to the core through the `load_corpus` hook (`xlang.builtin.corpus_sources`); other schemes
come from plugins through the same hook.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xlang.data.sources import load_source
from xlang.errors import XlangError

if TYPE_CHECKING:
    from xlang.spec import LanguageSpec

STREAM_SAMPLE_RECORDS = 10_000
"""How many records of a streamed (hub) corpus the statistics look at: a stream has no end."""


def corpus_stats(language: LanguageSpec, datasets_by_source: Mapping[str, Mapping[str, Any]]) -> CorpusStats:
    """Statistics for `{source name: {split: dataset}}` as returned by the `load_corpus` hook.

    A parallel split is counted on the field named by the language's code (its side of the pairs);
    a streamed split on its first `STREAM_SAMPLE_RECORDS` records.
    """
    by_source: dict[str, dict[str, SplitStats]] = {}
    for name, per_split in datasets_by_source.items():
        by_source[name] = {}
        for split, dataset in per_split.items():
            columns = getattr(dataset, "column_names", None) or ["text"]
            column = language.code if language.code in columns else "text"
            streamed = not hasattr(dataset, "num_rows")
            values = texts(dataset, column, language, limit=STREAM_SAMPLE_RECORDS if streamed else None)
            documents = len(set(dataset["doc"])) if not streamed and "doc" in columns else None
            by_source[name][split] = split_stats(language, values, sampled=streamed, documents=documents)
    return CorpusStats(language=language.code, by_source=by_source)


def texts(
    dataset: Any,
    field: str = "text",
    language: LanguageSpec | None = None,
    limit: int | None = None,
) -> list[str]:
    """The `field` strings of a corpus split, normalized by `language` when given, empty ones dropped.

    `dataset` is a `datasets.Dataset`, an `IterableDataset` (then `limit` is required: a hub stream
    has no end) or any iterable of records. For a parallel split, `field` is a language code.
    """
    columns = getattr(dataset, "column_names", None)
    if columns is not None and field not in columns:
        raise XlangError(f"corpus split has no {field!r} field (its fields: {', '.join(columns)})")
    if hasattr(dataset, "num_rows") and hasattr(dataset, "select"):
        count = dataset.num_rows if limit is None else min(limit, dataset.num_rows)
        values: Iterable[str] = dataset.select(range(count))[field] if count < dataset.num_rows else dataset[field]
    else:
        if limit is None and hasattr(dataset, "take"):
            raise XlangError("a streamed corpus has no end; pass limit= (how many records to read)")
        values = _first(dataset, field, limit)
    normalize = language.normalize if language is not None else None
    out = []
    for value in values:
        if value:
            out.append(normalize(value) if normalize else value)
    return out


def _first(records: Iterable[Mapping[str, Any]], field: str, limit: int | None) -> Iterable[str]:
    for index, record in enumerate(records):
        if limit is not None and index >= limit:
            return
        yield record[field]


@dataclass(frozen=True)
class SplitStats:
    """Size of one split of one corpus, counted on normalized text."""

    records: int
    documents: int
    """Distinct `doc` keys (whole documents, e.g. pages) where the split has them, else records."""
    chars: int
    visible_chars: int
    """Characters other than whitespace: the denominator of the target share."""
    target_chars: int
    sampled: bool = False
    """True when the split is a stream and only its first records were counted."""

    @property
    def target_share(self) -> float:
        return self.target_chars / self.visible_chars if self.visible_chars else 0.0

    def __add__(self, other: SplitStats) -> SplitStats:
        return SplitStats(
            self.records + other.records,
            self.documents + other.documents,
            self.chars + other.chars,
            self.visible_chars + other.visible_chars,
            self.target_chars + other.target_chars,
            self.sampled or other.sampled,
        )


@dataclass(frozen=True)
class StatsRow:
    """One (source, split) line of a statistics table."""

    source: str
    split: str
    records: int
    documents: int
    chars: int
    target_chars: int
    target_share: float


@dataclass(frozen=True)
class CorpusStats:
    """Per-source and total statistics of a language's corpora, per split."""

    language: str
    by_source: dict[str, dict[str, SplitStats]] = field(default_factory=dict)

    @property
    def splits(self) -> dict[str, SplitStats]:
        totals: dict[str, SplitStats] = {}
        for per_split in self.by_source.values():
            for split, stats in per_split.items():
                totals[split] = totals[split] + stats if split in totals else stats
        return totals

    @property
    def rows(self) -> list[StatsRow]:
        return [
            StatsRow(name, split, s.records, s.documents, s.chars, s.target_chars, s.target_share)
            for name, per_split in self.by_source.items()
            for split, s in per_split.items()
        ]

    @property
    def total_chars(self) -> int:
        return sum(stats.chars for stats in self.splits.values())

    @property
    def total_target_chars(self) -> int:
        return sum(stats.target_chars for stats in self.splits.values())

    @property
    def target_share(self) -> float:
        """Target-script share of the visible characters over every source and split."""
        visible = sum(stats.visible_chars for stats in self.splits.values())
        return self.total_target_chars / visible if visible else 0.0

    def as_dict(self) -> dict[str, Any]:
        def one(stats: SplitStats) -> dict[str, Any]:
            return {**stats.__dict__, "target_share": round(stats.target_share, 4)}

        return {
            "language": self.language,
            "splits": {split: one(stats) for split, stats in self.splits.items()},
            "by_source": {name: {s: one(v) for s, v in per.items()} for name, per in self.by_source.items()},
        }


def split_stats(
    language: LanguageSpec, values: Iterable[str], sampled: bool = False, documents: int | None = None
) -> SplitStats:
    """Count characters of normalized `values`; distinct characters are classified once."""
    chars: Counter[str] = Counter()
    records = 0
    for value in values:
        chars.update(value)
        records += 1
    total = sum(chars.values())
    visible = total - sum(count for char, count in chars.items() if char.isspace())
    target = sum(count for char, count in chars.items() if language.is_target_char(char))
    return SplitStats(
        records=records,
        documents=records if documents is None else documents,
        chars=total,
        visible_chars=visible,
        target_chars=target,
        sampled=sampled,
    )


__all__ = [
    "CorpusStats",
    "SplitStats",
    "StatsRow",
    "corpus_stats",
    "load_source",
    "split_stats",
    "texts",
]
