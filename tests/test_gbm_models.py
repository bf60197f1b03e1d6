"""LightGBM and XGBoost models as practitioners have them (their own files, or the scikit-learn
wrapper in a skops file), with default settings, taking the bias column as an input: the
commands open them, read the model's own features from the table by name, and give the fair
probabilities an eraser fitted in memory on the same model gives."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

lgb = pytest.importorskip("lightgbm", reason="the gbm extra (lightgbm) is not installed")
xgb = pytest.importorskip("xgboost", reason="the gbm extra (xgboost) is not installed")

from ruleeraser import Eraser  # noqa: E402
from ruleeraser.cli import EXIT_USER_ERROR, main  # noqa: E402
from ruleeraser.gbm_files import model_features  # noqa: E402
from ruleeraser.model_files import ModelFileError, load_model  # noqa: E402

FEATURES = ["x0", "x1", "x2", "sex"]
#: Each file and the in-memory model it holds.
FILES = {
    "lgb.txt": "lgb", "lgb.skops": "lgb", "xgb.json": "xgb", "xgb.ubj": "xgb",
    "xgb.skops": "xgb",
}  # fmt: skip


def make_table(n, align, rng):
    """y in x0; the bias `sex` (an input of the model) agrees with y `align` of the time."""
    y = rng.integers(0, 2, n)
    sex = np.where(rng.random(n) < align, y, 1 - y)
    x = rng.normal(0, 1, (n, 3)) + np.c_[y, np.zeros((n, 2))]
    return pd.DataFrame(x, columns=FEATURES[:3]).assign(sex=sex, y=y)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Default LightGBM and XGBoost classifiers saved in every format; a calibration and a
    test table, each with an extra `id` column first and the columns in another order."""
    root = tmp_path_factory.mktemp("gbm")
    rng = np.random.default_rng(0)
    train = make_table(1500, 0.85, rng)
    models = {
        "lgb": lgb.LGBMClassifier(n_estimators=20, verbose=-1),
        "xgb": xgb.XGBClassifier(n_estimators=20, n_jobs=1),
    }
    for name, model in models.items():
        model.fit(train[FEATURES], train["y"])
        sio.dump(model, root / f"{name}.skops")
    models["lgb"].booster_.save_model(root / "lgb.txt")
    models["xgb"].save_model(root / "xgb.json")
    models["xgb"].get_booster().save_model(root / "xgb.ubj")
    tables = {"calib": make_table(600, 0.85, rng), "test": make_table(400, 0.5, rng)}
    for name, table in tables.items():
        table.insert(0, "id", np.arange(len(table)) + 1000)
        table[["id", "y", "sex", "x2", "x1", "x0"]].to_csv(root / f"{name}.csv", index=False)
    return root, models, tables


def run(*args):
    return main([str(a) for a in args])


def trusted(path):
    """The types a skops file holds that need the caller's trust (none for other files)."""
    return sio.get_untrusted_types(file=path) if path.suffix == ".skops" else []


def trust(path):
    return [a for t in trusted(path) for a in ("--trust", t)]


def model_args(root, file):
    return ["--model", root / file, *trust(root / file)]


def refused(argv, capsys, *names):
    """Run the command: status 2 and one line on stderr naming each of ``names``."""
    status = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == EXIT_USER_ERROR and len(err) == 1, err
    for name in names:
        assert str(name) in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("file", sorted(FILES))
def test_a_model_file_gives_the_models_probabilities_and_features(files, file):
    root, models, tables = files
    box = load_model(root / file, trusted=trusted(root / file))
    X = tables["test"][FEATURES]
    np.testing.assert_allclose(box(X), models[FILES[file]].predict_proba(X), atol=1e-6)
    assert model_features(box) == (FEATURES, 4)
    assert box.classes is None or box.classes.tolist() == [0, 1]


