"""rule-eraser: remove a deployed classifier's biased rule at inference time.

Implements the Inference-Time Rule Eraser (Zhang, Lu, Sang): distil the model's biased rule
p(y|b) from a small labelled calibration set into a patch model, then subtract the patch's
log-output from the model's log-output. The steps alone: :mod:`ruleeraser.distill` (Eq. 17),
:mod:`ruleeraser.patch` (Eq. 18), :mod:`ruleeraser.remove` (Eq. 19/21).
"""

from ruleeraser import distill, metrics, remove
from ruleeraser.blackbox import BlackBox, as_blackbox, check_probabilities
from ruleeraser.distill import Distillation, EmptyCellWarning
from ruleeraser.eraser import Eraser, check_is_fitted
from ruleeraser.remove import remove_log

__version__ = "0.1.0"
__all__ = [
    "BlackBox",
    "Distillation",
    "EmptyCellWarning",
    "Eraser",
    "as_blackbox",
    "check_is_fitted",
    "check_probabilities",
    "distill",
    "metrics",
    "remove",
    "remove_log",
]
