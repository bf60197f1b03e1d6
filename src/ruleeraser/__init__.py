"""rule-eraser: remove a deployed classifier's biased rule at inference time.

Implements the Inference-Time Rule Eraser (Zhang, Lu, Sang): distil the model's biased rule
p(y|b) from a small labelled calibration set into a patch model, then subtract the patch's
log-output from the model's log-output. The steps alone: :mod:`ruleeraser.distill` (Eq. 17),
:mod:`ruleeraser.patch` (Eq. 18), :mod:`ruleeraser.remove` (Eq. 19/21).

The names below load on first use (``from ruleeraser import Eraser`` as ever), so that
``import ruleeraser.cli`` takes milliseconds, not the seconds of torch: the command line then
answers Ctrl-C during its own imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ruleeraser import distill, metrics, remove
    from ruleeraser.blackbox import BlackBox, as_blackbox, check_probabilities
    from ruleeraser.distill import Distillation, EmptyCellWarning
    from ruleeraser.eraser import Eraser, check_is_fitted
    from ruleeraser.remove import remove_log

#: The module of each name below that is not a module itself.
_HOMES = {
    "BlackBox": "blackbox", "as_blackbox": "blackbox", "check_probabilities": "blackbox",
    "Distillation": "distill", "EmptyCellWarning": "distill", "Eraser": "eraser",
    "check_is_fitted": "eraser", "remove_log": "remove",
}  # fmt: skip
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


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'ruleeraser' has no attribute {name!r}")
    module = importlib.import_module(f"ruleeraser.{_HOMES.get(name, name)}")
    value = getattr(module, name) if name in _HOMES else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
