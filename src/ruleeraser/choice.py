"""The removal's settings chosen for a :class:`ruleeraser.goal.Goal`, on rows the patches did
not learn from, with the expected gap and an interval for it.

How (``docs/goal.md``):

1. **Out of fold.** The calibration rows are split into folds (stratified by target and bias);
   each fold's patch outputs come from patches trained on the other folds
   (:func:`fold_codes`), so that the choice sees the patches as new rows will.
2. **Candidates.** Strength 0 (the model) to 3; for two classes, with the class prior kept,
   a grid of log-space offsets of the decision (a threshold, which also holds the paper's
   class-balanced prior); for more classes, the prior kept or balanced.
3. **Scored with less variance.** A small group of rows decides the gap, and its accuracy
   measured on 0/1 labels moves by many points from one draw of rows to the next; the best
   of hundreds of such noisy figures is the luckiest. So the candidates are scored on soft
   labels: each row's probability of each class given the model's output and the row's bias
   value, fitted on the calibration rows (:func:`soft_labels`); every row of a bias group
   then speaks for each of its target classes.
4. **The choice.** Among the candidates that meet the goal (gap at most ``max_gap``) and pass
   the guard (no bias group's balanced accuracy below the model's by more than its standard
   error), those whose objective is within one paired standard error of the best; of these,
   the one that changes the fewest of the model's decisions (do no harm). When none meets the
   goal, the guarded candidate of lowest gap.
5. **Honest figures.** The chosen setting's gap is measured again on the 0/1 labels of the
   out-of-fold rows (its noise is not the noise the choice was made on), and an interval
   drawn from each group's binomial spread (:func:`gap_interval`).

Example
-------
>>> import numpy as np
>>> y = np.array([0, 1, 0, 1, 0, 1]); b = np.array([0, 0, 1, 1, 0, 1])
>>> fold_codes([y, b], n_folds=2, seed=0)  # each (y, b) stratum split over both folds
array([1, 0, 1, 1, 0, 0])
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from ruleeraser.goal import Cells, Goal, gap, row_weights
from ruleeraser.removal import Removal
from ruleeraser.rule_scale import share_variance

#: The strengths tried for two classes (each with every offset) ...
STRENGTHS = tuple(np.round(np.arange(0.0, 3.0 + 1e-9, 0.1), 2))
#: ... and for more (each with the prior kept and balanced).
COARSE_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
#: Candidates whose objective is within this many paired standard errors of the best count
#: as ties (the lowest gap among them is chosen).
TIES = 1.0
#: For two classes, the log-space offsets of the decision tried.
OFFSETS = tuple(np.round(np.arange(-6.0, 6.0 + 1e-9, 0.1), 2))
#: Folds of the calibration rows for the out-of-fold patch outputs.
N_FOLDS = 3
#: Draws of the groups' accuracies for the interval.
N_DRAWS = 4000
#: How candidates are scored: on soft labels (:func:`soft_labels`) or on the 0/1 labels
#: (``"hard"``, measured against in ``benchmarks/goal.py --hard``).
SCORING = "soft"


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen removal and what it is expected to do on new rows.

    Attributes
    ----------
    removal: the settings chosen.
    met: whether a candidate met the goal on the out-of-fold rows.
    expected_gap: the gap (points) measured on the out-of-fold rows' labels.
    interval: ``(low, high)``, the goal's ``confidence`` interval of the gap (points).
    objective: the objective (points) on the out-of-fold rows' labels.
    changed: the share of out-of-fold rows whose decision differs from the model's (points).
    small_cells: the (target index, bias column, bias code, rows, more rows needed) that
        widen the interval most, when its upper end lies above the goal.
    blocked: per bias column and group, how many candidates the guard refused for it.
    """

    removal: Removal
    met: bool
    expected_gap: float
    interval: tuple[float, float]
    objective: float
    changed: float
    small_cells: tuple[tuple[int, int, int, int, int | None], ...]
    blocked: tuple[tuple[int, int, int], ...]


