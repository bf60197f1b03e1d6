import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ruleeraser import EmptyCellWarning, Eraser, remove_log
from ruleeraser.metrics import group_accuracy


@pytest.mark.parametrize(("rule", "min_cut"), [("group", 0.8), ("sample", 0.5)])
def test_end_to_end_debiasing(setup, rule, min_cut):
    model, (Xc, yc, bc), (Xt, yt, bt) = setup
    before = group_accuracy(yt, model.predict(Xt), bt)
    eraser = Eraser(model, rule=rule, random_state=0).fit(Xc, yc, bias=bc)
    after = group_accuracy(yt, eraser.predict(Xt), bt)
    assert before.model_bias > 40
    assert after.model_bias < (1 - min_cut) * before.model_bias
    assert after.worst > before.worst + 20
    assert eraser.n_queries_ == len(Xc)
    assert eraser.patch_fit_[0].n_heldout == pytest.approx(0.2 * len(Xc), abs=4)


def test_numpy_pandas_and_torch_inputs_agree(setup):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    frame = pd.DataFrame(Xc)
    e_np = Eraser(model, random_state=1, max_epochs=5).fit(Xc, yc, bias=bc)
    e_pd = Eraser(model, random_state=1, max_epochs=5).fit(frame, pd.Series(yc), bias=pd.Series(bc))
    np.testing.assert_allclose(
        e_np.predict_proba(Xt), e_pd.predict_proba(pd.DataFrame(Xt)), rtol=1e-5
    )
    torch_model = torch.nn.Linear(4, 2)
    e_t = Eraser(torch_model, random_state=1, max_epochs=5)
    e_t.fit(torch.from_numpy(Xc), torch.from_numpy(yc), bias=torch.from_numpy(bc))
    assert e_t.predict_proba(torch.from_numpy(Xt)).shape == (len(Xt), 2)


def test_several_biases_subtract_every_patch(setup):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    other = (Xc[:, 1] > 0).astype(int)
    eraser = Eraser(model, random_state=0, max_epochs=5)
    eraser.fit(Xc, yc, bias=pd.DataFrame({"b": bc, "other": other}))
    assert eraser.bias_names_ == ["b", "other"] and len(eraser.patches_) == 2
    expected = remove_log(np.log(model.predict_proba(Xt)), *eraser.patch_log_proba(Xt))
    np.testing.assert_allclose(eraser.predict_proba(Xt), expected, atol=1e-6)


def test_labels_map_through_classes(setup):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    named = LogisticRegression().fit(Xc, np.where(yc == 1, "yes", "no"))
    eraser = Eraser(named, max_epochs=3, random_state=0).fit(
        Xc, np.where(yc == 1, "yes", "no"), bias=np.where(bc == 1, "x", "z")
    )
    assert set(eraser.predict(Xt)) <= {"yes", "no"}
    assert list(eraser.bias_values_[0]) == ["x", "z"]


def test_save_load_round_trip(setup, tmp_path):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    for rule in ("group", "sample"):
        eraser = Eraser(model, rule=rule, random_state=0, max_epochs=5).fit(Xc, yc, bias=bc)
        eraser.save(tmp_path / rule)
        assert sorted(p.name for p in (tmp_path / rule).iterdir()) == [
            "eraser.json",
            "patches.safetensors",
        ]
        loaded = Eraser.load(tmp_path / rule, model)
        np.testing.assert_array_equal(loaded.predict_proba(Xt), eraser.predict_proba(Xt))
        assert loaded.n_queries_ == eraser.n_queries_


def test_custom_patch_module(setup, tmp_path):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    patch = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    eraser = Eraser(model, patch=patch, random_state=0, max_epochs=5).fit(Xc, yc, bias=bc)
    eraser.save(tmp_path)
    with pytest.raises(ValueError, match="custom patch"):
        Eraser.load(tmp_path, model)
    loaded = Eraser.load(tmp_path, model, patch=patch)
    np.testing.assert_array_equal(loaded.predict_proba(Xt), eraser.predict_proba(Xt))
    wrong = torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"\(n, 2\) logits"):
        Eraser(model, patch=wrong).fit(Xc, yc, bias=bc)


def test_empty_cells_are_reported(setup):
    model, (Xc, yc, bc), _ = setup
    keep = ~((yc == 1) & (bc == 0))
    with pytest.warns(EmptyCellWarning):
        eraser = Eraser(model, max_epochs=3, random_state=0).fit(Xc[keep], yc[keep], bias=bc[keep])
    assert eraser.empty_cells_ == {"bias": [(1, 0)]}


def test_bad_inputs_have_clear_errors(setup):
    model, (Xc, yc, bc), _ = setup
    e = Eraser(model, max_epochs=2)
    with pytest.raises(ValueError, match="X has 800 rows but y has 799"):
        e.fit(Xc, yc[:-1], bias=bc)
    with pytest.raises(ValueError, match="but bias bias has 10"):
        e.fit(Xc, yc, bias=bc[:10])
    with pytest.raises(ValueError, match="single class"):
        e.fit(Xc, np.zeros_like(yc), bias=bc)
    with pytest.raises(ValueError, match=r"labels the model does not output: \[7\]"):
        e.fit(Xc, np.where(yc == 1, 7, 0), bias=bc)
    with pytest.raises(ValueError, match="single value"):
        e.fit(Xc, yc, bias=np.zeros_like(bc))
    with pytest.raises(ValueError, match="rule must be"):
        Eraser(model, rule="oracle").fit(Xc, yc, bias=bc)
    with pytest.raises(ValueError, match="NaN"):
        Eraser(lambda x: np.full((len(x), 2), np.nan)).fit(Xc, yc, bias=bc)
    with pytest.raises(ValueError, match="do not sum to 1"):
        Eraser(lambda x: np.full((len(x), 2), 0.7)).fit(Xc, yc, bias=bc)
    with pytest.raises(ValueError, match="negative"):
        Eraser(lambda x: np.tile([1.5, -0.5], (len(x), 1))).fit(Xc, yc, bias=bc)
    with pytest.raises(RuntimeError, match="not fitted"):
        Eraser(model).predict(Xc)
    with pytest.raises(ValueError, match="contains NaN"):
        e.fit(Xc, yc, bias=np.where(bc == 1, np.nan, 0.0))
    fitted = Eraser(model, max_epochs=2, random_state=0).fit(Xc, yc, bias=bc)
    with pytest.raises(ValueError, match="rows of shape"):
        fitted.predict(Xc[:, :3])
    overflowing = np.vstack([Xc[:1], np.full((1, Xc.shape[1]), 3e38)])  # finite, far out
    with pytest.raises(ValueError, match="no finite output for 1 row.*the first is row 1"):
        fitted.predict_proba(overflowing)


def test_uniform_rule_leaves_predictions_unchanged(setup):
    # A model that ignores b has the same rule in every bias group: erasing changes no decision.
    _, (Xc, yc, bc), (Xt, _, _) = setup
    fair_model = LogisticRegression().fit(Xc[:, :3], yc)
    model = lambda x: fair_model.predict_proba(np.asarray(x)[:, :3])  # noqa: E731
    rng = np.random.default_rng(3)
    b_random = rng.integers(0, 2, len(Xc))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyCellWarning)
        eraser = Eraser(model, random_state=0).fit(Xc, yc, bias=b_random)
    agree = (eraser.predict(Xt) == fair_model.predict(Xt[:, :3])).mean()
    assert agree > 0.97
