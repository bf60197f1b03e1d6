"""Group metrics of the paper (Sec. V-A), in percent.

The test set is split into (target, bias) groups. *Average* and *worst group accuracy* are the
mean and minimum of the groups' accuracies; *model bias* is EqualOdds (Eq. 20): for each
target class, the accuracy gap between bias groups, averaged over classes. Eq. 20 is written
for two bias values; with more, the gap is the max - min over bias values. For binary y and b
this equals fairlearn's ``equalized_odds_difference(agg="mean")`` times 100.

Beside them, what a user of an ordinary (not class-balanced) model also needs to see:
*overall accuracy* (share of all rows decided right) and each bias group's *decision rates*
(share of the group's rows given each decision; for a yes/no decision, the positive rate).

Example
-------
>>> r = report([0, 1, 0, 1], ["a", "a", "b", "b"], {"before": [0, 0, 0, 1], "after": [0, 1, 0, 1]})
>>> print(r.to_markdown())
| predictions | overall acc | average acc | worst acc | model bias |
|---|---|---|---|---|
| before | 75.00 | 75.00 | 0.00 | 50.00 |
| after | 100.00 | 100.00 | 100.00 | 0.00 |
<BLANKLINE>
Share of each bias group's rows given each decision (%):
<BLANKLINE>
| bias | rows | before: 0 | before: 1 | after: 0 | after: 1 |
|---|---|---|---|---|---|
| a | 2 | 100.00 | 0.00 | 50.00 | 50.00 |
| b | 2 | 50.00 | 50.00 | 50.00 | 50.00 |
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ruleeraser.inputs import encode_labels, to_labels


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
    def overall(self) -> float:
        """Accuracy over all rows (each group weighted by its size)."""
        correct = np.nansum(self.accuracy * self.counts)
        return float(correct / self.counts.sum())

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


@dataclass(frozen=True)
class DecisionRates:
    """Share (percent) of each bias group's rows given each decision.

    ``rates[j, c]``: percent of the rows of bias value ``biases[j]`` decided ``decisions[c]``;
    ``counts[j]``: the group's rows.
    """

    rates: np.ndarray
    counts: np.ndarray
    biases: list[Any]
    decisions: list[Any]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{bias value: {decision: percent}}``, labels as strings (JSON keys)."""
        return {
            str(b): {str(c): float(r) for c, r in zip(self.decisions, row, strict=True)}
            for b, row in zip(self.biases, self.rates, strict=True)
        }


def decision_rates(y_pred: Any, bias: Any, decisions: Any = None) -> DecisionRates:
    """Share of each bias group's rows given each decision, percent.

    ``decisions``: the possible decisions, in order (None: those in ``y_pred``); a decision
    of ``y_pred`` that is not among them raises ``ValueError``.

    Example
    -------
    >>> decision_rates([1, 1, 0, 1], [0, 0, 1, 1], decisions=[0, 1]).rates
    array([[  0., 100.],
           [ 50.,  50.]])
    """
    y_pred = to_labels(y_pred, "y_pred")
    bias = to_labels(bias, "bias")
    if len(y_pred) != len(bias):
        raise ValueError(f"lengths differ: {len(y_pred)} y_pred, {len(bias)} bias")
    if len(y_pred) == 0:
        raise ValueError("no samples")
    decisions = np.unique(y_pred) if decisions is None else np.asarray(decisions)
    d = encode_labels(y_pred, decisions, "y_pred")
    biases, b = np.unique(bias, return_inverse=True)
    counts = np.bincount(b, minlength=len(biases))
    cells = np.bincount(b * len(decisions) + d, minlength=len(biases) * len(decisions))
    rates = 100.0 * cells.reshape(len(biases), len(decisions)) / counts[:, None]
    return DecisionRates(rates, counts, biases.tolist(), decisions.tolist())


@dataclass
class Report:
    """Group metrics of several predictions of the same test set (e.g. before and after):
    the paper's (``rows``) and each bias group's decision rates (``rates``)."""

    rows: dict[str, GroupAccuracy] = field(default_factory=dict)
    rates: dict[str, DecisionRates] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Per prediction: ``overall_acc``, the paper's summary and ``decision_rates``."""
        out: dict[str, dict[str, Any]] = {}
        for name, g in self.rows.items():
            out[name] = {"overall_acc": g.overall, **g.summary()}
            if name in self.rates:
                out[name]["decision_rates"] = self.rates[name].to_dict()
        return out

    def to_markdown(self) -> str:
        """The metrics of each prediction, then the decision rates per bias group."""
        lines = [
            "| predictions | overall acc | average acc | worst acc | model bias |",
            "|---|---|---|---|---|",
        ]
        for name, g in self.rows.items():
            lines.append(
                f"| {name} | {g.overall:.2f} | {g.average:.2f} | {g.worst:.2f} | "
                f"{g.model_bias:.2f} |"
            )
        if self.rates:
            lines += ["", "Share of each bias group's rows given each decision (%):", ""]
            lines += self._rates_table()
        return "\n".join(lines)

    def _rates_table(self) -> list[str]:
        first = next(iter(self.rates.values()))
        heads = [f"{name}: {c}" for name, r in self.rates.items() for c in r.decisions]
        lines = ["| bias | rows | " + " | ".join(heads) + " |", "|---" * (len(heads) + 2) + "|"]
        for j, (b, n) in enumerate(zip(first.biases, first.counts, strict=True)):
            cells = [f"{v:.2f}" for r in self.rates.values() for v in r.rates[j]]
            lines.append(f"| {b} | {n} | " + " | ".join(cells) + " |")
        return lines


def report(y_true: Any, bias: Any, predictions: dict[str, Any], decisions: Any = None) -> Report:
    """A :class:`Report` of named predictions, e.g. ``{"before": y0, "after": y1}``.

    ``decisions``: the possible decisions (e.g. the model's classes) for the decision rates;
    None: every label of ``y_true`` and of the predictions.
    """
    y_true = to_labels(y_true, "y_true")
    predictions = {name: to_labels(pred, name) for name, pred in predictions.items()}
    if decisions is None:
        decisions = np.unique(np.concatenate([y_true, *predictions.values()]))
    return Report(
        {name: group_accuracy(y_true, pred, bias) for name, pred in predictions.items()},
        {name: decision_rates(pred, bias, decisions) for name, pred in predictions.items()},
    )
