"""The ``polydiff`` command (also ``python -m polydiff``).

This module imports nothing heavy, so the process can be set up before torch loads.
"""

import os
import sys

from polydiff import __version__
from polydiff.utils.allocator import run_under_jemalloc


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # at once: the command line's parser needs Lightning, seconds to import
        print(f"polydiff {__version__}")
        return
    # OpenMP threads that sleep rather than spin while they wait. torch's default (spinning)
    # made every step several times slower on a 2-core machine with any other load on it;
    # libgomp reads this once, when torch is imported. A value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    run_under_jemalloc()  # returns here where it does not run the command again under jemalloc
    from polydiff.commands.plain import run_plain_command

    if run_plain_command(sys.argv[1:]):  # sample, evaluate: before the CLI module, which imports Lightning
        return
    from polydiff.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
