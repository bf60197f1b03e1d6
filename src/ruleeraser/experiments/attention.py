"""What the patches look at (the paper's Fig. 6): Grad-CAM maps of the deployed model and of
the background and object patches.

On two-bias MNIST (the UrbanCars stand-in of Table III: a background colour and a corner
object, 95% aligned each; vanilla width-16 CNN, one patch per bias), captum's
``LayerGradCam`` maps each net's decision onto its last convolution: the deployed CNN's
predicted class, and each patch's predicted bias value (the patch's bias posterior, the part
of a ``rule="group"`` patch that looks at the image). Each map is upsampled to the image and
split into three regions: the stamped object's box, the digit's strokes (the source digit's
pixels of at least half intensity, outside the box) and the rest, the background. The
numbers are each region's share of the map's mass, averaged over the test images; the grid
shows a few images with the three maps over them.

Needs captum (``pip install 'rule-eraser[analyses]'``).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ruleeraser.experiments.figures import Bars, bar_panels, image_grid
from ruleeraser.experiments.results import (
    add_common_options,
    add_jobs_option,
    cell,
    map_jobs,
    run_with_grid,
    summarise,
)
from ruleeraser.experiments.setup import IMAGE_COPIES, fit_two_biases

#: The nets whose maps are drawn, and the regions their mass is split into.
NETS = ("deployed", "background patch", "object patch")
REGIONS = ("object box", "strokes", "background")
#: Test images shown in the grid per (background, object) combination (seed ``--seed0``).
SHOWN = 2
HELP = (
    "Fig. 6: Grad-CAM maps of the deployed CNN and the background and object patches on "
    "two-bias MNIST, and the share of each map on the object, the digit and the background "
    "(about 4 minutes on 2 cores with 3 seeds; needs captum)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


def last_conv(net: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` of ``net``, the layer Grad-CAM maps onto.

    Example
    -------
    >>> from ruleeraser.nets import SmallCNN
    >>> last_conv(SmallCNN(3, 2, width=4)).out_channels
    16
    """
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1]


