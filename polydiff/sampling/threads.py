"""Threads while decoding on the CPU: the model's calls use torch's threads, the rest one.

Between two model calls a decoder runs hundreds of small tensor operations: gathers of its rows'
states, distributions over a few dozen tokens, the automaton's answers. torch hands any of them
past a size (32,768 elements for most, 2,048 for ``exp`` and ``log``) to its OpenMP threads, and
those threads sleep between operations, as the ``polydiff`` command runs them
(docs/conventions.md).
Waking them took ~60 us per operation on a 2-core VM, ten times the operation itself (a (256, 126)
gather: 62 us on two threads, 5 us on one), so decoding runs its own operations on one thread
and lends the model its threads for each call, where matrix products share the work
(docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from polydiff.sampling.denoiser import Denoiser


class ModelWithThreads:
    """``model`` (a ``Denoiser``) whose calls run on ``threads`` of torch's threads, and then hand
    the count back to what it was; everything else of the model is read through as it is."""

    def __init__(self, model: Denoiser, threads: int) -> None:
        self._model, self._threads = model, threads

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            return method(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._model.encode, *args, **kwargs)

    def encode_incremental(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._model.encode_incremental, *args, **kwargs)

    def draft(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._model.draft, *args, **kwargs)

    def logits_from_hidden(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._model.logits_from_hidden, *args, **kwargs)


def _shares_threads(device: torch.device) -> bool:
    """Whether torch runs on more than one of its threads here (only on the CPU)."""
    return device.type == "cpu" and torch.get_num_threads() > 1


def calls_on_torch_threads(model: Denoiser) -> Denoiser:
    """``model`` whose calls use torch's threads as they are now, on a CPU with more than one
    (``one_thread_between_calls``); elsewhere ``model`` itself."""
    return ModelWithThreads(model, torch.get_num_threads()) if _shares_threads(model.device) else model


@contextmanager
def one_thread_between_calls(device: torch.device) -> Iterator[None]:
    """On the CPU, torch runs on one thread inside the block (the calls of a model from
    ``calls_on_torch_threads`` take their own), and on as many as before after it."""
    if not _shares_threads(device):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
