"""``ruleeraser predict``: fair probabilities and decisions for a table, streamed in chunks."""

from __future__ import annotations

import argparse
from typing import Any

from ruleeraser.cli.common import (
    add_model_options,
    add_stream_options,
    chunks,
    eraser_features,
    http_summary,
    opened_model,
    rows_error,
)


def run(args: argparse.Namespace) -> int:
    from ruleeraser import Eraser
    from ruleeraser.tables import TableWriter, check_features, require_columns

    keep = list(dict.fromkeys(args.keep_columns or []))
    with opened_model(args) as model:
        eraser = Eraser.load(args.eraser, model)
        features = eraser_features(eraser, args.features)
        require_columns(args.data, [*features, *keep])
        names = [str(c) for c in eraser.classes_]
        taken = {f"proba_{c}" for c in names} | {"prediction"} | {f"model_proba_{c}" for c in names}
        if clash := sorted(taken & set(keep)):
            raise ValueError(f"--keep-columns {clash} clash with the output columns")
        with TableWriter(args.out) as writer:
            for start, chunk in chunks(args, [*features, *keep]):
                X = chunk[features]
                try:
                    check_features(X, start)
                    proba, fair = eraser.model_and_fair_proba(X)
                except (ValueError, RuntimeError) as exc:
                    raise rows_error(start, chunk, exc) from exc
                out = chunk[keep].reset_index(drop=True)
                for j, c in enumerate(names):
                    out[f"proba_{c}"] = fair[:, j]
                out["prediction"] = eraser.classes_[fair.argmax(axis=1)]
                if args.keep_original:
                    for j, c in enumerate(names):
                        out[f"model_proba_{c}"] = proba[:, j]
                writer.write(out)
        summary = http_summary(model)
    print(f"wrote {writer.rows} rows to {args.out}{summary}")
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` command on an ``add_subparsers()`` object."""
    predict = commands.add_parser(
        "predict",
        help="fair probabilities and decisions for a table, streamed in chunks",
        description=(
            "Read --data in chunks, query the model once per row, remove the bias rule and "
            "write proba_<class> columns and the fair prediction to --out (.csv or .parquet) "
            "chunk by chunk."
        ),
    )
    predict.add_argument("--data", required=True, metavar="FILE", help="a .csv or .parquet table")
    predict.add_argument("--out", required=True, metavar="FILE", help="output .csv or .parquet")
    predict.add_argument(
        "--keep-original", action="store_true",
        help="also write the model's own probabilities (model_proba_<class>)",
    )  # fmt: skip
    predict.add_argument(
        "--keep-columns", nargs="+", metavar="COL",
        help="input columns copied to the output, e.g. an id",
    )  # fmt: skip
    add_stream_options(predict)
    add_model_options(predict)
    predict.set_defaults(run=run)
    return predict
