"""Open a deployed model from where a user has it: a URL, an ONNX file, a skops file, a
LightGBM, XGBoost or CatBoost file (:mod:`ruleeraser.gbm_files`).

:func:`load_model` returns a :class:`ruleeraser.BlackBox`, ready for ``Eraser(model)``.
Nothing runs code from a file unless asked: skops files may hold only scikit-learn and
numpy classes and the types the caller names as ``trusted``; pickle and joblib files are
refused unless ``allow_pickle=True``. A file that cannot be what its name says (a
directory, an empty file, pickle bytes named ``.skops``, an ONNX file that does not parse)
raises :class:`ModelFileError` naming the file and the fault.

Example
-------
>>> import tempfile, skops.io
>>> from sklearn.linear_model import LogisticRegression
>>> folder = Path(tempfile.mkdtemp())
>>> skops.io.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), folder / "model.skops")
>>> box = load_model(folder / "model.skops")
>>> box.classes.tolist(), box([[0.0], [1.0]]).shape
([0, 1], (2, 2))
>>> (folder / "empty.onnx").write_bytes(b"")
0
>>> load_model(folder / "empty.onnx")
Traceback (most recent call last):
...
ruleeraser.model_files.ModelFileError: .../empty.onnx is empty, not an ONNX model
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ruleeraser.blackbox import BlackBox, Output
from ruleeraser.gbm_files import GBM_KINDS, GBM_SUFFIXES, library_name, open_gbm

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SUFFIXES = (".onnx", ".skops", ".pt2", *GBM_SUFFIXES, *PICKLE_SUFFIXES)
#: Packages whose classes a skops file may instantiate.
TRUSTED_PACKAGES = ("sklearn", "numpy")

#: What each suffix is, for messages.
KINDS = {
    ".onnx": "an ONNX model",
    ".skops": "a skops file",
    ".pt2": "a torch.export program",
    **dict.fromkeys(PICKLE_SUFFIXES, "a pickle"),
    **GBM_KINDS,
}

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def takes_threads(spec: str | Path) -> bool:
    """Whether :func:`load_model`'s ``threads`` applies to the model at ``spec`` (an ONNX
    file: onnxruntime keeps a thread pool of its own).

    >>> takes_threads("model.ONNX"), takes_threads("model.skops")
    (True, False)
    """
    return str(spec).lower().endswith(".onnx")


def load_model(
    spec: str | Path,
    *,
    allow_pickle: bool = False,
    output: Output = "proba",
    output_name: str | None = None,
    classes: Sequence[Any] | None = None,
    threads: int | None = None,
    trusted: Sequence[str] = (),
    **http_options: Any,
) -> BlackBox:
    """The model at ``spec`` as a :class:`~ruleeraser.BlackBox`.

    Parameters
    ----------
    spec: an ``http://``/``https://`` URL (:class:`~ruleeraser.http_model.HTTPModel`,
        configured by ``http_options``), an ``.onnx`` file (onnxruntime), a ``.skops`` file,
        a LightGBM ``.txt``, XGBoost ``.json``/``.ubj`` or CatBoost ``.cbm`` model file, or,
        with ``allow_pickle=True`` only, a ``.pkl``/``.pickle``/``.joblib`` file.
    allow_pickle: allow a pickle or joblib file (loading one runs code from the file).
    output: whether the model returns probabilities or logits (URL and ONNX; a scikit-learn
        model gives probabilities).
    output_name: the output tensor to read (ONNX and the kserve-v2 protocol), needed when
        there are several.
    classes: the labels of the output columns (URL, ONNX, LightGBM, XGBoost: else 0 .. k-1;
        a scikit-learn or CatBoost model knows its labels, which ``classes`` must equal).
    threads: an ONNX session's compute threads (None: onnxruntime's default, one per core;
        a scale-out worker, which is one core, takes 1).
    trusted: types a skops file may hold besides scikit-learn and numpy classes, named as
        ``skops.io.get_untrusted_types`` names them (e.g. ``lightgbm.basic.Booster``).
    http_options: options of :class:`~ruleeraser.http_model.HTTPModel` (URL only).

    Returns
    -------
    A :class:`~ruleeraser.BlackBox` counting the rows it sends to the model.

    Raises
    ------
    FileNotFoundError: no such file. PermissionError: a pickle without ``allow_pickle``.
    ModelFileError: a file that cannot be read as what its suffix says, or that holds no
    classifier. ValueError: options that do not apply to this kind of model.
    """
    spec = str(spec)
    if threads is not None and not takes_threads(spec):
        raise ValueError(f"threads applies to ONNX files, not to {spec}")
    if trusted and not spec.lower().endswith(".skops"):
        raise ValueError(f"trusted types apply to skops files, not to {spec}")
    if spec.startswith(("http://", "https://")):
        from ruleeraser.http_model import HTTPModel

        fn = HTTPModel(spec, output_name=output_name, **http_options)
        # The HTTPModel batches itself: it sees whole calls and names their row ranges.
        return BlackBox(fn, output=output, query_batch_size=sys.maxsize, classes=classes)
    if http_options:
        raise ValueError(f"options {sorted(http_options)} apply only to an http(s) URL")
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot tell what model {spec!r} is: give an http(s) URL or a file ending in "
            f"{', '.join(SUFFIXES)}"
        )
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise PermissionError(
            f"refusing to load {spec}: loading a pickle/joblib file runs arbitrary code from "
            "the file. Pass allow_pickle=True (command line: --allow-pickle) only for a file "
            "you trust, or save the model with skops (skops.io.dump) or in its library's own "
            "format (LightGBM .txt, XGBoost .json, CatBoost .cbm) instead"
        )
    check_model_file(path)
    if suffix == ".onnx":
        fn = ONNXModel(path, output_name=output_name, threads=threads)
        return BlackBox(fn, output=output, classes=classes)
    if output_name is not None:
        raise ValueError("output_name applies to ONNX files and kserve-v2 URLs")
    if suffix == ".pt2":
        return BlackBox(TorchExportModel(path), output=output, classes=classes)
    if suffix in GBM_SUFFIXES:
        return _gbm_blackbox(path, output=output, classes=classes)
    return _estimator_blackbox(path, trusted, output=output, classes=classes)


def _estimator_blackbox(path: Path, trusted: Sequence[str], **options: Any) -> BlackBox:
    """A scikit-learn style classifier in a skops or (allowed) pickle file, as a black box."""
    suffix = path.suffix.lower()
    model = load_skops(path, trusted=trusted) if suffix == ".skops" else _load_pickle(path)
    if not hasattr(model, "predict_proba"):
        raise ModelFileError(
            f"{path} holds a {type(model).__name__}, not a classifier with predict_proba"
        )
    _check_fitted(model, path)
    return sklearn_blackbox(model, **options)


def _gbm_blackbox(path: Path, *, output: Output, classes: Sequence[Any] | None) -> BlackBox:
    """A LightGBM, XGBoost or CatBoost model file as a black box of its probabilities."""
    if output != "proba":
        raise ValueError(f"{path} gives probabilities: output='proba' (--model-output proba)")
    with _reading(path, f"{library_name(path)} model"):
        fn = open_gbm(path)
    if fn.not_a_classifier is not None:
        raise ModelFileError(f"{path} holds {fn.not_a_classifier}")
    if classes is not None and fn.classes is not None and list(classes) != fn.classes:
        raise ValueError(f"classes {list(classes)} differ from {path}'s classes {fn.classes}")
    return BlackBox(fn, classes=fn.classes if classes is None else classes)


def _check_fitted(model: Any, path: Path) -> None:
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # pragma: no cover - a pickled model without scikit-learn
        return
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise ModelFileError(f"{path} holds an unfitted {type(model).__name__}") from None
    except TypeError:  # not a scikit-learn estimator: nothing to check
        pass


class ModelFileError(ValueError):
    """A model file that cannot be what its name says: the message names the file and why."""


def check_model_file(path: str | Path) -> None:
    """Refuse, before any reader sees it, a model path that is missing, a directory, empty,
    or (by its first bytes) another kind of file than its suffix says.

    Raises ``FileNotFoundError`` or :class:`ModelFileError` naming ``path``.

    >>> check_model_file("nowhere.skops")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no model file nowhere.skops
    """
    path = Path(path)
    kind = KINDS.get(path.suffix.lower(), "a model")
    if not path.exists():
        raise FileNotFoundError(f"no model file {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not {kind}")
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise ModelFileError(f"{path} is empty, not {kind}")
    found, suffix = _sniff(head), path.suffix.lower()
    # What the first bytes of a good file show: skops files are zip archives.
    expected = {
        ".skops": "a zip archive",
        ".pt2": "a zip archive",
        **dict.fromkeys(PICKLE_SUFFIXES, "a pickle"),
    }
    if found is not None and found != expected.get(suffix):
        raise ModelFileError(f"{path} holds {found}, not {kind}{_advice(found)}")
    if suffix == ".skops" and found is None:
        raise ModelFileError(f"{path} is not a skops file (a skops file is a zip archive)")


def _sniff(head: bytes) -> str | None:
    """What a file's first bytes say it is, when they say it clearly."""
    if head[:1] == b"\x80":  # a pickle's PROTO opcode (protocol 2 and later)
        return "a pickle"
    if head.startswith(b"PK"):
        return "a zip archive"
    if head.startswith(b"PAR1"):
        return "a Parquet table"
    return None


