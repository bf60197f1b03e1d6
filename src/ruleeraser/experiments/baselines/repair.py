"""Baselines that change the deployed model's weights: CARE (Sun et al. 2022, causality-based
neuron repair) and DFR (Kirichenko, Izmailov, Wilson 2023, last-layer retraining)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ruleeraser.experiments.baselines.common import (
    Deployed,
    as_tensor,
    fairness_gap,
    predict_classes,
    selection_loss,
)
from ruleeraser.metrics import group_accuracy

__all__ = ["RepairedPredictor", "balanced_subsample", "fit_care", "fit_dfr"]


@dataclass
class RepairedPredictor:
    """A repaired copy of the deployed model (its weights changed)."""

    model: Deployed
    needs_test_bias: ClassVar[bool] = False

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Class indices; ``bias`` is unused."""
        return predict_classes(self.model, X)


def _pso(
    objective: Callable[[np.ndarray], float],
    dim: int,
    bounds: tuple[float, float],
    start: np.ndarray,
    rng: np.random.Generator,
    *,
    particles: int = 20,
    iterations: int = 40,
    inertia: float = 0.7,
    pull: float = 1.5,
) -> np.ndarray:
    """Particle swarm optimisation (Kennedy & Eberhart), one particle starting at ``start``."""
    lo, hi = bounds
    pos = rng.uniform(lo, hi, (particles, dim))
    pos[0] = start
    vel = np.zeros_like(pos)
    best_pos, best_val = pos.copy(), np.array([objective(p) for p in pos])
    for _ in range(iterations):
        g = best_pos[best_val.argmin()]
        r1, r2 = rng.random((2, particles, dim))
        vel = inertia * vel + pull * r1 * (best_pos - pos) + pull * r2 * (g - pos)
        pos = np.clip(pos + vel, lo, hi)
        val = np.array([objective(p) for p in pos])
        better = val < best_val
        best_pos[better], best_val[better] = pos[better], val[better]
    return best_pos[best_val.argmin()]


def fit_care(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    n_neurons: int = 5,
    n_values: int = 10,
    bounds: tuple[float, float] = (-1.0, 2.0),
) -> RepairedPredictor:
    """CARE (Sun et al. 2022): causality-based fault localisation, then a PSO repair.

    Localisation: for each neuron i of the last hidden layer, intervene ``do(h_i = v)`` for
    ``n_values`` values v spanning its range on the calibration set and measure the model's
    fairness gap (Eq. 20 on the probability of the true class); the neuron's causal effect
    is the mean absolute deviation of the gap from its average over the interventions
    (CARE's ACE against the interventional baseline). Repair: the ``n_neurons`` most
    effective neurons get a factor on their outgoing weights in ``head``, searched in
    ``bounds`` by particle swarm optimisation (as the paper) to minimise the fairness gap
    of the hard predictions plus their balanced error on the calibration set (the paper
    weighs unfairness against accuracy alike); one particle starts at the unrepaired model.
    Returns a repaired copy.
    """
    repaired = copy.deepcopy(model).eval()
    y, bias = np.asarray(y), np.asarray(bias)
    with torch.no_grad():
        h = repaired.embed(as_tensor(X))
        W, b0 = repaired.head.weight.clone(), repaired.head.bias.clone()
    rows = torch.arange(len(y))
    yt = torch.as_tensor(y).long()

    def soft_gap(hh: torch.Tensor) -> float:
        p = torch.softmax(hh @ W.T + b0, dim=1)[rows, yt].numpy()
        return fairness_gap(p, y, bias)

    effects = np.zeros(h.shape[1])
    for i in range(h.shape[1]):
        values = np.linspace(float(h[:, i].min()), float(h[:, i].max()), n_values)
        gaps = []
        for v in values:
            hh = h.clone()
            hh[:, i] = v
            gaps.append(soft_gap(hh))
        effects[i] = np.abs(np.array(gaps) - np.mean(gaps)).mean()
    neurons = np.argsort(-effects, kind="stable")[:n_neurons]

    def objective(factors: np.ndarray) -> float:
        w = W.clone()
        w[:, neurons] *= torch.as_tensor(factors, dtype=w.dtype)
        return selection_loss((h @ w.T + b0).argmax(1).numpy(), y, bias)

    rng = np.random.default_rng(seed)
    factors = _pso(objective, len(neurons), bounds, np.ones(len(neurons)), rng)
    with torch.no_grad():
        repaired.head.weight[:, neurons] *= torch.as_tensor(factors, dtype=W.dtype)
    return RepairedPredictor(repaired)


