import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression


def biased_data(n, align, rng):
    """y in a noisy feature; the bias b (an input too) agrees with y `align` of the time."""
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < align, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1.0, n), rng.normal(0, 1, (n, 2)), b].astype(np.float32)
    return X, y, b


@pytest.fixture(scope="session")
def setup():
    """A logistic model trained where b agrees with y 85% of the time; a calibration set
    drawn the same way; a test set where b and y are independent."""
    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(*biased_data(4000, 0.85, rng)[:2])
    return model, biased_data(800, 0.85, rng), biased_data(3000, 0.5, rng)
