"""Patch models (paper Sec. IV-B, Eq. 18): learn the distilled bias rule from ``x`` alone.

Two ways to learn the rule, measured side by side in ``docs/table2.md``:

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

The rule strategy (what the patch outputs, what it is trained on, how it is wrapped) and the
patch factory live here only: :func:`train_patch` builds and trains a patch for
:class:`ruleeraser.Eraser`, :func:`rebuild_patch` rebuilds a saved one.

Example
-------
>>> import numpy as np, torch
>>> from ruleeraser.distill import distill
>>> rng = np.random.default_rng(0)
>>> b = rng.integers(0, 2, 200); y = rng.integers(0, 2, 200)
>>> X = torch.from_numpy(np.c_[b, rng.normal(size=200)]).float()
>>> log_m = np.log(np.where(b[:, None] == [0, 1], 0.8, 0.2))  # a model that follows b
>>> d = distill(log_m, y, b, n_classes=2, n_bias=2)
>>> patch, report = train_patch(
...     "mlp", "group", X, d, y, b, seed=0,
...     max_epochs=50, patience=5, learning_rate=1e-2, weight_decay=0.0,
... )
>>> G = torch.exp(patch(X)).detach().numpy()  # each row gets the rule of its bias group
>>> bool(np.allclose(G[b == 0].mean(axis=0), [0.8, 0.2], atol=0.05))
True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ruleeraser.distill import Distillation
from ruleeraser.nets import IMAGE_NETS, image_channels, image_net
from ruleeraser.side_by_side import can_stack, fit_side_by_side
from ruleeraser.training import FitReport, fit_module, stratified_holdout

Rule = Literal["group", "sample"]
PatchSpec = str | nn.Module | Callable[[int, int], nn.Module]

#: The ``rule`` values, and the built-in patch architectures (``patch=`` by name).
RULES = ("group", "sample")
PATCHES = ("mlp", *IMAGE_NETS)

#: Default patch mini-batch rows for tabular and image inputs: a calibration set of a few
#: hundred images needs more than a handful of steps per epoch (BatchNorm's running
#: statistics lag behind, and early stopping fires before the patch has learnt anything).
TABLE_BATCH, IMAGE_BATCH = 256, 32


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

    def flops_per_row(self) -> int:
        """Floating-point operations of one row's forward pass (its matrix products)."""
        return sum(2 * m.in_features * m.out_features for m in self.net if isinstance(m, nn.Linear))

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


def patch_outputs(rule: Rule, n_classes: int, n_bias: int) -> int:
    """How many logits a patch outputs: k for ``"sample"``, one per bias value for ``"group"``."""
    return n_classes if rule == "sample" else n_bias


def default_batch_size(input_shape: Sequence[int]) -> int:
    """Patch mini-batch rows for rows of ``input_shape``: images get smaller batches."""
    return IMAGE_BATCH if len(input_shape) > 1 else TABLE_BATCH


def check_patch_spec(spec: PatchSpec, input_shape: Sequence[int]) -> None:
    """``ValueError`` when a named patch does not fit rows of ``input_shape``."""
    if isinstance(spec, str) and spec in IMAGE_NETS:
        image_channels(input_shape, spec)


def build_patch(
    spec: PatchSpec,
    input_shape: Sequence[int],
    n_out: int,
    *,
    hidden_sizes: Sequence[int] = (64, 64),
    X: torch.Tensor | None = None,
) -> nn.Module:
    """An untrained patch of ``n_out`` logits for rows of ``input_shape``.

    ``spec``: ``"mlp"``, a name of :data:`ruleeraser.nets.IMAGE_NETS`, a module (copied) or a
    factory ``(n_inputs, n_outputs) -> module``. With the calibration inputs ``X``, the MLP
    standardises with their statistics and a user's module is checked to output ``n_out``.
    """
    n_in = int(np.prod(input_shape))
    if isinstance(spec, str):
        if spec == "mlp":
            mlp = MLP(n_in, n_out, hidden_sizes)
            return mlp if X is None else mlp.set_scaling(X)
        return image_net(spec, image_channels(input_shape, spec), n_out)
    module = copy.deepcopy(spec) if isinstance(spec, nn.Module) else spec(n_in, n_out)
    if X is not None:
        with torch.no_grad():
            out = module.eval()(X[:2])
        if out.ndim != 2 or out.shape[1] != n_out:
            raise ValueError(f"the patch must output (n, {n_out}) logits, got {tuple(out.shape)}")
    return module


