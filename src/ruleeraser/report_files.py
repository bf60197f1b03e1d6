"""The files ``ruleeraser evaluate`` writes: a before/after report as Markdown, JSON and PNG.

``reports`` maps each bias column to a :class:`ruleeraser.metrics.Report` whose rows are
``"before"`` and ``"after"``: overall accuracy and the paper's metrics, each (target, bias)
group's accuracy, and each bias group's share of every decision. ``header`` describes the run
(data, model, eraser, rows, target, and the class prior in force: ``prior``, and
``class_prior``, per bias column the prior its patch holds, or None).
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


def prior_in_force(eraser: Any) -> dict[str, Any]:
    """How a fitted eraser treats the class prior, for a report's header (or a service's
    description): ``prior`` ("balanced" or "keep") and ``class_prior``, per bias column the
    share of each class in the prior its patch holds (None for erasers saved without it).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from ruleeraser.removal import Removal
    >>> eraser = SimpleNamespace(removal_=Removal(1.0, "keep", (1.0,), (0.0, 0.0)),
    ...                          classes_=np.array([0, 1]), bias_names_=["race"],
    ...                          class_prior_=np.array([[0.25, 0.75]]))
    >>> prior_in_force(eraser)
    {'prior': 'keep', 'class_prior': {'race': {'0': 0.25, '1': 0.75}}}
    """
    held = getattr(eraser, "class_prior_", None)
    shares = None
    if held is not None:
        shares = {
            name: {str(c): float(p) for c, p in zip(eraser.classes_.tolist(), row, strict=True)}
            for name, row in zip(eraser.bias_names_, held, strict=True)
        }
    return {"prior": eraser.removal_.prior, "class_prior": shares}


def removal_in_force(eraser: Any) -> dict[str, Any]:
    """The removal a fitted eraser applies (``strength``, ``rule_scale``, ``offset``), and
    with a goal the goal and what its choice expects (``goal``: None without one).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from ruleeraser.removal import Removal
    >>> eraser = SimpleNamespace(removal_=Removal(1.0, "keep", (0.5,), (0.0, 0.2)), goal=None)
    >>> removal_in_force(eraser)
    {'strength': 1.0, 'rule_scale': [0.5], 'offset': [0.0, 0.2], 'goal': None}
    """
    removal = eraser.removal_
    out: dict[str, Any] = {
        "strength": removal.strength,
        "rule_scale": list(removal.scales),
        "offset": list(removal.offset),
        "goal": None,
    }
    if getattr(eraser, "goal", None) is not None:
        chosen = eraser.goal_fit_
        out["goal"] = {
            **eraser.goal.to_dict(),
            "met_on_calibration": chosen.met,
            "expected_gap": chosen.expected_gap,
            "interval": list(chosen.interval),
        }
    return out


def prior_line(header: dict[str, Any]) -> str:
    """How the eraser treats the class prior, in words."""
    if header.get("prior") != "keep":
        return (
            "Class prior: balanced (the paper's Eq. 19 removes the class prior with the bias, "
            "so the decisions are class-balanced)."
        )
    held = "; ".join(
        f"`{name}`: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in shares.items())
        for name, shares in (header.get("class_prior") or {}).items()
    )
    return f"Class prior: kept (only the bias-dependent part of each rule is removed; {held})."


def report_markdown(header: dict[str, Any], reports: dict[str, Any]) -> str:
    lines = [
        "# Rule eraser: before and after",
        "",
        f"Data `{header['data']}` ({header['rows']} rows, target `{header['target']}`), "
        f"model `{header['model']}`, eraser `{header['eraser']}`. Accuracies in percent: "
        "overall (all rows), average and worst over (target, bias) groups; model bias is "
        "EqualOdds (Eq. 20): per target class, the accuracy gap between bias groups.",
        "",
        prior_line(header),
    ]
    for name, rep in reports.items():
        lines += ["", f"## Bias `{name}`", "", rep.to_markdown(), ""]
        lines += ["| target | bias | rows | before | after |", "|---|---|---|---|---|"]
        for g in group_rows(reports, name):
            acc = ["-" if g[k] is None else f"{g[k]:.2f}" for k in ("before", "after")]
            lines.append(f"| {g['target']} | {g['bias']} | {g['rows']} | {acc[0]} | {acc[1]} |")
    return "\n".join(lines)


def plot_groups(reports: dict[str, Any], path: Path) -> None:
    """One row of panels per bias: each (target, bias) group's accuracy before and after (the
    overall accuracy in the title), and each bias group's share of every decision."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sizes = [len(group_rows(reports, name)) for name in reports]
    width = max(4.0, 0.9 * max(sizes) + 1.5)
    n_bias = max(len(next(iter(rep.rates.values())).biases) for rep in reports.values())
    rates_width = max(4.5, 1.6 * n_bias + 1.0)
    fig = Figure(figsize=(width + rates_width, 3.6 * len(reports)), layout="tight")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(reports), 2, width_ratios=[width, rates_width])
    for k, name in enumerate(reports):
        _accuracy_panel(fig.add_subplot(grid[k, 0]), reports, name)
        _rates_panel(fig.add_subplot(grid[k, 1]), reports[name], name)
    fig.savefig(path, dpi=100)


