"""The one place a training stage gets its `accelerate.Accelerator`, so that `distributed="deepspeed"` and an
accelerate config file that selects DeepSpeed behave the same in pretraining and both LLaVA stages.

Why a function of our own: accelerate 1.x turns DeepSpeed off for `cpu=True` (and for
`ACCELERATE_USE_CPU`, which `accelerate launch --cpu` sets), and on a machine without GPUs it leaves the
process group without a backend, so that every rank believes it is rank 0 of one. A launched CPU run that
asks for DeepSpeed therefore names gloo itself and is not marked CPU-only; DeepSpeed's own CPU accelerator
then runs ZeRO over gloo, which is what the CPU tests exercise.

    from xlang.train.accelerators import make_accelerator
    accelerator = make_accelerator(mixed_precision=None, cuda=False, distributed="deepspeed")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from xlang.collective import world_size
from xlang.errors import XlangError
from xlang.settings import DEEPSPEED_MISSING, DISTRIBUTED_MODES, deepspeed_installed

if TYPE_CHECKING:
    from accelerate import Accelerator

ZERO_STAGE_VARIABLE = "ACCELERATE_DEEPSPEED_ZERO_STAGE"
"""accelerate's own variable (also written by `accelerate launch` from a config file): the ZeRO stage."""


def check_distributed(distributed: str) -> None:
    """Refuse an unknown mode, or DeepSpeed where the package is missing, before any model loads."""
    if distributed not in DISTRIBUTED_MODES:
        raise XlangError(f"distributed={distributed!r} is not known; choose one of {', '.join(DISTRIBUTED_MODES)}")
    if distributed == "deepspeed" and not deepspeed_installed():
        raise XlangError(DEEPSPEED_MISSING)


def deepspeed_requested(distributed: str) -> bool:
    """DeepSpeed by our setting or by accelerate's (a config file passed to `accelerate launch`), and only
    for a launched run: one process has nothing to shard."""
    by_accelerate = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return (distributed == "deepspeed" or by_accelerate) and world_size() > 1


def make_accelerator(*, mixed_precision: str | None, cuda: bool, distributed: str = "ddp") -> Accelerator:
    """An Accelerator for this process: plain (one process, DDP, or FSDP2 applied by the engine) or DeepSpeed
    ZeRO stage 2 when asked for under a launcher. Stage 3 is refused: the fused loss and the new rows' masks
    read whole matrices, and FSDP2 (`distributed="fsdp"`) is the tested way to shard parameters."""
    from accelerate import Accelerator

    check_distributed(distributed)
    precision = "fp16" if mixed_precision == "fp16" else None  # bf16 is the engine's own autocast
    if not cuda:  # what DeepSpeed would pick, said up front: it then skips a warning at import (unwrap_model)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not deepspeed_requested(distributed):
        return Accelerator(mixed_precision=precision, cpu=not cuda)
    if not deepspeed_installed():
        raise XlangError("accelerate was told to use DeepSpeed, but the deepspeed package is not installed")
    from accelerate.state import is_initialized
    from accelerate.utils import DeepSpeedPlugin, DistributedType, InitProcessGroupKwargs

    stage = os.environ.get(ZERO_STAGE_VARIABLE, "2")
    if stage != "2":
        raise _zero_stage_refused(stage)
    plugin = None
    # a config file names its own stage; a later stage of the same process keeps the first one's plugin
    if os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") is None and not is_initialized():
        plugin = DeepSpeedPlugin(zero_stage=2, gradient_accumulation_steps=1)
    handlers = [] if cuda else [InitProcessGroupKwargs(backend="gloo")]
    if not cuda:  # `accelerate launch --cpu` sets it, and accelerate then drops DeepSpeed without a word
        os.environ.pop("ACCELERATE_USE_CPU", None)
        _skip_inference_collective()
    if plugin is None:
        accelerator = Accelerator(mixed_precision=precision, kwargs_handlers=handlers)
    else:
        accelerator = Accelerator(mixed_precision=precision, deepspeed_plugin=plugin, kwargs_handlers=handlers)
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise XlangError(
            f"DeepSpeed was asked for, but accelerate set this process up as {accelerator.distributed_type.value} "
            "(an Accelerator made earlier in this process without DeepSpeed); launch a fresh process"
        )
    chosen = accelerator.state.deepspeed_plugin
    if chosen is not None and chosen.zero_stage != 2:
        raise _zero_stage_refused(chosen.zero_stage)
    return accelerator


SHARED_MEMORY_OP = "deepspeed_shm_comm"
"""DeepSpeed's CPU shared-memory all-reduce, which its comm backend compiles when it starts."""


def _skip_inference_collective() -> None:
    """Tell DeepSpeed its CPU shared-memory all-reduce is unavailable, so that it does not compile it.

    Its comm backend JIT-compiles the op when it starts (about a minute on two cores, once per machine, and a
    failure on a machine without a C++ compiler), yet only `inference_all_reduce` calls it: ZeRO training
    reduces through torch.distributed (gloo here) either way. Must run before the Accelerator starts DeepSpeed's
    process group."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHARED_MEMORY_OP] = False


def _zero_stage_refused(stage: object) -> XlangError:
    return XlangError(
        f"DeepSpeed ZeRO stage {stage} was asked for ({ZERO_STAGE_VARIABLE} or the accelerate config file); xlang "
        "runs ZeRO stage 2, which shards gradients and optimizer state. To shard the parameters too, use "
        "distributed=fsdp (FULL_SHARD)"
    )


def sharding_of(accelerator: Any, fsdp: bool) -> str | None:
    """What a stage's summary records as `sharded`: `fsdp` (FSDP2 applied by the engine), `deepspeed` (ZeRO
    through accelerate), or None when every process held the whole model and its optimizer state."""
    if fsdp:
        return "fsdp"
    from accelerate.utils import DistributedType

    return "deepspeed" if accelerator.distributed_type == DistributedType.DEEPSPEED else None
