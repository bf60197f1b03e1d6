import numpy as np
import pytest

from ruleeraser import Eraser
from ruleeraser.meter import bias_meter, meter
from ruleeraser.remove import remove
from ruleeraser.strength import select_strength, strength_curve


@pytest.fixture(scope="module")
def fitted(setup):
    model, (Xc, yc, bc), _ = setup
    return Eraser(model, random_state=0).fit(Xc, yc, bias=bc)


def test_strength_scales_what_is_removed():
    m, g = np.array([[0.8, 0.2]]), np.array([[0.6, 0.4]])
    ratio = m / np.sqrt(g)
    np.testing.assert_allclose(remove(m, g, strength=0.5), ratio / ratio.sum())
    np.testing.assert_allclose(remove(m, g, strength=0.0), m)


def test_strength_zero_is_the_model_and_one_the_eraser(setup, fitted):
    model, _, (Xt, _, _) = setup
    fitted.strength = 0.0
    np.testing.assert_allclose(fitted.predict_proba(Xt), model.predict_proba(Xt), atol=1e-9)
    fitted.strength = 1.0
    proba, log_g = fitted.outputs(Xt)
    np.testing.assert_allclose(fitted.predict_proba(Xt), remove(proba, np.exp(log_g[0])))


def test_select_strength_targets(setup, fitted):
    _, _, (Xt, yt, bt) = setup
    curve = strength_curve(fitted, Xt, yt, bt, strengths=[0.0, 0.5, 1.0, 1.5])
    assert [r["strength"] for r in curve] == [0.0, 0.5, 1.0, 1.5]
    assert curve[0]["model_bias"] > 40 > curve[2]["model_bias"]
    chosen, _ = select_strength(fitted, Xt, yt, bt, strengths=[0.0, 0.5, 1.0, 1.5])
    assert chosen == min(curve, key=lambda r: r["model_bias"])["strength"]
    assert fitted.strength == chosen
    bound = curve[1]["model_bias"] + 0.01
    chosen, _ = select_strength(
        fitted, Xt, yt, bt, target="best_accuracy", max_bias=bound, strengths=[0.0, 0.5, 1.0, 1.5]
    )
    allowed = [r for r in curve if r["model_bias"] <= bound]
    assert chosen == max(allowed, key=lambda r: r["avg_acc"])["strength"]
    with pytest.raises(ValueError, match="no strength keeps"):
        select_strength(fitted, Xt, yt, bt, target="best_accuracy", max_bias=-1.0)
    with pytest.raises(ValueError, match="needs max_bias"):
        select_strength(fitted, Xt, yt, bt, target="best_accuracy")
    fitted.strength = 1.0


def test_meter_hand_computed():
    reading = meter(np.array([[0.8, 0.2], [0.5, 0.5]]), np.array([[0.4, 0.6], [0.5, 0.5]]))
    assert reading.changed == pytest.approx(50.0)
    assert reading.total_variation == pytest.approx((0.4 + 0.0) / 2)
    kl = 0.8 * np.log(0.8 / 0.4) + 0.2 * np.log(0.2 / 0.6)
    assert reading.kl == pytest.approx(kl / 2)


def test_meter_reads_more_on_a_more_biased_model(setup, fitted):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    from sklearn.linear_model import LogisticRegression

    fair_model = LogisticRegression().fit(Xc[:, :3], yc)
    blind = Eraser(lambda x: fair_model.predict_proba(np.asarray(x)[:, :3]), random_state=0)
    blind.fit(Xc, yc, bias=bc)
    assert bias_meter(fitted, Xt).changed > 5 * max(bias_meter(blind, Xt).changed, 1.0)
    assert bias_meter(fitted, Xt).kl > bias_meter(blind, Xt).kl
