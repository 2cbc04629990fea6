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

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from xlang.collective import world_size
from xlang.errors import XlangError
from xlang.settings import DEEPSPEED_MISSING, DISTRIBUTED_MODES, deepspeed_installed

if TYPE_CHECKING:
    from accelerate import Accelerator

ZERO_STAGE_VARIABLE = "ACCELERATE_DEEPSPEED_ZERO_STAGE"
"""accelerate's own variable (also written by `accelerate launch` from a config file): the ZeRO stage."""

SUPPORTED_ZERO_STAGES = ("2", "3")
"""Stage 2 (gradients and optimizer state sharded) and 3 (parameters too); 0 and 1 are refused."""


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
    if by_accelerate and distributed == "fsdp" and world_size() > 1:
        raise XlangError(
            "accelerate was launched with a config file that selects DeepSpeed, and distributed=fsdp asks for "
            "FSDP; choose one: drop --distributed (or set it to deepspeed), or launch without the DeepSpeed config"
        )
    return (distributed == "deepspeed" or by_accelerate) and world_size() > 1


def make_accelerator(*, mixed_precision: str | None, cuda: bool, distributed: str = "ddp") -> Accelerator:
    """An Accelerator for this process: plain (one process, DDP, or FSDP2 applied by the engine) or DeepSpeed
    ZeRO when asked for under a launcher: stage 2 by default, stage 3 by `ACCELERATE_DEEPSPEED_ZERO_STAGE=3` or
    a config file. Under stage 3 models still load whole (see `_load_whole_models`); DeepSpeed partitions
    them when the engine prepares them."""
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
    if stage not in SUPPORTED_ZERO_STAGES:
        raise _zero_stage_refused(stage)
    plugin = None
    # a config file names its own stage; a later stage of the same process keeps the first one's plugin
    if os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") is None and not is_initialized():
        plugin = DeepSpeedPlugin(zero_stage=int(stage), gradient_accumulation_steps=1, zero3_init_flag=False)
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
    if chosen is not None and str(chosen.zero_stage) not in SUPPORTED_ZERO_STAGES:
        raise _zero_stage_refused(chosen.zero_stage)
    _load_whole_models()
    return accelerator


def _load_whole_models() -> None:
    """Let transformers load whole models under ZeRO-3, as under every other mode.

    accelerate registers its DeepSpeed config with transformers, and under stage 3 `from_pretrained` then
    builds the model inside `deepspeed.zero.Init`: every matrix is an empty shard outside a forward pass, so
    the size checks, the new rows' initialization and peft's wrapping, which read whole matrices, would see a
    vocabulary of 0 rows. Loaded whole, the model is partitioned by DeepSpeed's engine in `prepare()`; the
    cost is one whole copy per process while it loads."""
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def zero_stage(accelerator: Any) -> int | None:
    """The DeepSpeed ZeRO stage this accelerator trains with, or None when it is not DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def partitions_parameters(accelerator: Any) -> bool:
    """True under ZeRO-3: outside a module's forward its parameters are empty shards."""
    return zero_stage(accelerator) == 3


def layers_may_compile(compile_setting: str, accelerator: Any) -> bool:
    """False under ZeRO-3, whose gather and release hooks run around every layer: dynamo traces into them and
    recompiles until it hits its limit (24 steps of a tiny model took minutes instead of seconds).
    `compile=yes` there is refused with one line rather than quietly ignored."""
    if not partitions_parameters(accelerator):
        return True
    if compile_setting == "yes":
        raise XlangError(
            "compile=yes cannot be used with DeepSpeed ZeRO-3: torch.compile traces into ZeRO-3's parameter "
            "hooks and recompiles every step; set compile to auto or no (or use ZeRO-2 or fsdp)"
        )
    return False


def register_outside_reads(model: Any) -> None:
    """Tell ZeRO-3 which parameters `model`'s forward reads without calling their module (the fused loss
    reads the output layer's matrix and new rows directly), so it gathers them for that forward and for
    its backward. A model without `outside_reads()` reads nothing that way."""
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    for param in getattr(model, "outside_reads", list)():
        register_external_parameter(model, param)


@contextlib.contextmanager
def whole_parameters(params: Sequence[Any], accelerator: Any) -> Iterator[None]:
    """Inside, `params` hold their full values on every process (a collective: every process enters);
    outside ZeRO-3 parameters are always whole and this does nothing."""
    if not partitions_parameters(accelerator):
        yield
        return
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters

    with GatheredParameters(list(params), modifier_rank=None):
        yield


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
        "runs ZeRO stage 2 (gradients and optimizer state sharded) or 3 (parameters too); set "
        f"{ZERO_STAGE_VARIABLE}=2 or 3"
    )


def sharding_of(accelerator: Any, fsdp: bool) -> str | None:
    """What a stage's summary records as `sharded`: `fsdp` (FSDP2 applied by the engine), `deepspeed` (ZeRO-2
    through accelerate), `deepspeed-zero3`, or None when every process held the whole model and its
    optimizer state."""
    if fsdp:
        return "fsdp"
    return deepspeed_label(accelerator)


def deepspeed_label(accelerator: Any) -> str | None:
    """`deepspeed` (ZeRO-2), `deepspeed-zero3`, or None when the accelerator is not DeepSpeed: the names
    summaries and checkpoints carry, so that a checkpoint is not resumed under the other stage."""
    stage = zero_stage(accelerator)
    if stage is None:
        return None
    return "deepspeed-zero3" if stage == 3 else "deepspeed"


@contextlib.contextmanager
def whole_model_for_inference(engine: Any, accelerator: Any) -> Iterator[None]:
    """Inside, the prepared `engine`'s model is whole on every process and ZeRO-3's hooks are off, so an
    eval may read any weight directly (the row-count check, peft's merged rows) and call any submodule
    (a collective: every process enters). Does nothing outside ZeRO-3."""
    if not partitions_parameters(accelerator):
        yield
        return
    from deepspeed.runtime.zero import unwrap_model_for_generation

    with unwrap_model_for_generation(engine):
        yield
