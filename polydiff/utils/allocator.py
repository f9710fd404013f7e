"""The memory allocator of polydiff's commands: jemalloc where the system has it.

A training step frees hundreds of megabytes of tensors of one set of shapes and the next step asks
for blocks of other shapes (batches are bucketed by length). glibc's malloc reuses those freed
blocks poorly and keeps them, so a 10-minute fit of the default recipe grew to 3.5 GB, nearly all
of it free heap (``malloc_trim`` took the main process back to ~750 MB at any step); handing the
pages back instead (a lower mmap or trim threshold) made the steps 30-60% slower. jemalloc serves
each size from its own size class and reuses what a step freed for the next step's blocks, so the
same fit stays near 1.3 GB at the same speed (docs/quality.md). Told to keep the pages it frees
(``dirty_decay_ms:-1``), it gives them to the next step without page faults, as glibc does.

jemalloc must be loaded before anything allocates, so ``polydiff`` runs itself again under
``LD_PRELOAD`` (the way PyTorch's CPU launcher, ``torch.backends.xeon.run_cpu``, loads it). It is
not on PyPI; Debian and Ubuntu ship it as ``libjemalloc2``. ``POLYDIFF_ALLOCATOR`` chooses:
unset, jemalloc where found; ``jemalloc``, jemalloc or a one-line error; ``system``, the C
library's malloc. An ``LD_PRELOAD`` the user set is left as it is.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping

CHOICE = "POLYDIFF_ALLOCATOR"
CHOICES = ("jemalloc", "system")
KEEP_PAGES = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def jemalloc_environment(environ: Mapping[str, str], find: Callable[[], str | None]) -> dict[str, str] | None:
    """The environment to run again in, under jemalloc (``find()``: the library, or None where the
    system has none; asked only when needed), or None to run on as this process is.

    Raises:
        SystemExit: for a choice other than ``CHOICES``, or jemalloc asked for and not found.
    """
    choice = environ.get(CHOICE)
    if choice not in (None, *CHOICES):
        raise SystemExit(f"{CHOICE}={choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "system" or environ.get("LD_PRELOAD"):
        return None  # an LD_PRELOAD already set is the user's, or ours from the run before this one
    library = find()
    if library is None and choice == "jemalloc":
        raise SystemExit(f"{CHOICE}=jemalloc, but this system has no libjemalloc (Debian and Ubuntu: libjemalloc2)")
    if library is None:
        return None
    return {**environ, "LD_PRELOAD": library, "MALLOC_CONF": environ.get("MALLOC_CONF", KEEP_PAGES)}


def run_under_jemalloc() -> None:
    """Runs this process's command line again under jemalloc (``jemalloc_environment``), or returns."""
    if not sys.platform.startswith("linux"):
        return
    environment = jemalloc_environment(os.environ, lambda: ctypes.util.find_library("jemalloc"))
    if environment is not None:
        sys.stdout.flush()
        os.execve(sys.executable, sys.orig_argv, environment)
