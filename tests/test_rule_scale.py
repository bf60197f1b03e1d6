"""Tests for ruleeraser.rule_scale and Eraser(rule_scale=...): the size of the removed rule,
fitted so that the bias groups' error rates match on the calibration rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ruleeraser import Eraser
from ruleeraser.distill import log_proba, softmax
from ruleeraser.metrics import equal_odds, group_accuracy
from ruleeraser.remove import remove_log
from ruleeraser.rule_scale import (
    SCALES,
    average_accuracy,
    equal_odds_gap,
    fit_rule_scale,
    scale_rule,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def log_sigmoid_pair(z: np.ndarray) -> np.ndarray:
    """``log [1 - s(z), s(z)]`` for logits ``z``."""
    return -np.logaddexp(0, -np.c_[-z, z])


def rows(n: int, seed: int, bias_term: float = 1.0):
    """Independent y and b; the model's logit is target evidence plus ``bias_term`` per group."""
    rng = np.random.default_rng(seed)
    y, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = 1.5 * (2 * y - 1) + rng.normal(0, 1, n) + bias_term * (2 * b - 1)
    return log_sigmoid_pair(z), y, b


def test_scaling_keeps_the_prior_the_patch_holds():
    rng = np.random.default_rng(0)
    log_g = np.log(softmax(rng.normal(size=(50, 3))))
    log_prior = np.log(softmax(log_g.mean(axis=0)))
    for scale in (0.0, 0.5, 2.5):
        scaled = scale_rule(log_g, log_prior, scale)
        np.testing.assert_allclose(softmax(scaled.mean(axis=0)), np.exp(log_prior))
        # only the bias-dependent part moves: scaled - prior = scale * (log G - prior)
        np.testing.assert_allclose(scaled - log_prior, scale * (log_g - log_prior))
    np.testing.assert_array_equal(scale_rule(log_g, log_prior, 1.0), log_g)


def test_gap_is_the_paper_equal_odds_and_its_error_hand_computed():
    rng = np.random.default_rng(1)
    y, b, pred = rng.integers(0, 2, 300), rng.integers(0, 3, 300), rng.integers(0, 2, 300)
    gap, _ = equal_odds_gap(y, pred, b)
    assert gap == pytest.approx(group_accuracy(y, pred, b).model_bias)
    # class 0: groups of 4 rows (3 right) and 2 rows (0 right); class 1 seen in one group only
    y = np.array([0, 0, 0, 0, 0, 0, 1])
    b = np.array([0, 0, 0, 0, 1, 1, 0])
    pred = np.array([0, 0, 0, 1, 1, 1, 1])
    gap, se = equal_odds_gap(y, pred, b)
    hi, lo = 4 / 6, 1 / 4  # (3 + 1) / (4 + 2) and (0 + 1) / (2 + 2)
    assert gap == pytest.approx(75.0)
    assert se == pytest.approx(100 * np.sqrt(hi * (1 - hi) / 6 + lo * (1 - lo) / 4))
    assert equal_odds_gap(np.array([0, 1]), np.array([0, 1]), np.array([0, 0])) == (0.0, 0.0)


def test_a_half_sized_rule_is_scaled_up_and_an_exact_one_kept():
    log_model, y, b = rows(4000, 0)
    prior = np.log([[0.5, 0.5]])
    half = log_sigmoid_pair(b - 0.5)  # logit +-0.5: half of the model's +-1 bias term
    exact = log_sigmoid_pair(2.0 * b - 1.0)
    fitted = fit_rule_scale(log_model, [half], prior, y, [b])
    assert 1.5 <= fitted.scales[0] <= 2.5
    assert fitted.gaps[0, SCALES.index(1.0)] > 10  # the paper's size leaves the bias
    assert fitted.gaps[0].min() < 3
    assert fit_rule_scale(log_model, [exact], prior, y, [b]).scales[0] == 1.0


def test_choice_is_the_scale_closest_to_one_within_half_an_error_of_the_lowest():
    log_model, y, b = rows(600, 2)
    half = log_sigmoid_pair(b - 0.5)
    fitted = fit_rule_scale(log_model, [half], np.log([[0.5, 0.5]]), y, [b])
    gaps, errors, grid = fitted.gaps[0], fitted.errors[0], fitted.grid
    best = gaps.argmin()
    near = gaps <= gaps[best] + 0.5 * errors[best] + 1e-12
    chosen = fitted.scales[0]
    assert near[list(grid).index(chosen)]
    assert abs(chosen - 1) == np.abs(grid[near] - 1).min()
    # and the error is what equal_odds_gap measures at the chosen scale
    fair = remove_log(log_model, scale_rule(half, np.log([0.5, 0.5]), chosen))
    gap, se = equal_odds_gap(y, fair.argmax(1), b)
    i = list(grid).index(chosen)
    assert (gap, se) == pytest.approx((gaps[i], errors[i]))


