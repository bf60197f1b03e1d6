"""Score post-processing baselines for binary classifiers, which need each test row's bias
label: Equalodds (Hardt, Price, Srebro 2016, through fairlearn's ``ThresholdOptimizer``) and
CalEqualodds (Pleiss et al. 2017). On a multi-class model both raise
:class:`~ruleeraser.experiments.baselines.common.NotApplicableError` (the paper's "-")."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ruleeraser.experiments.baselines.common import (
    Deployed,
    NotApplicableError,
    selection_loss,
)
from ruleeraser.experiments.deployed import predict_proba

__all__ = [
    "CalEqualoddsPredictor",
    "CalibratedEqualodds",
    "EqualoddsPredictor",
    "fit_calequalodds",
    "fit_equalodds",
]


def _binary_scores(model: Deployed, X: np.ndarray, method: str) -> np.ndarray:
    proba = predict_proba(model, X)
    if proba.shape[1] != 2:
        raise NotApplicableError(
            f"{method} post-processes the score of a binary classifier; the model has "
            f"{proba.shape[1]} classes"
        )
    return proba[:, 1]


def _test_bias(bias: np.ndarray | None, n: int, method: str) -> np.ndarray:
    if bias is None:
        raise ValueError(
            f"{method} needs the bias label of every row it predicts: pass predict(X, bias=...)"
        )
    bias = np.asarray(bias)
    if bias.shape != (n,):
        raise ValueError(f"{method}: bias has shape {bias.shape}, expected ({n},)")
    return bias


class _ModelScores(BaseEstimator):
    """The deployed model as a prefitted scikit-learn classifier with float64 probabilities
    (fairlearn 0.15 with pandas 3 fails on float32)."""

    def __init__(self, model: Deployed) -> None:
        self.model = model

    def fit(self, X: Any, y: Any) -> _ModelScores:
        raise RuntimeError("the deployed model is prefitted and never refitted")

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def predict_proba(self, X: Any) -> np.ndarray:
        return predict_proba(self.model, np.asarray(X, dtype=np.float32)).astype(np.float64)


@dataclass
class EqualoddsPredictor:
    """Hardt et al.'s group-specific randomised thresholds (fairlearn's ThresholdOptimizer)."""

    optimizer: Any
    seed: int
    needs_test_bias: ClassVar[bool] = True

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        bias = _test_bias(bias, len(X), "Equalodds")
        pred = self.optimizer.predict(X, sensitive_features=bias, random_state=self.seed)
        return np.asarray(pred, dtype=np.int64)


def fit_equalodds(
    model: Deployed, X: np.ndarray, y: np.ndarray, bias: np.ndarray, *, seed: int
) -> EqualoddsPredictor:
    """Equalized-odds post-processing (Hardt et al. 2016) on the calibration set.

    The objective is balanced accuracy, the class-balanced loss the deployed models are
    trained with. Binary targets only (:class:`NotApplicableError` otherwise).
    """
    from fairlearn.postprocessing import ThresholdOptimizer

    _binary_scores(model, X[:1], "Equalodds")
    optimizer = ThresholdOptimizer(
        estimator=_ModelScores(copy.deepcopy(model).eval()),
        constraints="equalized_odds",
        objective="balanced_accuracy_score",
        prefit=True,
        predict_method="predict_proba",
    )
    optimizer.fit(X, np.asarray(y), sensitive_features=np.asarray(bias))
    return EqualoddsPredictor(optimizer, seed)


@dataclass
class CalibratedEqualodds:
    """Calibrated equalized odds (Pleiss et al. 2017, Algorithm 1) on binary scores.

    The cost of a group's classifier is ``fp_weight * GFPR + fn_weight * GFNR``, with the
    generalized false-positive rate ``E[s | y=0]`` and false-negative rate
    ``E[1 - s | y=1]``. Every group cheaper than the costliest one keeps its score with
    probability ``1 - mix_rate_[g]`` and otherwise gets the group's base rate (the trivial
    calibrated classifier), ``mix_rate_[g]`` chosen so that its expected cost equals the
    costliest group's. The paper equalises two groups; with more, all rise to the maximum.
    """

    fp_weight: float = 1.0
    fn_weight: float = 1.0
    groups_: np.ndarray = field(init=False, repr=False)
    cost_: np.ndarray = field(init=False, repr=False)
    base_rate_: np.ndarray = field(init=False, repr=False)
    mix_rate_: np.ndarray = field(init=False, repr=False)

    def _cost(self, gfpr: float, gfnr: float) -> float:
        return self.fp_weight * gfpr + self.fn_weight * gfnr

    def fit(self, scores: np.ndarray, y: np.ndarray, bias: np.ndarray) -> CalibratedEqualodds:
        """Costs, base rates and mixing rates of every bias group."""
        scores, y, bias = np.asarray(scores, float), np.asarray(y), np.asarray(bias)
        self.groups_ = np.unique(bias)
        cost, base = [], []
        for g in self.groups_:
            s, t = scores[bias == g], y[bias == g]
            if not ((t == 0).any() and (t == 1).any()):
                raise ValueError(f"CalEqualodds: bias group {g!r} lacks one of the two classes")
            cost.append(self._cost(s[t == 0].mean(), 1.0 - s[t == 1].mean()))
            base.append(t.mean())
        self.cost_, self.base_rate_ = np.array(cost), np.array(base)
        trivial = np.array([self._cost(mu, 1.0 - mu) for mu in self.base_rate_])
        target = self.cost_.max()
        below = self.cost_ < target
        if np.any(below & (trivial < target)):
            warnings.warn(
                "CalEqualodds: the trivial classifier of a group costs less than the costliest "
                "group; that group's cost cannot be matched (mixing rate capped at 1)",
                stacklevel=2,
            )
        gain = np.where(below, trivial - self.cost_, 1.0)
        mix = np.where(below & (gain > 0), (target - self.cost_) / np.where(gain > 0, gain, 1.0), 0)
        self.mix_rate_ = np.where(below & (gain <= 0), 1.0, np.clip(mix, 0.0, 1.0))
        return self

    def transform(
        self, scores: np.ndarray, bias: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Randomised scores: each row's own with probability ``1 - mix_rate_``."""
        scores, bias = np.asarray(scores, float), np.asarray(bias)
        unknown = np.setdiff1d(bias, self.groups_)
        if unknown.size:
            raise ValueError(f"CalEqualodds: bias values {unknown.tolist()} unseen when fitted")
        g = np.searchsorted(self.groups_, bias)
        mixed = rng.random(len(scores)) < self.mix_rate_[g]
        return np.where(mixed, self.base_rate_[g], scores)


