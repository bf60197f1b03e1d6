"""Rule removal (paper Sec. IV-C, Eq. 19; several biases, Eq. 21).

``P_fair = softmax( log M(x) - strength * sum_j log G_j(x) )``: the patches' log-outputs are
subtracted from the model's in log space (the paper: ``strength = 1``). Adding any per-row
constant to a log-output leaves the result unchanged, so unnormalised log-scores work too;
a uniform patch changes nothing. :func:`remove_log` is the one place this is computed: the
:class:`ruleeraser.Eraser`, the fair proxy and the strength curve all call it.

The class prior. A patch ``G_j`` estimates the biased rule p(y|b), which holds the class
prior p(y) as well as the bias, so Eq. 19 also makes the model class-balanced. Given the
prior ``pi_j`` a patch holds, ``remove_log(..., log_prior=log pi)`` subtracts
``log G_j - log pi_j`` instead: only the bias-dependent part (``docs/prior.md``).

Example
-------
>>> import numpy as np
>>> model = np.array([[0.8, 0.2]])       # the model follows the bias ...
>>> patch = np.array([[0.8, 0.2]])       # ... which is all the patch saw
>>> remove(model, patch)
array([[0.5, 0.5]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ruleeraser.distill import EPS, log_proba, softmax


def remove_log(
    log_model: np.ndarray,
    *log_patches: np.ndarray,
    strength: float = 1.0,
    log_prior: np.ndarray | Sequence[float] | Sequence[Sequence[float]] | None = None,
    offset: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """Fair probabilities from the model's and the patches' log-outputs (Eq. 19/21).

    Parameters
    ----------
    log_model: ``log M(x)``, ``(n, k)``.
    log_patches: ``log G_j(x)`` of each patch, ``(n, k)`` each.
    strength: how much is subtracted: 0 leaves the model as it is, 1 is the paper's Eq. 19.
    log_prior: the class prior ``log pi`` that the patches hold, ``(k,)`` for all of them or
        ``(len(log_patches), k)``, one row per patch: ``log G_j - log pi_j`` is subtracted
        instead of ``log G_j``, so that only the bias-dependent part of each rule goes and the
        model's own class prior stays (None: the paper's Eq. 19, which removes it with the
        bias).
    offset: a log-space shift per class, ``(k,)``, added before the softmax (a decision
        threshold for two classes; :class:`ruleeraser.removal.Removal`).

    Returns
    -------
    ``(n, k)`` float64 probabilities.

    Example
    -------
    >>> model, patch = np.log([[0.9, 0.1]]), np.log([[0.9, 0.1]])
    >>> remove_log(model, patch).round(3)                             # Eq. 19: balanced
    array([[0.5, 0.5]])
    >>> remove_log(model, patch, log_prior=np.log([0.8, 0.2])).round(3)  # the prior kept
    array([[0.8, 0.2]])
    """
    z = np.asarray(log_model, dtype=np.float64).copy()
    priors = np.zeros((len(log_patches), z.shape[-1]))
    if log_prior is not None:
        prior = np.asarray(log_prior, dtype=np.float64)
        if prior.shape not in ((z.shape[-1],), priors.shape):
            raise ValueError(
                f"log_prior has shape {prior.shape}; expected ({z.shape[-1]},) or "
                f"{priors.shape} (one row per patch)"
            )
        priors += prior
    for log_g, log_pi in zip(log_patches, priors, strict=True):
        log_g = np.asarray(log_g, dtype=np.float64)
        if log_g.shape != z.shape:
            raise ValueError(f"patch output {log_g.shape} does not match model output {z.shape}")
        z -= strength * (log_g - log_pi)
    if offset is not None:
        shift = np.asarray(offset, dtype=np.float64)
        if shift.shape != (z.shape[-1],):
            raise ValueError(f"offset has shape {shift.shape}; expected ({z.shape[-1]},)")
        z += shift
    return softmax(z)


def remove(
    model_proba: np.ndarray, *patch_proba: np.ndarray, eps: float = EPS, strength: float = 1.0
) -> np.ndarray:
    """Fair probabilities from the model's and the patches' probabilities (Eq. 19/21).

    Probabilities are clipped to ``[eps, 1]`` before the log, so zeros are safe; see
    :func:`remove_log` for ``strength``.
    """
    logs = (log_proba(g, eps) for g in patch_proba)
    return remove_log(log_proba(model_proba, eps), *logs, strength=strength)
