"""Uniform access to the input types users pass: numpy arrays, pandas objects, torch tensors.

Nothing is read silently wrong: labels with missing values or mixed types, a label Series
whose index does not match ``X``'s, and DataFrame columns other than those fitted on are
refused by name.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

#: A bias column with more distinct values than this looks continuous (it should be binned).
MAX_BIAS_VALUES = 50


def n_rows(X: Any) -> int:
    """Number of samples in ``X``."""
    if hasattr(X, "shape") and len(X.shape) > 0:
        return int(X.shape[0])
    return len(X)


def take_rows(X: Any, index: slice | np.ndarray) -> Any:
    """Rows ``index`` of ``X``, keeping its type (positional for pandas)."""
    if hasattr(X, "iloc"):
        return X.iloc[index]
    if isinstance(X, torch.Tensor) and isinstance(index, np.ndarray):
        return X[torch.from_numpy(index)]
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    return X[index]


def to_tensor(X: Any) -> torch.Tensor:
    """``X`` as a float32 tensor for the patches (pandas, numpy and tensors of any dtype)."""
    if isinstance(X, torch.Tensor):
        return X if X.dtype == torch.float32 else X.float()
    if hasattr(X, "to_numpy"):
        dtypes = list(X.dtypes) if hasattr(X, "dtypes") else [X.dtype]
        numeric = all(getattr(d, "kind", "O") in "biuf" for d in dtypes)
        # pandas' nullable and Arrow-backed numbers (Ray Data, pandas 3) come out as object
        # arrays unless a float type is asked for
        X = X.to_numpy(dtype=np.float32, na_value=np.nan) if numeric else X.to_numpy()
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"inputs must be numeric to feed the patch; got dtype {arr.dtype} "
            "(encode categorical columns first)"
        )
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def to_labels(values: Any, name: str) -> np.ndarray:
    """A 1-D numpy array of labels from a list, array, Series or tensor.

    Missing values (None, NaN, ``pd.NA``, NaT) and labels of mixed kinds (numbers and
    strings) raise ``ValueError`` / ``TypeError`` naming ``name`` and the first rows.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    missing = None
    if hasattr(values, "isna"):  # pandas: its own notion of missing
        missing = np.asarray(values.isna(), dtype=bool)
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if missing is None:
        missing = _missing(arr)
    if missing.any():
        raise ValueError(f"{name} contains NaN or missing values at {_rows(missing)}")
    if arr.dtype == object:
        _check_one_kind(arr, name)
    return arr


