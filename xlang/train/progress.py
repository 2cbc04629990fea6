"""Progress of a training loop where the user reads it: a live bar on a terminal, plain lines elsewhere.

A log file, a pipe (`xlang extend ... | tee run.log`), CI or a notebook's captured output cannot show a
redrawn bar: rich draws nothing there until the loop ends. So when stdout is not a terminal, the loop
prints one plain line after its first step, then at least every `every_s` seconds, and at its last
step: step, loss, tokens per second, elapsed time and ETA.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0
"""Seconds between plain progress lines (a line also follows the first and the last step), unless the
`progress_every_s` setting says otherwise (`XLANG_PROGRESS_EVERY_S`, exported by the settings)."""


def plain_every_s() -> float:
    try:
        return float(os.environ.get("XLANG_PROGRESS_EVERY_S", PLAIN_EVERY_S))
    except ValueError:
        return PLAIN_EVERY_S


def duration_text(seconds: float) -> str:
    """`4m07s`, `1h02m03s`: how long, in progress lines."""
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class StepProgress:
    """`with StepProgress(name, total, start) as progress: ... progress.step(done, loss=, tokens_per_s=)`.

    `plain` None decides by the stream (a terminal gets rich's bar); `clock` is the time source, so the
    line rhythm can be checked without waiting.
    """

    def __init__(
        self,
        name: str,
        total: int,
        start: int = 0,
        *,
        enabled: bool = True,
        plain: bool | None = None,
        every_s: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.total, self.start = name, total, start
        self.enabled = enabled
        self.stream = stream
        self.plain = (not self._out().isatty()) if plain is None else plain
        self.every_s = plain_every_s() if every_s is None else every_s
        self.clock = clock
        self._bar: Any = None
        self._task: Any = None
        self._began = 0.0
        self._last_line: float | None = None
        self._loss: float | None = None
        self._rate: float | None = None
        self._first: tuple[int, float] | None = None
        """(step, time) of the first step seen: the ETA counts from there, so the evaluation and loading that
        come before the first step do not inflate it."""

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def __enter__(self) -> StepProgress:
        self._began = self.clock()
        if self.enabled and not self.plain:
            self._bar, self._task = _rich_bar(self.name, self.total, self.start)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def step(self, done: int, *, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        """Optimizer step `done` (of `total`) finished; `loss` and `tokens_per_s` when a logging window closed."""
        if loss is not None:
            self._loss = loss
        if tokens_per_s is not None:
            self._rate = tokens_per_s
        if not self.enabled:
            return
        if self._bar is not None:
            fields = {}
            if loss is not None:
                fields["loss"] = f"{loss:.3f}"
            if tokens_per_s is not None:
                fields["rate"] = f"{tokens_per_s:,.0f}"
            self._bar.update(self._task, completed=done, **fields)
            return
        now = self.clock()
        if self._first is None:
            self._first = (done, now)
        due = self._last_line is None or now - self._last_line >= self.every_s or done >= self.total
        if due:
            self._last_line = now
            self.line(self._status(done, now))

    def line(self, text: str) -> None:
        """A plain line (an evaluation's result, a note); on a terminal it goes above the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(f"{self.name}: {text}", highlight=False)
        else:
            print(f"  {self.name}: {text}", file=self._out(), flush=True)

    def _status(self, done: int, now: float) -> str:
        elapsed = now - self._began
        parts = [f"step {done}/{self.total}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.3f}")
        if self._rate is not None:
            parts.append(f"{self._rate:,.0f} tokens/s")
        parts.append(f"elapsed {duration_text(elapsed)}")
        first_done, first_at = self._first or (done, now)
        if done > first_done and done < self.total:
            parts.append(f"ETA {duration_text((now - first_at) / (done - first_done) * (self.total - done))}")
        return ", ".join(parts)


def _rich_bar(name: str, total: int, start: int) -> tuple[Any, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )
    task = bar.add_task(name, total=total, completed=start, loss="-", rate="-")
    return bar, task
