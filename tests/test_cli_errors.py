"""``ruleeraser`` never prints a traceback for a user error: every command, fed each damaged or
unexpected file, exits with status 2 and one line on stderr naming the file and the fault."""

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from safetensors.torch import load, save
from sklearn.linear_model import LogisticRegression

from ruleeraser import Eraser
from ruleeraser.cli import EXIT_USER_ERROR, main
from ruleeraser.model_files import load_model

FEATURES = ["x0", "x1", "b"]


def make_table(n, rng):
    y = rng.integers(0, 2, n)
    b = np.where(rng.random(n) < 0.85, y, 1 - y)
    frame = pd.DataFrame({"x0": y + rng.normal(0, 1, n), "x1": rng.normal(0, 1, n), "b": b})
    return frame.assign(y=y)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A skops model, a calibration table, a test table and an eraser fitted on them."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    train = make_table(1000, rng)
    sio.dump(LogisticRegression().fit(train[FEATURES], train["y"]), root / "model.skops")
    make_table(300, rng).to_csv(root / "calib.csv", index=False)
    make_table(200, rng).to_csv(root / "test.csv", index=False)
    calib = pd.read_csv(root / "calib.csv")
    eraser = Eraser(load_model(root / "model.skops"), max_epochs=3, random_state=0)
    eraser.fit(calib[FEATURES], calib["y"], bias=calib["b"]).save(root / "eraser")
    return root


# -- the damaged files -----------------------------------------------------------------------


def _config(path, change):
    config = json.loads((path / "eraser.json").read_text())
    wrapped = change(config)  # only a change that wraps the config returns it
    (path / "eraser.json").write_text(json.dumps(wrapped if wrapped == [config] else config))


def _weights(path, change):
    data = (path / "patches.safetensors").read_bytes()
    (path / "patches.safetensors").write_bytes(change(data))


def _drop_tensor(path):
    """One tensor fewer, with a matching hash: damage only the architecture check sees."""
    tensors = load((path / "patches.safetensors").read_bytes())
    tensors.pop(sorted(tensors)[0])
    data = save(tensors, metadata={"format": "rule-eraser/2"})
    (path / "patches.safetensors").write_bytes(data)
    _config(path, lambda c: c.__setitem__("weights_sha256", hashlib.sha256(data).hexdigest()))


def _flip(data):
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    return bytes(flipped)