def grad_cam(net: nn.Module, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Grad-CAM of each image's predicted class, upsampled to the image, non-negative.

    Parameters
    ----------
    net: an image classifier returning logits.
    X: images ``(n, C, H, W)``.
    batch_size: images per call.

    Returns
    -------
    Maps ``(n, H, W)``.
    """
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "Grad-CAM maps need captum: pip install 'rule-eraser[analyses]'"
        ) from err

    net = net.eval()
    cam = LayerGradCam(net, last_conv(net))
    maps = []
    for start in range(0, len(X), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(X[start : start + batch_size]))
        with torch.no_grad():
            target = net(x).argmax(1)
        attribution = cam.attribute(x, target=target, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(attribution, tuple(x.shape[2:]), "bilinear")
        maps.append(upsampled[:, 0].detach().clamp_min(0).numpy())
    return np.concatenate(maps)


def regions(X: np.ndarray, digits: np.ndarray) -> dict[str, np.ndarray]:
    """Masks ``(n, H, W)`` of the object's box, the strokes and the background.

    Parameters
    ----------
    X: two-bias MNIST images ``(n, 3, H, W)``.
    digits: their grey source digits ``(n, H, W)`` in [0, 1], placed as in the images.

    Returns
    -------
    :data:`REGIONS` -> boolean masks that split every image.
    """
    from ruleeraser.experiments.two_biases import OBJECT_COLOUR

    yellow = np.all(np.abs(X - OBJECT_COLOUR[None, :, None, None]) < 1e-6, axis=1)
    box = np.zeros_like(yellow)
    for i, mask in enumerate(yellow):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size:
            box[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    strokes = (digits >= 0.5) & ~box
    return {"object box": box, "strokes": strokes, "background": ~box & ~strokes}


def mass_shares(maps: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Each region's share of a map's mass, averaged over the maps (all-zero maps left out).

    Example
    -------
    >>> maps = np.array([[[1.0, 3.0]]])
    >>> masks = {"left": np.array([[[True, False]]]), "right": np.array([[[False, True]]])}
    >>> mass_shares(maps, masks)
    {'left': 0.25, 'right': 0.75}
    """
    total = maps.sum(axis=(1, 2))
    kept = total > 0
    return {
        name: float(((maps * mask).sum(axis=(1, 2))[kept] / total[kept]).mean())
        for name, mask in masks.items()
    }


def run_one(task: tuple[int, int | None, int]) -> dict:
    """One seed: fit the two-bias set-up, map every test image, measure the shares.

    Parameters
    ----------
    task: ``(seed, n_per_class, copies)`` of :func:`~ruleeraser.experiments.setup.fit_two_biases`.

    Returns
    -------
    ``seed``, ``n_images`` and per net of :data:`NETS` the :data:`REGIONS` shares; ``shown``:
    :data:`SHOWN` random test images ``(H, W, 3)`` of each combination, each followed by its
    maps, for the grid.
    """
    from ruleeraser.experiments.image_bias import load_mnist

    seed, n_per_class, copies = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted = fit_two_biases(seed, n_per_class=n_per_class, copies=copies)
    test = fitted.data.splits.test
    background, obj = (patch.bias_net for patch in fitted.eraser.patches_)
    nets = dict(zip(NETS, (fitted.model, background, obj), strict=True))
    maps = {name: grad_cam(net, test.X) for name, net in nets.items()}
    digits = np.pad(load_mnist()[0], ((0, 0), (2, 2), (2, 2)))[test.index] / 255.0
    masks = regions(test.X, digits)
    rng = np.random.default_rng(seed)
    combination = test.bias[:, 0] * 2 + test.bias[:, 1]
    order = [i for c in range(4) for i in rng.permutation(np.flatnonzero(combination == c))[:SHOWN]]
    shown = [[test.X[i].transpose(1, 2, 0)] + [maps[n][i] for n in NETS] for i in order]
    return {"seed": seed, "n_images": len(test.y), "shown": shown} | {
        name: mass_shares(m, masks) for name, m in maps.items()
    }


def run_attention(
    seeds: Sequence[int],
    *,
    n_per_class: int | None = None,
    copies: int = IMAGE_COPIES,
    jobs: int = 2,
    progress: bool = True,
) -> dict:
    """Run Fig. 6's measurements.

    Parameters
    ----------
    seeds: the seeds, one job each.
    n_per_class, copies: the two-bias data (:func:`~ruleeraser.experiments.setup.fit_two_biases`).
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    ``seeds``, ``runs`` (every seed's shares), ``rows`` (per net, each region's share: mean,
    std and runs over seeds, in percent) and ``shown`` (the first seed's grid of images and
    maps, arrays: pop it before writing the rest as JSON).
    """
    tasks = [(seed, n_per_class, copies) for seed in seeds]
    runs = list(map_jobs(run_one, tasks, jobs=jobs, desc="attention", progress=progress))
    shown = runs[0]["shown"]
    for each in runs:
        each.pop("shown")
    rows = []
    for net in NETS:
        percent = [{r: 100 * run[net][r] for r in REGIONS} for run in runs]
        rows.append({"net": net} | summarise(percent, REGIONS))
    return {"seeds": list(seeds), "runs": runs, "rows": rows, "shown": shown}


def acceptance(result: dict) -> list[str]:
    """Who puts the largest share on the object's box, and on the background."""
    share = {r["net"]: {g: r[g]["mean"] for g in REGIONS} for r in result["rows"]}
    box = ", ".join(f"{n} {share[n]['object box']:.1f}%" for n in NETS)
    back = ", ".join(f"{n} {share[n]['background']:.1f}%" for n in NETS)
    return [f"share on the object's box: {box}", f"share on the background: {back}"]


def to_markdown(result: dict) -> str:
    """One line per net: the share of its Grad-CAM mass on each region."""
    n_images = result["runs"][0]["n_images"] if result["runs"] else 0
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))} (mean ± std over seeds); {n_images} "
        "two-bias MNIST test images per seed. Share of each Grad-CAM map's mass (percent) on "
        "each region.",
        "",
        "| net | " + " | ".join(REGIONS) + " |",
        "|---|" + "---|" * len(REGIONS),
    ]
    lines += [f"| {r['net']} | " + " | ".join(cell(r[g]) for g in REGIONS) + " |"
              for r in result["rows"]]  # fmt: skip
    return "\n".join([*lines, "", *(f"- {line}" for line in acceptance(result))]) + "\n"


def plot(result: dict, path: Path, shown: list[list[np.ndarray]]) -> Path:
    """The grid of ``shown`` images and maps (``path``) and the shares as bars
    (``NAME-shares.png`` beside it); returns ``path``."""
    series = {
        r["net"]: ([r[g]["mean"] for g in REGIONS], [r[g]["std"] for g in REGIONS])
        for r in result["rows"]
    }
    shares = Bars("Grad-CAM mass by region", "share of the map's mass (%)", list(REGIONS), series)
    bar_panels([shares], path.with_name(path.stem + "-shares.png"))
    title = f"Grad-CAM on two-bias MNIST, seed {result['seeds'][0]}"
    return image_grid(shown, path, column_titles=["image", *NETS], title=title)


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce attention``."""
    return run_with_grid(args, "attention", run_attention, to_markdown, plot)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce attention``."""
    add_common_options(parser, "attention")
    add_jobs_option(parser)
