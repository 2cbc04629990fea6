"""Bilingual training data: tokenized documents per language, mixed by token share, packed into blocks.

Why this shape: packing fills every block with real tokens (a padded batch of short paragraphs wastes
half its compute), document boundaries restart the position ids so that Hugging Face models keep
attention inside each document, and the whole stream is a pure function of the seed, so a resumed or
a second process computes exactly the blocks it needs by replaying the cheap index arithmetic. A
streamed corpus is not replayed: every block carries its JSON-able position (`Block.position`), which
a checkpoint stores and `PackedStream.restore` jumps back to.

- `tokenize_documents` turns texts (a list, a `datasets.Dataset`) into token arrays through `datasets`;
  `StreamingDocs` does the same lazily for a streamed hub dataset (`IterableDataset`).
- `mixed_documents` interleaves languages so that each one's share of tokens follows its weight
  (deficit scheduling: the language furthest below its share goes next); a language whose corpus runs
  out starts another pass in a new seeded order.
- `PackedStream` packs that interleaving into blocks of exactly `seq_len` tokens and hands each process
  its micro-batches (`make_batches(step_offset, rank, world)`, the engine's contract).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlang.errors import XlangError

IGNORE_INDEX = -100


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    if eos is None:
        return [list(ids) for ids in encoded]
    return [list(ids) if ids and ids[-1] == eos else [*ids, eos] for ids in encoded]


def tokenize_documents(tokenizer: Any, texts: Sequence[str] | Any, *, batch_size: int = 1000) -> list[np.ndarray]:
    """Token ids of every non-empty document (BOS as the tokenizer adds it, EOS appended), via `datasets`."""
    from datasets import Dataset
    from datasets.utils import logging as datasets_logging

    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        return _tokenize(tokenizer, texts, batch_size, Dataset)
    finally:
        if bars:
            datasets_logging.enable_progress_bar()


def _tokenize(tokenizer: Any, texts: Any, batch_size: int, Dataset: Any) -> list[np.ndarray]:  # noqa: N803
    if isinstance(texts, Dataset):
        dataset = texts.select_columns(["text"])
    else:
        dataset = Dataset.from_dict({"text": [t for t in texts if isinstance(t, str)]})
    dataset = dataset.filter(lambda row: bool(row["text"] and row["text"].strip()), new_fingerprint="xlang-nonempty")
    if len(dataset) == 0:
        return []
    ids = dataset.map(
        lambda batch: {"ids": _encode(tokenizer, batch["text"])},
        batched=True,
        batch_size=batch_size,
        remove_columns=["text"],
        new_fingerprint="xlang-tokenized",
    )
    return [np.asarray(row, dtype=np.int64) for row in ids["ids"]]


def bilingual_documents(records: Iterable[Mapping[str, Any]], languages: Sequence[str] | None, seed: int) -> list[str]:
    """Aligned records (`{"en": ..., "ko": ...}`) as bilingual documents, each pair's order seeded.

    Keeping both sides in one document lets attention connect a sentence with its translation.
    """
    rng = random.Random(_stable_int("parallel", seed))
    documents = []
    for record in records:
        keys = [k for k in (languages or record.keys()) if isinstance(record.get(k), str) and record[k].strip()]
        if len(keys) < 2:
            continue
        sides = [record[k].strip() for k in keys[:2]]
        if rng.random() < 0.5:
            sides.reverse()
        documents.append("\n".join(sides))
    return documents


class LocalDocs:
    """Tokenized documents in memory; each pass is a new seeded permutation."""

    def __init__(self, name: str, docs: list[np.ndarray], seed: int) -> None:
        self.name = name
        self.docs = docs
        self.seed = seed
        self.total_tokens = int(sum(len(d) for d in docs))

    def documents(self, pass_index: int) -> Iterator[np.ndarray]:
        for doc, _ in self.positioned(pass_index):
            yield doc

    def positioned(self, pass_index: int, cursor: Cursor = None) -> Iterator[tuple[np.ndarray, Cursor]]:
        """Documents of one pass from `cursor` on, each with the cursor that continues right after it."""
        order = np.random.default_rng(_stable_int(self.seed, self.name, pass_index)).permutation(len(self.docs))
        first = int(cursor["next"]) if cursor else 0
        for offset in range(first, len(order)):
            yield self.docs[order[offset]], {"next": offset + 1}


Cursor = dict[str, Any] | None
"""Where a source stands inside one pass (JSON-able); None: the source cannot say (replay instead)."""


class StreamingDocs:
    """A streamed `datasets.IterableDataset` with a text field, tokenized on the fly.

    Each pass visits the dataset's shards in a seeded order and shuffles seeded windows of
    `buffer_size` texts (a window is read whole, permuted, then handed out), so a position is the
    dataset's own `state_dict()` at the start of a window plus how many of its texts were taken:
    resume reads one window again instead of replaying the stream, and memory holds one window. A
    dataset without `state_dict`/`shard` (an older `datasets`, a plain iterable) yields no cursor,
    and resume falls back to replaying the stream.
    """

    def __init__(
        self, name: str, dataset: Any, tokenizer: Any, seed: int, *, field: str = "text", buffer_size: int = 10_000
    ) -> None:
        self.name = name
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.seed = seed
        self.field = field
        self.buffer_size = buffer_size
        self.total_tokens: int | None = None
        self.resumable = all(hasattr(dataset, a) for a in ("state_dict", "load_state_dict", "shard", "num_shards"))
        from xlang.data.shards import SHARD_DIGEST

        self.corpus_digest: str | None = getattr(dataset, SHARD_DIGEST, None)
        """Of local shards (names and sizes); a cursor carries it, and a resume onto other shards stops."""

    def documents(self, pass_index: int) -> Iterator[np.ndarray]:
        for doc, _ in self.positioned(pass_index):
            yield doc

    def positioned(self, pass_index: int, cursor: Cursor = None) -> Iterator[tuple[np.ndarray, Cursor]]:
        """Documents of one pass from `cursor` on, each with the cursor that continues right after it."""
        saved = (cursor or {}).get("corpus")
        if saved is not None and self.corpus_digest is not None and saved != self.corpus_digest:
            raise XlangError(
                f"corpus {self.name!r} is not the one the checkpoint was written on (shard files were added, "
                "removed, renamed or resized since), so its saved position points at other text; put the shards "
                "back as they were, or delete the stage's checkpoints to start it over on the new ones"
            )
        stamp = {"corpus": self.corpus_digest} if self.corpus_digest is not None else {}
        for window, start, texts in self._windows(pass_index, cursor):
            order = np.random.default_rng(_stable_int(self.seed, self.name, pass_index, window)).permutation(len(texts))
            taken = int(cursor["taken"]) if cursor and cursor["window"] == window else 0
            for first in range(taken, len(order), 64):
                batch = [texts[i] for i in order[first : first + 64]]
                for offset, ids in enumerate(_encode(self.tokenizer, batch), start=first + 1):
                    after = {**start, "window": window, "taken": offset, **stamp} if start is not None else None
                    yield np.asarray(ids, dtype=np.int64), after

    def _texts(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
        for row in rows:
            text = row.get(self.field)
            if isinstance(text, str) and text.strip():
                yield text

    def _windows(self, pass_index: int, cursor: Cursor) -> Iterator[tuple[int, dict[str, Any] | None, list[str]]]:
        """(window index, position of its first text, its texts) for one pass, from `cursor`'s window on."""
        if not self.resumable:
            texts = self._texts(self.dataset)
            window = 0
            while chunk := [t for _, t in zip(range(self.buffer_size), texts, strict=False)]:
                yield window, None, chunk
                window += 1
            return
        count = self.dataset.num_shards
        shards = np.random.default_rng(_stable_int(self.seed, self.name, pass_index, "shards")).permutation(count)
        window = int(cursor["window"]) if cursor else 0
        shard = int(cursor["shard"]) if cursor else 0
        rows = cursor["rows"] if cursor else None
        start: dict[str, Any] = {"shard": shard, "rows": rows}
        chunk: list[str] = []
        while shard < count:
            part = self.dataset.shard(num_shards=count, index=int(shards[shard]))
            if rows is not None:
                part.load_state_dict(rows)
                rows = None
            for text in self._texts(part):
                chunk.append(text)
                if len(chunk) == self.buffer_size:
                    yield window, start, chunk
                    window += 1
                    start = {"shard": shard, "rows": part.state_dict()}
                    chunk = []
            shard += 1
        if chunk:
            yield window, start, chunk