def test_a_scale_that_closes_the_gap_by_wrecking_the_decisions_is_not_taken():
    """A patch that carries part of the model's target evidence with the bias (as the paper's
    per-sample patch can): scaled up, it removes the evidence before the bias, and the lowest
    gap comes with decisions worse than chance. The scale stays where the average group
    accuracy holds."""
    rng = np.random.default_rng(4)
    y, b = rng.integers(0, 2, 3000), rng.integers(0, 2, 3000)
    evidence, bias_term = 1.5 * (2 * y - 1) + rng.normal(0, 1, 3000), 2 * b - 1
    log_model = log_sigmoid_pair(evidence + bias_term)
    patch = log_sigmoid_pair(0.6 * evidence + 0.5 * bias_term)
    prior = np.log([[0.5, 0.5]])
    fitted = fit_rule_scale(log_model, [patch], prior, y, [b])
    lowest = int(fitted.gaps[0].argmin())
    assert fitted.grid[lowest] > 1.7 and fitted.accuracies[0, lowest] < 50
    assert not fitted.allowed[0, lowest]
    chosen = fitted.scales[0]
    assert fitted.allowed[0, list(fitted.grid).index(chosen)]
    assert fitted.allowed[0, SCALES.index(1.0)]  # the paper's scale is always a candidate
    fair = remove_log(log_model, scale_rule(patch, prior[0], chosen)).argmax(1)
    acc, _ = average_accuracy(y, fair, b)
    floor, se = average_accuracy(y, remove_log(log_model, patch).argmax(1), b)
    assert acc >= floor - se


def test_keep_prior_measures_the_decision_with_the_prior_left_in():
    """With a skewed prior in the patch the two decisions differ; each curve is the gap of
    its own decision."""
    log_model, y, b = rows(3000, 3)
    prior = np.log([0.8, 0.2])
    patch = log_sigmoid_pair(b - 0.5) + prior  # a half-sized rule on top of the prior
    curves = {}
    for keep in (False, True):
        fitted = fit_rule_scale(log_model, [patch], prior[None], y, [b], keep_prior=keep)
        for i in (0, 20, 40):
            scaled = scale_rule(patch, prior, fitted.grid[i])
            fair = remove_log(log_model, scaled, log_prior=prior if keep else None)
            assert equal_odds_gap(y, fair.argmax(1), b)[0] == pytest.approx(fitted.gaps[0, i])
        curves[keep] = fitted.gaps[0]
    assert not np.allclose(curves[False], curves[True])


def test_two_patches_are_fitted_each_on_its_own_bias():
    rng = np.random.default_rng(4)
    n = 4000
    y, b1, b2 = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = 1.5 * (2 * y - 1) + rng.normal(0, 1, n) + (2 * b1 - 1) + (2 * b2 - 1)
    patches = [log_sigmoid_pair(b1 - 0.5), log_sigmoid_pair(2.0 * b2 - 1.0)]  # half, exact
    fitted = fit_rule_scale(log_sigmoid_pair(z), patches, np.log(np.full((2, 2), 0.5)), y, [b1, b2])
    assert 1.5 <= fitted.scales[0] <= 2.5 and fitted.scales[1] == 1.0
    assert fitted.gaps.shape == fitted.errors.shape == (2, len(SCALES))


