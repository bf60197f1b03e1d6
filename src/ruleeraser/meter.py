"""A bias meter that needs no labels: how far removing the bias rule moves the model.

From a fitted eraser and unlabelled rows: the share of decisions that change, and the mean
total-variation distance and KL divergence between the model's and the fair distributions.
A model that does not use the bias moves little; a biased one moves a lot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ruleeraser.eraser import Eraser


@dataclass(frozen=True)
class BiasMeter:
    """``changed``: % of rows whose decision changes; ``total_variation`` and ``kl``: mean
    distances between the original and fair distributions (KL(original || fair), nats)."""

    changed: float
    total_variation: float
    kl: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def meter(original: np.ndarray, fair: np.ndarray) -> BiasMeter:
    """Compare original and fair probabilities, both ``(n, k)``.

    >>> meter(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.4, 0.6], [0.3, 0.7]])).changed
    50.0
    """
    original = np.asarray(original, dtype=np.float64)
    fair = np.asarray(fair, dtype=np.float64)
    if original.shape != fair.shape:
        raise ValueError(f"shapes differ: {original.shape} and {fair.shape}")
    tiny = np.finfo(np.float64).tiny
    kl = (original * (np.log(original + tiny) - np.log(fair + tiny))).sum(axis=1)
    return BiasMeter(
        changed=float(100.0 * (original.argmax(1) != fair.argmax(1)).mean()),
        total_variation=float(0.5 * np.abs(original - fair).sum(axis=1).mean()),
        kl=float(kl.mean()),
        n=len(original),
    )


def bias_meter(eraser: Eraser, X: Any) -> BiasMeter:
    """Measure, on unlabelled rows ``X``, how much erasing moves the deployed model.

    Parameters
    ----------
    eraser: a fitted :class:`ruleeraser.Eraser`. X: unlabelled rows (one model query each).

    Returns
    -------
    A :class:`BiasMeter`: ``changed`` (% of decisions that change), ``total_variation``,
    ``kl`` and ``n``.
    """
    return meter(*eraser.model_and_fair_proba(X))
