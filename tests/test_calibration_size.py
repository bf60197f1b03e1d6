"""Tests for ruleeraser.calibration_size: nested, stratified refits measured on held-out rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ruleeraser import Eraser
from ruleeraser.calibration_size import calibration_curve, default_sizes, nested_order
from ruleeraser.metrics import group_accuracy


def test_nested_order_keeps_every_cells_share_in_every_prefix():
    rng = np.random.default_rng(1)
    cells = rng.choice(["a", "b", "c"], p=[0.7, 0.2, 0.1], size=1000)
    order = nested_order(cells, seed=3)
    assert sorted(order.tolist()) == list(range(1000))  # a permutation
    counts = {c: int((cells == c).sum()) for c in "abc"}
    for size in (10, 50, 137, 500, 1000):
        prefix = cells[order[:size]]
        for c, total in counts.items():  # each cell's share, to one row
            assert abs((prefix == c).sum() - size * total / 1000) <= 1.0
    assert np.array_equal(nested_order(cells, seed=3), order)  # seeded
    assert not np.array_equal(nested_order(cells, seed=4), order)


def test_default_sizes_span_the_rows_geometrically():
    assert default_sizes(5000) == [50, 126, 315, 792, 1991, 5000]
    assert default_sizes(30) == [30]
    with pytest.raises(ValueError, match="at least one calibration row"):
        default_sizes(0)


def test_curve_refits_on_nested_subsets_and_measures_held_out_rows(setup):
    model, (Xc, yc, bc), (Xt, yt, bt) = setup
    template = Eraser(model, random_state=0, max_epochs=40)
    curve = calibration_curve(
        template, Xc, yc, bias=bc, sizes=[800, 40], eval_set=(Xt, yt, bt), random_state=0
    )
    assert not hasattr(template, "patches_")  # the template is left unfitted
    assert [p["n"] for p in curve.points] == [40, 800] and curve.n_eval == len(yt)
    before = group_accuracy(yt, model.predict(Xt), bt).summary()
    assert curve.before == pytest.approx(before)
    assert curve.points[1]["model_bias"] < 0.5 * before["model_bias"]
    for point in curve.points:  # even 40 rows cut the model's bias
        assert point["model_bias"] < before["model_bias"]
        assert point["bias_cut"] == pytest.approx(
            100 * (1 - point["model_bias"] / before["model_bias"])
        )
    # a refit on every row is the eraser fitted on the calibration set
    direct = Eraser(model, random_state=0, max_epochs=40).fit(Xc, yc, bias=bc)
    expected = group_accuracy(yt, direct.predict(Xt), bt).summary()
    assert curve.points[1] == pytest.approx(curve.points[1] | expected)
    assert "| 800 |" in curve.to_markdown() and curve.to_dict()["n_eval"] == len(yt)


def test_curve_holds_out_a_stratified_share_of_a_dataframe(setup):
    model, (Xc, yc, bc), _ = setup
    frame = pd.DataFrame(Xc, columns=["score", "noise1", "noise2", "group"])
    labels = pd.Series(np.where(yc == 1, "yes", "no"))

    def predict_proba(X):
        return model.predict_proba(np.asarray(X))

    eraser = Eraser(predict_proba, classes=["no", "yes"], random_state=0, max_epochs=20)
    curve = calibration_curve(eraser, frame, labels, bias=bc, holdout=0.25, random_state=2)
    assert curve.n_eval == 200  # a quarter of the 800 rows
    assert [p["n"] for p in curve.points] == default_sizes(600)
    assert all(np.isfinite(p["model_bias"]) for p in curve.points)


def test_curve_refuses_bad_sizes_holdout_and_lengths(setup):
    model, (Xc, yc, bc), _ = setup
    eraser = Eraser(model, random_state=0)
    with pytest.raises(ValueError, match="sizes must lie in 1..600"):
        calibration_curve(eraser, Xc, yc, bias=bc, sizes=[10, 601])
    with pytest.raises(ValueError, match="holdout must be in"):
        calibration_curve(eraser, Xc, yc, bias=bc, holdout=1.5)
    with pytest.raises(ValueError, match="X has 800 rows, y 800 and bias 799"):
        calibration_curve(eraser, Xc, yc, bias=bc[:-1])
