"""Bias severity (the paper's Fig. 9): does the Eraser still work when the deployed model is
very biased?

Deployed models are trained on data whose share of bias-conflicting rows is ``alpha``:

- CelebA BigNose (the 40 attributes of all 202,599 faces as a table, bias gender): the
  training pool (the split's train and calibration parts) is resampled so that, within each
  gender, a share ``alpha`` of the rows has the target value opposite to the gender-aligned
  one (aligned: big nose for men, none for women), for ``alpha`` in 0.5, 0.3, 0.2, 0.1, 0.05,
  0.02. Each gender keeps the same number of rows at every ``alpha`` (the most the smallest
  cell allows), then the pool splits 5/6 train, 1/6 calibration; the test part is the
  split's, untouched.
- Coloured MNIST (Table I's 12 copies, width-16 CNN): training alignment 0.9, 0.95, 0.98, 0.99
  and 0.995, i.e. ``alpha`` = 0.1 ... 0.005.

A vanilla model per setting and seed, the default eraser fitted on the calibration part
(drawn like the training part), both measured on the test part, beside the oracle (a
diagnostic: the distilled rule of each test row's true bias subtracted).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

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
    summarise,
)
from ruleeraser.experiments.setup import (
    IMAGE_PATCH,
    IMAGE_TRAINING,
    NAMES,
    load_splits,
    model_callable,
    oracle_proba,
    summaries,
)
from ruleeraser.experiments.splits import Split, Splits

#: Share of bias-conflicting training rows per task.
ALPHAS = {
    "celeba-bignose": (0.5, 0.3, 0.2, 0.1, 0.05, 0.02),
    "coloured-mnist": (0.1, 0.05, 0.02, 0.01, 0.005),
}
DATASETS = tuple(ALPHAS)
#: ``oracle``, a diagnostic: the distilled rule of each test row's true bias subtracted.
METHODS = ("none", "eraser", "oracle")
HELP = (
    "Fig. 9: bias and accuracy before and after erasing, against the share of bias-conflicting "
    "training rows (about 10 minutes on 2 cores with 3 seeds)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


def conflicting_pool(
    y: np.ndarray, bias: np.ndarray, alpha: float, sizes: dict[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Rows of a pool resampled so that a share ``alpha`` of each bias group conflicts.

    A row conflicts when its target differs from its bias value (binary target and bias:
    value ``b`` of the bias is aligned with target ``b``).

    Parameters
    ----------
    y, bias: the pool's binary target and bias, ``(n,)``.
    alpha: the share of conflicting rows in every bias group, in (0, 1).
    sizes: bias value -> rows to draw from its group.
    rng: the draws' generator.

    Returns
    -------
    The drawn rows' positions, sorted.

    Example
    -------
    >>> y = np.array([0] * 80 + [1] * 20 + [1] * 50 + [0] * 50)
    >>> b = np.array([0] * 100 + [1] * 100)
    >>> rows = conflicting_pool(y, b, 0.2, {0: 50, 1: 50}, np.random.default_rng(0))
    >>> [float((y[rows][b[rows] == g] != g).mean()) for g in (0, 1)]
    [0.2, 0.2]
    """
    picked = []
    for value, size in sizes.items():
        n_conflicting = int(round(alpha * size))
        for conflicts, n in ((True, n_conflicting), (False, size - n_conflicting)):
            cell = np.flatnonzero((bias == value) & ((y != value) == conflicts))
            if n > len(cell):
                raise ValueError(
                    f"bias group {value} has {len(cell)} "
                    f"{'conflicting' if conflicts else 'aligned'} rows, {n} asked for"
                )
            picked.append(rng.choice(cell, n, replace=False))
    return np.sort(np.concatenate(picked))


def group_sizes(y: np.ndarray, bias: np.ndarray, alphas: Iterable[float]) -> dict[int, int]:
    """Per bias value, the most rows a group can keep at every ``alpha``.

    Example
    -------
    >>> y = np.array([0] * 80 + [1] * 20 + [1] * 50 + [0] * 50)
    >>> group_sizes(y, np.array([0] * 100 + [1] * 100), [0.5, 0.1])
    {0: 40, 1: 55}
    """
    sizes = {}
    for value in np.unique(bias):
        group = bias == value
        conflicting = int((group & (y != value)).sum())
        aligned = int(group.sum()) - conflicting
        sizes[int(value)] = min(int(min(conflicting / a, aligned / (1 - a))) for a in alphas)
    return sizes


