"""Calibration set size (the paper's Fig. 8): how many labelled rows the Eraser needs.

For each task and seed one vanilla deployed model is trained on the train part; the eraser is
then refitted on nested subsets of the calibration part, rows the model never saw, stratified
by (target, bias) cell (:func:`ruleeraser.calibration_size.calibration_curve`), whose size is
a ratio of the train part's: 1/1000, 1/500, 1/200, 1/100, 1/50, 1/10 and 1/5 (the whole
calibration part: a sixth of the pool is a fifth of the five sixths that train). Each refit is
measured on the test part. Tasks: the three CelebA attribute tasks on all 202,599 faces (so
1/1000 is 135 rows), LSAC and COMPAS, each at the ratios that leave at least 20 rows.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from ruleeraser.calibration_size import calibration_curve
from ruleeraser.eraser import Eraser
from ruleeraser.experiments.deployed import train_deployed
from ruleeraser.experiments.figures import Line, Panel, line_panels
from ruleeraser.experiments.results import (
    METRICS,
    add_common_options,
    add_jobs_option,
    cell,
    cut,
    map_jobs,
    run_and_write,
    stat,
)
from ruleeraser.experiments.setup import FACES, NAMES, TABLES, load_splits

RATIOS = (1 / 1000, 1 / 500, 1 / 200, 1 / 100, 1 / 50, 1 / 10, 1 / 5)
#: Fewest calibration rows a ratio may leave.
MIN_ROWS = 20
DATASETS = (*FACES, *TABLES)
HELP = (
    "Fig. 8: bias and accuracy against the calibration set's size (about 3 minutes on 2 "
    "cores with 3 seeds)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


def ratio_label(ratio: float) -> str:
    """``1/1000`` for 0.001.

    Example
    -------
    >>> ratio_label(0.2)
    '1/5'
    """
    return f"1/{round(1 / ratio)}"


def run_one(task: tuple[str, int, tuple[float, ...]]) -> dict:
    """One task and seed: train the deployed model, refit the eraser at every ratio.

    Parameters
    ----------
    task: ``(name, seed, ratios)``.

    Returns
    -------
    ``dataset``, ``seed``, ``n_train``, ``before`` (the deployed model's group metrics) and
    ``points``: per ratio that leaves :data:`MIN_ROWS` rows, ``ratio``, ``n`` and the group
    metrics after erasing.
    """
    name, seed, ratios = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small subsets: empty cells
        splits = load_splits(name, seed)
        train, calib, test = splits.train, splits.calibration, splits.test
        model = train_deployed("vanilla", train.X, train.y, train.bias, seed=seed)
        sizes = {r: round(r * len(train.y)) for r in ratios}
        sizes = {r: n for r, n in sizes.items() if MIN_ROWS <= n <= len(calib.y)}
        curve = calibration_curve(
            Eraser(model, random_state=seed), calib.X, calib.y, bias=calib.bias,
            sizes=sorted(sizes.values()), eval_set=(test.X, test.y, test.bias),
            random_state=seed,
        )  # fmt: skip
    by_size = {p["n"]: p for p in curve.points}
    points = [{"ratio": r, **by_size[n]} for r, n in sizes.items()]
    return {"dataset": name, "seed": seed, "n_train": len(train.y), "before": curve.before,
            "points": points}  # fmt: skip


def run_calibration_size(
    seeds: Sequence[int],
    *,
    datasets: Iterable[str] = DATASETS,
    ratios: Sequence[float] = RATIOS,
    jobs: int = 2,
    progress: bool = True,
) -> dict:
    """Run Fig. 8's measurements.

    Parameters
    ----------
    seeds: the seeds, one job per task and seed.
    datasets: the tasks.
    ratios: calibration rows as a share of the train part's rows.
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    JSON-ready: ``seeds``, ``runs`` (every task and seed's figures, :func:`run_one`) and
    ``rows``: per task the deployed model (``ratio`` None) and each ratio, every metric's
    mean, std and runs over seeds, ``n`` and ``bias_cut``.
    """
    tasks = [(name, seed, tuple(ratios)) for name in datasets for seed in seeds]
    runs = list(map_jobs(run_one, tasks, jobs=jobs, desc="calibration-size", progress=progress))
    rows = []
    for name in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == name]
        rows.append({"dataset": name, "ratio": None, "n": None}
                    | {m: stat(r["before"][m] for r in mine) for m in METRICS})  # fmt: skip
        for ratio in ratios:
            points = [p for r in mine for p in r["points"] if p["ratio"] == ratio]
            if len(points) != len(mine):
                continue  # too few rows at this ratio
            row = {"dataset": name, "ratio": ratio, "n": stat(p["n"] for p in points)}
            row |= {m: stat(p[m] for p in points) for m in [*METRICS, "bias_cut"]}
            rows.append(row)
    return {"seeds": list(seeds), "runs": runs, "rows": rows}


def _row(result: dict, dataset: str, ratio: float | None) -> dict | None:
    return next(
        (r for r in result["rows"] if r["dataset"] == dataset and r["ratio"] == ratio), None
    )


def acceptance(result: dict) -> list[str]:
    """The issue's bars, measured: the cut at the smallest ratio of every CelebA task and
    BigNose's gaps between the smallest and the largest ratio."""
    lines = []
    smallest, largest = min(RATIOS), max(RATIOS)
    for name in FACES:
        row, before = _row(result, name, smallest), _row(result, name, None)
        if row and before:
            lines.append(
                f"{NAMES[name]}: bias cut at {ratio_label(smallest)} "
                f"{cut(row['model_bias']['mean'], before['model_bias']['mean']):.0f}% "
                f"({before['model_bias']['mean']:.2f} -> {row['model_bias']['mean']:.2f})"
            )
    low, high = _row(result, "celeba-bignose", smallest), _row(result, "celeba-bignose", largest)
    if low and high:
        gap = {m: abs(low[m]["mean"] - high[m]["mean"]) for m in ("model_bias", "avg_acc")}
        lines.append(
            f"CelebA BigNose, {ratio_label(smallest)} against {ratio_label(largest)}: model bias "
            f"{gap['model_bias']:.2f} points apart (paper 7.2), average group accuracy "
            f"{gap['avg_acc']:.2f} points apart (paper 3.4)"
        )
    return lines


def to_markdown(result: dict) -> str:
    """One line per task and ratio (the deployed model first), then the bars."""
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))} (mean ± std over seeds). Vanilla "
        "deployed model; calibration rows as a share of its training rows.",
        "",
        "| task | ratio | calibration rows | average acc | worst acc | model bias | bias cut |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        label = "none (deployed)" if row["ratio"] is None else ratio_label(row["ratio"])
        rows = "" if row["n"] is None else f"{row['n']['mean']:.0f}"
        metrics = " | ".join(cell(row[m]) for m in METRICS)
        before = _row(result, row["dataset"], None)["model_bias"]["mean"]
        bias_cut = "" if row["ratio"] is None else f"{cut(row['model_bias']['mean'], before):.0f}%"
        lines.append(f"| {NAMES[row['dataset']]} | {label} | {rows} | {metrics} | {bias_cut} |")
    return "\n".join([*lines, "", *(f"- {line}" for line in acceptance(result))]) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Model bias and average group accuracy against the ratio (log axis), a line per task,
    the deployed model's level dotted in the same colour."""
    panels = []
    for metric, label in (
        ("model_bias", "model bias (EqualOdds, %)"),
        ("avg_acc", "average group accuracy (%)"),
    ):
        panel = Panel(
            f"{label.split(' (')[0]} after erasing",
            "calibration rows / training rows",
            label,
            log_x=True,
            xticks=(RATIOS, [ratio_label(r) for r in RATIOS]),
        )
        for i, name in enumerate(dict.fromkeys(r["dataset"] for r in result["rows"])):
            rows = [r for r in result["rows"] if r["dataset"] == name and r["ratio"]]
            ratios = [r["ratio"] for r in rows]
            after = Line(
                NAMES[name],
                ratios,
                [r[metric]["mean"] for r in rows],
                [r[metric]["std"] for r in rows],
                colour=f"C{i}",
            )
            before = _row(result, name, None)[metric]["mean"]
            level = [before] * len(rows)
            deployed = Line(None, ratios, level, [0.0] * len(rows), style=":", colour=f"C{i}")
            panel.lines += [after, deployed]
        panels.append(panel)
    seeds = len(result["seeds"])
    title = f"Calibration set size (mean ± std over {seeds} seeds; dotted: the deployed model)"
    return line_panels(panels, path, title=title)


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce calibration-size``."""

    def result(seeds: list[int]) -> dict:
        return run_calibration_size(
            seeds, datasets=args.datasets, jobs=args.jobs, progress=not args.quiet
        )

    return run_and_write(
        args, "calibration-size", result, to_markdown, f"{args.jobs} process(es)", plot
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce calibration-size``."""
    add_common_options(parser, "calibration-size")
    add_jobs_option(parser)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="tasks to run (default: all)",
    )  # fmt: skip
