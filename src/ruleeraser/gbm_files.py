"""Gradient-boosting models in their libraries' own files: a LightGBM booster (``.txt``,
``Booster.save_model``), an XGBoost model (``.json`` or ``.ubj``, saved by a ``Booster`` or an
``XGBClassifier``) and a CatBoost model (``.cbm``).

:func:`open_gbm` reads one into a callable that gives the model's probabilities, as
:func:`ruleeraser.model_files.load_model` wraps it. A LightGBM or XGBoost file does not know
the class labels it was trained on: its output columns are the class indices ``0 .. k-1``
unless the caller names them (``classes``, ``--classes``); a CatBoost file keeps its labels.
Each callable says the inputs the model takes: ``feature_names`` (None where the model was
trained on unnamed columns) and ``n_features``, which :func:`model_features` reads from any
black box :func:`~ruleeraser.model_files.load_model` returns. The libraries are optional:
a missing one raises ``ImportError`` with its install command.

Example
-------
>>> GBM_SUFFIXES[".ubj"], library_name("model.TXT")
('xgboost', 'LightGBM')
>>> open_gbm("model.onnx")
Traceback (most recent call last):
...
ValueError: model.onnx: not a gradient-boosting model file (.txt, .json, .ubj, .cbm)
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

#: The library that reads each suffix.
GBM_SUFFIXES = {".txt": "lightgbm", ".json": "xgboost", ".ubj": "xgboost", ".cbm": "catboost"}
_NAMES = {"lightgbm": "LightGBM", "xgboost": "XGBoost", "catboost": "CatBoost"}
#: What each suffix is, for messages.
GBM_KINDS = {
    ".txt": "a LightGBM model",
    ".json": "an XGBoost model",
    ".ubj": "an XGBoost model",
    ".cbm": "a CatBoost model",
}
_INSTALL = {
    "lightgbm": "pip install 'rule-eraser[gbm]'",
    "xgboost": "pip install 'rule-eraser[gbm]'",
    "catboost": "pip install catboost",
}
#: Objectives whose predictions are class probabilities (or, for XGBoost's ``multi:softmax``
#: and ``binary:logitraw``, margins turned into them here).
_LIGHTGBM_OBJECTIVES = ("binary", "multiclass", "softmax", "cross_entropy", "xentropy")
_XGBOOST_OBJECTIVES = ("binary:logistic", "binary:logitraw", "multi:softprob", "multi:softmax")
_CATBOOST_LOSSES = ("Logloss", "CrossEntropy", "MultiClass")


def library_name(path: str | Path) -> str:
    """The name of the library whose file ``path`` is, by its suffix (e.g. ``"XGBoost"``)."""
    return _NAMES[GBM_SUFFIXES[Path(path).suffix.lower()]]


def open_gbm(path: str | Path) -> LightGBMFile | XGBoostFile | CatBoostFile:
    """The model in the file at ``path``, read by its library (chosen by the suffix).

    Whatever the library raises on a file it cannot read propagates; a model that reads
    but gives no class probabilities (a regressor, a ranker) has ``not_a_classifier`` set
    to why. ``ImportError`` with the install command when the library is missing.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in GBM_SUFFIXES:
        raise ValueError(f"{path}: not a gradient-boosting model file ({', '.join(GBM_SUFFIXES)})")
    kind = {"lightgbm": LightGBMFile, "xgboost": XGBoostFile, "catboost": CatBoostFile}
    return kind[GBM_SUFFIXES[suffix]](path)


def model_features(model: Any) -> tuple[list[str] | None, int | None]:
    """``(feature names, number of features)`` the model behind a black box takes (one from
    :func:`ruleeraser.model_files.load_model`: its ``fn`` says them), each None where the
    model does not know it: a URL knows neither; a model trained on unnamed columns knows
    only the count (scikit-learn's ``n_features_in_``, a booster's, an ONNX input's width).

    >>> from ruleeraser import BlackBox
    >>> model_features(BlackBox(lambda x: [[0.5, 0.5]] * len(x)))
    (None, None)
    """
    names = getattr(model.fn, "feature_names", None)
    count = getattr(model.fn, "n_features", None)
    if names is not None:
        return [str(n) for n in names], len(names)
    return None, None if count is None else int(count)


