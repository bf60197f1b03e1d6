"""Erasing strength: trade fairness against accuracy on held-out labelled data.

The output ``softmax(log M(x) - s * sum_j log G_j(x))`` moves from the deployed model
(``s = 0``) to the paper's Eraser (``s = 1``) and beyond. :func:`strength_curve` measures the
paper's group metrics along a grid of ``s``; :func:`select_strength` picks one for a target.
Use rows the patches were not trained on (a validation split of the calibration data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ruleeraser.eraser import Eraser
from ruleeraser.inputs import to_labels
from ruleeraser.metrics import group_accuracy

Target = Literal["least_bias", "best_accuracy"]
DEFAULT_STRENGTHS = tuple(np.round(np.linspace(0.0, 2.0, 21), 2))


def strength_curve(
    eraser: Eraser,
    X: Any,
    y: Any,
    bias: Any,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
) -> list[dict[str, float]]:
    """The paper's group metrics along a grid of strengths.

    Parameters
    ----------
    eraser: a fitted :class:`ruleeraser.Eraser`.
    X, y, bias: labelled held-out rows (the model is queried once per row); ``bias`` is the
        attribute the bias is measured on.
    strengths: the grid (default 0, 0.1, ..., 2).

    Returns
    -------
    One dict per strength: ``strength``, ``avg_acc``, ``worst_acc``, ``model_bias``.

    Example
    -------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from ruleeraser import Eraser
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 1500); b = np.where(rng.random(1500) < 0.9, y, 1 - y)
    >>> X = np.c_[y + rng.normal(0, 1.5, 1500), b]
    >>> eraser = Eraser(LogisticRegression().fit(X, y), random_state=0, max_epochs=20)
    >>> eraser = eraser.fit(X[:500], y[:500], bias=b[:500])
    >>> curve = strength_curve(eraser, X[500:], y[500:], b[500:], strengths=[0.0, 1.0])
    >>> curve[1]["model_bias"] < curve[0]["model_bias"]
    True
    """
    y = to_labels(y, "y")
    bias = to_labels(bias, "bias")
    proba, log_patches = eraser.outputs(X)
    curve = []
    for s in strengths:
        pred = eraser.classes_[eraser.remove(proba, log_patches, strength=s).argmax(axis=1)]
        curve.append({"strength": float(s), **group_accuracy(y, pred, bias).summary()})
    return curve


def select_strength(
    eraser: Eraser,
    X: Any,
    y: Any,
    bias: Any,
    *,
    target: Target = "least_bias",
    max_bias: float | None = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
) -> tuple[float, list[dict[str, float]]]:
    """Set ``eraser.strength`` for a target and return it with the measured curve.

    ``target="least_bias"``: the strength of lowest model bias (ties: higher average group
    accuracy). ``target="best_accuracy"``: the strength of highest average group accuracy
    among those with model bias at most ``max_bias`` (required). The other parameters are
    :func:`strength_curve`'s; the eraser's ``strength`` is set to the choice.

    Returns
    -------
    ``(strength, curve)``.
    """
    if target not in ("least_bias", "best_accuracy"):
        raise ValueError(f"target must be 'least_bias' or 'best_accuracy', got {target!r}")
    if target == "best_accuracy" and max_bias is None:
        raise ValueError("target='best_accuracy' needs max_bias, the bias bound in points")
    curve = strength_curve(eraser, X, y, bias, strengths)
    if target == "least_bias":
        best = min(curve, key=lambda r: (r["model_bias"], -r["avg_acc"]))
    else:
        allowed = [r for r in curve if r["model_bias"] <= max_bias]
        if not allowed:
            lowest = min(r["model_bias"] for r in curve)
            raise ValueError(
                f"no strength keeps model bias <= {max_bias}; the lowest reached is {lowest:.2f}"
            )
        best = max(allowed, key=lambda r: (r["avg_acc"], -r["model_bias"]))
    eraser.strength = best["strength"]
    return best["strength"], curve
