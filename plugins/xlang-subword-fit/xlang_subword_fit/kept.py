"""The kept text: final states of the companion languages' documents, whose predictions the fit must not change.

Those texts hardly contain new tokens, so their final states do not depend on the new rows: they are
computed once, with the log-sum-exp of their logits over every old row. What the new rows can change there
is only the probability mass they take, ``log(exp(fixed) + sum exp(new logits)) - fixed`` nats per
token, which is exactly what the text's bits per character lose (the old logits do not move). The fit
adds that mass to its loss, on a sample of positions each step: half of them the positions where the
new rows take the most mass at that point (the mass is heavy-tailed), half drawn uniformly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlang.embeddings.initializers import output_states
from xlang.train.progress import StepProgress
from xlang_subword_fit.options import SubwordFitOptions
from xlang_subword_fit.text import training_stream


@dataclass(frozen=True)
class KeptStates:
    """Final states of the kept positions and their old rows' log-sum-exp; the first ``trained`` are
    trained on, the rest are held out."""

    states: Any
    fixed: Any
    trained: int
    block: int
    """Positions scored at once when all of them are (memory, not results)."""

    def __len__(self) -> int:
        return len(self.states)

    def mass_taken(self, positions: Any, output_rows: Any) -> Any:
        """Nats per token the new rows take at these kept positions (the old rows' logits are fixed)."""
        import torch

        new_logits = self.states[positions] @ output_rows.T
        fixed = self.fixed[positions]
        return torch.logaddexp(fixed, torch.logsumexp(new_logits, dim=1)) - fixed

    def mass_taken_in_blocks(self, positions: Any, output_rows: Any) -> Any:
        """``mass_taken`` without gradients, ``block`` positions at a time: all trained or held-out
        positions against every new row at once would be tens of thousands x new-vocabulary logits."""
        import torch

        with torch.no_grad():
            return torch.cat([self.mass_taken(part, output_rows) for part in positions.split(self.block)])

    def hardest(self, output_rows: Any, wanted: int) -> Any:
        """The ``wanted`` trained positions where the new rows take the most mass now; the held-out
        positions after them are never looked at, so they stay a fair check."""
        import torch

        device = self.states.device
        if not wanted:
            return torch.zeros(0, dtype=torch.long, device=device)
        taken = self.mass_taken_in_blocks(torch.arange(self.trained, device=device), output_rows)
        return taken.topk(min(wanted, self.trained)).indices

    def held_out_mass(self, output_rows: Any) -> float | None:
        """Mean nats per token the new rows take on the held-out positions (None when none is held out)."""
        import torch

        if self.trained >= len(self):
            return None
        positions = torch.arange(self.trained, len(self), device=self.states.device)
        return round(float(self.mass_taken_in_blocks(positions, output_rows).mean()), 4)


def kept_states(
    model: Any,
    tokenizer: Any,
    keep_texts: Sequence[str],
    output_weight: Any,
    new_index: Any,
    seed: int,
    options: SubwordFitOptions,
) -> KeptStates | None:
    """Final states of up to ``keep_tokens`` positions of ``keep_texts``, read ``keep_context`` tokens at a
    time (or the model's longest context), and the log-sum-exp of their logits over every row but the new
    ones; None without such text."""
    import torch

    longest = getattr(model.config, "max_position_embeddings", None) or options.keep_context
    length = min(options.keep_context, longest)
    # cut before the forward passes: the stream overshoots by up to a batch of documents (89,661 tokens
    # of SmolLM2's English for 32,768 wanted: 200 s of forward passes instead of 85 on two cores)
    stream = training_stream(tokenizer, keep_texts, options.keep_tokens, seed)[: options.keep_tokens]
    ids = torch.tensor(stream, dtype=torch.long)
    if not len(ids):
        return None
    starts = range(0, len(ids), length)
    parts = []
    # minutes on CPUs (65,536 positions of SmolLM2: about 3 on two cores), so it shows progress
    with StepProgress(
        f"init:{options.initializer_name} English states", len(starts), enabled=options.progress
    ) as progress:
        for done, start in enumerate(starts, 1):
            parts.append(output_states(model, ids[start : start + length].unsqueeze(0)))
            progress.step(done)
    states = torch.cat(parts)
    fixed_rows = torch.ones(output_weight.shape[0], dtype=torch.bool, device=output_weight.device)
    fixed_rows[new_index] = False
    fixed_weight = output_weight.detach()[fixed_rows].float()
    with torch.no_grad():
        # in blocks: all kept states against a 49k vocabulary at once would be 6 GB of logits
        fixed = torch.cat([torch.logsumexp(part @ fixed_weight.T, dim=1) for part in states.split(options.keep_sample)])
    trained = len(states) - int(options.keep_held_out * len(states))
    return KeptStates(states=states.clone(), fixed=fixed, trained=trained, block=options.keep_sample)
