"""``python -m polydiff``: the same as the ``polydiff`` command."""

from polydiff.cli import main

if __name__ == "__main__":
    main()
