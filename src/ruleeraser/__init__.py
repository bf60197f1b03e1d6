"""rule-eraser: remove a deployed classifier's biased rule at inference time.

Implements the Inference-Time Rule Eraser (Zhang, Lu, Sang): distil the model's biased rule
p(y|b) from a small labelled calibration set into a patch model, then subtract the patch's
log-output from the model's log-output.
"""

from ruleeraser import metrics
from ruleeraser.blackbox import BlackBox, as_blackbox, check_probabilities
from ruleeraser.distill import Distillation, EmptyCellWarning, distill
from ruleeraser.eraser import Eraser
from ruleeraser.remove import remove, remove_log

__version__ = "0.1.0"
__all__ = [
    "BlackBox",
    "Distillation",
    "EmptyCellWarning",
    "Eraser",
    "as_blackbox",
    "check_probabilities",
    "distill",
    "metrics",
    "remove",
    "remove_log",
]