def _advice(found: str) -> str:
    if found == "a pickle":
        return (
            " (a pickle runs code when loaded: save the model with skops.io.dump, or, for a "
            "file you trust, name it .pkl and allow pickle files)"
        )
    return ""


class TorchExportModel:
    """A torch model saved with ``torch.export.save`` (a ``.pt2`` file: the exported graph
    and its weights), run without gradients on float32 inputs. Export it with a dynamic
    batch dimension so that it takes batches of any size.
    """

    def __init__(self, path: str | Path) -> None:
        import torch

        self.path = Path(path)
        try:
            self.module = torch.export.load(str(self.path)).module()
        except Exception as exc:  # torch raises many kinds for a file it cannot read
            message = f"{self.path} is not a readable torch.export program: {exc}"
            raise ModelFileError(message) from None

    def __call__(self, X: Any) -> Any:
        import torch

        arr = X.to_numpy() if hasattr(X, "to_numpy") else X
        with torch.no_grad():
            return self.module(torch.as_tensor(np.asarray(arr, dtype=np.float32)))

    def __repr__(self) -> str:
        return f"TorchExportModel({str(self.path)!r})"


class ONNXModel:
    """An ONNX model file run by onnxruntime: one input tensor, one float output tensor.

    The output is ``output_name``, or else the only float tensor output (a scikit-learn
    classifier converted by skl2onnx needs ``options={"zipmap": False}`` so that its
    probabilities are a tensor rather than a list of dicts).

    Parameters
    ----------
    path: the ``.onnx`` file; :class:`ModelFileError` when onnxruntime cannot read it.
    output_name: the output tensor to return, needed when there are several.
    threads: the session's compute threads; None: onnxruntime's default (one per core).

    Attributes
    ----------
    session: the ``onnxruntime.InferenceSession`` (CPU).
    dtype: the input tensor's numpy dtype; rows are converted to it.
    output_name: the output returned.
    """

    def __init__(
        self, path: str | Path, *, output_name: str | None = None, threads: int | None = None
    ) -> None:
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "ONNX models need onnxruntime: pip install 'rule-eraser[onnx]'"
            ) from exc
        self.path = Path(path)
        with _reading(self.path, "ONNX model"):
            options = onnxruntime.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = options.inter_op_num_threads = threads
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(
                f"{self.path} has {len(inputs)} inputs {[i.name for i in inputs]}; "
                "only models with a single input tensor are supported"
            )
        self.input = inputs[0]
        if self.input.type not in _ONNX_DTYPES:
            raise ValueError(f"{self.path}: unsupported input type {self.input.type}")
        self.dtype = _ONNX_DTYPES[self.input.type]
        outputs = {o.name: o.type for o in self.session.get_outputs()}
        floats = [n for n, t in outputs.items() if t in ("tensor(float)", "tensor(double)")]
        if output_name is not None:
            if output_name not in floats:
                raise ValueError(
                    f"{self.path} has no float tensor output {output_name!r}; outputs: {outputs}"
                )
            self.output_name = output_name
        elif len(floats) == 1:
            self.output_name = floats[0]
        elif not floats:
            hint = (
                " (a skl2onnx ZipMap output: convert with options={'zipmap': False})"
                if any(t.startswith("seq(map") for t in outputs.values())
                else ""
            )
            raise ValueError(f"{self.path} has no float tensor output: {outputs}{hint}")
        else:
            raise ValueError(
                f"{self.path} has several float outputs {floats}; choose one with output_name"
            )

    def __call__(self, X: Any) -> np.ndarray:
        """The output tensor for rows ``X`` (numpy, pandas or torch); ``ValueError`` when the
        rows do not have the model's input shape."""
        if hasattr(X, "detach"):  # a torch tensor
            X = X.detach().cpu().numpy()
        arr = np.ascontiguousarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=self.dtype)
        expected = self.input.shape
        if len(expected) != arr.ndim or any(
            isinstance(e, int) and e != a for e, a in zip(expected[1:], arr.shape[1:], strict=True)
        ):
            raise ValueError(
                f"{self.path} takes inputs of shape {expected}, got rows of shape {arr.shape}"
            )
        return self.session.run([self.output_name], {self.input.name: arr})[0]

    @property
    def n_features(self) -> int | None:
        """The width of the input tensor's rows, where the model fixes it."""
        shape = self.input.shape
        return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def __repr__(self) -> str:
        return f"ONNXModel({str(self.path)!r}, output_name={self.output_name!r})"


