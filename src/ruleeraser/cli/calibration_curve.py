"""``ruleeraser evaluate --calibration-curve FILE``: how many labelled calibration rows the
eraser needs, on the user's own data (:func:`ruleeraser.calibration_size.calibration_curve`).

The eraser's settings are refitted on nested subsets of FILE, stratified by (target, bias)
cell, and each refit is measured on ``--data``; ``calibration-curve.md``, ``.json`` and
``.png`` go to the report folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--calibration-curve FILE`` and ``--curve-sizes N ...`` on ``evaluate``."""
    parser.add_argument(
        "--calibration-curve", metavar="FILE",
        help="a labelled calibration table with the eraser's feature, target and bias columns: "
        "refit the eraser's settings on nested subsets of it and measure each refit on --data "
        "(writes calibration-curve.md, .json and .png; each refit queries the model once per "
        "row of its subset)",
    )  # fmt: skip
    parser.add_argument(
        "--curve-sizes", type=int, nargs="+", metavar="N",
        help="calibration rows of each refit (default: six sizes from 50 to all rows)",
    )  # fmt: skip


def write_curve(
    args: argparse.Namespace, eraser: Any, features: list[str], bias: str, out_dir: Path
) -> Path:
    """Refit, measure, print the curve's table and write its three files to ``out_dir``.

    Parameters
    ----------
    args: ``evaluate``'s options (``--calibration-curve``, ``--curve-sizes``, ``--data``,
        ``--target``).
    eraser: the loaded eraser, its model open; its parameters serve every refit.
    features: the model's input columns.
    bias: the one bias column refitted and measured.
    out_dir: the report folder.

    Returns
    -------
    The Markdown file written.
    """
    from ruleeraser.calibration_size import calibration_curve
    from ruleeraser.tables import check_features, check_labels, read_table

    if len(eraser.bias_names_) != 1:
        raise ValueError(
            "--calibration-curve refits one bias column; the eraser has "
            f"{len(eraser.bias_names_)} ({', '.join(map(str, eraser.bias_names_))})"
        )
    tables = []
    for path in (args.calibration_curve, args.data):
        frame = read_table(path, [*features, args.target, bias])
        check_features(frame[features])
        for column in (args.target, bias):
            check_labels(frame[column])
        tables.append(frame)
    calib, test = tables
    curve = calibration_curve(
        eraser, calib[features], calib[args.target], bias=calib[bias], sizes=args.curve_sizes,
        eval_set=(test[features], test[args.target], test[bias]),
        random_state=eraser.random_state or 0, progress=True,
    )  # fmt: skip
    markdown = f"Calibration curve: {args.calibration_curve}, bias {bias!r}.\n\n"
    markdown += curve.to_markdown()
    print(markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "calibration-curve.md").write_text(markdown)
    (out_dir / "calibration-curve.json").write_text(json.dumps(curve.to_dict(), indent=2) + "\n")
    _plot(curve, out_dir / "calibration-curve.png")
    return out_dir / "calibration-curve.md"


def _plot(curve: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p["n"] for p in curve.points]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, label in (
        (axes[0], "model_bias", "model bias (EqualOdds, %)"),
        (axes[1], "avg_acc", "average group accuracy (%)"),
    ):
        ax.plot(sizes, [p[metric] for p in curve.points], "-o", label="erased")
        ax.axhline(curve.before[metric], color="C3", linestyle=":", label="deployed model")
        ax.set(xscale="log", xlabel="calibration rows", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
