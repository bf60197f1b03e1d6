"""The class prior: ``prior="balanced"`` (Eq. 19) against ``prior="keep"`` (only the
bias-dependent part of each rule removed), the prior a patch holds, saving and loading it."""

import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from ruleeraser import Eraser
from ruleeraser.cli import main
from ruleeraser.cli.goal_options import library_default
from ruleeraser.metrics import group_accuracy
from ruleeraser.persist import EraserFileError
from ruleeraser.remove import remove_log


def test_keep_hand_computed():
    # fair is proportional to M / G * pi: [0.6 / 0.75 * 0.8, 0.4 / 0.25 * 0.2] = [0.64, 0.32].
    model, patch, prior = np.log([[0.6, 0.4]]), np.log([[0.75, 0.25]]), np.log([0.8, 0.2])
    np.testing.assert_allclose(remove_log(model, patch, log_prior=prior), [[2 / 3, 1 / 3]])
    # Eq. 19 (no prior): [0.6 / 0.75, 0.4 / 0.25] = [0.8, 1.6].
    np.testing.assert_allclose(remove_log(model, patch), [[1 / 3, 2 / 3]])
    # strength 0.5: M * (pi / G) ** 0.5 = [0.6 * (0.8 / 0.75) ** 0.5, 0.4 * (0.2 / 0.25) ** 0.5]
    half = np.array([0.6 * (0.8 / 0.75) ** 0.5, 0.4 * 0.8**0.5])
    np.testing.assert_allclose(
        remove_log(model, patch, strength=0.5, log_prior=prior), [half / half.sum()]
    )


def test_keep_with_two_patches_subtracts_each_patchs_own_prior():
    m = np.array([[0.5, 0.3, 0.2]])
    g1, g2 = np.array([[0.2, 0.3, 0.5]]), np.array([[0.5, 0.25, 0.25]])
    pi1, pi2 = np.array([0.3, 0.3, 0.4]), np.array([0.6, 0.2, 0.2])
    ratio = m / g1 * pi1 / g2 * pi2
    expected = ratio / ratio.sum()
    got = remove_log(np.log(m), np.log(g1), np.log(g2), log_prior=np.log([pi1, pi2]))
    np.testing.assert_allclose(got, expected)
    shared = remove_log(np.log(m), np.log(g1), np.log(g2), log_prior=np.log(pi1))
    ratio = m / g1 / g2 * pi1**2  # one prior for both patches: kept once per patch
    np.testing.assert_allclose(shared, ratio / ratio.sum())


def test_a_prior_of_the_wrong_shape_is_named():
    with pytest.raises(
        ValueError, match=r"log_prior has shape \(3,\); expected \(2,\) or \(1, 2\)"
    ):
        remove_log(np.zeros((4, 2)), np.zeros((4, 2)), log_prior=np.zeros(3))


def test_a_patch_that_holds_its_prior_only_changes_nothing():
    # The same rule for every row: no bias-dependent part, so "keep" leaves the model as it is
    # (a uniform patch is the case pi = 1/k), where Eq. 19 makes it class-balanced.
    rng = np.random.default_rng(0)
    m = rng.dirichlet(np.ones(3), 40)
    for rule in ([0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]):
        g = np.log(np.tile(rule, (40, 1)))
        np.testing.assert_allclose(remove_log(np.log(m), g, log_prior=np.log(rule)), m)


def _imbalanced(n, rng, align):
    """85% of the rows are class 1; the bias b (an input) follows y in ``align`` of them."""
    y = (rng.random(n) < 0.85).astype(int)
    b = np.where(rng.random(n) < align, y, 1 - y)
    X = np.c_[y + rng.normal(0, 0.7, n), rng.normal(0, 1, n), b]
    return X, y, b


@pytest.fixture(scope="module")
def imbalanced():
    """A plain (not class-balanced) model that learned a bias stronger in its training rows
    (b follows y in 90%) than in the calibration and test rows (65%)."""
    rng = np.random.default_rng(1)
    model = LogisticRegression().fit(*_imbalanced(4000, rng, align=0.9)[:2])
    calib = _imbalanced(1500, rng, align=0.65)
    test = _imbalanced(3000, rng, align=0.65)
    eraser = Eraser(model, random_state=0, max_epochs=60, rule_scale=1.0)  # the paper's patch
    eraser.fit(calib[0], calib[1], bias=calib[2])
    return model, eraser, calib, test


def test_keep_keeps_overall_accuracy_and_cuts_the_bias(imbalanced):
    model, eraser, _, (X, y, b) = imbalanced
    before = group_accuracy(y, model.predict(X), b)
    balanced = group_accuracy(y, eraser.set_params(prior="balanced").predict(X), b)
    keep = group_accuracy(y, eraser.set_params(prior="keep").predict(X), b)
    assert keep.overall > before.overall - 1.5
    assert keep.model_bias < 0.25 * before.model_bias
    assert balanced.overall < keep.overall - 5  # Eq. 19 also undoes the 85% prior
    assert eraser.class_prior_.shape == (1, 2) and eraser.class_prior_[0, 1] > 0.7


def test_prior_is_chosen_at_removal_without_refitting(imbalanced):
    model, eraser, calib, (X, *_) = imbalanced
    eraser.set_params(prior="balanced")
    proba, log_g = eraser.outputs(X)
    keep = eraser.remove(proba, log_g, prior="keep")
    np.testing.assert_allclose(keep, eraser.set_params(prior="keep").predict_proba(X))
    held = np.log(eraser.class_prior_[0])
    np.testing.assert_allclose(
        keep, remove_log(np.log(np.clip(proba, 1e-6, 1)), *log_g, log_prior=held)
    )
    with pytest.raises(ValueError, match="prior must be one of 'balanced', 'keep'; got 'half'"):
        eraser.remove(proba, log_g, prior="half")


