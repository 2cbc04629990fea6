"""What every plot of a run shares: one colour per language in all of them, and values written next to the
points when there are few (a two-point curve drawn as a line looks like a trend it did not measure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PALETTE: tuple[str, ...] = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:gray",
)
FEW_POINTS = 8
"""Up to this many points a series shows its values and markers, and is not drawn as a smooth trend."""


def language_colours(codes: Iterable[str]) -> dict[str, str]:
    """Colour per language code in run order (the target first, then its companions): pass the run's
    languages in that order to every plot and a language keeps its colour across them."""
    return {code: PALETTE[index % len(PALETTE)] for index, code in enumerate(dict.fromkeys(codes))}


def plot_series(axis: Any, xs: Sequence[float], ys: Sequence[float], *, colour: str, label: str | None = None) -> None:
    """A series with markers; with few points, a dotted line between them and each value written beside it."""
    few = len(xs) <= FEW_POINTS
    axis.plot(
        xs,
        ys,
        color=colour,
        label=label,
        marker="o",
        ms=4 if few else 2,
        lw=1,
        ls=":" if few else "-",
    )
    if few:
        for x, y in zip(xs, ys, strict=True):
            axis.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)
