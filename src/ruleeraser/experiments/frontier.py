"""Accuracy-fairness frontiers: the Eraser's strength curve beside its peers' tolerance curves.

For each task and seed (vanilla deployed model, calibration and test splits as in Table IV):
the Eraser's curve over erasing strengths (:func:`ruleeraser.strength.strength_curve` on the
test split; strength 0 is the deployed model, 1 the Eraser as fitted), the tolerance curves
of the peers of :mod:`ruleeraser.experiments.baselines.peers` (OxonFair with inferred and
with true groups, error-parity; each refitted on the same calibration rows at every
equalized-odds bound), every other baseline's single point and the deployed model's. The plot
shows average group accuracy against model bias (EqualOdds, Eq. 20), means over seeds.

The matched-bias comparison (:func:`matched_bias`): at the model bias each peer reaches, the
Eraser's best average group accuracy at that bias or lower, read off its mean curve with
linear interpolation between consecutive strengths (:func:`best_accuracy_at`). A mixture that
decides each row with one of two strengths at random (a share ``t`` with the first) has group
accuracies linear in ``t`` and class gaps no larger than linear, so the interpolated point is
reachable. ``frontier.json`` keeps every per-seed point, the plotted means and the comparison.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ruleeraser.experiments.results import (
    METRICS,
    add_common_options,
    add_jobs_option,
    map_jobs,
    run_and_write,
)
from ruleeraser.experiments.setup import FACES, NAMES, TABLES, fit_methods, load_task
from ruleeraser.experiments.splits import split_dataset
from ruleeraser.metrics import group_accuracy
from ruleeraser.strength import DEFAULT_STRENGTHS, strength_curve

DATASETS = (*TABLES, *FACES)
#: The peers' equalized-odds bounds (1: unconstrained, their best balanced accuracy).
TOLERANCES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 1.0)
#: The peers drawn as curves, and the tolerance of their Table IV rows.
PEERS = ("oxonfair-inferred", "oxonfair", "error-parity")
HELP = (
    "the Eraser's strength curve beside OxonFair's and error-parity's tolerance curves, and "
    "a matched-bias comparison (about 2 minutes a task and seed on 2 cores)"
)
DESCRIPTION = (
    "Per task, plot average group accuracy against model bias: the Eraser over erasing "
    "strengths, OxonFair (inferred and true groups) and error-parity over equalized-odds "
    "bounds, every other post-training baseline and the deployed model (means over seeds); "
    "print and write, at the bias each peer reaches, the Eraser's best average group accuracy "
    "at that bias or lower (frontier.json, frontier.md, frontier.png)."
)


def _summary(test, pred: np.ndarray) -> dict[str, float]:
    return group_accuracy(test.y, pred, test.bias).summary()


def seed_points(
    task: tuple[str, int, Sequence[float], Sequence[float]],
) -> list[dict]:
    """Every method's test points for one (dataset, seed, strengths, tolerances).

    Returns
    -------
    Points: ``method``, ``strength`` (the Eraser's; 0 for the deployed model ``none``),
    ``tolerance`` (a peer's bound), ``seed`` and the metrics of :data:`METRICS`.
    """
    dataset, seed, strengths, tolerances = task
    splits = split_dataset(load_task(dataset), seed=seed)
    test = splits.test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted = fit_methods(splits, seed)
        curve = strength_curve(fitted.eraser, test.X, test.y, test.bias, strengths)
        predictions = fitted.predict(test)
    base = {"strength": None, "tolerance": None, "seed": seed}
    points = [{"method": "eraser", **base, **r} for r in curve]
    for method, pred in predictions.items():
        if method in ("eraser", *PEERS) or pred is None:  # the peers' curves hold their point
            continue
        strength = 0.0 if method == "none" else None
        points.append({"method": method, **base, "strength": strength, **_summary(test, pred)})
    for method in PEERS:
        peer = fitted.predictors.get(method)
        if peer is None:
            continue
        for tolerance in tolerances:
            moved = peer.with_tolerance(tolerance)
            pred = moved.predict(test.X, bias=test.bias if moved.needs_test_bias else None)
            point = {"method": method, **base, "tolerance": float(tolerance)}
            points.append(point | _summary(test, pred))
    return points


def run_frontier(
    dataset: str = "compas",
    seeds: Sequence[int] = (0, 1, 2),
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    tolerances: Sequence[float] = TOLERANCES,
    *,
    jobs: int = 1,
    progress: bool = True,
) -> dict:
    """Per-seed points of every method on one task, their means and the comparison.

    Parameters
    ----------
    dataset: a tabular task of :data:`DATASETS`.
    seeds: the seeds; each splits the task anew.
    strengths: the Eraser's erasing strengths.
    tolerances: the peers' equalized-odds bounds.
    jobs: worker processes (one seed each).
    progress: show a progress bar.

    Returns
    -------
    ``dataset``, ``deployed``, ``seeds``, ``strengths``, ``tolerances``, ``points`` (see
    :func:`seed_points`), ``plotted`` (:func:`mean_points`) and ``matched``
    (:func:`matched_bias`).
    """
    tasks = [(dataset, seed, list(strengths), list(tolerances)) for seed in seeds]
    points = [
        p
        for seed_result in map_jobs(
            seed_points, tasks, jobs=jobs, desc=f"frontier {dataset}", progress=progress
        )
        for p in seed_result
    ]
    plotted = mean_points(points)
    return {
        "dataset": dataset,
        "deployed": "vanilla",
        "seeds": list(seeds),
        "strengths": [float(s) for s in strengths],
        "tolerances": [float(t) for t in tolerances],
        "points": points,
        "plotted": plotted,
        "matched": matched_bias(plotted),
    }


def mean_points(points: list[dict]) -> list[dict]:
    """Mean and std over seeds of each (method, strength, tolerance), in order of first
    appearance."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["method"], p["strength"], p["tolerance"]), []).append(p)
    out = []
    for (method, strength, tolerance), members in groups.items():
        row = {"method": method, "strength": strength, "tolerance": tolerance, "n": len(members)}
        for metric in METRICS:
            values = np.array([m[metric] for m in members])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return out


def best_accuracy_at(curve: Sequence[tuple[float, float]], bias: float) -> float | None:
    """The highest accuracy a curve reaches at ``bias`` or lower.

    Parameters
    ----------
    curve: ``(model bias, average group accuracy)`` points in the order of the curve's dial
        (strengths ascending); consecutive points are joined by straight segments.
    bias: the bias level.

    Returns
    -------
    The highest accuracy over the points and segment crossings with model bias at most
    ``bias``; None when the whole curve lies above it.

    Example
    -------
    >>> best_accuracy_at([(10.0, 80.0), (4.0, 78.0), (2.0, 70.0)], 3.0)  # half-way 78 -> 70
    74.0
    >>> best_accuracy_at([(10.0, 80.0), (4.0, 78.0)], 1.0) is None
    True
    """
    best = None
    pairs = list(zip(curve[:-1], curve[1:], strict=True))
    candidates = [acc for b, acc in curve if b <= bias]
    for (b0, a0), (b1, a1) in pairs:
        if (b0 - bias) * (b1 - bias) < 0:  # the segment crosses the level
            candidates.append(a0 + (a1 - a0) * (bias - b0) / (b1 - b0))
    for acc in candidates:
        best = acc if best is None else max(best, acc)
    return None if best is None else float(best)


def matched_bias(plotted: list[dict]) -> list[dict]:
    """At every point of each peer's tolerance curve (means over seeds), the Eraser's best
    average group accuracy at that model bias or lower (:func:`best_accuracy_at`).

    Returns
    -------
    One row per peer point: ``peer``, ``tolerance``, ``peer_bias``, ``peer_acc``,
    ``eraser_acc`` (None where the Eraser's curve never comes that low), ``difference``
    (Eraser minus peer, None likewise), and ``peer_best``, the peer's own best at that bias or
    lower along its tolerance curve (the same reading of its curve).
    """

    def curve_of(method: str) -> list[tuple[float, float]]:
        return [(p["model_bias"], p["avg_acc"]) for p in plotted if p["method"] == method]

    eraser_curve = curve_of("eraser")
    rows = []
    for p in plotted:
        if p["method"] not in PEERS:
            continue
        eraser = best_accuracy_at(eraser_curve, p["model_bias"])
        rows.append(
            {
                "peer": p["method"],
                "tolerance": p["tolerance"],
                "peer_bias": p["model_bias"],
                "peer_acc": p["avg_acc"],
                "eraser_acc": eraser,
                "difference": None if eraser is None else eraser - p["avg_acc"],
                "peer_best": best_accuracy_at(curve_of(p["method"]), p["model_bias"]),
            }
        )
    return rows


def _number(value: float | None, sign: str = "") -> str:
    return "-" if value is None else f"{value:{sign}.2f}"


def _task_markdown(result: dict) -> list[str]:
    name = NAMES.get(result["dataset"], result["dataset"])
    curve = [p for p in result["plotted"] if p["method"] == "eraser"]
    fitted = next(p for p in curve if p["strength"] == 1.0)
    lowest = min(curve, key=lambda p: (p["model_bias"], -p["avg_acc"]))
    lines = [
        f"### {name}",
        "",
        f"Eraser as fitted (strength 1): average group accuracy {fitted['avg_acc']:.2f}, "
        f"model bias {fitted['model_bias']:.2f}; its curve's lowest bias: "
        f"{lowest['model_bias']:.2f} (strength {lowest['strength']:g}, average group "
        f"accuracy {lowest['avg_acc']:.2f}).",
        "",
        "| peer | bound | peer bias | peer avg acc | Eraser avg acc at that bias or lower "
        "| Eraser - peer | peer's own best at that bias or lower |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["matched"]:
        lines.append(
            f"| {NAMES[row['peer']]} | {row['tolerance']:g} | {row['peer_bias']:.2f} | "
            f"{row['peer_acc']:.2f} | {_number(row['eraser_acc'])} | "
            f"{_number(row['difference'], '+')} | {_number(row['peer_best'])} |"
        )
    lines.append("")
    for peer in PEERS:
        rows = [r for r in result["matched"] if r["peer"] == peer]
        if not rows:
            continue
        ahead = sum(r["difference"] is not None and r["difference"] >= 0 for r in rows)
        line = (
            f"- {NAMES[peer]}: the Eraser's curve matches or beats it at {ahead} of its "
            f"{len(rows)} bounds"
        )
        for r in rows:
            if r["tolerance"] == 0.02:
                gap = "not reached" if r["difference"] is None else f"{r['difference']:+.2f}"
                line += f"; at its Table IV bound (0.02, bias {r['peer_bias']:.2f}): {gap}"
        lines.append(line)
    return lines + [""]


def to_markdown(results: list[dict]) -> str:
    """The matched-bias comparison of every task (means over seeds)."""
    seeds = results[0]["seeds"] if results else []
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (means over seeds). Deployed model: vanilla. "
        "At the model bias each peer reaches at each equalized-odds bound, the Eraser's best "
        "average group accuracy at that bias or lower along its strength curve (linear "
        "between consecutive strengths; '-' where its curve never comes that low). OxonFair "
        "(true groups) and error-parity read each test row's bias label; the Eraser and "
        "OxonFair (inferred groups) do not.",
        "",
    ]
    for result in results:
        lines += _task_markdown(result)
    return "\n".join(lines)


def _plot_task(ax, result: dict) -> None:
    plotted = result["plotted"]
    curve = [p for p in plotted if p["method"] == "eraser"]
    top = max(p["strength"] for p in curve)
    for part, style, label in (
        ([p for p in curve if p["strength"] <= 1.0], "-o", "Eraser, strength 0 to 1"),
        ([p for p in curve if p["strength"] >= 1.0], ":o", f"Eraser, strength 1 to {top:g}"),
    ):
        if len(part) > 1:
            ax.plot([p["model_bias"] for p in part], [p["avg_acc"] for p in part], style,
                    color="C0", markersize=3, label=label)  # fmt: skip
    for p in curve:
        if p["strength"] in (0.0, 1.0, top):
            ax.annotate(f"s={p['strength']:g}", (p["model_bias"], p["avg_acc"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    for i, peer in enumerate(PEERS):
        tol = [p for p in plotted if p["method"] == peer]
        if not tol:
            continue
        bounds = f"bound {min(result['tolerances']):g} to {max(result['tolerances']):g}"
        ax.plot([p["model_bias"] for p in tol], [p["avg_acc"] for p in tol], "--s",
                color=f"C{i + 1}", markersize=3, label=f"{NAMES[peer]}, {bounds}")  # fmt: skip
        for p in tol:
            if p["tolerance"] == 0.02:
                ax.plot(p["model_bias"], p["avg_acc"], "s", color=f"C{i + 1}", markersize=7,
                        markerfacecolor="none")  # fmt: skip
    others = [p for p in plotted if p["method"] not in ("eraser", *PEERS)]
    for i, p in enumerate(others):
        ax.plot(p["model_bias"], p["avg_acc"], "*" if p["method"] == "none" else "x",
                color=f"C{i + 4}", alpha=0.7, label=NAMES[p["method"]])  # fmt: skip
    ax.set_title(NAMES.get(result["dataset"], result["dataset"]), fontsize=10)
    ax.set_xlabel("model bias (EqualOdds, %)  ← fairer", fontsize=8)
    ax.set_ylabel("average group accuracy (%)", fontsize=8)
    ax.grid(alpha=0.3)


def plot(results: list[dict], path: str | Path) -> Path:
    """One panel per task (average group accuracy against model bias, means over seeds; a
    peer's Table IV bound circled) and the legend; returns ``path``, the PNG written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results) + 1)
    rows = -(-(len(results) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, result in zip(flat, results, strict=False):
        _plot_task(ax, result)
    handles, labels = flat[0].get_legend_handles_labels()
    for ax in flat[len(results) :]:
        ax.axis("off")
    flat[len(results)].legend(handles, labels, loc="center", fontsize=8)
    seeds = len(results[0]["seeds"]) if results else 0
    fig.suptitle(f"Average group accuracy against model bias, mean over {seeds} seeds")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce frontier``."""
    torch.set_num_threads(1)

    def results(seeds: list[int]) -> list[dict]:
        return [
            run_frontier(
                name,
                seeds,
                args.strengths,
                args.tolerances,
                jobs=args.jobs,
                progress=not args.quiet,
            )  # fmt: skip
            for name in args.datasets
        ]

    return run_and_write(
        args, "frontier", results, to_markdown, f"{args.jobs} job(s) of 1 thread", plot
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce frontier``."""
    add_common_options(parser, "frontier")
    add_jobs_option(parser)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="tasks (default: COMPAS, LSAC and the three CelebA tasks)",
    )  # fmt: skip
    parser.add_argument(
        "--strengths", nargs="+", type=float, default=list(DEFAULT_STRENGTHS),
        help="erasing strengths of the Eraser's curve (default 0 to 2 by 0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--tolerances", nargs="+", type=float, default=list(TOLERANCES),
        help="the peers' equalized-odds bounds (default 0.005 to 1)",
    )  # fmt: skip
