"""The boundary between an eraser and what a practitioner hands it: the model it was fitted on
(a fingerprint: answers on probe rows that are no calibration rows), bias values its
calibration rows never had, an existing ``predict --out``, and Ctrl-C at any moment."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import torch
from scale_data import ModelServer
from sklearn.linear_model import LogisticRegression

from ruleeraser import Eraser, fingerprint
from ruleeraser.cli import main
from ruleeraser.model_files import load_model
from ruleeraser.persist import EraserFileError

FEATURES = ["x0", "x1", "b"]


def make_table(n, rng, align=0.85):
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < align, y, 1 - y)
    frame = pd.DataFrame({"x0": y + rng.normal(0, 1, n), "x1": rng.normal(0, 1, n), "b": b})
    return frame.assign(y=y)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A skops model, another one (trained otherwise), calibration and test tables, and an
    eraser fitted on the first model with its file's hash, as ``ruleeraser fit`` saves it."""
    root = tmp_path_factory.mktemp("boundary")
    rng = np.random.default_rng(0)
    train = make_table(1000, rng)
    model = LogisticRegression().fit(train[FEATURES], train["y"])
    sio.dump(model, root / "model.skops")
    other = make_table(1000, rng, align=0.5)
    sio.dump(LogisticRegression(C=0.05).fit(other[FEATURES], other["y"]), root / "other.skops")
    calib = make_table(400, rng)
    calib.to_csv(root / "calib.csv", index=False)
    make_table(300, rng, align=0.5).to_csv(root / "test.csv", index=False)
    eraser = Eraser(load_model(root / "model.skops"), max_epochs=5, random_state=0)
    eraser.fit(calib[FEATURES], calib["y"], bias=calib["b"])
    eraser.model_fingerprint_ = fingerprint.with_file(
        eraser.model_fingerprint_, root / "model.skops"
    )
    eraser.save(root / "eraser")
    return root, calib, model


def run(*args):
    return main([str(a) for a in args])


def stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# -- the fingerprint -----------------------------------------------------------------------


def test_the_probes_are_no_calibration_rows(files):
    root, calib, _ = files
    kept = json.loads((root / "eraser" / "eraser.json").read_text())["model_fingerprint"]
    probes = kept["probes"]
    assert probes["kind"] == "frame" and probes["columns"] == FEATURES
    assert probes["dtypes"] == ["float64", "float64", "int64"]
    rows = pd.DataFrame(probes["rows"], columns=FEATURES)
    assert len(rows) == fingerprint.N_PROBES
    assert not rows.merge(calib[FEATURES], how="inner").shape[0]  # no row is a record
    assert not rows[["x0", "x1"]].isin(calib[["x0", "x1"]].to_numpy().ravel()).any().any()
    assert set(rows["b"]) <= {0, 1}  # an int feature: a value the column holds
    for column in ["x0", "x1"]:  # a float feature: a quantile, within the column's range
        assert rows[column].between(calib[column].min(), calib[column].max()).all()
    assert len(kept["answers"]) == len(rows) and kept["model_sha256"] == fingerprint.file_sha256(
        root / "model.skops"
    )


def test_probe_rows_that_can_only_be_records_are_dropped():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 10)  # every combination is a record
    made = fingerprint.make(X, lambda rows: np.full((len(rows), 2), 0.5), seed=0)
    assert made == {"probes": None, "answers": None, "model_sha256": None}


def test_tensors_keep_their_type_and_images_get_no_probes():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
    X = torch.randn(200, 3)
    made = fingerprint.make(X, lambda rows: net(rows).detach(), seed=1)
    assert made["probes"]["kind"] == "tensor" and made["probes"]["dtypes"] == ["float32"] * 3
    assert fingerprint.difference(made, lambda rows: net(rows).detach()) == 0.0
    images = fingerprint.make(torch.rand(50, 1, 8, 8), lambda rows: np.ones((len(rows), 2)) / 2)
    assert images["probes"] is None and images["answers"] is None


