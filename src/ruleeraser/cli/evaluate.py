"""``ruleeraser evaluate``: per-group accuracy and model bias before and after the eraser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ruleeraser.cli import calibration_curve
from ruleeraser.cli.common import (
    add_model_options,
    add_stream_options,
    chunks,
    http_summary,
    model_columns,
    opened_model,
    rows_error,
)


def run(args: argparse.Namespace) -> int:
    """Stream ``--data`` through the model and the eraser; print the report and write it to
    ``--out`` (report.md, report.json, groups.png). Returns 0."""
    from ruleeraser import Eraser
    from ruleeraser.metrics import report
    from ruleeraser.report_files import (
        plot_groups,
        prior_in_force,
        report_json,
        report_markdown,
    )
    from ruleeraser.tables import check_features, check_labels

    out_dir = Path(args.out) if args.out else default_report_dir(args.eraser)
    if out_dir.exists() and not out_dir.is_dir():  # found out before the model is queried
        raise FileExistsError(f"--out {out_dir} is a file; the report is a folder")
    with opened_model(args) as model:
        eraser = Eraser.load(args.eraser, model)
        features = model_columns(
            model, args.data, given=args.features, eraser=eraser, spec=args.model
        )
        biases = list(dict.fromkeys(args.bias or eraser.bias_names_))
        if args.target in biases:
            raise ValueError(f"--target {args.target!r} is also a --bias column")
        known = set(eraser.classes_.tolist())
        y, b, before, after = [], {c: [] for c in biases}, [], []
        for start, chunk in chunks(args, [*features, args.target, *biases]):
            try:
                check_features(chunk[features], start)
                for column in [args.target, *biases]:
                    check_labels(chunk[column], start)
                unknown = set(chunk[args.target].unique().tolist()) - known
                if unknown:
                    raise ValueError(
                        f"target {args.target!r} has labels the eraser's classes "
                        f"{sorted(known, key=str)} lack: {sorted(unknown, key=str)[:10]}"
                    )
                proba, fair = eraser.model_and_fair_proba(chunk[features])
            except (ValueError, RuntimeError) as exc:
                raise rows_error(start, chunk, exc) from exc
            y.append(chunk[args.target].to_numpy())
            for column in biases:
                b[column].append(chunk[column].to_numpy())
            before.append(eraser.classes_[proba.argmax(axis=1)])
            after.append(eraser.classes_[fair.argmax(axis=1)])
        if args.calibration_curve:
            calibration_curve.write_curve(args, eraser, features, biases[0], out_dir)
        summary = http_summary(model)
    y_all = np.concatenate(y)
    predictions = {"before": np.concatenate(before), "after": np.concatenate(after)}
    reports = {
        c: report(y_all, np.concatenate(b[c]), predictions, decisions=eraser.classes_)
        for c in biases
    }
    header = {
        "data": str(args.data),
        "model": args.model,
        "eraser": str(args.eraser),
        "rows": len(y_all),
        "target": args.target,
        **prior_in_force(eraser),
    }
    markdown = report_markdown(header, reports)
    print(markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    (out_dir / "report.json").write_text(json.dumps(report_json(header, reports), indent=2) + "\n")
    plot_groups(reports, out_dir / "groups.png")
    print(f"wrote report.md, report.json and groups.png to {out_dir}{summary}")
    return 0


def default_report_dir(eraser_dir: str) -> Path:
    """``ERASER_DIR-report`` beside the eraser.

    >>> default_report_dir("/srv/erasers/credit").as_posix()
    '/srv/erasers/credit-report'
    """
    path = Path(eraser_dir).resolve()
    return path.with_name(path.name + "-report")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``evaluate`` command on an ``add_subparsers()`` object."""
    evaluate = commands.add_parser(
        "evaluate",
        help="per-group accuracy and model bias before and after the eraser",
        description=(
            "Compare the model's decisions (before) with the eraser's (after) on a labelled "
            "table: overall accuracy, average and worst (target, bias) group accuracy, model "
            "bias (EqualOdds) and each bias group's share of every decision. Prints the report "
            "and writes report.md, report.json and groups.png."
        ),
    )
    evaluate.add_argument("--data", required=True, metavar="FILE", help="a labelled table")
    evaluate.add_argument("--target", required=True, metavar="COL", help="the true label column")
    evaluate.add_argument(
        "--bias", action="append", metavar="COL",
        help="a bias column to report on (repeatable; default: the eraser's bias columns)",
    )  # fmt: skip
    evaluate.add_argument(
        "--out", metavar="DIR",
        help="folder for the report files (default: ERASER_DIR-report beside the eraser)",
    )  # fmt: skip
    calibration_curve.add_options(evaluate)
    add_stream_options(evaluate)
    add_model_options(evaluate)
    evaluate.set_defaults(run=run)
    return evaluate
