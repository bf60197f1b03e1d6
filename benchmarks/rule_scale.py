"""Why the paper's patch leaves bias where the bias is not an input, and what the fitted rule
size (``Eraser(rule_scale="fit")``, :mod:`ruleeraser.rule_scale`) changes, task by task.

Table IV's splits (Table II's for the four deployed recipes): for each task, recipe and seed,
the deployed model is trained, the paper's eraser (``rule_scale=1``) is fitted on the
calibration rows, and on the test rows this measures

- the patch's bias posterior p(b|x): accuracy overall, per group and per (target, group) cell,
  and its calibration (mean predicted p(b=1|x) against the observed share, in ten bins);
- the group rules r_b (the distilled p(y|b)) as log-odds;
- the paper's eraser, the *oracle* (each row's true group rule subtracted), each row's most
  likely group's rule (*hard posterior*), and the strength dial (1.25, 1.5, 2) on the paper's
  patch;
- the rows whose group the posterior gets wrong: how many per cell, the eraser's accuracy on
  them and on the others;
- the fitted rule size (chosen on the calibration rows by :func:`fit_rule_scale`, exactly as
  ``Eraser(rule_scale="fit")`` does on the same patch) and the eraser with it.

Usage::

    python benchmarks/rule_scale.py --seeds 0 1 2 --out /tmp/rule-scale-faces
    python benchmarks/rule_scale.py --tasks compas lsac --recipes vanilla advdebias condebias \\
        unfair --seeds 0 1 2 3 4 --no-diagnostics
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ruleeraser import Eraser
from ruleeraser.distill import log_proba
from ruleeraser.experiments.deployed import RECIPES, train_deployed
from ruleeraser.experiments.setup import FACES, TABLES, load_task
from ruleeraser.experiments.splits import split_dataset
from ruleeraser.metrics import group_accuracy
from ruleeraser.remove import remove_log
from ruleeraser.rule_scale import fit_rule_scale, scale_rule

STRENGTHS = (1.25, 1.5, 2.0)


def metrics(test, pred: np.ndarray) -> dict[str, float]:
    return group_accuracy(test.y, pred, test.bias).summary()


def posterior_diagnostics(post: np.ndarray, test, fair_pred: np.ndarray) -> dict:
    """Accuracy and calibration of p(b|x), and the eraser on the rows it gets wrong."""
    guess, b, y = post.argmax(1), test.bias, test.y
    wrong = guess != b
    p1 = post[:, 1]
    bins = np.clip((p1 * 10).astype(int), 0, 9)
    return {
        "accuracy": float((~wrong).mean()),
        "accuracy_by_group": [float((~wrong)[b == g].mean()) for g in (0, 1)],
        "accuracy_by_cell": {
            f"y={c},b={g}": float((~wrong)[(y == c) & (b == g)].mean())
            for c in (0, 1)
            for g in (0, 1)
        },
        "reliability": [
            {
                "bin": k,
                "rows": int((bins == k).sum()),
                "mean_p": float(p1[bins == k].mean()),
                "observed": float(b[bins == k].mean()),
            }
            for k in range(10)
            if (bins == k).any()
        ],  # fmt: skip
        "wrong_rows_by_cell": {
            f"y={c},b={g}": int((wrong & (y == c) & (b == g)).sum()) for c in (0, 1) for g in (0, 1)
        },
        "eraser_acc_wrong_rows": float((fair_pred[wrong] == y[wrong]).mean())
        if wrong.any()
        else None,
        "eraser_acc_other_rows": float((fair_pred[~wrong] == y[~wrong]).mean()),
    }


def one(task: str, recipe: str, seed: int, diagnostics: bool) -> dict:
    """Every measurement of one deployed model."""
    splits = split_dataset(load_task(task), seed=seed)
    train, calib, test = splits.train, splits.calibration, splits.test
    model = train_deployed(recipe, train.X, train.y, train.bias, seed=seed)
    eraser = Eraser(model, rule_scale=1.0, random_state=seed).fit(calib.X, calib.y, bias=calib.bias)
    log_prior = np.log(eraser.class_prior_[0])
    proba_c, (log_g_c,) = eraser.outputs(calib.X)
    fitted = fit_rule_scale(
        log_proba(proba_c, eraser.eps), [log_g_c], log_prior[None], calib.y, [calib.bias]
    )
    scale = float(fitted.scales[0])
    proba, (log_g,) = eraser.outputs(test.X)
    log_m = log_proba(proba, eraser.eps)
    rules = eraser.distillations_[0].group_rules
    paper = eraser.remove(proba, [log_g]).argmax(1)
    out = {
        "task": task, "recipe": recipe, "seed": seed, "rule_scale": scale,
        "group_rule_log_odds": np.log(rules[:, 1] / rules[:, 0]).tolist(),
        "none": metrics(test, proba.argmax(1)),
        "paper": metrics(test, paper),
        "fitted": metrics(test, remove_log(log_m, scale_rule(log_g, log_prior, scale)).argmax(1)),
        "oracle": metrics(test, remove_log(log_m, np.log(rules[test.bias])).argmax(1)),
    }  # fmt: skip
    for s in STRENGTHS:
        out[f"strength {s:g}"] = metrics(test, eraser.remove(proba, [log_g], strength=s).argmax(1))
    if diagnostics:
        with torch.no_grad():
            logits = eraser.patches_[0].bias_net(torch.as_tensor(test.X))
        post = torch.softmax(logits.double(), 1).numpy()
        out["hard posterior"] = metrics(
            test, remove_log(log_m, np.log(rules[post.argmax(1)])).argmax(1)
        )
        out["posterior"] = posterior_diagnostics(post, test, paper)
    return out


def mean_table(runs: list[dict]) -> str:
    methods = [m for m in runs[0] if isinstance(runs[0][m], dict) and "avg_acc" in runs[0][m]]
    lines = [
        "| task | deployed | rule scale (per seed) | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for key in dict.fromkeys((r["task"], r["recipe"]) for r in runs):
        group = [r for r in runs if (r["task"], r["recipe"]) == key]
        cells = []
        for m in methods:
            mean = {
                k: np.mean([r[m][k] for r in group]) for k in ("avg_acc", "worst_acc", "model_bias")
            }
            cells.append(
                f"{mean['avg_acc']:.1f} / {mean['worst_acc']:.1f} / {mean['model_bias']:.1f}"
            )
        scales = ", ".join(f"{r['rule_scale']:g}" for r in group)
        lines.append(f"| {key[0]} | {key[1]} | {scales} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=[*TABLES, *FACES])
    parser.add_argument("--recipes", nargs="+", default=["vanilla"], choices=RECIPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the posterior's")
    parser.add_argument("--out", default=None, help="folder for rule-scale.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start, runs = time.perf_counter(), []
    for task in args.tasks:
        for seed in args.seeds:
            for recipe in args.recipes:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    runs.append(one(task, recipe, seed, not args.no_diagnostics))
                print(
                    f"{task} {recipe} seed {seed}: rule scale {runs[-1]['rule_scale']:g}",
                    flush=True,
                )
    print("\navg / worst / bias, mean over seeds\n")
    print(mean_table(runs))
    print(f"\n{time.perf_counter() - start:.0f} s, 1 thread")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "rule-scale.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
