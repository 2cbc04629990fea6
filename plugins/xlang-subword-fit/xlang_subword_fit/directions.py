"""The directions the output layer reads: where a change to an output row moves logits, and where it hardly does.

A logit is ``state . row``, so a change ``delta`` to a row moves that token's logits by ``state . delta``. The
model's final states are far from isotropic (SmolLM2-135M: 96% of their second moment in 200 of 576
directions), while the embedding rows keep most of their energy in the weak directions. A change confined to
the directions beyond the ``k`` strongest changes a logit by at most ``sqrt(eigenvalue k+1)`` times its norm
and what the model reads of the token as much as any change of that size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xlang.embeddings.initializers import output_states
from xlang_subword_fit.text import training_stream


@dataclass(frozen=True)
class StateDirections:
    """Eigenvectors (columns, strongest first) and eigenvalues of the final states' second-moment matrix."""

    vectors: Any
    values: Any

    def strongest_holding(self, share: float) -> int:
        """How many of the strongest directions it takes to hold ``share`` of the states' second moment
        (at least one, and at most all but one, so that one direction is always left)."""
        held = self.values.cumsum(0) / self.values.sum()
        return max(1, min(int((held < share).sum()) + 1, len(self.values) - 1))

    def weak_projector(self, spared: int) -> Any:
        """The d x d projector onto every direction beyond the ``spared`` strongest."""
        weak = self.vectors[:, spared:]
        return weak @ weak.T


def state_directions(
    model: Any, tokenizer: Any, text_sets: Sequence[Sequence[str]], tokens: int, context: int, seed: int
) -> StateDirections:
    """The final states of up to ``tokens`` tokens of each text set, read ``context`` tokens at a time with
    ``tokenizer`` (the base one: the directions are the model's, before any new row is read)."""
    import torch

    longest = getattr(model.config, "max_position_embeddings", None) or context
    length = min(context, longest)
    parts = []
    for texts in text_sets:
        ids = torch.tensor(training_stream(tokenizer, texts, tokens, seed)[:tokens], dtype=torch.long)
        for start in range(0, len(ids), length):
            parts.append(output_states(model, ids[start : start + length].unsqueeze(0)))
    states = torch.cat(parts).double()
    values, vectors = torch.linalg.eigh(states.T @ states / len(states))
    device = parts[0].device
    strongest_first = vectors.flip(1).float().to(device)
    return StateDirections(vectors=strongest_first, values=values.flip(0).clamp(min=0).float().to(device))
