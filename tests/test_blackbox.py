import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ruleeraser.blackbox import BlackBox, as_blackbox, check_probabilities


@pytest.mark.parametrize(
    ("proba", "message"),
    [
        ([[0.5, np.nan]], "NaN"),
        ([[1.2, -0.2]], "negative"),
        ([[0.5, 0.6]], "do not sum to 1"),
        ([[0.2, 0.2, 0.2]], "do not sum to 1"),
        ([[1.5, 0.0]], "above 1"),
    ],
)
def test_bad_probabilities_are_rejected(proba, message):
    with pytest.raises(ValueError, match=message):
        check_probabilities(np.array(proba))


def test_error_names_the_rows():
    p = np.full((30, 2), 0.5)
    p[[3, 17]] = [0.9, 0.9]
    with pytest.raises(ValueError, match=r"2 row\(s\): 3, 17"):
        check_probabilities(p)


def test_sigmoid_output_is_two_classes():
    np.testing.assert_allclose(check_probabilities([0.2, 0.9]), [[0.8, 0.2], [0.1, 0.9]])
    np.testing.assert_allclose(check_probabilities([[0.2], [0.9]]), [[0.8, 0.2], [0.1, 0.9]])


def test_batches_and_counts_queries():
    calls = []

    def model(x):
        calls.append(len(x))
        return np.full((len(x), 3), 1 / 3)

    bb = BlackBox(model, batch_size=4)
    out = bb(np.zeros((10, 2)))
    assert out.shape == (10, 3)
    assert calls == [4, 4, 2]
    assert bb.n_queries == 10


def test_row_count_mismatch():
    bb = BlackBox(lambda x: np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="returned 1 rows for 3 inputs"):
        bb(np.zeros((3, 1)))


def test_torch_module_logits_and_sigmoid():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 4)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected = torch.softmax(net(torch.from_numpy(x)), 1).detach().numpy()
    np.testing.assert_allclose(as_blackbox(net)(x), expected, rtol=1e-5)
    one = torch.nn.Linear(3, 1)
    p = torch.sigmoid(one(torch.from_numpy(x)))[:, 0].detach().numpy()
    np.testing.assert_allclose(as_blackbox(one)(torch.from_numpy(x))[:, 1], p, rtol=1e-5)
    probs = torch.nn.Sequential(net, torch.nn.Softmax(dim=1))
    np.testing.assert_allclose(as_blackbox(probs, output="proba")(x), expected, rtol=1e-5)


def test_sklearn_classifier_with_dataframe():
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    clf = LogisticRegression().fit(X, ["no", "no", "yes", "yes"])
    bb = as_blackbox(clf)
    np.testing.assert_allclose(bb(X), clf.predict_proba(X))
    assert list(bb.classes) == ["no", "yes"]


def test_unusable_model():
    with pytest.raises(TypeError, match="cannot use"):
        as_blackbox(42)