def test_the_held_prior_is_the_patchs_mean_log_output_over_the_calibration_rows(imbalanced):
    _, eraser, (X, *_), _ = imbalanced
    mean_log = eraser.patch_log_proba(X)[0].mean(axis=0)
    np.testing.assert_allclose(eraser.class_prior_[0], np.exp(mean_log) / np.exp(mean_log).sum())


def test_save_load_keeps_the_prior(imbalanced, tmp_path):
    model, eraser, _, (X, *_) = imbalanced
    eraser.set_params(prior="keep").save(tmp_path / "e")
    config = json.loads((tmp_path / "e" / "eraser.json").read_text())
    assert config["params"]["prior"] == "keep"
    assert config["biases"][0]["class_prior"] == eraser.class_prior_[0].tolist()
    loaded = Eraser.load(tmp_path / "e", model)
    assert loaded.prior == "keep"
    np.testing.assert_array_equal(loaded.class_prior_, eraser.class_prior_)
    np.testing.assert_allclose(loaded.predict_proba(X), eraser.predict_proba(X))


def _rewrite(path, change):
    config = json.loads((path / "eraser.json").read_text())
    change(config)
    (path / "eraser.json").write_text(json.dumps(config))


def test_older_files_without_a_prior_load_as_balanced(imbalanced, tmp_path):
    model, eraser, _, (X, *_) = imbalanced
    eraser.set_params(prior="balanced").save(tmp_path / "old")

    def drop_prior(config):
        del config["params"]["prior"], config["biases"][0]["class_prior"]

    _rewrite(tmp_path / "old", drop_prior)
    loaded = Eraser.load(tmp_path / "old", model)
    assert loaded.prior == "balanced" and not hasattr(loaded, "class_prior_")
    np.testing.assert_allclose(loaded.predict_proba(X), eraser.predict_proba(X))
    with pytest.raises(ValueError, match="prior='keep' needs the class prior .* fit it again"):
        loaded.set_params(prior="keep").predict_proba(X)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["biases"][0].update(class_prior=[0.5, 0.6]), r"biases\[0\]\.class_prior"),
        (lambda c: c["biases"][0].update(class_prior=[1.0]), r"biases\[0\]\.class_prior"),
        (lambda c: c["biases"][0].update(class_prior=[0.0, 1.0]), r"biases\[0\]\.class_prior"),
        (lambda c: c["biases"][0].update(class_prior="0.5"), r"biases\[0\]\.class_prior"),
        (lambda c: c["params"].update(prior="half"), r"prior must be one of"),
        (lambda c: c["params"].update(n_threads=0), r"n_threads must be"),
        (
            lambda c: (c["params"].update(prior="keep"), c["biases"][0].pop("class_prior")),
            r"params\.prior is 'keep' but the biases hold no 'class_prior'",
        ),
    ],
)
def test_a_damaged_prior_names_the_file_and_field(imbalanced, tmp_path, change, message):
    model, eraser, _, _ = imbalanced
    eraser.save(tmp_path / "e")
    _rewrite(tmp_path / "e", change)
    with pytest.raises(EraserFileError, match=rf"eraser\.json: .*{message}"):
        Eraser.load(tmp_path / "e", model)


def test_command_line_shares_the_library_default_and_keeps_the_prior_when_asked(tmp_path, capsys):
    rng = np.random.default_rng(2)
    columns = ["x0", "x1", "b"]
    X, y, _ = _imbalanced(3000, rng, align=0.9)
    sio.dump(LogisticRegression().fit(X, y), tmp_path / "model.skops")
    for name in ("calib", "test"):
        Xp, yp, _ = _imbalanced(800, rng, align=0.65)
        frame = pd.DataFrame(Xp, columns=columns).assign(y=yp, group=Xp[:, 2].astype(int))
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    common = ["--model", tmp_path / "model.skops", "--target", "y", "--quiet"]
    fit = ["fit", "--data", tmp_path / "calib.csv", "--bias", "group", "--features", *columns]
    assert _run(*fit, "--out", tmp_path / "default", "--max-epochs", 5, *common) == 0
    assert f"prior {library_default('prior')!r}" in capsys.readouterr().out  # one default
    assert _run(*fit, "--out", tmp_path / "keep", "--max-epochs", 20, "--prior", "keep",
                *common) == 0  # fmt: skip
    assert "prior 'keep'" in capsys.readouterr().out
    evaluate = ["evaluate", "--eraser", tmp_path / "keep", "--data", tmp_path / "test.csv"]
    assert _run(*evaluate, "--out", tmp_path / "r", *common) == 0
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["prior"] == "keep" and set(saved["class_prior"]["group"]) == {"0", "1"}
    summary = saved["biases"]["group"]["summary"]
    for key in ("before", "after"):
        assert set(summary[key]) >= {"overall_acc", "avg_acc", "model_bias", "decision_rates"}
        for rates in summary[key]["decision_rates"].values():
            assert sum(rates.values()) == pytest.approx(100.0)
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "Class prior: kept" in markdown and "| before: 0 | before: 1 |" in markdown
    balanced = ["--prior", "balanced", "--rule-scale", "1", "--max-epochs", 5]
    assert _run(*fit, "--out", tmp_path / "bal", *balanced, *common) == 0
    assert "rule scale 1\n" in capsys.readouterr().out
    saved = json.loads((tmp_path / "bal" / "eraser.json").read_text())
    assert saved["params"]["prior"] == "balanced" and saved["params"]["rule_scale"] == 1.0


def _run(*args):
    return main([str(a) for a in args])
