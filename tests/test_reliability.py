"""Nothing silently wrong: each numbered case of the reliability issue, through the API.

Inputs that cannot be right raise an error whose type is asserted and whose message names the
parameter, column, row or file; legitimate inputs (a shuffled pandas index, float64 tensors)
give the right result. The command line's side is in ``test_cli_errors.py``.
"""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load, save
from sklearn.linear_model import LogisticRegression

from ruleeraser import BlackBox, Eraser, persist
from ruleeraser.persist import EraserFileError

COLUMNS = ["signal", "noise1", "noise2", "b"]


@pytest.fixture(scope="module")
def fitted(setup):
    """An eraser fitted on a DataFrame (so it keeps its column names)."""
    model, (Xc, yc, bc), (Xt, _, _) = setup
    frame = pd.DataFrame(Xc, columns=COLUMNS)
    eraser = Eraser(model, max_epochs=3, random_state=0).fit(frame, yc, bias=bc)
    return eraser, pd.DataFrame(Xt, columns=COLUMNS)


# -- 1. DataFrame columns are checked by name ------------------------------------------------


def test_1_reordered_columns_are_refused_by_name(fitted):
    eraser, test = fitted
    swapped = test[["noise1", "signal", "noise2", "b"]]
    for method in (eraser.predict_proba, eraser.predict, eraser.patch_log_proba):
        with pytest.raises(ValueError, match=r"another order .*\['noise1', 'signal'"):
            method(swapped)
    np.testing.assert_allclose(  # selecting the fitted columns puts it right
        eraser.predict_proba(swapped[eraser.feature_names_in_]), eraser.predict_proba(test)
    )


def test_1_renamed_columns_are_refused_by_name(fitted, tmp_path):
    eraser, test = fitted
    renamed = test.rename(columns={"noise2": "age"})
    with pytest.raises(ValueError, match=r"missing \['noise2'\], not seen at fit \['age'\]"):
        eraser.predict_proba(renamed)
    eraser.save(tmp_path)  # the names survive a save
    loaded = Eraser.load(tmp_path, eraser.model)
    with pytest.raises(ValueError, match=r"missing \['noise2'\]"):
        loaded.predict_proba(renamed)


# -- 2. y and bias Series are aligned on X's index -------------------------------------------


def test_2_shuffled_series_are_aligned_on_the_index(setup):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    frame = pd.DataFrame(Xc, columns=COLUMNS, index=np.arange(len(Xc)) + 100)
    order = np.random.default_rng(1).permutation(len(Xc))
    y = pd.Series(yc, index=frame.index).iloc[order]  # same labels, another row order
    b = pd.Series(bc, index=frame.index, name="b").iloc[order]
    options = {"max_epochs": 3, "random_state": 0}
    shuffled = Eraser(model, **options).fit(frame, y, bias=b)
    plain = Eraser(model, **options).fit(Xc, yc, bias=bc)
    np.testing.assert_allclose(
        shuffled.distillations_[0].group_rules, plain.distillations_[0].group_rules, rtol=1e-6
    )
    np.testing.assert_allclose(shuffled.predict_proba(Xt), plain.predict_proba(Xt), rtol=1e-6)
    # Matched by position, the shuffled labels would have given near-uniform group rules:
    by_position = Eraser(model, **options).fit(Xc, y.to_numpy(), bias=b.to_numpy())
    strong = np.abs(plain.distillations_[0].group_rules - 0.5).max()
    assert np.abs(by_position.distillations_[0].group_rules - 0.5).max() < strong / 2


def test_2_a_bias_frame_with_a_shuffled_index_is_aligned(setup):
    model, (Xc, yc, bc), _ = setup
    frame = pd.DataFrame(Xc, columns=COLUMNS)
    order = np.random.default_rng(2).permutation(len(Xc))
    bias = pd.DataFrame({"b": bc, "half": np.arange(len(Xc)) % 2}).iloc[order]
    eraser = Eraser(model, max_epochs=2, random_state=0).fit(frame, yc, bias=bias)
    plain = Eraser(model, max_epochs=2, random_state=0).fit(
        Xc, yc, bias={"b": bc, "half": np.arange(len(Xc)) % 2}
    )
    for got, want in zip(eraser.distillations_, plain.distillations_, strict=True):
        np.testing.assert_allclose(got.group_rules, want.group_rules, rtol=1e-6)