def fold_codes(strata: Sequence[np.ndarray], n_folds: int, seed: int) -> np.ndarray:
    """A fold number per row, each stratum (the rows sharing every code) spread evenly."""
    keys = np.unique(np.stack(strata, axis=1), axis=0, return_inverse=True)[1].ravel()
    rng = np.random.default_rng(seed)
    folds = np.empty(len(keys), dtype=np.int64)
    start = int(rng.integers(n_folds))
    for key in np.unique(keys):
        rows = rng.permutation(np.flatnonzero(keys == key))
        folds[rows] = (start + np.arange(len(rows))) % n_folds
        start = (start + len(rows)) % n_folds
    return folds


def soft_labels(
    log_model: np.ndarray,
    log_patches: Sequence[np.ndarray],
    y: np.ndarray,
    biases: Sequence[np.ndarray],
    n_bias: Sequence[int],
) -> np.ndarray:
    """Each row's probability of each class given what every candidate decides from (the
    model's and the patches' log-outputs) and its bias values: a multinomial logistic
    regression of ``y`` on the log-outputs, each bias group's indicator and the log-outputs
    within each bias group (a group's own slope: a biased model's output means another thing
    in each group), fitted on the calibration rows (a few dozen parameters, lightly
    penalised). A candidate's decision is a function of the log-outputs alone, so its
    expected accuracy in a group needs no more."""
    k = log_model.shape[1]
    outputs = np.concatenate([log_model, *log_patches], axis=1)
    columns = [outputs]
    for b, m in zip(biases, n_bias, strict=True):
        member = np.eye(m)[b]
        columns += [member, *(outputs * member[:, [g]] for g in range(m))]
    inputs = np.concatenate(columns, axis=1)
    x = torch.as_tensor(inputs, dtype=torch.float64)
    target = torch.as_tensor(y, dtype=torch.long)
    weight = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        weight[:k] = torch.eye(k, dtype=torch.float64)  # start at the model's own output
    optimiser = torch.optim.LBFGS([weight], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ weight, target)
        value = value + 1e-3 * (weight**2).sum() / len(y)
        value.backward()
        return value

    optimiser.step(loss)
    with torch.no_grad():
        return torch.softmax(x @ weight, dim=1).numpy()


def _candidates(
    log_model: np.ndarray, log_patches: Sequence[np.ndarray], log_priors: np.ndarray
) -> tuple[list[Removal], np.ndarray]:
    """The candidate removals and their decisions, ``(C, n)`` class indices."""
    k = log_model.shape[1]
    scales = (1.0,) * len(log_patches)
    removals, decisions = [], []
    offsets = np.asarray(OFFSETS)
    for s in STRENGTHS if k == 2 else COARSE_STRENGTHS:
        if k == 2:
            keep = Removal(s, "keep", scales, (0.0, 0.0))
            z = np.log(keep.apply(log_model, log_patches, log_priors))
            margin = z[:, 1] - z[:, 0]
            removals += [keep.replace(offset=(0.0, float(c) + 0.0)) for c in OFFSETS]
            decisions.append((margin[None, :] + offsets[:, None] > 0).astype(np.int8))
        else:
            for prior in ("keep", "balanced"):
                removal = Removal(s, prior, scales, (0.0,) * k)
                removals.append(removal)
                fair = removal.apply(log_model, log_patches, log_priors)
                decisions.append(fair.argmax(1).astype(np.int8)[None])
    return removals, np.concatenate(decisions)


def _shares(c: Cells, constraint: str) -> tuple[np.ndarray, np.ndarray]:
    """The shares a constraint compares (accuracies or decision rates) and their counts."""
    if constraint == "demographic_parity":
        return c.decided, np.broadcast_to(c.rows, c.decided.shape)
    return c.num, c.den


