"""The post-processing peers a user would pick instead of the Eraser today, from their own
libraries (the ``bench`` extra): OxonFair and error-parity.

- ``oxonfair-inferred``: OxonFair (Delaney et al., NeurIPS 2024, ``oxonfair`` on PyPI) with
  *inferred* groups: a group classifier (scikit-learn's ``HistGradientBoostingClassifier``)
  trained on the calibration rows' bias labels, and per-inferred-group thresholds chosen on
  the same rows. Like the Eraser it needs no bias label at test time.
- ``oxonfair``: OxonFair with the true groups (test-time bias labels).
- ``error-parity``: Cruz & Hardt (ICLR 2024), ``error-parity`` on PyPI:
  ``RelaxedThresholdOptimizer``, randomised group thresholds on the groups' ROC hulls (test-time
  bias labels).

All three maximise balanced accuracy (the class-balanced loss the deployed models are trained
with; with OxonFair's usual objective, accuracy, it predicts a single class on LSAC and
CelebA) under an equalized-odds bound, the *tolerance*: OxonFair's ``equalized_odds`` (the mean
of the true-positive and true-negative rate gaps, Eq. 20 for two groups) at most ``tolerance``,
error-parity's largest rate gap at most ``tolerance``. Each predictor's
:meth:`~OxonFairPredictor.with_tolerance` gives the same method at another bound (OxonFair
picks another point of the frontier it computed once; error-parity solves again), which draws
their tolerance curves in ``reproduce frontier``. Binary targets only
(:class:`~ruleeraser.experiments.baselines.common.NotApplicableError` otherwise).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ruleeraser.experiments.baselines.common import Deployed, NotApplicableError, Predictor
from ruleeraser.experiments.deployed import predict_proba

__all__ = [
    "DEFAULT_TOLERANCE",
    "ErrorParityPredictor",
    "OxonFairPredictor",
    "TolerancePredictor",
    "fit_error_parity",
    "fit_oxonfair",
    "fit_oxonfair_inferred",
]

#: The equalized-odds bound of the peers' Table IV rows (2 points).
DEFAULT_TOLERANCE = 0.02


class TolerancePredictor(Predictor, Protocol):
    """A fitted peer whose fairness bound can be moved: ``with_tolerance(t)`` is the same
    method fitted on the same calibration rows with equalized-odds bound ``t``."""

    tolerance: float

    def with_tolerance(self, tolerance: float) -> TolerancePredictor: ...


def _require(module: str, install: str) -> None:
    """``ModuleNotFoundError`` naming the install command when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"{module} is not installed: {install}")


def binary_proba(model: Deployed, X: np.ndarray, method: str) -> np.ndarray:
    """The deployed model's probabilities ``(n, 2)`` as float64 (fairlearn 0.15 with pandas 3
    fails on float32; the peers get the same), or :class:`NotApplicableError` on k > 2
    classes."""
    proba = predict_proba(model, X).astype(np.float64)
    if proba.shape[1] != 2:
        raise NotApplicableError(
            f"{method} post-processes a binary classifier; the model has {proba.shape[1]} classes"
        )
    return proba


def _check_bias(bias: np.ndarray | None, n: int, method: str) -> np.ndarray:
    if bias is None:
        raise ValueError(
            f"{method} needs the bias label of every row it predicts: pass predict(X, bias=...)"
        )
    bias = np.asarray(bias)
    if bias.shape != (n,):
        raise ValueError(f"{method}: bias has shape {bias.shape}, expected ({n},)")
    return bias


