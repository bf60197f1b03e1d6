"""The rule's scale: how much of each patch's bias-dependent part is removed, fitted so that
the bias groups' error rates match on the calibration rows.

A patch ``log G_j`` holds the class prior ``log pi_j`` (``Eraser.class_prior_``) and a
bias-dependent part ``log G_j - log pi_j``. Scaling only that part,

    ``log G_j'(x) = a_j * (log G_j(x) - log pi_j) + log pi_j``,

keeps the prior (``G_j'`` holds the same ``pi_j``), so ``a_j = 1`` is the paper's patch and
``a_j`` sizes the rule that Eq. 19 removes. The paper's size is not always the one that
equalises the groups: when the bias is not an input, the patch's bias posterior mixes the
group rules of rows whose group it gets wrong, and the group rules (class-balanced mean
log-outputs) need not equalise the groups' error rates even for the true group (CelebA
Blonde: 15 points of EqualOdds left by the paper's patch, 8 by the true groups' rules; see
``docs/rule-scale.md``). :func:`fit_rule_scale` measures EqualOdds (Eq. 20) of the eraser's
decision on the calibration rows, with their bias labels, along a grid of ``a_j``. Only scales
that keep the average group accuracy within one standard error of the paper's scale's count
(a gap can always be closed by deciding one class for everyone); among them it keeps, of the
scales within half a standard error of the lowest gap, the one closest to the paper's 1 (in
the manner of the one-standard-error rule: a gap measured on few rows moves the scale only as
far as the rows support). A class's (target, bias) groups of fewer than :data:`MIN_ROWS`
calibration rows are pooled into one beside its larger groups (a bias of many values: the
colours that conflict with a digit, a few images each, count as one "conflicting" group), and
left out when they are too few even pooled. Where groups are pooled, a scale may not lower the
average group accuracy at all (:data:`POOLED_ACCURACY_SE_SHARE`): a pooled group mixes bias
values that a scale moves differently, so its accuracy on the calibration rows guards the
per-group accuracy of new rows less well.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y, b = rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)
>>> z = 1.5 * (2 * y - 1) + rng.normal(0, 1, 4000) + (2 * b - 1)  # target evidence + bias
>>> log_model = -np.log1p(np.exp(-np.c_[-z, z]))
>>> half = -np.log1p(np.exp(-np.c_[0.5 - b, b - 0.5]))  # a patch that sees half the bias term
>>> fitted = fit_rule_scale(log_model, [half], np.log([[0.5, 0.5]]), y, [b])
>>> float(fitted.scales[0])  # the half-sized rule is scaled up
1.8
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ruleeraser.metrics import GroupAccuracy, group_accuracy
from ruleeraser.remove import remove_log

#: The scales tried: 0 (only the class prior removed) to 3 by 0.05.
SCALES = tuple(np.round(np.arange(0.0, 3.0 + 1e-9, 0.05), 2))
#: Scales whose gap is within this share of a standard error of the lowest count as equal.
SE_SHARE = 0.5
#: Scales whose average group accuracy falls below the paper's scale's by more than this
#: many of its standard errors are not considered.
ACCURACY_SE_SHARE = 1.0
#: The same where a class's small groups are pooled: no fall at all (docs/rule-scale.md,
#: "Where the pooled fit costs accuracy").
POOLED_ACCURACY_SE_SHARE = 0.0
#: Groups with fewer calibration rows are not measured alone: one row moves their accuracy by
#: a tenth or more, and a scale that flips a handful of them does not carry to new rows
#: (coloured MNIST: a few calibration images per colour-conflicting digit); a class's small
#: groups are pooled into one, measured when it holds as many.
MIN_ROWS = 10


def scale_rule(log_patch: np.ndarray, log_prior: np.ndarray, scale: float) -> np.ndarray:
    """``scale * (log G - log pi) + log pi``: the patch's bias-dependent part scaled.

    Parameters
    ----------
    log_patch: ``log G(x)``, ``(n, k)``.
    log_prior: the class prior the patch holds, ``log pi``, ``(k,)``.
    scale: the factor; 1 leaves the patch as it is.

    Returns
    -------
    The scaled log-patch ``(n, k)``.

    Example
    -------
    >>> scale_rule(np.log([[0.9, 0.1]]), np.log([0.5, 0.5]), 0.0).round(3)  # only the prior
    array([[-0.693, -0.693]])
    """
    log_patch = np.asarray(log_patch, dtype=np.float64)
    if scale == 1.0:
        return log_patch
    log_prior = np.asarray(log_prior, dtype=np.float64)
    return scale * (log_patch - log_prior) + log_prior


def share_variance(acc: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Variance of each group's accuracy share, with one success and one failure added (so
    that a group of a few rows all right or all wrong still counts as uncertain)."""
    share = (acc * counts + 1.0) / (counts + 2.0)
    return share * (1.0 - share) / (counts + 2.0)