def balanced_subsample(y: np.ndarray, bias: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices with every (y, b) group present cut to the smallest group's size
    (without replacement), sorted."""
    y, bias = np.asarray(y), np.asarray(bias)
    groups, cell = np.unique(np.stack([y, bias], axis=1), axis=0, return_inverse=True)
    cell = cell.ravel()
    size = np.bincount(cell).min()
    picks = [rng.choice(np.flatnonzero(cell == g), size, replace=False) for g in range(len(groups))]
    return np.sort(np.concatenate(picks))


def _stratified_halves(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    first = np.zeros(len(cells), dtype=bool)
    for c in np.unique(cells):
        idx = rng.permutation(np.flatnonzero(cells == c))
        first[idx[: len(idx) // 2]] = True
    return first


def fit_dfr(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    cs: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01),
    n_subsets: int = 10,
) -> RepairedPredictor:
    """DFR (Kirichenko et al. 2023): retrain the last layer on group-balanced held-out data.

    The frozen representation h of the calibration set is standardised; a logistic
    regression (L2, class-balanced, lbfgs) is fitted on group-balanced subsamples (every
    (y, b) group cut to the smallest one). C is chosen from the paper's grid by worst-group
    accuracy, training on a balanced subsample of one half of the calibration set and
    scoring the other half; then the coefficients of ``n_subsets`` fits on balanced
    subsamples of the whole set are averaged (as the paper) and replace ``head`` in a copy
    of the model. The paper's L1 penalty is replaced by L2 (the penalty stable across
    scikit-learn versions).
    """
    repaired = copy.deepcopy(model).eval()
    y, bias = np.asarray(y), np.asarray(bias)
    with torch.no_grad():
        h = repaired.embed(as_tensor(X)).double().numpy()
    mean, std = h.mean(0), h.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    z = (h - mean) / std
    k = repaired.head.out_features
    rng = np.random.default_rng(seed)

    def fit(rows: np.ndarray, c: float) -> LogisticRegression:
        lr = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
        return lr.fit(z[rows], y[rows])

    first = _stratified_halves(y * (bias.max() + 1) + bias, rng)
    half, other = np.flatnonzero(first), np.flatnonzero(~first)
    worst = []
    for c in cs:
        lr = fit(half[balanced_subsample(y[half], bias[half], rng)], c)
        worst.append(group_accuracy(y[other], lr.predict(z[other]), bias[other]).worst)
    best_c = cs[int(np.argmax(worst))]
    coef, intercept = np.zeros((k, z.shape[1])), np.zeros(k)
    for _ in range(n_subsets):
        lr = fit(balanced_subsample(y, bias, rng), best_c)
        if k == 2:  # one logit difference: class 1 against class 0
            coef[1] += lr.coef_[0] / n_subsets
            intercept[1] += lr.intercept_[0] / n_subsets
        else:
            coef[lr.classes_] += lr.coef_ / n_subsets
            intercept[lr.classes_] += lr.intercept_ / n_subsets
    with torch.no_grad():
        repaired.head.weight.copy_(torch.as_tensor(coef / std))
        repaired.head.bias.copy_(torch.as_tensor(intercept - (coef / std) @ mean))
    return RepairedPredictor(repaired)
