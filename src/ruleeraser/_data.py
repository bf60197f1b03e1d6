"""Uniform access to the input types users pass: numpy arrays, pandas objects, torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


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
    """``X`` as a float32 tensor (pandas and numpy are converted; tensors keep their dtype)."""
    if isinstance(X, torch.Tensor):
        return X if X.is_floating_point() else X.float()
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"inputs must be numeric to feed the patch; got dtype {arr.dtype} "
            "(encode categorical columns first)"
        )
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def to_labels(values: Any, name: str) -> np.ndarray:
    """A 1-D numpy array of labels from a list, array, Series or tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr
