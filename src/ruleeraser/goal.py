"""What fair means for a user: a constraint, the largest gap it may leave, an objective, and a
guard against levelling down. :class:`Goal` says it; the measures here score a decision
against it, from hard labels or from soft ones (each row's probability of each class).

Constraints (gaps in points, per bias column; the largest over columns counts):

- ``"equalized_odds"``: the reports' EqualOdds (Eq. 20): per target class, the accuracy gap
  between the bias groups of highest and lowest accuracy, averaged over classes;
- ``"equal_opportunity"``: the same gap for the positive (last) class alone;
- ``"demographic_parity"``: per decision, the gap in the rate at which the bias groups get it,
  averaged over decisions (for two classes: the positive-rate gap).

Objectives: ``"accuracy"``, ``"balanced_accuracy"`` (the mean over classes of their recall) and
``"average_group_accuracy"`` (the mean over (target, bias) groups, as the paper reports). The
guard: no bias group's balanced accuracy (the mean over classes of that group's per-class
accuracy) may fall below the model's by more than its standard error on the calibration rows.

Example
-------
>>> import numpy as np
>>> goal = Goal("equalized_odds", max_gap=0.03, objective="balanced_accuracy")
>>> y, b = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
>>> cells = Cells.of(np.eye(2)[y], np.eye(2)[[0, 1, 1, 1]], b, 2)
>>> float(gap(cells, goal.constraint))  # class 0: 100 - 0 points, class 1: no gap
50.0
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

Constraint = Literal["equalized_odds", "equal_opportunity", "demographic_parity"]
Objective = Literal["accuracy", "balanced_accuracy", "average_group_accuracy"]
CONSTRAINTS = ("equalized_odds", "equal_opportunity", "demographic_parity")
OBJECTIVES = ("accuracy", "balanced_accuracy", "average_group_accuracy")


@dataclasses.dataclass(frozen=True)
class Goal:
    """What fair means: ``constraint``'s gap at most ``max_gap`` (a fraction: 0.02 is 2 points)
    at the best ``objective``; ``guard`` refuses settings that leave a bias group's balanced
    accuracy below the model's by more than its standard error; ``confidence`` is the share
    of the interval reported for the expected gap.

    Example
    -------
    >>> Goal("demographic_parity", 0.05).max_gap_points
    5.0
    >>> Goal("parity", 0.05)
    Traceback (most recent call last):
    ...
    ValueError: goal.constraint must be one of ('equalized_odds', 'equal_opportunity', \
'demographic_parity'); got 'parity'
    """

    constraint: Constraint = "equalized_odds"
    max_gap: float = 0.03
    objective: Objective = "balanced_accuracy"
    guard: bool = True
    confidence: float = 0.9

    def __post_init__(self) -> None:
        if self.constraint not in CONSTRAINTS:
            raise ValueError(
                f"goal.constraint must be one of {CONSTRAINTS}; got {self.constraint!r}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"goal.objective must be one of {OBJECTIVES}; got {self.objective!r}")
        if not (isinstance(self.max_gap, (int, float)) and 0 <= self.max_gap < 1):
            raise ValueError(f"goal.max_gap must be a fraction in [0, 1); got {self.max_gap!r}")
        if not isinstance(self.guard, bool):
            raise ValueError(f"goal.guard must be True or False; got {self.guard!r}")
        if not (isinstance(self.confidence, float) and 0.5 <= self.confidence < 1):
            raise ValueError(f"goal.confidence must be in [0.5, 1); got {self.confidence!r}")

    @property
    def max_gap_points(self) -> float:
        """``max_gap`` in points, as the reports print gaps."""
        return 100.0 * float(self.max_gap)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Goal:
        """Back from :meth:`to_dict` (``ValueError`` naming a bad field)."""
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, dict) or sorted(data) != sorted(names):
            raise ValueError(f"a goal is an object of {names}; got {data!r}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Cells:
    """Per (target, bias) group, the weight of rows of that target (``den``) and of those
    decided right (``num``); per bias group, its rows (``rows``) and the rows given each
    decision (``decided``). With hard labels the weights are counts.

    ``num``, ``den``, ``decided``: ``(..., k, n_bias)``; ``rows``: ``(n_bias,)``. A leading
    axis holds candidates when the decisions carry one.
    """

    num: np.ndarray
    den: np.ndarray
    decided: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray, decisions: np.ndarray, bias: np.ndarray, n_bias: int) -> Cells:
        """From ``labels`` ``(n, k)`` (one-hot or soft), ``decisions`` ``(..., n, k)`` one-hot,
        and bias codes ``(n,)``."""
        member = np.eye(n_bias)[bias]  # (n, n_bias)
        den = labels.T @ member  # (k, n_bias)
        num = np.einsum("...nk,nk,nb->...kb", decisions, labels, member)
        decided = np.einsum("...nk,nb->...kb", decisions, member)
        return cls(num, np.broadcast_to(den, num.shape), decided, member.sum(axis=0))

    @classmethod
    def of_classes(
        cls, labels: np.ndarray, decided: np.ndarray, bias: np.ndarray, n_bias: int
    ) -> Cells:
        """As :meth:`of`, from class-index decisions ``(C, n)`` of C candidates, without their
        one-hot ``(C, n, k)`` form (one product of the candidates' rows per class)."""
        k = labels.shape[1]
        member = np.eye(n_bias, dtype=np.float32)[bias]  # (n, n_bias)
        weighted = (labels[:, :, None] * member[:, None, :]).astype(np.float32)  # (n, k, b)
        num = np.empty((len(decided), k, n_bias))
        counts = np.empty_like(num)
        for j in range(k):
            chosen = (decided == j).astype(np.float32)
            num[:, j] = chosen @ weighted[:, j]
            counts[:, j] = chosen @ member
        den = np.broadcast_to(labels.T @ member, num.shape)
        return cls(num, den, counts, member.sum(axis=0))

    def accuracy(self) -> np.ndarray:
        """Per (target, bias) group, the share decided right (NaN where no row)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.den > 0, self.num / np.where(self.den > 0, self.den, 1), np.nan)

    def group_balanced_accuracy(self) -> np.ndarray:
        """Per bias group, the mean over the classes it holds of its per-class accuracy."""
        return np.nanmean(self.accuracy(), axis=-2)


def gap(cells: Cells, constraint: Constraint) -> np.ndarray:
    """The constraint's gap in points (per candidate when ``cells`` holds several)."""
    if constraint == "demographic_parity":
        seen = cells.rows > 0
        rates = cells.decided[..., seen] / cells.rows[seen]
        return 100.0 * (rates.max(axis=-1) - rates.min(axis=-1)).mean(axis=-1)
    acc = cells.accuracy()
    if constraint == "equal_opportunity":
        acc = acc[..., -1:, :]
    spread = np.nanmax(acc, axis=-1) - np.nanmin(acc, axis=-1)
    seen = (~np.isnan(acc)).sum(axis=-1) >= 2
    return 100.0 * np.where(seen, spread, 0.0).sum(axis=-1) / np.maximum(seen.sum(axis=-1), 1)


def row_weights(
    labels: np.ndarray, bias: np.ndarray, n_bias: int, objective: Objective
) -> np.ndarray:
    """``(n, k)`` weights ``w`` such that the objective of a one-hot decision ``D`` is
    ``100 * sum(w * D)``: a row's share of the objective for each decision it may get."""
    n, k = labels.shape
    if objective == "accuracy":
        return labels / n
    if objective == "balanced_accuracy":
        per_class = labels.sum(axis=0)
        seen = per_class > 0
        return np.where(seen, labels / np.where(seen, per_class, 1), 0.0) / seen.sum()
    member = np.eye(n_bias)[bias]
    den = labels.T @ member  # (k, n_bias)
    seen = den > 0
    cell = np.where(seen, 1.0 / np.where(seen, den, 1), 0.0)[:, bias].T  # (n, k)
    return labels * cell / seen.sum()