def equal_odds_gap(
    y: np.ndarray,
    pred: np.ndarray,
    bias: np.ndarray,
    *,
    min_rows: int = 1,
    pool_small: bool = False,
) -> tuple[float, float]:
    """EqualOdds (Eq. 20, in points) of class indices ``pred`` and its standard error.

    Per target class, the gap between the bias groups of highest and lowest accuracy; the
    mean over classes seen with two bias values or more. The standard error treats each
    group's accuracy as a binomial share.

    Parameters
    ----------
    y, pred, bias: target, decision and bias indices ``(n,)``.
    min_rows: (target, bias) groups with fewer rows are left out.
    pool_small: instead, each class's groups of fewer than ``min_rows`` rows are pooled into
        one group, kept when it has ``min_rows`` rows and the class has a group of that many
        (a bias of many values: coloured MNIST's nine colours that conflict with a digit, a few
        calibration images each, become one group of "conflicting" images beside the aligned
        one). A binary bias is measured as without it.

    Returns
    -------
    ``(gap, standard error)`` in points; ``(0, 0)`` when no class is seen with two groups.

    Example
    -------
    >>> y, b = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    >>> gap, se = equal_odds_gap(y, np.array([0, 1, 1, 1]), b)
    >>> gap, round(se, 1)
    (50.0, 27.2)
    >>> y, b = np.zeros(6, int), np.array([0, 0, 1, 2, 3, 3])  # one class, four bias values
    >>> pred = np.array([0, 0, 1, 1, 0, 1])  # right on 2 of 2, 0 of 1, 0 of 1, 1 of 2
    >>> equal_odds_gap(y, pred, b, min_rows=2)[0]  # biases 1 and 2 left out: 100 - 50
    50.0
    >>> equal_odds_gap(y, pred, b, min_rows=2, pool_small=True)[0]  # pooled: 0 of 2
    100.0
    """
    return _gap(_class_groups(group_accuracy(y, pred, bias), min_rows, pool_small))


#: Per target class, the accuracy shares of its measured groups and their sizes.
_ClassGroups = list[tuple[np.ndarray, np.ndarray]]


def _class_groups(groups: GroupAccuracy, min_rows: int, pool_small: bool) -> _ClassGroups:
    """Per target class, the accuracy shares and sizes of its groups of ``min_rows`` rows or
    more, and with ``pool_small`` one more beside them: its smaller groups pooled, if they hold
    as many (one small group alone never does, so a binary bias is unchanged)."""
    out = []
    floor = max(min_rows, 1)
    pools = _pooled_classes(groups.counts, min_rows) & pool_small
    for acc, counts, pool in zip(groups.accuracy, groups.counts, pools, strict=True):
        share = np.nan_to_num(acc) / 100.0
        big = counts >= floor
        small = (counts > 0) & ~big
        shares, sizes = share[big], counts[big].astype(np.float64)
        if pool:
            pooled = counts[small].sum()
            shares = np.append(shares, (share[small] * counts[small]).sum() / pooled)
            sizes = np.append(sizes, pooled)
        out.append((shares, sizes))
    return out


def _pooled_classes(counts: np.ndarray, min_rows: int) -> np.ndarray:
    """Per target class (a row of ``counts``, the (target, bias) groups' sizes), whether its
    groups of fewer than ``min_rows`` rows are pooled: when it has a larger group and they
    hold ``min_rows`` rows together."""
    floor = max(min_rows, 1)
    big, small = counts >= floor, (counts > 0) & (counts < floor)
    return big.any(axis=1) & (np.where(small, counts, 0).sum(axis=1) >= floor)


def _gap(per_class: _ClassGroups) -> tuple[float, float]:
    gaps, variances = [], []
    for acc, counts in per_class:
        if acc.size < 2:
            continue
        order = np.argsort(acc, kind="stable")
        hi, lo = int(order[-1]), int(order[0])  # two distinct groups, even when all tie
        var = share_variance(acc, counts)
        gaps.append(acc[hi] - acc[lo])
        variances.append(var[hi] + var[lo])
    if not gaps:
        return 0.0, 0.0
    return 100.0 * float(np.mean(gaps)), 100.0 * float(np.sqrt(np.sum(variances))) / len(gaps)


def average_accuracy(
    y: np.ndarray,
    pred: np.ndarray,
    bias: np.ndarray,
    *,
    min_rows: int = 1,
    pool_small: bool = False,
) -> tuple[float, float]:
    """Average group accuracy (in points) of class indices ``pred`` over the (target, bias)
    groups of ``min_rows`` rows or more (with ``pool_small``, each class's smaller groups
    pooled as in :func:`equal_odds_gap`), and its standard error.

    Example
    -------
    >>> y, b = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    >>> acc, se = average_accuracy(y, np.array([0, 1, 1, 1]), b)
    >>> acc, round(se, 1)
    (75.0, 13.6)
    """
    return _average(_class_groups(group_accuracy(y, pred, bias), min_rows, pool_small))


def _average(per_class: _ClassGroups) -> tuple[float, float]:
    acc = np.concatenate([shares for shares, _ in per_class])
    if acc.size == 0:
        return 0.0, 0.0
    counts = np.concatenate([sizes for _, sizes in per_class])
    se = np.sqrt(share_variance(acc, counts).sum()) / len(acc)
    return 100.0 * float(acc.mean()), 100.0 * float(se)


