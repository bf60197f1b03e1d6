"""A deployed model's fingerprint: its answers on a few probe rows the eraser keeps, and the
SHA-256 of its file, so that an eraser refuses a model it was not fitted on.

An eraser is fitted against one model; in front of another it removes a rule that model may
not have, silently. At ``fit`` the eraser draws :data:`N_PROBES` probe rows and keeps them with
the model's probabilities for them (:func:`make`, one query per probe row);
:func:`check_model` asks the model it is given for the same rows and refuses it when an answer
differs by more than :data:`TOLERANCE`. ``ruleeraser fit`` adds the model file's SHA-256
(:func:`with_file`). The hash is informative: a file saved again (or converted) that gives the
same answers is the same model, and is accepted without a word.

The probe rows reveal no calibration record. Each feature of each probe row is drawn on its
own, from that feature's calibration values alone (the values of at most :data:`SAMPLE` rows):
a float feature is the column's empirical quantile at a uniform random level (a linear
interpolation between two neighbouring values, seldom a value a record holds), an int or bool
feature one of the column's values drawn at random. So a probe row keeps no record's
combination of values; a drawn row that equals a calibration row all the same is drawn again,
and dropped after :data:`DRAWS` draws (as when every combination of a few binary features
occurs). Only tabular rows have probes: for image-shaped rows ``(C, H, W)`` independent pixels
are not an image, and the fingerprint holds only what the command line adds, the file's hash.

Example
-------
>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(300, 3)); y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
>>> model = LogisticRegression().fit(X, y)
>>> fp = make(X, model.predict_proba, seed=0)
>>> probes = np.array(fp["probes"]["rows"])
>>> probes.shape, any((X == row).all(axis=1).any() for row in probes)
((16, 3), False)
>>> difference(fp, model.predict_proba)
0.0
>>> difference(fp, LogisticRegression(C=0.01).fit(X, y).predict_proba) > TOLERANCE
True
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Probe rows an eraser keeps.
N_PROBES = 16
#: The largest difference between two answers (probabilities) of the same model.
TOLERANCE = 1e-5
#: Rows whose values the probes are drawn from (a random subset of a larger calibration set).
SAMPLE = 2_000
#: Draws of a probe row before it is dropped, when each draw equals a calibration row.
DRAWS = 20
#: The end of a refusal: how to use the model anyway, in the library and on the command line.
LIBRARY_HINT = "pass check_model=False to load it anyway"
CLI_HINT = "pass --force to use it anyway"
_FIELDS = {"probes", "answers", "model_sha256"}
_PROBE_FIELDS = {"kind", "columns", "dtypes", "rows"}


def make(
    X: Any,
    model: Callable[[Any], Any],
    *,
    n_probes: int = N_PROBES,
    seed: int | None = None,
) -> dict[str, Any]:
    """The fingerprint of ``model`` (probabilities ``(n, k)`` of a batch of rows): probe rows
    drawn from the calibration inputs ``X`` (see the module) and its answers for them.

    Returns ``{"probes", "answers", "model_sha256"}``, JSON-ready; ``probes`` and ``answers``
    are None for image-shaped ``X`` and for a model that fails on the probe rows (a query
    budget spent, a model that answers only known rows: a warning says so), and
    ``model_sha256`` None (see :func:`with_file`).
    """
    probes = _draw(X, n_probes, np.random.default_rng(seed))
    if probes is None:
        return {"probes": None, "answers": None, "model_sha256": None}
    try:
        answers = np.asarray(model(probe_input(probes)), dtype=np.float64).tolist()
    except Exception as exc:  # the fit stands; only the later check is lost
        warnings.warn(
            f"the model did not answer the {len(probes['rows'])} probe rows of its fingerprint "
            f"({type(exc).__name__}: {exc}): this eraser cannot check its model when loaded",
            stacklevel=3,
        )
        return {"probes": None, "answers": None, "model_sha256": None}
    return {"probes": probes, "answers": answers, "model_sha256": None}


def with_file(fingerprint: dict[str, Any] | None, path: str | Path) -> dict[str, Any] | None:
    """``fingerprint`` with the SHA-256 of the model file ``path`` (unchanged when ``path``
    is not a file, such as a URL)."""
    if fingerprint is None or not Path(path).is_file():
        return fingerprint
    return {**fingerprint, "model_sha256": file_sha256(path)}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, in hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def difference(fingerprint: dict[str, Any], model: Callable[[Any], Any]) -> float | None:
    """The largest absolute difference between ``model``'s answers on the probe rows and the
    fingerprint's (inf when they have another shape); None without probe rows."""
    if fingerprint["probes"] is None:
        return None
    got = np.asarray(model(probe_input(fingerprint["probes"])), dtype=np.float64)
    kept = np.asarray(fingerprint["answers"], dtype=np.float64)
    if got.shape != kept.shape:
        return float("inf")
    return float(np.abs(got - kept).max())


