"""Process pools and rich progress bars for per-molecule work (RDKit parsing, tokenizing)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
R = TypeVar("R")
INLINE_BELOW = 200  # starting worker processes costs more than this many molecules


def ignore_ctrl_c(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: Ctrl-C, which a terminal sends to every process of the
    group, is the main process's to act on (a worker would quit, and its loader fail)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_jobs() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress display on stderr; disabled, its bars draw nothing.

    Args:
        enabled: draw the bars (they are also hidden when stderr is not a terminal).

    Returns:
        A context manager yielding the ``Progress``.
    """
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    columns += (TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not enabled) as progress:
        yield progress


def advancer(progress: Progress | None, description: str, total: int) -> Callable[[int], None]:
    """A callback that advances a new bar of ``progress`` (or does nothing without one)."""
    if progress is None:
        return lambda done: None
    task = progress.add_task(description, total=total)
    return lambda done: progress.advance(task, done)


def parallel_map(
    function: Callable[[T], R],
    items: Sequence[T],
    n_jobs: int = 1,
    progress: Progress | None = None,
    description: str = "",
    inline_below: int = INLINE_BELOW,
    initializer: Callable[[], None] | None = None,
) -> list[R]:
    """``[function(item) for item in items]`` over ``n_jobs`` processes, in order.

    Args:
        function: a picklable (module-level) function.
        items: its arguments.
        n_jobs: worker processes; 1 runs in this process.
        progress: where to draw a bar, if anywhere.
        description: the bar's label.
        inline_below: run in this process when there are fewer items (worth lowering when each is slow).
        initializer: called once in every process that runs ``function`` (e.g. to silence RDKit's log).

    Returns:
        The results, in the order of ``items``.
    """
    advance = advancer(progress, description, len(items))
    if n_jobs <= 1 or len(items) < inline_below:
        if initializer is not None:
            initializer()
        results = []
        for item in items:
            results.append(function(item))
            advance(1)
        return results
    chunksize = max(1, min(1000, len(items) // (n_jobs * 16)))
    results = []
    with multiprocessing.get_context().Pool(n_jobs, initializer=initializer) as pool:
        for result in pool.imap(function, items, chunksize=chunksize):
            results.append(result)
            advance(1)
    return results
