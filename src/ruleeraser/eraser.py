"""The Eraser: a scikit-learn style meta-estimator around a deployed black-box classifier."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ruleeraser._data import n_rows, to_labels, to_tensor
from ruleeraser.blackbox import Output, as_blackbox
from ruleeraser.distill import EPS, Distillation, distill, log_proba
from ruleeraser.nets import IMAGE_NETS, image_channels, image_net
from ruleeraser.patch import MLP, FitReport, RuleMixture, fit_module
from ruleeraser.remove import remove_log

Rule = Literal["sample", "group"]
PatchSpec = str | nn.Module | Callable[[int, int], nn.Module]

#: Default patch mini-batch rows for tabular and image inputs: a calibration set of a few
#: hundred images needs more than a handful of steps per epoch (BatchNorm's running
#: statistics lag behind, and early stopping fires before the patch has learnt anything).
TABLE_BATCH, IMAGE_BATCH = 256, 32


class Eraser:
    """Remove a deployed model's biased rule at inference time (Zhang, Lu, Sang).

    ``fit(X, y, bias=b)`` queries ``model`` once per calibration row, distils the bias rule
    p(y|b) (Eq. 17) for each bias column, and trains one patch per column (Eq. 18).
    ``predict_proba(X)`` returns ``softmax(log M(x) - sum_j log G_j(x))`` (Eq. 19/21); no
    bias label is needed at prediction time.

    Parameters
    ----------
    model: the deployed model; see :func:`ruleeraser.blackbox.as_blackbox`.
    patch: ``"mlp"`` (a tabular MLP of ``hidden_sizes``); for images ``X`` of shape
        ``(n, C, H, W)``, ``"cnn"`` (:class:`ruleeraser.nets.SmallCNN`), ``"resnet18"`` or
        ``"resnet34"`` (:mod:`ruleeraser.nets`); a ``torch.nn.Module`` (copied per bias
        column) or a factory ``(n_inputs, n_outputs) -> nn.Module``. The patch outputs k
        logits for ``rule="sample"``, one logit per bias value for ``rule="group"``.
    rule: ``"group"`` (default): the patch predicts p(b|x) and mixes the per-group rules;
        ``"sample"``: the paper's patch, trained on each sample's distilled rule. See
        :mod:`ruleeraser.patch`.
    output: how to read ``model``'s outputs (``"proba"`` or ``"logits"``); None guesses.
    classes: the labels of the model's output columns, when ``model`` has no ``classes_``.
    holdout: share of the calibration set held out for early stopping.
    batch_size: rows per patch training step; None: 256 for tabular rows, 32 for images.
    eps: probabilities are clipped to ``[eps, 1]`` before the log.
    strength: how much of the patches' log-output is subtracted (1: the paper's Eq. 19; 0: the
        model unchanged); see :func:`ruleeraser.strength.select_strength`.
    """

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
        batch_size: int | None = None,
        holdout: float = 0.2,
        output: Output | None = None,
        classes: Sequence[Any] | None = None,
        eps: float = EPS,
        strength: float = 1.0,
        random_state: int | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.patch = patch
        self.rule = rule
        self.hidden_sizes = hidden_sizes
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.holdout = holdout
        self.output = output
        self.classes = classes
        self.eps = eps
        self.strength = strength
        self.random_state = random_state
        self.progress = progress

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn convention)."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> Eraser:
        """Set constructor parameters (scikit-learn convention)."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r}; valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, bias: Any) -> Eraser:
        """Distil and learn the bias rule of each bias column from a calibration set.

        ``X``: inputs as the model takes them (numpy, pandas or torch); ``y``: true labels;
        ``bias``: one bias column (1-D) or several (2-D array, DataFrame or mapping of
        name -> column), one patch each. A DataFrame's column names are kept in
        ``feature_names_in_`` (saved with the eraser).
        """
        self._check_params()
        for name in [a for a in vars(self) if a.endswith("_")]:
            delattr(self, name)  # a failed fit must not leave a half-fitted eraser behind
        n = n_rows(X)
        if hasattr(X, "columns"):
            self.feature_names_in_ = [str(c) for c in X.columns]
        y = to_labels(y, "y")
        columns = _bias_columns(bias)
        for name, values in [("y", y)] + [(f"bias {c}", v) for c, v in columns.items()]:
            if len(values) != n:
                raise ValueError(f"X has {n} rows but {name} has {len(values)}")
        X_t = to_tensor(X)  # the patch's inputs, checked before the model is queried
        if isinstance(self.patch, str) and self.patch in IMAGE_NETS:
            image_channels(X_t.shape[1:], self.patch)
        self.blackbox_ = as_blackbox(self.model, output=self.output)
        before = self.blackbox_.n_queries
        proba = self.blackbox_(X)
        self.n_queries_ = self.blackbox_.n_queries - before
        self.n_classes_ = proba.shape[1]
        self.classes_ = self._resolve_classes(self.n_classes_)
        y_idx = _encode(y, self.classes_, "y")
        if np.unique(y_idx).size < 2:
            raise ValueError("the calibration set has a single class; need at least two")
        log_out = log_proba(proba, self.eps)
        self.input_shape_ = tuple(X_t.shape[1:])
        seed = (
            self.random_state
            if self.random_state is not None
            else int(np.random.SeedSequence().entropy % 2**31)
        )
        self.bias_names_, self.bias_values_, self.patches_ = [], [], []
        self.distillations_: list[Distillation] = []
        self.patch_fit_: list[FitReport] = []
        for j, (name, values) in enumerate(columns.items()):
            levels, codes = np.unique(values, return_inverse=True)
            if levels.size < 2:
                raise ValueError(f"bias column {name!r} has a single value; nothing to erase")
            d = distill(log_out, y_idx, codes, n_classes=self.n_classes_, n_bias=levels.size)
            module, report = self._learn(X_t, d, y_idx, codes, seed + j, name)
            self.bias_names_.append(name)
            self.bias_values_.append(levels)
            self.distillations_.append(d)
            self.patches_.append(module)
            self.patch_fit_.append(report)
        self.empty_cells_ = {
            name: [(self.classes_[i], levels[b]) for i, b in d.empty_cells]
            for name, levels, d in zip(
                self.bias_names_, self.bias_values_, self.distillations_, strict=True
            )
        }
        return self

    def _check_params(self) -> None:
        if isinstance(self.patch, str) and self.patch not in ("mlp", *IMAGE_NETS):
            raise ValueError(
                f"unknown patch {self.patch!r}; use 'mlp', one of {IMAGE_NETS} or a torch module"
            )
        if self.rule not in ("sample", "group"):
            raise ValueError(f"rule must be 'sample' or 'group', got {self.rule!r}")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.batch_size is not None and not self.batch_size >= 1:
            raise ValueError(f"batch_size must be a positive number of rows, got {self.batch_size}")

    def _resolve_classes(self, k: int) -> np.ndarray:
        classes = self.blackbox_.classes if self.classes is None else np.asarray(self.classes)
        if classes is None:
            return np.arange(k)
        if len(classes) != k:
            raise ValueError(f"{len(classes)} classes given but the model outputs {k} columns")
        return classes

    def _learn(
        self, X: torch.Tensor, d: Distillation, y: np.ndarray, b: np.ndarray, seed: int, name: str
    ) -> tuple[nn.Module, FitReport]:
        n_out = self.n_classes_ if self.rule == "sample" else d.group_rules.shape[0]
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module = self._new_patch(X, n_out)
        heldout = _stratified_holdout(y * d.counts.shape[1] + b, self.holdout, seed)
        if self.rule == "sample":
            target, loss = torch.from_numpy(d.q).float(), "soft"
        else:
            target, loss = torch.from_numpy(b), "hard"
        report = fit_module(
            module,
            X,
            target,
            loss=loss,
            heldout=heldout,
            generator=generator,
            max_epochs=self.max_epochs,
            patience=self.patience,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size or (IMAGE_BATCH if X.ndim > 2 else TABLE_BATCH),
            progress=self.progress,
            description=f"patch[{name}]",
        )
        if self.rule == "group":
            module = RuleMixture(module, torch.from_numpy(d.group_rules))
        return module.eval(), report  # patches stay in eval mode: predicting never sets it

    def _new_patch(self, X: torch.Tensor, n_out: int) -> nn.Module:
        n_in = int(np.prod(X.shape[1:]))
        if isinstance(self.patch, str):
            if self.patch == "mlp":
                return MLP(n_in, n_out, self.hidden_sizes).set_scaling(X)
            return image_net(self.patch, image_channels(X.shape[1:], self.patch), n_out)
        module = (
            copy.deepcopy(self.patch)
            if isinstance(self.patch, nn.Module)
            else self.patch(n_in, n_out)
        )
        with torch.no_grad():
            out = module.eval()(X[:2])
        if out.ndim != 2 or out.shape[1] != n_out:
            raise ValueError(
                f"the patch must output (n, {n_out}) logits for rule={self.rule!r}, "
                f"got {tuple(out.shape)}"
            )
        return module

    # -- prediction --------------------------------------------------------------------------

    def patch_log_proba(self, X: Any) -> list[np.ndarray]:
        """``log G_j(x)`` of each patch, ``(n, k)`` each."""
        self._check_fitted()
        return self._patch_log_proba(self._patch_inputs(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Fair probabilities ``softmax(log M(x) - strength * sum_j log G_j(x))`` (Eq. 19/21)."""
        return self.model_and_fair_proba(X)[1]

    def model_and_fair_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """The deployed model's probabilities and the fair ones, from one query per row."""
        proba, log_patches = self._query(X)
        fair = remove_log(log_proba(proba, self.eps), *log_patches, strength=self.strength)
        return proba, fair

    def log_outputs(self, X: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        """``log M(x)`` (one model query per row) and each patch's ``log G_j(x)``."""
        proba, log_patches = self._query(X)
        return log_proba(proba, self.eps), log_patches

    def _query(self, X: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        self._check_fitted()
        X_t = self._patch_inputs(X)  # checked before the model is asked
        proba = self.blackbox_(X)
        if proba.shape[1] != self.n_classes_:
            raise ValueError(
                f"the model outputs {proba.shape[1]} classes; the eraser was fitted with "
                f"{self.n_classes_}"
            )
        return proba, self._patch_log_proba(X_t)

    def _patch_inputs(self, X: Any) -> torch.Tensor:
        X_t = to_tensor(X)
        if tuple(X_t.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has rows of shape {tuple(X_t.shape[1:])}, the eraser was fitted on "
                f"{self.input_shape_}"
            )
        return X_t

    @torch.no_grad()
    def _patch_log_proba(self, X_t: torch.Tensor) -> list[np.ndarray]:
        chunk = 65536 if X_t.ndim == 2 else 512  # rows per forward pass; images weigh more
        chunks = X_t.split(chunk)
        outs = []
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
        return outs

    def predict(self, X: Any) -> np.ndarray:
        """The fair decision: the class of highest fair probability."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def _check_fitted(self) -> None:
        if not hasattr(self, "patches_"):
            raise RuntimeError("this Eraser is not fitted yet; call fit(X, y, bias=...) first")

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Save the fitted patches (safetensors) and configuration (JSON) to a directory."""
        from ruleeraser.persist import save_eraser

        return save_eraser(self, path)

    @classmethod
    def load(cls, path: str | Path, model: Any, *, patch: nn.Module | None = None) -> Eraser:
        """Load an eraser saved by :meth:`save`, in front of ``model``.

        ``patch``: for erasers fitted with a custom patch module, a module of the same
        architecture to load the weights into. Nothing in the directory runs code.
        """
        from ruleeraser.persist import load_eraser

        return load_eraser(path, model, patch=patch)


def _bias_columns(bias: Any) -> dict[str, np.ndarray]:
    """The bias argument as ``{name: 1-D labels}``, one entry per bias attribute."""
    if isinstance(bias, Mapping):
        return {str(k): to_labels(v, f"bias {k}") for k, v in bias.items()}
    if hasattr(bias, "columns"):
        return {str(c): to_labels(bias[c], f"bias {c}") for c in bias.columns}
    if isinstance(bias, torch.Tensor):
        bias = bias.detach().cpu().numpy()
    arr = bias.to_numpy() if hasattr(bias, "to_numpy") else np.asarray(bias)
    if arr.ndim == 2:
        return {f"bias{j}": to_labels(arr[:, j], f"bias column {j}") for j in range(arr.shape[1])}
    name = getattr(bias, "name", None) or "bias"
    return {str(name): to_labels(arr, "bias")}


def _encode(labels: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Indices of ``labels`` in ``classes``; unknown labels raise ``ValueError``."""
    lookup = {c.item() if hasattr(c, "item") else c: i for i, c in enumerate(classes)}
    try:
        return np.fromiter(
            (lookup[v.item() if hasattr(v, "item") else v] for v in labels),
            dtype=np.int64,
            count=len(labels),
        )
    except KeyError:
        unknown = sorted({str(v) for v in labels} - {str(c) for c in lookup})
        raise ValueError(
            f"{name} has labels the model does not output: {unknown[:10]}; model classes: "
            f"{list(lookup)[:10]} (pass classes=... to name the model's output columns)"
        ) from None


def _stratified_holdout(cells: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A held-out mask taking ``fraction`` of every cell (at least one row of cells of >= 2)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(cells), dtype=bool)
    for cell in np.unique(cells):
        idx = rng.permutation(np.flatnonzero(cells == cell))
        if idx.size >= 2:
            mask[idx[: max(1, round(fraction * idx.size))]] = True
    return mask
