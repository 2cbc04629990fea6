"""``subword-fit``: ``subword-freq`` rows, then one shared map fitted so the frozen model can use them in context.

Why. Piece averages score well where a word is met for the first time, but the expanded model cannot
*copy* a new token from earlier in its context: read twice, a random sequence of frequent new tokens
costs as much the second time as the first (SmolLM2, Korean: 9.7 -> 9.3 nats/token, while base tokens
drop to 1.2). Averages of a few shared byte pieces are near-parallel, so the model's copying circuits
cannot tell them apart. On documents that repeat themselves (help pages, lists, code) that is most of
the gap to the base model. Contrast and reweighting by hand do not fix it (``docs/embeddings.md``), and
rows fitted one by one over-fit. One linear map shared by all new rows generalizes: each row becomes

    row + (row - mean(rows)) A + (last_piece - mean(last_pieces)) B + c

with ``A``, ``B`` (d x d) and ``c`` fitted by gradient steps while every model weight stays frozen, on two
losses: next-token loss on the target training text read with the expanded tokenizer, and a copy task
(random sequences of frequent new tokens read twice, scored on the second reading). Tied models fit one
map (the row is input and output); untied models fit one per matrix.

A second phase (``row_steps``, off by default) then keeps the map and trains a free residual per new
row on longer text: the map cannot tell rare words apart, rows of their own can.

It costs what ``steps`` forward and backward passes of the frozen model cost (SmolLM2-135M: 3-7.5 s a
step on two CPU cores, 10-21 minutes in all), so it is an initializer for when quality before training
matters more than seconds; ``subword-freq`` is the fast one.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from xlang.embeddings.initializers import _matrices, _old_size, _write, subword_freq_init
from xlang.embeddings.pieces import spell_new_tokens
from xlang.errors import XlangError

FIT_STEPS = 150
"""SmolLM2-135M, Korean, first 6,000 validation characters: bits/char 3.701 (``subword-freq``) ->
3.682 after 60 steps -> 3.250 after 150 (base model 2.950, same scorer). Chinese gains nothing from
more: 300 steps ended at 1.27x the base, 150 at 1.23-1.27x (first 20,000 characters)."""
FIT_LEARNING_RATE = 1e-3
"""SmolLM2, Chinese, 150 steps on documents: 3e-3 diverges early (text loss 11.0 at the start) and ends
at 1.55x the base with English +5%; 1e-3 gives 1.23x. Also tried there and left out: the first
piece's row as a third map input (1.27x, English +0.6%) and free per-row residuals for the 2,000
most frequent new tokens (1.22x: within run-to-run noise, for 8x the parameters)."""
FIT_SEQUENCE = 256
FIT_BATCH = 4
COPY_WEIGHT = 1.0
"""Without the copy task the map does not learn to copy within 40-60 steps and BPC gets worse (3.76);
with only the copy task the next-token loss on real text climbs (8.1 -> 13 nats/token)."""
KEEP_WEIGHT = 10.0
"""Weight of the kept-language term: the nats per token the new rows take from ``keep_texts``. Mixing
one English sequence in four into the next-token loss instead left English bits/char 2.9% up on
SmolLM2 (Korean fit): that loss's gradient on the stolen mass is as small as the mass."""
KEEP_TOKENS = 65536
"""Positions of ``keep_texts`` whose final states are computed once; each step scores KEEP_SAMPLE of them.
With 8,192 the map learned those states: a 300-step Chinese fit took 0.001-0.003 nats/token on them
and left English validation bits/char 9.9% up (SmolLM2); with 32,768 drawn uniformly a Korean fit
took 0.0072 on English validation, with 65,536 and KEEP_HARD_SHARE 0.00037. KEEP_HELD_OUT of them
are never trained on; the mass taken there is reported as ``fit_keep_nats_held_out``: a floor on what
English loses, not a bound (a Korean fit with KEEP_WEIGHT 30 held out 0.0033 nats/token and took
0.039 on English validation)."""
KEEP_CONTEXT = 1024
"""Tokens per forward pass that computes the kept states: long contexts, as bits per character reads
English (1,024-token windows). States from the fit's own 256-token sequences missed them: a 150-step
Chinese fit took 0.0018 nats/token on held-out such states, yet English validation rose 0.46%."""
KEEP_SAMPLE = 2048
KEEP_HARD_SHARE = 0.5
"""Share of each step's kept positions taken from those where the new rows currently take the most mass.
The mass is heavy-tailed: after a 150-step Korean fit, 1% of English positions carried 54-74% of it (up to
6 nats at one position: English about to say "chapter", "title" or "name", the Korean word's row wins).
Uniform samples meet such positions rarely, so the map never learns to keep off them."""
KEEP_REFRESH = 10
"""Steps between two passes over every trained kept position that find the hardest ones."""
KEEP_HELD_OUT = 0.125
ROW_STEPS = 0
"""Steps of the second phase: every new row gets a free residual, the map stays as fitted (see ``row_steps``)."""
ROW_SEQUENCE = 1024
ROW_BATCH = 2
ROW_LEARNING_RATE = 1e-3
COPY_LENGTH = 32
COPY_POOL = 2000
"""The most frequent new tokens of the training text, from which the copy task's sequences are drawn."""


