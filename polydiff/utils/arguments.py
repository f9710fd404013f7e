"""Arguments held to their declared types where Python itself does not hold them.

The command line (jsonargparse) refuses a value outside a ``Literal`` or of another type before
any class is built. A task, data module or config built in Python gets no such check: a typo
such as ``decay="linear"`` would train with another behaviour than the one asked for, and its
checkpoint would not load again (the parser refuses the saved value). ``refuse_mistyped`` gives
Python the command line's refusal, at construction. Only what the declaration can say is
checked: choices, numbers, text, truth values, None, config dataclasses and lists of them; other
classes and callables are left to their own constructors.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np

# A type in words, as the command line's errors say it (YAML's true/false and null).
TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "list": "a list",
    "NoneType": "null",
    "PositiveInt": "an integer above 0",
    "PositiveFloat": "a number above 0",
    "NonNegativeInt": "an integer of 0 or more",
    "NonNegativeFloat": "a number of 0 or more",
}
# The same in Python's words, for arguments given in Python.
PYTHON_NAMES = TYPE_NAMES | {"bool": "True or False", "NoneType": "None"}


def type_in_words(typehint: object, names: Mapping[str, str] = TYPE_NAMES) -> str:
    """``Literal['a', 'b'] | None`` -> "one of a, b or null"; ``int`` -> "an integer"."""
    if get_origin(typehint) is Literal:
        return f"one of {', '.join(map(str, get_args(typehint)))}"
    if get_origin(typehint) in (Union, UnionType):  # null last, however the declaration orders it
        members = sorted(get_args(typehint), key=lambda member: member is type(None))
        return " or ".join(type_in_words(member, names) for member in members)
    if get_origin(typehint) in (list, tuple, Sequence) and get_args(typehint):
        return f"{names['list']} (each item {type_in_words(get_args(typehint)[0], names)})"
    name = getattr(typehint, "__name__", str(typehint))
    return names.get(name, f"a {name}" if isinstance(typehint, type) else name)


def _all(answers: list[bool | None]) -> bool | None:
    return False if False in answers else None if None in answers else True


def fits(value: Any, typehint: object) -> bool | None:
    """Whether ``value`` is of the declared type; None where the declaration cannot tell (a class
    other than a config dataclass, a callable). numpy's numbers count as numbers, an integer as a
    float, and a path as text."""
    origin = get_origin(typehint)
    if origin is Literal:
        return any(isinstance(value, type(choice)) and value == choice for choice in get_args(typehint))
    if origin in (Union, UnionType):
        answers = [fits(value, member) for member in get_args(typehint)]
        return True if True in answers else None if None in answers else False
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple | np.ndarray):  # a string is a sequence, but not of its letters
            return False
        item = (get_args(typehint) or (Any,))[0]
        return _all([fits(member, item) for member in value])
    if dataclasses.is_dataclass(typehint):  # a config: its own fields are checked as it is built
        return isinstance(value, typehint)
    is_bool = isinstance(value, bool | np.bool_)
    simple = {
        type(None): value is None,
        bool: is_bool,
        int: isinstance(value, numbers.Integral) and not is_bool,
        float: isinstance(value, numbers.Real) and not is_bool,
        str: isinstance(value, str | os.PathLike),  # a file may be named by a Path
    }
    return simple.get(typehint)


def _has_choices(typehint: object) -> bool:
    """Whether the type is, or holds, a ``Literal``: a value outside it is a wrong value, not a wrong type."""
    if get_origin(typehint) is Literal:
        return True
    return get_origin(typehint) in (Union, UnionType, list, tuple, Sequence) and any(
        map(_has_choices, get_args(typehint))
    )


@cache
def _declared_types(declared: Callable) -> dict[str, Any]:
    # Resolved once per class or function: resolving the annotations' text took ~90 us a call, and
    # a config is built again (``dataclasses.replace``) inside the sampler.
    return get_type_hints(declared)


def refuse_mistyped(prefix: str, declared: Callable, values: Mapping[str, Any]) -> None:
    """Refuses the first of ``values`` that is not of its type in ``declared``'s annotations.

    Args:
        prefix: what the names are options of, as the command line names them (``data.``).
        declared: a class or function whose annotations declare the names.
        values: name -> value given.

    Raises:
        ValueError: for a value outside a ``Literal``'s choices; TypeError for any other mismatch.
    """
    hints = _declared_types(declared)
    for name, value in values.items():
        typehint = hints.get(name)
        if typehint is not None and fits(value, typehint) is False:
            error = ValueError if _has_choices(typehint) else TypeError
            raise error(f"{prefix}{name} must be {type_in_words(typehint, PYTHON_NAMES)}, got {value!r}")


def refuse_mistyped_arguments(prefix: str, function: Callable, given: Mapping[str, Any]) -> None:
    """``refuse_mistyped`` for the arguments of a call of ``function``, from the ``locals()`` its
    body starts with (``self`` and ``__class__`` left out)."""
    refuse_mistyped(
        prefix, function, {name: value for name, value in given.items() if name not in ("self", "__class__")}
    )


def refuse_mistyped_fields(config: object, prefix: str = "") -> None:
    """``refuse_mistyped`` for every field of a dataclass instance (from its ``__post_init__``)."""
    values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config) if field.init}
    refuse_mistyped(prefix, type(config), values)
