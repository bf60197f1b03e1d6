"""The deployed model as seen from outside: ``x -> p(y|x)``, queried in batches and counted.

Every adapter returns float64 probabilities of shape ``(n, k)``, checked row by row. A model
with one sigmoid output (a single probability ``p`` per row) is read as the two-class
distribution ``[1 - p, p]`` (the paper's Fig. 10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from ruleeraser._data import n_rows, take_rows, to_tensor

Output = Literal["proba", "logits"]

#: Rows may sum to 1 within this tolerance (float32 models are off by about 1e-7 per class).
SUM_TOLERANCE = 1e-3


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

    ``fn`` maps a batch of inputs to probabilities (``output="proba"``) or to logits
    (``output="logits"``: softmax over k columns, sigmoid for one column). ``n_queries``
    counts the rows sent to the model.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        output: Output = "proba",
        batch_size: int = 4096,
        classes: Any = None,
    ) -> None:
        if output not in ("proba", "logits"):
            raise ValueError(f"output must be 'proba' or 'logits', got {output!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.fn = fn
        self.output = output
        self.batch_size = batch_size
        self.classes = None if classes is None else np.asarray(classes)
        self.n_queries = 0

    def __call__(self, X: Any) -> np.ndarray:
        n = n_rows(X)
        if n == 0:
            raise ValueError("no rows to query")
        parts = []
        for start in range(0, n, self.batch_size):
            batch = take_rows(X, slice(start, min(start + self.batch_size, n)))
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


def as_blackbox(
    model: Any,
    *,
    output: Output | None = None,
    batch_size: int = 4096,
) -> BlackBox:
    """Wrap a deployed model as a :class:`BlackBox`.

    Accepts a ``BlackBox`` (returned as is), a ``torch.nn.Module`` (logits by default; pass
    ``output="proba"`` if it already ends in softmax/sigmoid), a scikit-learn style classifier
    (its ``predict_proba`` and ``classes_``), or any callable returning probabilities
    (``output="logits"`` if it returns logits).
    """
    if isinstance(model, BlackBox):
        return model
    if isinstance(model, torch.nn.Module):
        return BlackBox(_TorchCall(model), output=output or "logits", batch_size=batch_size)
    if hasattr(model, "predict_proba"):
        return BlackBox(
            model.predict_proba,
            output=output or "proba",
            batch_size=batch_size,
            classes=getattr(model, "classes_", None),
        )
    if callable(model):
        return BlackBox(model, output=output or "proba", batch_size=batch_size)
    raise TypeError(
        f"cannot use {type(model).__name__} as a black box: pass a callable, a torch module, "
        "or an object with predict_proba"
    )