def _missing(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind in "mM":
        return np.isnat(arr)
    if arr.dtype != object:
        return np.zeros(len(arr), dtype=bool)
    return np.fromiter((_is_missing(v) for v in arr), dtype=bool, count=len(arr))


def _is_missing(value: Any) -> bool:
    """None, a float NaN, or pandas' NA (recognised without importing pandas)."""
    return (
        value is None
        or (isinstance(value, float) and value != value)
        or (type(value).__name__ == "NAType")
    )


def _check_one_kind(arr: np.ndarray, name: str) -> None:
    """Labels must be all numbers or all strings: ``np.unique`` cannot order a mix."""
    is_text = np.fromiter((isinstance(v, (str, bytes)) for v in arr), dtype=bool, count=len(arr))
    is_number = np.fromiter(
        (isinstance(v, (numbers.Number, np.generic)) for v in arr), dtype=bool, count=len(arr)
    )
    other = ~(is_text | is_number)
    if other.any():
        kind = type(arr[np.flatnonzero(other)[0]]).__name__
        raise TypeError(
            f"{name} holds {kind} values at {_rows(other)}; labels must be numbers or strings"
        )
    if is_text.any() and is_number.any():
        minority = is_text if is_text.sum() <= is_number.sum() else is_number
        raise TypeError(
            f"{name} mixes numbers and strings ({'strings' if minority is is_text else 'numbers'} "
            f"at {_rows(minority)}); use one kind of label"
        )


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(map(str, rows[:10])) + (" ..." if rows.size > 10 else "")
    return f"{rows.size} row(s): {shown}"


def align_to(X: Any, values: Any, name: str) -> Any:
    """``values`` in ``X``'s row order when both carry a pandas index.

    Indexes holding the same labels in another order are aligned; indexes that differ
    raise ``ValueError`` (matching by position would pair rows with other rows' labels).
    """
    if not (hasattr(X, "iloc") and hasattr(values, "iloc")):  # pandas on both sides
        return values
    index, other = X.index, values.index
    if index.equals(other):
        return values
    if index.is_unique and other.is_unique and len(index) == len(other) and index.isin(other).all():
        return values.loc[index]
    extra = [v for v in other[:1000] if v not in set(index[:1000])][:5]
    raise ValueError(
        f"{name} has a different index from X's (for example {extra or list(other[:5])}); "
        "align them, or pass plain arrays (.to_numpy()) to match rows by position"
    )


def check_feature_names(X: Any, fitted: Sequence[str] | None) -> None:
    """``ValueError`` when a DataFrame's columns are not, in order, those fitted on."""
    if fitted is None or not hasattr(X, "columns"):
        return
    given = [str(c) for c in X.columns]
    if given == list(fitted):
        return
    missing = [c for c in fitted if c not in given]
    unseen = [c for c in given if c not in fitted]
    if missing or unseen:
        raise ValueError(
            f"X's columns differ from those fitted on: missing {missing[:10]}, "
            f"not seen at fit {unseen[:10]}"
        )
    raise ValueError(
        f"X's columns are in another order than at fit: {given[:10]} instead of "
        f"{list(fitted)[:10]} (select them as X[eraser.feature_names_in_])"
    )


def fitted_columns(
    saved: Sequence[str] | None, given: Sequence[str] | None, option: str = "features"
) -> list[str]:
    """The columns an eraser was fitted on (``saved``, its ``feature_names_in_``), in order;
    ``given`` (the caller's ``option``) is needed for an eraser fitted on arrays, which has
    no column names, and must otherwise match. ``ValueError`` naming ``option`` if not.

    >>> fitted_columns(["age", "income"], None)
    ['age', 'income']
    >>> fitted_columns(None, ["a", "b"])
    ['a', 'b']
    """
    if saved is None:
        if not given:
            raise ValueError(
                f"this eraser was fitted without column names: pass {option}, the model's "
                "input columns in order"
            )
        return list(given)
    if given and list(given) != list(saved):
        raise ValueError(f"{option} {list(given)} differ from the eraser's features {list(saved)}")
    return list(saved)


def plain(value: Any) -> Any:
    """Numpy scalars and arrays as JSON values."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def bias_columns(bias: Any, X: Any) -> dict[str, np.ndarray]:
    """The bias argument as ``{name: 1-D labels}``, one entry per bias attribute, aligned to
    ``X``'s index where both are pandas objects."""
    if isinstance(bias, Mapping):
        items = [(str(k), v, f"bias {k}") for k, v in bias.items()]
    elif hasattr(bias, "columns"):
        bias = align_to(X, bias, "bias")
        items = [(str(c), bias[c], f"bias {c}") for c in bias.columns]
    else:
        if isinstance(bias, torch.Tensor):
            bias = bias.detach().cpu().numpy()
        arr = bias if hasattr(bias, "to_numpy") else np.asarray(bias)
        if getattr(arr, "ndim", 1) == 2:
            items = [(f"bias{j}", arr[:, j], f"bias column {j}") for j in range(arr.shape[1])]
        else:
            items = [(str(getattr(bias, "name", None) or "bias"), bias, "bias")]
    if not items:
        raise ValueError("bias has no column: pass at least one bias attribute")
    return {name: to_labels(align_to(X, v, what), what) for name, v, what in items}


def bias_levels(name: str, values: np.ndarray) -> np.ndarray:
    levels = np.unique(values)
    if levels.size < 2:
        raise ValueError(f"bias column {name!r} has a single value; nothing to erase")
    if levels.size > MAX_BIAS_VALUES:
        raise ValueError(
            f"bias column {name!r} has {levels.size} distinct values: it looks continuous; "
            f"bin it into at most {MAX_BIAS_VALUES} groups first (e.g. pandas.cut)"
        )
    return levels


def encode_labels(labels: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Indices of ``labels`` in ``classes``; unknown labels raise ``ValueError``."""
    lookup = {c.item() if hasattr(c, "item") else c: i for i, c in enumerate(classes)}
    try:
        return np.fromiter(
            (lookup[v.item() if hasattr(v, "item") else v] for v in labels),
            dtype=np.int64,
            count=len(labels),
        )
    except KeyError:
        unknown = sorted({plain(v) for v in labels if plain(v) not in lookup}, key=repr)
        raise ValueError(
            f"{name} has labels the model does not output: {unknown[:10]}; model classes: "
            f"{[plain(c) for c in classes][:10]} (pass classes=... to name the model's output "
            "columns; labels must match in type too, e.g. 1 and '1' differ)"
        ) from None
