"""Launching a test's script as several processes on 127.0.0.1 (`torchrun`, gloo on CPU), or as one.

`from launching import python_command`: the command line that runs `args` (a script and its arguments, or
`-m MODULE ...`) in one process, or under torch's launcher in `processes` processes on a free port.
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
