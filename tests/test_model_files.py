import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ruleeraser import BlackBox, Eraser
from ruleeraser.model_files import load_model


class Shifted(LogisticRegression):
    """A class from outside scikit-learn: a skops file holding it must be refused."""


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def model(data):
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(*data)


def test_skops_round_trip(model, data, tmp_path):
    X, y = data
    sio.dump(model, tmp_path / "m.skops")
    box = load_model(tmp_path / "m.skops")
    assert isinstance(box, BlackBox) and box.classes.tolist() == [0, 1]
    np.testing.assert_allclose(box(X), model.predict_proba(X))
    box(pd.DataFrame(X, columns=list("abcd")))  # names dropped: fitted without them
    eraser = Eraser(box, random_state=0, max_epochs=2).fit(X, y, bias=X[:, 3] > 0)
    assert eraser.predict_proba(X).shape == (300, 2)


def test_skops_accepts_scikit_learn_classes_skops_does_not_know(data, tmp_path):
    X, y = data
    hgb = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    sio.dump(hgb, tmp_path / "hgb.skops")
    assert sio.get_untrusted_types(file=tmp_path / "hgb.skops")  # TreePredictor
    np.testing.assert_allclose(load_model(tmp_path / "hgb.skops")(X), hgb.predict_proba(X))


@pytest.mark.parametrize(
    ("make", "refused"),
    [
        (lambda X, y: Shifted().fit(X, y), "test_model_files.Shifted"),
        (
            lambda X, y: make_pipeline(FunctionTransformer(np.testing.assert_equal)),
            "numpy.testing._private.utils.assert_equal",  # a function, not a class
        ),
    ],
    ids=["foreign-class", "function"],
)
def test_skops_refuses_other_types(data, tmp_path, make, refused):
    sio.dump(make(*data), tmp_path / "bad.skops")
    with pytest.raises(ValueError, match=f"refused: .*{refused}"):
        load_model(tmp_path / "bad.skops")


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_pickle_needs_the_opt_in(model, data, tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(model))
    else:
        joblib.dump(model, path)
    with pytest.raises(PermissionError, match="runs arbitrary code"):
        load_model(path)
    np.testing.assert_allclose(
        load_model(path, allow_pickle=True)(data[0]), model.predict_proba(data[0])
    )


def test_onnx_matches_scikit_learn(model, data, tmp_path):
    from skl2onnx import to_onnx

    X, _ = data
    for zipmap in (False, True):
        onx = to_onnx(model, X[:1], options={"zipmap": zipmap})
        (tmp_path / f"m{zipmap}.onnx").write_bytes(onx.SerializeToString())
    box = load_model(tmp_path / "mFalse.onnx")
    np.testing.assert_allclose(box(X), model.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(box(pd.DataFrame(X)), model.predict_proba(X), atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        box(X[:, :3])
    with pytest.raises(ValueError, match="zipmap"):
        load_model(tmp_path / "mTrue.onnx")
    with pytest.raises(ValueError, match="no float tensor output 'label'"):
        load_model(tmp_path / "mFalse.onnx", output_name="label")


def test_onnx_threads_set_the_session_and_apply_to_onnx_only(model, data, tmp_path):
    from skl2onnx import to_onnx

    X, _ = data
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(model, X[:1], options={"zipmap": False}).SerializeToString())
    box = load_model(path, threads=1)
    options = box.fn.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    np.testing.assert_allclose(box(X), model.predict_proba(X), atol=1e-5)
    for other in ("http://127.0.0.1:9/predict", tmp_path / "m.skops"):
        with pytest.raises(ValueError, match="threads applies to ONNX files"):
            load_model(other, threads=1)


def test_bad_specs(tmp_path, model):
    sio.dump(model, tmp_path / "m.skops")
    with pytest.raises(ValueError, match="cannot tell what model"):
        load_model(tmp_path / "m.h5")
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match=r"\['budget'\] apply only to an http"):
        load_model(tmp_path / "m.skops", budget=10)
    with pytest.raises(ValueError, match="probabilities"):
        load_model(tmp_path / "m.skops", output="logits")


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("m.skops", lambda p: p.write_bytes(pickle.dumps([1])), "holds a pickle, not a skops"),
        ("m.onnx", lambda p: p.write_bytes(pickle.dumps([1])), "holds a pickle, not an ONNX"),
        ("m.pkl", lambda p: p.write_bytes(b"PK\x03\x04zip"), "holds a zip archive, not a pickle"),
        ("m.skops", lambda p: p.write_bytes(b""), "is empty, not a skops file"),
        ("m.onnx", lambda p: p.mkdir(), "is a directory, not an ONNX model"),
        ("m.skops", lambda p: p.write_text("plain text"), "is not a skops file"),
        ("m.skops", lambda p: p.write_bytes(b"PK\x03\x04broken"), "not a readable skops file"),
        ("m.onnx", lambda p: p.write_bytes(b"\x08\x07broken"), "not a readable ONNX model"),
        ("m.pkl", lambda p: p.write_bytes(b"\x80\x04broken"), "not a readable pickle file"),
        ("m.joblib", lambda p: p.write_bytes(b"x"), "not a readable joblib file"),
        ("m.skops", lambda p: sio.dump({"a": 1}, p), "holds a dict, not a classifier"),
        ("m.skops", lambda p: sio.dump(LogisticRegression(), p), "an unfitted LogisticRegression"),
    ],
)
def test_files_of_the_wrong_kind_are_named(tmp_path, name, make, says):
    from ruleeraser.model_files import ModelFileError

    path = tmp_path / name
    make(path)
    with pytest.raises(ModelFileError, match=rf"^{path}.*{says}"):
        load_model(path, allow_pickle=True)
