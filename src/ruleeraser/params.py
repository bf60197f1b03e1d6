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

    def of_kind(self, value: Any) -> bool:
        """Whether ``value`` is a number of this interval's kind (in range or not)."""
        number = numbers.Integral if self.kind is int else numbers.Real
        return isinstance(value, number) and not isinstance(value, bool)

    def accepts(self, value: Any) -> bool:
        if not self.of_kind(value) or not math.isfinite(value):
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
        low, high = (
            (b if b is None else str(int(b)) if self.kind is int else f"{b:g}")
            for b in (self.low, self.high)
        )
        if low is not None and high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{kind} in {left}{low}, {high}{right}"
        if low is not None:
            sign = ">=" if self.closed in ("both", "left") else ">"
            return f"{kind} {sign} {low}"
        if high is not None:
            sign = "<=" if self.closed in ("both", "right") else "<"
            return f"{kind} {sign} {high}"
        return f"a finite {self.kind.__name__}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def of_kind(self, value: Any) -> bool:
        """Whether ``value`` has the type of one of the options."""
        return any(type(value) is type(v) for v in self.values)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (str, bool, type(None))) and value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class InstanceOf:
    """An instance of one of ``types``."""

    types: tuple[type, ...]
    description: str

    def of_kind(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class Satisfies:
    """A value for which ``check`` is true; a value of one of the types ``kind`` that fails
    the check is out of range (``ValueError``), any other a wrong type (``TypeError``)."""

    check: Callable[[Any], bool]
    description: str
    kind: tuple[type, ...] = ()

    def of_kind(self, value: Any) -> bool:
        return isinstance(value, self.kind)

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


def _of_kind(constraint: Constraint, value: Any) -> bool:
    return value is None if constraint is None else constraint.of_kind(value)


def _describe(constraints: Iterable[Constraint]) -> str:
    parts = ["None" if c is None else str(c) for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(
    params: Mapping[str, Any], constraints: Mapping[str, list[Constraint]], *, where: str = ""
) -> None:
    """Check each of ``params`` against its list of ``constraints`` (it must meet one).

    Parameters
    ----------
    params: parameter name -> value.
    constraints: parameter name -> the constraints it may meet (``None``: the value None).
    where: prefixes the message (a file, say).

    Raises
    ------
    ValueError: a value of the right kind out of range (NaN, ``0`` for a positive int, an
        unknown option), naming the parameter, the value and what was expected.
    TypeError: a value of another kind (a string for a number, a float for an int).
    """
    for name, value in params.items():
        allowed = constraints[name]
        if any(_accepts(c, value) for c in allowed):
            continue
        error = ValueError if any(_of_kind(c, value) for c in allowed) else TypeError
        raise error(f"{where}{name} must be {_describe(allowed)}; got {value!r}")


def positive_int_sequence(value: Any) -> bool:
    """A non-empty list or tuple of positive ints (hidden layer widths)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(Interval(int, 1, None).accepts(v) for v in value)
    )
