"""What the patches represent (the paper's Fig. 7): t-SNE of the deployed model's and each
patch's penultimate features.

On two-bias MNIST (as ``reproduce attention``: vanilla width-16 CNN, one patch per bias), the
features before each net's last layer (``embed``: the deployed CNN's, and each patch's bias
posterior net's) of :data:`N_POINTS` random test images are embedded in 2-D by
scikit-learn's ``TSNE`` and coloured by the (background, object) combination. The numbers:
how well each 2-D embedding predicts the background and the object, by the accuracy of a
10-nearest-neighbour classifier (5-fold cross-validated).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ruleeraser.experiments.figures import pyplot
from ruleeraser.experiments.results import (
    add_common_options,
    add_jobs_option,
    cell,
    map_jobs,
    run_with_grid,
    summarise,
)
from ruleeraser.experiments.setup import IMAGE_COPIES, fit_two_biases
from ruleeraser.experiments.two_biases import BACKGROUNDS, OBJECTS

NETS = ("deployed", "background patch", "object patch")
BIASES = ("background", "object")
#: Test images embedded per seed.
N_POINTS = 2000
#: Neighbours of the nearest-neighbour classifier.
NEIGHBOURS = 10
HELP = (
    "Fig. 7: t-SNE of the deployed CNN's and each patch's features on two-bias MNIST, and how "
    "well each embedding predicts the background and the object (about 5 minutes on 2 cores "
    "with 3 seeds)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


@torch.no_grad()
def features(net: torch.nn.Module, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``net.embed(X)``, the features before the last layer, ``(n, embed_dim)``."""
    net = net.eval()
    chunks = [net.embed(torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size])))
              for i in range(0, len(X), batch_size)]  # fmt: skip
    return torch.cat(chunks).numpy()


def neighbour_accuracy(points: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """5-fold cross-validated accuracy (percent) of a :data:`NEIGHBOURS`-nearest-neighbour
    classifier predicting ``labels`` from ``points``.

    Example
    -------
    >>> points = np.r_[np.zeros((50, 2)), np.ones((50, 2))]
    >>> neighbour_accuracy(points, np.repeat([0, 1], 50), seed=0)
    100.0
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(NEIGHBOURS), points, labels, cv=folds)
    return float(100 * scores.mean())


def run_one(task: tuple[int, int | None, int, int]) -> dict:
    """One seed: fit the two-bias set-up, embed the test images' features, score them.

    Parameters
    ----------
    task: ``(seed, n_per_class, copies, n_points)``.

    Returns
    -------
    ``seed``, per net of :data:`NETS` the accuracy of predicting each of :data:`BIASES`
    from its 2-D embedding (percent), and ``embedding`` (net -> ``(n_points, 2)``) with the
    points' ``background`` and ``object`` labels, for the figure.
    """
    from sklearn.manifold import TSNE

    seed, n_per_class, copies, n_points = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted = fit_two_biases(seed, n_per_class=n_per_class, copies=copies)
    test = fitted.data.splits.test
    rows = np.sort(np.random.default_rng(seed).permutation(len(test.y))[:n_points])
    labels = {b: test.bias[rows, j] for j, b in enumerate(BIASES)}
    background, obj = (patch.bias_net for patch in fitted.eraser.patches_)
    out: dict = {"seed": seed, "n_points": len(rows), "embedding": {}}
    for name, net in zip(NETS, (fitted.model, background, obj), strict=True):
        tsne = TSNE(2, init="pca", perplexity=30.0, random_state=seed)
        points = tsne.fit_transform(features(net, test.X[rows]))
        out["embedding"][name] = points
        out[name] = {b: neighbour_accuracy(points, labels[b], seed) for b in BIASES}
    return out | {"labels": labels}


def run_tsne(
    seeds: Sequence[int],
    *,
    n_per_class: int | None = None,
    copies: int = IMAGE_COPIES,
    n_points: int = N_POINTS,
    jobs: int = 2,
    progress: bool = True,
) -> dict:
    """Run Fig. 7's measurements.

    Parameters
    ----------
    seeds: the seeds, one job each.
    n_per_class, copies: the two-bias data (:func:`~ruleeraser.experiments.setup.fit_two_biases`).
    n_points: test images embedded per seed.
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    ``seeds``, ``runs`` (every seed's accuracies), ``rows`` (per net, the accuracy of
    predicting each bias: mean, std and runs over seeds) and ``shown`` (the first seed's
    embeddings and labels, arrays: pop it before writing the rest as JSON).
    """
    tasks = [(seed, n_per_class, copies, n_points) for seed in seeds]
    runs = list(map_jobs(run_one, tasks, jobs=jobs, desc="tsne", progress=progress))
    shown = {"embedding": runs[0]["embedding"], "labels": runs[0]["labels"]}
    for each in runs:
        each.pop("embedding")
        each.pop("labels")
    rows = [{"net": net} | summarise([r[net] for r in runs], BIASES) for net in NETS]
    return {"seeds": list(seeds), "runs": runs, "rows": rows, "shown": shown}


def acceptance(result: dict) -> list[str]:
    """Each patch's embedding: how well it predicts its own bias against the other."""
    acc = {r["net"]: {b: r[b]["mean"] for b in BIASES} for r in result["rows"]}
    return [
        f"{net}: background {acc[net]['background']:.1f}%, object {acc[net]['object']:.1f}%"
        for net in NETS
    ]


def to_markdown(result: dict) -> str:
    """One line per net: the 10-NN accuracy of predicting each bias from its embedding."""
    n_points = result["runs"][0]["n_points"] if result["runs"] else 0
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))} (mean ± std over seeds); t-SNE of "
        f"{n_points} two-bias MNIST test images per seed. {NEIGHBOURS}-nearest-neighbour "
        "accuracy (percent, 5-fold cross-validated) of predicting each bias from the 2-D "
        "embedding (chance: 50).",
        "",
        "| net | predicts background | predicts object |",
        "|---|---|---|",
    ]
    lines += [f"| {r['net']} | {cell(r['background'])} | {cell(r['object'])} |"
              for r in result["rows"]]  # fmt: skip
    return "\n".join([*lines, "", *(f"- {line}" for line in acceptance(result))]) + "\n"


def plot(result: dict, path: Path, shown: dict) -> Path:
    """The first seed's three embeddings, coloured by the (background, object) combination."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(NETS), figsize=(5 * len(NETS), 4.6))
    labels = shown["labels"]
    combination = labels["background"] * 2 + labels["object"]
    names = [f"{b}, {o}" for b in BACKGROUNDS for o in OBJECTS]
    for ax, net in zip(axes, NETS, strict=True):
        points = shown["embedding"][net]
        for c, name in enumerate(names):
            mine = combination == c
            ax.scatter(points[mine, 0], points[mine, 1], s=3, alpha=0.6, label=name)
        ax.set(title=net, xticks=[], yticks=[])
    axes[0].legend(title="background, object", fontsize=7, markerscale=3)
    fig.suptitle(f"t-SNE of the penultimate features, two-bias MNIST, seed {result['seeds'][0]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce tsne``."""
    return run_with_grid(args, "tsne", run_tsne, to_markdown, plot)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce tsne``."""
    add_common_options(parser, "tsne")
    add_jobs_option(parser)
