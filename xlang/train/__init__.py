"""Continued bilingual pretraining, and the training engine every xlang stage shares.

Public API (light to import: torch loads only when a function runs):

- `pretrain(model_dir, tokenizer_dir, texts_by_language, parallel, config, out_dir, *, new_token_ids,
  validation_by_language=None, eval_fn=None, accelerator=None) -> PretrainResult`: the stage
  (see `xlang.train.pretraining`).
- `run_training(model, make_batches, config, out_dir, ...) -> TrainResult`: the generic accelerate
  engine with checkpoints, resume, progress and metrics (see `xlang.train.engine` for the contract).
- `PretrainConfig`, `StageConfig`, `TrainLoopConfig`, `parse_mix`, `EEVE_STAGES`: pydantic configs.
"""

from __future__ import annotations

from xlang.train.config import EEVE_STAGES, PretrainConfig, StageConfig, TrainLoopConfig, parse_mix
from xlang.train.engine import TrainResult, run_training
from xlang.train.pretraining import PretrainResult, pretrain

__all__ = [
    "EEVE_STAGES",
    "PretrainConfig",
    "PretrainResult",
    "StageConfig",
    "TrainLoopConfig",
    "TrainResult",
    "parse_mix",
    "pretrain",
    "run_training",
]
