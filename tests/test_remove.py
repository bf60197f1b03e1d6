import numpy as np
import pytest

from ruleeraser.remove import remove, remove_log


def test_eq19_hand_computed():
    # softmax(log M - log G) is proportional to M / G: [0.8/0.6, 0.2/0.4] = [4/3, 1/2].
    fair = remove(np.array([[0.8, 0.2]]), np.array([[0.6, 0.4]]))
    np.testing.assert_allclose(fair, [[(4 / 3) / (4 / 3 + 0.5), 0.5 / (4 / 3 + 0.5)]])


def test_eq21_subtracts_every_patch():
    m, g1, g2 = (
        np.array([[0.5, 0.3, 0.2]]),
        np.array([[0.2, 0.3, 0.5]]),
        np.array([[0.5, 0.25, 0.25]]),
    )
    ratio = m / g1 / g2
    np.testing.assert_allclose(remove(m, g1, g2), ratio / ratio.sum())
    np.testing.assert_allclose(remove(m, g1, g2), remove(remove(m, g1), g2))


def test_uniform_patch_changes_nothing():
    m = np.random.default_rng(0).dirichlet(np.ones(4), 50)
    np.testing.assert_allclose(remove(m, np.full_like(m, 0.25)), m, atol=1e-12)


def test_invariant_to_per_row_constants_in_log_space():
    rng = np.random.default_rng(1)
    log_m, log_g = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    shift_m, shift_g = rng.normal(size=(20, 1)), rng.normal(size=(20, 1))
    np.testing.assert_allclose(
        remove_log(log_m + shift_m, log_g + shift_g), remove_log(log_m, log_g), atol=1e-12
    )


def test_zero_probabilities_stay_finite():
    fair = remove(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert np.isfinite(fair).all()
    np.testing.assert_allclose(fair.sum(), 1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        remove_log(np.zeros((2, 2)), np.zeros((2, 3)))
