"""The rule's scale on coloured MNIST with each class's small bias groups pooled (the
default of ``rule_scale="fit"``) against left out (``pool_small=False``, the fit before).

``fit_rule_scale`` does not measure a (target, bias) group of fewer than ``MIN_ROWS``
calibration rows alone. On coloured MNIST (ten colours) the nine colours that conflict with a
digit hold a few calibration images each: left out, every class keeps one group, every gap is
0 and the fitted scale stays 1; pooled, those images form one "conflicting" group per class
beside the aligned one. Per seed: a vanilla deployed model of the chosen backbone (the
settings of ``reproduce backbones``), the default image patch, and on the test part the model
bias (Eq. 20) of the model, of the paper's scale (1), of the fit with the small groups left out
and of the default fit.

Usage::

    python benchmarks/rule_scale_pooled.py --backbone resnet18 --alignment 0.95 --seeds 0 1 2
    python benchmarks/rule_scale_pooled.py --backbone cnn --alignment 0.9 0.995 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from ruleeraser import Eraser
from ruleeraser.distill import log_proba
from ruleeraser.experiments.backbones import IMAGE_BACKBONES, deployed_model
from ruleeraser.experiments.setup import IMAGE_PATCH, load_splits, model_callable
from ruleeraser.metrics import group_accuracy
from ruleeraser.rule_scale import fit_rule_scale, scale_rule

ROWS = ("model", "scale 1 (paper)", "fit, small groups left out", "fit, pooled (default)")


def one_seed(backbone: str, alignment: float, seed: int) -> dict[str, tuple[float, float]]:
    """Per row of :data:`ROWS`: (model bias, average group accuracy) on the test part, and the
    two fitted scales."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # empty calibration cells
        splits = load_splits("coloured-mnist", seed, alignment=alignment)
        train, calib, test = splits.train, splits.calibration, splits.test
        model = deployed_model(backbone, train.X, train.y, train.bias, seed)
        eraser = Eraser(model_callable(model), random_state=seed, rule_scale=1.0, **IMAGE_PATCH)
        eraser.fit(calib.X, calib.y, bias=calib.bias)
        log_prior = np.log(eraser.class_prior_)
        proba_c, log_g_c = eraser.outputs(calib.X)
        scales = {
            pooled: fit_rule_scale(
                log_proba(proba_c, eraser.eps), log_g_c, log_prior, calib.y, [calib.bias],
                pool_small=pooled,
            ).scales[0]
            for pooled in (False, True)
        }  # fmt: skip
        proba, (log_g,) = eraser.outputs(test.X)
    decisions = {"model": proba.argmax(axis=1)}
    for row, scale in zip(ROWS[1:], (1.0, scales[False], scales[True]), strict=True):
        fair = eraser.remove(proba, [scale_rule(log_g, log_prior[0], scale)])
        decisions[row] = fair.argmax(axis=1)
    out = {}
    for row, decision in decisions.items():
        g = group_accuracy(test.y, decision, test.bias)
        out[row] = (g.model_bias, g.average)
    return out | {"scales": (scales[False], scales[True])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18", choices=list(IMAGE_BACKBONES))
    parser.add_argument("--alignment", type=float, nargs="+", default=[0.95])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for alignment in args.alignment:
        runs = []
        for seed in args.seeds:
            start = time.perf_counter()
            runs.append(one_seed(args.backbone, alignment, seed))
            fit, pooled = runs[-1]["scales"]
            print(
                f"{args.backbone}, alignment {alignment}, seed {seed}: scale {fit:g} with the "
                f"small groups left out, {pooled:g} pooled "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        before = np.mean([r["model"][0] for r in runs])
        print(f"\n{args.backbone}, alignment {alignment}, seeds {args.seeds} (mean ± std)")
        print("| row | model bias | bias cut (from the means) | average group acc |")
        print("|---|---|---|---|")
        for row in ROWS:
            bias = np.array([r[row][0] for r in runs])
            acc = np.array([r[row][1] for r in runs])
            cut = "" if row == "model" else f"{100 * (1 - bias.mean() / before):.0f}%"
            print(
                f"| {row} | {bias.mean():.2f} ± {bias.std(ddof=1):.2f} | {cut} | "
                f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f} |"
            )


if __name__ == "__main__":
    main()
