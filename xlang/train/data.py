"""Bilingual training data: tokenized documents per language, mixed by token share, packed into blocks.

Why this shape: packing fills every block with real tokens (a padded batch of short paragraphs wastes
half its compute), document boundaries restart the position ids so that Hugging Face models keep
attention inside each document, and the whole stream is a pure function of the seed, so a resumed or
a second process computes exactly the blocks it needs by replaying the cheap index arithmetic.

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
        order = np.random.default_rng(_stable_int(self.seed, self.name, pass_index)).permutation(len(self.docs))
        for index in order:
            yield self.docs[index]


class StreamingDocs:
    """A streamed `datasets.IterableDataset` with a text field, tokenized on the fly; a pass reshuffles
    with a seeded buffer. Resume replays the stream up to the checkpoint (deterministic, not free)."""

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

    def documents(self, pass_index: int) -> Iterator[np.ndarray]:
        stream = self.dataset.shuffle(
            seed=_stable_int(self.seed, self.name, pass_index) % 2**32, buffer_size=self.buffer_size
        )
        pending: list[str] = []
        for row in stream:
            text = row.get(self.field)
            if isinstance(text, str) and text.strip():
                pending.append(text)
            if len(pending) >= 64:
                yield from (np.asarray(ids, dtype=np.int64) for ids in _encode(self.tokenizer, pending))
                pending = []
        if pending:
            yield from (np.asarray(ids, dtype=np.int64) for ids in _encode(self.tokenizer, pending))


DocSource = LocalDocs | StreamingDocs


def mixed_documents(sources: Mapping[str, DocSource], weights: Mapping[str, float]) -> Iterator[tuple[str, np.ndarray]]:
    """An endless interleaving whose token shares follow `weights` (normalized), deterministically."""
    names = list(sources)
    total = sum(weights[n] for n in names)
    share = {n: weights[n] / total for n in names}
    emitted = dict.fromkeys(names, 0)
    passes = dict.fromkeys(names, 0)
    iterators = {n: sources[n].documents(0) for n in names}
    while True:
        name = min(names, key=lambda n: (emitted[n] / share[n], names.index(n)))
        doc = next(iterators[name], None)
        if doc is None:
            passes[name] += 1
            iterators[name] = sources[name].documents(passes[name])
            doc = next(iterators[name], None)
            if doc is None:
                raise XlangError(f"corpus {name!r} has no documents; give it text or drop it from the mix")
        emitted[name] += len(doc)
        yield name, doc


@dataclass(frozen=True)
class Block:
    input_ids: np.ndarray
    position_ids: np.ndarray
    labels: np.ndarray
    tokens_by_source: dict[str, int]


def pack(documents: Iterator[tuple[str, np.ndarray]], seq_len: int) -> Iterator[Block]:
    """Blocks of exactly `seq_len` tokens. A document longer than the room left continues in the next
    block; every piece restarts its positions at 0, and the first token of a document is never a target
    (nothing before it in its own document predicts it)."""
    carry: tuple[str, np.ndarray] | None = None
    while True:
        pieces: list[tuple[str, np.ndarray]] = []
        room = seq_len
        while room:
            name, doc = carry if carry is not None else next(documents)
            carry = None
            if len(doc) > room:
                carry = (name, doc[room:])
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
        yield Block(input_ids, position_ids, labels, counts)


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

    def blocks(self, start: int = 0) -> Iterator[Block]:
        """Blocks from global index `start` on (the ones before are packed and dropped: cheap)."""
        stream = pack(mixed_documents(self.sources, self.weights), self.seq_len)
        for _ in range(start):
            next(stream)
        yield from stream

    def blocks_per_step(self, world: int) -> int:
        return self.micro_batch * self.grad_accum * world

    def batches(self, step_offset: int, rank: int, world: int, *, block_offset: int = 0) -> Iterator[dict[str, Any]]:
        """This process's micro-batches from optimizer step `step_offset` on.

        Global micro-batch j holds blocks [j*micro_batch, (j+1)*micro_batch) and belongs to process
        j % world, so processes see different blocks and a step consumes the same blocks at any resume.
        `block_offset` skips blocks an earlier stage of the same run consumed.
        """
        import torch

        start = block_offset + step_offset * self.blocks_per_step(world)
        stream = self.blocks(start)
        index = 0
        while True:
            group = [next(stream) for _ in range(self.micro_batch)]
            owner = index % world
            index += 1
            if owner != rank:
                continue
            batch = {
                "input_ids": torch.from_numpy(np.stack([b.input_ids for b in group])),
                "labels": torch.from_numpy(np.stack([b.labels for b in group])),
            }
            if self.document_mask:
                batch["position_ids"] = torch.from_numpy(np.stack([b.position_ids for b in group]))
            yield batch

    def make_batches(self, block_offset: int = 0) -> Any:
        """The engine's `make_batches(step_offset, rank, world)` for a stage starting at `block_offset`."""

        def make(step_offset: int, rank: int, world: int) -> Iterator[dict[str, Any]]:
            return self.batches(step_offset, rank, world, block_offset=block_offset)

        return make

    def token_shares(self, n_blocks: int) -> dict[str, float]:
        """Share of tokens per source over the first `n_blocks` blocks (for the report and tests)."""
        counts: dict[str, int] = {}
        for _, block in zip(range(n_blocks), self.blocks(0), strict=False):
            for name, count in block.tokens_by_source.items():
                counts[name] = counts.get(name, 0) + count
        total = sum(counts.values()) or 1
        return {name: count / total for name, count in counts.items()}