def _parameter_names(model: Any) -> dict[str, str]:
    """Names of the input and output embedding weights among the model's parameters (one name if tied)."""
    names = {}
    wanted = {"input": model.get_input_embeddings().weight}
    output = model.get_output_embeddings()
    if output is not None:
        wanted["output"] = output.weight
    for name, parameter in model.named_parameters(remove_duplicate=False):
        for role, weight in wanted.items():
            if parameter is weight and role not in names:
                names[role] = name
    return names


def _separator(tokenizer: Any) -> int | None:
    """The token that starts a document (BOS, else EOS), as the bits-per-character scorer uses."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def _training_stream(tokenizer: Any, texts: Sequence[str], tokens: int, seed: int) -> list[int]:
    """About ``tokens`` ids of training text in a seeded random order of documents, separator-delimited."""
    import random

    separator = _separator(tokenizer)
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


def _kept_states(
    model: Any, tokenizer: Any, keep_texts: Sequence[str], output_weight: Any, new_index: Any, seed: int
) -> tuple[Any, Any] | None:
    """Final states of up to KEEP_TOKENS positions of ``keep_texts``, read KEEP_CONTEXT tokens at a time (or
    the model's longest context), and the log-sum-exp of their logits over every row but the new ones
    (fixed while the new rows are fitted); None without such text."""
    import torch

    from xlang.embeddings.initializers import output_states

    length = min(KEEP_CONTEXT, getattr(model.config, "max_position_embeddings", None) or KEEP_CONTEXT)
    # cut before the forward passes: the stream overshoots by up to a batch of documents (89,661 tokens
    # of SmolLM2's English for 32,768 wanted: 200 s of forward passes instead of 85 on two cores)
    stream = torch.tensor(_training_stream(tokenizer, keep_texts, KEEP_TOKENS, seed)[:KEEP_TOKENS], dtype=torch.long)
    if not len(stream):
        return None
    states = torch.cat(
        [output_states(model, stream[start : start + length].unsqueeze(0)) for start in range(0, len(stream), length)]
    )
    fixed_rows = torch.ones(output_weight.shape[0], dtype=torch.bool, device=output_weight.device)
    fixed_rows[new_index] = False
    fixed_weight = output_weight.detach()[fixed_rows].float()
    with torch.no_grad():
        # in blocks: all KEEP_TOKENS states against a 49k vocabulary at once would be 6 GB of logits
        fixed = torch.cat([torch.logsumexp(block @ fixed_weight.T, dim=1) for block in states.split(KEEP_SAMPLE)])
    return states.clone(), fixed


def _mass_taken(kept: tuple[Any, Any], positions: Any, output_rows: Any) -> Any:
    """Nats per token the new rows take at these kept positions (the old rows' logits are fixed)."""
    import torch

    states, fixed = kept
    new_logits = states[positions] @ output_rows.T
    return torch.logaddexp(fixed[positions], torch.logsumexp(new_logits, dim=1)) - fixed[positions]


def _hardest_kept(kept: tuple[Any, Any], trained: int, output_rows: Any, wanted: int) -> Any:
    """The ``wanted`` positions among the first ``trained`` kept ones where the new rows take the most mass
    now; the held-out positions after them are never looked at, so they stay a fair check."""
    import torch

    device = kept[0].device
    if not wanted:
        return torch.zeros(0, dtype=torch.long, device=device)
    taken = _mass_taken_in_blocks(kept, torch.arange(trained, device=device), output_rows)
    return taken.topk(min(wanted, trained)).indices


def _mass_taken_in_blocks(kept: tuple[Any, Any], positions: Any, output_rows: Any) -> Any:
    """``_mass_taken`` without gradients, KEEP_SAMPLE positions at a time: all trained or held-out positions
    against every new row at once would be tens of thousands x new-vocabulary logits."""
    import torch

    with torch.no_grad():
        return torch.cat([_mass_taken(kept, block, output_rows) for block in positions.split(KEEP_SAMPLE)])


def _autocast(device: Any) -> Any:
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    from xlang.train.pretraining import cpu_has_fast_bf16

    return torch.autocast("cpu", dtype=torch.bfloat16) if cpu_has_fast_bf16() else contextlib.nullcontext()


def subword_fit_init(
    *,
    model: Any,
    base_tokenizer: Any,
    tokenizer: Any,
    new_token_ids: Sequence[int],
    texts: Sequence[str] = (),
    keep_texts: Sequence[str] = (),
    seed: int = 0,
    fit_steps: int = FIT_STEPS,
    fit_learning_rate: float = FIT_LEARNING_RATE,
    fit_sequence: int = FIT_SEQUENCE,
    fit_batch: int = FIT_BATCH,
    copy_weight: float = COPY_WEIGHT,
    row_steps: int = ROW_STEPS,
    row_sequence: int = ROW_SEQUENCE,
    row_batch: int = ROW_BATCH,
    row_learning_rate: float = ROW_LEARNING_RATE,
    progress: bool = True,
    **_: Any,
) -> dict[str, Any]:
    """``subword-freq``, then a shared map of the new rows fitted with the model frozen (see the module).

    ``texts`` is target-language training text. ``keep_texts`` is text the model must go on reading as
    before (English). Its final states do not depend on the new rows (it hardly contains new tokens), so
    they are computed once, and the fit adds the probability mass the new rows take there: exactly what
    its bits per character lose, as the old logits do not change. Without it English bits/char rose 1.1%
    on SmolLM2 (Korean fit).

    Give both as whole documents (``resolve.corpus_documents``), not paragraphs: the fit then reads
    text in context, as users and BPC do. Fitted on paragraphs (a document start every ~15 tokens),
    the new rows took mass in the long-context English states the fit never saw: SmolLM2's English
    bits/char rose 7.3% after a Chinese fit (0.10 nats/token taken on validation, 0.004 on the fit's
    own positions); on documents, +0.10%, and Chinese itself improved (1.32x -> 1.23x the base).

    ``row_steps`` > 0 adds a second phase: the map is kept as fitted and every new row gets a free
    residual, trained on ``row_batch`` sequences of ``row_sequence`` tokens a step with the same
    English term (no copy task: real text has its own repeats at that length). The map cannot tell
    rare words apart (Chinese stays at 1.27x after 150 or 300 map steps); rows of their own can.
    """
    import torch

    if not texts:
        raise XlangError(
            "initializer 'subword-fit' needs the target language's training text (texts=) to fit on; "
            "use 'subword-freq' or 'subword-mean' without text"
        )
    if fit_steps < 0 or fit_sequence < 2 or fit_batch < 1:
        raise XlangError(
            f"subword-fit needs fit_steps >= 0, fit_sequence >= 2 and fit_batch >= 1; "
            f"got {fit_steps}, {fit_sequence}, {fit_batch}"
        )
    if row_steps < 0 or row_sequence < 2 or row_batch < 1:
        raise XlangError(
            f"subword-fit needs row_steps >= 0, row_sequence >= 2 and row_batch >= 1; "
            f"got {row_steps}, {row_sequence}, {row_batch}"
        )
    facts = subword_freq_init(
        model=model, base_tokenizer=base_tokenizer, tokenizer=tokenizer, new_token_ids=new_token_ids, texts=texts
    )
    if not new_token_ids or fit_steps + row_steps == 0:
        return {**facts, "fit_steps": 0}

    started = time.perf_counter()
    old = _old_size(base_tokenizer, new_token_ids)
    spelled = spell_new_tokens(base_tokenizer, tokenizer, new_token_ids)
    matrices = _matrices(model)
    names = _parameter_names(model)
    device = matrices[0][1].device
    index = torch.tensor(list(new_token_ids), dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed)

    # What each map reads: the current (subword-freq) rows and the row of each token's last piece.
    last_ids = torch.tensor([token.pieces[-1] if token.pieces else -1 for token in spelled], device=device)
    maps = []
    for role, weight in matrices:
        rows = weight.detach()[index].float()
        old_rows = weight.detach()[:old].float()
        last = torch.where((last_ids >= 0).unsqueeze(1), old_rows[last_ids.clamp(min=0)], old_rows.mean(0))
        dim = rows.shape[1]
        maps.append(
            {
                "weight": weight,
                "name": names["input" if role == "input" or len(matrices) == 1 else "output"],
                "rows": rows,
                "centred": rows - rows.mean(0),
                "last": last - last.mean(0),
                "A": torch.zeros(dim, dim, device=device, requires_grad=True),
                "B": torch.zeros(dim, dim, device=device, requires_grad=True),
                "c": torch.zeros(dim, device=device, requires_grad=True),
            }
        )

    needed = max(fit_steps * fit_batch * (fit_sequence + 1), row_steps * row_batch * (row_sequence + 1))
    stream = torch.tensor(_training_stream(tokenizer, texts, 2 * needed, seed), dtype=torch.long)
    longest = max(fit_sequence if fit_steps else 0, row_sequence if row_steps else 0)
    if len(stream) <= longest:
        raise XlangError(
            f"subword-fit: the training text gives {len(stream)} tokens, fewer than one sequence of "
            f"{longest + 1}; give more text or a smaller fit_sequence/row_sequence"
        )
    output = maps[-1]  # tied: the one matrix; untied: the output matrix
    kept = _kept_states(model, tokenizer, keep_texts, output["weight"], index, seed)
    new_set = set(int(token_id) for token_id in new_token_ids)
    frequent = [token_id for token_id, _ in Counter(stream.tolist()).most_common() if token_id in new_set]
    pool = torch.tensor(frequent[:COPY_POOL] or list(new_token_ids)[:COPY_POOL], dtype=torch.long)
    separator = _separator(tokenizer)
    separator = int(pool[0]) if separator is None else int(separator)

    def mapped_rows(entry: dict[str, Any]) -> Any:
        return entry["rows"] + entry["centred"] @ entry["A"] + entry["last"] @ entry["B"] + entry["c"]

    def fitted_rows(entry: dict[str, Any]) -> Any:
        # the second phase's residual; zero (and no gradient) until that phase
        return mapped_rows(entry) + entry["residual"]

    for entry in maps:
        entry["residual"] = torch.zeros_like(entry["rows"])

    # the last KEEP_HELD_OUT of the kept positions are never trained on: they show whether the map
    # keeps off English in general or only on the states it was fitted on
    trained_kept = len(kept[0]) - int(KEEP_HELD_OUT * len(kept[0])) if kept is not None else 0

    def loss_of(inputs: Any, score_from: int, current: list[Any]) -> Any:
        weights = {
            entry["name"]: entry["weight"].detach().index_put((index,), rows.to(entry["weight"].dtype))
            for entry, rows in zip(maps, current, strict=True)
        }
        with _autocast(device):
            logits = torch.func.functional_call(model, weights, args=(), kwargs={"input_ids": inputs}).logits
        targets = inputs[:, score_from + 1 :]
        predicted = logits[:, score_from:-1].float()
        return torch.nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), targets.reshape(-1))

    wanted_hard = int(KEEP_HARD_SHARE * min(KEEP_SAMPLE, trained_kept))
    map_parameters = [entry[key] for entry in maps for key in ("A", "B", "c")]
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    was_training = model.training
    text_losses: list[float] = []
    copy_losses: list[float] = []
    keep_losses: list[float] = []
    row_losses: list[float] = []

    def run_phase(
        label: str, steps: int, parameters: list[Any], learning_rate: float, sequence: int, batch: int, copy: float
    ) -> list[float]:
        """``steps`` Adam steps on ``parameters``; returns the next-token loss of each step."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(f"[bold]subword-fit {label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("text {task.fields[text]} copy {task.fields[copy]} nats/token"),
            TimeRemainingColumn(),
            disable=not progress,
            transient=True,
        )
        optimizer = torch.optim.Adam(parameters, lr=learning_rate)
        hardest = torch.zeros(0, dtype=torch.long, device=device)  # found at step 0, then every KEEP_REFRESH steps
        losses: list[float] = []
        with torch.enable_grad(), bar:
            task = bar.add_task(label, total=steps, text="-", copy="-")
            for step in range(steps):
                starts = torch.randint(0, len(stream) - sequence, (batch,), generator=generator)
                text = torch.stack([stream[start : start + sequence] for start in starts.tolist()]).to(device)
                current = [fitted_rows(entry) for entry in maps]  # once a step: every term reads them
                text_loss = loss_of(text, 0, current)
                total = text_loss
                if copy:
                    picks = pool[torch.randint(len(pool), (batch, COPY_LENGTH), generator=generator)]
                    copy_input = torch.cat([torch.full((batch, 1), separator), picks, picks], dim=1).to(device)
                    copy_loss = loss_of(copy_input, COPY_LENGTH + 1, current)
                    total = total + copy * copy_loss
                    copy_losses.append(float(copy_loss.detach()))
                if kept is not None:
                    if step % KEEP_REFRESH == 0:
                        hardest = _hardest_kept(kept, trained_kept, current[-1].detach(), wanted_hard)
                    count = min(KEEP_SAMPLE, trained_kept) - len(hardest)
                    uniform = torch.randint(0, trained_kept, (count,), generator=generator).to(device)
                    taken = _mass_taken(kept, torch.cat([hardest, uniform]), current[-1]).mean()
                    total = total + KEEP_WEIGHT * taken
                    keep_losses.append(float(taken.detach()))
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                losses.append(float(text_loss.detach()))
                bar.update(
                    task,
                    advance=1,
                    text=f"{losses[-1]:.2f}",
                    copy=f"{copy_losses[-1]:.2f}" if copy and copy_losses else "-",
                )
        return losses

    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        model.eval()
        if fit_steps:
            text_losses = run_phase(
                "map", fit_steps, map_parameters, fit_learning_rate, fit_sequence, fit_batch, copy_weight
            )
        if row_steps:
            for entry in maps:
                for key in ("A", "B", "c"):
                    entry[key].requires_grad_(False)
                entry["residual"].requires_grad_(True)
            residuals = [entry["residual"] for entry in maps]
            row_losses = run_phase("rows", row_steps, residuals, row_learning_rate, row_sequence, row_batch, 0.0)
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)

    for phase_losses, knob, rate in (
        (text_losses, "fit_learning_rate", fit_learning_rate),
        (row_losses, "row_learning_rate", row_learning_rate),
    ):
        if any(math.isnan(value) for value in phase_losses):
            raise XlangError(f"subword-fit: the next-token loss became NaN; lower {knob} (was {rate})")
    with torch.no_grad():
        final = [fitted_rows(entry) for entry in maps]
        held_out = None
        if kept is not None and trained_kept < len(kept[0]):
            positions = torch.arange(trained_kept, len(kept[0]), device=device)
            held_out = round(float(_mass_taken_in_blocks(kept, positions, final[-1]).mean()), 4)
        for entry, rows in zip(maps, final, strict=True):
            if not bool(torch.isfinite(rows).all()):
                raise XlangError(
                    f"subword-fit diverged (NaN or infinite rows); lower fit_learning_rate (was {fit_learning_rate})"
                    + (f" or row_learning_rate (was {row_learning_rate})" if row_steps else "")
                )
            _write(entry["weight"], new_token_ids, rows)

    def ends(values: list[float]) -> list[float]:
        window = max(1, min(10, len(values) // 4))
        return [round(sum(values[:window]) / window, 3), round(sum(values[-window:]) / window, 3)]

    facts.update(
        {
            "fit_steps": fit_steps,
            "fit_seconds": round(time.perf_counter() - started, 1),
            "fit_text_loss_first_last": ends(text_losses) if text_losses else None,
            "fit_copy_loss_first_last": ends(copy_losses) if copy_losses else None,
            "fit_parameters": sum(parameter.numel() for parameter in map_parameters),
            "fit_row_steps": row_steps,
            "fit_row_text_loss_first_last": ends(row_losses) if row_losses else None,
            "fit_stream_tokens": len(stream),
            "fit_keep_nats_taken_first_last": ends(keep_losses) if keep_losses else None,
            "fit_keep_nats_held_out": held_out,
        }
    )
    return facts
