import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from ruleeraser import Eraser
from ruleeraser.cli import build_parser, main
from ruleeraser.metrics import report
from ruleeraser.model_files import load_model

FEATURES = ["x0", "x1", "x2", "b"]


def make_table(n, align, rng):
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < align, y, 1 - y)
    X = np.c_[y + rng.normal(0, 1, n), rng.normal(0, 1, (n, 2))]
    frame = pd.DataFrame(X, columns=FEATURES[:3])
    return frame.assign(b=b, y=y, id=np.arange(n) + 1000)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A skops model that takes the bias as an input, calibration and test tables."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    train = make_table(3000, 0.85, rng)
    model = LogisticRegression().fit(train[FEATURES], train["y"])
    sio.dump(model, root / "model.skops")
    make_table(400, 0.85, rng).to_csv(root / "calib.csv", index=False)
    test = make_table(500, 0.5, rng)
    test.to_csv(root / "test.csv", index=False)
    test.to_parquet(root / "test.parquet", row_group_size=128)
    eraser_dir = root / "eraser"
    rc = run(
        "fit", "--model", root / "model.skops", "--data", root / "calib.csv", "--target", "y",
        "--bias", "b", "--features", *FEATURES, "--out", eraser_dir, "--max-epochs", "20",
        "--quiet",
    )  # fmt: skip
    assert rc == 0
    return root, test


def run(*args):
    return main([str(a) for a in args])


def test_fit_saves_a_loadable_eraser_without_pickle(files):
    root, _ = files
    assert sorted(p.name for p in (root / "eraser").iterdir()) == [
        "eraser.json",
        "patches.safetensors",
    ]
    eraser = Eraser.load(root / "eraser", load_model(root / "model.skops"))
    assert eraser.feature_names_in_ == FEATURES and eraser.bias_names_ == ["b"]
    assert eraser.n_queries_ == 400 and eraser.max_epochs == 20


@pytest.mark.parametrize(
    ("data", "out"), [("test.csv", "pred.parquet"), ("test.parquet", "pred.csv")]
)
def test_predict_streams_the_erasers_probabilities(files, data, out):
    root, test = files
    rc = run(
        "predict", "--eraser", root / "eraser", "--model", root / "model.skops",
        "--data", root / data, "--out", root / out, "--chunk-rows", "96", "--keep-original",
        "--keep-columns", "id", "--quiet",
    )  # fmt: skip
    assert rc == 0 and not (root / f"{out}.partial").exists()
    got = pd.read_csv(root / out) if out.endswith(".csv") else pd.read_parquet(root / out)
    assert list(got.columns) == [
        "id", "proba_0", "proba_1", "prediction", "model_proba_0", "model_proba_1"
    ]  # fmt: skip
    model = load_model(root / "model.skops")
    eraser = Eraser.load(root / "eraser", model)
    np.testing.assert_array_equal(got["id"], test["id"])
    np.testing.assert_allclose(got[["proba_0", "proba_1"]], eraser.predict_proba(test[FEATURES]))
    np.testing.assert_array_equal(got["prediction"], eraser.predict(test[FEATURES]))
    np.testing.assert_allclose(got[["model_proba_0", "model_proba_1"]], model(test[FEATURES]))


def test_evaluate_writes_the_report(files, capsys):
    root, test = files
    out = root / "report"
    rc = run(
        "evaluate", "--eraser", root / "eraser", "--model", root / "model.skops",
        "--data", root / "test.parquet", "--target", "y", "--out", out, "--chunk-rows", "100",
        "--quiet",
    )  # fmt: skip
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "groups.png",
        "tradeoff.png",
    }
    assert (out / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "report.json").read_text())
    eraser = Eraser.load(root / "eraser", load_model(root / "model.skops"))
    X = test[FEATURES]
    before = eraser.classes_[eraser.blackbox_(X).argmax(axis=1)]
    expected = report(test["y"], test["b"], {"before": before, "after": eraser.predict(X)})
    assert saved["rows"] == 500 and saved["biases"]["b"]["summary"] == expected.to_dict()
    assert len(saved["biases"]["b"]["groups"]) == 4
    after = expected.rows["after"]
    assert after.model_bias < expected.rows["before"].model_bias  # the eraser helps here
    printed = capsys.readouterr().out
    assert expected.to_markdown() in printed
    assert (out / "report.md").read_text().startswith("# Rule eraser")


def test_missing_columns_are_named(files, capsys):
    root, test = files
    test.drop(columns="x1").to_csv(root / "no_x1.csv", index=False)
    common = ["--model", root / "model.skops", "--quiet"]
    assert run("fit", "--data", root / "calib.csv", "--target", "yy", "--bias", "b",
               "--out", root / "e2", *common) == 2  # fmt: skip
    assert "no column(s) ['yy']" in capsys.readouterr().err
    assert run("predict", "--eraser", root / "eraser", "--data", root / "no_x1.csv",
               "--out", root / "p.csv", *common) == 2  # fmt: skip
    assert "no column(s) ['x1']" in capsys.readouterr().err
    assert not (root / "p.csv").exists() and not (root / "e2").exists()


def test_bad_values_and_options_are_refused(files, capsys):
    root, test = files
    holes = test.copy()
    holes.loc[[3, 7], "x2"] = np.nan
    holes.to_csv(root / "holes.csv", index=False)
    assert run("predict", "--eraser", root / "eraser", "--model", root / "model.skops",
               "--data", root / "holes.csv", "--out", root / "p.csv", "--quiet") == 2  # fmt: skip
    assert "2 row(s) with missing or infinite feature values (data rows from 0): 3, 7" in (
        capsys.readouterr().err
    )
    assert run("evaluate", "--eraser", root / "eraser", "--model", root / "model.skops",
               "--data", root / "test.csv", "--target", "y", "--budget", "5") == 2  # fmt: skip
    assert "--budget apply only to a model at an http(s) URL" in capsys.readouterr().err
    (root / "model.pkl").write_bytes(b"not even a pickle")
    assert run("predict", "--eraser", root / "eraser", "--model", root / "model.pkl",
               "--data", root / "test.csv", "--out", root / "p.csv") == 2  # fmt: skip
    assert "runs arbitrary code" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "predict", "evaluate"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ["--model", "--data", "--budget", "--cache-dir", "--allow-pickle"]:
        assert option in text
    (commands,) = [a for a in build_parser()._actions if a.dest == "command"]
    for action in commands.choices[command]._actions:
        assert action.help, action.option_strings
