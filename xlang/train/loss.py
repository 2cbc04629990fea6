"""Output layer + cross-entropy fused and chunked, aware of peft's trainable new rows.

Why: a causal LM's usual loss materializes `tokens x vocabulary` logits in fp32 (for a 40k vocabulary
and 8k tokens per micro-batch that is 1.3 GB, three times over with its softmax and gradient), and the
backward pass computes a gradient for the whole output matrix even when only the new tokens' rows
train. Here the logits exist one chunk at a time, the gradients with respect to the hidden states and
to the trainable rows are computed in the same pass (nothing but the hidden states is kept for
backward), and the frozen rows get no gradient at all.

`CausalLMWithFusedLoss(model)` wraps a (peft) causal LM so that DDP/FSDP see a single forward that
returns `(loss_sum, n_tokens)`, the engine's loss contract. Output layers it does not recognise (a bias,
logit soft-capping, LoRA on the head) fall back to calling the head per chunk under activation
checkpointing: still chunked, just without the fused gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

IGNORE_INDEX = -100


@dataclass
class HeadParts:
    """The output layer as tensors: `weight` (V x d, frozen or fully trainable) whose rows `index` are
    replaced by `rows` (k x d, trainable), as peft's trainable-token layers do."""

    weight: torch.Tensor
    rows: torch.Tensor | None
    index: torch.Tensor | None


_INDEX_CACHE: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}
_CACHED_RANGES: dict[int, tuple[int, int] | None] = {}
"""Ranges of the cached index tensors, by tensor id (those tensors live as long as the process)."""


def _index_tensor(indices: Any, device: torch.device) -> torch.Tensor:
    """The new rows' ids on `device`, made once per (ids, device) instead of once per step."""
    key = (tuple(int(i) for i in indices), str(device))
    if key not in _INDEX_CACHE:
        tensor = torch.as_tensor(key[0], device=device, dtype=torch.long)
        _INDEX_CACHE[key] = tensor
        _CACHED_RANGES[id(tensor)] = _range_of(list(key[0]))
    return _INDEX_CACHE[key]


def _range_of(values: list[int]) -> tuple[int, int] | None:
    consecutive = bool(values) and values == list(range(values[0], values[0] + len(values)))
    return (values[0], values[0] + len(values)) if consecutive else None


def _contiguous_range(index: torch.Tensor) -> tuple[int, int] | None:
    """(first, last + 1) when the ids are consecutive (the usual case: new ids follow the old vocabulary)."""
    if id(index) in _CACHED_RANGES and any(t is index for t in _INDEX_CACHE.values()):
        return _CACHED_RANGES[id(index)]
    return _range_of(index.tolist())


def _active(layer: Any) -> str:
    active = layer.active_adapters
    return active[0] if isinstance(active, list | tuple) else active


