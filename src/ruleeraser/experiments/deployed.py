"""Deployed models of the paper's Table II: vanilla, AdvDebias, ConDebias and unfair.

Each recipe trains a small tabular MLP (:class:`TabularNet`); afterwards the model is a black
box whose only output is the softmax of its target logits (:func:`predict_proba`).

* ``vanilla``: cross-entropy on the target y.
* ``advdebias``: adversarial removal of the bias b from the representation (Wang et al. 2019,
  "Balanced datasets are not enough"): an adversary predicts b from h through a gradient
  reversal layer (Ganin & Lempitsky 2015) whose strength is ramped up during training.
* ``condebias``: fair supervised contrastive loss FSCL (Park et al. 2022, "Fair contrastive
  learning for facial attribute classification") on the L2-normalised representation h,
  trained jointly with cross-entropy on y (one stage, no separate projection head: with an
  MLP projection head, h kept the bias information and the model was as biased as vanilla).
* ``unfair``: multi-task learning of y and b from the same representation h, which makes h
  carry more bias information.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

RECIPES = ("vanilla", "advdebias", "condebias", "unfair")

#: Default weight of the recipe's extra loss term (unused by ``vanilla``).
DEFAULT_WEIGHTS = {"vanilla": 0.0, "advdebias": 1.0, "condebias": 3.0, "unfair": 1.0}

#: Temperature of the FSCL loss.
FSCL_TEMPERATURE = 0.1


class TabularNet(nn.Module):
    """MLP backbone: standardisation, encoder ``d -> hidden -> hidden`` (ReLU), target head.

    ``forward`` returns the target logits only: that is the deployed model's public output.
    The input standardisation (``loc``, ``scale`` buffers) is part of the model so that the
    black box takes raw features.
    """

    def __init__(self, d_in: int, n_classes: int = 2, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("loc", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.encoder = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Representation h of a batch of raw features."""
        return self.encoder((x - self.loc) / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def grad_reverse(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Gradient reversal layer: identity forward, gradient times ``-strength`` backward."""
    return _GradientReversal.apply(x, strength)


def fscl_loss(
    z: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, temperature: float = FSCL_TEMPERATURE
) -> torch.Tensor:
    """Fair supervised contrastive loss (FSCL, Park et al. 2022), one view per sample.

    With ``s_ij = <z_i, z_j> / temperature`` on L2-normalised ``z``, for anchor i the positives
    are ``P(i) = {p != i: y_p = y_i}`` and the denominator runs over the negatives sharing the
    anchor's bias value only, ``N(i) = {n: y_n != y_i, b_n = b_i}``::

        L = mean_i  -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip) / sum_{n in N(i)} exp(s_in) )

    Not pushing away negatives of the other bias group keeps the bias out of the separation
    between classes, while positives of both groups are pulled together. Anchors with an empty
    ``P(i)`` or ``N(i)`` are skipped (zero loss if none is left). No group-wise normalisation
    (that is FSCL+). Same form as the authors' released code.
    """
    z = F.normalize(z, dim=1)
    same_y = y[:, None] == y[None, :]
    same_b = bias[:, None] == bias[None, :]
    pos = same_y & ~torch.eye(len(y), dtype=torch.bool, device=z.device)
    neg = ~same_y & same_b
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return z.sum() * 0.0
    sim = z[valid] @ z.T / temperature
    pos, neg = pos[valid], neg[valid]
    log_denom = torch.logsumexp(sim.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)
    log_prob = torch.where(pos, sim - log_denom, torch.zeros_like(sim))
    return (-log_prob.sum(1) / pos.sum(1)).mean()


def _ganin_ramp(progress: float) -> float:
    """Ganin & Lempitsky (2015) schedule ``2 / (1 + exp(-10 p)) - 1`` from 0 to 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def _aux_module(recipe: str, hidden: int, n_bias: int) -> nn.Module | None:
    if recipe == "advdebias":  # an MLP adversary, stronger than a linear probe
        return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_bias))
    if recipe == "unfair":  # bias head of the multi-task model
        return nn.Linear(hidden, n_bias)
    return None


def train_deployed(
    recipe: str,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    epochs: int = 30,
    hidden: int = 64,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight: float | None = None,
    dropout: float = 0.0,
    balance_classes: bool = True,
    progress: bool = False,
) -> TabularNet:
    """Train a deployed model with one of :data:`RECIPES`; return it in eval mode.

    ``weight`` scales the recipe's extra term (``DEFAULT_WEIGHTS[recipe]`` when None): the
    final gradient reversal strength (advdebias), the FSCL weight (condebias) or the bias-task
    weight (unfair). ``balance_classes`` weights the target cross-entropy by inverse class
    frequency (without it LSAC, 89% positive, gives near-constant models). Mini-batch Adam
    for a fixed number of epochs; deterministic on CPU for a given ``seed``, without touching
    the global torch RNG state.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    weight = DEFAULT_WEIGHTS[recipe] if weight is None else weight
    xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    bt = torch.as_tensor(np.asarray(bias), dtype=torch.long)
    n = len(xt)
    n_classes = max(int(yt.max()) + 1, 2)
    n_bias = max(int(bt.max()) + 1, 2)
    n_steps = epochs * math.ceil(n / batch_size)
    class_weight = None
    if balance_classes:
        counts = torch.bincount(yt, minlength=n_classes).float()
        class_weight = torch.where(counts > 0, n / (n_classes * counts), torch.zeros_like(counts))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TabularNet(xt.shape[1], n_classes, hidden, dropout)
        model.loc.copy_(xt.mean(0))
        std = xt.std(0)
        model.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
        aux = _aux_module(recipe, hidden, n_bias)
        params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
        opt = torch.optim.Adam(params, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        step = 0
        for _ in tqdm(range(epochs), desc=f"train {recipe}", disable=not progress):
            for idx in torch.randperm(n, generator=gen).split(batch_size):
                h = model.embed(xt[idx])
                loss = F.cross_entropy(model.head(h), yt[idx], weight=class_weight)
                if recipe == "advdebias":
                    strength = weight * _ganin_ramp(step / n_steps)
                    loss = loss + F.cross_entropy(aux(grad_reverse(h, strength)), bt[idx])
                elif recipe == "condebias":
                    loss = loss + weight * fscl_loss(h, yt[idx], bt[idx])
                elif recipe == "unfair":
                    loss = loss + weight * F.cross_entropy(aux(h), bt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax probabilities of the model's logits, float64 of shape (n, k)."""
    xt = torch.as_tensor(np.asarray(X, dtype=np.float32))
    out = [torch.softmax(model(chunk).double(), dim=1) for chunk in xt.split(batch_size)]
    return torch.cat(out).numpy()
