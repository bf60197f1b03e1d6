"""Backbones (the paper's Table V): does the deployed model's architecture matter?

The same task with deployed models of different architecture families, each erased with the
same patch settings (the eraser only ever sees outputs):

- images, coloured MNIST at 95% (Table I's 12 copies): the small CNN (width 16), the
  package's ResNet-18 (width 8: 3x the CNN's cost per image), each trained 3 epochs, and a
  small vision transformer on torch's ``nn.TransformerEncoder``
  (:class:`~ruleeraser.experiments.vit.SmallViT`: 4x4 patches, width 64, 4 layers) trained 8;
  the patch is the width-16 CNN;
- tables, CelebA BigNose (all 202,599 faces, bias gender, not an input) and LSAC (bias race):
  an MLP (the vanilla recipe), scikit-learn's ``HistGradientBoostingClassifier`` and a
  ``LogisticRegression``, both class-balanced like the MLP; the patch is the default MLP.

Rows: the deployed model (``none``), the eraser and the oracle (a diagnostic: the distilled
rule of each test row's true bias subtracted).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ruleeraser.eraser import Eraser
from ruleeraser.experiments.deployed import train_deployed
from ruleeraser.experiments.figures import Bars, bar_panels
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

#: Task -> its backbones.
BACKBONES = {
    "coloured-mnist": ("cnn", "resnet18", "vit"),
    "celeba-bignose": ("mlp", "gradient-boosting", "logistic"),
    "lsac": ("mlp", "gradient-boosting", "logistic"),
}
DATASETS = tuple(BACKBONES)
#: Coloured MNIST's training alignment here.
ALIGNMENT = 0.95
#: Training settings of each image backbone.
IMAGE_BACKBONES = {
    "cnn": IMAGE_TRAINING,
    "resnet18": IMAGE_TRAINING | {"backbone": "resnet18", "width": 8},
    # 3 epochs teach the ViT only the colour, 8 the digits too (docs/backbones.md).
    "vit": IMAGE_TRAINING | {"backbone": "vit", "width": 64, "epochs": 8},
}
BACKBONE_NAMES = {
    "cnn": "CNN",
    "resnet18": "ResNet-18",
    "vit": "ViT",
    "mlp": "MLP",
    "gradient-boosting": "gradient boosting",
    "logistic": "logistic regression",
}
METHODS = ("none", "eraser", "oracle")
HELP = (
    "Table V: deployed models of different architectures (CNN, ResNet-18, ViT; MLP, gradient "
    "boosting, logistic regression), before and after the Eraser (about 16 minutes on 2 cores "
    "with 3 seeds)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


def deployed_model(backbone: str, X: Any, y: Any, bias: Any, seed: int) -> Any:
    """Train a vanilla deployed model of ``backbone`` on the train part.

    Parameters
    ----------
    backbone: a name of :data:`BACKBONES`.
    X, y, bias: the train part (``bias`` feeds nothing: vanilla models ignore it).
    seed: the training seed.

    Returns
    -------
    A torch module (logits) or a fitted scikit-learn classifier.
    """
    if backbone in IMAGE_BACKBONES:
        return train_deployed("vanilla", X, y, bias, seed=seed, **IMAGE_BACKBONES[backbone])
    if backbone == "mlp":
        return train_deployed("vanilla", X, y, bias, seed=seed)
    if backbone == "gradient-boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)
    elif backbone == "logistic":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(class_weight="balanced", max_iter=2000)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONE_NAMES)}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(torch.get_num_threads()):  # as many OpenMP threads as torch's
        return model.fit(X, y)


def run_one(task: tuple[str, str, int]) -> dict:
    """One task, backbone and seed: the deployed model, the eraser and the oracle.

    Parameters
    ----------
    task: ``(dataset, backbone, seed)``.

    Returns
    -------
    ``dataset``, ``backbone``, ``seed`` and each of :data:`METHODS`' group metrics.
    """
    name, backbone, seed = task
    image = backbone in IMAGE_BACKBONES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty calibration cells
        splits = load_splits(name, seed, alignment=ALIGNMENT if image else None)
        train, calib, test = splits.train, splits.calibration, splits.test
        model = deployed_model(backbone, train.X, train.y, train.bias, seed)
        black_box = model_callable(model) if image or backbone == "mlp" else model
        eraser = Eraser(black_box, random_state=seed, **(IMAGE_PATCH if image else {}))
        eraser.fit(calib.X, calib.y, bias=calib.bias)
        proba, fair = eraser.model_and_fair_proba(test.X)
        outputs = {"none": proba, "eraser": fair, "oracle": oracle_proba(eraser, proba, test.bias)}
    return {"dataset": name, "backbone": backbone, "seed": seed} | summaries(test, outputs)


def run_backbones(
    seeds: Sequence[int],
    *,
    datasets: Iterable[str] = DATASETS,
    jobs: int = 2,
    progress: bool = True,
) -> dict:
    """Run Table V's measurements.

    Parameters
    ----------
    seeds: the seeds, one job per task, backbone and seed.
    datasets: the tasks of :data:`BACKBONES`.
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    JSON-ready: ``seeds``, ``runs`` (every job's figures) and ``rows``: per task, backbone and
    method of :data:`METHODS`, every metric's mean, std and runs over seeds.
    """
    datasets = list(datasets)
    tasks = [(n, b, s) for n in datasets for b in BACKBONES[n] for s in seeds]
    runs = list(map_jobs(run_one, tasks, jobs=jobs, desc="backbones", progress=progress))
    rows = []
    for name in datasets:
        for backbone in BACKBONES[name]:
            mine = [r for r in runs if (r["dataset"], r["backbone"]) == (name, backbone)]
            for method in METHODS:
                row = {"dataset": name, "backbone": backbone, "method": method}
                rows.append(row | summarise([r[method] for r in mine], METRICS))
    return {"seeds": list(seeds), "runs": runs, "rows": rows}


def _find(rows: list[dict], dataset: str, backbone: str, method: str) -> dict:
    return next(
        r for r in rows if (r["dataset"], r["backbone"], r["method"]) == (dataset, backbone, method)
    )


def acceptance(result: dict) -> list[str]:
    """Per task and backbone: the bias cut and the change of average group accuracy."""
    lines = []
    for name in dict.fromkeys(r["dataset"] for r in result["rows"]):
        parts = []
        for backbone in BACKBONES[name]:
            before = _find(result["rows"], name, backbone, "none")
            after = _find(result["rows"], name, backbone, "eraser")
            bias_cut = cut(after["model_bias"]["mean"], before["model_bias"]["mean"])
            gain = after["avg_acc"]["mean"] - before["avg_acc"]["mean"]
            parts.append(
                f"{BACKBONE_NAMES[backbone]} bias cut {bias_cut:.0f}%, average group accuracy "
                f"{gain:+.2f}"
            )
        lines.append(f"{NAMES[name]}: " + "; ".join(parts))
    return lines


def to_markdown(result: dict) -> str:
    """Table V's layout: one line per task, backbone and method, then the bars."""
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))} (mean ± std over seeds). Vanilla "
        "deployed models; the same patch settings for every backbone of a task.",
        "",
        "| task | backbone | method | average acc | worst acc | model bias | bias cut |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        before = _find(result["rows"], row["dataset"], row["backbone"], "none")
        bias_cut = ""
        if row["method"] != "none":
            bias_cut = f"{cut(row['model_bias']['mean'], before['model_bias']['mean']):.0f}%"
        metrics = " | ".join(cell(row[m]) for m in METRICS)
        lines.append(
            f"| {NAMES[row['dataset']]} | {BACKBONE_NAMES[row['backbone']]} | {row['method']} | "
            f"{metrics} | {bias_cut} |"
        )
    return "\n".join([*lines, "", *(f"- {line}" for line in acceptance(result))]) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Model bias and average group accuracy of every task and backbone, before and after."""
    rows = result["rows"]
    keys = [(r["dataset"], r["backbone"]) for r in rows if r["method"] == "none"]
    categories = [f"{NAMES[d]}\n{BACKBONE_NAMES[b]}" for d, b in keys]
    panels = []
    for metric, label in (("model_bias", "model bias (EqualOdds, %)"),
                          ("avg_acc", "average group accuracy (%)")):  # fmt: skip
        series = {}
        for method, name in (("none", "deployed"), ("eraser", "erased")):
            found = [_find(rows, d, b, method)[metric] for d, b in keys]
            series[name] = ([f["mean"] for f in found], [f["std"] for f in found])
        panels.append(Bars(label.split(" (")[0], label, categories, series))
    seeds = len(result["seeds"])
    return bar_panels(panels, path, title=f"Backbones (mean ± std over {seeds} seeds)")


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce backbones``."""

    def result(seeds: list[int]) -> dict:
        return run_backbones(seeds, datasets=args.datasets, jobs=args.jobs, progress=not args.quiet)

    return run_and_write(args, "backbones", result, to_markdown, f"{args.jobs} process(es)", plot)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce backbones``."""
    add_common_options(parser, "backbones")
    add_jobs_option(parser)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="tasks to run (default: all three)",
    )  # fmt: skip
