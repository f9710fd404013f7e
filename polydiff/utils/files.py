"""Reading line files of molecules: one SMILES (or PSMILES) per line, or a CSV column; gzipped or not."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

SUFFIXES = (".txt", ".smi", ".csv")


def iter_smiles(path: str | Path, smiles_column: str = "SMILES") -> Iterator[str]:
    """Streams one molecule per line, stripped ("" for an empty line), without loading the file.

    Args:
        path: a ``.txt``/``.smi`` file (first whitespace-separated field of each line) or a
            ``.csv`` file with a header, optionally gzipped (``.gz``).
        smiles_column: the CSV column holding the SMILES.

    Yields:
        The SMILES strings, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: expected one of {', '.join(SUFFIXES)} (optionally .gz)")
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    # Undecodable bytes become lone surrogates rather than an exception: the line is then
    # skipped as "not UTF-8" (``polydiff.data.screening``) instead of ending the run.
    with io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="") as text:
        if suffix == ".csv":
            reader = csv.DictReader(text)
            if smiles_column not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column {smiles_column!r} (columns: {reader.fieldnames})")
            for row in reader:
                yield (row[smiles_column] or "").strip()
        else:
            for line in text:
                yield line.split(maxsplit=1)[0] if line.strip() else ""


def read_smiles(path: str | Path, smiles_column: str = "SMILES", keep_empty: bool = False) -> list[str]:
    """Reads one molecule per line (``iter_smiles``) into a list.

    Args:
        path: a ``.txt``/``.smi`` file or a ``.csv`` file with a header, optionally gzipped.
        smiles_column: the CSV column holding the SMILES.
        keep_empty: keep empty lines as "" (a file of samples, where they count as invalid).

    Returns:
        The SMILES strings, in file order.
    """
    return [s for s in iter_smiles(path, smiles_column) if keep_empty or s]
