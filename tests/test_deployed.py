import math

import numpy as np
import pytest
import torch

from ruleeraser.experiments.deployed import (
    RECIPES,
    TabularNet,
    fscl_loss,
    grad_reverse,
    predict_proba,
    train_deployed,
)


def make_data(n: int, seed: int, agree: float | None = 0.85) -> tuple[np.ndarray, ...]:
    """Column 0 is the bias b; four noisy features carry y. y and b agree with rate ``agree``
    (independent when None, the balanced test set)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    b = rng.integers(0, 2, n) if agree is None else np.where(rng.random(n) < agree, y, 1 - y)
    feats = (2 * y[:, None] - 1) * 0.5 + rng.normal(size=(n, 4))
    return np.column_stack([b, feats]).astype(np.float32), y, b


def flip_bias(X: np.ndarray) -> np.ndarray:
    out = X.copy()
    out[:, 0] = 1 - out[:, 0]
    return out


def equal_odds_gap(pred: np.ndarray, y: np.ndarray, b: np.ndarray) -> float:
    gaps = [
        abs((pred[(y == k) & (b == 0)] == k).mean() - (pred[(y == k) & (b == 1)] == k).mean())
        for k in (0, 1)
    ]
    return 100 * float(np.mean(gaps))


@pytest.fixture(scope="module")
def bias_stats() -> dict[int, dict[str, tuple[float, float]]]:
    """Per seed and recipe: (mean |p(b flipped) - p| in %, EqualOdds gap in %) on a balanced
    test set."""
    stats = {}
    for seed in (0, 1):
        X, y, b = make_data(2000, seed)
        Xt, yt, bt = make_data(4000, 100 + seed, agree=None)
        stats[seed] = {}
        for recipe in RECIPES:
            model = train_deployed(recipe, X, y, b, seed=seed)
            p = predict_proba(model, Xt)
            flip = 100 * float(np.abs(predict_proba(model, flip_bias(Xt)) - p)[:, 1].mean())
            stats[seed][recipe] = (flip, equal_odds_gap(p.argmax(1), yt, bt))
    return stats


@pytest.mark.parametrize("recipe", RECIPES)
def test_valid_probabilities_and_deterministic(recipe: str) -> None:
    X, y, b = make_data(600, 3)
    rng_state = torch.random.get_rng_state()
    model = train_deployed(recipe, X, y, b, seed=7, epochs=5)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert isinstance(model, TabularNet) and not model.training
    p = predict_proba(model, X)
    assert p.shape == (600, 2) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1)) and np.allclose(p.sum(1), 1.0)
    again = predict_proba(train_deployed(recipe, X, y, b, seed=7, epochs=5), X)
    assert np.array_equal(p, again)
    other = predict_proba(train_deployed(recipe, X, y, b, seed=8, epochs=5), X)
    assert not np.array_equal(p, other)


def test_multiclass_target_and_unknown_recipe() -> None:
    X, _, b = make_data(300, 4)
    y3 = np.random.default_rng(0).integers(0, 3, 300)
    p = predict_proba(train_deployed("unfair", X, y3, b, seed=0, epochs=2), X)
    assert p.shape == (300, 3)
    with pytest.raises(ValueError, match="unknown recipe"):
        train_deployed("fair", X, y3, b, seed=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_biased_models_use_the_bias_feature(bias_stats, seed: int) -> None:
    s = bias_stats[seed]
    assert s["vanilla"][0] > 25 and s["vanilla"][1] > 25
    # multi-task learning of b does not make the model rely less on it
    assert s["unfair"][0] > s["vanilla"][0] - 5
    assert s["unfair"][1] > 25


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("recipe", ["advdebias", "condebias"])
def test_fair_models_rely_less_on_the_bias(bias_stats, seed: int, recipe: str) -> None:
    # over 20 seeds: flip ratio <= 0.47 and EqualOdds margin >= 18 points
    flip, gap = bias_stats[seed][recipe]
    vanilla_flip, vanilla_gap = bias_stats[seed]["vanilla"]
    assert flip < 0.7 * vanilla_flip
    assert gap < vanilla_gap - 10


def test_gradient_reversal() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 1.0, -4.0])
    out = grad_reverse(x, 0.25)
    assert torch.equal(out, x)
    (out * w).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.125, -0.25, 1.0]))


def test_fscl_loss_hand_computed() -> None:
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8], [0.8, 0.6]])
    y = torch.tensor([0, 0, 1, 1, 1])
    b = torch.tensor([0, 1, 0, 1, 0])
    tau = 0.5
    dot = z @ z.T

    def s(i: int, j: int) -> float:
        return float(dot[i, j]) / tau

    # anchor: positives P(i) = same y; denominator N(i) = other y, same b
    expected = [
        -(s(0, 1) - math.log(math.exp(s(0, 2)) + math.exp(s(0, 4)))),
        -(s(1, 0) - s(1, 3)),
        -((s(2, 3) - s(2, 0)) + (s(2, 4) - s(2, 0))) / 2,
        -((s(3, 2) - s(3, 1)) + (s(3, 4) - s(3, 1))) / 2,
        -((s(4, 2) - s(4, 0)) + (s(4, 3) - s(4, 0))) / 2,
    ]
    scaled = z * torch.tensor([[2.0], [1.0], [3.0], [0.5], [1.0]])  # the loss normalises z
    got = fscl_loss(scaled, y, b, temperature=tau)
    assert got.item() == pytest.approx(sum(expected) / 5, rel=1e-5)


def test_fscl_loss_without_valid_anchor_is_zero() -> None:
    z = torch.randn(4, 3, requires_grad=True)
    loss = fscl_loss(z, torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros(4, 3))