@dataclass
class CalEqualoddsPredictor:
    """The deployed model's score, randomised per bias group by :class:`CalibratedEqualodds`
    and thresholded at 1/2 (the deployed model's own decision rule)."""

    model: Deployed
    post: CalibratedEqualodds
    seed: int
    needs_test_bias: ClassVar[bool] = True

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        bias = _test_bias(bias, len(X), "CalEqualodds")
        scores = _binary_scores(self.model, X, "CalEqualodds")
        return self._decide(scores, bias)

    def _decide(self, scores: np.ndarray, bias: np.ndarray) -> np.ndarray:
        mixed = self.post.transform(scores, bias, np.random.default_rng(self.seed))
        return (mixed > 0.5).astype(np.int64)


def fit_calequalodds(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    costs: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0)),
) -> CalEqualoddsPredictor:
    """Calibrated equalized odds (Pleiss et al. 2017) fitted on the calibration set.

    The deployed model's probabilities are the calibrated scores. The paper leaves the
    cost's (FP, FN) weights to the user; each of ``costs`` (both, FPR only, FNR only) is
    fitted and the one with the least fairness gap plus balanced error on the calibration
    set is kept. Binary targets only.
    """
    scores = _binary_scores(model, X, "CalEqualodds")
    y, bias = np.asarray(y), np.asarray(bias)
    frozen = copy.deepcopy(model).eval()
    candidates = []
    for fp, fn in costs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            post = CalibratedEqualodds(fp, fn).fit(scores, y, bias)
        predictor = CalEqualoddsPredictor(frozen, post, seed)
        candidates.append((selection_loss(predictor._decide(scores, bias), y, bias), predictor))
    return min(candidates, key=lambda c: c[0])[1]
