"""Rule removal (paper Sec. IV-C, Eq. 19; several biases, Eq. 21).

``P_fair = softmax( log M(x) - strength * sum_j log G_j(x) )``: the patches' log-outputs are
subtracted from the model's in log space (the paper: ``strength = 1``). Adding any per-row
constant to a log-output leaves the result unchanged, so unnormalised log-scores work too;
a uniform patch changes nothing.
"""

from __future__ import annotations

import numpy as np

from ruleeraser.distill import EPS, log_proba, softmax


def remove_log(
    log_model: np.ndarray, *log_patches: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Fair probabilities from the model's and the patches' log-outputs (Eq. 19/21).

    ``strength`` scales what is subtracted: 0 leaves the model as it is, 1 is the paper's Eq. 19.
    """
    z = np.asarray(log_model, dtype=np.float64).copy()
    for log_g in log_patches:
        log_g = np.asarray(log_g, dtype=np.float64)
        if log_g.shape != z.shape:
            raise ValueError(f"patch output {log_g.shape} does not match model output {z.shape}")
        z -= strength * log_g
    return softmax(z)


def remove(
    model_proba: np.ndarray, *patch_proba: np.ndarray, eps: float = EPS, strength: float = 1.0
) -> np.ndarray:
    """Fair probabilities from the model's and the patches' probabilities (Eq. 19/21).

    Probabilities are clipped to ``[eps, 1]`` before the log, so zeros are safe.
    """
    logs = (log_proba(g, eps) for g in patch_proba)
    return remove_log(log_proba(model_proba, eps), *logs, strength=strength)