def severity_splits(name: str, alpha: float, seed: int) -> Splits:
    """The task's parts with a share ``alpha`` of bias-conflicting training rows.

    Parameters
    ----------
    name: a task of :data:`ALPHAS`.
    alpha: the share of conflicting rows in the train and calibration parts.
    seed: seed of the split and the draws.

    Returns
    -------
    The :class:`~ruleeraser.experiments.splits.Splits`.
    """
    if name == "coloured-mnist":
        return load_splits(name, seed, alignment=1.0 - alpha)
    from sklearn.model_selection import train_test_split

    splits = load_splits(name, seed)
    pool = [splits.train, splits.calibration]
    X = np.concatenate([p.X for p in pool])
    y, bias = np.concatenate([p.y for p in pool]), np.concatenate([p.bias for p in pool])
    sizes = group_sizes(y, bias, ALPHAS[name])
    rows = conflicting_pool(y, bias, alpha, sizes, np.random.default_rng(seed))
    train, calib = train_test_split(
        rows, test_size=1 / 6, random_state=seed, stratify=y[rows] * 2 + bias[rows]
    )

    def part(idx: np.ndarray) -> Split:
        return Split(X=X[idx], y=y[idx], bias=bias[idx])

    return Splits(part(train), part(calib), splits.test, splits.feature_names)


def run_one(task: tuple[str, float, int]) -> dict:
    """One task, ``alpha`` and seed: the deployed model and the eraser on the test part.

    Parameters
    ----------
    task: ``(name, alpha, seed)``.

    Returns
    -------
    ``dataset``, ``alpha``, ``seed`` and the group metrics of each of :data:`METHODS`.
    """
    name, alpha, seed = task
    image = name == "coloured-mnist"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty calibration cells
        splits = severity_splits(name, alpha, seed)
        train, calib, test = splits.train, splits.calibration, splits.test
        options = IMAGE_TRAINING if image else {}
        model = train_deployed("vanilla", train.X, train.y, train.bias, seed=seed, **options)
        eraser = Eraser(model_callable(model), random_state=seed, **(IMAGE_PATCH if image else {}))
        eraser.fit(calib.X, calib.y, bias=calib.bias)
        proba, fair = eraser.model_and_fair_proba(test.X)
        oracle = oracle_proba(eraser, proba, test.bias)
    outputs = {"none": proba, "eraser": fair, "oracle": oracle}
    return {"dataset": name, "alpha": alpha, "seed": seed} | summaries(test, outputs)


def run_severity(
    seeds: Sequence[int],
    *,
    datasets: Iterable[str] = DATASETS,
    jobs: int = 2,
    progress: bool = True,
) -> dict:
    """Run Fig. 9's measurements.

    Parameters
    ----------
    seeds: the seeds, one job per task, ``alpha`` and seed.
    datasets: the tasks of :data:`ALPHAS`.
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    JSON-ready: ``seeds``, ``runs`` (every job's figures) and ``rows``: per task, ``alpha``
    and method of :data:`METHODS` every metric's mean, std and runs over seeds, and for
    ``eraser`` the bias cut (``bias_cut``, per seed) and the worst group's gain
    (``worst_gain``).
    """
    tasks = [(name, alpha, seed) for name in datasets for alpha in ALPHAS[name] for seed in seeds]
    runs = list(map_jobs(run_one, tasks, jobs=jobs, desc="severity", progress=progress))
    rows = []
    for name in datasets:
        for alpha in ALPHAS[name]:
            mine = [r for r in runs if (r["dataset"], r["alpha"]) == (name, alpha)]
            for method in METHODS:
                row = {"dataset": name, "alpha": alpha, "method": method}
                row |= summarise([r[method] for r in mine], METRICS)
                if method == "eraser":
                    row |= summarise([_gains(r) for r in mine], ["bias_cut", "worst_gain"])
                rows.append(row)
    return {"seeds": list(seeds), "runs": runs, "rows": rows}


def _gains(run: dict) -> dict[str, float]:
    before, after = run["none"], run["eraser"]
    return {
        "bias_cut": cut(after["model_bias"], before["model_bias"]),
        "worst_gain": after["worst_acc"] - before["worst_acc"],
    }


