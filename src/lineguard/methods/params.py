"""Parameter values checked against the type annotations of the constructor that takes them.

A value of the wrong type fails deep inside a method with a message about something else (``'<' not supported
between 'str' and 'int'``, an ``avg_pool2d`` error); checked here, the message names the parameter, the type
it takes and the value given. Ranges stay the method's own checks.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from lineguard.errors import ParameterError


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
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def type_name(hint: Any) -> str:
    """``list[int] | None`` as written, ``int`` for classes."""
    return hint.__name__ if isinstance(hint, type) and not get_args(hint) else str(hint).replace("typing.", "")


def check_types(owner: str, constructor: Callable[..., Any], params: dict[str, Any]) -> None:
    """Raise :class:`ParameterError` for the first value in ``params`` that its annotation does not allow."""
    hints = typing.get_type_hints(constructor)
    for name, value in params.items():
        if name in hints and not matches(value, hints[name]):
            raise ParameterError(f"{owner} parameter {name} must be {type_name(hints[name])}, got {value!r} "
                                 f"({type(value).__name__})")
