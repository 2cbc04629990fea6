"""Training configs: pydantic, frozen, no torch, so the CLI and recipes validate knobs in a second.

`TrainLoopConfig` is the generic engine's (shared with the VLM stages); `PretrainConfig` is the bilingual
pretraining stage's. A field that changes what the model learns goes into the run's config hash, so a
resumed run refuses a folder written by another configuration; fields that only change how often things
are logged or saved (`NON_TRAJECTORY_FIELDS`) do not.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from xlang.errors import XlangError

PART_NAMES: tuple[str, ...] = ("new-rows", "output", "embeddings", "lora", "all")
"""What a stage can train. `new-rows`: only the new tokens' input and output embedding rows; `output`:
the whole output layer (lm_head; with tied embeddings this is the shared matrix); `embeddings`: the
whole input and output embeddings; `lora`: LoRA adapters on every attention and MLP linear layer;
`all`: every weight (full fine-tuning)."""

NON_TRAJECTORY_FIELDS: frozenset[str] = frozenset(
    {"save_every", "keep_checkpoints", "eval_every", "log_every", "progress", "tensorboard"}
)
"""Config fields that do not change the trained weights: left out of the config hash."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainLoopConfig(_Frozen):
    """One engine run: an optimizer, a schedule, and how often to log, evaluate and checkpoint."""

    steps: int = Field(gt=0)
    """Optimizer steps (each = `grad_accum` micro-batches per process)."""
    lr: float = Field(default=2e-4, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """The learning rate decays to `lr * min_lr_ratio` at the last step."""
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    micro_batch: int = Field(default=1, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast (bf16 by the engine itself, fp16 through accelerate's scaler). Weights keep their dtype;
    the caller keeps trainable ones in fp32."""
    save_every: int = Field(default=0, ge=0)
    """Checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = Field(default=2, ge=1)
    eval_every: int = Field(default=0, ge=0)
    """Call `eval_fn` every N steps, at the start and at the end (0: never)."""
    log_every: int = Field(default=1, gt=0)
    progress: bool = True
    tensorboard: bool = True

    def config_hash(self, fingerprint: Mapping[str, Any] | None = None) -> str:
        """A short digest of everything that shapes the trajectory, plus the caller's fingerprint."""
        fields = {k: v for k, v in self.model_dump(mode="json").items() if k not in NON_TRAJECTORY_FIELDS}
        payload = json.dumps({"loop": fields, "fingerprint": dict(fingerprint or {})}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class StageConfig(_Frozen):
    """One step of a staged schedule (EEVE-style unfreezing): what trains, for how long, how fast."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    train: tuple[str, ...]
    steps: int = Field(gt=0)
    lr: float = Field(gt=0)
    warmup_steps: int = Field(default=0, ge=0)

    @field_validator("train")
    @classmethod
    def _known_parts(cls, parts: tuple[str, ...]) -> tuple[str, ...]:
        if not parts:
            raise ValueError(f"a stage must train something; choose from {', '.join(PART_NAMES)}")
        unknown = [part for part in parts if part not in PART_NAMES]
        if unknown:
            raise ValueError(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PART_NAMES)}")
        return tuple(dict.fromkeys(parts))


TRAINABLE_PRESETS: dict[str, tuple[str, ...]] = {
    "lora": ("new-rows", "lora"),
    "new-rows": ("new-rows",),
    "embeddings": ("embeddings",),
    "all": ("all",),
}
"""Single-stage modes: `lora` (default) = LoRA on attention and MLP + the new rows."""

EEVE_STAGES: tuple[StageConfig, ...] = (
    StageConfig(name="new-rows", train=("new-rows",), steps=100, lr=1e-3, warmup_steps=10),
    StageConfig(name="output", train=("new-rows", "output"), steps=100, lr=3e-4, warmup_steps=10),
    StageConfig(name="lora", train=("new-rows", "output", "lora"), steps=200, lr=2e-4, warmup_steps=10),
)
"""An EEVE-style schedule for documentation and recipes: new rows only, then the output layer, then LoRA."""


def parse_mix(text: str) -> dict[str, float]:
    """`"ko=0.5,en=0.5"` -> `{"ko": 0.5, "en": 0.5}` (the CLI's `--mix`); weights are normalized later."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not re.match(r"^[A-Za-z0-9_-]+$", name) or not weight > 0:
            raise XlangError(
                f"--mix item {item!r} is not NAME=POSITIVE_WEIGHT; write CODE=WEIGHT pairs, comma-separated"
            )
        if name in mix:
            raise XlangError(f"--mix names {name!r} twice")
        mix[name] = weight
    if not mix:
        raise XlangError("--mix is empty; write CODE=WEIGHT pairs separated by commas, one per language code")
    return mix


PARALLEL_KEY = "parallel"
"""The mix entry for aligned parallel text, packed as bilingual documents (e.g. `ko=0.45,en=0.45,parallel=0.1`)."""


class StageKnobs(_Frozen):
    """The knobs every training stage shares (pretraining and both LLaVA stages): the optimizer and
    schedule around the stage's own `lr` and `steps`, LoRA's shape, precision, checkpoints, progress."""

    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    """The learning rate decays to `lr * min_lr_ratio` at the last step."""
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    micro_batch: int = Field(default=4, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    seed: int = 0
    lora_r: int = Field(default=16, gt=0)
    lora_alpha: int = Field(default=32, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """`auto` = bf16 autocast on GPU (and on CPUs with AMX where the stage says so), none otherwise."""
    compile: Literal["auto", "yes", "no"] = "auto"
    """torch.compile each decoder layer: `auto` = on GPU, or where the stage's run is long enough to repay it."""
    gradient_checkpointing: bool = False
    """Recompute decoder activations in backward: less memory, about a third more compute."""
    keep_checkpoints: int = Field(default=2, ge=1)
    progress: bool = True


class PretrainConfig(StageKnobs):
    """Continued bilingual pretraining. Defaults fit a CPU run of SmolLM2-135M; scale `steps`, `seq_len`,
    `micro_batch` and `mixed_precision` up on GPUs."""

    steps: int = Field(default=300, gt=0)
    """Optimizer steps of the single-stage mode (ignored when `stages` is set)."""
    seq_len: int = Field(default=256, ge=8)
    """Block length: documents are packed into blocks of exactly this many tokens, no padding."""
    mix: dict[str, float] = Field(default_factory=dict)
    """Token share per language code (and `parallel` for bilingual documents); empty = equal shares of
    every language given."""
    trainable: Literal["lora", "new-rows", "embeddings", "all"] = "lora"
    stages: tuple[StageConfig, ...] = ()
    """A staged schedule; when set it replaces `trainable`, `steps`, `lr` and `warmup_steps`."""
    lr: float = Field(default=5e-4, gt=0)
    warmup_steps: int = Field(default=10, ge=0)
    lora_targets: tuple[str, ...] | Literal["all-linear"] = "all-linear"
    new_rows_lr_scale: float = Field(default=1.0, gt=0)
    """Learning rate of the new rows (peft's trainable-token deltas) relative to the stage's: a new
    token appears in few batches, so its row gets few updates."""
    document_mask: bool = True
    """Restart positions at every document so that attention stays inside it (HF models read packed
    position ids); False lets blocks attend across documents, which keeps the fastest attention kernel."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype: `auto` = float32 on CPU, bfloat16 on GPU."""
    attn_implementation: str | None = None
    """Passed to `from_pretrained` (`sdpa`, `flash_attention_2`, `flex_attention`...); None = its default."""
    loss_chunk_tokens: int = Field(default=4096, gt=0)
    """Tokens per chunk of the fused output-layer + cross-entropy: the full logits never exist at once."""
    save_every: int = Field(default=100, ge=0)
    eval_every: int = Field(default=100, ge=0)
    log_every: int = Field(default=10, gt=0)
    eval_max_chars: int = Field(default=20_000, gt=0)
    """Validation text per language for BPC at intervals (whole documents up to this many characters;
    20k characters put the standard error of BPC near 1%)."""
    eval_window: int = Field(default=1024, ge=8)
    """Tokens per scoring window of the BPC at intervals (the stride is half of it), as `xlang eval bpc`."""
    tensorboard: bool = True

    @field_validator("mix", mode="before")
    @classmethod
    def _mix_from_text(cls, value: Any) -> Any:
        """Accept the CLI's `ko=0.5,en=0.5` as well as a mapping."""
        return parse_mix(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        for name, weight in self.mix.items():
            if not weight > 0:
                raise ValueError(f"mix weight of {name!r} must be positive, got {weight}")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {', '.join(names)}")
        parts = {part for stage in self.schedule_stages() for part in stage.train}
        if "all" in parts and "lora" in parts:
            raise ValueError("a schedule cannot train both 'all' weights and 'lora' adapters; choose one")
        return self

    def schedule_stages(self) -> tuple[StageConfig, ...]:
        """The stages to run: `stages` if given, else one stage named after `trainable`."""
        if self.stages:
            return self.stages
        return (
            StageConfig(
                name=self.trainable,
                train=TRAINABLE_PRESETS[self.trainable],
                steps=self.steps,
                lr=self.lr,
                warmup_steps=self.warmup_steps,
            ),
        )

    def loop_config(self, stage: StageConfig, *, mixed_precision: str) -> TrainLoopConfig:
        """The engine config of one stage."""
        return TrainLoopConfig(
            steps=stage.steps,
            lr=stage.lr,
            warmup_steps=stage.warmup_steps,
            schedule=self.schedule,
            min_lr_ratio=self.min_lr_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            micro_batch=self.micro_batch,
            grad_accum=self.grad_accum,
            seed=self.seed,
            mixed_precision=mixed_precision,  # type: ignore[arg-type]
            save_every=self.save_every,
            keep_checkpoints=self.keep_checkpoints,
            eval_every=self.eval_every,
            log_every=self.log_every,
            progress=self.progress,
            tensorboard=self.tensorboard,
        )
