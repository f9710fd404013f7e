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
import os
from collections.abc import Mapping
from typing import Any

# Lightning's function that builds a module from its saved config (what LightningCLI records).
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
# Default values written out with a class's config (any other kind is left to the parser).
PLAIN_DEFAULTS = (bool, int, float, str, tuple, list)


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
    if isinstance(value, os.PathLike):  # a file named by a Path: its text, as the command line gives it
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value) if field.init}
    if isinstance(value, type):  # an optimizer class: called later with the parameters
        return _class_config(value, {})
    if isinstance(value, functools.partial) and isinstance(value.func, type) and not value.args:
        return _class_config(value.func, value.keywords)
    lazy_type = getattr(value, "_lazy_class_type", None)  # jsonargparse's lazy_instance, not built yet
    if lazy_type is not None:
        return _class_config(lazy_type, value._lazy_kwargs)
    if inspect.isroutine(value):  # a function or a lambda: not a class to build again
        raise NotPlain(f"{value!r} is not a class")
    return {"class_path": _class_path(type(value)), "init_args": _plain(_init_arguments(value))}


def _class_config(cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """A class and its arguments, the defaults it declares included: the parser that loads them
    fills an argument left out from the default class's config (AdamW's weight decay into an SGD)."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin's constructor, which Python cannot describe
        parameters = {}
    defaults = {
        name: parameter.default
        for name, parameter in parameters.items()
        if isinstance(parameter.default, PLAIN_DEFAULTS) or parameter.default is None
    }
    return {"class_path": _class_path(cls), "init_args": _plain(defaults | dict(given))}


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