@pytest.mark.parametrize("file", sorted(FILES))
def test_fit_evaluate_predict_through_the_file_match_the_model_in_memory(files, tmp_path, file):
    """No --features: the model's own (the bias column `sex` too, `id` never), read by name
    from tables whose columns are in another order."""
    root, models, tables = files
    model = model_args(root, file)
    eraser_dir = tmp_path / "eraser"
    settings = ["--max-epochs", "10", "--random-state", "3", "--quiet"]
    fit = ["fit", *model, "--data", root / "calib.csv", "--target", "y", "--bias", "sex"]
    assert run(*fit, "--out", eraser_dir, *settings) == 0
    out = ["--eraser", eraser_dir, *model, "--data", root / "test.csv", "--quiet"]
    assert run("predict", *out, "--out", tmp_path / "fair.csv") == 0
    assert run("evaluate", *out, "--target", "y", "--out", tmp_path / "report") == 0

    in_memory = models[FILES[file]]
    saved = Eraser.load(eraser_dir, in_memory)
    assert saved.feature_names_in_ == FEATURES
    params = {k: v for k, v in saved.get_params().items() if k != "model"}
    calib, test = tables["calib"], tables["test"]
    reference = Eraser(in_memory, **params).fit(calib[FEATURES], calib["y"], bias=calib[["sex"]])
    fair = reference.predict_proba(test[FEATURES])
    got = pd.read_csv(tmp_path / "fair.csv")
    np.testing.assert_allclose(got[["proba_0", "proba_1"]], fair, atol=1e-6)
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    summary = summary["biases"]["sex"]["summary"]
    before = in_memory.predict(test[FEATURES])
    after = fair.argmax(axis=1)
    assert summary["before"]["overall_acc"] == pytest.approx(100 * np.mean(before == test.y))
    assert summary["after"]["overall_acc"] == pytest.approx(100 * np.mean(after == test.y))


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict"])
@pytest.mark.parametrize("file", ["lgb.txt", "xgb.skops"])
def test_a_column_the_model_takes_missing_from_the_table_is_one_line(
    files, tmp_path, capsys, command, file
):
    root, _, tables = files
    data = tmp_path / "no-x1.csv"
    tables["test"].drop(columns="x1").to_csv(data, index=False)
    model = model_args(root, file)
    if command == "fit":
        argv = ["fit", *model, "--data", data, "--target", "y", "--bias", "sex", "--out"]
        argv += [tmp_path / "eraser", "--quiet"]
    else:
        eraser_dir = tmp_path / "fitted"
        box = load_model(root / file, trusted=trusted(root / file))
        Eraser(box, max_epochs=2, random_state=0).fit(
            tables["calib"][FEATURES], tables["calib"]["y"], bias=tables["calib"]["sex"]
        ).save(eraser_dir)
        argv = [command, "--eraser", eraser_dir, *model, "--data", data, "--quiet"]
        argv += ["--target", "y", "--out", tmp_path / "report"] if command == "evaluate" else []
        argv += ["--out", tmp_path / "fair.csv"] if command == "predict" else []
    refused(argv, capsys, "'x1'", data)
    assert not (tmp_path / "eraser").exists() and not (tmp_path / "fair.csv").exists()


def test_features_that_differ_from_the_models_are_refused_naming_the_difference(
    files, tmp_path, capsys
):
    root, _, _ = files
    fit = ["fit", "--model", root / "lgb.txt", "--data", root / "calib.csv", "--target", "y"]
    fit += ["--bias", "sex", "--out", tmp_path / "eraser", "--quiet", "--features"]
    refused([*fit, "x0", "x1", "x2"], capsys, "missing ['sex']")
    refused([*fit, *FEATURES, "id"], capsys, "not the model's: ['id']")
    refused([*fit, "sex", "x0", "x1", "x2"], capsys, "another order")


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_model_that_knows_only_its_count_refuses_a_table_of_another(
    files, tmp_path, capsys, library
):
    """Trained on arrays, the model knows 4 inputs but no names: the default features (every
    column but the target and the bias) are 3, and --features that name 4 are taken."""
    root, _, tables = files
    calib = tables["calib"].drop(columns="id")
    calib.to_csv(tmp_path / "calib.csv", index=False)
    X, y = calib[FEATURES].to_numpy(), calib["y"].to_numpy()
    if library == "lightgbm":
        path = tmp_path / "arrays.txt"
        lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y).booster_.save_model(path)
    else:
        path = tmp_path / "arrays.json"
        xgb.XGBClassifier(n_estimators=5, n_jobs=1).fit(X, y).save_model(path)
    assert model_features(load_model(path)) == (None, 4)
    fit = ["fit", "--model", path, "--data", tmp_path / "calib.csv", "--target", "y", "--bias"]
    fit += ["sex", "--out", tmp_path / "eraser", "--quiet", "--max-epochs", "2"]
    line = refused(fit, capsys, "takes 4 features", "are 3", "['x0', 'x1', 'x2']")
    assert "--features" in line
    assert run(*fit, "--features", *FEATURES) == 0