def _before(result: dict, row: dict) -> dict:
    """The deployed model's row of ``row``'s task and ``alpha``."""
    key = (row["dataset"], row["alpha"], "none")
    return next(r for r in result["rows"] if (r["dataset"], r["alpha"], r["method"]) == key)


def acceptance(result: dict) -> list[str]:
    """Per task: the smallest bias cut and worst-group gain over the settings (from the means
    over seeds), and the cut at the most severe setting against the mildest."""
    lines = []
    for name in dict.fromkeys(r["dataset"] for r in result["rows"]):
        erased = [r for r in result["rows"] if r["dataset"] == name and r["method"] == "eraser"]
        cuts, gains = {}, {}
        for row in erased:
            before = _before(result, row)
            cuts[row["alpha"]] = cut(row["model_bias"]["mean"], before["model_bias"]["mean"])
            gains[row["alpha"]] = row["worst_acc"]["mean"] - before["worst_acc"]["mean"]
        severe, mild = min(cuts), max(cuts)
        lines.append(
            f"{NAMES[name]}: bias cut {min(cuts.values()):.0f}% at least (alpha "
            f"{min(cuts, key=cuts.get)}), worst group {min(gains.values()):+.2f} at least (alpha "
            f"{min(gains, key=gains.get)}); cut at alpha {severe} {cuts[severe]:.0f}% against "
            f"{cuts[mild]:.0f}% at alpha {mild} ({abs(cuts[severe] - cuts[mild]):.0f} points "
            "apart)"
        )
    return lines


def to_markdown(result: dict) -> str:
    """One line per task, ``alpha`` and method (cut from the means over seeds), then the
    bars."""
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))} (mean ± std over seeds). alpha: share "
        "of bias-conflicting rows in the deployed model's training data (and the calibration "
        "set); vanilla deployed model; oracle: a diagnostic, the distilled rule of each test "
        "row's true bias subtracted.",
        "",
        "| task | alpha | method | average acc | worst acc | model bias | bias cut |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        metrics = " | ".join(cell(row[m]) for m in METRICS)
        bias_cut = ""
        if row["method"] != "none":
            before = _before(result, row)["model_bias"]["mean"]
            bias_cut = f"{cut(row['model_bias']['mean'], before):.0f}%"
        lines.append(
            f"| {NAMES[row['dataset']]} | {row['alpha']} | {row['method']} | {metrics} | "
            f"{bias_cut} |"
        )
    return "\n".join([*lines, "", *(f"- {line}" for line in acceptance(result))]) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Per task, model bias and group accuracies before and after against ``alpha``."""
    panels = []
    for name in dict.fromkeys(r["dataset"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["dataset"] == name]
        alphas = list(ALPHAS[name])
        ticks = (alphas, [f"{a:g}" for a in alphas])
        xlabel = "alpha (share of conflicting training rows)"
        axes = {"log_x": True, "xticks": ticks}
        bias = Panel(f"{NAMES[name]}: model bias", xlabel, "EqualOdds (%)", **axes)
        accuracy = Panel(f"{NAMES[name]}: group accuracy", xlabel, "accuracy (%)", **axes)
        for method, style in (("none", "--o"), ("eraser", "-o")):
            by = {r["alpha"]: r for r in rows if r["method"] == method}
            label = "deployed" if method == "none" else "erased"
            for panel, metric, colour in (
                (bias, "model_bias", "C3" if method == "none" else "C0"),
                (accuracy, "avg_acc", "C3" if method == "none" else "C0"),
                (accuracy, "worst_acc", "C1" if method == "none" else "C2"),
            ):
                suffix = "" if panel is bias else f", {metric.split('_')[0]}"
                means = [by[a][metric]["mean"] for a in alphas]
                stds = [by[a][metric]["std"] for a in alphas]
                panel.lines.append(Line(f"{label}{suffix}", alphas, means, stds, style, colour))
        panels += [bias, accuracy]
    seeds = len(result["seeds"])
    title = f"Bias severity (mean ± std over {seeds} seeds)"
    return line_panels(panels, path, title=title, columns=2)


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce severity``."""

    def result(seeds: list[int]) -> dict:
        return run_severity(seeds, datasets=args.datasets, jobs=args.jobs, progress=not args.quiet)

    return run_and_write(args, "severity", result, to_markdown, f"{args.jobs} process(es)", plot)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce severity``."""
    add_common_options(parser, "severity")
    add_jobs_option(parser)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="tasks to run (default: both)",
    )  # fmt: skip
