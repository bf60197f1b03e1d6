"""The analyses' figures: panels of lines with their spread over seeds, and image grids.

matplotlib (the ``bench`` extra) is imported when a figure is drawn, never on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Bars", "Line", "Panel", "bar_panels", "image_grid", "line_panels"]


@dataclass
class Line:
    """One line of a panel: its points' means and standard deviations over seeds.

    Attributes
    ----------
    label: the legend's entry (None: none).
    x, mean, std: the points, ``std`` drawn as a band around ``mean``.
    style: matplotlib's format string (``"-o"``, ``"--"``, ...).
    colour: a matplotlib colour (None: the next of the cycle).
    """

    label: str | None
    x: Sequence[float]
    mean: Sequence[float]
    std: Sequence[float]
    style: str = "-o"
    colour: str | None = None


@dataclass
class Panel:
    """One axes of :func:`line_panels`.

    Attributes
    ----------
    title, xlabel, ylabel: its texts.
    lines: its :class:`Line` s.
    log_x: a logarithmic x axis.
    xticks: ``(positions, labels)`` of the x axis (None: matplotlib's).
    """

    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    log_x: bool = False
    xticks: tuple[Sequence[float], Sequence[str]] | None = None


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_panels(
    panels: Sequence[Panel], path: str | Path, *, title: str = "", columns: int | None = None
) -> Path:
    """Draw ``panels`` in rows of ``columns`` axes and save the PNG.

    Parameters
    ----------
    panels: the axes, left to right, then top to bottom.
    path: the PNG to write.
    title: the figure's title.
    columns: axes per row (None: all in one row).

    Returns
    -------
    ``path``.
    """
    plt = pyplot()
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for line in panel.lines:
            x, mean, std = (np.asarray(v, dtype=float) for v in (line.x, line.mean, line.std))
            label = "_nolegend_" if line.label is None else line.label
            drawn = ax.plot(x, mean, line.style, color=line.colour, markersize=4, label=label)
            ax.fill_between(x, mean - std, mean + std, color=drawn[0].get_color(), alpha=0.15)
        if panel.log_x:
            ax.set_xscale("log")
        if panel.xticks is not None:
            ax.set_xticks(list(panel.xticks[0]), list(panel.xticks[1]))
            ax.minorticks_off()
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    *,
    column_titles: Sequence[str],
    overlay: Sequence[Sequence[bool]] | None = None,
    title: str = "",
) -> Path:
    """A grid of images: ``rows[i][j]`` is an RGB image ``(H, W, 3)`` in [0, 1] or, where
    ``overlay[i][j]``, a map ``(H, W)`` drawn as a heat map over the row's first image.

    Parameters
    ----------
    rows: the grid's rows, each the same number of images.
    path: the PNG to write.
    column_titles: one per column.
    overlay: which cells are heat maps (default: every cell but the first of each row).
    title: the figure's title.

    Returns
    -------
    ``path``.
    """
    plt = pyplot()
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols, 1.7 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = axes[i][j]
            heat = overlay[i][j] if overlay is not None else j > 0
            if heat:
                ax.imshow(row[0], alpha=0.45)
                ax.imshow(image, cmap="jet", alpha=0.55, vmin=0.0)
            else:
                ax.imshow(np.clip(image, 0.0, 1.0))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column_titles[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Bars:
    """One panel of :func:`bar_panels`: a bar per (category, series) with its spread.

    Attributes
    ----------
    title, ylabel: its texts.
    categories: the x axis' groups.
    series: series name -> ``(means, stds)``, one value per category.
    """

    title: str
    ylabel: str
    categories: list[str]
    series: dict[str, tuple[Sequence[float], Sequence[float]]]


def bar_panels(panels: Sequence[Bars], path: str | Path, *, title: str = "") -> Path:
    """Grouped bars with error bars, one row of panels; saves and returns ``path``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        x = np.arange(len(panel.categories))
        width = 0.8 / max(len(panel.series), 1)
        for i, (name, (mean, std)) in enumerate(panel.series.items()):
            ax.bar(x + (i - (len(panel.series) - 1) / 2) * width, mean, width, yerr=std,
                   capsize=2, label=name)  # fmt: skip
        ax.set_xticks(x, panel.categories, rotation=30, ha="right", fontsize=8)
        ax.set(title=panel.title, ylabel=panel.ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