def load_skops(path: str | Path, *, trusted: Sequence[str] = ()) -> Any:
    """Load a skops file that holds only scikit-learn and numpy classes and ``trusted`` types.

    skops refuses types it does not trust by default; here the file's other types are
    accepted only when they are classes of :data:`TRUSTED_PACKAGES` (never functions, which
    a model could call) or named in ``trusted`` (e.g. ``lightgbm.sklearn.LGBMClassifier``).
    Anything else raises ``ValueError`` listing the refused types and how to trust them; a
    file skops cannot read, :class:`ModelFileError`. Returns the object (module's example).
    """
    try:
        import skops.io as sio
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("skops files need skops: pip install 'rule-eraser[skops]'") from exc
    with _reading(path, "skops file"):
        untrusted = sio.get_untrusted_types(file=path)
    refused = [name for name in untrusted if name not in trusted and not _is_trusted_class(name)]
    if refused:
        flags = " ".join(f"--trust {name}" for name in refused)
        raise ValueError(
            f"{path} holds types other than scikit-learn and numpy classes, refused: {refused}. "
            f"If you trust them, pass {flags} (library: load_model(..., trusted=[...]))"
        )
    with _reading(path, "skops file"):
        return sio.load(path, trusted=untrusted)


@contextmanager
def _reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn whatever a file format's reader raises on a damaged file into a
    :class:`ModelFileError` naming the file (readers raise their own exception types)."""
    try:
        yield
    except (ImportError, MemoryError):
        raise
    except Exception as exc:
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ModelFileError(f"{path} is not a readable {what} ({problem})") from None


def _is_trusted_class(name: str) -> bool:
    """Whether dotted ``name`` is a class defined in one of :data:`TRUSTED_PACKAGES`."""
    parts = name.split(".")
    if parts[0] not in TRUSTED_PACKAGES:
        return False
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        module = getattr(obj, "__module__", "") or ""
        return isinstance(obj, type) and module.split(".")[0] in TRUSTED_PACKAGES
    return False


def _load_pickle(path: Path) -> Any:
    if path.suffix.lower() == ".joblib":
        import joblib

        with _reading(path, "joblib file"):
            return joblib.load(path)
    import pickle

    with path.open("rb") as f, _reading(path, "pickle file"):
        return pickle.load(f)


class _SklearnCall:
    """``predict_proba`` of a scikit-learn model; DataFrames lose their column names when the
    model was fitted without (so that scikit-learn does not warn on every batch)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, X: Any) -> Any:
        if hasattr(X, "columns") and not hasattr(self.model, "feature_names_in_"):
            X = X.to_numpy()
        return self.model.predict_proba(X)

    @property
    def feature_names(self) -> list[str] | None:
        """The model's ``feature_names_in_`` (None when fitted on unnamed columns)."""
        names = getattr(self.model, "feature_names_in_", None)
        return None if names is None else [str(n) for n in names]

    @property
    def n_features(self) -> int | None:
        """The model's ``n_features_in_``, where it has one."""
        return getattr(self.model, "n_features_in_", None)


