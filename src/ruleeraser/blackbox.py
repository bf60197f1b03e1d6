"""The deployed model as seen from outside: ``x -> p(y|x)``, queried in batches and counted.

Every adapter returns float64 probabilities of shape ``(n, k)``, checked row by row. A model
with one sigmoid output (a single probability ``p`` per row) is read as the two-class
distribution ``[1 - p, p]`` (the paper's Fig. 10).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from ruleeraser.inputs import n_rows, take_rows, to_tensor
from ruleeraser.params import Interval, Options, validate_params

Output = Literal["proba", "logits"]

#: Rows may sum to 1 within this tolerance (float32 models are off by about 1e-7 per class).
SUM_TOLERANCE = 1e-3
#: Rows per model call, unless told otherwise.
DEFAULT_QUERY_BATCH = 4096


def check_probabilities(proba: Any, n_expected: int | None = None) -> np.ndarray:
    """Validate a model's output and return it as float64 ``(n, k)`` probabilities.

    A 1-D array (or one column) is a sigmoid output and becomes ``[1 - p, p]``. Raises
    ``ValueError`` naming the first offending rows for NaN/inf, negative values, values above
    1, or rows that do not sum to 1; rows within tolerance are renormalised exactly.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(
            f"model output must be (n, k>=2) probabilities or (n,) sigmoid, got {p.shape}"
        )
    if n_expected is not None and p.shape[0] != n_expected:
        raise ValueError(f"model returned {p.shape[0]} rows for {n_expected} inputs")
    _fail_rows(~np.isfinite(p).all(axis=1), "NaN or infinite probabilities")
    _fail_rows((p < 0).any(axis=1), "negative probabilities")
    _fail_rows((p > 1).any(axis=1), "probabilities above 1")
    sums = p.sum(axis=1)
    _fail_rows(np.abs(sums - 1.0) > SUM_TOLERANCE, "rows that do not sum to 1")
    return p / sums[:, None]


def _fail_rows(bad: np.ndarray, what: str) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (" ..." if rows.size > 10 else "")
        raise ValueError(f"model returned {what} in {rows.size} row(s): {shown}")


class BlackBox:
    """A deployed model reachable only through its outputs.

    Parameters
    ----------
    fn: maps a batch of inputs to probabilities (``output="proba"``) or to logits
        (``output="logits"``: softmax over k columns, sigmoid for one column).
    output: ``"proba"`` or ``"logits"``.
    query_batch_size: rows per call of ``fn``.
    classes: the labels of the output columns, if known.
    batch_size: deprecated name of ``query_batch_size``.

    Attributes
    ----------
    n_queries: rows sent to the model so far.

    Example
    -------
    >>> box = BlackBox(lambda x: [[0.25, 0.75]] * len(x))
    >>> box([[1.0], [2.0]])
    array([[0.25, 0.75],
           [0.25, 0.75]])
    >>> box.n_queries
    2
    """

    _parameter_constraints: dict[str, list] = {
        "output": [Options(("proba", "logits"))],
        "query_batch_size": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        output: Output = "proba",
        query_batch_size: int = DEFAULT_QUERY_BATCH,
        classes: Any = None,
        batch_size: int | None = None,
    ) -> None:
        query_batch_size = _renamed_batch_size(batch_size, query_batch_size)
        validate_params(
            {"output": output, "query_batch_size": query_batch_size}, self._parameter_constraints
        )
        self.fn = fn
        self.output = output
        self.query_batch_size = query_batch_size
        self.classes = None if classes is None else np.asarray(classes)
        self.n_queries = 0

    def __call__(self, X: Any) -> np.ndarray:
        """The model's probabilities for the rows of ``X``, float64 ``(n, k)``."""
        n = n_rows(X)
        if n == 0:
            raise ValueError("no rows to query")
        parts = []
        step = self.query_batch_size
        for start in range(0, n, step):
            batch = take_rows(X, slice(start, min(start + step, n)))
            out = _to_numpy(self.fn(batch))
            if self.output == "logits":
                out = _logits_to_proba(out)
            self.n_queries += n_rows(batch)
            parts.append(check_probabilities(out, n_rows(batch)))
        return np.concatenate(parts)


def _to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().double().numpy()
    return np.asarray(out, dtype=np.float64)


def _logits_to_proba(logits: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    if t.ndim == 1 or t.shape[-1] == 1:
        return torch.sigmoid(t.reshape(-1)).numpy()
    return torch.softmax(t, dim=1).numpy()


class _TorchCall:
    """Run a torch module without gradients on the batch, as the module's dtype and device."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    @torch.no_grad()
    def __call__(self, batch: Any) -> torch.Tensor:
        param = next(self.module.parameters(), None)
        x = to_tensor(batch)
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype)
        self.module.eval()
        return self.module(x)


def _renamed_batch_size(batch_size: int | None, query_batch_size: int) -> int:
    if batch_size is None:
        return query_batch_size
    warnings.warn(
        "batch_size is deprecated and will be removed in 0.3: use query_batch_size (rows per "
        "model call)",
        DeprecationWarning,
        stacklevel=3,
    )
    return batch_size


def as_blackbox(
    model: Any,
    *,
    output: Output | None = None,
    query_batch_size: int = DEFAULT_QUERY_BATCH,
    batch_size: int | None = None,
) -> BlackBox:
    """Wrap a deployed model as a :class:`BlackBox`.

    Accepts a ``BlackBox`` (returned as is, with its own settings), a ``torch.nn.Module``
    (logits by default; pass ``output="proba"`` if it already ends in softmax/sigmoid), a
    scikit-learn style classifier (its ``predict_proba`` and ``classes_``), or any callable
    returning probabilities (``output="logits"`` if it returns logits).
    ``query_batch_size``: rows per model call (``batch_size``: its deprecated name).

    Example
    -------
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = LogisticRegression().fit([[0.0], [1.0]], ["no", "yes"])
    >>> box = as_blackbox(clf)
    >>> box.classes.tolist(), box([[0.0], [1.0]]).shape
    (['no', 'yes'], (2, 2))
    """
    if isinstance(model, BlackBox):
        return model
    options = {"query_batch_size": _renamed_batch_size(batch_size, query_batch_size)}
    if isinstance(model, torch.nn.Module):
        return BlackBox(_TorchCall(model), output=output or "logits", **options)
    if hasattr(model, "predict_proba"):
        return BlackBox(
            model.predict_proba,
            output=output or "proba",
            classes=getattr(model, "classes_", None),
            **options,
        )
    if callable(model):
        return BlackBox(model, output=output or "proba", **options)
    raise TypeError(
        f"cannot use {type(model).__name__} as a black box: pass a callable, a torch module, "
        "or an object with predict_proba"
    )
