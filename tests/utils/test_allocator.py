"""polydiff's commands run under jemalloc where the system has it (``polydiff.utils.allocator``)."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from polydiff.utils.allocator import KEEP_PAGES, jemalloc_environment

LIBRARY = "libjemalloc.so.2"


def test_by_default_jemalloc_is_preloaded_where_found_and_keeps_its_pages():
    environment = jemalloc_environment({"PATH": "/bin"}, lambda: LIBRARY)
    assert environment == {"PATH": "/bin", "LD_PRELOAD": LIBRARY, "MALLOC_CONF": KEEP_PAGES}
    assert jemalloc_environment({}, lambda: None) is None  # none on this system: the C library's malloc


def not_asked() -> str:
    raise AssertionError("the library was looked for where no answer could change the outcome")


def test_the_users_settings_are_kept():
    assert jemalloc_environment({"MALLOC_CONF": "narenas:1"}, lambda: LIBRARY)["MALLOC_CONF"] == "narenas:1"
    assert jemalloc_environment({"LD_PRELOAD": "libtcmalloc.so"}, not_asked) is None
    assert jemalloc_environment({"POLYDIFF_ALLOCATOR": "system"}, not_asked) is None


def test_a_choice_that_cannot_be_had_is_refused_with_one_line():
    with pytest.raises(SystemExit, match="choose one of jemalloc, system"):
        jemalloc_environment({"POLYDIFF_ALLOCATOR": "tcmalloc"}, not_asked)
    with pytest.raises(SystemExit, match="has no libjemalloc"):
        jemalloc_environment({"POLYDIFF_ALLOCATOR": "jemalloc"}, lambda: None)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("jemalloc") is None, reason="no jemalloc here"
)
def test_the_command_runs_again_under_jemalloc_once():
    """The process runs its own command line again with jemalloc loaded, and only once."""
    program = (
        "from polydiff.utils.allocator import run_under_jemalloc; run_under_jemalloc(); "
        "print('started'); print('jemalloc' in open('/proc/self/maps').read())"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "POLYDIFF_ALLOCATOR")}
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=environment, check=True)
    assert run.stdout.split() == ["started", "True"]
    system = {**environment, "POLYDIFF_ALLOCATOR": "system"}
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=system, check=True)
    assert run.stdout.split() == ["started", "False"]
