import numpy as np
import pytest
from fairlearn.metrics import equalized_odds_difference

from ruleeraser.metrics import decision_rates, equal_odds, group_accuracy, report


def test_hand_computed_groups():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    g = group_accuracy(y, p, b)
    np.testing.assert_allclose(g.accuracy, [[100, 50], [50, 0]])
    assert g.average == pytest.approx(50.0)
    assert g.worst == pytest.approx(0.0)
    assert g.model_bias == pytest.approx((50 + 50) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_equal_odds_matches_fairlearn_for_binary(seed):
    rng = np.random.default_rng(seed)
    y, b = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.7, y, 1 - y) * (rng.random(300) < 0.9 + 0.05 * b)
    expected = 100 * equalized_odds_difference(y, p, sensitive_features=b, agg="mean")
    assert equal_odds(y, p, b) == pytest.approx(expected)


def test_several_bias_values_use_max_minus_min():
    y = np.array([0] * 6 + [1] * 3)
    b = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])
    p = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1])
    # class 0: accuracies 100, 50, 0 -> gap 100; class 1: all 100 -> gap 0.
    assert equal_odds(y, p, b) == pytest.approx(50.0)


def test_class_seen_with_one_bias_value_is_left_out_with_a_warning():
    y, b, p = np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0, 1, 1])
    with pytest.warns(UserWarning, match="fewer than two bias values"):
        assert equal_odds(y, p, b) == pytest.approx(100.0)


def test_report_and_errors():
    y, b = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    r = report(y, b, {"before": np.array([0, 0, 0, 0]), "after": y})
    assert r.to_dict()["after"] == {
        "overall_acc": 100.0,
        "avg_acc": 100.0,
        "worst_acc": 100.0,
        "model_bias": 0.0,
        "decision_rates": {"0": {"0": 50.0, "1": 50.0}, "1": {"0": 50.0, "1": 50.0}},
    }
    assert r.to_dict()["before"]["decision_rates"]["1"] == {"0": 100.0, "1": 0.0}
    assert "| before | 50.00 | 50.00 | 0.00 | 0.00 |" in r.to_markdown()
    assert "| bias | rows | before: 0 | before: 1 | after: 0 | after: 1 |" in r.to_markdown()
    with pytest.raises(ValueError, match="lengths differ"):
        group_accuracy(y, y[:3], b)


def test_overall_accuracy_weights_groups_by_size():
    # 6 rows of group (0, 0) all right, 2 rows of group (1, 1) all wrong: average 50, overall 75.
    y = np.array([0] * 6 + [1] * 2)
    b = np.array([0] * 6 + [1] * 2)
    g = group_accuracy(y, np.zeros(8, dtype=int), b)
    assert g.average == pytest.approx(50.0)
    assert g.overall == pytest.approx(75.0)


def test_decision_rates_hand_computed():
    pred = np.array(["no", "yes", "yes", "yes", "no", "no", "no", "maybe"])
    bias = np.array(["f", "f", "f", "f", "m", "m", "m", "m"])
    r = decision_rates(pred, bias, decisions=["no", "maybe", "yes"])
    np.testing.assert_allclose(r.rates, [[25, 0, 75], [75, 25, 0]])
    np.testing.assert_allclose(r.rates.sum(axis=1), 100)
    assert r.counts.tolist() == [4, 4] and r.biases == ["f", "m"]
    assert r.to_dict()["m"] == {"no": 75.0, "maybe": 25.0, "yes": 0.0}


def test_decision_rates_errors_name_the_input():
    with pytest.raises(ValueError, match=r"y_pred has labels .*\['maybe'\]"):
        decision_rates(["no", "maybe"], [0, 1], decisions=["no", "yes"])
    with pytest.raises(ValueError, match="lengths differ: 2 y_pred, 3 bias"):
        decision_rates([0, 1], [0, 1, 1])


def test_report_lists_decisions_never_made():
    y, b = np.array([0, 1, 2, 0]), np.array([0, 0, 1, 1])
    r = report(y, b, {"before": np.zeros(4, dtype=int)})
    assert r.rates["before"].decisions == [0, 1, 2]  # classes 1 and 2 are never decided
    np.testing.assert_allclose(r.rates["before"].rates, [[100, 0, 0], [100, 0, 0]])
