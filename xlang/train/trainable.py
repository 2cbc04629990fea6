"""What trains: one peft model for the whole schedule, and per stage the parameters it unfreezes.

Why one model: a staged schedule (new rows -> output layer -> LoRA) still ends in one plain peft adapter
on the expanded base, so the adapter is built once for the union of every stage's parts (LoRA B starts
at zero, modules-to-save copies start equal to the original, so an untouched part changes nothing) and
each stage only flips `requires_grad`. Rows of a matrix that a stage trains only partly (`new-rows` of a
full output-layer copy) get a gradient hook that zeroes the old rows.

Kinds:
- `peft-lora`: LoRA on every attention/MLP linear layer (`all-linear`) + new rows through
  `trainable_token_indices` (input and output; peft ties them for tied embeddings), or modules-to-save
  copies of the embedding/output layer when a stage trains them whole;
- `peft-tokens`: only new rows (`TrainableTokensConfig`);
- `plain`: no adapter (full fine-tuning, or whole embeddings without LoRA); the merged model is the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xlang.errors import XlangError


@dataclass
class Trainable:
    model: Any
    kind: str
    new_token_ids: list[int]
    parts: frozenset[str]
    hooks: list[Any] = field(default_factory=list)

    @property
    def has_adapter(self) -> bool:
        return self.kind.startswith("peft")


def _module_name(model: Any, module: Any) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise XlangError(f"module {type(module).__name__} not found in the model")


def _tied(model: Any) -> bool:
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(text_config, "tie_word_embeddings", False):
        return True
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def build_trainable(
    model: Any,
    new_token_ids: Sequence[int],
    parts: set[str] | frozenset[str],
    *,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_targets: Sequence[str] | str = "all-linear",
) -> Trainable:
    """Wrap `model` for the union of parts every stage of the schedule will train."""
    parts = frozenset(parts)
    new_ids = sorted({int(i) for i in new_token_ids})
    rows = model.get_input_embeddings().weight.shape[0]
    if new_ids and (new_ids[0] < 0 or new_ids[-1] >= rows):
        raise XlangError(f"new token ids run outside the embedding matrix (0..{rows - 1}); was the model resized?")
    if "new-rows" in parts and not new_ids:
        raise XlangError("the schedule trains 'new-rows' but no new token ids were given (did the tokenizer grow?)")
    embed_name = _module_name(model, model.get_input_embeddings()).rsplit(".", 1)[-1]
    head_name = _module_name(model, model.get_output_embeddings()).rsplit(".", 1)[-1]
    tied = _tied(model)
    if "all" in parts or ("lora" not in parts and parts & {"output", "embeddings"}):
        return Trainable(model, "plain", new_ids, parts)

    from peft import LoraConfig, TrainableTokensConfig, get_peft_model

    if "lora" not in parts:
        targets = [embed_name] if tied else [embed_name, head_name]
        peft_model = get_peft_model(model, TrainableTokensConfig(target_modules=targets, token_indices=new_ids))
        return Trainable(peft_model, "peft-tokens", new_ids, parts)

    kwargs: dict[str, Any] = {}
    whole_embeddings = "embeddings" in parts or ("output" in parts and tied)
    if whole_embeddings:
        kwargs["modules_to_save"] = [embed_name] if tied else [embed_name, head_name]
        if tied:
            kwargs["ensure_weight_tying"] = True
    elif "output" in parts:
        kwargs["modules_to_save"] = [head_name]
        if new_ids:
            kwargs["trainable_token_indices"] = {embed_name: new_ids}
    elif new_ids:
        kwargs["trainable_token_indices"] = new_ids if tied else {embed_name: new_ids, head_name: new_ids}
    config = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_targets if isinstance(lora_targets, str) else list(lora_targets),
        task_type="CAUSAL_LM",
        **kwargs,
    )
    return Trainable(get_peft_model(model, config), "peft-lora", new_ids, parts)


def _embedding_params(trainable: Trainable) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(input-embedding params, output-layer params) that can train, as (name, param) pairs."""
    named = list(trainable.model.named_parameters())
    if trainable.kind == "plain":
        inner = trainable.model
        embed = inner.get_input_embeddings().weight
        head = inner.get_output_embeddings().weight
        return ([(n, p) for n, p in named if p is embed], [(n, p) for n, p in named if p is head])
    inner = trainable.model.get_base_model()
    embed_module, head_module = inner.get_input_embeddings(), inner.get_output_embeddings()
    embed_ids = {id(p) for p in embed_module.parameters()}
    head_ids = {id(p) for p in head_module.parameters()}

    def copies(ids: set[int]) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in named if id(p) in ids and ("modules_to_save" in n or "trainable_tokens_delta" in n)]

    return copies(embed_ids), copies(head_ids)


def stage_selection(trainable: Trainable, stage_parts: Sequence[str]) -> tuple[Callable[[str, Any], bool], list[Any]]:
    """(predicate for the engine's `trainable=`, params to row-mask) of one stage."""
    stage = set(stage_parts)
    embed, head = _embedding_params(trainable)
    full: set[int] = set()
    rows: set[int] = set()
    named = list(trainable.model.named_parameters())
    if "all" in stage:
        full |= {id(p) for _, p in named}
    if "lora" in stage:
        full |= {id(p) for n, p in named if "lora_" in n}
    if "embeddings" in stage:
        full |= {id(p) for _, p in embed + head}
    if "output" in stage:
        full |= {id(p) for _, p in head}
    if "new-rows" in stage:
        for _, p in embed + head:
            if id(p) in full:
                continue
            (rows if _is_full_matrix(p, trainable) else full).add(id(p))
    selected = full | rows
    if not selected:
        raise XlangError(f"stage parts {sorted(stage)} select no parameter of this model")
    masked = [p for _, p in named if id(p) in rows]
    return (lambda name, param: id(param) in selected), masked


def _is_full_matrix(param: Any, trainable: Trainable) -> bool:
    """True for a whole vocabulary matrix (needs a row mask), False for peft's new-row deltas."""
    return param.dim() == 2 and param.shape[0] > len(trainable.new_token_ids)


def add_row_masks(params: Sequence[Any], new_token_ids: Sequence[int]) -> list[Any]:
    """Zero the gradient of every row but the new tokens' (returns the hook handles to remove)."""
    import torch

    handles = []
    for param in params:
        mask = torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
        mask[list(new_token_ids)] = 1
        handles.append(param.register_hook(lambda grad, mask=mask: grad * mask.to(grad.dtype)))
    return handles


def upcast_trainable(trainable: Trainable, predicate_by_stage: Sequence[Callable[[str, Any], bool]]) -> None:
    """Keep every parameter some stage trains in fp32 (autocast runs the matmuls in half precision)."""
    import torch

    for name, param in trainable.model.named_parameters():
        if param.dtype in (torch.bfloat16, torch.float16) and any(pred(name, param) for pred in predicate_by_stage):
            param.data = param.data.float()


def disable_lora_input_cast(model: Any) -> None:
    """peft casts a LoRA layer's input to the adapter's dtype; under autocast that is a wasted copy."""
    for module in model.modules():
        if hasattr(module, "_cast_input_dtype"):  # peft's tuner layers read this flag with a default of True
            module.cast_input_dtype_enabled = False