def head_parts(head: nn.Module) -> HeadParts | None:
    """Recognise a plain Linear head, peft's trainable-token layer/wrapper and modules-to-save wrapper."""
    layer = getattr(head, "token_adapter", head)
    if hasattr(layer, "trainable_tokens_delta") and hasattr(layer, "base_layer"):
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer.base_layer
        if not isinstance(base, nn.Linear) or base.bias is not None or getattr(layer, "merged", False):
            return None
        if getattr(layer, "disable_adapters", False):
            return HeadParts(base.weight, None, None)
        name = _active(layer)
        rows = layer.trainable_tokens_delta[name]
        return HeadParts(base.weight, rows, _index_tensor(layer.token_indices[name], rows.device))
    if hasattr(head, "modules_to_save") and hasattr(head, "original_module"):
        if getattr(head, "disable_adapters", False):
            inner = head.original_module
        else:
            inner = head.modules_to_save[_active(head)]
        if isinstance(inner, nn.Linear) and inner.bias is None:
            return HeadParts(inner.weight, None, None)
        return None
    if type(head) is nn.Linear and head.bias is None:
        return HeadParts(head.weight, None, None)
    return None


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum over valid tokens of -log softmax(h W^T)[label], gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        rows: torch.Tensor | None,
        index: torch.Tensor | None,
        labels: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        compute_dtype = hidden.dtype
        merged = weight.to(compute_dtype)
        if rows is not None:
            merged = merged.index_copy(0, index, rows.to(compute_dtype))
        need_hidden = ctx.needs_input_grad[0]
        need_weight = ctx.needs_input_grad[1]
        need_rows = rows is not None and ctx.needs_input_grad[2]
        contiguous = _contiguous_range(index) if need_rows else None
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_rows = torch.zeros(rows.shape, dtype=torch.float32, device=rows.device) if need_rows else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            y = labels[start : start + chunk]
            valid = y != IGNORE_INDEX
            target = torch.where(valid, y, 0)
            logits = (h @ merged.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if not (need_hidden or need_weight or need_rows):
                continue
            # d(sum loss)/d logits = softmax - one_hot, zero on ignored tokens; reuse the logits' memory
            grad = logits.sub_(lse[:, None]).exp_()
            grad[torch.arange(len(y), device=y.device), target] -= 1.0
            grad.mul_(valid[:, None])
            grad = grad.to(compute_dtype)
            if need_hidden:
                grad_hidden[start : start + chunk] = grad @ merged
            if need_weight:
                grad_weight += (grad.t() @ h).float()
            if need_rows:
                part = grad[:, contiguous[0] : contiguous[1]] if contiguous else grad.index_select(1, index)
                grad_rows += (part.t() @ h).float()
        if need_weight and rows is not None:
            grad_weight.index_fill_(0, index, 0.0)  # those rows come from `rows`, not `weight`
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else torch.empty(0),
            grad_weight if grad_weight is not None else torch.empty(0),
            grad_rows if grad_rows is not None else torch.empty(0),
        )
        ctx.flags = (need_hidden, need_weight, need_rows)
        ctx.dtypes = (weight.dtype, rows.dtype if rows is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grad_hidden, grad_weight, grad_rows = ctx.saved_tensors
        need_hidden, need_weight, need_rows = ctx.flags
        weight_dtype, rows_dtype = ctx.dtypes
        scale = grad_output.float()
        return (
            (grad_hidden * scale.to(grad_hidden.dtype)) if need_hidden else None,
            (grad_weight * scale).to(weight_dtype) if need_weight else None,
            (grad_rows * scale).to(rows_dtype) if need_rows else None,
            None,
            None,
            None,
        )


def head_parameters(head: nn.Module) -> list[nn.Parameter]:
    """The parameters `head_parts` hands to the fused loss (the matrix and the new rows), none when the head
    is one it does not recognise (the fallback calls the head itself)."""
    parts = head_parts(head)
    if parts is None:
        return []
    return [tensor for tensor in (parts.weight, parts.rows) if isinstance(tensor, nn.Parameter)]


def fused_linear_cross_entropy(
    hidden: torch.Tensor, parts: HeadParts, labels: torch.Tensor, *, chunk_tokens: int = 4096
) -> torch.Tensor:
    """Summed cross-entropy of `hidden` (N x d) through the head described by `parts` against `labels` (N).

    Under autocast the matmuls run in the autocast dtype (softmax in fp32); otherwise in `hidden`'s dtype.
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        hidden = hidden.to(torch.get_autocast_dtype(device_type))
    with torch.autocast(device_type, enabled=False):
        return _FusedLinearCrossEntropy.apply(hidden, parts.weight, parts.rows, parts.index, labels, chunk_tokens)


def _chunked_head_loss(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Fallback for heads `head_parts` does not know: the head runs per chunk under checkpointing."""
    from torch.utils.checkpoint import checkpoint

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = head(h).float()
        return nn.functional.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        total = total + checkpoint(
            piece, hidden[start : start + chunk], labels[start : start + chunk], use_reentrant=False
        )
    return total


def causal_lm_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, Any]:
    """(decoder, head, config) of a causal LM, through a peft wrapper if there is one."""
    inner = model
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    return decoder, inner.get_output_embeddings(), inner.config


class CausalLMWithFusedLoss(nn.Module):
    """A causal LM whose forward returns `(loss_sum, n_tokens)` with the fused, chunked loss.

    Holding the model as a submodule keeps parameter names as `model.<peft names>`, so the engine's
    checkpoints and `accelerate.prepare` see one module.
    """

    def __init__(self, model: nn.Module, *, chunk_tokens: int = 4096) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def outside_reads(self) -> list[nn.Parameter]:
        """The output layer's parameters, which the fused loss reads without calling the layer (for ZeRO-3)."""
        return head_parameters(causal_lm_parts(self.model)[1])

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        decoder, head, config = causal_lm_parts(self.model)
        output = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False)
        hidden = output.last_hidden_state[:, :-1].reshape(-1, output.last_hidden_state.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        if attention_mask is not None:
            targets = targets.masked_fill(attention_mask[:, 1:].reshape(-1) == 0, IGNORE_INDEX)
        n_tokens = (targets != IGNORE_INDEX).sum()
        parts = head_parts(head)
        special = getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
        if parts is None or special:
            return _chunked_head_loss(hidden, head, targets, self.chunk_tokens), n_tokens
        return fused_linear_cross_entropy(hidden, parts, targets, chunk_tokens=self.chunk_tokens), n_tokens


def fused_loss(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    """The engine's `loss_fn` for a `CausalLMWithFusedLoss` (possibly DDP-wrapped)."""
    return model(**batch)
