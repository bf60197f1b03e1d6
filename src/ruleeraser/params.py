"""Parameter constraints, checked in one place (in the manner of scikit-learn's
``_parameter_constraints``): each parameter lists what it may be, and a value that matches
none of them raises an error that names the parameter, the value and what was expected.

Example
-------
>>> constraints = {"holdout": [Interval(float, 0, 1, closed="neither")]}
>>> validate_params({"holdout": 0.2}, constraints)
>>> validate_params({"holdout": 1.5}, constraints)
Traceback (most recent call last):
...
ValueError: holdout must be a float in (0, 1); got 1.5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Closed = Literal["both", "left", "right", "neither"]


@dataclass(frozen=True)
class Interval:
    """A real (``float``) or integral (``int``) number between ``low`` and ``high`` (None: no
    bound); ``closed`` says which ends are included. NaN, infinities and booleans never pass."""

    kind: type
    low: float | None
    high: float | None
    closed: Closed = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        open_low, open_high = (
            self.closed in ("right", "neither"),
            self.closed in ("left", "neither"),
        )
        below = self.low is not None and (value < self.low or (open_low and value == self.low))
        above = self.high is not None and (value > self.high or (open_high and value == self.high))
        return not (below or above)

    def __str__(self) -> str:
        kind = "an int" if self.kind is int else "a float"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            sign = ">=" if self.closed in ("both", "left") else ">"
            return f"{kind} {sign} {self.low:g}"
        if self.high is not None:
            sign = "<=" if self.closed in ("both", "right") else "<"
            return f"{kind} {sign} {self.high:g}"
        return f"a finite {self.kind.__name__}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (str, bool, type(None))) and value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class InstanceOf:
    """An instance of one of ``types``."""

    types: tuple[type, ...]
    description: str

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class Satisfies:
    """A value for which ``check`` is true."""

    check: Callable[[Any], bool]
    description: str

    def accepts(self, value: Any) -> bool:
        try:
            return bool(self.check(value))
        except (TypeError, ValueError):
            return False

    def __str__(self) -> str:
        return self.description


Constraint = Interval | Options | InstanceOf | Satisfies | None


def _accepts(constraint: Constraint, value: Any) -> bool:
    return value is None if constraint is None else constraint.accepts(value)


def _describe(constraints: Iterable[Constraint]) -> str:
    parts = ["None" if c is None else str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(
    params: Mapping[str, Any], constraints: Mapping[str, list[Constraint]], *, where: str = ""
) -> None:
    """Raise ``TypeError`` (wrong kind) or ``ValueError`` (out of range) for the first
    parameter of ``params`` that meets none of its ``constraints``; ``where`` prefixes the
    message (a file, say)."""
    for name, value in params.items():
        allowed = constraints[name]
        if any(_accepts(c, value) for c in allowed):
            continue
        numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
        range_only = numeric and any(isinstance(c, Interval) for c in allowed)
        error = ValueError if range_only or isinstance(value, str) else TypeError
        raise error(f"{where}{name} must be {_describe(allowed)}; got {value!r}")


def positive_int_sequence(value: Any) -> bool:
    """A non-empty list or tuple of positive ints (hidden layer widths)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(Interval(int, 1, None).accepts(v) for v in value)
    )
