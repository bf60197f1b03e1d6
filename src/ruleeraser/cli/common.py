"""What the ``fit``, ``predict`` and ``evaluate`` commands share: the ``--model`` options and
the model they open, the choice of the model's input columns, reading a table in chunks, and
the checks of their options.

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="demo")
>>> add_model_options(parser)
>>> args = parser.parse_args(["--model", "model.skops", "--header", "X-Team: fairness"])
>>> args.model, parse_header(args.header[0])
('model.skops', ('X-Team', 'fairness'))
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HTTP_OPTIONS = (
    "protocol", "row_format", "request_key", "response_key", "input_name", "rows_per_request",
    "max_concurrency", "timeout", "retries", "budget", "cache_dir",
)  # fmt: skip


class _RenamedOption(argparse.Action):
    """Stores the value; says so on stderr when the option was given by its old name
    (``option_strings[1]``), which still works until it is removed."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        import sys

        old, new = self.option_strings[1], self.option_strings[0]
        if option == old:
            print(
                f"{parser.prog}: warning: {old} is deprecated and will be removed in 0.3; "
                f"use {new}",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


@contextmanager
def opened_model(
    args: argparse.Namespace, *, progress: bool = False, classes: list[Any] | None = None
) -> Iterator[Any]:
    """The ``--model`` of the command line as a BlackBox, closed (HTTP pool, cache) after use.

    Parameters
    ----------
    args: the parsed command line (the options of :func:`add_model_options`).
    progress: a progress bar for the rows an HTTP model is sent.
    classes: the labels of the model's output columns (``--classes``), if given.

    Yields
    ------
    The model as a :class:`ruleeraser.BlackBox` (:func:`ruleeraser.model_files.load_model`).
    """
    from ruleeraser.model_files import load_model

    model = load_model(args.model, **model_options(args, progress=progress, classes=classes))
    try:
        yield model
    finally:
        close = getattr(model.fn, "close", None)
        if close is not None:
            close()


def model_options(
    args: argparse.Namespace, *, progress: bool = False, classes: list[Any] | None = None
) -> dict[str, Any]:
    """``load_model``'s keyword arguments for ``--model`` from the command line's options."""
    options = {k: getattr(args, k) for k in _HTTP_OPTIONS if getattr(args, k) is not None}
    if args.header:
        options["headers"] = dict(parse_header(h) for h in args.header)
    is_url = args.model.startswith(("http://", "https://"))
    if options and not is_url:
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise ValueError(f"{flags} apply only to a model at an http(s) URL, not {args.model}")
    if is_url:
        options["progress"] = progress
    if args.trust:
        options["trusted"] = list(args.trust)
    return {
        "allow_pickle": args.allow_pickle,
        "output": args.model_output,
        "output_name": args.output_name,
        "classes": classes,
        **options,
    }


def model_columns(
    model: Any,
    data: str | Path,
    *,
    given: Sequence[str] | None = None,
    eraser: Any = None,
    exclude: Sequence[str] = (),
    spec: str = "the model",
) -> list[str]:
    """The model's input columns in the table ``data``, in the model's order: the one choice
    of ``fit``, ``evaluate`` and ``predict``.

    The columns are the eraser's features (``evaluate``, ``predict``), else ``given``
    (``--features``), else the model's own feature names, else (``fit``) every column of
    ``data`` but ``exclude`` (the target and the bias columns). They must then be the names
    the model knows, as many as the features it takes, and columns of ``data``; else
    ``ValueError`` naming the difference, the count or the missing column and the file.

    Parameters
    ----------
    model: the black box (:func:`ruleeraser.gbm_files.model_features` says what it takes).
    data: the table file. given: ``--features``, if given. eraser: the fitted eraser, if any.
    exclude: the columns that are no default feature. spec: the model, for messages.

    Example
    -------
    >>> import tempfile
    >>> import pandas as pd
    >>> from ruleeraser.model_files import sklearn_blackbox
    >>> from sklearn.linear_model import LogisticRegression
    >>> frame = pd.DataFrame({"id": [1, 2], "x": [0.0, 1.0], "sex": [0, 1], "y": [0, 1]})
    >>> path = Path(tempfile.mkdtemp()) / "rows.csv"
    >>> frame.to_csv(path, index=False)
    >>> model = sklearn_blackbox(LogisticRegression().fit(frame[["x", "sex"]], frame["y"]))
    >>> model_columns(model, path, exclude=["y", "sex"])
    ['x', 'sex']
    """
    from ruleeraser.gbm_files import model_features
    from ruleeraser.inputs import fitted_columns
    from ruleeraser.tables import table_columns

    names, count = model_features(model)
    columns = table_columns(data)
    saved = getattr(eraser, "feature_names_in_", None)
    if saved is not None or (eraser is not None and names is None):
        features = fitted_columns(saved, given, "--features")
        source = "--features" if saved is None else "the eraser's features"
    elif given:
        features, source = list(given), "--features"
    elif names is not None:
        features, source = names, "the model's features"
    else:
        features = [c for c in columns if c not in exclude]
        source = f"the columns of {data} but the target and --bias"
    if names is not None and features != names:
        raise ValueError(
            f"{source} differ from the features {spec} takes: {_difference(features, names)}"
        )
    if count is not None and len(features) != count:
        hint = "" if given or saved else "; list the model's input columns with --features"
        raise ValueError(
            f"{spec} takes {count} features; {source} are {len(features)}: {features}{hint}"
        )
    missing = [c for c in features if c not in columns]
    if missing:
        raise ValueError(f"{data} has no column(s) {missing}, which {spec} takes as input")
    return features


def _difference(got: list[str], wanted: list[str]) -> str:
    """How the columns ``got`` differ from ``wanted``, for a message."""
    lacking = [c for c in wanted if c not in got]
    extra = [c for c in got if c not in wanted]
    parts = [f"missing {lacking}"] if lacking else []
    parts += [f"not the model's: {extra}"] if extra else []
    return "; ".join(parts) or f"another order (the model's: {wanted})"


def parse_header(text: str) -> tuple[str, str]:
    """``(name, value)`` of a ``--header 'Name: value'``; ``ValueError`` for other text.

    >>> parse_header("Authorization: Bearer abc")
    ('Authorization', 'Bearer abc')
    """
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--header must look like 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def http_summary(model: Any) -> str:
    """What an HTTP model cost (rows sent, requests, cache hits), for the final message; ``""``
    for a model that is not behind a URL.

    >>> from ruleeraser import BlackBox
    >>> http_summary(BlackBox(lambda x: [[0.5, 0.5]] * len(x)))
    ''
    """
    from ruleeraser.http_model import HTTPModel

    fn = model.fn
    if not isinstance(fn, HTTPModel):
        return ""
    return (
        f" (HTTP: {fn.rows_sent} rows sent in {fn.requests_sent} request(s), "
        f"{fn.cache_hits} answered from the cache)"
    )


def cast_classes(classes: Sequence[str], y: Any) -> list[Any]:
    """``--classes`` (strings) as values of the target column's type.

    Parameters
    ----------
    classes: the labels as typed on the command line.
    y: the target column (a pandas Series).

    Returns
    -------
    The labels as booleans, numbers of ``y``'s dtype, or strings; ``ValueError`` naming
    ``--classes`` when they cannot be.

    Example
    -------
    >>> import pandas as pd
    >>> cast_classes(["0", "1"], pd.Series([1, 0, 1])), cast_classes(["no"], pd.Series(["no"]))
    ([0, 1], ['no'])
    """
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


def chunks(args: argparse.Namespace, columns: Sequence[str]) -> Iterator[tuple[int, Any]]:
    """``(first row, chunk)`` over the ``columns`` of ``--data``, ``--chunk-rows`` rows at a
    time, with a progress bar (unless ``--quiet``) that starts once the first chunk is read,
    so that a file that cannot be read fails with its one-line error alone."""
    from tqdm.auto import tqdm

    from ruleeraser.tables import count_rows, iter_table

    reader = iter_table(args.data, columns, args.chunk_rows)
    first = next(reader)  # a table without rows raises here
    start = 0
    with tqdm(
        total=count_rows(args.data), unit="row", desc=Path(args.data).name, disable=args.quiet
    ) as bar:
        for chunk in itertools.chain([first], reader):
            yield start, chunk
            start += len(chunk)
            bar.update(len(chunk))


def rows_error(start: int, chunk: Any, exc: Exception) -> Exception:
    """``exc`` with the rows of ``chunk`` (counted from 0 in ``--data``) in its message: a
    ``ValueError`` for a fault of the data, a ``RuntimeError`` for one of the run.

    >>> rows_error(100, [0] * 50, ValueError("NaN in x"))
    ValueError('data rows 100-149: NaN in x')
    """
    kind = ValueError if isinstance(exc, (ValueError, TypeError)) else RuntimeError
    return kind(f"data rows {start}-{start + len(chunk) - 1}: {exc}")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that open the deployed model (``--model`` and its HTTP settings)."""
    model = parser.add_argument_group("the deployed model")
    model.add_argument(
        "--model", required=True, metavar="SPEC",
        help="the model: an http(s):// URL, an .onnx, .skops or .pt2 (torch.export) file, a "
        "LightGBM .txt, XGBoost .json/.ubj (classes 0 .. k-1 unless fit's --classes) or "
        "CatBoost .cbm file, or (with --allow-pickle) a .pkl/.pickle/.joblib file",
    )  # fmt: skip
    model.add_argument(
        "--allow-pickle", action="store_true",
        help="allow a pickle/joblib model file; loading one RUNS ARBITRARY CODE from the file, "
        "so use it only for a file you trust",
    )  # fmt: skip
    model.add_argument(
        "--trust", action="append", metavar="TYPE",
        help="a type a .skops file may hold besides scikit-learn and numpy classes, as its "
        "refusal names it (repeatable; only for a file you trust)",
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
        "--rows-per-request", "--batch-size", type=int, metavar="N", action=_RenamedOption,
        help="rows in one HTTP request (default 256; --batch-size is its deprecated name)",
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


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of the commands that stream a table through a fitted eraser."""
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