def check_model(
    eraser: Any,
    where: str | Path,
    *,
    model: Callable[[Any], Any] | None = None,
    name: str = "",
    force: bool = False,
    hint: str = LIBRARY_HINT,
) -> None:
    """Refuse a model other than the one ``eraser`` was fitted on.

    Parameters
    ----------
    eraser: a fitted or loaded eraser (its ``model_fingerprint_``).
    where: the eraser's directory, for the messages.
    model: the model to check (probabilities of a batch of rows); None: ``eraser.blackbox_``.
    name: the model as the user named it (a file or a URL), for the messages; a file's
        SHA-256 is compared when there are no probe rows to ask it (a warning if it differs).
    force: warn instead of refusing.
    hint: how to use the model anyway, the end of the refusal.

    Raises ``ValueError`` (one line: the model, the eraser, the largest difference) when the
    model's answers on the probe rows differ by more than :data:`TOLERANCE`. An eraser saved
    without a fingerprint is not checked, with a warning saying so.
    """
    fingerprint = getattr(eraser, "model_fingerprint_", None)
    if fingerprint is None:
        warnings.warn(
            f"{where} was saved without a model fingerprint: the model is not checked against "
            "the one it was fitted on (fit the eraser again to record one)",
            stacklevel=2,
        )
        return
    gap = difference(fingerprint, eraser.blackbox_ if model is None else model)
    the_model = f"the model {name}" if name else "the model"
    if gap is None:
        kept = fingerprint["model_sha256"]
        if kept is not None and name and Path(name).is_file() and file_sha256(name) != kept:
            warnings.warn(
                f"{the_model} is not the file {where} was fitted with (another SHA-256); "
                "its answers are not compared (no probe rows for image-shaped inputs)",
                stacklevel=2,
            )
        return
    if gap <= TOLERANCE:
        return
    answers = np.asarray(fingerprint["answers"])
    differ = (
        f"its answers on the eraser's probe rows differ by up to {gap:.2g}"
        if np.isfinite(gap)
        else f"it does not answer the eraser's probe rows with {answers.shape[1]} probabilities"
    )
    text = f"{the_model} is not the one {where} was fitted on ({differ})"
    if not force:
        raise ValueError(f"{text}; {hint}")
    warnings.warn(f"{text}; using it anyway (--force)", stacklevel=2)


def probe_input(probes: dict[str, Any]) -> Any:
    """The probe rows as the model took the calibration rows: a DataFrame of the same columns
    and dtypes, a numpy array or a torch tensor."""
    rows, dtypes = probes["rows"], probes["dtypes"]
    if probes["kind"] == "frame":
        import pandas as pd

        columns = probes["columns"]
        return pd.DataFrame(rows, columns=columns).astype(dict(zip(columns, dtypes, strict=True)))
    if probes["kind"] == "tensor":
        import torch

        return torch.tensor(rows, dtype=getattr(torch, dtypes[0]))
    return np.asarray(rows, dtype=dtypes[0])


