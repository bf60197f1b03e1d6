"""Training a small network on the calibration set: Adam, mini-batches, early stopping.

Used for the patches (:mod:`ruleeraser.patch`) and, in the experiments, for deployed models.

Threads. A tabular patch's training step is a few million floating-point operations: torch's
intra-op threads cannot speed it up, and when other processes keep the cores busy every
parallel region waits for a descheduled thread, which made a COMPAS fit about five times
slower than on one thread. :func:`fit_module` therefore trains a patch whose step is below
:data:`MIN_THREADED_STEP_FLOPS` on one thread, and larger ones (image patches) on the
caller's threads; the caller's setting is restored afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

Loss = Literal["soft", "hard"]

#: Training steps (forward and backward over one mini-batch) of fewer floating-point
#: operations than this run on one thread (``benchmarks/fit_speed.py --steps`` measures steps
#: of several sizes on one thread and on all).
MIN_THREADED_STEP_FLOPS = 200_000_000


def step_flops(module: nn.Module, X: torch.Tensor, batch_size: int) -> int:
    """Floating-point operations of one training step of ``module`` on ``batch_size`` rows
    like ``X``'s: three forward passes' worth (the backward pass costs about two), as the
    module's ``flops_per_row()`` says where it has one, else counted by torch's
    ``FlopCounterMode`` on one row in eval mode (matrix products and convolutions).

    Example
    -------
    >>> step_flops(nn.Linear(10, 4), torch.zeros(5, 10), batch_size=8)  # 3 * 8 * 2 * 10 * 4
    1920
    """
    per_row = getattr(module, "flops_per_row", None)
    if per_row is not None:  # FlopCounterMode's first use in a process costs seconds
        return 3 * batch_size * int(per_row())
    training = module.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module.eval()(X[:1])
    finally:
        module.train(training)
    return 3 * batch_size * int(counter.get_total_flops())


def choose_threads(module: nn.Module, X: torch.Tensor, batch_size: int) -> int:
    """The intra-op threads to train ``module`` with: 1 for a step below
    :data:`MIN_THREADED_STEP_FLOPS`, else the caller's ``torch.get_num_threads()``.

    Example
    -------
    >>> choose_threads(nn.Linear(10, 2), torch.zeros(5, 10), batch_size=256)
    1
    """
    if step_flops(module, X, batch_size) < MIN_THREADED_STEP_FLOPS:
        return 1
    return torch.get_num_threads()


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the block on ``n_threads`` intra-op threads; the caller's setting is restored after,
    even when the block raises.

    Example
    -------
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    before = torch.get_num_threads()
    if n_threads != before:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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


def patch_loss(out: torch.Tensor, target: torch.Tensor, kind: Loss) -> torch.Tensor:
    """Cross-entropy of logits ``out`` to class indices (``"hard"``) or soft labels."""
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
    n_threads: int | None = None,
) -> FitReport:
    """Train ``module`` on ``(X, target)`` with Adam and early stopping.

    ``heldout`` is a boolean mask of rows kept out of training; the weights of the epoch with
    the lowest held-out loss are restored. ``loss="soft"``: cross-entropy to soft labels
    ``target`` ``(n, k)``; ``loss="hard"``: cross-entropy to class indices ``(n,)``. For a
    module with BatchNorm, a last mini-batch of one row is merged into the one before.
    ``n_threads``: torch intra-op threads while training (None: :func:`choose_threads`); the
    caller's setting is restored afterwards.

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
    threads = choose_threads(module, X, batch_size) if n_threads is None else n_threads
    with torch_threads(threads):
        optimiser = torch.optim.Adam(
            module.parameters(), lr=learning_rate, weight_decay=weight_decay
        )
        bar = tqdm(range(1, max_epochs + 1), desc=description, disable=not progress, leave=False)
        best, epoch = (float("inf"), 0, copy.deepcopy(module.state_dict()), float("nan")), 0
        for epoch in bar:
            order = train_idx[torch.randperm(len(train_idx), generator=generator)]
            train_loss = _train_epoch(module, optimiser, X, target, order, loss, batch_size)
            held = _evaluate(module, X, target, hold_idx, loss, batch_size)
            bar.set_postfix(heldout=f"{held:.4f}", refresh=False)  # shown at tqdm's pace
            if held < best[0] - 1e-6:
                best = (held, epoch, copy.deepcopy(module.state_dict()), train_loss)
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


def _train_epoch(
    module: nn.Module,
    optimiser: torch.optim.Optimizer,
    X: torch.Tensor,
    target: torch.Tensor,
    order: torch.Tensor,
    loss: Loss,
    batch_size: int,
) -> float:
    """One pass over the rows ``order`` in mini-batches; returns the mean training loss."""
    module.train()
    total, seen = 0.0, 0
    for batch in split_batches(order, batch_size, merge_single=has_batchnorm(module)):
        optimiser.zero_grad()
        value = patch_loss(module(X[batch]), target[batch], loss)
        value.backward()
        optimiser.step()
        total += float(value.detach()) * len(batch)
        seen += len(batch)
    return total / seen


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
        return float(patch_loss(_predict(module, X[idx], batch_size), target[idx], loss))
