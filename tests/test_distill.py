import warnings

import numpy as np
import pytest

from ruleeraser.distill import EmptyCellWarning, distill, fill_empty_cells, log_proba, softmax


def naive_eq17(L, y, b, k):
    """Eq. 17 written as in the paper, one sample at a time."""
    q = []
    for j in range(len(L)):
        acc = L[j].copy()
        for i in range(k):
            if i != y[j]:
                acc += L[(y == i) & (b == b[j])].mean(axis=0)
        q.append(softmax(acc / k))
    return np.array(q)


def test_eq17_hand_computed_binary():
    # Two samples with bias 0: one of class 0, one of class 1.
    L = np.log(np.array([[0.8, 0.2], [0.3, 0.7]]))
    d = distill(L, np.array([0, 1]), np.array([0, 0]), n_classes=2, n_bias=1)
    # Both samples average their log-output with the other one's: softmax((L0 + L1) / 2).
    a = (np.log(0.8) + np.log(0.3)) / 2
    c = (np.log(0.2) + np.log(0.7)) / 2
    expected = np.exp([a, c]) / np.exp([a, c]).sum()
    np.testing.assert_allclose(d.q, [expected, expected])
    np.testing.assert_allclose(d.group_rules, [expected])


def test_eq17_matches_the_per_sample_definition():
    rng = np.random.default_rng(0)
    k, m, n = 3, 2, 60
    y = np.tile(np.arange(k), n // k)
    b = rng.integers(0, m, n)
    b[:6] = [0, 0, 0, 1, 1, 1]  # every cell non-empty
    y[:6] = [0, 1, 2, 0, 1, 2]
    L = log_proba(rng.dirichlet(np.ones(k), n))
    d = distill(L, y, b, n_classes=k, n_bias=m)
    np.testing.assert_allclose(d.q, naive_eq17(L, y, b, k), atol=1e-12)
    assert d.empty_cells == []
    np.testing.assert_array_equal(d.counts.sum(), n)


def test_group_rule_is_the_mean_of_the_per_sample_logits():
    rng = np.random.default_rng(1)
    k, m, n = 2, 2, 200
    y, b = rng.integers(0, k, n), rng.integers(0, m, n)
    L = log_proba(rng.dirichlet(np.ones(k), n))
    d = distill(L, y, b, n_classes=k, n_bias=m)
    for i in range(k):
        for g in range(m):
            logits = np.log(d.q[(y == i) & (b == g)])
            mean = logits.mean(axis=0) - logits.mean(axis=0).max()
            np.testing.assert_allclose(softmax(mean), d.group_rules[g], atol=1e-12)


def test_empty_cells_warn_and_are_filled_additively():
    k, m = 3, 3
    t = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 3.0]])
    c = np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    cells = [(i, g) for i in range(k) for g in range(m) if (i, g) not in {(0, 2), (2, 1)}]
    y = np.array([i for i, _ in cells])
    b = np.array([g for _, g in cells])
    L = t[y] + c[b]  # exactly additive log-outputs (unnormalised is fine)
    with pytest.warns(EmptyCellWarning, match=r"\(0, 2\).*\(2, 1\)"):
        d = distill(L, y, b, n_classes=k, n_bias=m)
    assert d.empty_cells == [(0, 2), (2, 1)]
    np.testing.assert_allclose(d.mu[0, 2], t[0] + c[2], atol=1e-9)
    np.testing.assert_allclose(d.mu[2, 1], t[2] + c[1], atol=1e-9)


def test_fill_leaves_full_tables_alone():
    mu = np.random.default_rng(2).normal(size=(2, 2, 2))
    assert fill_empty_cells(mu, np.ones((2, 2))) is mu


def test_no_warning_when_all_cells_have_samples():
    L = log_proba(np.full((4, 2), 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distill(L, np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), n_classes=2, n_bias=2)


def test_log_proba_is_safe_against_zeros():
    out = log_proba(np.array([[1.0, 0.0]]), eps=1e-6)
    np.testing.assert_allclose(out, [[0.0, np.log(1e-6)]])


def test_distill_rejects_bad_shapes():
    with pytest.raises(ValueError, match="lengths differ"):
        distill(np.zeros((3, 2)), np.zeros(2, int), np.zeros(3, int), n_classes=2, n_bias=1)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        distill(np.zeros((3, 2)), np.zeros(3, int), np.zeros(3, int), n_classes=3, n_bias=1)
