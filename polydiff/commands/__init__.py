"""Commands of ``polydiff`` beside LightningCLI's fit/validate/test/predict, and how every
command reports an error a user can cause."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from jsonargparse import ArgumentParser

from polydiff.utils.arguments import type_in_words

DEBUG_ENV = "POLYDIFF_DEBUG"  # set to 1 to see the full traceback of a user error
# A class_path given for a typed option (a callback) whose own arguments fail: jsonargparse words it
# amid every subtype it tried and the whole of the option's value (2,000 characters for callbacks).
CLASS_PATH_PROBLEM = re.compile(r'Parser key "([^"]+)": .*?Problem with given class_path \'([^\']+)\': (.+?)(?: - |$)')
# A value of the wrong type: jsonargparse names the types by their Python reprs (for an optional
# one, every subtype it tried with the error of each), then the value; older versions word a bad
# Literal "Cannot take a Union of no types", without the value. Said from the declaration instead.
TYPE_PROBLEM = re.compile(
    r'Parser key "([^"]+)": (?:Does not validate against any of the Union subtypes|Expected an? |Cannot take a '
    r"Union of no types).*?(?:(?:Given|Got) value: (.*))?$"
)
# A value outside a restricted type (PositiveInt): the value, or what int() or float() said of it.
RESTRICTION_PROBLEM = re.compile(
    r'Parser key "([^"]+)": Not of type \w+: (?:(.*?) does not conform to restriction .*|invalid literal for '
    r"int\(\) with base 10: '(.*)'|could not convert string to float: '(.*)')$"
)


def debugging() -> bool:
    """Whether POLYDIFF_DEBUG asks for full tracebacks: any value but empty, 0, false or no."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


# FloatingPointError: a non-finite training loss (DiffusionTask stops the run with the step).
USER_ERRORS = (FileNotFoundError, ValueError, KeyError, RuntimeError, OSError, FloatingPointError)
# Raised by bad input and by bugs alike (torch's own checks, a missing key), so their line says
# how to see where they came from.
AMBIGUOUS_ERRORS = (KeyError, RuntimeError)
# What a process of a multi-process run (DDP) is told by its collective backend when another process
# of the run ended: that one's error is the run's; this one's traceback names only the socket.
PEER_GONE = re.compile(r"Connection (?:closed|reset) by peer")


@contextmanager
def user_errors(prog: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Ends an error a user can cause (missing file, bad value; ``USER_ERRORS`` and ``also``) with
    one line on stderr and exit code 1, instead of a traceback; Ctrl-C with one line and 130, as a
    shell counts it. With POLYDIFF_DEBUG=1 either propagates as it is."""
    try:
        yield
    except KeyboardInterrupt:
        if debugging():
            raise
        print(f"{prog}: interrupted by Ctrl-C", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except (*USER_ERRORS, *also) as error:
        if debugging():
            raise
        if isinstance(error, RuntimeError) and PEER_GONE.search(str(error)) and _one_of_several_processes():
            ended = "another process of the run stopped (its own error says why), so did this one"
            print(f"{prog}: error: {ended}", file=sys.stderr)
            raise SystemExit(1) from None
        where = f" ({DEBUG_ENV}=1 shows where it came from)" if isinstance(error, AMBIGUOUS_ERRORS) else ""
        print(f"{prog}: error: {type(error).__name__}: {error}{where}", file=sys.stderr)
        raise SystemExit(1) from None


def _one_of_several_processes() -> bool:
    """Whether this process is one of a multi-process run: launched as a rank (Lightning's launcher
    and torchrun set these) or in a process group."""
    if any(name in os.environ for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE")):
        return True
    distributed = sys.modules.get("torch.distributed")  # not imported here: evaluate runs without torch
    return distributed is not None and distributed.is_available() and distributed.is_initialized()


class Terminated(SystemExit):
    """Raised by ``ends_on_sigterm``'s handler: SIGTERM asked the command to stop."""


@contextmanager
def ends_on_sigterm(prog: str) -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a scheduler) ends a command as Ctrl-C does, unwinding, so that
    its output is left as it was (Python's default would end it there and then, leaving its hidden
    partial file behind), with one line and 143. Not for the Lightning commands: Lightning calls a
    handler found here from its own, which stops a fit at the end of its step."""
    if threading.current_thread() is not threading.main_thread():  # the only thread that may set handlers
        yield
        return
    main_pid = os.getpid()

    def stop(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:  # a forked worker, which its pool ends by SIGTERM: as it would end
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated(128 + signal.SIGTERM)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except Terminated:
        print(f"{prog}: stopped by SIGTERM", file=sys.stderr)  # not in the handler: it may interrupt a write
        raise
    finally:
        signal.signal(signal.SIGTERM, before)


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse ``type``: a number of ``kind`` above 0 (a count, a budget, an interval), so that
    argparse refuses -1 in one line rather than the script wrapping or looping on it."""

    def parse(text: str) -> int | float:
        value = kind(text)  # argparse reports a ValueError here as an invalid value
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"  # argparse names the type in its message
    return parse


@contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Shows a warning as one line, ``prog: warning: ...``, not with the file and source line that
    raised it (with POLYDIFF_DEBUG=1, as Python shows it)."""
    if debugging():
        yield
        return
    # The format, not ``showwarning``: a replaced ``showwarning`` would also take the warnings that
    # ``warnings.catch_warnings(record=True)`` (pytest.warns) records.
    formatted = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None) -> str:
        return f"{prog}: warning: {message}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = formatted


class OneLineErrors:
    """A jsonargparse parser mixin: a bad option, value or type ends with one line on stderr and exit
    code 2, not the whole usage (with POLYDIFF_DEBUG=1, jsonargparse's own report)."""

    def error(self, message: str, ex: Exception | None = None, help_for: str | None = None):
        """``help_for``: the command whose ``--help`` lists the options (default: this parser's)."""
        if not self.exit_on_error or debugging():
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        message = " ".join(message.split())
        problem = CLASS_PATH_PROBLEM.match(message)
        if problem:
            message = "{}: {}: {}".format(*problem.groups())
        typed = TYPE_PROBLEM.match(message) or RESTRICTION_PROBLEM.match(message)
        expected = typed and self._expected(typed.group(1))
        if expected:
            key, *values = typed.groups()
            value = next((value for value in values if value), None)
            message = f"--{key}{f' {value}' if value else ''}: expected {expected}"
        sys.stderr.write(f"{prog}: error: {message} (options: {help_for or prog} --help)\n")
        self.exit(2)

    def _expected(self, key: str) -> str | None:
        """The type of option ``key`` in words, from its declaration; None where it has none here."""
        action = next((action for action in self._actions if action.dest == key), None)
        typehint = getattr(action, "_typehint", None)
        return None if typehint is None else type_in_words(typehint)


class CommandParser(OneLineErrors, ArgumentParser):
    """The parser of ``polydiff sample`` and ``polydiff evaluate``. Options are taken by their whole
    names only: an option given is refused where it cannot matter, even at its default value, and
    argparse's prefixes (``--step`` for ``--steps``) would pass unseen by that check."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)
