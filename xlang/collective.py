"""`xlang extend` launched as several processes (`torchrun`, `accelerate launch`): one process runs the recipe,
every process trains.

Rank 0 is the run: it holds the run folder's lock, runs the stages, writes the manifest and every output.
The other ranks never touch the run folder on their own. They wait for calls: when a stage reaches its
training (`pretrain`, a LLaVA stage), it goes through `collective(function, **arguments)`, which sends the
function's import path and arguments to every rank, so that all of them call it together (the training
functions are written for that: the main process writes, all processes train, sharded under
`distributed="fsdp"`). When the recipe ends, or fails, rank 0 tells the others to stop. A rank killed
mid-run takes the launch down (torchrun ends every rank), and the same command resumes from the stages and
checkpoints already written, as a single-process run does.

The process group waits as long as rank 0 works alone (expansion, initialization, evaluation): its timeout
is `XLANG_COLLECTIVE_TIMEOUT_S` (default a day), not the 30 minutes of torch's default.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from xlang.errors import XlangError

DEFAULT_TIMEOUT_S = 24 * 3600
_CALL, _STOP = "call", "stop"
_joined: list[bool] = []
"""Holds True once :func:`start_process_group` has joined this process to the launch's group."""


def world_size() -> int:
    """The number of launched processes (WORLD_SIZE, as torchrun and accelerate launch set it); 1 otherwise."""
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise XlangError(f"WORLD_SIZE={value!r} is not a positive number; launch with torchrun or accelerate launch")
    return int(value)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def start_process_group() -> None:
    """Join the launched processes (gloo on CPU, nccl on GPUs), with a timeout long enough for rank 0's
    stages; the training functions' `Accelerator` then finds the group made."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise XlangError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} says this is one of several processes, but "
            f"{', '.join(missing)} is not set; launch with torchrun or accelerate launch, or unset WORLD_SIZE to run "
            "in one process"
        )
    timeout = float(os.environ.get("XLANG_COLLECTIVE_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    if torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    _joined.append(True)


def _broadcast(message: Any) -> Any:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def collective(function: Callable[..., Any], **arguments: Any) -> Any:
    """Call `function(**arguments)` in every process: rank 0 sends the call to the waiting ranks, then makes it
    too. In a single process this is the plain call. `function` must be importable by its module and name,
    and the arguments picklable; paths must be on a file system every rank sees."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _broadcast((_CALL, function.__module__, function.__qualname__, arguments))
    return function(**arguments)


def serve_calls() -> None:
    """What ranks other than 0 do for the whole run: make each call rank 0 sends, until it says stop."""
    while True:
        message = _broadcast(None)
        if message[0] == _STOP:
            return
        _, module, name, arguments = message
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        target(**arguments)


def stop_serving() -> None:
    """Rank 0, when the recipe has ended (done or not): the waiting ranks return from `serve_calls`."""
    if world_size() <= 1:
        return  # one process: nothing waits (and torch is not imported for a run that had nothing to do)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _broadcast((_STOP,))


def end_process_group() -> None:
    """Every rank, once the run is over: close the process group before the interpreter exits. Left open,
    gloo's threads were torn down at exit, and a finished run once ended in `terminate called without an
    active exception` (SIGABRT) on rank 0 after its last line, so torchrun reported a failure."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_launched_process(code: int) -> None:
    """A launched process (one whose process group was started) exits here, without the interpreter's
    finalization: every output is written and renamed by then, and stdout, stderr and the log handlers are
    flushed first.

    Why. `destroy_process_group` drops torch's own references to the groups, not those other libraries keep
    (DeepSpeed caches its data-parallel groups in module globals). A gloo group that outlives it is destroyed
    during finalization, with its worker threads still holding work objects, and the process aborts
    (`terminate called without an active exception`, SIGABRT): a two-process A/B run finished every stage,
    printed its final model and then failed on rank 0, so torchrun reported the whole launch failed."""
    import logging
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    logging.shutdown()
    os._exit(code)


def process_group_started() -> bool:
    """Whether this process joined a launched process group (see :func:`exit_launched_process`)."""
    return bool(_joined)