def test_the_fingerprint_round_trips_and_the_library_refuses_another_model(files):
    root, calib, model = files
    loaded = Eraser.load(root / "eraser", load_model(root / "model.skops"))
    again = Eraser.load(loaded.save(root / "again"), model)  # the same answers, in memory
    assert again.model_fingerprint_ == loaded.model_fingerprint_
    other = load_model(root / "other.skops")
    with pytest.raises(ValueError, match=r"the model is not the one .*eraser was fitted on \(its "
                       r"answers on the eraser's probe rows differ by up to 0\.\d+\); pass "
                       r"check_model=False"):  # fmt: skip
        Eraser.load(root / "eraser", other)
    unchecked = Eraser.load(root / "eraser", other, check_model=False)
    assert unchecked.predict_proba(calib[FEATURES]).shape == (400, 2)


def test_an_eraser_saved_before_fingerprints_loads_and_says_so_once(files, tmp_path, capsys):
    root, _, model = files
    old = tmp_path / "old"
    shutil.copytree(root / "eraser", old)
    config = json.loads((old / "eraser.json").read_text())
    del config["model_fingerprint"]
    (old / "eraser.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="saved without a model fingerprint: the model is not"):
        assert not hasattr(Eraser.load(old, model), "model_fingerprint_")
    assert run("evaluate", "--eraser", old, "--model", root / "other.skops", "--data",
               root / "test.csv", "--target", "y", "--out", tmp_path / "r") == 0  # fmt: skip
    said = [line for line in stderr_lines(capsys) if "fingerprint" in line]
    assert said == [
        f"ruleeraser evaluate: warning: {old} was saved without a model fingerprint: the model "
        "is not checked against the one it was fitted on (fit the eraser again to record one)"
    ]


def test_a_damaged_fingerprint_is_named(files, tmp_path):
    root, _, model = files
    bad = tmp_path / "bad"
    shutil.copytree(root / "eraser", bad)
    config = json.loads((bad / "eraser.json").read_text())
    config["model_fingerprint"]["answers"] = [[0.5, 0.5]]
    (bad / "eraser.json").write_text(json.dumps(config))
    with pytest.raises(EraserFileError, match=r"eraser.json: model_fingerprint: answers must be "):
        Eraser.load(bad, model)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_the_command_line_refuses_another_model_unless_forced(files, tmp_path, capsys, command):
    root, _, model = files
    common = ["--eraser", root / "eraser", "--data", root / "test.csv", "--quiet"]
    if command == "evaluate":
        common += ["--target", "y"]

    def out(name):
        return tmp_path / name if command == "evaluate" else tmp_path / f"{name}.csv"

    assert run(command, *common, "--model", root / "other.skops", "--out", out("refused")) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith(
        f"ruleeraser {command}: error: the model {root / 'other.skops'} is not the one "
        f"{root / 'eraser'} was fitted on (its answers on the eraser's probe rows differ by up to "
    )
    assert line.endswith("); pass --force to use it anyway") and not out("refused").exists()
    forced = ["--model", root / "other.skops", "--out", out("forced"), "--force"]
    assert run(command, *common, *forced) == 0
    assert "using it anyway (--force)" in capsys.readouterr().err and out("forced").exists()
    # Another file of the same model (compressed: other bytes, the same answers): not a word.
    sio.dump(model, tmp_path / "copy.skops", compression=zipfile.ZIP_DEFLATED)
    assert fingerprint.file_sha256(tmp_path / "copy.skops") != fingerprint.file_sha256(
        root / "model.skops"
    )
    assert run(command, *common, "--model", tmp_path / "copy.skops", "--out", out("same")) == 0
    assert stderr_lines(capsys) == []


def test_fit_records_the_model_file_hash(files, tmp_path):
    root, _, _ = files
    assert run("fit", "--model", root / "model.skops", "--data", root / "calib.csv", "--target",
               "y", "--bias", "b", "--features", *FEATURES, "--out", tmp_path / "e",
               "--max-epochs", "2", "--quiet") == 0  # fmt: skip
    kept = json.loads((tmp_path / "e" / "eraser.json").read_text())["model_fingerprint"]
    assert kept["model_sha256"] == fingerprint.file_sha256(root / "model.skops")
    assert len(kept["probes"]["rows"]) == len(kept["answers"]) == fingerprint.N_PROBES


def test_serve_sends_the_probes_upstream_once_and_refuses_another_model(files, capsys):
    from ruleeraser.serve.command import check_upstream, upstream_model

    root, _, model = files
    other = sio.load(root / "other.skops")
    same, elsewhere = ModelServer(model), ModelServer(other)
    try:
        eraser = Eraser.load(root / "eraser", upstream_model(same.url, 5.0), check_model=False)
        check_upstream(eraser, root / "eraser", same.url)
        assert same.requests == 1 and same.rows_seen == fingerprint.N_PROBES
        assert run("serve", "--eraser", root / "eraser", "--upstream", elsewhere.url) == 2
        [line] = stderr_lines(capsys)
        assert line.startswith(
            f"ruleeraser serve: error: the model at {elsewhere.url} is not the one "
            f"{root / 'eraser'} was fitted on (its answers on the eraser's probe rows differ"
        )
        assert line.endswith("pass --force to serve it anyway") and elsewhere.requests == 1
    finally:
        same.stop()
        elsewhere.stop()


# -- bias values the calibration rows never had ----------------------------------------------


def test_an_unseen_bias_value_is_named_and_kept_out_of_the_figures(files, tmp_path, capsys):
    root, _, _ = files
    test = pd.read_csv(root / "test.csv")
    rng = np.random.default_rng(3)
    third = make_table(8, rng).assign(b=2)  # a group the calibration rows never had
    pd.concat([test, third], ignore_index=True).to_csv(tmp_path / "three.csv", index=False)
    common = ["--eraser", root / "eraser", "--model", root / "model.skops", "--target", "y"]
    assert run("evaluate", *common, "--data", root / "test.csv", "--out", tmp_path / "two",
               "--quiet") == 0  # fmt: skip
    capsys.readouterr()
    assert run("evaluate", *common, "--data", tmp_path / "three.csv", "--out",
               tmp_path / "three", "--quiet") == 0  # fmt: skip
    [line] = stderr_lines(capsys)
    assert line == (
        "ruleeraser evaluate: warning: bias 'b' has the value 2, which the eraser's calibration "
        "rows never had, in 8 row(s) (data rows 300, 301, 302, 303, 304 ...): they are kept out "
        "of its gap and group figures"
    )
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    three = json.loads((tmp_path / "three" / "report.json").read_text())
    assert three["biases"]["b"] == two["biases"]["b"]  # the gap and every group figure
    assert three["rows"] == 308 and three["unseen_bias_values"] == {
        "b": [{"value": 2, "rows": 8, "first_rows": [300, 301, 302, 303, 304]}]
    }
    note = (tmp_path / "three" / "report.md").read_text()
    assert "- bias `b` = 2: 8 row(s) (data rows 300, 301, 302, 303, 304 ...)" in note


# -- predict --out ----------------------------------------------------------------------------


def test_predict_refuses_an_existing_out_without_overwrite(files, tmp_path, capsys):
    root, _, _ = files
    out = tmp_path / "fair.csv"
    out.write_text("mine\n")
    common = ["predict", "--eraser", root / "eraser", "--model", root / "model.skops",
              "--data", root / "test.csv", "--out", out, "--quiet"]  # fmt: skip
    assert run(*common) == 2
    assert stderr_lines(capsys) == [
        f"ruleeraser predict: error: --out {out} already exists: pass --overwrite to replace it"
    ]
    assert out.read_text() == "mine\n"
    assert run(*common, "--overwrite") == 0
    assert len(pd.read_csv(out)) == 300


# -- Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_at_any_moment_exits_130_with_one_line(files, tmp_path):
    """SIGINT from just after the interpreter starts the command (its imports: torch takes
    seconds) into the fit: status 130 and one line, whatever the moment."""
    root, _, _ = files
    rng = np.random.default_rng(1)
    make_table(20_000, rng).to_csv(tmp_path / "big.csv", index=False)
    code = "print('started', flush=True); from ruleeraser.cli import run; run()"
    command = [
        sys.executable, "-c", code, "fit", "--model", str(root / "model.skops"),
        "--data", str(tmp_path / "big.csv"), "--target", "y", "--bias", "b",
        "--out", str(tmp_path / "e"), "--quiet",
    ]  # fmt: skip
    # A background job's SIGINT is ignored, and an ignored signal stays ignored in the child;
    # a handler in this process is reset to the default there, as from a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for delay in (0.1, 0.3, 0.8, 1.5):
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            child = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            assert child.stdout.readline() == "started\n"
            time.sleep(delay)
            child.send_signal(signal.SIGINT)
            out, err = child.communicate(timeout=60)
            assert child.returncode == 130, (delay, err)
            [line] = err.splitlines()
            assert line.startswith("ruleeraser") and ": error: interrupted" in line, line
            assert not out
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not (tmp_path / "e").exists()  # nothing half-written
