"""The training engine every xlang stage shares: one loop on `accelerate`, from one CPU to many GPUs.

It exists so that corpus pretraining and the LLaVA stages (projector alignment, visual instruction
tuning) get the same checkpoints, resume, progress, metrics and multi-process behaviour without a
Trainer subclass. Distribution is accelerate's alone: the same code runs on one CPU, one GPU, DDP
(`accelerate launch --multi_gpu`, or `--cpu --num_processes 2` with gloo), DeepSpeed ZeRO-2 (an
Accelerator from `xlang.train.accelerators`), or FSDP2 applied by the engine itself (`fsdp=True`, see below).

API
---
    from xlang.train.engine import run_training, causal_lm_loss
    from xlang.train.config import TrainLoopConfig
from xlang.train.progress import StepProgress

    result = run_training(
        model,            # nn.Module; loss_fn calls it, so DDP/FSDP see every forward
        make_batches,     # (step_offset, rank, world) -> Iterator[dict[str, Tensor]]: this process's
                          #   micro-batches in order, starting at optimizer step `step_offset`
                          #   (config.grad_accum micro-batches per step). Deterministic, so that a
                          #   resumed run sees exactly the data the killed one would have seen.
        config,           # TrainLoopConfig: steps, lr, warmup, schedule, micro_batch, grad_accum,
                          #   save_every, eval_every, log_every, seed, mixed_precision, ...
        out_dir,          # metrics.jsonl, tensorboard/, checkpoints/step-NNNNNN/, run.json, done.json
        trainable=None,   # (name, param) -> bool: sets requires_grad; None keeps the model's flags
        param_groups=None,  # [(name, param)] -> [{"params": [...], "lr": ..., ...}]; None: one group
        loss_fn=None,     # (model, batch) -> (loss_sum, n_tokens); default `causal_lm_loss`
        count_tokens=None,  # batch -> number of loss tokens (default: labels[:, 1:] != -100)
        eval_fn=None,     # (unwrapped model) -> {"bpc/ko": 1.2, ...}; at start (eval_at_start=True),
                          #   every eval_every steps and at the end
        accelerator=None, # an accelerate.Accelerator; None creates one from config.mixed_precision
        fingerprint=None, # JSON-able dict folded into the config hash: model, data, anything that
                          #   makes two runs different
        name="train",     # label for progress and TensorBoard
        fsdp=False,       # shard parameters, gradients and optimizer state (FULL_SHARD, FSDP2) across
                          #   the processes: see "Sharded training" below
    ) -> TrainResult      # steps, final_loss, history (this session), metrics_path, checkpoint, ...

Loss is token-weighted across micro-batches and processes: each step divides the summed loss by the
number of loss tokens of the whole global step, so grad accumulation and world size do not change
what a token weighs.

Checkpoints (every `save_every` steps and at the end) hold the trainable parameters (safetensors),
the optimizer state, the scheduler state, every process's RNG state, the step (which is also the data
position) and the config hash. A `make_batches` that also has `stream_position(step, world)` and
`restore_stream_position(step, world, position)` (`xlang.train.data.StageBatches`) gets its JSON-able
stream position stored in `meta.json` and handed back on resume, so a streamed corpus continues from
there instead of being replayed. They are written into a hidden folder and renamed into place, so a
`kill -9` leaves either the old or the new checkpoint, never half of one. A run folder whose config
hash differs from the caller's is refused with an XlangError and left untouched. Torch state loads with
`weights_only=True`; nothing is unpickled. Under DeepSpeed (`xlang.train.accelerators`), the checkpoint
holds `accelerator.save_state`'s folder instead: DeepSpeed's trainable weights and one optimizer shard per
process, frozen weights left out, which DeepSpeed writes and loads as pickles; the scheduler state is ours.

Sharded training (`fsdp=True`)
------------------------------
accelerate 1.x picks FSDP only for GPU-family devices (`AcceleratorState` leaves a CPU run as
`MULTI_CPU` and drops the FSDP plugin silently), so the engine applies torch's own FSDP2
(`torch.distributed.fsdp.fully_shard`) itself, on every device: each module class the model names in
`_no_split_modules` (its decoder layers) becomes a shard unit, then the whole model; every parameter is
split along its first dimension across the processes (a vocabulary that is not a multiple of the world
size gets an uneven last shard, which FSDP2 handles), so the frozen base, the trainable parameters,
their gradients and AdamW's state all live 1/world per process. Checkpoints are written by
`torch.distributed.checkpoint` (`dcp/`: one file per process plus metadata, trainable parameters and
optimizer state only) and loaded back into the shards, so a restart needs the same world size; the last
checkpoint also holds the gathered `trainable.safetensors`, which is what a stage exports from (a plain
peft adapter, loadable in one process). The CPU tests run this path on gloo with two processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xlang import interrupts
from xlang.errors import XlangError
from xlang.train.accelerators import (
    deepspeed_label,
    partitions_parameters,
    register_outside_reads,
    whole_model_for_inference,
    whole_parameters,
)
from xlang.train.config import TrainLoopConfig
from xlang.train.progress import StepProgress

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

Batch = dict[str, Any]
MakeBatches = Callable[[int, int, int], Iterator[Batch]]
LossFn = Callable[[Any, Batch], tuple["torch.Tensor", Any]]
EvalFn = Callable[[Any], Mapping[str, float]]

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
DONE_FILE = "done.json"
METRICS_FILE = "metrics.jsonl"
_STEP_PREFIX = "step-"


@dataclass
class StepRecord:
    """One optimizer step as measured by this process (times are wall-clock, device-synchronized)."""

    step: int
    loss: float
    lr: float
    tokens: int
    """Input tokens of the global step (all processes), padding excluded."""
    seconds: float
    grad_norm: float | None = None


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    out_dir: Path
    metrics_path: Path
    checkpoint: Path | None
    resumed_from: int = 0
    """Step the run continued from (0: a fresh start)."""
    already_done: bool = False
    """True when the folder held a finished run with the same config: nothing was trained."""
    history: list[StepRecord] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    peak_memory_bytes: int | None = None

    def median_tokens_per_s(self, skip: int = 1) -> float | None:
        """Median tokens/s over this session's steps, the first `skip` (warm-up, compilation) left out."""
        rates = sorted(r.tokens / r.seconds for r in self.history[skip:] if r.seconds > 0)
        if not rates:
            return None
        mid = len(rates) // 2
        return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