DocSource = LocalDocs | StreamingDocs


def mixed_positioned(
    sources: Mapping[str, DocSource], weights: Mapping[str, float], start: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, np.ndarray, dict[str, Any] | None]]:
    """`mixed_documents` from position `start` on, each document with the position right after it
    (None once a source cannot give a cursor)."""
    names = list(sources)
    total = sum(weights[n] for n in names)
    share = {n: weights[n] / total for n in names}
    emitted = {n: int(start["emitted"][n]) for n in names} if start else dict.fromkeys(names, 0)
    passes = {n: int(start["passes"][n]) for n in names} if start else dict.fromkeys(names, 0)
    cursors: dict[str, Cursor] = dict(start["cursors"]) if start else dict.fromkeys(names, {})
    iterators = {n: sources[n].positioned(passes[n], cursors[n] or None) for n in names}
    while True:
        name = min(names, key=lambda n: (emitted[n] / share[n], names.index(n)))
        entry = next(iterators[name], None)
        if entry is None:
            passes[name] += 1
            iterators[name] = sources[name].positioned(passes[name])
            entry = next(iterators[name], None)
            if entry is None:
                raise XlangError(f"corpus {name!r} has no documents; give it text or drop it from the mix")
        doc, cursors[name] = entry
        emitted[name] += len(doc)
        known = all(c is not None for c in cursors.values())
        yield name, doc, {"emitted": dict(emitted), "passes": dict(passes), "cursors": dict(cursors)} if known else None


