"""Which corpus lines are fit to train on, and why the others are skipped.

Real corpora hold blank lines, comments, bytes that are not UTF-8, SMILES that RDKit cannot
parse, lines longer than ``max_length`` and atoms the vocabulary lacks. Each such line is
skipped for one named reason (``REASONS``, checked in that order) and counted, so a run says
what it left out; with ``data.on_bad_line: error`` the first one stops the run instead,
naming the file and line. A long molecule is skipped, never truncated: a truncated SMILES is
another molecule.
"""

from __future__ import annotations

from typing import Literal

from polydiff.data.files import is_repeat_unit_line
from polydiff.utils.files import undecodable

OnBadLine = Literal["skip", "error"]
REASONS = (
    "empty",
    "comment",
    "not UTF-8",
    "not a repeat unit (two *)",
    "invalid SMILES",
    "not convertible",
    "unknown token",
    "too long",
    "non-numeric value",  # a condition column's cell that is no number and no missing value (``1.5 K``)
)


def screen(line: str, kind: str = "molecule") -> str | None:
    """Why a line cannot be trained on before it is tokenized, or None when it can.

    RDKit's parse errors are not silenced here: callers screening many lines silence them once.

    Args:
        line: one stripped line of a corpus.
        kind: ``molecule``, or ``polymer`` (repeat units need exactly two ``*``).

    Returns:
        One of the first five ``REASONS``, or None.
    """
    from rdkit import Chem  # here, not at the top: RDKit loads only where lines are screened

    if not line:
        return "empty"
    if line.startswith("#"):
        return "comment"
    if undecodable(line):
        return "not UTF-8"
    if kind == "polymer" and not is_repeat_unit_line(line):
        return "not a repeat unit (two *)"
    if Chem.MolFromSmiles(line) is None:
        return "invalid SMILES"
    return None


def summary(counts: dict[str, int], examples: dict[str, list]) -> str:
    """``3 invalid SMILES (e.g. line 12: 'C1CC('), 1 empty`` for the skipped lines of a file."""
    parts = []
    for reason in REASONS:
        if counts.get(reason):
            example = examples.get(reason)
            where = f" (e.g. line {example[0]}: {quoted(example[1])})" if example else ""
            parts.append(f"{counts[reason]:,} {reason}{where}")
    return ", ".join(parts)


def quoted(line: str, keep: int = 60) -> str:
    """The line quoted, its middle cut where it is longer than ``keep``: its start and its end both
    show why it was skipped (an unclosed ring at the end, a third ``*``)."""
    if len(line) <= keep:
        return repr(line)
    return f"{line[: keep // 2]!r} ... {line[-keep // 2 :]!r} ({len(line)} characters)"