# ----------------------------------------------------------------------------------------- losses


def count_loss_tokens(batch: Batch) -> int:
    """Loss tokens of a causal-LM batch: labels after the shift that are not -100."""
    labels = batch["labels"]
    return int((labels[..., 1:] != -100).sum())


def causal_lm_loss(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
    """The default loss: a Hugging Face model's own mean loss over `labels`, turned back into a sum."""
    n_tokens = count_loss_tokens(batch)
    output = model(**batch)
    return output.loss * n_tokens, n_tokens


def _input_tokens(batch: Batch) -> int:
    ids = batch.get("input_ids")
    if ids is None:
        return 0
    mask = batch.get("attention_mask")
    if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return int(mask.sum())
    return int(ids.numel())


# ----------------------------------------------------------------------------------------- schedule


def lr_factor(step: int, config: TrainLoopConfig) -> float:
    """Multiplier of `config.lr` for the update made at `step` (0-based): linear warm-up, then decay."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr_ratio
    if config.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------- files


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a meta.json), oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_STEP_PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX) :]))


def _check_folder(out_dir: Path, config_hash: str) -> None:
    """Refuse a folder holding another configuration's run, before anything in it changes."""
    sources: list[tuple[str, Path]] = []
    if (out_dir / RUN_FILE).is_file():
        sources.append((json.loads((out_dir / RUN_FILE).read_text()).get("config_hash", ""), out_dir / RUN_FILE))
    for checkpoint in list_checkpoints(out_dir):
        sources.append((json.loads((checkpoint / "meta.json").read_text()).get("config_hash", ""), checkpoint))
    for found, where in sources:
        if found != config_hash:
            raise XlangError(
                f"{out_dir} holds a run with another configuration (config hash {found} in {where}, this run's is "
                f"{config_hash}); resume with the same settings, or choose a new output folder. Nothing was changed."
            )


# ----------------------------------------------------------------------------------------- metrics


class _Metrics:
    """metrics.jsonl (always) and TensorBoard (when installed and asked for), main process only."""

    def __init__(self, out_dir: Path, resume_step: int, enabled: bool, tensorboard: bool, name: str) -> None:
        self.path = out_dir / METRICS_FILE
        self.enabled = enabled
        self.name = name
        self.writer = None
        if not enabled:
            return
        if self.path.is_file():
            # a killed run may have logged past its last checkpoint: those lines will be logged again. One
            # killed before any checkpoint starts over, its step-0 evaluation included, so nothing is kept.
            kept = (
                [
                    line
                    for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step
                ]
                if resume_step
                else []
            )
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: metrics.jsonl carries the same numbers
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self.writer = SummaryWriter(
                    log_dir=str(out_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else 0
                )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, int | float) and value is not None:
                    self.writer.add_scalar(f"{self.name}/{kind}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (train and eval lines)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------- RNG


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ----------------------------------------------------------------------------------------- checkpoints


def _is_sharded(accelerator: Accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _checkpoint_sharding(accelerator: Accelerator, fsdp: bool) -> str | bool:
    """What `meta.json` and the finished run's record say as `sharded`, which picks the load path: `fsdp2`
    (the engine's own `dcp/` shards), `deepspeed` or `deepspeed-zero3`, True (accelerate's FSDP from a
    config file), False."""
    if fsdp:
        return "fsdp2"
    return deepspeed_label(accelerator) or _is_sharded(accelerator)


def _is_fsdp2(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fsdp_units(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [module for module in model.modules() if isinstance(module, FSDPModule)]


def shard_model(model: Any, device_type: str) -> Any:
    """FULL_SHARD the model in place with FSDP2: its `_no_split_modules` classes (decoder layers) as
    units, then the root. A model sharded already (an earlier stage of the same run) is left as it is."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if _is_fsdp2(model):
        return model
    unit_names = {name for module in model.modules() for name in (getattr(module, "_no_split_modules", None) or [])}
    import torch.distributed as dist

    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    units = [module for module in model.modules() if type(module).__name__ in unit_names]
    if not units:
        raise XlangError(
            f"fsdp: {type(model).__name__} names no layer class to shard (_no_split_modules); train it without fsdp"
        )
    for module in units:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # FSDP2 names its root at the first forward; an eval_fn that calls a submodule first (the decoder)
    # would make a layer the root. Fixing the root now is what that first forward would do.
    model._get_fsdp_state()._lazy_init()
    return model


def _gathered_trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Full trainable tensors of a sharded model on every process (a collective: all must call it)."""
    from torch.distributed.tensor import DTensor

    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            tensor = param.detach()
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()
            state[name] = tensor.to("cpu").contiguous().clone()
    return state


def _whole_trainable_state(accelerator: Accelerator, model: Any) -> dict[str, torch.Tensor]:
    """The full trainable tensors of a DeepSpeed model on every process (gathered under ZeRO-3: a
    collective, all must call it)."""
    inner = accelerator.unwrap_model(model)
    with whole_parameters([param for param in inner.parameters() if param.requires_grad], accelerator):
        return _trainable_state(inner)


def _dcp_state(model: Any, optimizer: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(ignore_frozen_params=True)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optimizer": optimizer_state}


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().to("cpu").contiguous().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable(model: Any, path: Path) -> None:
    """Copy a checkpoint's trainable tensors into `model` (same names), refusing any mismatch."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [name for name in saved if name not in params]
    if missing:
        raise XlangError(f"checkpoint {path} holds parameters this model lacks: {', '.join(missing[:5])}")
    with torch.no_grad():
        for name, tensor in saved.items():
            target = params[name]
            if tuple(target.shape) != tuple(tensor.shape):
                raise XlangError(
                    f"checkpoint {path}: {name} has shape {tuple(tensor.shape)}, the model's is {tuple(target.shape)}"
                )
            target.data.copy_(tensor.to(target.device, target.dtype))


def _save_checkpoint(
    *,
    accelerator: Accelerator,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    out_dir: Path,
    step: int,
    config_hash: str,
    config: TrainLoopConfig,
    loss: float | None,
    stream_position: Any = None,
) -> Path:
    import torch
    from safetensors.torch import save_file

    root = out_dir / CHECKPOINTS
    final = root / f"{_STEP_PREFIX}{step:06d}"
    staging = root / f".tmp-{_STEP_PREFIX}{step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    _write_json_atomic(staging / f"rng-rank{rank}.json", _rng_state())
    fsdp = _is_fsdp2(model)
    if fsdp:
        import torch.distributed.checkpoint as dcp

        dcp.save(_dcp_state(model, optimizer), checkpoint_id=str(staging / "dcp"))
        full = _gathered_trainable_state(model) if step == config.steps else None
        if accelerator.is_main_process:
            _write_json_atomic(staging / "scheduler.json", scheduler.state_dict())
            if full is not None:
                save_file(full, str(staging / "trainable.safetensors"))
    elif _is_sharded(accelerator):  # DeepSpeed: its engine writes model and optimizer shards per rank
        accelerator.save_state(str(staging / "accelerate"), exclude_frozen_parameters=True)
        # the last checkpoint also holds the whole trainable tensors: the export of a ZeRO-3 run loads them,
        # and a later stage resumed in a fresh process restores this finished one from them (its engine
        # checkpoints leave out what that stage froze)
        full = _whole_trainable_state(accelerator, model) if step == config.steps else None
        if accelerator.is_main_process:  # the scheduler is ours, not prepared: accelerate does not save it
            _write_json_atomic(staging / "scheduler.json", scheduler.state_dict())
            if full is not None:
                save_file(full, str(staging / "trainable.safetensors"))
    elif accelerator.is_main_process:
        save_file(_trainable_state(accelerator.unwrap_model(model)), str(staging / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        _write_json_atomic(staging / "scheduler.json", scheduler.state_dict())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        meta = {
            "step": step,
            "config_hash": config_hash,
            "world_size": accelerator.num_processes,
            "data_position": {
                "step": step,
                "micro_batches_per_process": step * config.grad_accum,
                **({"stream": stream_position} if stream_position is not None else {}),
            },
            "loss": loss,
            "sharded": _checkpoint_sharding(accelerator, fsdp),
            "time": time.time(),
        }
        _write_json_atomic(staging / "meta.json", meta)
        _fsync_tree(staging)
        if final.exists():  # the same step saved again (a resumed run reaching its own last checkpoint)
            old = root / f".old-{final.name}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old)
        else:
            os.replace(staging, final)
        for stale in list_checkpoints(out_dir)[: -config.keep_checkpoints]:
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(
    *, accelerator: Accelerator, model: Any, optimizer: Any, scheduler: Any, checkpoint: Path
) -> dict[str, Any]:
    import torch

    meta = json.loads((checkpoint / "meta.json").read_text())
    written, current = meta.get("sharded", False), _checkpoint_sharding(accelerator, _is_fsdp2(model))
    if written != current:
        raise XlangError(
            f"checkpoint {checkpoint} was written sharded as {written!r} and this run is {current!r}; resume "
            "it as it was launched (the same --distributed, and for DeepSpeed the same ZeRO stage, "
            "ACCELERATE_DEEPSPEED_ZERO_STAGE), or start in a new output folder"
        )
    if meta.get("world_size") != accelerator.num_processes:
        raise XlangError(
            f"checkpoint {checkpoint} was written by {meta.get('world_size')} process(es), this run has "
            f"{accelerator.num_processes}; resume with the same number of processes (the data order depends on it)"
        )
    if meta.get("sharded") == "fsdp2":
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = _dcp_state(model, optimizer)
        dcp.load(state, checkpoint_id=str(checkpoint / "dcp"))
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(ignore_frozen_params=True, strict=False),
        )
        scheduler.load_state_dict(json.loads((checkpoint / "scheduler.json").read_text()))
    elif meta.get("sharded"):
        accelerator.load_state(str(checkpoint / "accelerate"), load_module_strict=False)  # frozen rows: not saved
        scheduler.load_state_dict(json.loads((checkpoint / "scheduler.json").read_text()))
    else:
        load_trainable(accelerator.unwrap_model(model), checkpoint / "trainable.safetensors")
        state = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state)
        scheduler.load_state_dict(json.loads((checkpoint / "scheduler.json").read_text()))
    rng_file = checkpoint / f"rng-rank{accelerator.process_index}.json"
    if rng_file.is_file():
        _set_rng_state(json.loads(rng_file.read_text()))
    return meta


# ----------------------------------------------------------------------------------------- the loop


def _as_float(value: Any) -> float:
    """A scalar tensor's value; a sharded (DTensor) norm is reduced to its full value first."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def _autocast(accelerator: Accelerator, config: TrainLoopConfig) -> Any:
    """bf16 autocast done here rather than by accelerate: accelerate's state is one per process, so an
    Accelerator created for another precision (an earlier stage, a notebook) could not be changed."""
    import torch

    if config.mixed_precision == "bf16" and accelerator.mixed_precision != "bf16":
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _run_eval(eval_fn: EvalFn, accelerator: Accelerator, model: Any, config: TrainLoopConfig) -> dict[str, float]:
    import torch

    inner = accelerator.unwrap_model(model)
    was_training = inner.training
    inner.eval()
    # Sharded: every unit is gathered here, outside the eval's inference mode, and stays whole until the
    # end. An eval_fn may call submodules directly (the root's own weights must be whole), and buffers
    # first gathered under inference mode could not be written by the training steps after it.
    units = _fsdp_units(inner)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:  # under ZeRO-3 the same: every parameter whole for the eval, on every process
        with (
            whole_model_for_inference(model, accelerator),
            torch.no_grad(),
            accelerator.autocast(),
            _autocast(accelerator, config),
        ):
            metrics = {key: float(value) for key, value in dict(eval_fn(inner)).items()}
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)
        inner.train(was_training)
    return metrics


def run_training(
    model: Any,
    make_batches: MakeBatches,
    config: TrainLoopConfig,
    out_dir: str | os.PathLike[str],
    *,
    trainable: Callable[[str, Any], bool] | None = None,
    param_groups: Callable[[list[tuple[str, Any]]], list[dict[str, Any]]] | None = None,
    loss_fn: LossFn | None = None,
    count_tokens: Callable[[Batch], int] | None = None,
    eval_fn: EvalFn | None = None,
    accelerator: Accelerator | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    name: str = "train",
    eval_at_start: bool = True,
    fsdp: bool = False,
) -> TrainResult:
    """Train `model` for `config.steps` optimizer steps, resuming from `out_dir`'s last checkpoint.

    See the module docstring for every argument. Returns when the run is finished (or was already).
    """
    import torch

    out_dir = Path(out_dir)
    if accelerator is None:
        from accelerate import Accelerator

        # fp16 needs accelerate's gradient scaler; bf16 is plain autocast (see `_autocast`)
        accelerator = Accelerator(mixed_precision="fp16") if config.mixed_precision == "fp16" else Accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    fsdp = fsdp and world > 1 and not _is_sharded(accelerator)
    config_hash = config.config_hash(
        {**dict(fingerprint or {}), "world_size": world, **({"sharding": "fsdp2"} if fsdp else {})}
    )
    metrics_path = out_dir / METRICS_FILE
    _check_folder(out_dir, config_hash)
    loss_fn = loss_fn or causal_lm_loss
    count_tokens = count_tokens or count_loss_tokens

    if trainable is not None:
        for param_name, param in model.named_parameters():
            param.requires_grad_(bool(trainable(param_name, param)))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise XlangError(f"{name}: no parameter is trainable; check the stage's trainable selection")

    done_file = out_dir / DONE_FILE
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        final = out_dir / done["checkpoint"]
        if (final / "trainable.safetensors").is_file():
            load_trainable(model, final / "trainable.safetensors")
        return TrainResult(
            steps=config.steps,
            final_loss=done.get("final_loss"),
            out_dir=out_dir,
            metrics_path=metrics_path,
            checkpoint=final,
            resumed_from=config.steps,
            already_done=True,
        )

    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / RUN_FILE).is_file():
            _write_json_atomic(
                out_dir / RUN_FILE,
                {
                    "config_hash": config_hash,
                    "config": config.model_dump(mode="json"),
                    "fingerprint": dict(fingerprint or {}),
                    "world_size": world,
                },
            )
        for stale in (out_dir / CHECKPOINTS).glob(".tmp-*") if (out_dir / CHECKPOINTS).is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)  # a checkpoint a killed run never finished
    accelerator.wait_for_everyone()

    torch.manual_seed(config.seed + rank)
    random.seed(config.seed + rank)
    if not _is_sharded(accelerator):
        model.to(accelerator.device)  # before the optimizer exists, so it can be the fused CUDA one
    if fsdp:  # sharding replaces every parameter with its shard: the optimizer must see the shards
        shard_model(model, accelerator.device.type)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if param_groups is not None:
        groups = param_groups(named)
    else:
        groups = [{"params": [p for _, p in named]}]
    fused = all(p.is_cuda for _, p in named) and all(p.dtype in (torch.float32, torch.bfloat16) for _, p in named)
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        **({"fused": True} if fused and accelerator.device.type == "cuda" else {}),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # no dataloader goes through prepare(): DeepSpeed learns the batch shape here
        if config.grad_accum != 1:
            raise XlangError("under DeepSpeed set grad_accum=1 (DeepSpeed would step inside the accumulation)")
        # set for every stage: the plugin is the process's, and a stage before this one filled in its own batch
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.micro_batch
        plugin.deepspeed_config["gradient_accumulation_steps"] = 1
        plugin.deepspeed_config["train_batch_size"] = config.micro_batch * world
        # DeepSpeed clips inside its step, so the norm is its setting; our AdamW is a "client" optimizer
        plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm or 0.0
        plugin.deepspeed_config.setdefault("zero_allow_untested_optimizer", True)
    if fsdp:  # already sharded: accelerate would wrap it again in DDP
        optimizer = accelerator.prepare(optimizer)
    else:
        if partitions_parameters(accelerator):
            register_outside_reads(model)
        model, optimizer = accelerator.prepare(model, optimizer)

    start_step = 0
    checkpoints = list_checkpoints(out_dir)
    if checkpoints:
        meta = _load_checkpoint(
            accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, checkpoint=checkpoints[-1]
        )
        start_step = int(meta["step"])
        last_loss_at_resume = meta.get("loss")
        # a data stream that can jump to its saved position resumes there instead of replaying
        saved_stream = (meta.get("data_position") or {}).get("stream")
        restore_stream = getattr(make_batches, "restore_stream_position", None)
        if saved_stream is not None and restore_stream is not None:
            restore_stream(start_step, world, saved_stream)
    else:
        last_loss_at_resume = None

    metrics = _Metrics(out_dir, start_step, accelerator.is_main_process, config.tensorboard, name)
    result = TrainResult(
        steps=config.steps,
        final_loss=None,
        out_dir=out_dir,
        metrics_path=metrics_path,
        checkpoint=checkpoints[-1] if checkpoints else None,
        resumed_from=start_step,
    )
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    params = [p for _, p in named]

    progress = StepProgress(name, config.steps, start_step, enabled=accelerator.is_main_process and config.progress)

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        began = time.perf_counter()
        values = _run_eval(eval_fn, accelerator, model, config)
        result.evals.append({"step": step, **values})
        metrics.log({"step": step, "kind": "eval", **values})
        shown = ", ".join(f"{key} {value:.3f}" for key, value in sorted(values.items()))
        progress.line(f"step {step} evaluated: {shown} ({time.perf_counter() - began:.0f} s)")

    batches = make_batches(start_step, rank, world)
    stream_position = getattr(make_batches, "stream_position", None)
    model.train()
    window: list[StepRecord] = []
    last_loss: float | None = last_loss_at_resume
    with progress:
        if eval_fn is not None and config.eval_every and eval_at_start and start_step == 0:
            evaluate(0)
        for step in range(start_step, config.steps):
            interrupts.raise_pending()  # a Ctrl-C whose exception was lost (raised inside a __del__)
            _sync(device)
            started = time.perf_counter()
            micro = []
            loss_count = input_count = 0
            for _ in range(config.grad_accum):
                try:
                    batch = next(batches)
                except StopIteration:
                    raise XlangError(
                        f"{name}: the data ran out at step {step}; make_batches must yield "
                        f"{config.grad_accum} micro-batch(es) per step for {config.steps} steps"
                    ) from None
                loss_count += count_tokens(batch)  # counted on the host: no device sync
                input_count += _input_tokens(batch)
                micro.append({k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()})
            if world > 1:  # the global step's token counts weigh every process's loss
                counts = torch.tensor([loss_count, input_count], device=device, dtype=torch.long)
                loss_count, input_count = (int(c) for c in accelerator.reduce(counts, reduction="sum").tolist())
            loss_tokens = float(max(loss_count, 1))
            loss_total = torch.zeros((), device=device, dtype=torch.float32)
            for index, batch in enumerate(micro):
                last = index == len(micro) - 1
                context = contextlib.nullcontext() if last else accelerator.no_sync(model)
                with context:
                    with _autocast(accelerator, config):
                        loss_sum, _ = loss_fn(model, batch)
                    accelerator.backward(loss_sum * (world / loss_tokens))
                loss_total += loss_sum.detach().float()
            grad_norm = None
            if config.max_grad_norm is not None:
                grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if world > 1:
                loss_total = accelerator.reduce(loss_total, reduction="sum")
            loss_value = float(loss_total) / loss_tokens
            _sync(device)
            record = StepRecord(
                step=step + 1,
                loss=loss_value,
                lr=lr,
                tokens=input_count,
                seconds=time.perf_counter() - started,
                grad_norm=_as_float(grad_norm) if grad_norm is not None else None,
            )
            result.history.append(record)
            window.append(record)
            last_loss = loss_value
            done_steps = step + 1
            if done_steps % config.log_every == 0 or done_steps == config.steps:
                tokens = sum(r.tokens for r in window)
                seconds = sum(r.seconds for r in window)
                metrics.log(
                    {
                        "step": done_steps,
                        "kind": "train",
                        "loss": sum(r.loss for r in window) / len(window),
                        "lr": lr,
                        "grad_norm": record.grad_norm,
                        "tokens": tokens,
                        "tokens_per_s": tokens / seconds if seconds else None,
                    }
                )
                progress.step(done_steps, loss=loss_value, tokens_per_s=tokens / max(seconds, 1e-9))
                window = []
            else:
                progress.step(done_steps)
            if config.eval_every and eval_fn is not None and done_steps % config.eval_every == 0:
                evaluate(done_steps)
            elif eval_fn is not None and config.eval_every and done_steps == config.steps:
                evaluate(done_steps)
            if done_steps == config.steps or (config.save_every and done_steps % config.save_every == 0):
                result.checkpoint = _save_checkpoint(
                    accelerator=accelerator,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    out_dir=out_dir,
                    step=done_steps,
                    config_hash=config_hash,
                    config=config,
                    loss=loss_value,
                    stream_position=stream_position(done_steps, world) if stream_position else None,
                )
    metrics.close()
    if device.type == "cuda":
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    result.final_loss = last_loss
    if accelerator.is_main_process and result.checkpoint is not None:
        _write_json_atomic(
            done_file,
            {
                "config_hash": config_hash,
                "steps": config.steps,
                "final_loss": last_loss,
                "checkpoint": str(result.checkpoint.relative_to(out_dir)),
                "sharded": _checkpoint_sharding(accelerator, fsdp),
            },
        )
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return result
