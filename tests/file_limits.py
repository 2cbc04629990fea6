"""A real "disk full" for a child process, without root: a file-size limit (`ulimit -f`).

`from file_limits import limit_file_size`: pass `preexec_fn=limit_file_size(N)` to `subprocess`; in the child no
file may grow past N bytes (a write fails with EFBIG, as a full disk fails with ENOSPC), and SIGXFSZ, which would
kill the child instead, is ignored. Both survive the child's exec.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    """A `preexec_fn` that caps every file the child writes at `max_bytes`."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit
