"""Initializers for the embedding rows of new tokens.

Each one has the ``register_embedding_initializers`` shape: it names the inputs it uses among
``model=, base_tokenizer=, tokenizer=, new_token_ids=, seed=, texts=, keep_texts=`` and, when it has
something to tune, ``options=`` (a validated :class:`xlang.contract.Options`; an option it does not take is
an error, never silently dropped). It fills the rows ``new_token_ids`` of the model's input embeddings
and, when the model is untied, of its output embeddings, in place; every other row stays bit for bit as
it was. It returns a small dict of facts for the record (JSON-able).

- ``random``: N(0, initializer_range), what an untouched resize gives; the baseline.
- ``mean``: every new row is the mean of the old rows.
- ``covariance``: the mean plus noise from the old rows' covariance scaled by 1e-9, as
  ``resize_token_embeddings(mean_resizing=True)`` does: in practice the mean.
- ``subword-mean``: the mean of the rows of the base pieces that spell the token (FVT).
- ``subword-freq``: ``subword-mean`` made frequency-aware (and, untied, distinct). Output rows get a
  per-token logit offset ``a * log(frequency)`` along the model's *bias direction* (see
  :func:`bias_direction`), so frequent new tokens get the probability their frequency warrants;
  frequencies are counted on ``texts`` (target-language training text). Untied input rows are pushed
  away from the mean of the new rows: averages of a few shared byte pieces are near-parallel, so the
  model can hardly tell the new tokens apart. A tied row takes the offset and no contrast. Its knobs
  are :class:`SubwordFreqOptions`.

The helpers below that read the model (``matrices``, ``write_rows``, ``output_states``, ...) are shared
with initializers in plugins (``xlang-subword-fit`` starts from ``subword-freq`` rows).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, Field

from xlang.contract import Options
from xlang.embeddings.pieces import NewToken, spell_new_tokens
from xlang.errors import XlangError

COVARIANCE_SCALE = 1e-9
"""The factor transformers applies to the old rows' covariance when it samples new rows (what
``covariance`` reproduces, so not an option)."""
COVARIANCE_SAMPLE_ROWS = 1024
"""Old rows the covariance is estimated on: at a 1e-9 scale (noise ~3e-5 of the rows' spread) its
precision does not matter, and using all 32k x 4096 rows would cost seconds."""


class SubwordFreqOptions(Options):
    """What ``subword-freq`` lets a user tune; the defaults are the measured best on SmolLM2."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    frequency_weight: float = Field(default=0.75, ge=0)
    """Logit nats per nat of log-frequency (0: no offset, i.e. ``subword-mean`` plus contrast). SmolLM2,
    8k new tokens, validation BPC (first 10k characters): Korean 3.665 / 3.661 at 0.75 / 1.0; Chinese
    4.059 / 4.037 / 4.092 at 0.5 / 0.75 / 1.0."""
    input_contrast: float = Field(default=1.0, ge=0)
    """Untied input rows: ``mean + (1 + c) * (row - mean)`` over the new rows. SmolLM2 with its output
    matrix copied (untied) for the measurement, c = 0 -> 1: Korean 3.637 -> 3.568, Chinese 4.000 -> 3.936
    bits/char. The new rows' mean has cosine 0.78 with each of them, against 0.45 among old rows. Never
    applied to a tied row: there the contrast also sharpens the output distribution and does harm
    (Chinese 4.25 -> 4.64 at 0.5)."""
    bias_ridge: float = Field(default=100.0, gt=0)
    """Ridge of the fit that finds the bias direction, in percent of the states' mean square: the
    direction's spread over held-out states is 1.00 +- 0.05 on SmolLM2 (Korean, English and Chinese
    text) at this value."""
    context_tokens: int = Field(default=1024, gt=0)
    """Tokens of target text the base model reads to find its bias direction (SmolLM2 on Korean text:
    h.v = 0.99 +- 0.06 from a fit on 1,024 tokens)."""
    prior_weight: float = Field(default=0.6, ge=0, lt=1)
    """Share of general text in the frequencies behind the offsets: each new token's count is its count in
    the training text plus ``w / (1 - w)`` times its count in ``prior_texts`` (the language's word-frequency
    lists written out as text as large as the training text), so a word common in general text is not
    priced as rare because the corpus is narrow. 0: the training text alone. SmolLM2 + 8k, first 5,000
    characters, bits per character ÷ the base at 0 / 0.3 / 0.6: Korean out of domain 1.543 / 1.396 / 1.369,
    in domain 1.296 / 1.311 / 1.342; Chinese out of domain 1.591 / 1.490 / 1.458 (1.448 at 0.8), in domain
    1.564 / 1.567 / 1.588 (1.618 at 0.8)."""


def embedding_matrices(model: Any) -> list[tuple[str, Any]]:
    """("input", W_in) and, when untied, ("output", W_out): the matrices an initializer fills."""
    inputs = model.get_input_embeddings().weight
    output_layer = model.get_output_embeddings()
    outputs = None if output_layer is None else output_layer.weight
    if outputs is None or outputs is inputs or outputs.data_ptr() == inputs.data_ptr():
        return [("input", inputs)]
    return [("input", inputs), ("output", outputs)]


def old_vocab_size(base_tokenizer: Any, new_token_ids: Sequence[int]) -> int:
    """The base vocabulary's size, after checking that no new id falls inside it."""
    size = len(base_tokenizer)
    if new_token_ids and min(new_token_ids) < size:
        raise XlangError(f"new token id {min(new_token_ids)} is below the base vocabulary size {size}")
    return size


def write_rows(weight: Any, new_token_ids: Sequence[int], rows: Any) -> None:
    """Copy ``rows`` into the rows ``new_token_ids`` of ``weight``, in its device and dtype."""
    import torch

    with torch.no_grad():
        index = torch.as_tensor(list(new_token_ids), dtype=torch.long, device=weight.device)
        weight.index_copy_(0, index, rows.to(device=weight.device, dtype=weight.dtype))


def random_init(*, model: Any, new_token_ids: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """Normal(0, config.initializer_range) rows: the library default before mean resizing existed."""
    import torch

    std = float(getattr(model.config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(seed)
    for _role, weight in embedding_matrices(model):
        rows = torch.randn((len(new_token_ids), weight.shape[1]), generator=generator) * std
        write_rows(weight, new_token_ids, rows)
    return {"std": std, "seed": seed}


def mean_init(*, model: Any, base_tokenizer: Any, new_token_ids: Sequence[int]) -> dict[str, Any]:
    """Every new row is the mean old row: a token the model has no opinion about."""
    old = old_vocab_size(base_tokenizer, new_token_ids)
    for _role, weight in embedding_matrices(model):
        mean = weight[:old].detach().float().mean(0)
        write_rows(weight, new_token_ids, mean.expand(len(new_token_ids), -1))
    return {}


def covariance_init(*, model: Any, base_tokenizer: Any, new_token_ids: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """N(mean, 1e-9 * covariance) of the old rows: what ``mean_resizing=True`` does, done in seconds.

    The noise is ``z @ (sample - mean) / sqrt(n)`` with ``z ~ N(0, I)`` over ``n`` sampled old rows: its
    covariance is their sample covariance, without forming or factoring a d x d matrix.
    """
    import torch

    old = old_vocab_size(base_tokenizer, new_token_ids)
    generator = torch.Generator().manual_seed(seed)
    for _role, weight in embedding_matrices(model):
        rows = weight[:old].detach()
        mean = rows.float().mean(0)
        pick = torch.randperm(old, generator=generator)[: min(old, COVARIANCE_SAMPLE_ROWS)].to(rows.device)
        centered = (rows[pick].float() - mean) / math.sqrt(len(pick))
        noise = torch.randn((len(new_token_ids), len(pick)), generator=generator).to(rows.device) @ centered
        write_rows(weight, new_token_ids, mean + math.sqrt(COVARIANCE_SCALE) * noise)
    return {"scale": COVARIANCE_SCALE, "sample_rows": min(old, COVARIANCE_SAMPLE_ROWS), "seed": seed}


def _piece_means(weight: Any, spelled: Sequence[NewToken], old: int) -> tuple[Any, int]:
    """Mean of each token's piece rows in float32 (the mean old row where a token has no pieces)."""
    import torch

    device = weight.device
    rows = weight[:old].detach()
    counts = torch.tensor([len(token.pieces) for token in spelled], dtype=torch.long)
    flat = torch.tensor([piece for token in spelled for piece in token.pieces], dtype=torch.long)
    offsets = torch.cumsum(counts, 0) - counts
    means = torch.nn.functional.embedding_bag(
        flat.to(device), rows.float() if rows.dtype != torch.float32 else rows, offsets.to(device), mode="mean"
    )
    unspelled = (counts == 0).to(device)
    if bool(unspelled.any()):
        means[unspelled] = rows.float().mean(0)
    return means, int(unspelled.sum())


def subword_mean_init(
    *, model: Any, base_tokenizer: Any, tokenizer: Any, new_token_ids: Sequence[int]
) -> dict[str, Any]:
    """Mean of the rows of the base pieces that spell each new token (Gee et al.'s FVT).

    The row starts where the model already was for that text: as input it reads like a blend of the
    pieces, as output it scores like their average logit.
    """
    old = old_vocab_size(base_tokenizer, new_token_ids)
    spelled = spell_new_tokens(base_tokenizer, tokenizer, new_token_ids)
    unspelled = 0
    for _role, weight in embedding_matrices(model):
        means, unspelled = _piece_means(weight, spelled, old)
        write_rows(weight, new_token_ids, means)
    return {"unspelled": unspelled}


def token_frequencies(tokenizer: Any, texts: Sequence[str], token_ids: Sequence[int]) -> list[int]:
    """How often the tokenizer emits each of ``token_ids`` on ``texts``."""
    counts: Counter[int] = Counter()
    batch = 256
    for start in range(0, len(texts), batch):
        encoded = tokenizer(list(texts[start : start + batch]), add_special_tokens=False, verbose=False)
        for ids in encoded["input_ids"]:
            counts.update(ids)
    return [counts.get(int(token_id), 0) for token_id in token_ids]


def output_states(model: Any, input_ids: Any) -> Any:
    """What the output layer reads (after the final norm), captured with a hook: model-agnostic."""
    import torch

    captured: list[Any] = []
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda _module, inputs: captured.append(inputs[0].detach())
    )
    try:
        with torch.inference_mode():
            model(input_ids=input_ids.to(next(model.parameters()).device))
    finally:
        handle.remove()
    return captured[0].reshape(-1, captured[0].shape[-1]).float()


def bias_direction(states: Any, ridge: float = 100.0) -> Any:
    """A vector ``v`` with ``h . v ~= 1`` for the output states ``h`` the model produces.

    Final hidden states share a large common component, so a ridge fit finds ``v`` with a small spread
    (SmolLM2: h.v = 1.00 +- 0.05 over Korean, English and Chinese text). Adding ``c * v`` to an output
    row then adds about ``c`` to that token's logit in every context: a per-token bias for models that
    have no bias vector. Solved in whichever of the primal (d x d) or dual (n x n) form is smaller.
    """
    import torch

    states = states.float()
    count, dim = states.shape
    scale = float((states * states).sum()) / dim
    penalty = ridge / 100.0 * scale  # the same ridge in both forms
    ones = torch.ones(count, device=states.device)
    if count < dim:
        gram = states @ states.T
        weights = torch.linalg.solve(gram + penalty * torch.eye(count, device=states.device), ones)
        return states.T @ weights
    gram = states.T @ states
    return torch.linalg.solve(gram + penalty * torch.eye(dim, device=states.device), states.T @ ones)


def _context_ids(base_tokenizer: Any, texts: Sequence[str], spelled: Sequence[NewToken], limit: int) -> Any:
    """Up to ``limit`` base-token ids of target text: the given texts, else the new tokens' own text."""
    import torch

    separator = base_tokenizer.bos_token_id if base_tokenizer.bos_token_id is not None else base_tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        if separator is not None:
            ids.append(int(separator))
        ids.extend(base_tokenizer.encode(text, add_special_tokens=False, verbose=False))
        if len(ids) >= limit:
            break
    if len(ids) < limit // 4:
        ids.extend(piece for token in spelled for piece in token.pieces)
    ids = ids[:limit]
    if not ids:
        raise XlangError("no text to find the model's bias direction from: give texts= or tokens with pieces")
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def subword_freq_init(
    *,
    model: Any,
    base_tokenizer: Any,
    tokenizer: Any,
    new_token_ids: Sequence[int],
    texts: Sequence[str] = (),
    prior_texts: Sequence[str] = (),
    options: SubwordFreqOptions = SubwordFreqOptions(),
) -> dict[str, Any]:
    """``subword-mean`` with a log-frequency logit offset on the output side (and contrast on an untied input).

    Why the offset: the mean of the pieces' rows scores a new token by the average of its pieces'
    logits, which knows what may come next but not how often a whole word occurs; the base model only
    learns that over several steps. The offset ``a * (log(1 + count) - mean)`` (counts on ``texts``,
    the target training text, blended with ``prior_texts`` at ``prior_weight``: the corpus alone prices
    words by one kind of text) supplies it in one step, along a direction ``v`` with ``h . v ~= 1`` so
    it acts as a bias in every context. Why the contrast: see ``SubwordFreqOptions.input_contrast``.
    Without ``texts`` there is no offset (noted in the result).
    """
    import torch

    old = old_vocab_size(base_tokenizer, new_token_ids)
    spelled = spell_new_tokens(base_tokenizer, tokenizer, new_token_ids)
    matrices = embedding_matrices(model)
    facts: dict[str, Any] = {"frequency_weight": options.frequency_weight}
    offsets = None
    if texts:
        counts = torch.tensor(token_frequencies(tokenizer, texts, new_token_ids), dtype=torch.float64)
        facts["prior_weight"] = options.prior_weight if prior_texts else 0.0
        if prior_texts and options.prior_weight > 0:
            general = torch.tensor(token_frequencies(tokenizer, prior_texts, new_token_ids), dtype=torch.float64)
            facts["tokens_seen_only_in_the_prior"] = int(((counts == 0) & (general > 0)).sum())
            counts = counts + options.prior_weight / (1 - options.prior_weight) * general
        log_counts = torch.log1p(counts)
        offsets = (options.frequency_weight * (log_counts - log_counts.mean())).float()
        facts["unseen_tokens"] = int((counts == 0).sum())
    else:
        facts["note"] = "no texts given: no frequencies, so this is subword-mean"
    direction = None
    if offsets is not None:
        context = _context_ids(base_tokenizer, texts, spelled, options.context_tokens)
        states = output_states(model, context)
        direction = bias_direction(states, options.bias_ridge)
        spread = states @ direction
        facts["bias_direction"] = {
            "norm": float(direction.norm()),
            "mean": float(spread.mean()),
            "std": float(spread.std()),
        }
    tied = len(matrices) == 1
    for role, weight in matrices:
        rows, facts["unspelled"] = _piece_means(weight, spelled, old)
        if role == "input" and not tied:
            rows = rows + options.input_contrast * (rows - rows.mean(0))
        if offsets is not None and (role == "output" or tied):
            rows = rows + offsets.to(rows.device).unsqueeze(1) * direction.to(rows.device).unsqueeze(0)
        write_rows(weight, new_token_ids, rows)
    facts["input_contrast"] = 0.0 if tied else options.input_contrast
    return facts
