"""Launching a test's script as several processes on 127.0.0.1 (`torchrun`, gloo on CPU), or as one.

`from launching import python_command`: the command line that runs `args` (a script and its arguments, or
`-m MODULE ...`) in one process, or under torch's launcher in `processes` processes on a free port;
`accelerate_command` runs a script under `accelerate launch` with a config file.
"""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_command(args: list[str], processes: int = 1) -> list[str]:
    """`python ARGS`, or `python -m torch.distributed.run --nproc_per_node N --master_port PORT ARGS`."""
    if processes == 1:
        return [sys.executable, *args]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())]
    return [sys.executable, *launcher, *args]


def accelerate_command(args: list[str], processes: int, config_file: str) -> list[str]:
    """`accelerate launch --config_file CONFIG --num_processes N ARGS` on a free port: accelerate's own launcher,
    which passes the file's choices (DeepSpeed, its ZeRO stage) to the workers as environment variables."""
    launcher = ["-m", "accelerate.commands.launch", "--config_file", config_file, "--num_processes", str(processes)]
    return [sys.executable, *launcher, "--main_process_port", str(free_port()), *args]


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """`{rank: pid}` of the workers a torchrun process started (its children with RANK in their environment),
    read from /proc. torchrun starts each worker in a session of its own, so killing the launcher's process
    group leaves the workers running: a test that kills "the job" kills a rank, as a crash or the OOM killer
    would, and torchrun then stops the others."""
    from pathlib import Path

    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if parent != str(launcher_pid):
            continue
        rank = next((item[5:] for item in environment if item.startswith(b"RANK=")), None)
        if rank is not None and rank.isdigit():
            found[int(rank)] = int(entry.name)
    return found
