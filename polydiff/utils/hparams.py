"""Hyperparameters saved as plain data, however the module was built.

LightningCLI saves a module's arguments as its parsed config: plain values, dicts and
``class_path``/``init_args`` pairs, with ``_instantiator`` naming the function that builds the
module from them again. A module built in Python saves the objects themselves (a config
dataclass, a schedule, an optimizer class), which a weights-only load (torch's default, and
polydiff's) refuses to unpickle. ``as_cli_config`` writes such arguments the way LightningCLI
would, so both kinds of checkpoint load alike.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any

# Lightning's function that builds a module from its saved config (what LightningCLI records).
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


class NotPlain(ValueError):
    """A value with no plain form: a lambda, or an object whose arguments it does not keep."""


def as_cli_config(hparams: Mapping[str, Any]) -> dict[str, Any] | None:
    """``hparams`` as LightningCLI saves them; None when one of them has no plain form (they are
    then saved as objects, as before) or when they already are LightningCLI's."""
    if hparams.get("_instantiator") == INSTANTIATOR:
        return None
    try:
        return {"_instantiator": INSTANTIATOR} | {name: _plain(value) for name, value in hparams.items()}
    except NotPlain:
        return None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value) if field.init}
    if isinstance(value, type):  # an optimizer class: called later with the parameters
        return {"class_path": _class_path(value)}
    if isinstance(value, functools.partial) and isinstance(value.func, type) and not value.args:
        return {"class_path": _class_path(value.func), "init_args": _plain(value.keywords)}
    lazy_type = getattr(value, "_lazy_class_type", None)  # jsonargparse's lazy_instance, not built yet
    if lazy_type is not None:
        return {"class_path": _class_path(lazy_type), "init_args": _plain(value._lazy_kwargs)}
    if inspect.isroutine(value):  # a function or a lambda: not a class to build again
        raise NotPlain(f"{value!r} is not a class")
    return {"class_path": _class_path(type(value)), "init_args": _plain(_init_arguments(value))}


def _class_path(cls: type) -> str:
    if "<" in cls.__qualname__ or cls.__module__ == "__main__":  # a local class, or a script's own
        raise NotPlain(f"{cls.__qualname__} cannot be imported by name")
    return f"{cls.__module__}.{cls.__qualname__}"


def _init_arguments(value: Any) -> dict[str, Any]:
    """An object's constructor arguments, read back from its attributes of the same names."""
    try:
        parameters = inspect.signature(type(value)).parameters
    except (TypeError, ValueError) as error:  # a builtin's constructor, which Python cannot describe
        raise NotPlain(str(error)) from None
    arguments = {}
    for name, parameter in parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(value, name):  # what it was given is not kept: it could not be built again
            raise NotPlain(f"{type(value).__name__} keeps no attribute {name!r}")
        arguments[name] = getattr(value, name)
    return arguments
