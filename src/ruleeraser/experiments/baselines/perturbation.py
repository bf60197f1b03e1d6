"""Baselines that perturb the frozen deployed model's inputs, trained with its gradients:
FAAP (Wang et al. 2022, a bounded perturbation generator against a bias discriminator) and
fairness reprogramming (Zhang et al. 2022, a universal additive trigger)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ruleeraser.experiments.baselines.common import (
    Deployed,
    as_tensor,
    class_weight,
    frozen_copy,
    predict_classes,
)
from ruleeraser.training import choose_threads, torch_threads

__all__ = ["PerturbedPredictor", "fit_faap", "fit_repro"]


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
        return predict_classes(self.model, X, self.transform.eval())


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
    frozen = frozen_copy(model)
    xt, yt, bt = as_tensor(X), torch.as_tensor(y).long(), torch.as_tensor(bias).long()
    k, m = frozen.head.out_features, int(bt.max()) + 1
    weight = class_weight(yt, k)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = _Perturbation(*_input_scale(frozen, xt), hidden, epsilon)
        disc = _mlp(frozen.head.in_features, hidden, max(m, 2))
        opt_g = torch.optim.Adam(gen.parameters(), lr=lr)
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr / 5, weight_decay=1e-4)
        order = torch.Generator().manual_seed(seed)
        threads = choose_threads(frozen, xt[:1], batch_size)
        with torch_threads(threads):  # small models: one thread, no spinning on busy cores
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
    frozen = frozen_copy(model)
    xt, yt, bt = as_tensor(X), torch.as_tensor(y).long(), torch.as_tensor(bias).long()
    k, m = frozen.head.out_features, int(bt.max()) + 1
    weight = class_weight(yt, k)
    onehot = F.one_hot(yt, k).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trigger = _Trigger(_input_scale(frozen, xt)[1])
        adversary = _mlp(2 * k, hidden, max(m, 2))
        opt_t = torch.optim.Adam(trigger.parameters(), lr=lr)
        opt_a = torch.optim.Adam(adversary.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(seed)
        threads = choose_threads(frozen, xt[:1], batch_size)
        with torch_threads(threads):  # small models: one thread, no spinning on busy cores
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
