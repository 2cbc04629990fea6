"""How a run shows where it is: a live rich line on a terminal, a plain line every few seconds otherwise
(logs and CI), both from the same counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from xlang.train.progress import duration_text


@dataclass
class Counters:
    """What a run has done so far (this run only, except `skipped`: records an earlier run wrote)."""

    total: int = 0
    skipped: int = 0
    written: int = 0
    rejected: int = 0
    retried: int = 0
    gave_up: int = 0
    in_flight: int = 0
    spent_usd: float = 0.0
    """This run's spend."""
    priced: bool = True
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.skipped - self.written - self.gave_up)

    def rate(self) -> float:
        """Records written per second since the start."""
        elapsed = time.monotonic() - self.started
        return self.written / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return self.remaining / rate if rate > 0 else None

    def line(self) -> str:
        eta = self.eta_s()
        left = "?" if eta is None else duration_text(eta)
        cost = f"${self.spent_usd:.4f}" if self.priced else "n/a (no price)"
        return (
            f"{self.skipped + self.written}/{self.total} records ({self.written} new, {self.skipped} earlier), "
            f"{self.rejected} rejected, {self.retried} retried, {self.in_flight} in flight, "
            f"{self.rate():.2f} records/s, cost {cost}, ETA {left}"
        )


class Reporter(Protocol):
    def start(self, counters: Counters) -> None: ...

    def update(self, counters: Counters) -> None: ...

    def finish(self, counters: Counters) -> None: ...


class SilentReporter:
    def start(self, counters: Counters) -> None:
        pass

    def update(self, counters: Counters) -> None:
        pass

    def finish(self, counters: Counters) -> None:
        pass


class PlainReporter:
    """A line every `every_s` seconds (and at the end) for output that is not a terminal."""

    def __init__(self, console: Any, every_s: float = 10.0) -> None:
        self.console = console
        self.every_s = every_s
        self._last = 0.0

    def start(self, counters: Counters) -> None:
        self._last = time.monotonic()

    def update(self, counters: Counters) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.console.print(f"progress: {counters.line()}", highlight=False, soft_wrap=True)

    def finish(self, counters: Counters) -> None:
        pass


class RichReporter:
    """A rich progress bar whose description carries the counters."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]data[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: Any = None

    def _description(self, counters: Counters) -> str:
        cost = f"${counters.spent_usd:.4f}" if counters.priced else "n/a"
        return (
            f"[green]{counters.written} new[/] [yellow]{counters.rejected} rejected[/] "
            f"[magenta]{counters.retried} retried[/] {counters.in_flight} in flight "
            f"{counters.rate():.2f}/s cost {cost}"
        )

    def start(self, counters: Counters) -> None:
        self.progress.start()
        self._task = self.progress.add_task(
            self._description(counters), total=counters.total, completed=counters.skipped
        )

    def update(self, counters: Counters) -> None:
        self.progress.update(
            self._task, completed=counters.skipped + counters.written, description=self._description(counters)
        )

    def finish(self, counters: Counters) -> None:
        self.update(counters)
        self.progress.stop()


def reporter_for(console: Any | None) -> Reporter:
    """Rich on a terminal, plain lines otherwise, nothing without a console."""
    if console is None:
        return SilentReporter()
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
