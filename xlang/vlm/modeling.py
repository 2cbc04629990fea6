"""The LLaVA forward pass used for training, LoRA placement and merging (imports torch).

`LlavaForTraining` runs a stock `LlavaForConditionalGeneration`'s own pieces (tower, projector,
language model) but (1) puts image features in place of the image tokens itself, so that cached
tower features can stand in for the tower, and (2) sends only the answer positions through the output
layer, with the engine's fused, chunked cross-entropy. Its forward returns `(loss_sum, n_tokens)`,
the engine's loss contract.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xlang.errors import XlangError

IGNORE_INDEX = -100


def vision_features(llava: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tower's selected hidden states (before the projector), exactly as LLaVA selects them."""
    config = llava.config
    outputs = llava.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    layers = config.vision_feature_layer
    pool = [outputs.hidden_states[layers]] if isinstance(layers, int) else [outputs.hidden_states[i] for i in layers]
    if config.vision_feature_select_strategy == "default":
        pool = [hidden[:, 1:] for hidden in pool]
    return pool[0] if len(pool) == 1 else torch.cat(pool, dim=-1)


class LlavaForTraining(nn.Module):
    """A (peft-wrapped) LlavaForConditionalGeneration whose forward returns `(loss_sum, n_tokens)`."""

    def __init__(self, llava: Any, *, image_token_id: int, chunk_tokens: int = 4096) -> None:
        super().__init__()
        self.llava = llava
        self.image_token_id = image_token_id
        self.chunk_tokens = chunk_tokens

    def base(self) -> Any:
        """The LlavaForConditionalGeneration inside (through a peft wrapper if there is one)."""
        return self.llava.get_base_model() if hasattr(self.llava, "get_base_model") else self.llava

    def outside_reads(self) -> list[nn.Parameter]:
        """The output layer's parameters, which the fused loss reads without calling the layer (for ZeRO-3)."""
        from xlang.train.loss import head_parameters

        return head_parameters(self.base().lm_head)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from xlang.train.loss import fused_linear_cross_entropy, head_parts

        llava = self.base()
        core = llava.model
        embeds = core.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            tower_dtype = next(core.vision_tower.parameters()).dtype
            with torch.no_grad():
                image_features = vision_features(llava, pixel_values.to(tower_dtype))
        if image_features is not None:
            projector = core.multi_modal_projector
            projected = projector(image_features.to(projector.linear_1.weight.dtype))
            mask = (input_ids == self.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, projected.reshape(-1, projected.shape[-1]).to(embeds.dtype))
        hidden = core.language_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        selected, wanted = hidden[keep], targets[keep]
        n_tokens = keep.sum()
        parts = head_parts(llava.lm_head)
        if parts is None:
            logits = llava.lm_head(selected).float()
            return nn.functional.cross_entropy(logits, wanted, reduction="sum"), n_tokens
        return fused_linear_cross_entropy(selected, parts, wanted, chunk_tokens=self.chunk_tokens), n_tokens


def lora_target_regex(llava: Any) -> str:
    """A peft regex for every Linear layer of the language model (the tower and projector stay out)."""
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in llava.model.language_model.named_modules()
            if isinstance(module, nn.Linear)
        }
    )
    if not leaves:
        raise XlangError("the language model has no Linear layers for LoRA")
    return rf"model\.language_model\..*\.({'|'.join(leaves)})"


def apply_lora(llava: Any, *, r: int, alpha: int, dropout: float) -> Any:
    """Wrap the LLaVA with peft LoRA adapters on its language model."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_regex(llava), bias="none"
    )
    return get_peft_model(llava, config)


def trainable_selector(trainable: str) -> Any:
    """The engine's `trainable(name, param)` for `projector`, `lora` (projector + adapters) or `full`."""

    def select(name: str, _param: Any) -> bool:
        if "multi_modal_projector" in name:
            return True
        if trainable == "lora":
            return "lora_" in name
        if trainable == "full":
            return ".language_model." in name or name.endswith("lm_head.weight")
        return False

    return select


def compile_language_layers(module: LlavaForTraining) -> int:
    """`torch.compile` every decoder layer of the language model in place (state dict names unchanged)."""
    layers = getattr(module.base().model.language_model, "layers", None) or []
    for layer in layers:
        layer.compile()
    return len(layers)


def merged_llava(module: LlavaForTraining) -> Any:
    """The plain LlavaForConditionalGeneration after training (LoRA merged into the weights)."""
    llava = module.llava
    if hasattr(llava, "merge_and_unload"):
        llava = llava.merge_and_unload()
    return llava
