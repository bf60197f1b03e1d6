"""Accuracy-fairness frontier: the Eraser's strengths against the post-training baselines.

For each seed (vanilla deployed model, calibration and test splits as in
:mod:`ruleeraser.experiments.setup`, as in Table IV): the Eraser's curve over erasing strengths
(:func:`ruleeraser.strength.strength_curve` on the test split; strength 0 is the deployed
model, 1 the paper's Eraser), each baseline's single point and the deployed model's. The
plot shows average group accuracy against model bias (EqualOdds, Eq. 20), means over seeds;
``frontier.json`` keeps every per-seed point and the plotted means computed from them.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ruleeraser.experiments.results import METRICS, add_common_options, add_threads_option
from ruleeraser.experiments.setup import FACES, NAMES, TABLES, fit_methods, load_task
from ruleeraser.experiments.splits import split_dataset
from ruleeraser.metrics import group_accuracy
from ruleeraser.strength import DEFAULT_STRENGTHS, strength_curve

DATASETS = (*TABLES, *FACES)
HELP = (
    "average group accuracy against model bias: Eraser strengths and baselines "
    "(3 to 5 minutes a task on 2 cores)"
)
DESCRIPTION = (
    "On one task, plot the Eraser's average group accuracy against model bias over erasing "
    "strengths beside the deployed model and every post-training baseline (mean over seeds); "
    "writes frontier.json (every per-seed point) and frontier.png."
)


def run_frontier(
    dataset: str = "compas",
    seeds: Sequence[int] = (0, 1, 2),
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    *,
    progress: bool = True,
) -> dict:
    """Per-seed points of every method and their means (``plotted``), JSON-ready.

    Parameters
    ----------
    dataset: a tabular task of :data:`DATASETS`.
    seeds: the seeds; each splits the task anew.
    strengths: the Eraser's erasing strengths.
    progress: show a progress bar.

    Returns
    -------
    ``dataset``, ``deployed``, ``seeds``, ``strengths``, ``points`` and ``plotted``. A point:
    ``method``, ``strength`` (the Eraser's; 0 for the deployed model ``none``; None for a
    baseline), ``seed``, ``avg_acc``, ``worst_acc``, ``model_bias``.
    """
    data = load_task(dataset)
    points = []
    for seed in tqdm(seeds, desc=f"frontier {dataset}", disable=not progress):
        splits = split_dataset(data, seed=seed)
        test = splits.test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fitted = fit_methods(splits, seed)
            curve = strength_curve(fitted.eraser, test.X, test.y, test.bias, strengths)
            predictions = fitted.predict(test)
        points += [{"method": "eraser", "seed": seed, **r} for r in curve]
        for method, pred in predictions.items():
            if method == "eraser" or pred is None:
                continue
            summary = group_accuracy(test.y, pred, test.bias).summary()
            strength = 0.0 if method == "none" else None
            points.append({"method": method, "strength": strength, "seed": seed, **summary})
    return {
        "dataset": dataset,
        "deployed": "vanilla",
        "seeds": list(seeds),
        "strengths": [float(s) for s in strengths],
        "points": points,
        "plotted": mean_points(points),
    }


def mean_points(points: list[dict]) -> list[dict]:
    """Mean and std over seeds of each (method, strength), in order of first appearance."""
    groups: dict[tuple[str, float | None], list[dict]] = {}
    for p in points:
        groups.setdefault((p["method"], p["strength"]), []).append(p)
    out = []
    for (method, strength), members in groups.items():
        row = {"method": method, "strength": strength, "n": len(members)}
        for metric in METRICS:
            values = np.array([m[metric] for m in members])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return out


def plot(result: dict, path: str | Path) -> Path:
    """Average group accuracy against model bias, from ``result["plotted"]``; returns
    ``path``, the PNG written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = result["plotted"]
    fig, ax = plt.subplots(figsize=(7, 5))
    curve = [p for p in plotted if p["method"] == "eraser"]
    top = max((p["strength"] for p in curve), default=1.0)
    for part, style, label in (
        ([p for p in curve if p["strength"] <= 1.0], "-o", "Eraser, strength 0 to 1"),
        ([p for p in curve if p["strength"] >= 1.0], "--o", f"Eraser, strength 1 to {top:g}"),
    ):
        if len(part) > 1:
            ax.plot([p["model_bias"] for p in part], [p["avg_acc"] for p in part], style,
                    color="C0", markersize=3, label=label)  # fmt: skip
    for p in curve:
        if p["strength"] in (0.0, 1.0, top):
            ax.annotate(f"s={p['strength']:g}", (p["model_bias"], p["avg_acc"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    others = [p for p in plotted if p["method"] != "eraser"]
    for i, p in enumerate(others):
        ax.errorbar(
            p["model_bias"], p["avg_acc"], xerr=p["model_bias_std"], yerr=p["avg_acc_std"],
            fmt="*" if p["method"] == "none" else "s", color=f"C{i + 1}", capsize=2,
            alpha=0.8, label=NAMES[p["method"]],
        )  # fmt: skip
    ax.set_xlabel("model bias (EqualOdds, %)  ← fairer")
    ax.set_ylabel("average group accuracy (%)")
    seeds = len(result["seeds"])
    ax.set_title(f"{NAMES.get(result['dataset'], result['dataset'])}: mean over {seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``frontier.json`` and ``frontier.png`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result, indent=2))
    return out / "frontier.json", plot(result, out / "frontier.png")


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce frontier``."""
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    start = time.perf_counter()
    result = run_frontier(args.dataset, seeds, args.strengths, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    json_path, png_path = write(result, args.out)
    print(f"wrote {json_path} and {png_path} ({elapsed:.0f} s, {torch.get_num_threads()} threads)")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce frontier``."""
    add_common_options(parser, "frontier")
    add_threads_option(parser)
    parser.add_argument(
        "--dataset", default="compas", choices=list(DATASETS), help="task (default compas)"
    )
    parser.add_argument(
        "--strengths", nargs="+", type=float, default=list(DEFAULT_STRENGTHS),
        help="erasing strengths of the Eraser's curve (default 0 to 2 by 0.1)",
    )  # fmt: skip