def gap_interval(cells: Sequence[Cells], goal: Goal, seed: int = 0) -> tuple[float, float]:
    """The goal's ``confidence`` interval of the gap (points) from one decision's hard-label
    ``cells`` (one per bias column). Upper end: the quantile of the gap over draws of every
    group's share from its binomial spread. Lower end: per class (or decision), the spread
    between its highest and lowest group less the normal quantile of their difference's
    standard error, at least 0, averaged (a gap of noisy shares is never below the true one
    on average, so draws alone would put the lower end too high when groups are equal)."""
    rng = np.random.default_rng(seed)
    tail = (1.0 - goal.confidence) / 2.0
    z = NormalDist().inv_cdf(1.0 - tail)
    draws, low = np.zeros(N_DRAWS), 0.0
    for c in cells:
        num, den = _shares(c, goal.constraint)
        ratio = _ratio(num, den)
        share, var = np.where(den > 0, ratio, np.nan), share_variance(ratio, den)
        drawn = share + np.sqrt(var) * rng.standard_normal((N_DRAWS, *share.shape))
        drawn = np.clip(drawn, 0.0, 1.0)
        if goal.constraint == "equal_opportunity":
            share, var, drawn = share[-1:], var[-1:], drawn[:, -1:]
        draws = np.maximum(draws, _spread(drawn))
        bounds = []
        for row, v in zip(share, var, strict=True):
            seen = np.flatnonzero(~np.isnan(row))
            if seen.size < 2:
                continue
            hi, lo = seen[np.argmax(row[seen])], seen[np.argmin(row[seen])]
            bounds.append(max(0.0, row[hi] - row[lo] - z * np.sqrt(v[hi] + v[lo])))
        low = max(low, 100.0 * float(np.mean(bounds)) if bounds else 0.0)
    high = float(np.quantile(draws, 1.0 - tail))
    return low, max(high, low)


