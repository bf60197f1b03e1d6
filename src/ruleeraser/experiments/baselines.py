"""Post-training debiasing baselines of the paper's Table IV, "under laboratory conditions".

Each method gets what it needs (the paper, Sec. V-D): the deployed model (a tabular or image net)
(weights, gradients, its representation ``embed(x)`` and target layer ``head``) and the
calibration set with its bias labels, the same rows the Eraser is fitted on. Every
``fit_*(model, X, y, bias, *, seed)`` (``y`` and ``bias`` as class indices) returns a
predictor whose ``predict(X, bias=None)`` gives class indices; ``bias`` is read only by the
predictors with ``needs_test_bias``. The deployed model is never changed: every method
works on its own copy.

- ``equalodds``: Hardt, Price, Srebro (2016), "Equality of opportunity in supervised learning",
  through fairlearn's ``ThresholdOptimizer`` (group-specific randomised thresholds);
- ``calequalodds``: Pleiss et al. (2017), "On fairness and calibration";
- ``faap``: Wang et al. (2022), "Fairness-aware adversarial perturbation towards bias
  mitigation for deployed deep models";
- ``repro``: Zhang et al. (2022), "Fairness reprogramming";
- ``care``: Sun et al. (2022), "CARE: causality-based neural network repair";
- ``dfr``: Kirichenko, Izmailov, Wilson (2023), "Last layer re-training is sufficient for
  robustness to spurious correlations".

Equalodds and CalEqualodds post-process a binary classifier's score and raise
:class:`NotApplicableError` on a multi-class model (the paper's "-" in Table IV).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from torch import nn

from ruleeraser.experiments.deployed import predict_proba
from ruleeraser.metrics import group_accuracy

__all__ = [
    "BASELINES",
    "CalibratedEqualodds",
    "NotApplicableError",
    "Predictor",
    "balanced_subsample",
    "fit_calequalodds",
    "fit_care",
    "fit_dfr",
    "fit_equalodds",
    "fit_faap",
    "fit_repro",
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


# ------------------------------------------------------------------------------ helpers


def _tensor(X: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(X, dtype=np.float32))


def _frozen(model: Deployed) -> Deployed:
    """A copy of the deployed model in eval mode with no trainable parameter."""
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone


def _class_weight(y: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse class frequency, as the deployed models were trained."""
    counts = torch.bincount(y, minlength=k).float()
    return torch.where(counts > 0, len(y) / (k * counts), torch.zeros_like(counts))


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


@torch.no_grad()
def _argmax(model: nn.Module, X: np.ndarray, transform: nn.Module | None = None) -> np.ndarray:
    out = []
    for chunk in _tensor(X).split(8192):
        out.append(model(chunk if transform is None else transform(chunk)).argmax(1))
    return torch.cat(out).numpy()


def _fairness_gap(correct: np.ndarray, y: np.ndarray, bias: np.ndarray) -> float:
    """EqualOdds of a (soft) correctness score: per class, max - min over bias groups of
    its mean, averaged over classes (Eq. 20, in [0, 1])."""
    gaps = []
    for c in np.unique(y):
        means = [correct[(y == c) & (bias == b)].mean() for b in np.unique(bias[y == c])]
        if len(means) >= 2:
            gaps.append(max(means) - min(means))
    return float(np.mean(gaps)) if gaps else 0.0


# ---------------------------------------------------------------------------- Equalodds


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


# ------------------------------------------------------------------------- CalEqualodds


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


def _selection_loss(pred: np.ndarray, y: np.ndarray, bias: np.ndarray) -> float:
    """Fairness gap (Eq. 20, in [0, 1]) plus balanced error of hard predictions."""
    correct = (pred == y).astype(float)
    balanced = np.mean([correct[y == c].mean() for c in np.unique(y)])
    return _fairness_gap(correct, y, bias) + 1.0 - balanced


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
        candidates.append((_selection_loss(predictor._decide(scores, bias), y, bias), predictor))
    return min(candidates, key=lambda c: c[0])[1]


# ----------------------------------------------------------------- FAAP and Repro


def _input_scale(model: nn.Module, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature location and scale of the model's inputs: a tabular model's own
    standardisation, else (images) the calibration inputs' per-pixel mean and std."""
    if hasattr(model, "loc") and hasattr(model, "scale"):
        return model.loc.clone(), model.scale.clone()
    return X.mean(0), X.std(0).clamp_min(1e-3)


class _Perturbation(nn.Module):
    """FAAP's generator: ``x + epsilon * tanh(MLP(z)) * scale``, z the standardised input
    (flattened for images), so the perturbation is at most ``epsilon`` standard deviations
    per feature or pixel."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, hidden: int, epsilon: float):
        super().__init__()
        d = loc.numel()
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.epsilon = epsilon
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.loc) / self.scale).flatten(1)
        delta = torch.tanh(self.net(z)).reshape(x.shape)
        return x + self.epsilon * delta * self.scale


class _Trigger(nn.Module):
    """Repro's universal trigger: one learned pattern added to every input (a feature vector
    for tables, an image for images), in units of the inputs' standard deviations."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.theta = nn.Parameter(torch.zeros_like(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.theta * self.scale


