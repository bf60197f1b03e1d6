"""The paper's Table IV on tabular tasks: the Eraser against post-training baselines.

"Under laboratory conditions" (Sec. V-D): every baseline of
:mod:`ruleeraser.experiments.baselines` gets what it needs, and the table says what that is
(``requires``). For every task and seed: split (20% test; of the rest 5/6 trains the vanilla
deployed model, 1/6 is the calibration set, which every method gets with its bias labels),
fit each method and measure the test set. Rows: ``none`` (the deployed model), ``eraser``
(the default Eraser, as in Table II: the rule's size fitted on the calibration rows,
:mod:`ruleeraser.rule_scale`), ``eraser-paper`` (the paper's rule size, ``rule_scale=1``),
``eraser-keep`` (``prior="keep"``: the deployed model's class prior kept) and one per
baseline, the peers OxonFair and error-parity included
(:mod:`ruleeraser.experiments.baselines.peers`). Beside the paper's metrics, each row gives
overall accuracy (the share of all test rows decided right). Tasks: COMPAS and LSAC (bias
race), and the CelebA attribute tasks BigNose, Blonde and Attractive (bias gender, not an
input) of :mod:`ruleeraser.experiments.celeba_attributes`; coloured MNIST (10 digits, 10
background colours, 95% aligned in training, digits not copied) with the small CNN of
Table I and a CNN patch.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ruleeraser.eraser import Eraser
from ruleeraser.experiments.results import (
    METRICS,
    add_common_options,
    add_threads_option,
    cell,
    run_and_write,
    stat,
)
from ruleeraser.experiments.setup import (
    CMNIST_ALIGNMENT,
    CMNIST_PATCH,
    FACES,
    NAMES,
    TABLES,
    fit_methods,
    load_splits,
    load_task,
)
from ruleeraser.experiments.splits import split_dataset
from ruleeraser.metrics import group_accuracy

if TYPE_CHECKING:
    from ruleeraser.experiments.splits import Splits

DATASETS = (*TABLES, *FACES, "coloured-mnist")
HIGHER_IS_BETTER = {"avg_acc": True, "worst_acc": True, "model_bias": False}
#: Display names here: coloured MNIST is 95% aligned.
TASK_NAMES = NAMES | {"coloured-mnist": "Coloured MNIST (95%)"}
#: The Eraser's variants beside its default: name -> Eraser parameters.
VARIANTS = {"eraser-paper": {"rule_scale": 1.0}, "eraser-keep": {"prior": "keep"}}
METHOD_NAMES = NAMES | {
    "eraser-paper": "Eraser, paper's rule size",
    "eraser-keep": "Eraser, prior kept",
}
HELP = (
    "Table IV: the Eraser against post-training baselines and its peers OxonFair and "
    "error-parity (15 minutes on 2 cores)"
)
DESCRIPTION = (
    "Train the vanilla deployed model on each task, fit the Eraser (and its variants: the "
    "paper's rule size, the class prior kept), the post-training baselines (Equalodds, "
    "CalEqualodds, FAAP, Repro, CARE, DFR) and the peers (OxonFair with inferred and with true "
    "groups, error-parity; each given what it requires) on the calibration set and report "
    "overall accuracy, average / worst group accuracy and model bias (EqualOdds) on the test "
    "set, mean and std over seeds."
)


def requirements() -> dict[str, str]:
    """Every method of the table (in order) -> what it needs beyond the calibration set
    with its bias labels."""
    from ruleeraser.experiments.baselines import BASELINES

    return {
        "none": "-",
        "eraser": "output probabilities only",
        **{name: "output probabilities only" for name in VARIANTS},
        **{name: requires for name, (_, requires) in BASELINES.items()},
    }


def run_one(splits: Splits, seed: int) -> dict[str, dict[str, float] | None]:
    """Test summaries (and ``fit_s``) of every method of :func:`requirements` for one split.

    Parameters
    ----------
    splits: the task's parts.
    seed: seed of the deployed model and every method.

    Returns
    -------
    method -> group metrics in percent (``overall_acc`` too) and ``fit_s`` (None where the
    method cannot serve).
    """
    fitted = fit_methods(splits, seed)
    calib, test = splits.calibration, splits.test
    predictions = fitted.predict(test)
    seconds = dict(fitted.seconds)
    patch = CMNIST_PATCH if calib.X.ndim == 4 else {}
    for name, params in VARIANTS.items():
        start = time.perf_counter()
        eraser = Eraser(fitted.model, random_state=seed, **patch, **params)
        eraser.fit(calib.X, calib.y, bias=calib.bias)
        seconds[name] = time.perf_counter() - start
        predictions[name] = eraser.predict(test.X)
    summary: dict[str, dict[str, float] | None] = {}
    for method in requirements():
        pred = predictions[method]
        if pred is None:
            summary[method] = None
            continue
        groups = group_accuracy(test.y, pred, test.bias)
        summary[method] = groups.summary() | {"overall_acc": groups.overall}
        if method in seconds:
            summary[method]["fit_s"] = seconds[method]
    return summary


def run_table4(
    seeds: Sequence[int], *, datasets: Iterable[str] = DATASETS, progress: bool = True
) -> list[dict]:
    """Run Table IV.

    Parameters
    ----------
    seeds: the seeds; each splits every task anew.
    datasets: the tasks of :data:`DATASETS`.
    progress: show a progress bar.

    Returns
    -------
    One JSON-ready row per (dataset, method): ``avg_acc``, ``worst_acc``, ``model_bias``,
    ``overall_acc`` (and ``fit_s``, except for ``none``) as ``{"mean", "std", "runs"}`` over
    seeds, or None where the method cannot serve the task, and ``requires``.
    """
    datasets, requires = list(datasets), requirements()
    raw: dict[tuple[str, str], list[dict[str, float] | None]] = {}
    bar = tqdm(total=len(datasets) * len(seeds), desc="table4", disable=not progress)
    for name in datasets:
        data = None if name == "coloured-mnist" else load_task(name)
        for seed in seeds:
            bar.set_postfix_str(f"{name} seed={seed}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                if data is None:
                    splits = load_splits(name, seed, alignment=CMNIST_ALIGNMENT, copies=1)
                else:
                    splits = split_dataset(data, seed=seed)
                summary = run_one(splits, seed)
            for method, values in summary.items():
                raw.setdefault((name, method), []).append(values)
            bar.update()
    bar.close()
    rows = []
    for (name, method), runs in raw.items():
        row = {
            "dataset": name,
            "deployed": "vanilla",
            "method": method,
            "seeds": list(seeds),
            "requires": requires[method],
        }
        applicable = all(r is not None for r in runs)
        for metric in [*METRICS, "overall_acc", "fit_s"]:
            if applicable and metric in runs[0]:
                row[metric] = stat(r[metric] for r in runs)
            elif metric != "fit_s":
                row[metric] = None
        rows.append(row)
    return rows


def _marks(rows: list[dict], metric: str) -> dict[str, str]:
    """``method -> "best" | "second"`` among the debiasing methods of one dataset (values
    compared as printed, so ties share a mark)."""
    values = {
        r["method"]: round(r[metric]["mean"], 2)
        for r in rows
        if r["method"] != "none" and r[metric] is not None
    }
    ordered = sorted(set(values.values()), reverse=HIGHER_IS_BETTER[metric])
    marks = {}
    for rank, label in zip(ordered[:2], ("best", "second"), strict=False):
        marks.update({m: label for m, v in values.items() if v == rank})
    return marks


def acceptance(rows: list[dict], margin: float = 2.0) -> dict[str, list[tuple[str, float, float]]]:
    """Per dataset, the methods whose mean model bias is within ``margin`` points of the
    lowest, as ``(method, avg_acc, model_bias)`` by decreasing average group accuracy."""
    out = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        ok = [r for r in rows if r["dataset"] == name and r["model_bias"] is not None]
        lowest = min(r["model_bias"]["mean"] for r in ok)
        near = [
            (r["method"], r["avg_acc"]["mean"], r["model_bias"]["mean"])
            for r in ok
            if r["model_bias"]["mean"] <= lowest + margin
        ]
        out[name] = sorted(near, key=lambda t: -t[1])
    return out


def to_markdown(rows: list[dict]) -> str:
    """Table IV layout; per dataset and metric the best method in **bold** and the second
    best underlined (``<u>``), the deployed model (``none``) being the reference."""
    seeds = rows[0]["seeds"] if rows else []
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± std over seeds). Deployed model: "
        "vanilla. Per dataset and metric: best in **bold**, second best <u>underlined</u>, "
        "among the debiasing methods (overall accuracy unmarked). Every method gets the "
        "calibration set with its bias labels; `requires` says what else. OxonFair and "
        "error-parity maximise balanced accuracy with equalized odds at most 0.02 on the "
        "calibration rows.",
        "",
        "| dataset | method | requires | average acc | worst acc | model bias | overall acc "
        "| fit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        block = [r for r in rows if r["dataset"] == name]
        marks = {metric: _marks(block, metric) for metric in METRICS}
        for row in block:
            cells = []
            for metric in METRICS:
                value = row[metric]
                if value is None:
                    cells.append("-")
                    continue
                text = cell(value)
                mark = marks[metric].get(row["method"])
                cells.append(
                    f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark else text
                )
            overall = cell(row["overall_acc"]) if row.get("overall_acc") else "-"
            fit_s = f"{row['fit_s']['mean']:.1f}" if row.get("fit_s") else ""
            lines.append(
                f"| {TASK_NAMES.get(name, name)} | {METHOD_NAMES[row['method']]} | "
                f"{row['requires']} | " + " | ".join(cells) + f" | {overall} | {fit_s} |"
            )
    lines += ["", "Average group accuracy among the methods within 2 bias points of the lowest:"]
    for name, near in acceptance(rows).items():
        ranked = ", ".join(f"{METHOD_NAMES[m]} {acc:.2f} (bias {b:.2f})" for m, acc, b in near)
        lines.append(f"- {TASK_NAMES.get(name, name)}: {ranked}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``ruleeraser reproduce table4``."""
    torch.set_num_threads(args.threads)

    def rows(seeds: list[int]) -> list[dict]:
        return run_table4(seeds, datasets=args.datasets, progress=not args.quiet)

    return run_and_write(args, "table4", rows, to_markdown, f"{args.threads} threads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reproduce table4``."""
    add_common_options(parser, "table4")
    add_threads_option(parser)
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
        help="tasks to run (default: all)",
    )  # fmt: skip