def sklearn_blackbox(
    model: Any, *, output: Output = "proba", classes: Sequence[Any] | None = None
) -> BlackBox:
    """A scikit-learn classifier, as a black box of its ``predict_proba``.

    Parameters
    ----------
    model: a fitted classifier (``TypeError`` without ``predict_proba``).
    output: must be ``"proba"``: ``predict_proba`` gives probabilities.
    classes: the labels of the output columns; they must equal the model's ``classes_``.

    Returns
    -------
    A :class:`~ruleeraser.BlackBox` with the model's ``classes_``.

    Example
    -------
    >>> from sklearn.linear_model import LogisticRegression
    >>> box = sklearn_blackbox(LogisticRegression().fit([[0.0], [1.0]], ["no", "yes"]))
    >>> box.classes.tolist()
    ['no', 'yes']
    """
    if not hasattr(model, "predict_proba"):
        raise TypeError(f"the loaded {type(model).__name__} has no predict_proba")
    if output != "proba":
        raise ValueError("a scikit-learn model's predict_proba gives probabilities: output='proba'")
    known = getattr(model, "classes_", None)
    if classes is not None and known is not None and list(classes) != list(known):
        raise ValueError(f"classes {list(classes)} differ from the model's classes_ {list(known)}")
    return BlackBox(_SklearnCall(model), classes=known if classes is None else classes)