@pytest.mark.parametrize("which", ["y", "bias"])
def test_2_a_different_index_is_refused_by_name(setup, which):
    model, (Xc, yc, bc), _ = setup
    frame = pd.DataFrame(Xc, columns=COLUMNS)
    moved = {"y": pd.Series(yc), "bias": pd.Series(bc)}
    moved[which].index = moved[which].index + 5  # rows 800-804 unknown to X
    with pytest.raises(ValueError, match=rf"^{which} has a different index from X's .*800"):
        Eraser(model, max_epochs=2).fit(frame, moved["y"], bias=moved["bias"])


# -- 3. parameters are checked at construction -----------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"strength": math.nan}, ValueError, "strength"),
        ({"strength": math.inf}, ValueError, "strength"),
        ({"strength": "0.5"}, TypeError, "strength"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
    ],
)
def test_3_bad_parameters_fail_at_construction(setup, options, error, name):
    model = setup[0]
    with pytest.raises(error, match=f"^{name} must be"):
        Eraser(model, **options)
    with pytest.raises(error, match=f"^{name} must be"):
        Eraser(model).set_params(**options)


# -- 4. the model must output the classes the eraser was fitted with -------------------------


def test_4_a_model_with_other_classes_is_refused_on_load(fitted, setup, tmp_path):
    eraser, test = fitted
    _, (Xc, yc, _), _ = setup
    eraser.save(tmp_path)
    named = LogisticRegression().fit(Xc, np.where(yc == 1, "yes", "no"))
    three = LogisticRegression().fit(Xc, yc + (Xc[:, 1] > 1))
    reversed_ = BlackBox(eraser.model.predict_proba, classes=[1, 0])  # columns swapped
    for model, shown in [(named, "'no', 'yes'"), (three, "0, 1, 2"), (reversed_, "1, 0")]:
        with pytest.raises(ValueError, match=rf"eraser.json: the model's classes \[{shown}\]"):
            Eraser.load(tmp_path, model)
    unnamed = Eraser.load(tmp_path, lambda x: eraser.model.predict_proba(np.asarray(x)))
    np.testing.assert_allclose(unnamed.predict_proba(test), eraser.predict_proba(test))


# -- 5. every field of eraser.json is checked, the weights against their hash ----------------


def _edit(path, change):
    config = json.loads((path / "eraser.json").read_text())
    wrapped = change(config)  # only a change that wraps the config returns it
    (path / "eraser.json").write_text(json.dumps(wrapped if wrapped == [config] else config))


def _set_param(name, value):
    return lambda c: c["params"].__setitem__(name, value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set_param("eps", 5), "eps"),
        (_set_param("strength", math.nan), "strength"),
        (_set_param("strength", "1"), "strength"),
        (_set_param("hidden_sizes", 64), "hidden_sizes"),
        (_set_param("max_epochs", 0), "max_epochs"),
        (_set_param("rule", "oracle"), "rule"),
        (_set_param("random_state", -1), "random_state"),
        (_set_param("colour", "red"), r"unknown parameters \['colour'\]"),
        (lambda c: c.__setitem__("biases", []), "biases"),
        (lambda c: c.__setitem__("classes", "01"), "classes"),
        (lambda c: c.__setitem__("classes", [0, 0]), "classes"),
        (lambda c: c.__setitem__("input_shape", [4.0]), "input_shape"),
        (lambda c: c.__setitem__("features", ["a"]), "features"),
        (lambda c: c.__setitem__("n_queries", -1), "n_queries"),
        (lambda c: c.__setitem__("patch", "transformer"), "patch"),
        (lambda c: c.__setitem__("patch", 3), "patch"),
        (lambda c: c.__setitem__("weights_sha256", 5), "weights_sha256"),
        (lambda c: c.pop("weights_sha256"), "weights_sha256"),
        (lambda c: c.pop("classes"), "'classes' is missing"),
        (lambda c: c["biases"][0].pop("values"), r"biases\[0\] has no 'values'"),
        (lambda c: c["biases"][0].__setitem__("values", [1]), r"biases\[0\].values"),
        (lambda c: c["biases"][0]["fit"].__setitem__("epochs", "3"), r"biases\[0\].fit.epochs"),
        (lambda c: c["biases"][0].__setitem__("empty_cells", [1]), r"biases\[0\].empty_cells"),
        (lambda c: [c], "expected a JSON object, got a list"),
        (lambda c: c.__setitem__("format", "other/9"), "not a rule-eraser/2 file"),
    ],
)
def test_5_every_field_of_the_config_is_checked(fitted, tmp_path, change, field):
    eraser, _ = fitted
    eraser.save(tmp_path)
    _edit(tmp_path, change)
    with pytest.raises(
        EraserFileError, match=rf"^{re.escape(str(tmp_path))}/eraser.json: .*{field}"
    ):
        Eraser.load(tmp_path, eraser.model)


