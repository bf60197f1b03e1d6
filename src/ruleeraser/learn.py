"""Learning an eraser's patches (Eq. 17-18) from its calibration rows, and with a goal the
removal's settings chosen on patches trained out of fold (:mod:`ruleeraser.choice`).
:meth:`ruleeraser.Eraser.fit` calls :func:`learn_patches` once its inputs are checked and the
model queried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ruleeraser.choice import Choice, choose, out_of_fold, warn_goal
from ruleeraser.distill import Distillation, distill, softmax
from ruleeraser.patch import train_patch, train_patches_side_by_side
from ruleeraser.rule_scale import fit_rule_scale
from ruleeraser.training import FitReport

if TYPE_CHECKING:
    from ruleeraser.eraser import Eraser


def learn_patches(
    eraser: Eraser,
    X_t: torch.Tensor,
    log_out: np.ndarray,
    y_idx: np.ndarray,
    columns: dict[str, np.ndarray],
    levels: dict[str, np.ndarray],
) -> None:
    seed = (
        eraser.random_state
        if eraser.random_state is not None
        else int(np.random.SeedSequence().entropy % 2**31)
    )
    names = list(columns)
    codes = [np.searchsorted(levels[name], columns[name]) for name in names]
    fitted = [
        train_one(eraser, X_t, log_out, y_idx, c, len(levels[name]), seed + j, name)
        for j, (name, c) in enumerate(zip(names, codes, strict=True))
    ]
    eraser.bias_names_ = names
    eraser.bias_values_ = [levels[name] for name in names]
    eraser.patches_ = [module for module, _, _ in fitted]
    eraser.distillations_: list[Distillation] = [d for _, d, _ in fitted]
    eraser.patch_fit_: list[FitReport] = [report for _, _, report in fitted]
    eraser.empty_cells_ = {
        name: [(eraser.classes_[i], level[b]) for i, b in d.empty_cells]
        for name, level, d in zip(names, eraser.bias_values_, eraser.distillations_, strict=True)
    }
    log_patches = eraser._patch_log_proba(X_t, scaled=False)
    eraser.class_prior_ = held_priors(log_patches)
    if eraser.goal is not None:
        eraser.rule_scale_ = np.ones(len(names))
        eraser.goal_fit_ = _choose(eraser, X_t, log_out, y_idx, codes, seed)
    elif eraser.rule_scale == "fit":
        eraser.rule_scale_ = fit_rule_scale(
            log_out, log_patches, np.log(eraser.class_prior_), y_idx, codes,
            keep_prior=eraser.prior == "keep", strength=eraser.strength,
        ).scales  # fmt: skip
    else:
        eraser.rule_scale_ = np.full(len(names), float(eraser.rule_scale))


def train_one(
    eraser: Eraser,
    X_t: torch.Tensor,
    log_out: np.ndarray,
    y_idx: np.ndarray,
    codes: np.ndarray,
    n_bias: int,
    seed: int,
    name: str,
) -> tuple[nn.Module, Distillation, FitReport]:
    """One patch (Eq. 17-18) on the rows given: its module, distillation and fit report."""
    d = distill(log_out, y_idx, codes, n_classes=eraser.n_classes_, n_bias=n_bias)
    module, report = train_patch(
        eraser.patch, eraser.rule, X_t, d, y_idx, codes, seed=seed, progress=eraser.progress,
        description=f"patch[{name}]", n_threads=eraser.n_threads, **_training(eraser),
    )  # fmt: skip
    return module, d, report


def held_priors(log_patches: list[np.ndarray]) -> np.ndarray:
    """The class prior each patch holds: its mean log-output over the rows, normalised,
    ``(n_patches, k)``."""
    return np.stack([softmax(log_g.mean(axis=0)) for log_g in log_patches])


def _training(eraser: Eraser) -> dict:
    """The eraser's patch-training settings, as :func:`ruleeraser.patch.train_patch` takes
    them."""
    return {
        "hidden_sizes": eraser.hidden_sizes, "holdout": eraser.holdout,
        "batch_size": eraser._patch_batch_size(), "max_epochs": eraser.max_epochs,
        "patience": eraser.patience, "learning_rate": eraser.learning_rate,
        "weight_decay": eraser.weight_decay,
    }  # fmt: skip


def _choose(
    eraser: Eraser,
    X_t: torch.Tensor,
    log_out: np.ndarray,
    y_idx: np.ndarray,
    codes: list[np.ndarray],
    seed: int,
) -> Choice:
    """The goal's choice, on patches trained out of fold (:mod:`ruleeraser.choice`)."""
    n_bias = [len(v) for v in eraser.bias_values_]

    def train(rows: list[np.ndarray], j: int) -> list[nn.Module]:
        found = [distill(log_out[r], y_idx[r], codes[j][r], n_classes=eraser.n_classes_,
                         n_bias=n_bias[j]) for r in rows]  # fmt: skip
        side_by_side = train_patches_side_by_side(
            eraser.patch, eraser.rule, X_t, rows, found, y_idx, codes[j], seed=seed + j,
            n_threads=eraser.n_threads or 1, **_training(eraser),
        )  # fmt: skip
        if side_by_side is not None:
            return side_by_side
        return [
            train_patch(eraser.patch, eraser.rule, X_t[r], d, y_idx[r], codes[j][r],
                        seed=seed + j, n_threads=eraser.n_threads, progress=eraser.progress,
                        description=f"patch[{eraser.bias_names_[j]}, fold]",
                        **_training(eraser))[0]
            for r, d in zip(rows, found, strict=True)
        ]  # fmt: skip

    def log_g(module: nn.Module, rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.log_softmax(module(X_t[rows]).double(), dim=1).numpy()

    oof = out_of_fold(train, log_g, [y_idx, *codes], len(codes), seed)
    priors = np.log(held_priors(oof))
    choice = choose(log_out, oof, priors, y_idx, codes, n_bias, eraser.goal)
    warn_goal(choice, eraser.goal, eraser.classes_, eraser.bias_names_, eraser.bias_values_)
    return choice
