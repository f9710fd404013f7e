"""The bundled MOSES sets, and what makes a corpus line a polymer repeat unit.

Reading any line file (``read_smiles``, ``iter_smiles``) is ``polydiff.utils.files``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MOSES_SPLITS = ("train", "test", "test_scaffolds")


def bundled_moses_path(split: str) -> Path:
    """Path of a bundled MOSES split (``train``, ``test`` or ``test_scaffolds``)."""
    if split not in MOSES_SPLITS:
        raise ValueError(f"unknown MOSES split {split!r}; choose one of {MOSES_SPLITS}")
    return Path(str(resources.files("polydiff.data") / "bundled" / f"{split}.csv.gz"))


def bundled_split(path: str | Path) -> str | None:
    """The MOSES split a path is the bundled file of (``test``, ...), None for any other file."""
    return next((split for split in MOSES_SPLITS if Path(path) == bundled_moses_path(split)), None)


def is_bundled(path: str | Path) -> bool:
    """Whether a path is one of the bundled MOSES sets."""
    return bundled_split(path) is not None


def is_repeat_unit_line(line: str) -> bool:
    """Whether a PSMILES line has exactly two attachment points (``*`` and ``[*:1]`` alike hold one "*")."""
    return line.count("*") == 2