@dataclass
class OxonFairPredictor:
    """OxonFair's ``FairPredictor``, fitted (with inferred or true groups).

    Attributes
    ----------
    fair: the fitted ``oxonfair.FairPredictor``.
    tolerance: its equalized-odds bound.
    needs_test_bias: False with inferred groups, True with the true ones.
    """

    fair: Any
    tolerance: float
    needs_test_bias: bool

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Class indices; ``bias`` is read only with true groups."""
        if not self.needs_test_bias:
            return np.asarray(self.fair.predict(X), dtype=np.int64)
        bias = _check_bias(bias, len(X), "OxonFair (true groups)")
        # OxonFair's predict takes the groups in a dict that must also hold a target (unread).
        data = {"data": X, "target": np.zeros(len(X)), "groups": bias}
        return np.asarray(self.fair.predict(data), dtype=np.int64)

    def with_tolerance(self, tolerance: float) -> OxonFairPredictor:
        """The point of the same frontier with equalized odds at most ``tolerance``."""
        from oxonfair import group_metrics

        fair = copy.copy(self.fair)  # fit() replaces the thresholds; the frontier is shared
        fair.fit(
            group_metrics.balanced_accuracy, group_metrics.equalized_odds, tolerance,
            recompute=False,
        )  # fmt: skip
        return OxonFairPredictor(fair, tolerance, self.needs_test_bias)


def _oxonfair(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    inferred: bool,
    tolerance: float,
) -> OxonFairPredictor:
    _require("oxonfair", "pip install 'rule-eraser[bench]'")
    from oxonfair import FairPredictor, group_metrics

    method = "OxonFair"
    binary_proba(model, X[:1], method)

    def scores(data: np.ndarray) -> np.ndarray:
        return binary_proba(model, np.asarray(data, dtype=np.float32), method)

    y, bias = np.asarray(y), np.asarray(bias)
    if inferred:
        from sklearn.ensemble import HistGradientBoostingClassifier

        groups = HistGradientBoostingClassifier(random_state=seed).fit(X, bias)
        # threshold=0: oxonfair 0.3's default (2/3) adds an "uncertain" inferred group, and its
        # grid search raises "truth value of an array is ambiguous" when no row falls in it.
        fair = FairPredictor(
            scores, {"data": X, "target": y}, groups=bias, inferred_groups=groups, threshold=0
        )
    else:
        fair = FairPredictor(scores, {"data": X, "target": y, "groups": bias}, threshold=0)
    fair.fit(group_metrics.balanced_accuracy, group_metrics.equalized_odds, tolerance)
    return OxonFairPredictor(fair, tolerance, needs_test_bias=not inferred)


def fit_oxonfair_inferred(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> OxonFairPredictor:
    """OxonFair with groups inferred by a classifier trained on the calibration rows.

    Parameters
    ----------
    model: the deployed binary model.
    X, y, bias: the calibration rows, their targets and bias labels (class indices).
    seed: seed of the group classifier.
    tolerance: the equalized-odds bound.

    Returns
    -------
    The :class:`OxonFairPredictor` (no bias label needed at test time).
    """
    return _oxonfair(model, X, y, bias, seed=seed, inferred=True, tolerance=tolerance)


def fit_oxonfair(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> OxonFairPredictor:
    """OxonFair with the true groups (each test row's bias label).

    Parameters and returns as :func:`fit_oxonfair_inferred` (``seed`` unused: OxonFair's
    thresholds are deterministic).
    """
    return _oxonfair(model, X, y, bias, seed=seed, inferred=False, tolerance=tolerance)


@dataclass
class ErrorParityPredictor:
    """error-parity's ``RelaxedThresholdOptimizer``, fitted.

    Attributes
    ----------
    optimizer: the fitted ``error_parity.RelaxedThresholdOptimizer``.
    tolerance: its bound on the largest group rate gap.
    scores, y, bias: the calibration rows' positive-class scores, targets and bias labels
        (kept to solve again at another tolerance).
    """

    optimizer: Any
    tolerance: float
    scores: np.ndarray
    y: np.ndarray
    bias: np.ndarray
    needs_test_bias: bool = True

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Class indices (randomised thresholds, seeded: a call repeats)."""
        bias = _check_bias(bias, len(X), "error-parity")
        # Its randomised classifiers advance their generators with every call, and error-parity
        # 0.3.12 draws a point inside a group's ROC hull from numpy's global generator: each
        # call starts from the fitted state, the global generator seeded (the caller's state
        # put back), so that a call repeats.
        optimizer = copy.deepcopy(self.optimizer)
        state = np.random.get_state()
        np.random.seed(optimizer.seed)
        try:
            return np.asarray(optimizer.predict(X, group=bias), dtype=np.int64)
        finally:
            np.random.set_state(state)

    def with_tolerance(self, tolerance: float) -> ErrorParityPredictor:
        """The optimizer solved again with rate gaps at most ``tolerance``."""
        optimizer = copy.copy(self.optimizer)
        optimizer.tolerance = tolerance
        optimizer.fit(None, self.y, group=self.bias, y_scores=self.scores)
        return ErrorParityPredictor(optimizer, tolerance, self.scores, self.y, self.bias)


def fit_error_parity(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ErrorParityPredictor:
    """error-parity's relaxed equalized-odds thresholds fitted on the calibration rows.

    The false-positive and false-negative costs are the calibration set's class shares
    (``p(y=1)`` and ``p(y=0)``), so that the cost it minimises is the balanced error.

    Parameters
    ----------
    model: the deployed binary model.
    X, y, bias: the calibration rows, their targets and bias labels (class indices; the bias
        values must be 0..m-1, as error-parity numbers groups).
    seed: seed of the randomised thresholds.
    tolerance: the bound on the largest true- or false-positive rate gap between groups.

    Returns
    -------
    The :class:`ErrorParityPredictor` (needs each test row's bias label).
    """
    _require(
        "error_parity",
        "pip install --no-deps error-parity==0.3.12 (it pins numpy<2 but runs on numpy 2; its "
        "dependencies come with rule-eraser[bench])",
    )
    from error_parity import RelaxedThresholdOptimizer

    method = "error-parity"
    scores = binary_proba(model, X, method)[:, 1]
    y, bias = np.asarray(y, dtype=np.int64), np.asarray(bias, dtype=np.int64)
    positive = float(y.mean())

    def score(data: np.ndarray) -> np.ndarray:
        return binary_proba(model, np.asarray(data, dtype=np.float32), method)[:, 1]

    optimizer = RelaxedThresholdOptimizer(
        predictor=score, constraint="equalized_odds", tolerance=tolerance,
        false_pos_cost=positive, false_neg_cost=1.0 - positive, seed=seed,
    )  # fmt: skip
    optimizer.fit(X, y, group=bias, y_scores=scores)
    return ErrorParityPredictor(optimizer, tolerance, scores, y, bias)
