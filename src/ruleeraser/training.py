"""Training a small network on the calibration set: Adam, mini-batches, early stopping.

Used for the patches (:mod:`ruleeraser.patch`) and, in the experiments, for deployed models.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

Loss = Literal["soft", "hard"]


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def split_batches(
    order: torch.Tensor, batch_size: int, *, merge_single: bool
) -> tuple[torch.Tensor, ...]:
    """``order`` in mini-batches of ``batch_size``; with ``merge_single``, a last batch of one
    row joins the one before (BatchNorm's training statistics need more than one row)."""
    parts = order.split(batch_size)
    if merge_single and len(parts) > 1 and len(parts[-1]) == 1:
        parts = (*parts[:-2], torch.cat(parts[-2:]))
    return parts


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

    Returns
    -------
    A :class:`FitReport`; ``module`` is trained in place and left in eval mode.

    Example
    -------
    >>> X = torch.randn(200, 2); y = (X[:, 0] > 0).long()
    >>> report = fit_module(
    ...     nn.Linear(2, 2), X, y, loss="hard", heldout=np.arange(200) % 5 == 0,
    ...     generator=torch.Generator().manual_seed(0), max_epochs=30, patience=5,
    ...     learning_rate=0.1, weight_decay=0.0, batch_size=32,
    ... )
    >>> report.heldout_accuracy > 0.9
    True
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


def stratified_holdout(cells: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A held-out mask taking ``fraction`` of every cell (at least one row of cells of >= 2)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(cells), dtype=bool)
    for cell in np.unique(cells):
        idx = rng.permutation(np.flatnonzero(cells == cell))
        if idx.size >= 2:
            mask[idx[: max(1, round(fraction * idx.size))]] = True
    return mask


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
