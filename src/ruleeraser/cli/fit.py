"""``ruleeraser fit``: an eraser from a calibration table and a deployed model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ruleeraser.cli.common import (
    add_model_options,
    cast_classes,
    http_summary,
    model_columns,
    opened_model,
)
from ruleeraser.cli.goal_options import (
    add_goal_options,
    add_removal_options,
    describe_removal,
    goal_from_args,
)


def run(args: argparse.Namespace) -> int:
    """Fit and save the eraser the options describe; print what was fitted. Returns 0."""
    from ruleeraser import Eraser
    from ruleeraser.fingerprint import with_file
    from ruleeraser.tables import check_features, check_labels, read_table

    check_out(args.out, args.overwrite)  # before the model is paid for
    goal = goal_from_args(args)
    biases = list(dict.fromkeys(args.bias))
    if args.target in biases:
        raise ValueError(f"--target {args.target!r} is also a --bias column")
    target = read_table(args.data, [args.target])[args.target] if args.classes else None
    classes = cast_classes(args.classes, target) if args.classes else None
    start = time.perf_counter()
    with opened_model(args, progress=not args.quiet, classes=classes) as model:
        features = model_columns(
            model, args.data, given=args.features, exclude=[args.target, *biases], spec=args.model
        )
        if args.target in features:
            raise ValueError(f"--target {args.target!r} cannot be one of the --features")
        if not features:
            raise ValueError(f"{args.data} has no column left for the model's inputs")
        frame = read_table(args.data, [*features, args.target, *biases])
        check_features(frame[features])
        for column in [args.target, *biases]:
            check_labels(frame[column])
        eraser = Eraser(
            model,
            rule=args.rule,
            prior=args.prior,
            rule_scale=args.rule_scale,
            strength=args.strength,
            goal=goal,
            max_epochs=args.max_epochs,
            holdout=args.holdout,
            random_state=args.random_state,
            progress=not args.quiet,
        )
        eraser.fit(frame[features], frame[args.target], bias=frame[biases])
        eraser.model_fingerprint_ = with_file(eraser.model_fingerprint_, args.model)
        queried = f"{eraser.n_queries_} model queries{http_summary(model)}"
    out = eraser.save(args.out, overwrite=args.overwrite)
    print(
        f"fitted on {len(frame)} rows of {args.data} ({len(features)} features; "
        f"classes {eraser.classes_.tolist()}): {queried}"
    )
    for line in describe_removal(eraser):
        print(f"  {line}")
    for name, values, report, prior, scale in zip(
        eraser.bias_names_, eraser.bias_values_, eraser.patch_fit_, eraser.class_prior_,
        eraser.rule_scale_, strict=True,
    ):  # fmt: skip
        empty = eraser.empty_cells_[name]
        held = ", ".join(f"{c} {p:.3f}" for c, p in zip(eraser.classes_, prior, strict=True))
        print(
            f"  bias {name!r} (values {values.tolist()}): patch stopped at epoch "
            f"{report.epochs} (best {report.best_epoch}), held-out loss "
            f"{report.heldout_loss:.4f}; empty (target, bias) cells: {empty or 'none'}; "
            f"class prior the patch holds: {held}; rule scale {scale:g}"
        )
    print(f"wrote {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def check_out(out: str | Path, overwrite: bool, *, kind: str = "eraser") -> None:
    """Refuse an ``--out`` that already exists unless ``overwrite``: for ``kind="eraser"``, a
    folder that holds an eraser (and a file, always: an eraser is a folder); for
    ``kind="file"`` (``predict``'s output), whatever is there.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "eraser.json").write_text("{}")
    >>> check_out(folder, overwrite=True)
    >>> check_out(folder, overwrite=False)
    Traceback (most recent call last):
    ...
    FileExistsError: --out ... already holds an eraser: pass --overwrite to replace it
    >>> check_out(folder / "eraser.json", overwrite=False, kind="file")
    Traceback (most recent call last):
    ...
    FileExistsError: --out .../eraser.json already exists: pass --overwrite to replace it
    """
    from ruleeraser.persist import CONFIG

    path = Path(out)
    if kind == "eraser" and path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path} is a file; the eraser is a directory")
    if (path / CONFIG if kind == "eraser" else path).exists() and not overwrite:
        held = "holds an eraser" if kind == "eraser" else "exists"
        raise FileExistsError(f"--out {path} already {held}: pass --overwrite to replace it")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``fit`` command on an ``add_subparsers()`` object."""
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
        help="the model's input columns, in the model's order (default: the model's own "
        "feature names where it knows them, a bias column included; else every column but "
        "the target and the bias columns: list a bias column here if the model takes it)",
    )  # fmt: skip
    fit.add_argument("--out", required=True, metavar="ERASER_DIR", help="where to save the eraser")
    fit.add_argument(
        "--overwrite", action="store_true",
        help="replace an eraser already in --out (the replacement is atomic: an interrupted "
        "fit leaves the previous eraser)",
    )  # fmt: skip
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
    add_removal_options(fit)
    add_goal_options(fit)
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
    add_model_options(fit)
    fit.set_defaults(run=run)
    return fit