def test_5_a_flipped_byte_anywhere_in_the_weights_is_refused(fitted, tmp_path):
    eraser, _ = fitted
    eraser.save(tmp_path / "good")
    data = (tmp_path / "good" / "patches.safetensors").read_bytes()
    for position in np.linspace(0, len(data) - 1, 25).astype(int):
        shutil.copytree(tmp_path / "good", tmp_path / "bad", dirs_exist_ok=True)
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        (tmp_path / "bad" / "patches.safetensors").write_bytes(bytes(flipped))
        with pytest.raises(EraserFileError, match="patches.safetensors: the weights do not match"):
            Eraser.load(tmp_path / "bad", eraser.model)


def _rewrite_weights(path, change):
    """Change the weights and write the matching hash: damage the hash cannot see."""
    tensors = load((path / "patches.safetensors").read_bytes())
    data = change(tensors)
    data = data if isinstance(data, bytes) else save(tensors, metadata={"format": "rule-eraser/2"})
    (path / "patches.safetensors").write_bytes(data)
    _edit(path, lambda c: c.__setitem__("weights_sha256", hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop(sorted(t)[0]), r"patches.safetensors|Missing key"),
        (lambda t: t.__setitem__("patch0.extra", torch.zeros(1)), "Unexpected key"),
        (lambda t: t.__setitem__(sorted(t)[0], torch.zeros(7, 7)), "size mismatch"),
        (lambda t: save(t)[:-100], "not a readable safetensors file"),
        (lambda t: b"", "not a readable safetensors file"),
    ],
    ids=["missing-tensor", "extra-tensor", "wrong-shape", "truncated", "empty"],
)
def test_5_weights_that_do_not_fit_are_refused_by_file(fitted, tmp_path, change, message):
    eraser, _ = fitted
    eraser.save(tmp_path)
    _rewrite_weights(tmp_path, change)
    with pytest.raises(EraserFileError, match=rf"^{re.escape(str(tmp_path))}/.*({message})"):
        Eraser.load(tmp_path, eraser.model)