@dataclass
class PerturbedPredictor:
    """The frozen deployed model on perturbed inputs ``model(transform(x))``."""

    model: Deployed
    transform: nn.Module
    needs_test_bias: ClassVar[bool] = False

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Class indices; ``bias`` is unused."""
        return _argmax(self.model, X, self.transform.eval())


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def fit_faap(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    epsilon: float = 1.0,
    alpha: float = 1.0,
    beta: float = 0.25,
    epochs: int = 40,
    hidden: int = 64,
    lr: float = 1e-3,
    batch_size: int = 128,
) -> PerturbedPredictor:
    """FAAP (Wang et al. 2022): a bounded perturbation generator against a bias discriminator.

    The discriminator predicts b from the frozen model's representation ``h(x + delta(x))``;
    the generator minimises the class-balanced cross-entropy of the model's prediction to y
    minus ``alpha * (discriminator cross-entropy + beta * its entropy)``, i.e. it both fools
    the discriminator and pushes it to indecision, as in the paper. Alternating Adam steps,
    discriminator at a fifth of the generator's learning rate. Needs gradients through the
    deployed model; its weights are untouched.
    """
    frozen = _frozen(model)
    xt, yt, bt = _tensor(X), torch.as_tensor(y).long(), torch.as_tensor(bias).long()
    k, m = frozen.head.out_features, int(bt.max()) + 1
    weight = _class_weight(yt, k)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = _Perturbation(*_input_scale(frozen, xt), hidden, epsilon)
        disc = _mlp(frozen.head.in_features, hidden, max(m, 2))
        opt_g = torch.optim.Adam(gen.parameters(), lr=lr)
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr / 5, weight_decay=1e-4)
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=order).split(batch_size):
                h = frozen.embed(gen(xt[idx]))
                d_loss = F.cross_entropy(disc(h.detach()), bt[idx])
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
                logits_b = disc(h)
                entropy = -(logits_b.softmax(1) * logits_b.log_softmax(1)).sum(1).mean()
                fool = F.cross_entropy(logits_b, bt[idx]) + beta * entropy
                g_loss = F.cross_entropy(frozen.head(h), yt[idx], weight=weight) - alpha * fool
                opt_g.zero_grad()
                g_loss.backward()
                opt_g.step()
    return PerturbedPredictor(frozen, gen.eval())


def fit_repro(
    model: Deployed,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    lam: float = 1.0,
    epochs: int = 40,
    hidden: int = 32,
    lr: float = 1e-2,
    batch_size: int = 128,
) -> PerturbedPredictor:
    """Fairness reprogramming (Zhang et al. 2022) with a universal additive input trigger.

    An adversary predicts b from the frozen model's output probabilities and the one-hot
    true label (the equalized-odds adversary the paper uses, after Zhang, Lemoine and
    Mitchell 2018). The trigger follows their update: the class-balanced cross-entropy's
    gradient, minus its projection on the adversary's gradient, minus ``lam`` times the
    adversary's gradient. Needs gradients through the deployed model; weights untouched.
    """
    frozen = _frozen(model)
    xt, yt, bt = _tensor(X), torch.as_tensor(y).long(), torch.as_tensor(bias).long()
    k, m = frozen.head.out_features, int(bt.max()) + 1
    weight = _class_weight(yt, k)
    onehot = F.one_hot(yt, k).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trigger = _Trigger(_input_scale(frozen, xt)[1])
        adversary = _mlp(2 * k, hidden, max(m, 2))
        opt_t = torch.optim.Adam(trigger.parameters(), lr=lr)
        opt_a = torch.optim.Adam(adversary.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=order).split(batch_size):
                logits = frozen(trigger(xt[idx]))
                pred_loss = F.cross_entropy(logits, yt[idx], weight=weight)
                adv_in = torch.cat([logits.softmax(1), onehot[idx]], dim=1)
                adv_loss = F.cross_entropy(adversary(adv_in), bt[idx])
                opt_t.zero_grad()
                opt_a.zero_grad()
                adv_loss.backward(retain_graph=True)
                g_adv = trigger.theta.grad.clone()
                trigger.theta.grad = None
                pred_loss.backward()
                g_pred = trigger.theta.grad
                unit = g_adv / (g_adv.norm() + 1e-12)
                along = g_pred.flatten() @ unit.flatten()
                trigger.theta.grad = g_pred - along * unit - lam * g_adv
                opt_t.step()
                opt_a.step()
    return PerturbedPredictor(frozen, trigger.eval())


# --------------------------------------------------------------------------- CARE and DFR


@dataclass
class RepairedPredictor:
    """A repaired copy of the deployed model (its weights changed)."""

    model: Deployed
    needs_test_bias: ClassVar[bool] = False

    def predict(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Class indices; ``bias`` is unused."""
        return _argmax(self.model, X)


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
        h = repaired.embed(_tensor(X))
        W, b0 = repaired.head.weight.clone(), repaired.head.bias.clone()
    rows = torch.arange(len(y))
    yt = torch.as_tensor(y).long()

    def soft_gap(hh: torch.Tensor) -> float:
        p = torch.softmax(hh @ W.T + b0, dim=1)[rows, yt].numpy()
        return _fairness_gap(p, y, bias)

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
        return _selection_loss((h @ w.T + b0).argmax(1).numpy(), y, bias)

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
        h = repaired.embed(_tensor(X)).double().numpy()
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


#: name -> (fit function, what the method needs beyond the calibration set with bias labels)
BASELINES: dict[str, tuple[FitFn, str]] = {
    "equalodds": (fit_equalodds, "bias labels at test time"),
    "calequalodds": (fit_calequalodds, "bias labels at test time"),
    "faap": (fit_faap, "model weights + gradients"),
    "repro": (fit_repro, "model weights + gradients"),
    "care": (fit_care, "modifies weights"),
    "dfr": (fit_dfr, "modifies weights (retrains the last layer)"),
}
