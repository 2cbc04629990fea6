"""The target text the fit reads: one token stream of whole documents, and the copy task's token pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlang.errors import XlangError
from xlang_subword_fit.options import SubwordFitOptions


def separator_id(tokenizer: Any) -> int | None:
    """The token that starts a document (BOS, else EOS), as the bits-per-character scorer uses."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def training_stream(tokenizer: Any, texts: Sequence[str], tokens: int, seed: int) -> list[int]:
    """About ``tokens`` ids of ``texts`` in a seeded random order of documents, each after a separator."""
    import random

    separator = separator_id(tokenizer)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    stream: list[int] = []
    batch = 256
    for start in range(0, len(order), batch):
        chosen = [texts[index] for index in order[start : start + batch]]
        for ids in tokenizer(chosen, add_special_tokens=False, verbose=False)["input_ids"]:
            if separator is not None:
                stream.append(int(separator))
            stream.extend(ids)
        if len(stream) >= tokens:
            break
    return stream


@dataclass(frozen=True)
class FitText:
    """What each step samples from: the training stream and the copy task's tokens."""

    stream: Any
    """Token ids (1-D tensor) of the target documents, read with the expanded tokenizer."""
    copy_pool: Any
    """The most frequent new tokens of the stream (1-D tensor), from which copy sequences are drawn."""
    separator: int
    """What starts a copy sequence: the document separator (or a pool token when there is none)."""


def fit_text(
    tokenizer: Any,
    texts: Sequence[str],
    new_token_ids: Sequence[int],
    seed: int,
    options: SubwordFitOptions,
    pool_texts: Sequence[str] = (),
) -> FitText:
    """Twice the tokens the phases will read (random windows then rarely overlap), checked to hold at
    least one sequence of the longest phase; the copy pool counted in ``pool_texts`` when given, else in
    that stream."""
    import torch

    from xlang.embeddings.initializers import token_frequencies

    needed = max(
        options.fit_steps * options.fit_batch * (options.fit_sequence + 1),
        options.row_steps * options.row_batch * (options.row_sequence + 1),
    )
    stream = torch.tensor(training_stream(tokenizer, texts, 2 * needed, seed), dtype=torch.long)
    longest = max(options.fit_sequence if options.fit_steps else 0, options.row_sequence if options.row_steps else 0)
    if len(stream) <= longest:
        raise XlangError(
            f"{options.initializer_name}: the training text gives {len(stream)} tokens, fewer than one sequence of "
            f"{longest + 1}; give more text or a smaller fit_sequence/row_sequence"
        )
    if pool_texts:
        counts = Counter(dict(zip(new_token_ids, token_frequencies(tokenizer, pool_texts, new_token_ids), strict=True)))
    else:
        counts = Counter(stream.tolist())
    new_set = set(int(token_id) for token_id in new_token_ids)
    frequent = [token_id for token_id, count in counts.most_common() if token_id in new_set and count > 0]
    pool = torch.tensor(frequent[: options.copy_pool] or list(new_token_ids)[: options.copy_pool], dtype=torch.long)
    separator = separator_id(tokenizer)
    return FitText(stream=stream, copy_pool=pool, separator=int(pool[0]) if separator is None else int(separator))
