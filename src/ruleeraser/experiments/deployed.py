"""Deployed models of the paper's Table II: vanilla, AdvDebias, ConDebias and unfair.

Each recipe trains a backbone with a representation h and a target head: a small tabular MLP
(:class:`TabularNet`) or, for images ``(n, C, H, W)``, a net of :mod:`ruleeraser.nets`
(``cnn``, ``resnet18``, ``resnet34``) or the small vision transformer of
:mod:`ruleeraser.experiments.vit` (``vit``). Afterwards the model is a black box whose only
output is the softmax of its target logits (:func:`predict_proba`).

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

from ruleeraser.experiments.vit import SmallViT
from ruleeraser.inputs import n_rows
from ruleeraser.nets import IMAGE_NETS, image_channels, image_net
from ruleeraser.training import choose_threads, split_batches, torch_threads

RECIPES = ("vanilla", "advdebias", "condebias", "unfair")

#: Backbones of the deployed models: the tabular MLP, the image nets and a small ViT.
BACKBONES = ("mlp", *IMAGE_NETS, "vit")

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
        self.embed_dim = hidden
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


def _aux_module(recipe: str, embed_dim: int, n_bias: int) -> nn.Module | None:
    if recipe == "advdebias":  # an MLP adversary, stronger than a linear probe
        return nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, n_bias)
        )
    if recipe == "unfair":  # bias head of the multi-task model
        return nn.Linear(embed_dim, n_bias)
    return None


def train_deployed(
    recipe: str,
    X: np.ndarray,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    backbone: str = "mlp",
    epochs: int = 30,
    hidden: int = 64,
    width: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight: float | None = None,
    dropout: float = 0.0,
    balance_classes: bool = True,
    sigmoid: bool = False,
    progress: bool = False,
) -> nn.Module:
    """Train a deployed model with one of :data:`RECIPES`; return it in eval mode.

    ``backbone``: ``"mlp"`` (:class:`TabularNet` of ``hidden`` units and ``dropout``, for
    ``(n, d)`` features), or for images a net of :data:`~ruleeraser.nets.IMAGE_NETS` of
    ``width`` channels (None: the net's default) or
    ``"vit"`` (:class:`~ruleeraser.experiments.vit.SmallViT`, tokens of ``width``, default 64),
    fed one mini-batch at a time (``X`` may be a numpy memmap larger than memory). ``weight``
    scales the recipe's extra term (``DEFAULT_WEIGHTS[recipe]`` when None): the final gradient
    reversal strength (advdebias), the FSCL weight (condebias) or the bias-task weight
    (unfair). ``balance_classes`` weights the target cross-entropy by inverse class frequency
    (without it LSAC, 89% positive, gives near-constant models). Mini-batch Adam for a fixed
    number of epochs, a small model on one thread (no spinning on busy cores); deterministic
    for a given ``seed``, the global RNG untouched. ``sigmoid``: one logit (Fig. 10).
    """
    for name, value, valid in (("recipe", recipe, RECIPES), ("backbone", backbone, BACKBONES)):
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; expected one of {valid}")
    weight = DEFAULT_WEIGHTS[recipe] if weight is None else weight
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    bt = torch.as_tensor(np.asarray(bias), dtype=torch.long)
    n = len(yt)
    if n_rows(X) != n or len(bt) != n:
        raise ValueError(f"X has {n_rows(X)} rows, y {n} and bias {len(bt)}")
    X = _training_inputs(X, backbone, width, dropout)
    n_classes = max(int(yt.max()) + 1, 2)
    if sigmoid and n_classes != 2:
        raise ValueError(f"a sigmoid model has a binary target; y has {n_classes} classes")
    n_bias = max(int(bt.max()) + 1, 2)
    n_steps = epochs * math.ceil(n / batch_size)
    class_weight = None
    if balance_classes:
        counts = torch.bincount(yt, minlength=n_classes).float()
        class_weight = torch.where(counts > 0, n / (n_classes * counts), torch.zeros_like(counts))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _new_backbone(backbone, X, 1 if sigmoid else n_classes, hidden, width, dropout)
        aux = _aux_module(recipe, model.embed_dim, n_bias)
        params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
        opt = torch.optim.Adam(params, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        step = 0
        with torch_threads(choose_threads(model, _rows(X, np.arange(1)), batch_size)):
            for _ in tqdm(range(epochs), desc=f"train {recipe}", disable=not progress):
                order = torch.randperm(n, generator=gen)
                for idx in split_batches(order, batch_size, merge_single=backbone != "mlp"):
                    h = model.embed(_rows(X, idx.numpy()))
                    loss = _target_loss(model.head(h), yt[idx], class_weight)
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


def _target_loss(
    logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy of the target head: softmax over k logits, or sigmoid of one logit."""
    if logits.shape[1] > 1:
        return F.cross_entropy(logits, y, weight=weight)
    per_row = None if weight is None else weight[y]
    return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), weight=per_row)


def _training_inputs(X: np.ndarray, backbone: str, width: int | None, dropout: float) -> np.ndarray:
    """Tabular features as one float32 array; images left as they are (read per batch)."""
    if backbone == "mlp":
        if width is not None:
            raise ValueError("width sets the channels of an image backbone; the mlp uses hidden")
        return np.asarray(X, dtype=np.float32)
    if dropout:
        raise ValueError(f"dropout applies to the mlp backbone only, not {backbone!r}")
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    image_channels(X.shape[1:], backbone)
    return X


def _new_backbone(
    backbone: str, X: np.ndarray, n_classes: int, hidden: int, width: int | None, dropout: float
) -> nn.Module:
    if backbone == "vit":
        return SmallViT(X.shape[1], n_classes, image_size=X.shape[2:], width=width or 64)
    if backbone != "mlp":
        return image_net(backbone, X.shape[1], n_classes, width)
    xt = torch.as_tensor(X)
    model = TabularNet(xt.shape[1], n_classes, hidden, dropout)
    model.loc.copy_(xt.mean(0))
    std = xt.std(0)
    model.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
    return model


def _rows(X: np.ndarray, index: np.ndarray | slice) -> torch.Tensor:
    """Rows ``index`` of ``X`` as a float32 tensor; only these rows are read and converted."""
    return torch.from_numpy(np.require(X[index], dtype=np.float32, requirements="W"))


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Softmax probabilities of the model's logits, float64 of shape (n, k); a one-logit
    (sigmoid) model gives ``[1 - p, p]``.

    ``X`` is converted to a tensor one chunk of ``batch_size`` rows at a time (None: 4096
    rows of features, 256 images).
    """
    if batch_size is None:
        batch_size = 4096 if np.ndim(X) == 2 else 256
    n = n_rows(X)
    out = []
    for i in range(0, n, batch_size):
        logits = model(_rows(X, slice(i, i + batch_size))).double()
        if logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)  # sigmoid = softmax
        out.append(torch.softmax(logits, dim=1))
    return torch.cat(out).numpy()
