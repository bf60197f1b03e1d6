"""Group metrics of the paper (Sec. V-A), in percent.

The test set is split into (target, bias) groups. *Average* and *worst group accuracy* are the
mean and minimum of the groups' accuracies; *model bias* is EqualOdds (Eq. 20): for each
target class, the accuracy gap between bias groups, averaged over classes. Eq. 20 is written
for two bias values; with more, the gap is the max - min over bias values. For binary y and b
this equals fairlearn's ``equalized_odds_difference(agg="mean")`` times 100.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ruleeraser.inputs import to_labels


@dataclass(frozen=True)
class GroupAccuracy:
    """Accuracy (percent) and size of every (target, bias) group.

    ``accuracy[i, b]`` is NaN where the group is empty.
    """

    accuracy: np.ndarray
    counts: np.ndarray
    targets: list[Any]
    biases: list[Any]

    @property
    def average(self) -> float:
        """Mean accuracy over non-empty groups."""
        return float(np.nanmean(self.accuracy))

    @property
    def worst(self) -> float:
        """Lowest accuracy over non-empty groups."""
        return float(np.nanmin(self.accuracy))

    @property
    def model_bias(self) -> float:
        """EqualOdds (Eq. 20): per-class max - min accuracy over bias groups, class mean."""
        gaps = []
        for i, row in enumerate(self.accuracy):
            present = row[~np.isnan(row)]
            if present.size >= 2:
                gaps.append(present.max() - present.min())
            else:
                warnings.warn(
                    f"target {self.targets[i]!r} appears with fewer than two bias values; "
                    "left out of the model bias",
                    stacklevel=2,
                )
        if not gaps:
            raise ValueError("no target class appears with two bias values")
        return float(np.mean(gaps))

    def summary(self) -> dict[str, float]:
        """``avg_acc``, ``worst_acc`` and ``model_bias``."""
        return {"avg_acc": self.average, "worst_acc": self.worst, "model_bias": self.model_bias}


def group_accuracy(y_true: Any, y_pred: Any, bias: Any) -> GroupAccuracy:
    """Accuracy of every (target, bias) group of the test set."""
    y_true = to_labels(y_true, "y_true")
    y_pred = to_labels(y_pred, "y_pred")
    bias = to_labels(bias, "bias")
    if not (len(y_true) == len(y_pred) == len(bias)):
        raise ValueError(
            f"lengths differ: {len(y_true)} y_true, {len(y_pred)} y_pred, {len(bias)} bias"
        )
    if len(y_true) == 0:
        raise ValueError("no samples")
    targets, t = np.unique(y_true, return_inverse=True)
    biases, b = np.unique(bias, return_inverse=True)
    cell = t * len(biases) + b
    size = len(targets) * len(biases)
    counts = np.bincount(cell, minlength=size)
    correct = np.bincount(cell, weights=(y_true == y_pred).astype(float), minlength=size)
    with np.errstate(invalid="ignore"):
        acc = 100.0 * correct / counts
    shape = (len(targets), len(biases))
    return GroupAccuracy(
        acc.reshape(shape), counts.reshape(shape), targets.tolist(), biases.tolist()
    )


def average_group_accuracy(y_true: Any, y_pred: Any, bias: Any) -> float:
    """Mean accuracy over (target, bias) groups, percent."""
    return group_accuracy(y_true, y_pred, bias).average


def worst_group_accuracy(y_true: Any, y_pred: Any, bias: Any) -> float:
    """Lowest accuracy over (target, bias) groups, percent."""
    return group_accuracy(y_true, y_pred, bias).worst


def equal_odds(y_true: Any, y_pred: Any, bias: Any) -> float:
    """Model bias, EqualOdds (Eq. 20), percent."""
    return group_accuracy(y_true, y_pred, bias).model_bias


@dataclass
class Report:
    """Group metrics of several predictions of the same test set (e.g. before and after)."""

    rows: dict[str, GroupAccuracy] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: g.summary() for name, g in self.rows.items()}

    def to_markdown(self) -> str:
        lines = [
            "| predictions | average acc | worst acc | model bias |",
            "|---|---|---|---|",
        ]
        for name, g in self.rows.items():
            lines.append(f"| {name} | {g.average:.2f} | {g.worst:.2f} | {g.model_bias:.2f} |")
        return "\n".join(lines)


def report(y_true: Any, bias: Any, predictions: dict[str, Any]) -> Report:
    """A :class:`Report` of named predictions, e.g. ``{"before": y0, "after": y1}``."""
    return Report({name: group_accuracy(y_true, pred, bias) for name, pred in predictions.items()})
