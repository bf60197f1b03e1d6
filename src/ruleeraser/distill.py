"""Rule distillation (paper Sec. IV-B, Eq. 17): the biased rule p(y|b) from model outputs.

For a calibration sample with target ``y`` and bias ``b``, the paper simulates editing away
its target features by averaging its log-output with those of samples that share its bias but
carry every other target class::

    q(x) = softmax( (log M(x) + sum_{i != y} mu[i, b]) / k )          (Eq. 17)

where ``mu[i, b]`` is the mean log-output over calibration samples with target ``i`` and bias
``b``. Averaging ``q``'s logits over a whole cell gives ``mean_i mu[i, b]`` whatever the
target, so each bias value has one *group rule* ``r_b = softmax(mean_i mu[i, b])``: the
class-balanced mean of the model's log-output on that bias group.

Empty cells. On strongly biased data some ``(i, b)`` have no calibration sample (36-41 of 100
for Table I's coloured MNIST, 85 without its copies). The paper is silent; we fill them from
an additive model in log space, ``mu[i, b] ~ t[i] + c[b]`` (target effect plus bias effect,
the decomposition Eq. 1 assumes), least-squares fitted to the cells that do have samples
(weighted by their counts) and solved with the minimum-norm solution when the observed cells
do not pin every effect down. An :class:`EmptyCellWarning` lists the cells filled.
``benchmarks/empty_cells.py`` measures this fill against others on coloured MNIST: it comes
within 3 points of a rule with no empty cell.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

#: Probabilities are clipped to this floor before the log.
EPS = 1e-6


class EmptyCellWarning(UserWarning):
    """Some (target, bias) cells of the calibration set have no sample."""


@dataclass(frozen=True)
class Distillation:
    """The distilled bias rule of one bias attribute.

    ``q``: per-sample rule (Eq. 17), ``(n, k)``. ``mu``: mean log-output per cell,
    ``(k, m, k)`` (target, bias, output class), empty cells filled. ``counts``: samples per
    cell, ``(k, m)``. ``group_rules``: ``r_b``, ``(m, k)``. ``empty_cells``: ``(i, b)`` index
    pairs that were filled.
    """

    q: np.ndarray
    mu: np.ndarray
    counts: np.ndarray
    group_rules: np.ndarray
    empty_cells: list[tuple[int, int]]


def log_proba(proba: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``log`` of probabilities clipped to ``[eps, 1]``: safe against zeros.

    >>> log_proba([[1.0, 0.0]], eps=1e-6).round(3)
    array([[  0.   , -13.816]])
    """
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), eps, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits.

    >>> softmax(np.array([[1000.0, 1000.0]]))
    array([[0.5, 0.5]])
    """
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cell_means(
    log_outputs: np.ndarray, y: np.ndarray, bias: np.ndarray, n_classes: int, n_bias: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean log-output ``mu[i, b]`` and sample count of every (target, bias) cell.

    Returns ``(mu, counts)`` of shapes ``(k, m, k_out)`` and ``(k, m)``; empty cells hold NaN.

    >>> mu, counts = cell_means(np.log([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1]),
    ...                         np.array([0, 0]), n_classes=2, n_bias=2)
    >>> counts
    array([[1., 0.],
           [1., 0.]])
    """
    k_out = log_outputs.shape[1]
    cell = y * n_bias + bias
    counts = np.bincount(cell, minlength=n_classes * n_bias).astype(np.float64)
    sums = np.zeros((n_classes * n_bias, k_out))
    np.add.at(sums, cell, log_outputs)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = sums / counts[:, None]
    return mu.reshape(n_classes, n_bias, k_out), counts.reshape(n_classes, n_bias)


def fill_empty_cells(mu: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Fill empty cells of ``mu`` with an additive fit ``t[i] + c[b]`` to the observed cells.

    ``mu``: ``(k, m, k_out)`` cell means (NaN where empty); ``counts``: ``(k, m)``, the
    least-squares weights. Returns a filled copy (``mu`` itself when no cell is empty).

    >>> mu = np.array([[[0.0], [1.0]], [[2.0], [np.nan]]])  # 2 targets x 2 biases, 1 output
    >>> fill_empty_cells(mu, np.array([[1, 1], [1, 0]]))[1, 1]  # target +2, bias +1
    array([3.])
    """
    k, m, _ = mu.shape
    seen = counts > 0
    if seen.all():
        return mu
    rows, cols = np.nonzero(seen)
    design = np.zeros((rows.size, k + m))
    design[np.arange(rows.size), rows] = 1.0
    design[np.arange(rows.size), k + cols] = 1.0
    w = np.sqrt(counts[rows, cols])[:, None]
    coef, *_ = np.linalg.lstsq(design * w, mu[rows, cols] * w, rcond=None)
    fitted = coef[:k, None, :] + coef[None, k:, :]
    return np.where(seen[:, :, None], mu, fitted)


def distill(
    log_outputs: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    n_classes: int,
    n_bias: int,
) -> Distillation:
    """Distil the bias rule (Eq. 17) from the model's log-outputs on the calibration set.

    Parameters
    ----------
    log_outputs: ``log M(x)`` on the calibration set, ``(n, k)``.
    y: target indices in ``[0, n_classes)``. bias: bias indices in ``[0, n_bias)``.
    n_classes, n_bias: k and m.

    Returns
    -------
    The :class:`Distillation` (per-sample rules, cell means, counts, group rules, empty
    cells). Vectorised: O(n k) work.

    Example
    -------
    >>> log_m = np.log([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.1, 0.9]])  # follows b
    >>> y, b = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    >>> d = distill(log_m, y, b, n_classes=2, n_bias=2)
    >>> d.group_rules.round(2)  # bias 0 pushes class 0, bias 1 class 1
    array([[0.79, 0.21],
           [0.21, 0.79]])
    """
    log_outputs = np.asarray(log_outputs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64)
    if log_outputs.ndim != 2 or log_outputs.shape[1] != n_classes:
        raise ValueError(f"log_outputs must be (n, {n_classes}), got {log_outputs.shape}")
    if not (len(log_outputs) == len(y) == len(bias)):
        raise ValueError(
            f"lengths differ: {len(log_outputs)} outputs, {len(y)} targets, {len(bias)} biases"
        )
    mu, counts = cell_means(log_outputs, y, bias, n_classes, n_bias)
    empty = [(int(i), int(b)) for i, b in zip(*np.nonzero(counts == 0), strict=True)]
    if empty:
        warnings.warn(
            f"{len(empty)} of {counts.size} (target, bias) cells have no calibration sample; "
            f"filled from an additive target + bias fit: {empty}",
            EmptyCellWarning,
            stacklevel=2,
        )
        mu = fill_empty_cells(mu, counts)
    total = mu.sum(axis=0)  # (m, k): sum over targets i of mu[i, b]
    others = total[bias] - mu[y, bias]  # sum_{i != y} mu[i, b] per sample
    q = softmax((log_outputs + others) / n_classes)
    group_rules = softmax(total / n_classes)
    return Distillation(q=q, mu=mu, counts=counts, group_rules=group_rules, empty_cells=empty)