@dataclass(frozen=True)
class RuleScaleFit:
    """The fitted scales and what they were chosen from.

    Attributes
    ----------
    scales: one scale per patch, ``(n_patches,)``.
    grid: the scales tried.
    gaps, errors: per patch, EqualOdds on the calibration rows at each scale of ``grid`` and
        its standard error, in points, ``(n_patches, len(grid))``.
    accuracies: per patch, the average group accuracy at each scale, in points.
    allowed: per patch, the scales whose average group accuracy is within
        ``ACCURACY_SE_SHARE`` standard errors of the paper's scale's
        (``POOLED_ACCURACY_SE_SHARE`` where small groups are pooled).
    """

    scales: np.ndarray
    grid: np.ndarray
    gaps: np.ndarray
    errors: np.ndarray
    accuracies: np.ndarray
    allowed: np.ndarray


def _choose(
    grid: np.ndarray, gaps: np.ndarray, errors: np.ndarray, allowed: np.ndarray, se_share: float
) -> float:
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        return 1.0
    best = candidates[int(np.argmin(gaps[candidates]))]
    near = candidates[gaps[candidates] <= gaps[best] + se_share * errors[best] + 1e-12]
    order = np.lexsort((gaps[near], np.abs(grid[near] - 1.0)))  # closest to 1, then lowest gap
    return float(grid[near[order[0]]])


def fit_rule_scale(
    log_model: np.ndarray,
    log_patches: Sequence[np.ndarray],
    log_priors: np.ndarray,
    y: np.ndarray,
    biases: Sequence[np.ndarray],
    *,
    keep_prior: bool = False,
    strength: float = 1.0,
    grid: Sequence[float] = SCALES,
    se_share: float = SE_SHARE,
    accuracy_se_share: float = ACCURACY_SE_SHARE,
    pooled_accuracy_se_share: float = POOLED_ACCURACY_SE_SHARE,
    min_rows: int = MIN_ROWS,
    pool_small: bool = True,
) -> RuleScaleFit:
    """Fit each patch's scale on labelled calibration rows (see the module's docstring).

    Patches are fitted in order, each on its own bias column with the patches before it at
    their fitted scales and those after it at 1.

    Parameters
    ----------
    log_model: ``log M(x)`` on the calibration rows, ``(n, k)``.
    log_patches: ``log G_j(x)`` of each patch on the same rows, ``(n, k)`` each.
    log_priors: the class prior each patch holds, ``(n_patches, k)``.
    y: target indices ``(n,)``.
    biases: each patch's bias indices ``(n,)``.
    keep_prior: measure the decision of ``prior="keep"`` (the class prior left in) instead of
        Eq. 19's.
    strength: the strength the eraser removes at (the scales are fitted for it).
    grid: the scales tried.
    se_share: scales within this share of a standard error of the lowest gap count as equal.
    accuracy_se_share: scales whose average group accuracy falls below the paper's scale's by
        more than this many of its standard errors are left out.
    pooled_accuracy_se_share: the same for a bias column whose small groups are pooled.
    min_rows: (target, bias) groups with fewer rows are not measured alone; with no class
        seen in two measured groups every gap is 0 and the scale stays 1.
    pool_small: pool each class's groups of fewer than ``min_rows`` rows into one beside its
        larger groups (:func:`equal_odds_gap`); False leaves them out.

    Returns
    -------
    The :class:`RuleScaleFit`.
    """
    grid_ = np.asarray(grid, dtype=np.float64)
    log_priors = np.asarray(log_priors, dtype=np.float64)
    scales = np.ones(len(log_patches))
    gaps = np.zeros((len(log_patches), len(grid_)))
    errors, accuracies = np.zeros_like(gaps), np.zeros_like(gaps)
    allowed = np.ones(gaps.shape, dtype=bool)

    def decide(trial: np.ndarray) -> np.ndarray:
        scaled = [scale_rule(log_g, log_priors[m], trial[m]) for m, log_g in enumerate(log_patches)]
        fair = remove_log(
            log_model, *scaled, strength=strength, log_prior=log_priors if keep_prior else None
        )
        return fair.argmax(axis=1)

    for j, bias in enumerate(biases):
        paper = scales.copy()
        paper[j] = 1.0
        groups = group_accuracy(y, decide(paper), bias)
        floor, floor_se = _average(_class_groups(groups, min_rows, pool_small))
        pooled = pool_small and bool(_pooled_classes(groups.counts, min_rows).any())
        for i, scale in enumerate(grid_):
            trial = scales.copy()
            trial[j] = scale
            groups = group_accuracy(y, decide(trial), bias)
            per_class = _class_groups(groups, min_rows, pool_small)  # once for both measures
            gaps[j, i], errors[j, i] = _gap(per_class)
            accuracies[j, i] = _average(per_class)[0]
        share = pooled_accuracy_se_share if pooled else accuracy_se_share
        allowed[j] = accuracies[j] >= floor - share * floor_se - 1e-9
        scales[j] = _choose(grid_, gaps[j], errors[j], allowed[j], se_share)
    return RuleScaleFit(scales, grid_, gaps, errors, accuracies, allowed)
