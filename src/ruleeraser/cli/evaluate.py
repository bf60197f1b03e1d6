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
from ruleeraser.cli.goal_options import add_strength_option, with_strength
from ruleeraser.distill import log_proba


def run(args: argparse.Namespace) -> int:
    """Stream ``--data`` through the model and the eraser; print the report and write it to
    ``--out`` (report.md, report.json, groups.png). Returns 0."""
    from ruleeraser import Eraser
    from ruleeraser.fingerprint import CLI_HINT, check_model
    from ruleeraser.report_files import (
        plot_groups,
        prior_in_force,
        removal_in_force,
        report_json,
        report_markdown,
    )
    from ruleeraser.tables import check_features, check_labels

    out_dir = Path(args.out) if args.out else default_report_dir(args.eraser)
    if out_dir.exists() and not out_dir.is_dir():  # found out before the model is queried
        raise FileExistsError(f"--out {out_dir} is a file; the report is a folder")
    with opened_model(args) as model:
        eraser = with_strength(Eraser.load(args.eraser, model, check_model=False), args.strength)
        check_model(eraser, args.eraser, name=args.model, force=args.force, hint=CLI_HINT)
        features = model_columns(
            model, args.data, given=args.features, eraser=eraser, spec=args.model
        )
        biases = list(dict.fromkeys(args.bias or eraser.bias_names_))
        if args.target in biases:
            raise ValueError(f"--target {args.target!r} is also a --bias column")
        known = set(eraser.classes_.tolist())
        y, b, before, after, logs = [], {c: [] for c in biases}, [], [], []
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
                proba, scaled = eraser.outputs(chunk[features])  # one pass of the patches
                fair = eraser.remove(proba, scaled)
            except (ValueError, RuntimeError) as exc:
                raise rows_error(start, chunk, exc) from exc
            y.append(chunk[args.target].to_numpy())
            for column in biases:
                b[column].append(chunk[column].to_numpy())
            logs.append((log_proba(proba, eraser.eps), scaled))
            before.append(eraser.classes_[proba.argmax(axis=1)])
            after.append(eraser.classes_[fair.argmax(axis=1)])
        if args.calibration_curve:
            calibration_curve.write_curve(args, eraser, features, biases[0], out_dir)
        summary = http_summary(model)
    y_all = np.concatenate(y)
    predictions = {"before": np.concatenate(before), "after": np.concatenate(after)}
    columns = {c: np.concatenate(b[c]) for c in biases}
    reports, unseen = bias_reports(eraser, y_all, columns, predictions)
    header = {
        "data": str(args.data),
        "model": args.model,
        "eraser": str(args.eraser),
        "rows": len(y_all),
        "target": args.target,
        **prior_in_force(eraser),
        **removal_in_force(eraser),
        **({"unseen_bias_values": unseen} if unseen else {}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    goal_text, points = goal_section(eraser, y_all, predictions["after"], columns, logs, out_dir)
    header["tradeoff"] = points
    markdown = report_markdown(header, reports) + unseen_note(unseen) + goal_text
    print(markdown)
    (out_dir / "report.md").write_text(markdown + "\n")
    (out_dir / "report.json").write_text(json.dumps(report_json(header, reports), indent=2) + "\n")
    plot_groups(reports, out_dir / "groups.png")
    print(f"wrote report.md, report.json, groups.png and tradeoff.png to {out_dir}{summary}")
    return 0


def bias_reports(
    eraser: Any, y: np.ndarray, biases: dict[str, np.ndarray], predictions: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The report of each bias column, and per column the values its calibration rows never
    had (``{"value", "rows", "first_rows"}``, rows counted from 0 in ``--data``): their rows
    are kept out of that column's report (its gap and group figures), with a warning.

    >>> from types import SimpleNamespace
    >>> eraser = SimpleNamespace(bias_names_=["b"], bias_values_=[np.array([0, 1])],
    ...                          classes_=np.array([0, 1]))
    >>> y = np.array([0, 1, 0, 1, 1])
    >>> reports, unseen = bias_reports(eraser, y, {"b": np.array([0, 1, 1, 0, 2])},
    ...                                {"before": y, "after": y})
    >>> unseen, reports["b"].rows["after"].counts.sum()
    ({'b': [{'value': 2, 'rows': 1, 'first_rows': [4]}]}, np.int64(4))
    """
    import warnings

    import pandas as pd

    from ruleeraser.metrics import report

    reports, unseen = {}, {}
    for column, values in biases.items():
        keep = np.ones(len(values), dtype=bool)
        if column in eraser.bias_names_:
            known = eraser.bias_values_[eraser.bias_names_.index(column)].tolist()
            keep = pd.Series(values).isin(known).to_numpy()
            if not keep.any():
                raise ValueError(f"bias {column!r} has none of the values the eraser knows {known}")
        for value in pd.unique(values[~keep]):
            rows = np.flatnonzero(values == value)
            value = value.item() if hasattr(value, "item") else value
            first = ", ".join(map(str, rows[:5])) + (" ..." if rows.size > 5 else "")
            warnings.warn(
                f"bias {column!r} has the value {value!r}, which the eraser's calibration rows "
                f"never had, in {rows.size} row(s) (data rows {first}): they are kept out of "
                "its gap and group figures",
                stacklevel=2,
            )
            entry = {"value": value, "rows": int(rows.size), "first_rows": rows[:5].tolist()}
            unseen.setdefault(column, []).append(entry)
        subset = {name: p[keep] for name, p in predictions.items()}
        reports[column] = report(y[keep], values[keep], subset, decisions=eraser.classes_)
    return reports, unseen


def unseen_note(unseen: dict[str, list[dict[str, Any]]]) -> str:
    """The report's note on the rows kept out (:func:`bias_reports`); "" when none were."""
    lines = [
        f"- bias `{column}` = {e['value']!r}: {e['rows']} row(s) (data rows "
        + ", ".join(map(str, e["first_rows"]))
        + (" ...)" if e["rows"] > len(e["first_rows"]) else ")")
        for column, entries in unseen.items()
        for e in entries
    ]
    head = "Kept out of the figures above: bias values the eraser's calibration rows never had"
    return "\n\n" + head + "\n\n" + "\n".join(lines) if lines else ""


def goal_section(
    eraser: Any,
    y: np.ndarray,
    after: np.ndarray,
    biases: dict[str, np.ndarray],
    logs: list[tuple[np.ndarray, list[np.ndarray]]],
    out_dir: Path,
) -> tuple[str, list[dict[str, float]]]:
    """The goal (or, without one, EqualOdds at the best balanced accuracy) of the eraser's
    decisions ``after`` measured on these rows beside what the fit expected, and the trade-off
    curve along the strength (``logs``: per chunk the model's log-output and the patches' as
    :meth:`Eraser.outputs` gives them; drawn to ``tradeoff.png``): the report's text and the
    curve's points."""
    from ruleeraser.goal import Goal
    from ruleeraser.report_files import plot_tradeoff
    from ruleeraser.tradeoff import goal_figures, tradeoff_curve

    goal = eraser.goal if eraser.goal is not None else Goal()
    log_model = np.concatenate([m for m, _ in logs])
    log_patches = [np.concatenate([p[j] for _, p in logs]) for j in range(len(eraser.patches_))]
    log_priors = np.log(eraser.class_prior_) if hasattr(eraser, "class_prior_") else None
    removal = eraser.removal_
    index = {c: i for i, c in enumerate(eraser.classes_.tolist())}
    y_idx, fair = (np.array([index[v] for v in labels.tolist()]) for labels in (y, after))
    objective, measured = goal_figures(y_idx, fair, biases, goal)
    points = tradeoff_curve(removal, log_model, log_patches, log_priors, y_idx, biases, goal)
    plot_tradeoff(points, removal.strength, eraser.goal, out_dir / "tradeoff.png")
    name, what = goal.constraint.replace("_", " "), goal.objective.replace("_", " ")
    lines = ["", "## Goal", ""]
    if eraser.goal is None:
        lines.append(f"No goal was given at fit; measured as {name} and {what}.")
    else:
        chosen = eraser.goal_fit_
        low, high = chosen.interval
        lines.append(
            f"Goal: {name} gap <= {goal.max_gap_points:g} points at the best {what}. Expected "
            f"at fit: {chosen.expected_gap:.1f} points ({100 * goal.confidence:g}% interval "
            f"{low:.1f}-{high:.1f}), {what} {chosen.objective:.1f}."
        )
    lines.append(
        f"Measured on these rows at strength {removal.strength:g}: {name} gap {measured:.1f} "
        f"points, {what} {objective:.1f}. The trade-off along the strength: tradeoff.png."
    )
    return "\n".join(lines), points


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
    evaluate.add_argument(
        "--force", action="store_true",
        help="use a model whose answers on the eraser's probe rows differ from those of the "
        "model it was fitted on (by default refused)",
    )  # fmt: skip
    add_strength_option(evaluate)
    calibration_curve.add_options(evaluate)
    add_stream_options(evaluate)
    add_model_options(evaluate)
    evaluate.set_defaults(run=run)
    return evaluate
