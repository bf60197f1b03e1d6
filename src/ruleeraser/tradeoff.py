"""The trade-off a removal offers on labelled rows: the goal's objective against its gap along
the strength, with the model (strength 0) and the removal in force on it.

Example
-------
>>> import numpy as np
>>> from ruleeraser.goal import Goal
>>> from ruleeraser.removal import Removal
>>> y = np.array([0, 0, 1, 1]); b = np.array([0, 1, 0, 1])
>>> log_model = np.log([[0.9, 0.1], [0.45, 0.55], [0.55, 0.45], [0.1, 0.9]])  # b decides
>>> log_patch = np.log([[0.7, 0.3], [0.3, 0.7], [0.7, 0.3], [0.3, 0.7]])
>>> removal = Removal(1.0, "balanced", (1.0,), (0.0, 0.0))
>>> points = tradeoff_curve(removal, log_model, [log_patch], None, y, {"b": b}, Goal(),
...                         strengths=(0.0, 1.0))
>>> [(p["strength"], p["objective"], p["gap"]) for p in points]
[(0.0, 50.0, 100.0), (1.0, 100.0, 0.0)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ruleeraser.goal import Cells, Goal, gap, row_weights
from ruleeraser.removal import Removal

#: The strengths along which the curve is drawn.
STRENGTHS = tuple(np.round(np.arange(0.0, 3.0 + 1e-9, 0.125), 3))


def goal_figures(
    y: np.ndarray, decision: np.ndarray, biases: Mapping[str, np.ndarray], goal: Goal
) -> tuple[float, float]:
    """The goal's objective and gap (points) of class-index decisions on labelled rows; the
    gap is the largest over the bias columns, the objective their mean."""
    k = int(max(y.max(), decision.max())) + 1
    labels, onehot = np.eye(k)[y], np.eye(k)[decision]
    gaps, objectives = [], []
    for column in biases.values():
        codes = np.unique(column, return_inverse=True)[1].ravel()
        m = int(codes.max()) + 1
        gaps.append(float(gap(Cells.of(labels, onehot, codes, m), goal.constraint)))
        objectives.append(
            100.0 * float((row_weights(labels, codes, m, goal.objective) * onehot).sum())
        )
    return float(np.mean(objectives)), max(gaps)


def tradeoff_curve(
    removal: Removal,
    log_model: np.ndarray,
    log_patches: Sequence[np.ndarray],
    log_priors: np.ndarray | None,
    y: np.ndarray,
    biases: Mapping[str, np.ndarray],
    goal: Goal,
    strengths: Sequence[float] = STRENGTHS,
) -> list[dict[str, float]]:
    """The goal's objective and gap along ``strengths``, the rest of ``removal`` as it is.

    Parameters
    ----------
    removal: the removal in force; its strength is replaced along the curve.
    log_model, log_patches, log_priors: as :meth:`ruleeraser.removal.Removal.combine` takes
        them (the patches already at the removal's scales, as :meth:`Eraser.outputs` gives
        them: the strength does not move the scales).
    y: target indices; biases: bias columns by name (any values).
    goal: the objective and the constraint measured.
    """
    points = []
    for s in strengths:
        fair = removal.replace(strength=float(s)).combine(log_model, log_patches, log_priors)
        objective, measured = goal_figures(y, fair.argmax(axis=1), biases, goal)
        points.append({"strength": float(s), "objective": objective, "gap": measured})
    return points
