"""Signals that stop a run, even when the exception their handler raised was lost.

Python raises a signal handler's exception wherever the main thread happens to be. If that is inside a
`__del__` (the garbage collector closing a `ZipFile`, say), Python prints `Exception ignored in ...` and
carries on, and a run sent Ctrl-C would train to the end as if nothing had happened. The `xlang` command's
handlers therefore also note the signal here, and the runner (before each stage) and the training loop
(before each step) call :func:`raise_pending`, so a lost interrupt still stops the run one step later.
"""

from __future__ import annotations

_pending: list[str] = []


class Terminated(KeyboardInterrupt):
    """Raised by a SIGTERM handler (the `xlang` command installs one) so that a terminated run is recorded
    like Ctrl-C: the stage is `interrupted`, its checkpoints are kept, and the same command resumes."""


def note(signal_name: str) -> None:
    """Record that ``signal_name`` (``"SIGINT"`` or ``"SIGTERM"``) asked the run to stop."""
    _pending.append(signal_name)


def clear() -> None:
    """Forget noted signals (the command's handlers are gone, or the interrupt was handled)."""
    _pending.clear()


def raise_pending() -> None:
    """Raise the interrupt of a noted signal: `Terminated` for SIGTERM, `KeyboardInterrupt` for SIGINT."""
    if not _pending:
        return
    raise Terminated() if _pending[-1] == "SIGTERM" else KeyboardInterrupt()


def stop(signal_name: str) -> None:
    """What the command's handler for ``signal_name`` does: note the signal, then raise its interrupt."""
    note(signal_name)
    raise_pending()
