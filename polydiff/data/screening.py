"""Which corpus lines are fit to train on, and why the others are skipped.

Real corpora hold blank lines, comments, a title line (``SMILES Name``), bytes that are not
UTF-8, SMILES that RDKit cannot parse, lines longer than ``max_length`` and atoms the vocabulary
lacks. Each such line is
skipped for one named reason (``REASONS``, checked in that order) and counted, so a run says
what it left out; with ``data.on_bad_line: error`` the first one stops the run instead,
naming the file and line. A long molecule is skipped, never truncated: a truncated SMILES is
another molecule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from polydiff.data.files import is_repeat_unit_line
from polydiff.data.tokenizer import unknown_token_hint
from polydiff.utils.files import is_title, undecodable

OnBadLine = Literal["skip", "error"]
NOT_A_UNIT = "not a repeat unit (two *)"
REASONS = (
    "empty",
    "comment",
    "title line",  # ``SMILES`` (``utils.files.is_title``), as a tool heads a line file
    "not UTF-8",
    NOT_A_UNIT,
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
        kind: ``molecule``, or ``polymer`` (a repeat unit: ``polydiff.chem.molecules.is_polymer``).

    Returns:
        One of the first six ``REASONS``, or None.
    """
    # Here, not at the top: RDKit loads only where lines are screened.
    from rdkit import Chem

    from polydiff.chem.molecules import is_polymer

    if not line:
        return "empty"
    if line.startswith("#"):
        return "comment"
    if is_title(line):
        return "title line"
    if undecodable(line):
        return "not UTF-8"
    if kind == "polymer" and not is_repeat_unit_line(line):  # cheap, before the parse
        return NOT_A_UNIT
    mol = Chem.MolFromSmiles(line)
    if mol is None:
        return "invalid SMILES"
    if kind == "polymer" and not is_polymer(mol):  # *=CC*, **, *C.C*: two *, yet no unit
        return NOT_A_UNIT
    return None


ENCODE_CHUNK = 10_000
Encode = Callable[[list[str]], list]  # lines -> per line its token ids, or why it cannot be used


def screen_lines(
    lines: Sequence[str], kind: str, encode: Encode | None, parse: bool = True, longer_than: int = 0
) -> tuple[list[str], Counter, dict[str, tuple[int, str]]]:
    """A corpus kept as lines, screened as a token cache screens it, without writing the tokens.

    Args:
        lines: the corpus's lines, stripped ("" for an empty one), in file order.
        kind: as in ``screen``.
        encode: the batches' encoder (``MoleculeCollator.encode``), which names the lines too long,
            not convertible or with an unknown token; None leaves those to the batches.
        parse: ``screen`` each line (RDKit's parse included); False for a corpus known to be clean.
        longer_than: encode only the lines of more characters than this (0: every line). A SMILES
            token is at least one character, so a shorter line cannot be too long.

    Returns:
        (the lines kept, in order; the others counted by reason; the first of each reason, as its
        index in ``lines`` and its text).
    """
    reasons = [screen(line, kind) if parse else None if line else "empty" for line in lines]
    if encode is not None:
        checked = [i for i, line in enumerate(lines) if reasons[i] is None and len(line) > longer_than]
        for start in range(0, len(checked), ENCODE_CHUNK):  # the token ids of a chunk at a time, then dropped
            chunk = checked[start : start + ENCODE_CHUNK]
            for i, result in zip(chunk, encode([lines[i] for i in chunk]), strict=True):
                if isinstance(result, str):
                    reasons[i] = result
    dropped, examples = Counter(), {}
    for index, (line, reason) in enumerate(zip(lines, reasons, strict=True)):
        if reason is not None:
            dropped[reason] += 1
            examples.setdefault(reason, (index, line))
    return [line for line, reason in zip(lines, reasons, strict=True) if reason is None], dropped, examples


# The reasons that name a thing, counted in the plural (the others read as "3 (lines) too long").
PLURALS = {"comment": "comments", "title line": "title lines", "non-numeric value": "non-numeric values"}


def summary(counts: dict[str, int], examples: dict[str, list]) -> str:
    """``3 invalid SMILES (e.g. line 12: 'C1CC('), 1 empty`` for the skipped lines of a file."""
    parts = []
    for reason in REASONS:
        if counts.get(reason):
            example = examples.get(reason)
            where = f" (e.g. line {example[0]}: {quoted(example[1])})" if example else ""
            said = PLURALS.get(reason, reason) if counts[reason] > 1 else reason
            parts.append(f"{counts[reason]:,} {said}{where}")
    return ", ".join(parts)


def quoted(line: str, keep: int = 60) -> str:
    """The line quoted, its middle cut where it is longer than ``keep``: its start and its end both
    show why it was skipped (an unclosed ring at the end, a third ``*``)."""
    if len(line) <= keep:
        return repr(line)
    return f"{line[: keep // 2]!r} ... {line[-keep // 2 :]!r} ({len(line)} characters)"


def refuse_bad_line(path: str | Path, reason: str, line_number: int, text: str, tokenizer_name: str) -> None:
    """Stops the run at a bad line (``on_bad_line: error``), naming the file, the line and why."""
    hint = "data.on_bad_line: skip leaves such lines out"
    wider = unknown_token_hint(tokenizer_name) if reason == "unknown token" else ""
    if wider:
        hint = f"{wider}; {hint}"
    raise ValueError(f"{path}, line {line_number}: {reason}: {quoted(text)} ({hint})")
