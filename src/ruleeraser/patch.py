"""Patch models (paper Sec. IV-B, Eq. 18): learn the distilled bias rule from ``x`` alone.

Two ways to store the rule, measured side by side in ``docs/table2.md``:

- ``rule="sample"`` (the paper): the patch outputs k logits and is trained on each
  calibration sample's distilled rule ``q(x)`` (Eq. 17) with soft-label cross-entropy,
  i.e. ``KL(q || G)``. We minimise ``KL(q || G)``, not the ``KL(G || q)`` that Eq. 18 writes:
  over a flexible ``G`` its minimiser is ``E[q | x]``, the conditional mean of a noisy target,
  while the reverse divergence is mode-seeking and has no such reading.
- ``rule="group"``: the patch predicts the bias posterior ``p(b | x)`` (trained with
  cross-entropy on the calibration set's bias labels) and mixes the per-group rules
  ``r_b`` of :func:`ruleeraser.distill.distill`: ``G(x) = sum_b p(b | x) r_b``. It learns the
  same rule with less variance: ``q`` carries ``log M(x) / k``, the sample's own target
  evidence, which a per-sample patch learns and then removes as if it were bias.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ruleeraser.nets import has_batchnorm, split_batches

Loss = Literal["soft", "hard"]


class Standardize(nn.Module):
    """Subtract a mean and divide by a scale, both stored with the weights."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class MLP(nn.Module):
    """A tabular patch: standardise the inputs, then ReLU layers of ``hidden_sizes``."""

    def __init__(
        self, n_inputs: int, n_outputs: int, hidden_sizes: Sequence[int] = (64, 64)
    ) -> None:
        super().__init__()
        self.n_inputs, self.n_outputs, self.hidden_sizes = n_inputs, n_outputs, list(hidden_sizes)
        self.standardize = Standardize(torch.zeros(n_inputs), torch.ones(n_inputs))
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def set_scaling(self, X: torch.Tensor) -> MLP:
        """Standardise with the mean and standard deviation of ``X`` (constant columns: 1)."""
        flat = X.reshape(len(X), -1).float()
        std = flat.std(dim=0, unbiased=False)
        self.standardize.mean.copy_(flat.mean(dim=0))
        self.standardize.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(x.reshape(len(x), -1)))


class RuleMixture(nn.Module):
    """``log G(x) = log sum_b p(b | x) r_b``: a bias posterior mixing per-group rules."""

    def __init__(self, bias_net: nn.Module, group_rules: torch.Tensor) -> None:
        super().__init__()
        self.bias_net = bias_net
        self.register_buffer("rules", group_rules.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        posterior = torch.softmax(self.bias_net(x), dim=1)  # (n, m)
        return torch.log(posterior @ self.rules)


@dataclass(frozen=True)
class FitReport:
    """How a patch's training went, on its held-out part of the calibration set."""

    epochs: int
    best_epoch: int
    heldout_loss: float
    train_loss: float
    heldout_accuracy: float | None  # for ``loss="hard"``: accuracy of the bias posterior
    n_train: int
    n_heldout: int

    def to_dict(self) -> dict:
        return asdict(self)


def _loss(out: torch.Tensor, target: torch.Tensor, kind: Loss) -> torch.Tensor:
    log_p = torch.log_softmax(out, dim=1)
    if kind == "soft":
        return -(target * log_p).sum(dim=1).mean()
    return nn.functional.nll_loss(log_p, target)


def fit_module(
    module: nn.Module,
    X: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: Loss,
    heldout: np.ndarray,
    generator: torch.Generator,
    max_epochs: int,
    patience: int,
    learning_rate: float,
    weight_decay: float,
    batch_size: int,
    progress: bool = False,
    description: str = "patch",
) -> FitReport:
    """Train ``module`` on ``(X, target)`` with Adam and early stopping.

    ``heldout`` is a boolean mask of rows kept out of training; the weights of the epoch with
    the lowest held-out loss are restored. ``loss="soft"``: cross-entropy to soft labels
    ``target`` ``(n, k)``; ``loss="hard"``: cross-entropy to class indices ``(n,)``. For a
    module with BatchNorm, a last mini-batch of one row is merged into the one before.
    """
    train_idx = torch.from_numpy(np.flatnonzero(~heldout))
    hold_idx = torch.from_numpy(np.flatnonzero(heldout))
    if len(train_idx) == 0 or len(hold_idx) == 0:
        raise ValueError("need at least one training and one held-out calibration row")
    merge_single = has_batchnorm(module)
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    best = (float("inf"), 0, copy.deepcopy(module.state_dict()), float("nan"))
    bar = tqdm(range(1, max_epochs + 1), desc=description, disable=not progress, leave=False)
    epoch = 0
    for epoch in bar:
        module.train()
        total, seen = 0.0, 0
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for batch in split_batches(order, batch_size, merge_single=merge_single):
            optimiser.zero_grad()
            value = _loss(module(X[batch]), target[batch], loss)
            value.backward()
            optimiser.step()
            total += float(value.detach()) * len(batch)
            seen += len(batch)
        held = _evaluate(module, X, target, hold_idx, loss, batch_size)
        bar.set_postfix(heldout=f"{held:.4f}", refresh=False)  # shown at tqdm's pace
        if held < best[0] - 1e-6:
            best = (held, epoch, copy.deepcopy(module.state_dict()), total / seen)
        elif epoch - best[1] >= patience:
            break
    module.load_state_dict(best[2])
    module.eval()
    accuracy = None
    if loss == "hard":
        with torch.no_grad():
            pred = _predict(module, X[hold_idx], batch_size).argmax(dim=1)
        accuracy = float((pred == target[hold_idx]).float().mean())
    return FitReport(
        epochs=epoch,
        best_epoch=best[1],
        heldout_loss=best[0],
        train_loss=best[3],
        heldout_accuracy=accuracy,
        n_train=len(train_idx),
        n_heldout=len(hold_idx),
    )


@torch.no_grad()
def _predict(module: nn.Module, X: torch.Tensor, batch_size: int) -> torch.Tensor:
    module.eval()
    return torch.cat([module(x) for x in X.split(max(batch_size, 1024))])


def _evaluate(
    module: nn.Module,
    X: torch.Tensor,
    target: torch.Tensor,
    idx: torch.Tensor,
    loss: Loss,
    batch_size: int,
) -> float:
    with torch.no_grad():
        return float(_loss(_predict(module, X[idx], batch_size), target[idx], loss))
