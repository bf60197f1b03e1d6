"""What the empty-cell fallback does: group rules on coloured MNIST, where most cells are empty.

    python benchmarks/empty_cells.py [--alignment 0.99] [--seeds 3] [--epochs 3] [--copies 12]

At 99% alignment the calibration set (670 digits, 8,040 images with table1's 12 copies)
holds hundreds of images in each of the 10 aligned (digit, colour) cells and one or none in
most of the other 90, so many ``mu[i, b]`` of Eq. 17 must be filled. Per seed: train the
vanilla CNN of ``reproduce table1`` on the training part, query it on the calibration and test
parts, fill the empty cells in several ways, and subtract the group rule of each test image's
*true* colour (the oracle of Table I: what a perfect patch reaches with that rule). Fills
compared:

- ``additive`` (the default, :func:`ruleeraser.distill.fill_empty_cells`): ``t[i] + c[b]``
  least-squares fitted to the observed cells, minimum-norm where they do not pin it down;
- ``bias-only``: an empty cell takes the mean of the observed cells of its bias value (the
  target is assumed to add nothing to the model's output);
- ``global``: an empty cell takes the mean of all observed cells (nothing is known of it);
- ``test-set``: no fill; the rule is distilled from the test part itself, where every test
  digit appears in every colour, so no cell is empty: the best any fill could do.

Prints, per fill, average and worst group accuracy and model bias (EqualOdds), mean ± std
over seeds, and the cut in model bias against the deployed model.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from ruleeraser.distill import EmptyCellWarning, cell_means, distill, fill_empty_cells, log_proba
from ruleeraser.distill import softmax as row_softmax
from ruleeraser.experiments.deployed import predict_proba, train_deployed
from ruleeraser.experiments.setup import IMAGE_COPIES, IMAGE_TRAINING, load_splits
from ruleeraser.metrics import group_accuracy
from ruleeraser.remove import remove_log

FILLS = ("additive", "bias-only", "global", "test-set")


def group_rules(mu: np.ndarray, counts: np.ndarray, fill: str) -> np.ndarray:
    """``r_b = softmax(mean_i mu[i, b])`` with the empty cells of ``mu`` filled by ``fill``."""
    seen = counts > 0
    if fill == "additive":
        filled = fill_empty_cells(mu, counts)
    elif fill == "bias-only":
        w = counts[:, :, None]
        per_bias = np.nansum(np.where(seen[:, :, None], mu, 0.0) * w, 0) / w.sum(0)
        filled = np.where(seen[:, :, None], mu, per_bias[None])
    elif fill == "global":
        overall = np.average(mu[seen], axis=0, weights=counts[seen])
        filled = np.where(seen[:, :, None], mu, overall)
    else:
        raise ValueError(f"unknown fill {fill!r}")
    return row_softmax(filled.mean(axis=0))


def run_seed(seed: int, alignment: float, epochs: int, copies: int) -> dict[str, dict[str, float]]:
    splits = load_splits("coloured-mnist", seed, alignment=alignment, copies=copies)
    train, calib, test = splits.train, splits.calibration, splits.test
    options = IMAGE_TRAINING | {"epochs": epochs}
    model = train_deployed("vanilla", train.X, train.y, train.bias, seed=seed, **options)
    log_calib = log_proba(predict_proba(model, calib.X))
    log_test = log_proba(predict_proba(model, test.X))
    k, m = 10, 10
    mu, counts = cell_means(log_calib, calib.y, calib.bias, k, m)
    print(
        f"seed {seed}: {int((counts == 0).sum())} of {counts.size} calibration cells empty, "
        f"{int(counts[~np.eye(k, dtype=bool)].sum())} of {int(counts.sum())} images off the "
        "aligned cells",
        flush=True,
    )
    results = {"deployed": group_accuracy(test.y, log_test.argmax(1), test.bias).summary()}
    for fill in FILLS:
        if fill == "test-set":
            rules = distill(log_test, test.y, test.bias, n_classes=k, n_bias=m).group_rules
        else:
            rules = group_rules(mu, counts, fill)
        fair = remove_log(log_test, np.log(rules[test.bias]))
        results[fill] = group_accuracy(test.y, fair.argmax(1), test.bias).summary()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alignment", type=float, default=0.99)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=IMAGE_TRAINING["epochs"])
    parser.add_argument(
        "--copies", type=int, default=IMAGE_COPIES,
        help=f"copies of each training-pool digit (default {IMAGE_COPIES}, as table1)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"coloured MNIST, alignment {args.alignment}, {args.copies} copies per pool digit, "
        f"vanilla CNN trained {args.epochs} epochs, seeds 0-{args.seeds - 1}; oracle: the "
        "true colour's group rule subtracted"
    )
    start = time.perf_counter()
    runs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyCellWarning)
        for seed in range(args.seeds):
            runs.append(run_seed(seed, args.alignment, args.epochs, args.copies))
    print(f"\n{'rule':>10} {'average acc':>15} {'worst acc':>13} {'model bias':>15} {'cut':>5}")
    before = np.mean([r["deployed"]["model_bias"] for r in runs])
    for name in ("deployed", *FILLS):
        cells = []
        for metric in ("avg_acc", "worst_acc", "model_bias"):
            values = [r[name][metric] for r in runs]
            cells.append(f"{np.mean(values):6.2f} ± {np.std(values):5.2f}")
        bias = np.mean([r[name]["model_bias"] for r in runs])
        cut = "" if name == "deployed" else f"{100 * (1 - bias / before):4.0f}%"
        print(f"{name:>10} {cells[0]:>15} {cells[1]:>13} {cells[2]:>15} {cut:>5}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
