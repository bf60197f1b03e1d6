"""How many labelled calibration rows does an eraser need? Refit it on nested subsets of a
calibration set and measure each refit on held-out labelled rows (the question of the paper's
Fig. 8, on a user's own data).

The subsets are nested (each holds the smaller ones) and stratified by (target, bias) cell,
so that a small subset keeps the cells' shares and the curve moves only with the size. Each
refit queries the model once per row of its subset; the held-out rows are queried once.

Example
-------
>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> from ruleeraser import Eraser
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 3000); b = np.where(rng.random(3000) < 0.9, y, 1 - y)
>>> X = np.c_[y + rng.normal(0, 1.5, 3000), b]
>>> model = LogisticRegression().fit(X[:1500], y[:1500])
>>> curve = calibration_curve(
...     Eraser(model, random_state=0, max_epochs=30), X[1500:], y[1500:], bias=b[1500:],
...     sizes=[100, 1000],
... )
>>> [p["n"] for p in curve.points], curve.n_eval
([100, 1000], 375)
>>> all(p["model_bias"] < curve.before["model_bias"] for p in curve.points)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ruleeraser.eraser import Eraser
from ruleeraser.inputs import n_rows, take_rows, to_labels
from ruleeraser.metrics import group_accuracy

__all__ = ["CalibrationCurve", "calibration_curve", "default_sizes", "nested_order"]

#: Rows of the smallest subset of :func:`default_sizes`.
SMALLEST = 50


@dataclass
class CalibrationCurve:
    """The group metrics of an eraser refitted on calibration subsets of growing size.

    Attributes
    ----------
    before: the deployed model's ``avg_acc``, ``worst_acc`` and ``model_bias`` (percent) on
        the evaluation rows.
    points: one dict per subset: ``n`` (calibration rows), ``avg_acc``, ``worst_acc``,
        ``model_bias`` and ``bias_cut`` (percent of the model's bias removed).
    n_eval: the evaluation rows.
    """

    before: dict[str, float]
    points: list[dict[str, float]] = field(default_factory=list)
    n_eval: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``before``, ``points`` and ``n_eval``."""
        return {"before": self.before, "points": self.points, "n_eval": self.n_eval}

    def to_markdown(self) -> str:
        """One line per subset size, the deployed model first."""
        b = self.before
        lines = [
            f"Measured on {self.n_eval} held-out labelled rows.",
            "",
            "| calibration rows | average acc | worst acc | model bias | bias cut |",
            "|---|---|---|---|---|",
            f"| none (deployed model) | {b['avg_acc']:.2f} | {b['worst_acc']:.2f} | "
            f"{b['model_bias']:.2f} | |",
        ]
        lines += [
            f"| {p['n']} | {p['avg_acc']:.2f} | {p['worst_acc']:.2f} | {p['model_bias']:.2f} | "
            f"{p['bias_cut']:.0f}% |"
            for p in self.points
        ]
        return "\n".join(lines) + "\n"


def default_sizes(n: int, count: int = 6) -> list[int]:
    """``count`` subset sizes on a geometric grid from ``min(SMALLEST, n)`` to ``n``.

    Example
    -------
    >>> default_sizes(5000)
    [50, 126, 315, 792, 1991, 5000]
    """
    if n < 1:
        raise ValueError(f"need at least one calibration row, got {n}")
    grid = np.geomspace(min(SMALLEST, n), n, count)
    return sorted({int(round(s)) for s in grid})


def nested_order(cells: np.ndarray, seed: int) -> np.ndarray:
    """An order of the rows whose every prefix keeps each cell's share (up to one row).

    Each cell's rows are shuffled and row ``i`` of a cell of ``m`` gets the rank
    ``(i + u) / m``, ``u`` uniform in [0, 1); rows are sorted by rank. So the first ``s``
    rows hold about ``s * m / n`` rows of each cell, and the subsets are nested.

    Parameters
    ----------
    cells: each row's cell (any labels), ``(n,)``.
    seed: seed of the shuffles.

    Returns
    -------
    A permutation of ``range(n)``.

    Example
    -------
    >>> order = nested_order(np.array([0] * 90 + [1] * 10), seed=0)
    >>> int((order[:20] >= 90).sum())  # a tenth of any prefix comes from cell 1
    2
    """
    rng = np.random.default_rng(seed)
    _, codes = np.unique(cells, return_inverse=True)
    rank = np.empty(len(codes))
    for c in np.unique(codes):
        rows = rng.permutation(np.flatnonzero(codes == c))
        rank[rows] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
    return np.argsort(rank, kind="stable")


def _holdout(cells: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Mask of a share ``share`` of the rows, stratified by cell."""
    order = nested_order(cells, seed + 1)
    mask = np.zeros(len(cells), dtype=bool)
    mask[order[: int(round(share * len(cells)))]] = True
    return mask


def calibration_curve(
    eraser: Eraser,
    X: Any,
    y: Any,
    *,
    bias: Any,
    sizes: Sequence[int] | None = None,
    eval_set: tuple[Any, Any, Any] | None = None,
    holdout: float = 0.25,
    random_state: int = 0,
    progress: bool = False,
) -> CalibrationCurve:
    """Refit ``eraser`` on nested subsets of a calibration set and measure each refit.

    Parameters
    ----------
    eraser: an :class:`ruleeraser.Eraser`, fitted or not; every refit is a new eraser with
        its parameters (``eraser`` itself is left as it is).
    X, y: the labelled calibration rows (as ``Eraser.fit`` takes them).
    bias: the one bias column the metrics group by, ``(n,)``.
    sizes: calibration rows of each refit, at most the rows left for fitting (default:
        :func:`default_sizes` of those rows).
    eval_set: ``(X, y, bias)`` of other labelled rows to measure on; None keeps ``holdout``
        of the calibration rows out of every fit, stratified by (target, bias), and measures
        on them.
    holdout: the share held out when ``eval_set`` is None, in (0, 1).
    random_state: seed of the held-out share and of the nested subsets.
    progress: show a progress bar over the sizes.

    Returns
    -------
    The :class:`CalibrationCurve`.
    """
    y_all, b_all = to_labels(y, "y"), to_labels(bias, "bias")
    if not (len(y_all) == len(b_all) == n_rows(X)):
        raise ValueError(f"X has {n_rows(X)} rows, y {len(y_all)} and bias {len(b_all)}")
    cells = np.array([f"{t!r}|{c!r}" for t, c in zip(y_all, b_all, strict=True)])
    if eval_set is None:
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        held = _holdout(cells, holdout, random_state)
        eval_rows = np.flatnonzero(held)
        X_eval, y_eval, b_eval = take_rows(X, eval_rows), y_all[held], b_all[held]
    else:
        X_eval, y_eval, b_eval = eval_set
        y_eval, b_eval = to_labels(y_eval, "eval_set y"), to_labels(b_eval, "eval_set bias")
        held = np.zeros(len(y_all), dtype=bool)
    fit_rows = np.flatnonzero(~held)
    order = fit_rows[nested_order(cells[fit_rows], random_state)]
    sizes = default_sizes(len(order)) if sizes is None else sorted(int(s) for s in sizes)
    if not sizes or sizes[0] < 1 or sizes[-1] > len(order):
        raise ValueError(f"sizes must lie in 1..{len(order)} (the rows left for fitting)")
    proba = None
    curve = CalibrationCurve(before={}, n_eval=len(y_eval))
    for size in tqdm(sizes, desc="calibration sizes", disable=not progress):
        rows = np.sort(order[:size])
        refit = Eraser(**eraser.get_params())
        refit.fit(take_rows(X, rows), y_all[rows], bias=b_all[rows])
        if proba is None:  # the model is queried once on the evaluation rows
            proba, log_patches = refit.outputs(X_eval)
            before = refit.classes_[proba.argmax(1)]
            curve.before = group_accuracy(y_eval, before, b_eval).summary()
        else:
            log_patches = refit.patch_log_proba(X_eval)
        after = refit.classes_[refit.remove(proba, log_patches).argmax(1)]
        point = group_accuracy(y_eval, after, b_eval).summary()
        base = curve.before["model_bias"]
        cut = 100.0 * (1.0 - point["model_bias"] / base) if base > 0 else float("nan")
        curve.points.append({"n": size, **point, "bias_cut": cut})
    return curve
