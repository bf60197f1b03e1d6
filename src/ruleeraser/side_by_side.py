"""Several tabular patches of one architecture trained side by side: one optimiser step moves
all of them (their weights stacked, one batched matrix product per layer), so the goal's
out-of-fold patches (:mod:`ruleeraser.choice`) cost little more than one patch. Each patch
sees only its own rows, its own loss and its own early stopping, as
:func:`ruleeraser.training.fit_module` gives it: Adam and weight decay act on each weight
alone, so stacking changes nothing but the batch order (each epoch draws every patch's rows
afresh and stops at the fewest rows of them). A patch is stackable when it is a standardising
stack of linear layers and ReLUs (:class:`ruleeraser.patch.MLP`).

Example
-------
>>> import numpy as np, torch
>>> from ruleeraser.patch import MLP
>>> X = torch.randn(300, 2); y = (X[:, 0] > 0).long()
>>> rows = [np.arange(0, 200), np.arange(100, 300)]
>>> held = [np.arange(200) % 5 == 0, np.arange(200) % 5 == 0]
>>> nets = [MLP(2, 2, (8,)), MLP(2, 2, (8,))]
>>> reports = fit_side_by_side(nets, X, y, rows, held, loss="hard", seed=0, max_epochs=30,
...                            patience=5, learning_rate=0.1, weight_decay=0.0, batch_size=32)
>>> all(r.heldout_accuracy > 0.9 for r in reports)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ruleeraser.training import FitReport, Loss, patch_loss, torch_threads


def can_stack(modules: Sequence[nn.Module]) -> bool:
    """Whether ``modules`` can train side by side: each a standardising stack of linear layers
    and ReLUs (``standardize`` with ``mean`` and ``scale``, ``net``), of one shape."""

    def shape(m: nn.Module) -> list | None:
        net, standardize = getattr(m, "net", None), getattr(m, "standardize", None)
        if not isinstance(net, nn.Sequential) or not hasattr(standardize, "mean"):
            return None
        if not all(isinstance(layer, (nn.Linear, nn.ReLU)) for layer in net):
            return None
        return [tuple(p.shape) for p in m.state_dict().values()]

    shapes = [shape(m) for m in modules]
    return shapes[0] is not None and all(s == shapes[0] for s in shapes)


class _Stacked:
    """The modules' weights stacked, ``(m, ...)`` each, trained as one."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.mean = torch.stack([m.standardize.mean for m in modules])[:, None, :]
        self.scale = torch.stack([m.standardize.scale for m in modules])[:, None, :]
        linear = [[layer for layer in m.net if isinstance(layer, nn.Linear)] for m in modules]
        self.layers = [
            (
                torch.stack([ls[i].weight.detach().T for ls in linear]).clone().requires_grad_(),
                torch.stack([ls[i].bias.detach()[None] for ls in linear]).clone().requires_grad_(),
            )
            for i in range(len(linear[0]))
        ]

    def parameters(self) -> list[torch.Tensor]:
        return [t for layer in self.layers for t in layer]

    def __call__(self, x: torch.Tensor, i: int | None = None) -> torch.Tensor:
        """Logits of every module on its rows ``x`` ``(m, B, d)``, or of module ``i`` on
        ``x`` ``(B, d)``."""
        pick = slice(None) if i is None else slice(i, i + 1)
        z = (x if i is None else x[None]) - self.mean[pick]
        z = z / self.scale[pick]
        for j, (w, b) in enumerate(self.layers):
            z = torch.baddbmm(b[pick], z, w[pick])
            if j < len(self.layers) - 1:
                z = torch.relu(z)
        return z if i is None else z[0]

    def state(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(w[i].detach().clone(), b[i].detach().clone()) for w, b in self.layers]

    @staticmethod
    def load(module: nn.Module, state: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        linear = [layer for layer in module.net if isinstance(layer, nn.Linear)]
        with torch.no_grad():
            for layer, (w, b) in zip(linear, state, strict=True):
                layer.weight.copy_(w.T)
                layer.bias.copy_(b[0])


def fit_side_by_side(
    modules: Sequence[nn.Module],
    X: torch.Tensor,
    target: torch.Tensor,
    rows: Sequence[np.ndarray],
    heldout: Sequence[np.ndarray],
    *,
    loss: Loss,
    seed: int,
    max_epochs: int,
    patience: int,
    learning_rate: float,
    weight_decay: float,
    batch_size: int,
    n_threads: int = 1,
) -> list[FitReport]:
    """Train each ``modules[i]`` on ``X[rows[i]]`` (``heldout[i]``: a mask over ``rows[i]`` of
    the rows kept for its early stopping), in place; the weights of each one's best held-out
    epoch are kept. Returns their :class:`FitReport`, as :func:`fit_module` would."""
    stacked = _Stacked(modules)
    train = [torch.from_numpy(r[~h]) for r, h in zip(rows, heldout, strict=True)]
    held = [torch.from_numpy(r[h]) for r, h in zip(rows, heldout, strict=True)]
    generator = torch.Generator().manual_seed(seed)
    n = len(modules)
    best = [(float("inf"), 0, None, float("nan"))] * n
    stopped, ended = [False] * n, [max_epochs] * n
    with torch_threads(n_threads):
        optimiser = torch.optim.Adam(
            stacked.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=True
        )
        for epoch in range(1, max_epochs + 1):
            train_loss = _epoch(stacked, optimiser, X, target, train, loss, batch_size, generator)
            with torch.no_grad():
                losses = [
                    float(patch_loss(stacked(X[idx], i), target[idx], loss))
                    for i, idx in enumerate(held)
                ]
            for i, value in enumerate(losses):
                if stopped[i]:
                    continue
                if value < best[i][0] - 1e-6:
                    best[i] = (value, epoch, stacked.state(i), train_loss[i])
                elif epoch - best[i][1] >= patience:
                    stopped[i], ended[i] = True, epoch
            if all(stopped):
                break
    return [_finish(m, b, X, target, held[i], loss, ended[i], len(train[i]))
            for i, (m, b) in enumerate(zip(modules, best, strict=True))]  # fmt: skip


def _epoch(
    stacked: _Stacked,
    optimiser: torch.optim.Optimizer,
    X: torch.Tensor,
    target: torch.Tensor,
    train: Sequence[torch.Tensor],
    loss: Loss,
    batch_size: int,
    generator: torch.Generator,
) -> list[float]:
    """One pass: every module's rows drawn afresh, as many as the fewest module has."""
    orders = [t[torch.randperm(len(t), generator=generator)] for t in train]
    size = min(len(o) for o in orders)
    totals = torch.zeros(len(train))
    for start in range(0, size, batch_size):
        stop = min(start + batch_size, size)
        batch = torch.stack([o[start:stop] for o in orders])  # (m, B)
        optimiser.zero_grad()
        out = stacked(X[batch])
        values = torch.stack([patch_loss(out[i], target[batch[i]], loss) for i in range(len(out))])
        values.sum().backward()  # each module's gradient is its own loss's
        optimiser.step()
        totals += values.detach() * batch.shape[1]
    return (totals / size).tolist()


def _finish(
    module: nn.Module,
    best: tuple,
    X: torch.Tensor,
    target: torch.Tensor,
    held: torch.Tensor,
    loss: Loss,
    epochs: int,
    n_train: int,
) -> FitReport:
    """Load the best epoch's weights into ``module`` (eval mode) and report its fit."""
    value, epoch, state, train_loss = best
    if state is not None:
        _Stacked.load(module, state)
    module.eval()
    accuracy = None
    if loss == "hard":
        with torch.no_grad():
            accuracy = float((module(X[held]).argmax(dim=1) == target[held]).float().mean())
    return FitReport(
        epochs=epochs,
        best_epoch=epoch,
        heldout_loss=value,
        train_loss=train_loss,
        heldout_accuracy=accuracy,
        n_train=n_train,
        n_heldout=len(held),
    )
