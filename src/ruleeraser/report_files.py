"""The files ``ruleeraser evaluate`` writes: a before/after report as Markdown, JSON and PNG.

``reports`` maps each bias column to a :class:`ruleeraser.metrics.Report` whose rows are
``"before"`` and ``"after"``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def group_rows(reports: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """One entry per (target, bias) group: its size and accuracy before and after (%)."""
    rows = reports[name].rows
    first = rows["before"]
    return [
        {
            "target": t,
            "bias": v,
            "rows": int(first.counts[i, j]),
            **{
                key: None if math.isnan(g.accuracy[i, j]) else float(g.accuracy[i, j])
                for key, g in rows.items()
            },
        }
        for i, t in enumerate(first.targets)
        for j, v in enumerate(first.biases)
    ]


def report_json(header: dict[str, Any], reports: dict[str, Any]) -> dict[str, Any]:
    return {
        **header,
        "biases": {
            name: {"summary": rep.to_dict(), "groups": group_rows(reports, name)}
            for name, rep in reports.items()
        },
    }


def report_markdown(header: dict[str, Any], reports: dict[str, Any]) -> str:
    lines = [
        "# Rule eraser: before and after",
        "",
        f"Data `{header['data']}` ({header['rows']} rows, target `{header['target']}`), "
        f"model `{header['model']}`, eraser `{header['eraser']}`. Accuracies in percent; model "
        "bias is EqualOdds (Eq. 20): per target class, the accuracy gap between bias groups.",
    ]
    for name, rep in reports.items():
        lines += ["", f"## Bias `{name}`", "", rep.to_markdown(), ""]
        lines += ["| target | bias | rows | before | after |", "|---|---|---|---|---|"]
        for g in group_rows(reports, name):
            acc = ["-" if g[k] is None else f"{g[k]:.2f}" for k in ("before", "after")]
            lines.append(f"| {g['target']} | {g['bias']} | {g['rows']} | {acc[0]} | {acc[1]} |")
    return "\n".join(lines)


def plot_groups(reports: dict[str, Any], path: Path) -> None:
    """Bars of each (target, bias) group's accuracy before and after, one panel per bias."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = [len(group_rows(reports, name)) for name in reports]
    fig = Figure(figsize=(max(4.0, 0.9 * max(sizes) + 1.5), 3.2 * len(reports)), layout="tight")
    FigureCanvasAgg(fig)
    for k, name in enumerate(reports):
        ax = fig.add_subplot(len(reports), 1, k + 1)
        groups = group_rows(reports, name)
        x = np.arange(len(groups))
        for offset, key in [(-0.2, "before"), (0.2, "after")]:
            heights = [np.nan if g[key] is None else g[key] for g in groups]
            ax.bar(x + offset, heights, width=0.4, label=key)
        ax.set_xticks(x, [f"y={g['target']}\nb={g['bias']}\nn={g['rows']}" for g in groups])
        ax.set_ylim(0, 118)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"per-group accuracy, bias {name}")
        ax.legend(loc="upper center", ncols=2, frameon=False)
    fig.savefig(path, dpi=100)