def test_an_untrusted_skops_file_is_refused_listing_its_types(files, tmp_path, capsys):
    root, _, _ = files
    types = sio.get_untrusted_types(file=root / "lgb.skops")
    assert "lightgbm.sklearn.LGBMClassifier" in types
    fit = ["fit", "--model", root / "lgb.skops", "--data", root / "calib.csv", "--target", "y"]
    fit += ["--bias", "sex", "--out", tmp_path / "eraser", "--quiet", "--max-epochs", "2"]
    refused(fit, capsys, *(f"--trust {t}" for t in types))
    refused([*fit, "--trust", types[0]], capsys, *(f"--trust {t}" for t in types[1:]))
    with pytest.raises(ValueError, match="refused: .*LGBMClassifier"):
        load_model(root / "lgb.skops")
    assert run(*fit, *trust(root / "lgb.skops")) == 0
    with pytest.raises(ValueError, match="trusted types apply to skops files"):
        load_model(root / "lgb.txt", trusted=types)


def test_a_booster_file_names_its_classes_only_when_told(files):
    root, _, tables = files
    assert load_model(root / "xgb.ubj").classes is None  # the eraser's are 0 .. k-1
    assert load_model(root / "lgb.txt", classes=["no", "yes"]).classes.tolist() == ["no", "yes"]
    X = tables["test"][FEATURES]
    with pytest.raises(ValueError, match=r"takes the columns .* got"):
        load_model(root / "lgb.txt")(X[list(reversed(FEATURES))])


def test_a_regressor_is_refused_naming_its_objective(files, tmp_path):
    _, _, tables = files
    calib = tables["calib"]
    path = tmp_path / "regressor.txt"
    regressor = lgb.LGBMRegressor(n_estimators=2, verbose=-1).fit(calib[FEATURES], calib["x0"])
    regressor.booster_.save_model(path)
    with pytest.raises(ModelFileError, match="objective 'regression', not a classifier"):
        load_model(path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="broken.json is not a readable XGBoost model"):
        load_model(tmp_path / "broken.json")


def test_a_missing_library_is_named_with_its_install_command(files, monkeypatch, capsys):
    root, _, _ = files
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm raises ImportError
    argv = ["predict", "--eraser", root / "nowhere", "--model", root / "lgb.txt", "--data"]
    refused([*argv, root / "test.csv", "--out", root / "fair.csv"], capsys, "rule-eraser[gbm]")


def test_a_catboost_file_keeps_its_labels_and_features(files, tmp_path):
    catboost = pytest.importorskip("catboost", reason="catboost is not installed")
    _, _, tables = files
    calib = tables["calib"]
    labels = np.where(calib["y"] == 1, "yes", "no")
    model = catboost.CatBoostClassifier(
        iterations=10, verbose=0, thread_count=1, allow_writing_files=False
    )
    model.fit(calib[FEATURES], labels).save_model(tmp_path / "model.cbm")
    box = load_model(tmp_path / "model.cbm")
    assert box.classes.tolist() == ["no", "yes"]
    assert model_features(box) == (FEATURES, 4)
    X = tables["test"][FEATURES]
    np.testing.assert_allclose(box(X), model.predict_proba(X), atol=1e-12)
