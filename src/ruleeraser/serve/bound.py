"""The largest input the patches can take: a bound on ``|x|`` under which their float32
forward pass stays finite, stated in the proxy's schema so that no request it accepts can
overflow a patch.

For the patches built here (:class:`ruleeraser.patch.MLP`, alone or in a
:class:`ruleeraser.patch.RuleMixture`) interval arithmetic gives it: if ``|h| <= a B + c``
holds for a layer's input, a linear layer's output (and every partial sum of it) is at most
``||W||_inf (a B + c) + |b|_inf``, a ReLU or a dropout keeps the bound, a tanh or a sigmoid
caps it at 1. ``B`` is the largest value that keeps every layer below a quarter of the float32
maximum (a margin for rounding), rounded down to two significant digits. A patch of other
layers gets the float32 maximum, and the proxy answers 422 for rows it cannot compute.

Example
-------
>>> import torch
>>> from ruleeraser.patch import MLP
>>> patch = MLP(3, 2, hidden_sizes=[4])
>>> with torch.no_grad():
...     _ = patch.net[0].weight.fill_(10.0), patch.net[2].weight.fill_(1.0)
>>> patch_bound(patch) < FLOAT32_MAX / 4 / (3 * 10 * 4)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ruleeraser.patch import MLP, RuleMixture, Standardize

FLOAT32_MAX = float(np.finfo(np.float32).max)
_LIMIT = FLOAT32_MAX / 4
#: A layer's bound: ``|output| <= a |input| + c``, elementwise maxima.
Growth = tuple[float, float]


def input_bound(patches: Iterable[nn.Module]) -> float:
    """The largest ``|x|`` (every value of a row) for which all ``patches`` stay finite."""
    return min((patch_bound(p) for p in patches), default=FLOAT32_MAX)


def patch_bound(patch: nn.Module) -> float:
    """The largest ``|x|`` for which ``patch`` stays finite (see the module docstring)."""
    layers = _layers(patch)
    if layers is None:
        return FLOAT32_MAX
    a, c, bound = 1.0, 0.0, _LIMIT
    for layer in layers:
        grow = _growth(layer)
        if grow is None:
            return FLOAT32_MAX
        a, c = grow[0] * a, grow[0] * c + grow[1]
        if a > 0:
            bound = min(bound, (_LIMIT - c) / a)
    if not bound > 0:
        return 0.0
    digits = 10 ** (math.floor(math.log10(bound)) - 1)
    return float(math.floor(bound / digits) * digits)


def _layers(patch: nn.Module) -> list[nn.Module] | None:
    """The layers a patch applies in turn, or None for a patch of other modules."""
    if isinstance(patch, RuleMixture):  # a softmax over finite logits, then a finite mixture
        return _layers(patch.bias_net)
    if isinstance(patch, MLP):
        return [patch.standardize, *patch.net]
    if isinstance(patch, nn.Sequential):
        return list(patch)
    return None


@torch.no_grad()
def _growth(layer: nn.Module) -> Growth | None:
    if isinstance(layer, Standardize):  # (x - mean) / scale, column by column
        inverse = 1.0 / layer.scale.double().abs()
        return float(inverse.max()), float((layer.mean.double().abs() * inverse).max())
    if isinstance(layer, nn.Linear):
        rows = layer.weight.double().abs().sum(dim=1)
        bias = 0.0 if layer.bias is None else float(layer.bias.double().abs().max())
        return float(rows.max()), bias
    if isinstance(layer, (nn.ReLU, nn.LeakyReLU, nn.Dropout, nn.Identity, nn.Flatten)):
        return 1.0, 0.0
    if isinstance(layer, (nn.Tanh, nn.Sigmoid)):
        return 0.0, 1.0
    return None