def _accuracy_panel(ax: Any, reports: dict[str, Any], name: str) -> None:
    groups = group_rows(reports, name)
    x = np.arange(len(groups))
    for offset, key in [(-0.2, "before"), (0.2, "after")]:
        heights = [np.nan if g[key] is None else g[key] for g in groups]
        ax.bar(x + offset, heights, width=0.4, label=key)
    ax.set_xticks(x, [f"y={g['target']}\nb={g['bias']}\nn={g['rows']}" for g in groups])
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    overall = ", ".join(f"{key} {g.overall:.1f}" for key, g in reports[name].rows.items())
    ax.set_title(f"per-group accuracy, bias {name} (overall: {overall})")
    ax.legend(loc="upper center", ncols=2, frameon=False)


def _rates_panel(ax: Any, report: Any, name: str) -> None:
    """Stacked bars: for each bias group, the share of each decision before and after."""
    keys = list(report.rates)
    first = report.rates[keys[0]]
    step = len(keys) + 1
    for c, decision in enumerate(first.decisions):
        for i, key in enumerate(keys):
            rates = report.rates[key].rates
            x = np.arange(len(first.biases)) * step + i
            bottom = rates[:, :c].sum(axis=1)
            label = f"decision {decision}" if i == 0 else None
            ax.bar(x, rates[:, c], bottom=bottom, width=0.9, color=f"C{c}", label=label)
    ticks = [j * step + i for j in range(len(first.biases)) for i in range(len(keys))]
    ax.set_xticks(ticks, [key for _ in first.biases for key in keys])
    groups = ax.secondary_xaxis(0)  # the bias value under each group of bars
    centres = np.arange(len(first.biases)) * step + (len(keys) - 1) / 2
    names = [f"b={b}\nn={n}" for b, n in zip(first.biases, first.counts, strict=True)]
    groups.set_xticks(centres, names)
    groups.tick_params(length=0, pad=18)
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("share of the group's rows (%)")
    ax.set_title(f"decisions per group, bias {name}")
    ax.legend(loc="upper center", ncols=min(len(first.decisions), 4), frameon=False)


def plot_tradeoff(points: list[dict[str, float]], chosen: float, goal: Any, path: Path) -> None:
    """The goal's objective against its gap along the strength (``points`` of
    :func:`ruleeraser.tradeoff.tradeoff_curve`), the model (strength 0) and the ``chosen``
    strength marked, the goal's largest gap as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gaps = [p["gap"] for p in points]
    objectives = [p["objective"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(gaps, objectives, "-o", color="0.55", markersize=3, label="strength 0 to 3")
    model = min(points, key=lambda p: p["strength"])
    ax.plot(model["gap"], model["objective"], "s", color="tab:red", label="the model")
    near = min(points, key=lambda p: abs(p["strength"] - chosen))
    ax.plot(near["gap"], near["objective"], "*", color="tab:blue", markersize=14,
            label=f"in force (strength {chosen:g})")  # fmt: skip
    if goal is not None:
        ax.axvline(goal.max_gap_points, color="tab:green", linestyle="--",
                   label=f"goal: gap <= {goal.max_gap_points:g}")  # fmt: skip
    name = getattr(goal, "constraint", "equalized_odds").replace("_", " ")
    ax.set_xlabel(f"{name} gap (points)")
    ax.set_ylabel(getattr(goal, "objective", "balanced_accuracy").replace("_", " "))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
