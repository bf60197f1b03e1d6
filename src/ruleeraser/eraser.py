"""The Eraser: a scikit-learn style meta-estimator around a deployed black-box classifier."""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ruleeraser import fingerprint, persist
from ruleeraser.blackbox import DEFAULT_QUERY_BATCH, Output, as_blackbox
from ruleeraser.distill import EPS, log_proba
from ruleeraser.goal import Goal
from ruleeraser.inputs import (
    align_to,
    bias_columns,
    bias_levels,
    check_feature_names,
    encode_labels,
    n_rows,
    to_labels,
    to_tensor,
)
from ruleeraser.learn import learn_patches
from ruleeraser.params import (
    InstanceOf,
    Interval,
    Options,
    Satisfies,
    positive_int_sequence,
    validate_params,
)
from ruleeraser.patch import PATCHES, RULES, PatchSpec, Rule, check_patch_spec
from ruleeraser.removal import PRIORS, Prior, Removal

#: ``batch_size`` before it was split into ``patch_batch_size`` and ``query_batch_size``.
DEPRECATED = "deprecated"


def _is_patch(value: Any) -> bool:
    return isinstance(value, nn.Module) or (callable(value) and not isinstance(value, str))


def _are_classes(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    labels = list(value)
    return len(labels) >= 2 and len(set(labels)) == len(labels)


class Eraser:
    """Remove a deployed model's biased rule at inference time (Zhang, Lu, Sang).

    ``fit(X, y, bias=b)`` queries ``model`` once per calibration row, distils the bias rule
    p(y|b) (Eq. 17) for each bias column, and trains one patch per column (Eq. 18).
    ``predict_proba(X)`` returns ``softmax(log M(x) - strength * sum_j log G_j(x))``
    (Eq. 19/21; with ``prior="keep"``, ``log G_j - log class_prior_[j]`` is subtracted); no
    bias label is needed at prediction time.

    Parameters
    ----------
    model: the deployed model: a scikit-learn classifier, a torch module, a callable returning
        probabilities, or a :class:`ruleeraser.BlackBox` (see :func:`ruleeraser.as_blackbox`).
    patch: ``"mlp"`` (a standardising MLP of ``hidden_sizes``); for images ``X`` of shape
        ``(n, C, H, W)``, ``"cnn"``, ``"resnet18"`` or ``"resnet34"`` (:mod:`ruleeraser.nets`);
        a ``torch.nn.Module`` (copied per bias column) or a factory
        ``(n_inputs, n_outputs) -> nn.Module``. See :mod:`ruleeraser.patch`.
    rule: ``"group"``: the patch predicts p(b|x) and mixes the per-group rules; ``"sample"``:
        the paper's patch, trained on each sample's distilled rule.
    hidden_sizes: widths of the MLP patch's hidden layers.
    max_epochs, patience: patch training stops after ``max_epochs``, or ``patience`` epochs
        without a better held-out loss (the best epoch's weights are kept).
    learning_rate, weight_decay: Adam's settings for the patch.
    patch_batch_size: rows per patch training step; None: 256 for tabular rows, 32 for images.
    query_batch_size: rows per call of the deployed model.
    holdout: share of each (target, bias) cell of the calibration set held out for early
        stopping.
    output: whether ``model`` returns ``"proba"`` or ``"logits"``; None guesses from its type.
    classes: the labels of the model's output columns, when ``model`` has no ``classes_``.
    eps: probabilities are clipped to ``[eps, 1]`` before the log.
    strength: how much of the patches' log-output is subtracted (1: the paper's Eq. 19; 0: the
        model unchanged); see :func:`ruleeraser.strength.select_strength`.
    prior: ``"balanced"``: the paper's Eq. 19, which subtracts all of ``log G_j``, the class
        prior with the bias, and so makes the model class-balanced; ``"keep"``: subtract only
        the bias-dependent part, ``log G_j - log class_prior_[j]``, so that the model keeps its
        own class prior (``docs/prior.md``).
    rule_scale: the size of each patch's bias-dependent part, ``log G_j - log
        class_prior_[j]``, from ``fit`` on (:mod:`ruleeraser.rule_scale`): a number (1: the
        paper's patch) or ``"fit"``: chosen on the calibration rows, with their bias labels,
        so that the bias groups' error rates match (EqualOdds) under this eraser's ``prior``.
    goal: what fair means (:class:`ruleeraser.goal.Goal`: a constraint, the largest gap, an
        objective, a guard against levelling down). Given, ``fit`` chooses the strength, the
        prior and a class offset on out-of-fold calibration rows (:mod:`ruleeraser.choice`)
        instead of taking ``strength``, ``prior`` and ``rule_scale``, and warns when the
        calibration rows cannot promise the goal.
    n_threads: torch intra-op threads while training the patches (the caller's setting is
        restored after); None: one thread for a patch whose training step is small (a tabular
        MLP), the caller's threads for a larger one (see :mod:`ruleeraser.training`).
    random_state: seed of the patches' initialisation, held-out split and batch order.
    progress: show a progress bar per patch.
    batch_size: deprecated alias of ``patch_batch_size``.

    Attributes
    ----------
    blackbox_: the model as a :class:`ruleeraser.BlackBox`.
    classes_: the labels of the model's output columns, ``(k,)``.
    n_classes_: k.
    input_shape_: the shape of one input row, as the patches take it.
    feature_names_in_: the column names of a DataFrame ``X`` (only when fitted on one).
    n_queries_: rows sent to the model during ``fit``.
    model_fingerprint_: the model's answers on a few probe rows (:mod:`ruleeraser.fingerprint`).
    bias_names_: the bias columns' names, one patch each.
    bias_values_: the values of each bias column, as arrays.
    distillations_: each bias column's :class:`ruleeraser.distill.Distillation`.
    patches_: the patches ``log G_j``, torch modules in eval mode.
    patch_fit_: how each patch's training went (:class:`ruleeraser.training.FitReport`).
    empty_cells_: per bias column, the (target, bias) label pairs with no calibration row.
    class_prior_: per bias column, the class prior its patch holds, ``(n_biases, k)``: the
        normalised geometric mean of ``G_j`` over the calibration rows (used by
        ``prior="keep"``).
    rule_scale_: per bias column, the scale of its patch's bias-dependent part, ``(n_biases,)``
        (``rule_scale`` fitted, or as given).
    goal_fit_: with a ``goal``, the :class:`ruleeraser.choice.Choice` made (the removal, the
        expected gap and its interval).
    removal_: the :class:`ruleeraser.removal.Removal` that ``predict_proba`` applies.

    Example
    -------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000); b = np.where(rng.random(2000) < 0.9, y, 1 - y)
    >>> X = np.c_[y + rng.normal(0, 1.5, 2000), b]      # the bias is an input
    >>> model = LogisticRegression().fit(X, y)
    >>> eraser = Eraser(model, random_state=0).fit(X[:800], y[:800], bias=b[:800])
    >>> eraser.predict_proba(X[800:]).shape
    (1200, 2)
    """

    _parameter_constraints: dict[str, list] = {
        "model": [Satisfies(lambda m: m is not None, "a model")],
        "patch": [Options(PATCHES), Satisfies(_is_patch, "a torch module or a module factory")],
        "rule": [Options(RULES)],
        "hidden_sizes": [
            Satisfies(positive_int_sequence, "a non-empty list of positive ints", (list, tuple))
        ],
        "max_epochs": [Interval(int, 1, None)],
        "patience": [Interval(int, 1, None)],
        "learning_rate": [Interval(float, 0, None, closed="neither")],
        "weight_decay": [Interval(float, 0, None)],
        "patch_batch_size": [None, Interval(int, 1, None)],
        "query_batch_size": [Interval(int, 1, None)],
        "holdout": [Interval(float, 0, 1, closed="neither")],
        "output": [None, Options(("proba", "logits"))],
        "classes": [
            None,
            Satisfies(
                _are_classes, "a sequence of at least 2 distinct labels", (list, tuple, np.ndarray)
            ),
        ],
        "eps": [Interval(float, 0, 0.1, closed="right")],
        "strength": [Interval(float, 0, None)],
        "prior": [Options(PRIORS)],
        "rule_scale": [Interval(float, 0, None), Options(("fit",))],
        "goal": [None, InstanceOf((Goal,), "a ruleeraser.goal.Goal")],
        "n_threads": [None, Interval(int, 1, None)],
        "random_state": [None, Interval(int, 0, 2**32 - 1)],
        "progress": [Options((True, False))],
        "batch_size": [
            Satisfies(lambda v: v == DEPRECATED, "left unset (deprecated: use patch_batch_size)"),
            None,
            Interval(int, 1, None),
        ],
    }

    def __init__(
        self,
        model: Any,
        *,
        patch: PatchSpec = "mlp",
        rule: Rule = "group",
        hidden_sizes: Sequence[int] = (64, 64),
        max_epochs: int = 200,
        patience: int = 10,
        learning_rate: float = 1e-3,
        weight_decay: float = 3e-3,
        patch_batch_size: int | None = None,
        query_batch_size: int = DEFAULT_QUERY_BATCH,
        holdout: float = 0.2,
        output: Output | None = None,
        classes: Sequence[Any] | None = None,
        eps: float = EPS,
        strength: float = 1.0,
        prior: Prior = "balanced",
        rule_scale: float | Literal["fit"] = "fit",
        goal: Goal | None = None,
        n_threads: int | None = None,
        random_state: int | None = None,
        progress: bool = False,
        batch_size: int | None | str = DEPRECATED,
    ) -> None:
        self.model = model
        self.patch = patch
        self.rule = rule
        self.hidden_sizes = hidden_sizes
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patch_batch_size = patch_batch_size
        self.query_batch_size = query_batch_size
        self.holdout = holdout
        self.output = output
        self.classes = classes
        self.eps = eps
        self.strength = strength
        self.prior = prior
        self.rule_scale = rule_scale
        self.goal = goal
        self.n_threads = n_threads
        self.random_state = random_state
        self.progress = progress
        self.batch_size = batch_size
        self._validate_params()
        if batch_size != DEPRECATED:
            warnings.warn(
                "Eraser(batch_size=...) is deprecated and will be removed in 0.3: use "
                "patch_batch_size (rows per patch training step); query_batch_size sets the "
                "rows per model call",
                DeprecationWarning,
                stacklevel=2,
            )

    def _validate_params(self, where: str = "") -> None:
        validate_params(self.get_params(), self._parameter_constraints, where=where)
        if self.batch_size != DEPRECATED and self.patch_batch_size is not None:
            raise ValueError(
                f"{where}batch_size is the deprecated name of patch_batch_size: pass only "
                "patch_batch_size"
            )

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn convention)."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> Eraser:
        """Set constructor parameters (scikit-learn convention); checked like the constructor."""
        valid = self.get_params()
        for name in params:
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r}; valid: {sorted(valid)}")
        validate_params(params, self._parameter_constraints)
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _patch_batch_size(self) -> int | None:
        if self.patch_batch_size is None and self.batch_size != DEPRECATED:
            return self.batch_size  # type: ignore[return-value]
        return self.patch_batch_size

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, bias: Any) -> Eraser:
        """Distil and learn the bias rule of each bias column from a calibration set.

        ``X``: inputs as the model takes them (numpy, pandas or torch); ``y``: true labels;
        ``bias``: one bias column (1-D) or several (2-D array, DataFrame or mapping of
        name -> column), one patch each. pandas ``y`` and ``bias`` are aligned to ``X``'s
        index. Returns the fitted eraser.
        """
        self._validate_params()
        for name in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, name)  # a failed fit must not leave a half-fitted eraser behind
        n = n_rows(X)
        y = to_labels(align_to(X, y, "y"), "y")
        columns = bias_columns(bias, X)
        for name, values in [("y", y)] + [(f"bias {c}", v) for c, v in columns.items()]:
            if len(values) != n:
                raise ValueError(f"X has {n} rows but {name} has {len(values)}")
        X_t = to_tensor(X)  # the patch's inputs, checked before the model is queried
        check_patch_spec(self.patch, X_t.shape[1:])
        levels = {name: bias_levels(name, values) for name, values in columns.items()}
        blackbox = as_blackbox(
            self.model, output=self.output, query_batch_size=self.query_batch_size
        )
        before = blackbox.n_queries
        proba = blackbox(X)
        classes = self._resolve_classes(blackbox, proba.shape[1])
        y_idx = encode_labels(y, classes, "y")
        if np.unique(y_idx).size < 2:
            raise ValueError("the calibration set has a single class; need at least two")
        self.blackbox_, self.classes_, self.n_classes_ = blackbox, classes, proba.shape[1]
        self.n_queries_ = blackbox.n_queries - before
        self.model_fingerprint_ = fingerprint.make(X, blackbox, seed=self.random_state)
        self.input_shape_ = tuple(X_t.shape[1:])
        if hasattr(X, "columns"):
            self.feature_names_in_ = [str(c) for c in X.columns]
        learn_patches(self, X_t, log_proba(proba, self.eps), y_idx, columns, levels)
        return self

    def _resolve_classes(self, blackbox: Any, k: int) -> np.ndarray:
        classes = blackbox.classes if self.classes is None else np.asarray(self.classes)
        if classes is None:
            return np.arange(k)
        if len(classes) != k:
            raise ValueError(f"{len(classes)} classes given but the model outputs {k} columns")
        return classes

    # -- prediction --------------------------------------------------------------------------

    def outputs(self, X: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        """The deployed model's probabilities ``M(x)`` (one query per row) and each patch's
        ``log G_j(x)``, ``(n, k)`` each."""
        check_is_fitted(self)
        X_t = self._patch_inputs(X)  # checked before the model is asked
        proba = self.blackbox_(X)
        if proba.shape[1] != self.n_classes_:
            raise ValueError(
                f"the model outputs {proba.shape[1]} classes; the eraser was fitted with "
                f"{self.n_classes_}"
            )
        return proba, self._patch_log_proba(X_t)

    @property
    def removal_(self) -> Removal:
        """The removal ``predict_proba`` applies: the goal's choice, or without a goal this
        eraser's ``strength`` and ``prior`` with the fitted ``rule_scale_``."""
        check_is_fitted(self)
        if getattr(self, "goal_fit_", None) is not None:
            return self.goal_fit_.removal
        validate_params(
            {"strength": self.strength, "prior": self.prior}, self._parameter_constraints
        )
        return Removal.plain(self.strength, self.prior, self.rule_scale_, self.n_classes_)

    def set_strength(self, strength: float) -> Eraser:
        """Override the removal's strength by hand (a goal's choice too); returns self."""
        validate_params({"strength": strength}, self._parameter_constraints)
        chosen = getattr(self, "goal_fit_", None)
        if chosen is not None:
            removal = chosen.removal.replace(strength=float(strength))
            self.goal_fit_ = dataclasses.replace(chosen, removal=removal)
        self.strength = strength
        return self

    def remove(
        self,
        proba: np.ndarray,
        log_patches: Sequence[np.ndarray],
        *,
        strength: float | None = None,
        prior: Prior | None = None,
    ) -> np.ndarray:
        """Fair probabilities from the model's probabilities and the patches' log-outputs
        (:meth:`outputs`): :attr:`removal_` with this eraser's ``eps``, its ``strength`` and
        ``prior`` replaced by those given."""
        changes = {k: v for k, v in (("strength", strength), ("prior", prior)) if v is not None}
        removal = self.removal_
        if changes:  # the proxy's path has none: no copy per request
            validate_params(changes, self._parameter_constraints)
            removal = removal.replace(**changes)
        log_priors = np.log(self.class_prior_) if hasattr(self, "class_prior_") else None
        return removal.combine(log_proba(proba, self.eps), log_patches, log_priors)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Fair probabilities ``softmax(log M(x) - strength * sum_j log G_j(x))`` (Eq. 19/21),
        or with ``prior="keep"`` ``log G_j - log class_prior_[j]`` subtracted."""
        return self.remove(*self.outputs(X))

    def model_and_fair_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """The deployed model's probabilities and the fair ones, from one query per row."""
        proba, log_patches = self.outputs(X)
        return proba, self.remove(proba, log_patches)

    def predict(self, X: Any) -> np.ndarray:
        """The fair decision: the class of highest fair probability."""
        fair = self.predict_proba(X)
        return self.classes_[fair.argmax(axis=1)]

    def patch_log_proba(self, X: Any, *, scaled: bool = True) -> list[np.ndarray]:
        """``log G_j(x)`` of each patch, ``(n, k)`` each, its bias-dependent part at
        ``rule_scale_`` (``scaled=False``: as distilled, the paper's scale); the model is not
        queried."""
        check_is_fitted(self)
        return self._patch_log_proba(self._patch_inputs(X), scaled=scaled)

    def _patch_inputs(self, X: Any) -> torch.Tensor:
        check_feature_names(X, getattr(self, "feature_names_in_", None))
        X_t = to_tensor(X)
        if tuple(X_t.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has rows of shape {tuple(X_t.shape[1:])}, the eraser was fitted on "
                f"{self.input_shape_}"
            )
        return X_t

    @torch.no_grad()
    def _patch_log_proba(self, X_t: torch.Tensor, *, scaled: bool = True) -> list[np.ndarray]:
        chunk = 65536 if X_t.ndim == 2 else 512  # rows per forward pass; images weigh more
        chunks = X_t.split(chunk)
        outs = []
        removal = self.removal_ if scaled and hasattr(self, "rule_scale_") else None
        for name, module in zip(self.bias_names_, self.patches_, strict=True):
            logits = torch.cat([module(x) for x in chunks]) if len(chunks) > 1 else module(X_t)
            out = torch.log_softmax(logits.double(), dim=1).numpy()
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
            if bad.size:
                raise ValueError(
                    f"the patch has no finite output for {bad.size} row(s) (bias {name!r}), "
                    f"the first is row {bad[0]}: values not finite or far outside the "
                    "calibration data"
                )
            outs.append(out)
        if removal is None:
            return outs
        held = getattr(self, "class_prior_", None)
        return removal.scale_patches(outs, None if held is None else np.log(held))

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Save the fitted patches (safetensors) and configuration (JSON) to a directory.

        The write is atomic: a save interrupted at any point leaves the previous eraser (or
        none) in ``path``, never a mix. ``overwrite=False`` refuses an existing eraser.
        """
        check_is_fitted(self)
        params = {k: v for k, v in self.get_params().items() if k in persist.SAVED_PARAMS}
        params["patch_batch_size"] = self._patch_batch_size()
        config, tensors = persist.fitted_state(self, params)
        return persist.write_eraser(path, config, tensors, overwrite=overwrite)

    @classmethod
    def load(
        cls, path: str | Path, model: Any, *, patch: nn.Module | None = None,
        check_model: bool = True,
    ) -> Eraser:  # fmt: skip
        """Load an eraser saved by :meth:`save`, in front of ``model``.

        ``patch``: for erasers fitted with a custom patch module, a module of the same
        architecture to load the weights into. Nothing in the directory runs code; every
        field is checked as the constructor checks it, and the weights against their hash.
        A model that names its classes must name those the eraser was fitted with.
        ``check_model``: refuse (``ValueError``) a model whose answers on the eraser's probe
        rows differ from its model's (:func:`ruleeraser.fingerprint.check_model`).
        """
        config, weights, where = persist.read_eraser(path)
        if config["patch"] == "custom" and patch is None:
            raise ValueError(f"{where}fitted with a custom patch: pass patch=<module>")
        saved = {"patch": config["patch"]} if patch is None else {}
        try:
            validate_params({**saved, **config["params"]}, cls._parameter_constraints, where=where)
        except (TypeError, ValueError) as exc:  # the file's fault, not the caller's
            raise persist.EraserFileError(str(exc)) from None
        eraser = cls(model, patch=patch if patch is not None else config["patch"])
        eraser.set_params(**config["params"], goal=config.get("goal"))
        eraser.blackbox_ = as_blackbox(
            model, output=eraser.output, query_batch_size=eraser.query_batch_size
        )
        persist.restore_fitted(eraser, config, weights, where)
        if check_model:
            fingerprint.check_model(eraser, path)
        return eraser


def check_is_fitted(eraser: Eraser) -> None:
    """``RuntimeError`` unless ``eraser`` has been fitted (or loaded)."""
    if not hasattr(eraser, "patches_"):
        raise RuntimeError("this Eraser is not fitted yet; call fit(X, y, bias=...) first")