def proxy_rows(n: int, seed: int, agree: float):
    """The patch sees y's evidence and a noisy proxy of the group; the model (below) reads
    each row's true group from a side table, so the patch's bias posterior is uncertain,
    as for a large model on images against a small patch fitted on a few rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < agree, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1, n), b + rng.normal(0, 0.6, n)].astype(np.float32)
    return X, y, b


@pytest.fixture(scope="module")
def proxy_case():
    (Xc, yc, bc), (Xt, yt, bt) = proxy_rows(3000, 0, 0.8), proxy_rows(5000, 100, 0.5)
    group = {row.tobytes(): g for X, b in ((Xc, bc), (Xt, bt)) for row, g in zip(X, b, strict=True)}

    def model(X):
        b = np.array([group[r.tobytes()] for r in np.asarray(X, dtype=np.float32)])
        return softmax(log_sigmoid_pair(2.0 * (X[:, 0] - 0.5) + 2.0 * (2 * b - 1)))

    return model, (Xc, yc, bc), (Xt, yt, bt)


def test_fitted_scale_removes_what_an_uncertain_posterior_leaves(proxy_case):
    """On three seeds: EqualOdds 41-47 left by the paper's patch, 0.5-5 with the scale
    fitted (2.25-2.4)."""
    model, (Xc, yc, bc), (Xt, yt, bt) = proxy_case
    paper = Eraser(model, rule_scale=1.0, random_state=0, max_epochs=30).fit(Xc, yc, bias=bc)
    fitted = Eraser(model, random_state=0, max_epochs=30).fit(Xc, yc, bias=bc)
    assert fitted.rule_scale == "fit" and paper.rule_scale_.tolist() == [1.0]
    assert fitted.rule_scale_[0] > 1.5
    assert equal_odds(yt, paper.predict(Xt), bt) > 30
    assert equal_odds(yt, fitted.predict(Xt), bt) < 10
    # the fitted patch is the paper's, scaled around the prior it holds, and Eq. 19 stays
    proba, (log_g,) = fitted.outputs(Xt)
    (log_paper,) = paper.patch_log_proba(Xt)
    np.testing.assert_allclose(fitted.class_prior_, paper.class_prior_)
    np.testing.assert_allclose(
        log_g, scale_rule(log_paper, np.log(paper.class_prior_[0]), fitted.rule_scale_[0])
    )
    np.testing.assert_allclose(fitted.predict_proba(Xt), remove_log(log_proba(proba), log_g))
    # unscaled, its patch is the paper's
    np.testing.assert_allclose(fitted.patch_log_proba(Xt, scaled=False)[0], log_paper)


def test_fitted_scale_is_saved_and_loaded(proxy_case, tmp_path):
    model, (Xc, yc, bc), (Xt, _, _) = proxy_case
    eraser = Eraser(model, random_state=0, max_epochs=30).fit(Xc, yc, bias=bc)
    loaded = Eraser.load(eraser.save(tmp_path / "e"), model)
    assert loaded.rule_scale == "fit"
    np.testing.assert_array_equal(loaded.rule_scale_, eraser.rule_scale_)
    np.testing.assert_allclose(loaded.predict_proba(Xt), eraser.predict_proba(Xt))


def test_damaged_or_old_rule_scales_in_the_file(proxy_case, tmp_path):
    import json

    from ruleeraser.persist import EraserFileError

    model, (Xc, yc, bc), _ = proxy_case
    path = Eraser(model, random_state=0, max_epochs=5).fit(Xc, yc, bias=bc).save(tmp_path / "e")
    config = json.loads((path / "eraser.json").read_text())

    def load_with(change):
        edited = json.loads(json.dumps(config))
        change(edited)
        (path / "eraser.json").write_text(json.dumps(edited))
        return Eraser.load(path, model)

    for bad in ("2", -1.0, None, True):
        with pytest.raises(EraserFileError, match=r"eraser.json: biases\[0\].rule_scale"):
            load_with(lambda c, bad=bad: c["biases"][0].update(rule_scale=bad))
    with pytest.raises(EraserFileError, match="params.rule_scale|rule_scale must be"):
        load_with(lambda c: c["params"].update(rule_scale="auto"))

    def old(c):  # written before the scale existed: the paper's patch
        del c["params"]["rule_scale"]
        del c["biases"][0]["rule_scale"]

    loaded = load_with(old)
    assert loaded.rule_scale == 1.0 and loaded.rule_scale_.tolist() == [1.0]


def test_groups_of_few_calibration_rows_do_not_steer_the_scale():
    """Most rows in one aligned group per class, the others in groups of a few rows (as in
    coloured MNIST's calibration set): their gap is left out and the scale stays 1."""
    log_model, y, _ = rows(2000, 5)
    b = y.copy()
    b[:12] = 1 - y[:12]  # six or so rows per class in the conflicting group
    half = log_sigmoid_pair(b - 0.5)
    prior = np.log([[0.5, 0.5]])
    fitted = fit_rule_scale(log_model, [half], prior, y, [b])
    assert fitted.scales[0] == 1.0 and not fitted.gaps.any()
    assert fit_rule_scale(log_model, [half], prior, y, [b], min_rows=1).gaps.any()
    wrong_on_few = np.where(b == y, y, 1 - y)  # every conflicting row decided wrong
    assert equal_odds_gap(y, wrong_on_few, b)[0] == 100.0
    assert equal_odds_gap(y, wrong_on_few, b, min_rows=10) == (0.0, 0.0)


def aligned_rows(n: int, seed: int, bias_term: float = 3.0):
    """Three classes and three bias values, 97% aligned (b = y): each class's conflicting
    (target, bias) groups hold a few rows each, under ``MIN_ROWS``. Returns, as :func:`rows`
    does, the model's log-outputs (the log-softmax of target evidence plus ``bias_term`` for
    its row's bias value), y and b."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    b = np.where(rng.random(n) < 0.97, y, (y + rng.integers(1, 3, n)) % 3)
    z = 2.0 * np.eye(3)[y] + bias_term * np.eye(3)[b] + rng.normal(0, 1.5, (n, 3))
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True), y, b


def test_pooling_the_small_groups_of_a_many_valued_bias_sizes_the_rule():
    log_model, y, b = aligned_rows(1500, 0)
    counts = np.bincount(y * 3 + b, minlength=9).reshape(3, 3)
    assert counts[~np.eye(3, dtype=bool)].max() < 10 <= counts[~np.eye(3, dtype=bool)].sum() / 3
    half = log_proba(softmax(1.5 * np.eye(3)[b]))  # a patch that sees half the bias term
    uniform = np.log(np.full((1, 3), 1 / 3))
    left_out = fit_rule_scale(log_model, [half], uniform, y, [b], pool_small=False)
    pooled = fit_rule_scale(log_model, [half], uniform, y, [b])  # the default
    assert left_out.scales[0] == 1.0 and not left_out.gaps.any()  # no class with two groups
    assert 1.5 <= pooled.scales[0] <= 2.5  # the half-sized rule is scaled up towards 2
    # on new rows, the pooled fit's scale shrinks the aligned / conflicting gap
    log_new, y2, b2 = aligned_rows(30000, 1)
    half_new = log_proba(softmax(1.5 * np.eye(3)[b2]))

    def gap(scale: float) -> float:
        fair = remove_log(log_new, scale_rule(half_new, uniform[0], scale))
        return equal_odds_gap(y2, fair.argmax(axis=1), b2, min_rows=10, pool_small=True)[0]

    assert gap(pooled.scales[0]) < 0.5 * gap(1.0)


def test_where_small_groups_are_pooled_no_scale_may_lower_the_accuracy():
    """A patch that also holds some of the model's target evidence: scaling it up closes the
    pooled gap at a cost in accuracy, which one standard error would admit."""
    log_model, y, b = aligned_rows(1500, 2)
    patch = log_proba(softmax(1.5 * np.eye(3)[b] + 0.3 * log_model))
    uniform = np.log(np.full((1, 3), 1 / 3))
    strict = fit_rule_scale(log_model, [patch], uniform, y, [b])  # the default
    loose = fit_rule_scale(log_model, [patch], uniform, y, [b], pooled_accuracy_se_share=1.0)

    def accuracy(fit) -> float:
        return fit.accuracies[0][np.flatnonzero(fit.grid == fit.scales[0])[0]]

    paper = strict.accuracies[0][np.flatnonzero(strict.grid == 1.0)[0]]
    assert loose.scales[0] > 1.0 and accuracy(loose) < paper - 1.0
    assert accuracy(strict) >= paper
    assert (strict.accuracies[0][strict.allowed[0]] >= paper).all()
    # a binary bias is never pooled: the one-standard-error guard holds there
    log_model, y, b = rows(4000, 3)
    half = log_sigmoid_pair(0.5 * (2 * b - 1))
    prior = np.log([[0.5, 0.5]])
    for share in (0.0, 5.0):
        fitted = fit_rule_scale(log_model, [half], prior, y, [b], pooled_accuracy_se_share=share)
        np.testing.assert_array_equal(
            fitted.allowed, fit_rule_scale(log_model, [half], prior, y, [b]).allowed
        )


def test_pooling_changes_nothing_when_every_group_is_large():
    log_model, y, b = rows(4000, 3)
    half = log_sigmoid_pair(0.5 * (2 * b - 1))
    prior = np.log([[0.5, 0.5]])
    plain = fit_rule_scale(log_model, [half], prior, y, [b], pool_small=False)
    pooled = fit_rule_scale(log_model, [half], prior, y, [b])
    np.testing.assert_array_equal(plain.gaps, pooled.gaps)
    assert plain.scales[0] == pooled.scales[0]


def test_small_groups_are_pooled_only_beside_a_large_one():
    y, pred = np.zeros(24, int), np.r_[np.zeros(12, int), np.ones(12, int)]  # 12 right first
    three = np.repeat([0, 1, 2], [6, 6, 12])  # two small groups (right) beside a large one
    assert equal_odds_gap(y, pred, three, min_rows=10) == (0.0, 0.0)  # one group is left
    assert equal_odds_gap(y, pred, three, min_rows=10, pool_small=True)[0] == 100.0
    binary = np.repeat([0, 1], [6, 18])  # one small group alone is never pooled
    assert equal_odds_gap(y, pred, binary, min_rows=10, pool_small=True) == (0.0, 0.0)
    two_small = np.repeat([0, 1], [6, 6])  # nothing large to pool beside
    assert average_accuracy(y[:12], pred[:12], two_small, min_rows=10, pool_small=True) == (
        0.0,
        0.0,
    )
