"""``ruleeraser predict``: fair probabilities and decisions for a table streamed in chunks, or
for a Parquet dataset scored partition by partition on a local, Ray or Dask engine."""

from __future__ import annotations

import argparse
from typing import Any

from ruleeraser.cli.common import (
    add_model_options,
    add_stream_options,
    chunks,
    http_summary,
    model_columns,
    model_options,
    opened_model,
    rows_error,
)
from ruleeraser.cli.goal_options import add_strength_option, with_strength


def run(args: argparse.Namespace) -> int:
    from ruleeraser.scale.dataset import is_dataset

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if is_dataset(args.data):
        return _run_dataset(args)
    if args.engine != "local" or args.workers or args.address:
        raise ValueError(
            f"--engine, --workers and --address score a Parquet dataset: give --data as a "
            f"directory or a glob (e.g. 'rows/*.parquet'), not the file {args.data}"
        )
    return _run_file(args)


def _run_file(args: argparse.Namespace) -> int:
    from ruleeraser import Eraser
    from ruleeraser.cli.fit import check_out
    from ruleeraser.fingerprint import CLI_HINT, check_model
    from ruleeraser.scale.batch import FairScorer
    from ruleeraser.tables import TableWriter, require_columns

    check_out(args.out, args.overwrite, kind="file")  # before the model is paid for
    with opened_model(args) as model:
        eraser = with_strength(Eraser.load(args.eraser, model, check_model=False), args.strength)
        check_model(eraser, args.eraser, name=args.model, force=args.force, hint=CLI_HINT)
        scorer = FairScorer.around(
            eraser,
            keys=args.keep_columns or [],
            features=model_columns(
                model, args.data, given=args.features, eraser=eraser, spec=args.model
            ),
            keep_original=args.keep_original,
        )
        require_columns(args.data, [*scorer.features, *scorer.keys])
        with TableWriter(args.out) as writer:
            for start, chunk in chunks(args, [*scorer.features, *scorer.keys]):
                where = f"data rows {start}-{start + len(chunk) - 1}"
                try:
                    writer.write(scorer.frame(chunk, where=where, first_row=start))
                except RuntimeError as exc:
                    raise rows_error(start, chunk, exc) from exc
        summary = http_summary(model)
    print(f"wrote {writer.rows} rows to {args.out}{summary}")
    return 0


def _run_dataset(args: argparse.Namespace) -> int:
    from ruleeraser import Eraser
    from ruleeraser.fingerprint import CLI_HINT, check_model
    from ruleeraser.scale.job import predict_dataset

    if args.strength is not None:
        raise ValueError(
            "--strength applies to a single table; for a Parquet dataset, save an eraser at "
            "that strength (Eraser.set_params(strength=...).save) and score with it"
        )
    with opened_model(args) as model:  # checked here, once, not by every worker
        eraser = Eraser.load(args.eraser, model, check_model=False)
        check_model(eraser, args.eraser, name=args.model, force=args.force, hint=CLI_HINT)
    options = model_options(args)
    options.pop("progress", None)  # the job's progress bar, not one per HTTP client
    result = predict_dataset(
        args.data,
        args.out,
        eraser=args.eraser,
        model=args.model,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        keys=args.keep_columns or [],
        features=args.features,
        keep_original=args.keep_original,
        partition_rows=args.partition_rows,
        batch_rows=args.chunk_rows,
        progress=not args.quiet,
        **options,
    )
    workers = {k: v for k, v in result.peak_mb.items() if k != "driver"}
    sent = f", {result.rows_sent} rows sent to the model" if result.rows_sent else ""
    print(
        f"wrote {result.rows} rows in {result.written} partition(s) to {args.out} "
        f"({result.skipped} of {result.partitions} already complete){sent}; "
        f"peak memory: {max(workers.values(), default=0):.0f} MB per worker, "
        f"{result.peak_mb['driver']:.0f} MB here"
    )
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` command on an ``add_subparsers()`` object."""
    predict = commands.add_parser(
        "predict",
        help="fair probabilities and decisions for a table or a Parquet dataset",
        description=(
            "Query the model once per row, remove the bias rule and write proba_<class> "
            "columns and the fair prediction. A file --data (.csv or .parquet) is streamed in "
            "chunks to the file --out. A Parquet dataset --data (a directory or a glob) is "
            "scored partition by partition on --engine into the directory --out, mirroring "
            "the input's files; each partition is renamed into place when complete, and a "
            "rerun into the same --out skips the complete ones."
        ),
    )
    predict.add_argument(
        "--data", required=True, metavar="PATH",
        help="a .csv or .parquet file, or a Parquet dataset: a directory or a quoted glob",
    )  # fmt: skip
    predict.add_argument(
        "--out", required=True, metavar="PATH",
        help="output .csv or .parquet file; for a dataset, a directory",
    )  # fmt: skip
    predict.add_argument(
        "--overwrite", action="store_true",
        help="replace the file --out if it exists (a dataset's --out folder is never replaced: "
        "a rerun completes it)",
    )  # fmt: skip
    predict.add_argument(
        "--force", action="store_true",
        help="use a model whose answers on the eraser's probe rows differ from those of the "
        "model it was fitted on (by default refused)",
    )  # fmt: skip
    predict.add_argument(
        "--keep-original", action="store_true",
        help="also write the model's own probabilities (model_proba_<class>)",
    )  # fmt: skip
    predict.add_argument(
        "--keep-columns", nargs="+", metavar="COL",
        help="input columns copied to the output, e.g. an id",
    )  # fmt: skip
    add_strength_option(predict)
    add_stream_options(predict)
    scale = predict.add_argument_group("a Parquet dataset")
    scale.add_argument(
        "--engine", choices=["local", "ray", "dask"], default="local",
        help="where the partitions are scored: 'local' (threads of this process), 'ray' "
        "(actors) or 'dask' (worker processes) (default local)",
    )  # fmt: skip
    scale.add_argument(
        "--workers", type=int, metavar="N",
        help="threads (local), actors (ray) or worker processes of a local Dask cluster "
        "(default: 1 for local and dask, the cluster's CPUs for ray)",
    )  # fmt: skip
    scale.add_argument(
        "--address", metavar="ADDR",
        help="join a running cluster (ray: e.g. auto or HOST:6379; dask: the scheduler, "
        "tcp://HOST:8786) instead of starting a local one; its workers need rule-eraser "
        "installed and --eraser and --model at the same paths",
    )  # fmt: skip
    scale.add_argument(
        "--partition-rows", type=int, default=1_000_000, metavar="N",
        help="a file of several row groups is split into partitions of at least N rows "
        "(default 1000000)",
    )  # fmt: skip
    add_model_options(predict)
    predict.set_defaults(run=run)
    return predict
