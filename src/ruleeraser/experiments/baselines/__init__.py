"""Post-training debiasing baselines of the paper's Table IV, "under laboratory conditions".

Each method gets what it needs (the paper, Sec. V-D): the deployed model (a tabular or image
net: weights, gradients, its representation ``embed(x)`` and target layer ``head``) and the
calibration set with its bias labels, the same rows the Eraser is fitted on. Every
``fit_*(model, X, y, bias, *, seed)`` (``y`` and ``bias`` as class indices) returns a
:class:`Predictor` whose ``predict(X, bias=None)`` gives class indices; ``bias`` is read only by
the predictors with ``needs_test_bias``. The deployed model is never changed: every method
works on its own copy.

- ``equalodds``: Hardt, Price, Srebro (2016), "Equality of opportunity in supervised learning",
  through fairlearn's ``ThresholdOptimizer`` (group-specific randomised thresholds);
- ``calequalodds``: Pleiss et al. (2017), "On fairness and calibration";
- ``faap``: Wang et al. (2022), "Fairness-aware adversarial perturbation towards bias
  mitigation for deployed deep models";
- ``repro``: Zhang et al. (2022), "Fairness reprogramming";
- ``care``: Sun et al. (2022), "CARE: causality-based neural network repair";
- ``dfr``: Kirichenko, Izmailov, Wilson (2023), "Last layer re-training is sufficient for
  robustness to spurious correlations";
- ``oxonfair-inferred``, ``oxonfair``: Delaney et al. (2024), "OxonFair: a flexible toolkit for
  algorithmic fairness", with groups inferred from the calibration rows, or the true groups;
- ``error-parity``: Cruz & Hardt (2024), "Unprocessing seven years of algorithmic fairness"
  (relaxed equalized-odds thresholds).

Equalodds, CalEqualodds and the peers post-process a binary classifier's score and raise
:class:`NotApplicableError` on a multi-class model (the paper's "-" in Table IV). The methods
live in :mod:`~ruleeraser.experiments.baselines.thresholds` (score post-processing),
:mod:`~ruleeraser.experiments.baselines.perturbation` (input perturbations),
:mod:`~ruleeraser.experiments.baselines.repair` (weight changes) and
:mod:`~ruleeraser.experiments.baselines.peers` (OxonFair and error-parity, from their own
libraries).
"""

from __future__ import annotations

from ruleeraser.experiments.baselines.common import FitFn, NotApplicableError, Predictor
from ruleeraser.experiments.baselines.peers import (
    ErrorParityPredictor,
    OxonFairPredictor,
    TolerancePredictor,
    fit_error_parity,
    fit_oxonfair,
    fit_oxonfair_inferred,
)
from ruleeraser.experiments.baselines.perturbation import PerturbedPredictor, fit_faap, fit_repro
from ruleeraser.experiments.baselines.repair import (
    RepairedPredictor,
    balanced_subsample,
    fit_care,
    fit_dfr,
)
from ruleeraser.experiments.baselines.thresholds import (
    CalEqualoddsPredictor,
    CalibratedEqualodds,
    EqualoddsPredictor,
    fit_calequalodds,
    fit_equalodds,
)

__all__ = [
    "BASELINES",
    "CalEqualoddsPredictor",
    "CalibratedEqualodds",
    "EqualoddsPredictor",
    "ErrorParityPredictor",
    "NotApplicableError",
    "OxonFairPredictor",
    "PerturbedPredictor",
    "Predictor",
    "RepairedPredictor",
    "TolerancePredictor",
    "balanced_subsample",
    "fit_calequalodds",
    "fit_care",
    "fit_dfr",
    "fit_equalodds",
    "fit_error_parity",
    "fit_faap",
    "fit_oxonfair",
    "fit_oxonfair_inferred",
    "fit_repro",
]

#: name -> (fit function, what the method needs beyond the calibration set with bias labels)
BASELINES: dict[str, tuple[FitFn, str]] = {
    "equalodds": (fit_equalodds, "bias labels at test time"),
    "calequalodds": (fit_calequalodds, "bias labels at test time"),
    "faap": (fit_faap, "model weights + gradients"),
    "repro": (fit_repro, "model weights + gradients"),
    "care": (fit_care, "modifies weights"),
    "dfr": (fit_dfr, "modifies weights (retrains the last layer)"),
    "oxonfair-inferred": (fit_oxonfair_inferred, "output probabilities only (groups inferred)"),
    "oxonfair": (fit_oxonfair, "bias labels at test time"),
    "error-parity": (fit_error_parity, "bias labels at test time"),
}