def mixed_documents(sources: Mapping[str, DocSource], weights: Mapping[str, float]) -> Iterator[tuple[str, np.ndarray]]:
    """An endless interleaving whose token shares follow `weights` (normalized), deterministically."""
    for name, doc, _ in mixed_positioned(sources, weights):
        yield name, doc


@dataclass(frozen=True)
class Block:
    input_ids: np.ndarray
    position_ids: np.ndarray
    labels: np.ndarray
    tokens_by_source: dict[str, int]
    position: dict[str, Any] | None = None
    """Where the stream stands right after this block (`PackedStream.restore`); None when unknown."""


def pack(
    documents: Iterator[tuple[str, np.ndarray]] | Iterator[tuple[str, np.ndarray, dict[str, Any] | None]],
    seq_len: int,
    *,
    skip: int = 0,
    before: dict[str, Any] | None = None,
) -> Iterator[Block]:
    """Blocks of exactly `seq_len` tokens. A document longer than the room left continues in the next
    block; every piece restarts its positions at 0, and the first token of a document is never a target
    (nothing before it in its own document predicts it).

    When `documents` yields `(name, doc, position_after)`, each block records its position: the mix
    position before the document it cut plus the tokens of it already packed (`skip`), which is how
    a resumed stream (`before=` that position, `skip=` those tokens) continues mid-document.
    """
    carry: tuple[str, np.ndarray, int, dict[str, Any] | None] | None = None
    last = before
    first_skip = skip
    while True:
        pieces: list[tuple[str, np.ndarray]] = []
        room = seq_len
        while room:
            if carry is not None:
                name, doc, offset, doc_before = carry
                carry = None
            else:
                entry = next(documents)
                name, doc = entry[0], entry[1]
                doc_before, offset = last, 0
                last = entry[2] if len(entry) > 2 else None  # type: ignore[misc]
                if first_skip:
                    doc, offset, first_skip = doc[first_skip:], first_skip, 0
            if len(doc) > room:
                carry = (name, doc[room:], offset + room, doc_before)
                doc = doc[:room]
            pieces.append((name, doc))
            room -= len(doc)
        input_ids = np.concatenate([doc for _, doc in pieces])
        position_ids = np.concatenate([np.arange(len(doc), dtype=np.int64) for _, doc in pieces])
        labels = input_ids.copy()
        labels[position_ids == 0] = IGNORE_INDEX
        counts: dict[str, int] = {}
        for name, doc in pieces:
            counts[name] = counts.get(name, 0) + len(doc)
        if carry is not None:
            position = {"mix": carry[3], "skip": carry[2]} if carry[3] is not None else None
        else:
            position = {"mix": last, "skip": 0} if last is not None else None
        yield Block(input_ids, position_ids, labels, counts, position)