#: name -> (damage done to a copy of the good eraser, what the message must say)
BAD_ERASERS = {
    "missing-tensor": (_drop_tensor, "Missing key"),
    "missing-key": (lambda p: _config(p, lambda c: c.pop("classes")), "'classes' is missing"),
    "json-list": (lambda p: _config(p, lambda c: [c]), "expected a JSON object, got a list"),
    "not-json": (lambda p: (p / "eraser.json").write_bytes(b"\x00{garbage"), "not valid JSON"),
    "truncated": (lambda p: _weights(p, lambda d: d[: len(d) // 3]), "do not match the hash"),
    "flipped-byte": (lambda p: _weights(p, _flip), "do not match the hash"),
    "no-weights": (lambda p: (p / "patches.safetensors").unlink(), "patches.safetensors"),
    "no-eraser": (lambda p: (p / "eraser.json").unlink(), "does not hold an eraser"),
    "wrong-type": (
        lambda p: _config(p, lambda c: c["params"].__setitem__("hidden_sizes", "64")),
        "hidden_sizes must be",
    ),
    "strength-nan": (
        lambda p: _config(p, lambda c: c["params"].__setitem__("strength", float("nan"))),
        "strength must be",
    ),
}

PICKLE = pickle.dumps({"weights": [1, 2, 3]})
#: name -> (file name, how to make it, what the message must say)
BAD_MODELS = {
    "pickle-as-skops": ("m.skops", lambda p: p.write_bytes(PICKLE), "holds a pickle"),
    "pickle-as-onnx": ("m.onnx", lambda p: p.write_bytes(PICKLE), "holds a pickle"),
    "empty-skops": ("m.skops", lambda p: p.write_bytes(b""), "is empty"),
    "empty-onnx": ("m.onnx", lambda p: p.write_bytes(b""), "is empty"),
    "directory": ("m.skops", lambda p: p.mkdir(), "is a directory"),
    "bad-zip": ("m.skops", lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "not a readable"),
    "bad-onnx": ("m.onnx", lambda p: p.write_bytes(b"\x08\x07garbage"), "not a readable ONNX"),
    "not-a-classifier": ("m.skops", lambda p: sio.dump([1, 2], p), "holds a list"),
    "unfitted": ("m.skops", lambda p: sio.dump(LogisticRegression(), p), "unfitted"),
    "missing": ("m.skops", lambda p: None, "no model file"),
    "pickle-not-allowed": ("m.pkl", lambda p: p.write_bytes(PICKLE), "runs arbitrary code"),
}


def _parquet_bytes(path):
    pd.read_csv(path).to_parquet(path.with_suffix(".tmp"))
    data = path.with_suffix(".tmp").read_bytes()
    path.with_suffix(".tmp").unlink()
    return data


#: name -> (file name, how to make it from the good test table, what the message must say)
BAD_TABLES = {
    "parquet-as-csv": ("t.csv", lambda p, g: p.write_bytes(_parquet_bytes(g)), "Parquet file"),
    "csv-as-parquet": ("t.parquet", lambda p, g: shutil.copy(g, p), "not a Parquet file"),
    "header-only": (
        "t.csv",
        lambda p, g: p.write_text(g.read_text().splitlines()[0] + "\n"),
        "has no rows",
    ),
    "empty": ("t.csv", lambda p, g: p.write_bytes(b""), "is empty"),
    "latin-1": (
        "t.csv",
        lambda p, g: p.write_bytes(g.read_text().replace("\n", "\n\xe9", 1).encode("latin-1")),
        "UTF-8",
    ),
    "directory": ("t.csv", lambda p, g: p.mkdir(), "is a directory"),
    "missing": ("t.csv", lambda p, g: None, "no table file"),
}


def bad_eraser(good, tmp_path, name):
    path = tmp_path / name
    shutil.copytree(good / "eraser", path)
    BAD_ERASERS[name][0](path)
    return path, BAD_ERASERS[name][1]


def bad_model(tmp_path, name):
    file, make, says = BAD_MODELS[name]
    path = tmp_path / name / file
    path.parent.mkdir()
    make(path)
    return path, says


def bad_table(good, tmp_path, name, command="fit"):
    file, make, says = BAD_TABLES[name]
    if command == "predict" and name == "directory":  # predict reads a directory of Parquet
        says = "no Parquet files"
    path = tmp_path / name / file
    path.parent.mkdir()
    make(path, good / "test.csv")
    return path, says


# -- the commands ----------------------------------------------------------------------------


def command(name, good, *, eraser=None, model=None, data=None, out=None):
    """``ruleeraser NAME`` with the good files, except those given."""
    eraser = eraser or good / "eraser"
    model = model or good / "model.skops"
    if name == "fit":
        data = data or good / "calib.csv"
        return ["fit", "--model", model, "--data", data, "--target", "y", "--bias", "b",
                "--features", *FEATURES, "--out", out or good / "new-eraser", "--max-epochs",
                "2", "--quiet"]  # fmt: skip
    data = data or good / "test.csv"
    if name == "predict":
        return ["predict", "--eraser", eraser, "--model", model, "--data", data,
                "--out", out or good / "fair.csv", "--quiet"]  # fmt: skip
    if name == "evaluate":
        return ["evaluate", "--eraser", eraser, "--model", model, "--data", data,
                "--target", "y", "--out", out or good / "report", "--quiet"]  # fmt: skip
    assert name == "serve"
    return ["serve", "--eraser", eraser, "--upstream", "http://127.0.0.1:9/v1/predict"]


def refused(argv, capsys, *names):
    """Run the command; it must exit 2 with one line on stderr that names ``names``."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert status == EXIT_USER_ERROR, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"ruleeraser {argv[0]}: "), lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_serving(monkeypatch):
    """``serve`` must fail before it listens: a server that starts fails the test."""
    import uvicorn

    def started(*args, **kwargs):
        raise AssertionError("serve started on a bad eraser")

    monkeypatch.setattr(uvicorn.Server, "run", started)


@pytest.mark.parametrize("damage", sorted(BAD_ERASERS))
@pytest.mark.parametrize("name", ["predict", "evaluate", "serve"])
def test_a_damaged_eraser_is_one_line_and_status_2(
    good, tmp_path, capsys, no_serving, name, damage
):
    path, says = bad_eraser(good, tmp_path, damage)
    out = tmp_path / ("fair.csv" if name == "predict" else "report")
    refused(command(name, good, eraser=path, out=out), capsys, path, says)
    assert not out.exists()  # nothing written, not even a partial file


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
@pytest.mark.parametrize("name", ["fit", "predict", "evaluate"])
def test_a_bad_model_file_is_one_line_and_status_2(good, tmp_path, capsys, name, kind):
    path, says = bad_model(tmp_path, kind)
    out = tmp_path / ("new-eraser" if name == "fit" else "out.csv" if name == "predict" else "r")
    refused(command(name, good, model=path, out=out), capsys, path, says)
    assert not out.exists()


@pytest.mark.parametrize("kind", sorted(BAD_TABLES))
@pytest.mark.parametrize("name", ["fit", "predict", "evaluate"])
def test_a_bad_table_is_one_line_and_status_2(good, tmp_path, capsys, name, kind):
    path, says = bad_table(good, tmp_path, kind, name)
    out = tmp_path / ("new-eraser" if name == "fit" else "out.csv" if name == "predict" else "r")
    refused(command(name, good, data=path, out=out), capsys, path, says)
    assert not out.exists()


@pytest.mark.parametrize("name", ["predict", "evaluate"])
def test_the_progress_bar_does_not_start_before_the_table_is_read(good, tmp_path, capsys, name):
    path, says = bad_table(good, tmp_path, "header-only")
    argv = command(name, good, data=path, out=tmp_path / "out.csv")
    refused([a for a in argv if a != "--quiet"], capsys, path, says)


def test_fit_refuses_to_replace_an_eraser_unless_told(good, tmp_path, capsys):
    out = tmp_path / "eraser"
    shutil.copytree(good / "eraser", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # Refused before anything else is read (here a table that does not exist).
    argv = command("fit", good, data=tmp_path / "nowhere.csv", out=out)
    refused(argv, capsys, out, "already holds an eraser", "--overwrite")
    refused(command("fit", good, out=out), capsys, out, "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([str(a) for a in command("fit", good, out=out)] + ["--overwrite"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    replaced = Eraser.load(out, load_model(good / "model.skops"))
    assert replaced.max_epochs == 2  # the new fit's
    assert sorted(p.name for p in out.iterdir()) == ["eraser.json", "patches.safetensors"]
    (tmp_path / "a-file").write_text("x")
    refused(command("fit", good, out=tmp_path / "a-file"), capsys, "a-file", "is a file")


def test_a_model_of_other_classes_is_refused_by_the_commands(good, tmp_path, capsys):
    calib = pd.read_csv(good / "calib.csv")
    other = LogisticRegression().fit(calib[FEATURES], np.where(calib["y"] == 1, "yes", "no"))
    sio.dump(other, tmp_path / "other.skops")
    for name in ("predict", "evaluate"):
        argv = command(name, good, model=tmp_path / "other.skops", out=tmp_path / "o.csv")
        refused(argv, capsys, good / "eraser", "the model's classes ['no', 'yes']")


def test_the_installed_command_prints_no_traceback(good, tmp_path):
    """The real console script, in its own process."""
    path, says = bad_eraser(good, tmp_path, "flipped-byte")
    script = Path(sys.executable).with_name("ruleeraser")
    argv = [str(a) for a in command("predict", good, eraser=path, out=tmp_path / "o.csv")]
    done = subprocess.run([script, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"ruleeraser predict: error: {path}/patches.safetensors: the weights do not match the "
        "hash in eraser.json (the file is damaged, or was changed or written by another save)"
    ]


def test_evaluate_refuses_a_report_folder_that_is_a_file(good, tmp_path, capsys):
    (tmp_path / "report").write_text("x")
    refused(command("evaluate", good, out=tmp_path / "report"), capsys, "report", "is a file")


def test_a_missing_extra_is_named_with_its_install_command(good, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07an onnx model")
    argv = command("predict", good, model=tmp_path / "m.onnx", out=tmp_path / "o.csv")
    refused(argv, capsys, "pip install 'rule-eraser[onnx]'")


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (KeyboardInterrupt(), 130, "interrupted"),
        (KeyboardInterrupt("12 rows cached"), 130, "interrupted: 12 rows cached"),
        (RuntimeError("the model's endpoint\nfailed"), 1, "the model's endpoint; failed"),
        (ValueError("bad\n  input"), 2, "bad; input"),
        (EOFError(), None, None),  # not a user error: a bug, with its traceback
    ],
)
def test_exit_statuses(good, capsys, monkeypatch, raised, status, line):
    from ruleeraser.cli import fit

    def run(args):
        raise raised

    monkeypatch.setattr(fit, "run", run)
    argv = [str(a) for a in command("fit", good)]
    if status is None:
        with pytest.raises(EOFError):
            main(argv)
        return
    assert main(argv) == status
    assert capsys.readouterr().err.splitlines() == [f"ruleeraser fit: error: {line}"]


def test_warnings_print_as_one_line_each(good, tmp_path, capsys):
    calib = pd.read_csv(good / "calib.csv")
    calib[~((calib["y"] == 1) & (calib["b"] == 0))].to_csv(tmp_path / "gap.csv", index=False)
    argv = command("fit", good, data=tmp_path / "gap.csv", out=tmp_path / "e")
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(e.startswith("ruleeraser fit: warning: ") for e in err), err
    assert any("EmptyCell" in e or "(1, 0)" in e for e in err), err


def test_a_bad_rule_scale_is_refused_with_status_2(good, tmp_path, capsys):
    out = tmp_path / "new-eraser"
    refused([*command("fit", good, out=out), "--rule-scale", "-1"], capsys, "rule_scale", "-1")
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error: not a number
        main([str(a) for a in command("fit", good, out=out)] + ["--rule-scale", "big"])
    assert stopped.value.code == 2
    assert "argument --rule-scale: invalid rule_scale value: 'big'" in capsys.readouterr().err
    assert not out.exists()