def test_5_missing_files_are_named(fitted, tmp_path):
    eraser, _ = fitted
    with pytest.raises(FileNotFoundError, match=r"nowhere does not hold an eraser"):
        Eraser.load(tmp_path / "nowhere", eraser.model)
    eraser.save(tmp_path / "e")
    (tmp_path / "e" / "patches.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"e does not hold the eraser's weights"):
        Eraser.load(tmp_path / "e", eraser.model)


# -- 6. saving is atomic ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_erasers(setup):
    """An old eraser (one bias) and the new one that replaces it (two biases, other rule)."""
    model, (Xc, yc, bc), (Xt, _, _) = setup
    old = Eraser(model, max_epochs=2, random_state=0).fit(Xc, yc, bias=bc)
    bias = {"b": bc, "half": np.arange(len(Xc)) % 2}
    new = Eraser(model, rule="sample", max_epochs=2, random_state=1).fit(Xc, yc, bias=bias)
    X = Xt[:200]
    return model, old, new, X, old.predict_proba(X), new.predict_proba(X)


def _which(path, two_erasers):
    """'old', 'new' or 'none' for the eraser in ``path``; anything else fails the test."""
    model, _, _, X, old_p, new_p = two_erasers
    try:
        loaded = Eraser.load(path, model)
    except FileNotFoundError:
        return "none"
    got = loaded.predict_proba(X)
    if np.array_equal(got, old_p) and loaded.bias_names_ == ["bias"]:
        return "old"
    assert np.array_equal(got, new_p) and loaded.bias_names_ == ["b", "half"], "a mix"
    return "new"


class _Stop(OSError):
    pass


def _failing_at(step, monkeypatch):
    """Make the ``step``-th file operation of a save (writes and renames, counted from 1)
    raise; returns the list of operations seen."""
    seen = []
    write, replace = persist._write_synced, os.replace

    def counted(name, real):
        def op(*args):
            seen.append(name)
            if len(seen) == step:
                raise _Stop(f"stopped at {name}")
            return real(*args)

        return op

    monkeypatch.setattr(persist, "_write_synced", counted("write", write))
    monkeypatch.setattr(persist.os, "replace", counted("replace", replace))
    return seen


@pytest.mark.parametrize("first", [True, False], ids=["new-directory", "over-an-eraser"])
def test_6_a_save_failing_at_any_step_leaves_the_old_or_the_new_eraser(
    two_erasers, tmp_path, monkeypatch, first
):
    _, old, new, *_ = two_erasers
    outcomes = []
    for step in range(1, 20):
        path = tmp_path / f"step{step}"
        if not first:
            old.save(path)
        with monkeypatch.context() as patched:
            seen = _failing_at(step, patched)
            try:
                new.save(path)
            except _Stop:
                pass
            else:
                outcomes.append(_which(path, two_erasers))
                break
        outcomes.append(_which(path, two_erasers))
    before = "none" if first else "old"
    # Until the JSON's rename the previous state stands, from then on the new eraser.
    assert outcomes == [before, before, before, "new", "new"]
    assert seen == ["write", "write", "replace", "replace"]  # weights, JSON, JSON, weights
    new.save(path)  # a later save tidies up what the stopped ones left
    assert sorted(p.name for p in path.iterdir()) == ["eraser.json", "patches.safetensors"]


def _kill_at(event, path, eraser):
    """Fork a child that saves ``eraser`` to ``path`` and SIGKILLs itself at the ``event``-th
    point of the save (before each write and rename, and halfway through each write).
    Returns True when the child was killed, False when the save finished first."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = [0]

            def point():
                count[0] += 1
                if count[0] == event:
                    os.kill(os.getpid(), signal.SIGKILL)

            write, replace = persist._write_synced, os.replace

            def killing_write(target, data):
                point()
                with open(target, "wb") as file:
                    file.write(data[: len(data) // 2])
                    file.flush()
                    os.fsync(file.fileno())
                    point()  # killed halfway through the write
                    file.write(data[len(data) // 2 :])
                write(target, data)

            def killing_replace(src, dst):
                point()
                replace(src, dst)

            persist._write_synced = killing_write
            persist.os.replace = killing_replace
            eraser.save(path)
            point()
            os._exit(0)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the saving child hung at event {event}")
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the child's save failed"
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_6_a_save_killed_at_any_point_leaves_the_old_or_the_new_eraser(two_erasers, tmp_path):
    _, old, new, *_ = two_erasers
    outcomes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        for event in range(1, 30):
            path = tmp_path / f"event{event}"
            old.save(path)
            killed = _kill_at(event, path, new)
            outcomes.append(_which(path, two_erasers))
            if not killed:
                break
    # 2 points per write (pending weights, JSON), 1 per rename, the end: 7 points, then done.
    assert len(outcomes) == 8
    assert outcomes == ["old"] * 5 + ["new"] * 3


def test_6_a_load_racing_the_last_rename_reads_the_new_eraser(two_erasers, tmp_path, monkeypatch):
    """A load that finds the pending weights but sees them renamed before it reads them."""
    _, old, new, *_ = two_erasers
    old.save(tmp_path)
    with monkeypatch.context() as patched:
        _failing_at(4, patched)  # stop before the weights' rename: the JSON is committed
        with pytest.raises(_Stop):
            new.save(tmp_path)
    (pending,) = tmp_path.glob("patches.*.safetensors")
    read_bytes = Path.read_bytes

    def renamed_first(self):
        if self == pending and self.exists():
            os.replace(pending, tmp_path / "patches.safetensors")  # the save finishes now
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", renamed_first)
    assert _which(tmp_path, two_erasers) == "new"


# -- 9. missing and mixed labels are refused by name and row ---------------------------------


MISSING = r"contains NaN or missing values at 1 row\(s\): "


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda b: np.where(np.arange(len(b)) == 5, None, b).astype(object), ValueError, "5"),
        (lambda b: pd.Series(b, dtype="Int64").mask(np.arange(len(b)) == 6), ValueError, "6"),
        (
            lambda b: pd.Series(pd.Categorical(np.where(np.arange(len(b)) == 7, None, b))),
            ValueError,
            "7",
        ),
        (lambda b: np.where(np.arange(len(b)) == 8, np.nan, b), ValueError, "8"),
        (
            lambda b: np.array([str(v) if i == 9 else int(v) for i, v in enumerate(b)], object),
            TypeError,
            r"mixes numbers and strings \(strings at 1 row\(s\): 9\)",
        ),
    ],
    ids=["None", "pd.NA", "categorical-NaN", "NaN", "mixed-int-str"],
)
@pytest.mark.parametrize("where", ["bias", "y"])
def test_9_missing_or_mixed_labels_are_refused_by_name_and_row(setup, make, error, message, where):
    model, (Xc, yc, bc), _ = setup
    args = {"y": yc, "bias": bc}
    args[where] = make(args[where])
    if error is ValueError:
        message = MISSING + message + "$"
    with pytest.raises(error, match=rf"^{where} {message}"):
        Eraser(model, max_epochs=2).fit(Xc, args["y"], bias=args["bias"])


def test_9_a_named_bias_column_is_named(setup):
    model, (Xc, yc, bc), _ = setup
    bias = pd.DataFrame({"sex": pd.Series(bc, dtype="Int64").mask(np.arange(len(bc)) == 3)})
    with pytest.raises(
        ValueError, match=r"^bias sex contains NaN or missing values at 1 row\(s\): 3"
    ):
        Eraser(model, max_epochs=2).fit(Xc, yc, bias=bias)


# -- 10. float64 and integer tensors are converted -------------------------------------------


def test_10_float64_tensors_give_the_float32_result(setup):
    model, (Xc, yc, bc), (Xt, _, _) = setup
    module = torch.nn.Linear(4, 2).double()  # a float64 model, too
    torch.nn.init.constant_(module.weight, 0.0)
    with torch.no_grad():
        module.weight[:, 3] = torch.tensor([-2.0, 2.0], dtype=torch.float64)  # follows b
    options = {"max_epochs": 3, "random_state": 0}
    as64 = Eraser(module, **options).fit(
        torch.from_numpy(Xc.astype(np.float64)), torch.from_numpy(yc), bias=torch.from_numpy(bc)
    )
    as32 = Eraser(module, **options).fit(Xc, yc, bias=bc)
    got = as64.predict_proba(torch.from_numpy(Xt.astype(np.float64)))
    np.testing.assert_allclose(got, as32.predict_proba(Xt), rtol=1e-6)
    ints = torch.from_numpy(Xt.round().astype(np.int64))  # integer inputs too
    assert as64.predict_proba(ints).shape == (len(Xt), 2)


# -- 12. the messages say what is wrong ------------------------------------------------------


def test_12_string_labels_against_integer_classes(setup):
    model, (Xc, yc, bc), _ = setup
    with pytest.raises(ValueError, match=r"^y has labels the model does not output: \['0', '1'\]"):
        Eraser(model, max_epochs=2).fit(Xc, yc.astype(str), bias=bc)
    with pytest.raises(ValueError, match="labels must match in type too"):
        Eraser(model, max_epochs=2).fit(Xc, yc.astype(str), bias=bc)


def test_12_a_continuous_bias_is_called_continuous(setup):
    model, (Xc, yc, _), _ = setup
    age = np.random.default_rng(0).uniform(18, 90, len(Xc)).round(1)
    with pytest.raises(
        ValueError, match=r"bias column 'age' has \d+ distinct values: .*continuous"
    ):
        Eraser(model, max_epochs=2).fit(Xc, yc, bias=pd.Series(age, name="age"))
    binned = pd.cut(age, [0, 30, 50, 120], labels=False)
    Eraser(model, max_epochs=2).fit(Xc, yc, bias=pd.Series(binned, name="age"))  # binned: fine


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("rows.csv", lambda p: pd.DataFrame({"x": [1]}).to_parquet(p), "is a Parquet file"),
        ("rows.csv", lambda p: p.write_text("x,y\n"), "has no rows, only its header"),
        ("rows.parquet", lambda p: p.write_text("x,y\n1,2\n"), "is not a Parquet file"),
        ("rows.parquet", lambda p: pd.DataFrame({"x": []}).to_parquet(p), "has no rows"),
    ],
)
def test_12_table_files_that_are_not_what_they_say_are_named(tmp_path, name, make, says):
    from ruleeraser.tables import TableFileError, iter_table, read_table

    path = tmp_path / name
    make(path)
    for read in (lambda: read_table(path, ["x"]), lambda: list(iter_table(path, ["x"], 10))):
        with pytest.raises(TableFileError, match=rf"^{path} {says}"):
            read()
