"""Reading line files of molecules: one SMILES (or PSMILES) per line, or a CSV column; gzipped or not."""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# A file with no suffix is read as a line file too (``polydiff sample --output samples`` writes one).
SUFFIXES = (".txt", ".smi", ".smiles", ".csv")
# Files are decoded with errors="surrogateescape": an undecodable byte becomes one of these.
UNDECODED_BYTE = re.compile("[\udc80-\udcff]")
# The first field of a line file's title line, as tools write one: RDKit's SmilesWriter heads its
# files "SMILES Name", others write "canonical_smiles", "PSMILES". No SMILES holds "smiles" in any
# case (there is no atom m, M or Sm outside brackets), so no molecule is read as one.
TITLE_FIELD = re.compile(r"[\w.,\-]*smiles[\w.,\-]*", re.IGNORECASE | re.ASCII)  # "SMILES,Name" too


def iter_smiles(path: str | Path, smiles_column: str = "SMILES") -> Iterator[str]:
    """Streams one molecule per line, stripped ("" for an empty line), without loading the file.

    Args:
        path: a ``.txt``/``.smi`` file (first whitespace-separated field of each line) or a
            ``.csv`` file with a header, optionally gzipped (``.gz``).
        smiles_column: the CSV column holding the SMILES.

    Yields:
        The SMILES strings, in file order.
    """
    for smiles, _ in iter_rows(path, smiles_column):
        yield smiles


def iter_rows(
    path: str | Path, smiles_column: str = "SMILES", value_columns: Sequence[str] = ()
) -> Iterator[tuple[str, list[str]]]:
    """Streams each line's SMILES (as ``iter_smiles``) with the text of its ``value_columns``
    (CSV files only; "" where a row leaves one empty).

    Raises:
        ValueError: for value columns of a file that is not a CSV, or columns it lacks.
    """
    path = _checked(path)
    with _opened(path) as text, _read_errors_named(path):
        if is_csv(path):
            # A cell of any size is read (and screened as too long): csv's default limit, 131,072
            # characters, would end the run at one runaway line.
            csv.field_size_limit(2**31 - 1)
            # csv.reader, not DictReader: DictReader drops blank rows, and every later line number
            # with them. Strict: a quote left open would otherwise swallow every line after it
            # into one cell, silently.
            reader = csv.reader(text, strict=True)
            header = next(reader, [])
            _check_columns(path, header, [smiles_column, *value_columns])
            at = [header.index(column) for column in (smiles_column, *value_columns)]
            try:
                for row in reader:
                    smiles, *values = (row[i].strip() if i < len(row) else "" for i in at)
                    yield smiles, values
            except csv.Error as error:
                raise ValueError(f"{path}, line {reader.line_num}: {error} (a quote left open?)") from None
        elif value_columns:
            raise ValueError(f"{path}: columns {', '.join(value_columns)} need a .csv file with a header")
        else:
            for line in text:
                fields = line.split(maxsplit=1)
                # A comment is kept whole: a skipped one is then quoted as written, not as "#".
                yield (line.strip() if fields and fields[0].startswith("#") else fields[0] if fields else ""), []


def is_title(line: str) -> bool:
    """Whether a line file's line (its first field) is a title, ``SMILES`` or the like, not a molecule."""
    return TITLE_FIELD.fullmatch(line) is not None


def undecodable(line: str) -> bool:
    """Whether a line read by this module held bytes that are not UTF-8."""
    return UNDECODED_BYTE.search(line) is not None


def is_csv(path: str | Path) -> bool:
    """Whether a data file is a CSV table (``.csv`` or ``.csv.gz``), not one SMILES per line."""
    return _suffix(Path(path)) == ".csv"


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (optionally gzipped); [] for a line file."""
    path = _checked(path)
    if not is_csv(path):
        return []
    with _opened(path) as text, _read_errors_named(path):
        return next(csv.reader(text), [])


# A reference or training CSV is read by the first of these columns it has (PSMILES: polymer corpora).
MOLECULE_COLUMNS = ("SMILES", "PSMILES")


def molecule_column(path: str | Path, columns: Sequence[str] = MOLECULE_COLUMNS) -> str:
    """The column of a reference or training CSV that holds its molecules: the first of ``columns``
    (``MOLECULE_COLUMNS``, or another order of them) it has, in any case where none is written as
    named ("SMILES" for a line file, which has no columns).

    Raises:
        ValueError: a CSV with none of them.
    """
    if not is_csv(path):
        return "SMILES"
    header = csv_columns(path)
    # Exactly as named, else in another case (``smiles``, as many tables write it).
    found = next((column for column in columns if column in header), None)
    found = found or _in_another_case(columns, header)
    if found is None:
        raise ValueError(f"{path}: no column {' or '.join(map(repr, columns))} (columns: {header})")
    return found


def is_stdin(path: str | Path) -> bool:
    """Whether a samples file is the standard input (``-``, ``/dev/stdin``): lines piped in, as
    ``polydiff sample --output -`` writes them."""
    return str(path) in ("-", "/dev/stdin")


def _opened(path: Path) -> io.TextIOWrapper:
    """The file read as UTF-8 text, unzipped if it ends in ``.gz``. A leading byte-order mark
    (spreadsheets write one in "CSV UTF-8") is dropped, not read into the first line or column
    name. Undecodable bytes become lone surrogates rather than an exception: the line is then
    skipped as "not UTF-8" (``polydiff.data.screening``) instead of ending the run."""
    if is_stdin(path):  # read as a line file; left open for the process
        raw = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115
    elif path.suffix.lower() == ".gz":
        raw = gzip.open(path, "rb")  # noqa: SIM115
    else:
        raw = open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


@contextmanager
def _read_errors_named(path: Path) -> Iterator[None]:
    """A damaged gzip file (cut short, or no gzip at all) fails naming the file."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path}: not a whole gzip file ({error})") from None


