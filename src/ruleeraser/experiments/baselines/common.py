"""What every baseline shares: the predictor protocol, the error for a task a method cannot
serve, and the helpers on the deployed model and the fairness gap."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "Deployed",
    "FitFn",
    "NotApplicableError",
    "Predictor",
    "as_tensor",
    "class_weight",
    "fairness_gap",
    "frozen_copy",
    "predict_classes",
    "selection_loss",
]

#: A deployed model of :mod:`ruleeraser.experiments.deployed`: a :class:`TabularNet` or an
#: image net of :mod:`ruleeraser.nets`, both with ``embed(x)`` and a linear ``head``.
Deployed = nn.Module


class NotApplicableError(ValueError):
    """The baseline cannot serve this task (e.g. a score post-processor on k > 2 classes)."""


class Predictor(Protocol):
    """A fitted baseline: ``predict(X, bias=None)`` -> class indices."""

    needs_test_bias: bool

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray: ...


FitFn = Callable[..., Predictor]


def as_tensor(X: Any) -> torch.Tensor:
    """``X`` as a float32 tensor."""
    return torch.as_tensor(np.asarray(X, dtype=np.float32))


def frozen_copy(model: Deployed) -> Deployed:
    """A copy of the deployed model in eval mode with no trainable parameter."""
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


def class_weight(y: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse class frequency, as the deployed models were trained."""
    counts = torch.bincount(y, minlength=k).float()
    return torch.where(counts > 0, len(y) / (k * counts), torch.zeros_like(counts))


@torch.no_grad()
def predict_classes(
    model: nn.Module, X: np.ndarray, transform: nn.Module | None = None
) -> np.ndarray:
    """The class indices ``model(transform(X)).argmax(1)``, in chunks of 8,192 rows.

    Example
    -------
    >>> predict_classes(nn.Linear(2, 3), np.zeros((4, 2))).shape
    (4,)
    """
    out = []
    for chunk in as_tensor(X).split(8192):
        out.append(model(chunk if transform is None else transform(chunk)).argmax(1))
    return torch.cat(out).numpy()


def fairness_gap(correct: np.ndarray, y: np.ndarray, bias: np.ndarray) -> float:
    """EqualOdds of a (soft) correctness score: per class, max - min over bias groups of
    its mean, averaged over classes (Eq. 20, in [0, 1]).

    Example
    -------
    >>> y, bias = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    >>> fairness_gap(np.array([1.0, 0.0, 1.0, 1.0]), y, bias)  # class 0: 1 - 0; class 1: 0
    0.5
    """
    gaps = []
    for c in np.unique(y):
        means = [correct[(y == c) & (bias == b)].mean() for b in np.unique(bias[y == c])]
        if len(means) >= 2:
            gaps.append(max(means) - min(means))
    return float(np.mean(gaps)) if gaps else 0.0


def selection_loss(pred: np.ndarray, y: np.ndarray, bias: np.ndarray) -> float:
    """Fairness gap (Eq. 20, in [0, 1]) plus balanced error of hard predictions: what CARE's
    search and CalEqualodds' choice of costs minimise on the calibration set.

    Example
    -------
    >>> y, bias = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    >>> selection_loss(y, y, bias)  # every prediction right: no gap, no error
    0.0
    """
    correct = (pred == y).astype(float)
    balanced = np.mean([correct[y == c].mean() for c in np.unique(y)])
    return float(fairness_gap(correct, y, bias) + 1.0 - balanced)