def check_field(value: Any, n_classes: int, width: int) -> None:
    """``ValueError`` naming what is wrong with a fingerprint read from a file, for rows of
    ``width`` features and answers of ``n_classes`` probabilities."""
    if not isinstance(value, dict) or set(value) != _FIELDS:
        raise ValueError(f"must be an object of {sorted(_FIELDS)}")
    sha = value["model_sha256"]
    if sha is not None and not (
        isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")
    ):
        raise ValueError("model_sha256 must be null or 64 hex digits")
    probes, answers = value["probes"], value["answers"]
    if probes is None and answers is None:
        return
    if not isinstance(probes, dict) or set(probes) != _PROBE_FIELDS:
        raise ValueError(f"probes must be null or an object of {sorted(_PROBE_FIELDS)}")
    kind, columns, dtypes, rows = (probes[k] for k in ("kind", "columns", "dtypes", "rows"))
    if kind not in ("frame", "array", "tensor"):
        raise ValueError(f"probes.kind must be 'frame', 'array' or 'tensor'; got {kind!r}")
    if not (isinstance(dtypes, list) and len(dtypes) == width and all(map(_numeric, dtypes))):
        raise ValueError(f"probes.dtypes must be {width} numeric dtypes")
    names = isinstance(columns, list) and len(columns) == width
    names = names and all(isinstance(c, str) for c in columns)
    if not (names if kind == "frame" else columns is None):
        raise ValueError(f"probes.columns must be {width} names for a frame, else null")
    if not _table(rows, width, (bool, int, float)):
        raise ValueError(f"probes.rows must be a list of rows of {width} numbers")
    if not _table(answers, n_classes, (int, float)) or len(answers) != len(rows):
        raise ValueError(f"answers must be {len(rows)} rows of {n_classes} probabilities")


def _table(rows: Any, width: int, kinds: tuple[type, ...]) -> bool:
    return (
        isinstance(rows, list)
        and len(rows) > 0
        and all(isinstance(r, list) and len(r) == width for r in rows)
        and all(isinstance(v, kinds) for r in rows for v in r)
    )


def _numeric(dtype: Any) -> bool:
    try:
        return isinstance(dtype, str) and np.dtype(dtype).kind in "biuf"
    except TypeError:
        return False


def _columns(X: Any) -> tuple[str, list[str] | None, list[np.ndarray]] | None:
    """``(kind, names, columns)`` of 2-D numeric ``X``; None for other inputs."""
    torch = sys.modules.get("torch")
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        names = list(X.columns)
        if all(isinstance(c, str) for c in names):
            columns = [np.asarray(X[c]) for c in names]
            return _numeric_columns("frame", names, columns)
        X = X.to_numpy()
    if torch is not None and isinstance(X, torch.Tensor):
        if X.ndim != 2:
            return None
        matrix = X.detach().cpu().numpy()
        return _numeric_columns("tensor", None, list(matrix.T))
    matrix = np.asarray(X)
    return None if matrix.ndim != 2 else _numeric_columns("array", None, list(matrix.T))


def _numeric_columns(
    kind: str, names: list[str] | None, columns: Sequence[np.ndarray]
) -> tuple[str, list[str] | None, list[np.ndarray]] | None:
    if not columns or len(columns[0]) == 0 or any(c.dtype.kind not in "biuf" for c in columns):
        return None
    return kind, names, list(columns)


def _draw(X: Any, n_probes: int, rng: np.random.Generator) -> dict[str, Any] | None:
    found = _columns(X)
    if found is None:
        return None
    kind, names, columns = found
    n = len(columns[0])
    subset = np.sort(rng.choice(n, SAMPLE, replace=False)) if n > SAMPLE else slice(None)
    rows: list[list[Any]] = []
    for _ in range(DRAWS):
        for candidate in _candidates([column[subset] for column in columns], n_probes, rng):
            row = [column.dtype.type(v) for column, v in zip(columns, candidate, strict=True)]
            if len(rows) < n_probes and not _is_record(row, columns):
                rows.append([v.item() for v in row])
        if len(rows) == n_probes:
            break
    if not rows:
        return None
    dtypes = [str(column.dtype) for column in columns]
    return {"kind": kind, "columns": names, "dtypes": dtypes, "rows": rows}


def _candidates(pools: Sequence[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` rows, each feature drawn on its own: a float column's quantile at a uniform
    random level, another column's value at a random row."""
    out = np.empty((count, len(pools)))
    for j, pool in enumerate(pools):
        if pool.dtype.kind == "f":
            out[:, j] = np.quantile(pool, rng.random(count))
        else:
            out[:, j] = pool[rng.integers(len(pool), size=count)]
    return out


def _is_record(row: Sequence[np.generic], columns: Sequence[np.ndarray]) -> bool:
    """Whether a calibration row holds every value of ``row``."""
    rows = np.flatnonzero(columns[0] == row[0])
    for value, column in zip(row[1:], columns[1:], strict=True):
        if rows.size == 0:
            break
        rows = rows[column[rows] == value]
    return rows.size > 0
