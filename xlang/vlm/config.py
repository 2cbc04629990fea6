"""Settings of the vision stages: pydantic, frozen, no torch, so the CLI validates them in a second.

`AssembleConfig` builds the LLaVA; `AlignConfig` (stage 1) and `InstructConfig` (stage 2) train it.
Defaults fit the CPU demo (the embedded SmolLM2 + DINOv2-small); on GPUs raise `steps` and
`micro_batch` (dtype and mixed precision switch to bf16 by themselves).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from xlang.train.config import StageKnobs

DEFAULT_TOWER = "dinov2-small"


class AssembleConfig(BaseModel):
    """How the LLaVA is put together. Defaults: DINOv2-small (the `xlang-dinov2` plugin) at 224 px (256 patch
    tokens)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vision_tower: str = DEFAULT_TOWER
    """Name of a registered vision tower (`xlang plugins` lists them): `dinov2-small`, or `hf` for any
    Hugging Face vision model folder or hub id, e.g. with
    `vision_tower_options={"path": "openai/clip-vit-large-patch14-336"}`."""
    vision_tower_options: dict[str, Any] = Field(default_factory=dict)
    """The tower's options, validated by the tower's own options class (unknown ones are an error)."""
    image_size: int | None = Field(default=None, gt=0)
    """Square input side; None keeps the tower processor's. Only DINOv2 towers accept another size."""
    vision_feature_layer: int = -2
    """Hidden state fed to the projector (LLaVA-1.5: the penultimate layer)."""
    vision_feature_select_strategy: Literal["auto", "default", "full"] = "auto"
    """`default` drops the class token, `full` keeps every token; `auto`: default when the tower has one."""
    projector: Literal["mlp2x_gelu"] = "mlp2x_gelu"
    merge_adapter: bool = True
    """When the LLM folder is a peft adapter: merge it into the base weights (the only mode a plain
    `LlavaForConditionalGeneration` folder can carry)."""
    seed: int = 0
    """Seeds the projector's initialization."""


class VitStageConfig(StageKnobs):
    """One LLaVA training stage. Defaults fit a CPU demo; on GPUs raise `steps`, `micro_batch`, and use
    `dtype="auto"` (bf16 there)."""

    stage: Literal["align", "instruct"]
    steps: int = Field(gt=0)
    lr: float = Field(gt=0)
    trainable: Literal["projector", "lora", "full"]
    """`projector` (stage 1), `lora` (projector + LoRA on the LLM), `full` (projector + the whole LLM)."""
    tasks: tuple[str, ...] = ()
    """Task types to train on (e.g. ("caption",)); empty = every record."""
    prompt_format: Literal["chat", "plain"] = "chat"
    """`chat`: the model's chat template, system prompt included; `plain` (LLaVA-1.5 stage 1): image tokens,
    newline, the first answer, end token."""
    lang_weights: dict[str, float] = Field(default_factory=dict)
    """Sampling weight per language code; empty = every record equally likely. Languages missing from a
    non-empty mapping are not sampled."""
    warmup_steps: int = Field(default=0, ge=0)
    max_length: int = Field(default=2048, gt=0)
    """Samples longer than this (image tokens included) are skipped and reported, never truncated."""
    cache_vision_features: Literal["auto", "yes", "no"] = "auto"
    """Compute the frozen tower's features once per image: `auto` = when there are at most 512 images."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Frozen weights' dtype: `auto` = float32 on CPU, bfloat16 on GPU (trainable weights stay float32)."""
    save_every: int = Field(default=0, ge=0)
    log_every: int = Field(default=5, gt=0)
    tensorboard: bool = False
    on_bad_sample: Literal["skip", "stop"] = "skip"
    """`skip`: report (file and id) and leave the sample out; `stop`: refuse to train."""
    eval_samples: int = Field(default=0, ge=0)
    """A fixed, seeded set of this many training samples whose mean answer loss is measured before and
    after the stage (`stage.json`: eval_loss_start, eval_loss_end); 0 = none."""
    export_adapter: bool = False
    """Stage 2 with LoRA: also save the LoRA adapter (peft format) next to the merged model."""

    @model_validator(mode="after")
    def _consistent(self) -> VitStageConfig:
        for name, weight in self.lang_weights.items():
            if not weight > 0:
                raise ValueError(f"lang_weights[{name!r}] must be positive, got {weight}")
        if self.stage == "align" and self.trainable != "projector":
            raise ValueError("stage 1 (align) trains the projector only; set trainable='projector'")
        return self


class AlignConfig(VitStageConfig):
    """Stage 1: the projector learns to map image features into the LLM's space, on captions."""

    stage: Literal["align", "instruct"] = "align"
    steps: int = Field(default=16, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    warmup_steps: int = Field(default=2, ge=0)
    trainable: Literal["projector", "lora", "full"] = "projector"
    tasks: tuple[str, ...] = ("caption",)
    prompt_format: Literal["chat", "plain"] = "plain"


class InstructConfig(VitStageConfig):
    """Stage 2: projector + LoRA on multilingual visual instructions (all task types)."""

    stage: Literal["align", "instruct"] = "instruct"
    steps: int = Field(default=24, gt=0)
    lr: float = Field(default=5e-4, gt=0)
    micro_batch: int = Field(default=2, gt=0)
    warmup_steps: int = Field(default=3, ge=0)
    trainable: Literal["projector", "lora", "full"] = "lora"