def existing_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path, where it names a file; ``what`` names it in the error (``data file``, ``--reference``).

    Raises:
        FileNotFoundError: nothing is there, or a folder is.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{what} {path} is a folder: give a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _checked(path: str | Path) -> Path:
    if is_stdin(path):  # a samples file (``existing_file`` refuses it for every other)
        return Path(path)
    path = existing_file(path, "data file")
    if not _readable_name(path):
        raise ValueError(f"{path}: expected one of {', '.join(SUFFIXES)} or no suffix (optionally .gz)")
    return path


def check_samples_name(path: str | Path, option: str) -> None:
    """Refuses a name for written samples that polydiff's readers would refuse (``samples.sdf``:
    SMILES lines under a molfile's name), as ``option`` gave it."""
    if not _readable_name(Path(path)):
        raise ValueError(
            f"{option} {path}: samples are SMILES lines, written under a name in {', '.join(SUFFIXES)} or none "
            "(optionally .gz), as polydiff evaluate reads them"
        )


def _readable_name(path: Path) -> bool:
    """Whether polydiff reads a line file of this name: one of ``SUFFIXES`` or none, optionally .gz."""
    return _suffix(path) in (*SUFFIXES, "")


def _suffix(path: Path) -> str:
    """The suffix that names the format, lower-cased (``.SMI``, ``.smi.gz``: ``.smi``)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _check_columns(path: Path, header: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [column for column in wanted if column not in header]
    if missing:
        hint = _case_hint(missing[:1], header)
        if missing[0] == "SMILES" and "PSMILES" in header:  # a polymer table, read without naming its column
            hint = "; its repeat units are read with smiles_column PSMILES (--data.smiles_column in polydiff fit)"
        raise ValueError(f"{path}: no column {missing[0]!r} (columns: {list(header)}){hint}")


def _in_another_case(wanted: Sequence[str], header: Sequence[str]) -> str | None:
    """The column of ``header`` that is the first of ``wanted`` written in another case, if any."""
    return next((near for column in wanted for near in header if near.lower() == column.lower()), None)


def _case_hint(wanted: Sequence[str], header: Sequence[str]) -> str:
    """``; 'smiles' differs only in case`` where a column of ``header`` is one of ``wanted`` but for
    its case: a column named by an option is matched exactly."""
    near = _in_another_case(wanted, header)
    return f"; {near!r} differs only in case" if near else ""


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


def written_in_place(path: str | Path) -> bool:
    """Whether ``path`` is written as it is, not through ``partial_path``: a file that is not a
    regular one (``/dev/null``, a named pipe, a terminal), or a link (``/dev/stdout``), which moving
    a file into its place would replace: a device node, or the link, by a file of samples."""
    path = Path(path)
    return path.is_symlink() or (path.exists() and not path.is_file() and not path.is_dir())


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written until it is whole: hidden beside it, then moved into its place,
    so that a run stopped midway leaves ``path`` as it was, never cut short."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def writing_path(path: str | Path) -> Path:
    """Where ``path`` is written: its ``partial_path``, or ``path`` itself where it is
    ``written_in_place``."""
    return Path(path) if written_in_place(path) else partial_path(path)


def make_folder(folder: Path, named: str) -> None:
    """Makes ``folder`` and its parents, or raises one line that names it as ``named`` (the option
    or variable that gave it): an OS error alone names neither."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = "a file is in the way" if isinstance(error, (FileExistsError, NotADirectoryError)) else error.strerror
        raise OSError(f"{named}: cannot be made a folder ({reason})") from error
    if not os.access(folder, os.W_OK):
        raise OSError(f"{named}: the folder is not writable")


def open_samples(partial: Path, target: str | Path, polymer: bool) -> TextIO:
    """A text stream into ``partial`` for samples that will be named ``target``, written as
    polydiff's readers take such a name: gzip-compressed where it ends in ``.gz``, and headed by its
    column (``SMILES``, or ``PSMILES`` for repeat units) where it is a CSV."""
    # The caller closes it (a ``with`` block, or the prediction writer at predict's end).
    stream = gzip.open(partial, "wt") if str(target).endswith(".gz") else partial.open("w")  # noqa: SIM115
    if is_csv(target):
        stream.write(f"{MOLECULE_COLUMNS[polymer]}\n")
    return stream