class PackedStream:
    """The deterministic block stream of one run, and the engine's `make_batches` over it."""

    def __init__(
        self,
        sources: Mapping[str, DocSource],
        weights: Mapping[str, float],
        seq_len: int,
        *,
        micro_batch: int,
        grad_accum: int,
        document_mask: bool = True,
    ) -> None:
        missing = [name for name in sources if name not in weights]
        if missing:
            raise XlangError(f"no mix weight for {', '.join(missing)}")
        self.sources = dict(sources)
        self.weights = {name: float(weights[name]) for name in sources}
        self.seq_len = seq_len
        self.micro_batch = micro_batch
        self.grad_accum = grad_accum
        self.document_mask = document_mask
        self._positions: dict[int, dict[str, Any]] = {}
        self._kept_positions = 8

    def blocks(self, start: int = 0) -> Iterator[Block]:
        """Blocks from global index `start` on: from the nearest known position at or before it (see
        `restore`), packing and dropping the blocks in between (cheap index arithmetic for documents
        in memory; a re-read of the stream for streamed ones)."""
        known = max((index for index in self._positions if index <= start), default=None)
        if known is None:
            documents = mixed_positioned(self.sources, self.weights)
            stream = pack(documents, self.seq_len, before=_mix_origin(self.sources))
            dropped = start
        else:
            position = self._positions[known]
            documents = mixed_positioned(self.sources, self.weights, position["mix"])
            stream = pack(documents, self.seq_len, skip=int(position["skip"]), before=position["mix"])
            dropped = start - known
        for _ in range(dropped):
            next(stream)
        yield from stream

    def position(self, block_index: int) -> dict[str, Any] | None:
        """The stream's position before global block `block_index`, when a stream that ran past it
        recorded it (every step boundary of `batches` is recorded); None otherwise."""
        return self._positions.get(block_index)

    def restore(self, block_index: int, position: Mapping[str, Any]) -> None:
        """Make `blocks(block_index)` start from `position` (from a checkpoint) instead of replaying."""
        self._remember(block_index, dict(position))

    def _remember(self, block_index: int, position: dict[str, Any] | None) -> None:
        if position is None:
            return
        self._positions[block_index] = position
        for stale in sorted(self._positions)[: -self._kept_positions]:
            del self._positions[stale]

    def blocks_per_step(self, world: int) -> int:
        return self.micro_batch * self.grad_accum * world

    def batches(self, step_offset: int, rank: int, world: int, *, block_offset: int = 0) -> Iterator[dict[str, Any]]:
        """This process's micro-batches from optimizer step `step_offset` on.

        Global micro-batch j holds blocks [j*micro_batch, (j+1)*micro_batch) and belongs to process
        j % world, so processes see different blocks and a step consumes the same blocks at any resume.
        `block_offset` skips blocks an earlier stage of the same run consumed. A whole step's blocks
        are packed before its first micro-batch is handed out, so the position at the step's end is
        recorded (`position`) by the time the step is trained and a checkpoint can store it.
        """
        import torch

        per_step = self.blocks_per_step(world)
        start = block_offset + step_offset * per_step
        stream = self.blocks(start)
        while True:
            step_blocks = [next(stream) for _ in range(per_step)]
            start += per_step
            self._remember(start, step_blocks[-1].position)
            for index in range(rank, per_step // self.micro_batch, world):
                group = step_blocks[index * self.micro_batch : (index + 1) * self.micro_batch]
                batch = {
                    "input_ids": torch.from_numpy(np.stack([b.input_ids for b in group])),
                    "labels": torch.from_numpy(np.stack([b.labels for b in group])),
                }
                if self.document_mask:
                    batch["position_ids"] = torch.from_numpy(np.stack([b.position_ids for b in group]))
                yield batch

    def make_batches(self, block_offset: int = 0) -> StageBatches:
        """The engine's `make_batches(step_offset, rank, world)` for a stage starting at `block_offset`."""
        return StageBatches(self, block_offset)

    def token_shares(self, n_blocks: int) -> dict[str, float]:
        """Share of tokens per source over the first `n_blocks` blocks (for the report and tests)."""
        counts: dict[str, int] = {}
        for _, block in zip(range(n_blocks), self.blocks(0), strict=False):
            for name, count in block.tokens_by_source.items():
                counts[name] = counts.get(name, 0) + count
        total = sum(counts.values()) or 1
        return {name: count / total for name, count in counts.items()}


class StageBatches:
    """`make_batches` of one stage of a `PackedStream`, with the stream position a checkpoint stores.

    The engine calls it as `make_batches(step_offset, rank, world)`; `stream_position(step, world)`
    gives the JSON-able position after `step` (None when a source cannot say) and
    `restore_stream_position(step, world, position)` makes the next call start there without
    replaying the stream.
    """

    def __init__(self, stream: PackedStream, block_offset: int) -> None:
        self.stream = stream
        self.block_offset = block_offset

    def __call__(self, step_offset: int, rank: int, world: int) -> Iterator[dict[str, Any]]:
        return self.stream.batches(step_offset, rank, world, block_offset=self.block_offset)

    def _block(self, step: int, world: int) -> int:
        return self.block_offset + step * self.stream.blocks_per_step(world)

    def stream_position(self, step: int, world: int) -> dict[str, Any] | None:
        return self.stream.position(self._block(step, world))

    def restore_stream_position(self, step: int, world: int, position: Mapping[str, Any]) -> None:
        self.stream.restore(self._block(step, world), position)


def _mix_origin(sources: Mapping[str, DocSource]) -> dict[str, Any]:
    """The mix position before the first document (every source at the start of its first pass)."""
    return {
        "emitted": dict.fromkeys(sources, 0),
        "passes": dict.fromkeys(sources, 0),
        "cursors": {name: {} for name in sources},
    }
