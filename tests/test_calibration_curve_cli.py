"""``ruleeraser evaluate --calibration-curve``: the eraser's settings refitted on nested subsets
of a calibration table, each refit measured on the evaluated table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("skops")
import skops.io as sio  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from ruleeraser import Eraser  # noqa: E402
from ruleeraser.calibration_size import calibration_curve  # noqa: E402
from ruleeraser.cli import main  # noqa: E402
from ruleeraser.model_files import load_model  # noqa: E402

FEATURES = ["x0", "x1", "b"]


def _table(n: int, align: float, rng: np.random.Generator) -> pd.DataFrame:
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < align, y, 1 - y)
    frame = pd.DataFrame({"x0": y + rng.normal(0, 1.2, n), "x1": rng.normal(0, 1, n)})
    return frame.assign(b=b, label=np.where(y == 1, "yes", "no"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    rng = np.random.default_rng(0)
    train = _table(3000, 0.9, rng)
    sio.dump(LogisticRegression().fit(train[FEATURES], train["label"]), root / "model.skops")
    _table(600, 0.9, rng).to_csv(root / "calib.csv", index=False)
    _table(500, 0.5, rng).to_csv(root / "test.csv", index=False)
    fit = ["fit", "--model", root / "model.skops", "--data", root / "calib.csv", "--target"]
    fit += ["label", "--bias", "b", "--features", *FEATURES, "--out", root / "eraser"]
    fit += ["--max-epochs", "20", "--quiet"]
    assert main([str(a) for a in fit]) == 0
    return root


def test_evaluate_writes_the_curve_of_the_erasers_settings(files, capsys):
    root = files
    argv = ["evaluate", "--eraser", root / "eraser", "--model", root / "model.skops"]
    argv += ["--data", root / "test.csv", "--target", "label", "--out", root / "report"]
    argv += ["--calibration-curve", root / "calib.csv", "--curve-sizes", "60", "600"]
    assert main([str(a) for a in argv]) == 0
    assert "Calibration curve:" in capsys.readouterr().out
    written = json.loads((root / "report" / "calibration-curve.json").read_text())
    assert [p["n"] for p in written["points"]] == [60, 600] and written["n_eval"] == 500
    assert (root / "report" / "calibration-curve.png").stat().st_size > 0
    assert (root / "report" / "report.md").is_file()  # the usual report too
    # the same curve through the library, with the saved eraser's settings
    eraser = Eraser.load(root / "eraser", load_model(root / "model.skops"))
    calib, test = pd.read_csv(root / "calib.csv"), pd.read_csv(root / "test.csv")
    curve = calibration_curve(
        eraser, calib[FEATURES], calib["label"], bias=calib["b"], sizes=[60, 600],
        eval_set=(test[FEATURES], test["label"], test["b"]), random_state=eraser.random_state or 0,
    )  # fmt: skip
    for point, expected in zip(written["points"], curve.points, strict=True):
        assert point == pytest.approx(expected)
    assert written["points"][1]["model_bias"] < written["before"]["model_bias"]


def test_curve_sizes_beyond_the_table_are_refused(files, capsys):
    root = files
    argv = ["evaluate", "--eraser", root / "eraser", "--model", root / "model.skops"]
    argv += ["--data", root / "test.csv", "--target", "label", "--out", root / "report2"]
    argv += ["--calibration-curve", root / "calib.csv", "--curve-sizes", "700"]
    assert main([str(a) for a in argv]) != 0
    assert "sizes must lie in 1..600" in capsys.readouterr().err