def _seeded_patch(
    spec: PatchSpec, X: torch.Tensor, n_out: int, hidden_sizes: Sequence[int], seed: int
) -> nn.Module:
    """:func:`build_patch` for rows ``X``, initialised from ``seed`` (the global RNG kept)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_patch(spec, X.shape[1:], n_out, hidden_sizes=hidden_sizes, X=X)


def _as_rule(module: nn.Module, rule: Rule, group_rules: torch.Tensor) -> nn.Module:
    """The trained network as the patch ``log G``: a :class:`RuleMixture` for ``"group"``."""
    return RuleMixture(module, group_rules) if rule == "group" else module


def train_patch(
    spec: PatchSpec,
    rule: Rule,
    X: torch.Tensor,
    distillation: Distillation,
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    hidden_sizes: Sequence[int] = (64, 64),
    holdout: float = 0.2,
    batch_size: int | None = None,
    **training: Any,
) -> tuple[nn.Module, FitReport]:
    """Build and train the patch of one bias attribute (Eq. 18), in eval mode.

    ``y``, ``bias``: target and bias indices of the calibration rows; ``holdout`` of every
    (target, bias) cell is kept out for early stopping. ``rule="sample"`` trains on each
    row's distilled rule ``q`` (soft labels), ``rule="group"`` on the bias labels.
    ``training``: the options of :func:`ruleeraser.training.fit_module`.
    """
    n_out = patch_outputs(rule, distillation.mu.shape[0], distillation.counts.shape[1])
    module = _seeded_patch(spec, X, n_out, hidden_sizes, seed)
    heldout = stratified_holdout(y * distillation.counts.shape[1] + bias, holdout, seed)
    if rule == "sample":
        target, loss = torch.from_numpy(distillation.q).float(), "soft"
    else:
        target, loss = torch.from_numpy(bias), "hard"
    report = fit_module(
        module,
        X,
        target,
        loss=loss,
        heldout=heldout,
        generator=torch.Generator().manual_seed(seed),
        batch_size=batch_size or default_batch_size(X.shape[1:]),
        **training,
    )
    group_rules = torch.from_numpy(distillation.group_rules)
    return _as_rule(module, rule, group_rules).eval(), report


def train_patches_side_by_side(
    spec: PatchSpec,
    rule: Rule,
    X: torch.Tensor,
    rows: Sequence[np.ndarray],
    distillations: Sequence[Distillation],
    y: np.ndarray,
    bias: np.ndarray,
    *,
    seed: int,
    hidden_sizes: Sequence[int] = (64, 64),
    holdout: float = 0.2,
    batch_size: int | None = None,
    **training: Any,
) -> list[nn.Module] | None:
    """The patches of several row subsets ``rows`` (each with its distillation), trained side
    by side (:mod:`ruleeraser.side_by_side`), in eval mode; None where they cannot be: the
    ``"sample"`` rule (each subset's rows have their own targets) or an architecture that
    does not stack (train them one by one with :func:`train_patch`).
    ``training``: :func:`ruleeraser.training.fit_module`'s ``max_epochs``, ``patience``,
    ``learning_rate`` and ``weight_decay``.
    """
    if rule != "group":
        return None
    n_bias = distillations[0].counts.shape[1]
    modules = [_seeded_patch(spec, X[r], n_bias, hidden_sizes, seed) for r in rows]
    if not can_stack(modules):
        return None
    heldout = [stratified_holdout(y[r] * n_bias + bias[r], holdout, seed) for r in rows]
    fit_side_by_side(
        modules, X, torch.from_numpy(bias), rows, heldout, loss="hard", seed=seed,
        batch_size=batch_size or default_batch_size(X.shape[1:]), **training,
    )  # fmt: skip
    return [
        _as_rule(m, "group", torch.from_numpy(d.group_rules)).eval()
        for m, d in zip(modules, distillations, strict=True)
    ]


def rebuild_patch(
    spec: PatchSpec,
    rule: Rule,
    input_shape: Sequence[int],
    n_classes: int,
    n_bias: int,
    state: dict[str, torch.Tensor],
    *,
    hidden_sizes: Sequence[int] = (64, 64),
) -> nn.Module:
    """A saved patch from its weights ``state`` (``state_dict`` of :func:`train_patch`'s
    module), in eval mode; ``ValueError`` when the weights do not fit the architecture."""
    n_out = patch_outputs(rule, n_classes, n_bias)
    module = build_patch(spec, input_shape, n_out, hidden_sizes=hidden_sizes)
    module = _as_rule(module, rule, torch.full((n_bias, n_classes), 1.0 / n_classes))
    try:
        module.load_state_dict(state)  # the group rules too
    except RuntimeError as exc:
        problem = " ".join(str(exc).split())
        raise ValueError(f"the saved weights do not fit the patch: {problem}") from None
    return module.eval()
