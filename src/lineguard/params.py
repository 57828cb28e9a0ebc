"""The one parameter contract: what a constructor's parameters may be, declared once and checked in one place.

Two parts, after scikit-learn's ``_parameter_constraints``:

* the **type** comes from the constructor's annotation (``int``, ``float | None``, ``list[int] | None``,
  ``bool``); an int passes for a float, a bool for neither;
* the **allowed values** are declared beside the constructor, ``{"k": [Interval(int, 1, None)], "search":
  [Options("auto", "torch")]}``; a value passes if any of its constraints allows it, and ``None`` is the
  annotation's to allow.

:func:`check_params` checks both and raises :class:`ParameterError` naming the owner, the parameter, what it
takes and the value given — instead of a failure deep inside a method about something else (``'<' not
supported between 'str' and 'int'``). Rules between parameters (an image size that must suit a network's
depth) stay with the method that has them, checked at the same moment.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Union, get_args, get_origin

from lineguard.errors import ParameterError


@dataclass(frozen=True)
class Interval:
    """Numbers from ``low`` to ``high`` (None: unbounded); ``closed`` says which ends belong to it; ``odd``:
    odd whole numbers only (window sizes with a centre cell)."""

    kind: type  # int or float
    low: float | None
    high: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"
    odd: bool = False

    def allows(self, value: Any) -> bool:
        if not isinstance(value, int | float):
            return False
        if (self.kind is int or self.odd) and not float(value).is_integer() or self.odd and value % 2 == 0:
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else
                                        value < self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        if self.odd:
            return f"an odd number {replace(self, odd=False)}"
        if self.high is None:
            return f"{'at least' if self.closed in ('both', 'left') else 'above'} {self.low:g}"
        if self.low is None:
            return f"{'at most' if self.closed in ('both', 'right') else 'below'} {self.high:g}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def invalid_example(self) -> float:
        """A value of the right type that this interval refuses (for contract tests)."""
        if self.odd:
            return self.kind(self.low + 1)
        if self.low is not None:
            return self.kind(self.low - 1 if self.closed in ("both", "left") else self.low)
        return self.kind(self.high + 1 if self.closed in ("both", "right") else self.high)


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any):
        object.__setattr__(self, "values", values)

    def allows(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return f"one of {', '.join(map(repr, self.values))}"

    def invalid_example(self) -> Any:
        return "no-such-option"


@dataclass(frozen=True)
class Each:
    """Every item of a list satisfies ``constraint`` (e.g. positive odd radii)."""

    constraint: Interval | Options

    def allows(self, value: Any) -> bool:
        return isinstance(value, list | tuple) and all(self.constraint.allows(item) for item in value)

    def __str__(self) -> str:
        return f"a list of values each {self.constraint}"

    def invalid_example(self) -> list[Any]:
        return [self.constraint.invalid_example()]


Constraint = Interval | Options | Each
Constraints = Mapping[str, Sequence[Constraint]]
POSITIVE = Interval(int, 1, None)  # counts of things of which there must be at least one
NON_NEGATIVE = Interval(int, 0, None)
FRACTION = Interval(float, 0, 1, closed="right")  # a share of something: more than none, at most all
QUANTILE = Interval(float, 0, 1, closed="left")


def param_names(cls: type) -> list[str]:
    """The constructor's parameter names, in order: the one way parameters are listed (registry, CLI)."""
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def defaults(cls: type) -> dict[str, Any]:
    """The constructor's default values."""
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.default is not inspect.Parameter.empty}


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type; an int passes for a float, a bool for neither.
    Annotations this check does not know pass."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if origin in (list, tuple, Sequence):
        args = get_args(hint)
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(matches(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """``list[int] | None`` as written, ``int`` for classes."""
    return hint.__name__ if isinstance(hint, type) and not get_args(hint) else str(hint).replace("typing.", "")


def check_names(owner: str, cls: type, names: Sequence[str]) -> None:
    """Raise :class:`ParameterError` for a name the constructor of ``cls`` does not take."""
    accepted = param_names(cls)
    unknown = sorted(set(names) - set(accepted))
    if unknown:
        raise ParameterError(f"{owner} has no parameter(s) {', '.join(unknown)}; its parameters are: "
                             f"{', '.join(accepted)}")


def check_params(owner: str, constructor: Callable[..., Any], values: Mapping[str, Any],
                 constraints: Constraints, *, error: type[ParameterError] = ParameterError) -> None:
    """Raise ``error`` for the first value its annotation's type or its constraints refuse; ``constructor`` is
    the function (or dataclass) whose annotations give the types."""
    hints = typing.get_type_hints(constructor)
    for name, value in values.items():
        if name in hints and not matches(value, hints[name]):
            raise error(f"{owner} parameter {name} must be {type_name(hints[name])}, got {value!r} "
                                 f"({type(value).__name__})")
        allowed = constraints.get(name, ())
        if value is not None and allowed and not any(c.allows(value) for c in allowed):
            raise error(f"{owner} parameter {name} must be {' or '.join(map(str, allowed))}, "
                                 f"got {value!r}")