def _library(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{_NAMES[name]} model files need {name}: {_INSTALL[name]}") from exc


def _named(names: Any, auto: str) -> list[str] | None:
    """``names`` as strings; None when they are the library's own placeholders
    (``auto.format(i)`` for every column i), which a model trained on arrays gets."""
    names = [str(n) for n in names]
    return None if names == [auto.format(i) for i in range(len(names))] else names


class _GBMFile:
    """What the three readers share: the inputs' check and the description of the model."""

    path: Path
    feature_names: list[str] | None
    n_features: int
    n_classes: int
    classes: list[Any] | None = None
    not_a_classifier: str | None = None

    def _rows(self, X: Any) -> Any:
        """``X`` for the library: a DataFrame must have the model's columns, in its order
        (the model would otherwise score other columns than it learned); the rows of a
        model trained on unnamed columns go as an array."""
        if hasattr(X, "detach"):  # a torch tensor
            X = X.detach().cpu().numpy()
        if not hasattr(X, "columns"):
            return np.asarray(X)
        if self.feature_names is None:
            return X.to_numpy()
        if [str(c) for c in X.columns] != self.feature_names:
            raise ValueError(
                f"{self.path} takes the columns {self.feature_names}, got {list(X.columns)}"
            )
        return X

    def _unsupported(self, objective: str, supported: tuple[str, ...]) -> None:
        if objective not in supported:
            self.not_a_classifier = (
                f"{GBM_KINDS[self.path.suffix.lower()]} with objective {objective!r}, not a "
                f"classifier giving probabilities ({', '.join(supported)})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class LightGBMFile(_GBMFile):
    """A LightGBM booster saved as text (``booster.save_model("model.txt")``, or an
    ``LGBMClassifier``'s ``booster_``): probabilities from ``Booster.predict`` at the best
    iteration when one was recorded."""

    def __init__(self, path: str | Path) -> None:
        lightgbm = _library("lightgbm")
        self.path = Path(path)
        self.booster = lightgbm.Booster(model_file=str(self.path))
        self.n_features = self.booster.num_feature()
        self.feature_names = _named(self.booster.feature_name(), "Column_{}")
        per_iteration = self.booster.num_model_per_iteration()
        self.n_classes = 2 if per_iteration == 1 else per_iteration
        objective = str(self.booster.params.get("objective", "binary")).split()[0]
        self._unsupported(objective, _LIGHTGBM_OBJECTIVES)

    def __call__(self, X: Any) -> np.ndarray:
        return self.booster.predict(self._rows(X))


class XGBoostFile(_GBMFile):
    """An XGBoost model file (JSON or UBJSON, from ``Booster.save_model`` or
    ``XGBClassifier.save_model``): probabilities from ``inplace_predict``, up to the best
    iteration when one was recorded, as ``XGBClassifier.predict_proba`` gives them."""

    def __init__(self, path: str | Path) -> None:
        xgboost = _library("xgboost")
        self.path = Path(path)
        self.booster = xgboost.Booster(model_file=str(self.path))
        learner = json.loads(self.booster.save_config())["learner"]
        self.objective = learner["objective"]["name"]
        self.n_classes = max(int(learner["learner_model_param"].get("num_class", 0)), 2)
        self.n_features = self.booster.num_features()
        names = self.booster.feature_names  # None for a model trained on arrays
        self.feature_names = None if names is None else [str(n) for n in names]
        best = self.booster.attr("best_iteration")
        self.iteration_range = (0, int(best) + 1) if best is not None else (0, 0)
        self._unsupported(self.objective, _XGBOOST_OBJECTIVES)

    def __call__(self, X: Any) -> np.ndarray:
        margin = self.objective in ("multi:softmax", "binary:logitraw")
        out = self.booster.inplace_predict(
            self._rows(X),
            iteration_range=self.iteration_range,
            predict_type="margin" if margin else "value",
        )
        if not margin:
            return out
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:  # binary:logitraw
            return 1.0 / (1.0 + np.exp(-out))
        out = np.exp(out - out.max(axis=1, keepdims=True))
        return out / out.sum(axis=1, keepdims=True)


class CatBoostFile(_GBMFile):
    """A CatBoost model file (``model.save_model("model.cbm")``): probabilities from
    ``CatBoostClassifier.predict_proba``; the file keeps the class labels."""

    def __init__(self, path: str | Path) -> None:
        catboost = _library("catboost")
        self.path = Path(path)
        self.model = catboost.CatBoostClassifier()
        self.model.load_model(str(self.path))
        self.n_features = len(self.model.feature_names_)
        self.feature_names = _named(self.model.feature_names_, "{}")
        classes = getattr(self.model, "classes_", None)
        self.classes = None if classes is None or not len(classes) else list(classes)
        self.n_classes = 2 if self.classes is None else len(self.classes)
        loss = str(self.model.get_all_params().get("loss_function", "Logloss"))
        self._unsupported(loss.split(":")[0], _CATBOOST_LOSSES)

    def __call__(self, X: Any) -> np.ndarray:
        return self.model.predict_proba(self._rows(X))