def _spread(drawn: np.ndarray) -> np.ndarray:
    """Per draw, the mean over rows (classes or decisions) seen in two groups or more of the
    spread between the highest and lowest group, in points."""
    seen = (~np.isnan(drawn)).sum(axis=-1) >= 2
    spread = np.where(seen, np.nanmax(drawn, axis=-1) - np.nanmin(drawn, axis=-1), 0.0)
    return 100.0 * spread.sum(axis=-1) / np.maximum(seen.sum(axis=-1), 1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def choose(
    log_model: np.ndarray,
    log_patches: Sequence[np.ndarray],
    log_priors: np.ndarray,
    y: np.ndarray,
    biases: Sequence[np.ndarray],
    n_bias: Sequence[int],
    goal: Goal,
    *,
    soft: bool | None = None,
) -> Choice:
    """Choose the removal for ``goal`` (see the module's docstring).

    Parameters
    ----------
    log_model: ``log M(x)`` on the calibration rows, ``(n, k)``.
    log_patches: each patch's out-of-fold ``log G_j(x)`` on the same rows.
    log_priors: the class prior each patch holds, ``(n_patches, k)``.
    y: target indices; biases: each patch's bias codes; n_bias: each bias column's values.
    goal: what fair means.
    soft: score the candidates on soft labels (:func:`soft_labels`); False: on 0/1 labels;
        None: as :data:`SCORING` says.
    """
    soft = SCORING == "soft" if soft is None else soft
    k = log_model.shape[1]
    hard = np.eye(k)[y]
    labels = soft_labels(log_model, log_patches, y, biases, n_bias) if soft else hard
    removals, decided = _candidates(log_model, log_patches, log_priors)
    pairs = list(zip(biases, n_bias, strict=True))
    cells = [Cells.of_classes(labels, decided, b, m) for b, m in pairs]
    gaps = np.max([gap(c, goal.constraint) for c in cells], axis=0)
    weights = np.mean([row_weights(labels, b, m, goal.objective) for b, m in pairs], axis=0)
    gains = np.take_along_axis(weights[None], decided[..., None], axis=2)[..., 0]  # (C, n)
    objective = 100.0 * gains.sum(axis=1)
    model = log_model.argmax(axis=1)
    ok, blocked = _guard(labels, hard, cells, model, pairs, goal)
    changed = 100.0 * (decided != model).mean(axis=1)
    feasible = ok & (gaps <= goal.max_gap_points + 1e-9)
    met = bool(feasible.any())
    if met:
        best = int(np.flatnonzero(feasible)[np.argmax(objective[feasible])])
        paired_se = 100.0 * np.sqrt(len(y)) * (gains - gains[best]).std(axis=1)
        near = np.flatnonzero(feasible & (objective >= objective[best] - TIES * paired_se))
        untouched = near[changed[near] == 0]
        pick = int(
            untouched[0] if untouched.size else near[np.lexsort((-objective[near], gaps[near]))[0]]
        )
    else:
        pool = np.flatnonzero(ok)
        pick = int(pool[np.lexsort((-objective[pool], gaps[pool]))[0]])
    onehot = np.eye(k)[decided[pick]]
    return _report(removals[pick], met, onehot, hard, biases, n_bias, goal, changed[pick],
                   blocked)  # fmt: skip


def _guard(
    labels: np.ndarray,
    hard: np.ndarray,
    cells: Sequence[Cells],
    model: np.ndarray,
    pairs: Sequence[tuple[np.ndarray, int]],
    goal: Goal,
) -> tuple[np.ndarray, tuple[tuple[int, int, int], ...]]:
    """Per candidate (``cells``: theirs per bias column), whether every bias group's balanced
    accuracy stays within its standard error of the model's; and per (bias column, group) how
    many candidates it refused."""
    ok = np.ones(len(cells[0].num), dtype=bool)
    blocked = []
    model_onehot = np.eye(hard.shape[1])[model]
    for j, ((b, m), mine) in enumerate(zip(pairs, cells, strict=True)):
        own = Cells.of(labels, model_onehot, b, m).group_balanced_accuracy()
        exact = Cells.of(hard, model_onehot, b, m)
        var = share_variance(_ratio(exact.num, exact.den), exact.den)
        held = (exact.den > 0).sum(axis=0)
        se = np.sqrt(np.where(exact.den > 0, var, 0).sum(axis=0)) / np.maximum(held, 1)
        fails = mine.group_balanced_accuracy() < own - se - 1e-12  # (C, n_bias)
        for g in range(m):
            blocked.append((j, g, int(fails[:, g].sum())))
        if goal.guard:
            ok &= ~fails.any(axis=1)
    return ok, tuple(blocked)


def _report(
    removal: Removal,
    met: bool,
    onehot: np.ndarray,
    hard: np.ndarray,
    biases: Sequence[np.ndarray],
    n_bias: Sequence[int],
    goal: Goal,
    changed: float,
    blocked: tuple[tuple[int, int, int], ...],
) -> Choice:
    cells = [Cells.of(hard, onehot, b, m) for b, m in zip(biases, n_bias, strict=True)]
    expected = float(max(gap(c, goal.constraint) for c in cells))
    interval = gap_interval(cells, goal)
    weights = np.mean([row_weights(hard, b, m, goal.objective) for b, m in
                       zip(biases, n_bias, strict=True)], axis=0)  # fmt: skip
    objective = 100.0 * float((onehot * weights).sum())
    small = (
        _small_cells(cells, goal, expected, interval) if interval[1] > goal.max_gap_points else ()
    )
    return Choice(removal, met, expected, interval, objective, float(changed), small, blocked)


def _small_cells(
    cells: Sequence[Cells], goal: Goal, expected: float, interval: tuple[float, float]
) -> tuple[tuple[int, int, int, int, int | None], ...]:
    """The groups whose spread widens the interval most, with the rows they hold and how many
    more would bring the interval's upper end to the goal at the same expected gap (None: the
    expected gap itself is above the goal, so no number of rows promises it)."""
    room = goal.max_gap_points - expected
    width = interval[1] - expected
    factor = None if room <= 0 else max((width / room) ** 2, 1.0)
    found = []
    for j, c in enumerate(cells):
        num, den = _shares(c, goal.constraint)
        var = np.where(den > 0, share_variance(_ratio(num, den), den), 0.0)
        for t, g in zip(*np.nonzero(den > 0), strict=True):
            rows = int(round(den[t, g]))
            more = None if factor is None else int(np.ceil(rows * (factor - 1.0)))
            found.append((float(var[t, g]), (int(t), j, int(g), rows, more)))
    found.sort(key=lambda item: -item[0])
    return tuple(cell for _, cell in found[:4])


def out_of_fold(
    train: Callable[[list[np.ndarray], int], Sequence[Any]],
    log_patch: Callable[[Any, np.ndarray], np.ndarray],
    strata: Sequence[np.ndarray],
    n_patches: int,
    seed: int,
    n_folds: int = N_FOLDS,
) -> list[np.ndarray]:
    """Each patch's log-output on every row from a patch trained without that row's fold.

    ``train(rows, j)`` trains patch ``j`` once per entry of ``rows`` (the rows of every fold
    but one) and returns the patches; ``log_patch(patch, rows)`` is a patch's ``log G`` on
    ``rows``; ``strata``: the codes the folds are stratified by.
    """
    folds = fold_codes(strata, n_folds, seed)
    held = [np.flatnonzero(folds == f) for f in range(n_folds)]
    kept = [np.flatnonzero(folds != f) for f in range(n_folds)]
    out = []
    for j in range(n_patches):
        patches = train(kept, j)
        values = [log_patch(patch, rows) for patch, rows in zip(patches, held, strict=True)]
        merged = np.zeros((len(folds), values[0].shape[1]))
        for rows, v in zip(held, values, strict=True):
            merged[rows] = v
        out.append(merged)
    return out


def _label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class GoalWarning(UserWarning):
    """The calibration rows cannot promise the goal (see the message)."""


def warn_goal(
    choice: Choice,
    goal: Goal,
    classes: np.ndarray,
    bias_names: Sequence[str],
    bias_values: Sequence[np.ndarray],
) -> None:
    """A :class:`GoalWarning` when the goal was not met on the out-of-fold rows, or the
    interval's upper end lies above it, naming the groups too small to tell."""
    low, high = choice.interval
    limit = goal.max_gap_points
    if choice.met and high <= limit:
        return
    what = f"the goal ({goal.constraint} gap <= {limit:g} points)"
    head = (
        f"no setting meets {what} on the calibration rows under the guard: kept the one of "
        "lowest gap"
        if not choice.met
        else f"{what} cannot be promised from the calibration rows"
    )
    cells = []
    for t, j, g, rows, more in choice.small_cells:
        need = "" if more is None else f", about {more} more"
        label, value = _label(classes[t]), _label(bias_values[j][g])
        cells.append(f"(target {label!r}, {bias_names[j]}={value!r}: {rows} rows{need})")
    tail = (
        "; no number of rows promises it at this expected gap"
        if choice.small_cells and choice.small_cells[0][4] is None
        else ""
    )
    warnings.warn(
        f"{head}: the chosen setting's expected gap is {choice.expected_gap:.1f} points, its "
        f"{100 * goal.confidence:g}% interval {low:.1f}-{high:.1f}. Groups too small to tell: "
        f"{', '.join(cells)}{tail}",
        GoalWarning,
        stacklevel=4,
    )


def choice_to_dict(choice: Choice) -> dict[str, Any]:
    """The choice as JSON-ready values (for ``eraser.json``)."""
    data = dataclasses.asdict(choice)
    data["removal"] = choice.removal.to_dict()
    data["interval"] = list(choice.interval)
    data["small_cells"] = [list(c) for c in choice.small_cells]
    data["blocked"] = [list(b) for b in choice.blocked]
    return data


def choice_from_dict(data: dict[str, Any]) -> Choice:
    """Back from :func:`choice_to_dict` (``ValueError`` naming a bad field)."""
    names = [f.name for f in dataclasses.fields(Choice)]
    if not isinstance(data, dict) or sorted(data) != sorted(names):
        raise ValueError(f"a choice is an object of {names}; got {data!r}")
    try:
        low, high = (float(v) for v in data["interval"])
        return Choice(
            removal=Removal.from_dict(data["removal"]),
            met=bool(data["met"]),
            expected_gap=float(data["expected_gap"]),
            interval=(low, high),
            objective=float(data["objective"]),
            changed=float(data["changed"]),
            small_cells=tuple(tuple(c) for c in data["small_cells"]),
            blocked=tuple(tuple(b) for b in data["blocked"]),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the choice is malformed: {exc}") from None
