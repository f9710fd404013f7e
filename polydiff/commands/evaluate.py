"""``polydiff evaluate``: MOSES metrics of a file of samples, a table, metrics.json and plots."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

from jsonargparse import ActionConfigFile
from jsonargparse.typing import PositiveInt
from rich.console import Console

from polydiff import __version__
from polydiff.chem.metrics import DEFAULT_KS, evaluate
from polydiff.chem.reference import reference_stats, training_set
from polydiff.chem.report import metrics_table, write_report
from polydiff.commands import CommandParser, ends_on_sigterm, one_line_warnings, user_errors
from polydiff.data.files import bundled_moses_path, bundled_split, is_bundled, is_repeat_unit_line
from polydiff.types import Kind
from polydiff.utils.cache import file_digest
from polydiff.utils.devices import resolve_device
from polydiff.utils.files import (
    MOLECULE_COLUMNS,
    existing_file,
    is_csv,
    is_stdin,
    is_title,
    iter_smiles,
    molecule_column,
    read_smiles,
    undecodable,
)
from polydiff.utils.parallel import default_jobs, progress_bars


def read_samples(path: str | Path, smiles_column: str = "SMILES") -> list[str]:
    """Reads generated samples, one per line, keeping empty lines (they count as invalid samples, and
    stderr says how many).
    A line file's title lines (``SMILES``, as RDKit's ``SmilesWriter`` writes one, ``canonical_smiles``;
    one per shard where shards were joined) and its comment lines (``#``, as ``polydiff sample
    --prompt_file`` takes them; no SMILES starts so) are no samples.

    Args:
        path: a ``.smi``/``.txt`` file (the first whitespace-separated field of each line) or a
            ``.csv`` file with a header, optionally gzipped (``.gz``).
        smiles_column: the CSV column holding the samples.

    Returns:
        One string per sample.
    """
    if not is_stdin(path):
        existing_file(path, "samples file")
    lines = read_smiles(path, smiles_column, keep_empty=True)
    titles = [i for i, line in enumerate(lines) if is_title(line)] if not is_csv(path) else []
    if titles:
        # A title, not a sample (no molecule is written so): scored as one it would be an invalid sample.
        first = f"line {titles[0] + 1} ({lines[titles[0]]!r})"
        said = f"{len(titles)} lines read as titles ({first}, ...), not samples"
        if len(titles) == 1:
            said = f"{first} read as a title, not a sample"
        print(f"polydiff: {path}: {said}", file=sys.stderr)
        lines = [line for line in lines if not is_title(line)]
    comments = sum(line.startswith("#") for line in lines) if not is_csv(path) else 0
    if comments:
        print(f"polydiff: {path}: {_count(comments, 'comment line')} (#) skipped, not samples", file=sys.stderr)
        lines = [line for line in lines if not line.startswith("#")]
    # A line that is not UTF-8 is no molecule: an invalid sample, like an empty one.
    garbled = [undecodable(line) for line in lines]
    samples = ["" if bad else line for line, bad in zip(lines, garbled, strict=True)]
    if not any(samples):
        raise ValueError(f"samples file {path} has no samples")
    # Said, not silent: a blank line left at the end of a file lowers validity too.
    if any(garbled):
        bad = sum(garbled)
        print(f"polydiff: {path}: {_count(bad, 'line')} not UTF-8 {_as_invalid(bad)}", file=sys.stderr)
    empty = lines.count("")
    if empty:
        at_end = next(i for i, line in enumerate(reversed(lines)) if line)  # one is not empty
        where = f" ({at_end} at the end of the file)" if at_end else ""
        cells = _count(empty, f"empty {smiles_column} cell" if is_csv(path) else "empty line")
        print(f"polydiff: {path}: {cells}{where} {_as_invalid(empty)}", file=sys.stderr)
    return samples


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _as_invalid(count: int) -> str:
    return "counted as an invalid sample" if count == 1 else "counted as invalid samples"


KIND_LINES = 1_000  # the lines a file's kind is judged by


def _warn_of_another_kind(lines: Iterable[str], what: str, kind: Kind) -> None:
    """A reference of repeat units for molecules (RDKit reads ``*`` as an atom), or of molecules
    for repeat units, gives numbers without an error, and not the ones meant: said, judged by its
    first ``KIND_LINES`` lines that are not empty. (Samples of the other kind get a note from
    ``evaluate``, judged by the valid ones.)"""
    first = list(islice(filter(None, lines), KIND_LINES))
    units = sum(map(is_repeat_unit_line, first))
    if kind == "molecule" and units > len(first) / 2:
        warnings.warn(
            f"{what}: {units:,} of its first {len(first):,} lines are polymer repeat units (two *), "
            "and the samples are scored as molecules: repeat units take --kind polymer",
            stacklevel=2,
        )
    elif kind == "polymer" and units < len(first) / 2:
        warnings.warn(
            f"{what}: {units:,} of its first {len(first):,} lines are polymer repeat units (two *), "
            "and the samples are scored as repeat units: molecules take --kind molecule",
            stacklevel=2,
        )


def resolve(value: str | None, option: str, split: str, default_on: bool) -> Path | None:
    """The file behind the reference option ``option``: a path, ``moses`` (the bundled MOSES ``split``),
    ``none``, or None (the default)."""
    if value is None:
        return bundled_moses_path(split) if default_on else None
    if value.lower() == "none":
        return None
    if value.lower() == "moses":
        return bundled_moses_path(split)
    return existing_file(value, f"--{option}")


def evaluate_samples(
    samples: str,
    output: str,
    reference: str | None = None,
    train: str | None = None,
    test_scaffolds: str | None = None,
    kind: Kind = "molecule",
    n_jobs: PositiveInt | None = None,
    device: str | None = None,
    smiles_column: str | None = None,
) -> dict[str, float]:
    """MOSES metrics of generated samples: prints a table and writes metrics.json, properties.png, molecules.png.

    The bundled MOSES sets' reference statistics ship with polydiff; those of other files are
    computed on first use and cached (``POLYDIFF_CACHE_DIR``, default ``~/.cache/polydiff``).

    Args:
        samples: generated molecules, one per line (``.smi``/``.txt``, or ``.csv``; ``.gz`` allowed),
            or ``-`` for those piped in (``polydiff sample --output - | polydiff evaluate --samples -``).
        output: folder for metrics.json, inputs.json (what the metrics are of), properties.png and
            molecules.png.
        reference: test molecules for FCD/SNN/Frag/Scaf/Test and the property distances: a file,
            ``moses`` or ``none``; default: the bundled MOSES test set for molecules, none for polymers.
        train: training molecules for Novelty: a file, ``moses`` or ``none``; default: the bundled
            MOSES training set for molecules, none for polymers.
        test_scaffolds: scaffold test molecules for the /TestSF metrics: a file, ``moses`` (the
            bundled MOSES scaffold test set) or ``none`` (the default).
        kind: ``molecule`` (SMILES) or ``polymer`` (PSMILES; adds polymer_valid, and compares
            repeat units as canonical PSMILES).
        n_jobs: worker processes for RDKit; default: every core.
        device: torch device for ChemNet and the similarity search; default: CUDA when available.
        smiles_column: the column of a CSV samples file; default: ``SMILES``, or ``PSMILES``
            where it has none (as reference and training CSVs are read), in any case; for
            ``--kind polymer``, ``PSMILES`` first.

    Returns:
        The metrics, by MOSES key name.
    """
    device = str(resolve_device(device))  # checked before any work
    if Path(output).exists() and not Path(output).is_dir():
        raise ValueError(f"--output {output} is a file: give the folder to write the report into")
    # Before any work, which a folder that cannot be made would lose at the end.
    if not Path(output).exists():
        existing = next(folder for folder in Path(output).absolute().parents if folder.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK)):
            raise ValueError(f"--output {output}: cannot make the folder in {existing}")
    if smiles_column is not None and not is_csv(samples):
        raise ValueError(f"--smiles_column {smiles_column!r} names a column of a CSV samples file: {samples} is none")
    if not is_stdin(samples):
        existing_file(samples, "samples file")
    elif sys.stdin.isatty():  # it would wait for lines typed in, without a word
        raise ValueError(f"--samples {samples} reads samples piped in, and none are (polydiff sample --output - | ...)")
    shown = "stdin" if is_stdin(samples) else samples  # as the report names the samples
    molecules = kind == "molecule"
    paths = {
        "test": resolve(reference, "reference", "test", molecules),
        "train": resolve(train, "train", "train", molecules),
        "test_scaffolds": resolve(test_scaffolds, "test_scaffolds", "test_scaffolds", False),
    }
    for option, path in zip(("reference", "train", "test_scaffolds"), paths.values(), strict=True):
        if not molecules and path is not None and is_bundled(path):  # every unit "novel", an FCD of 50
            raise ValueError(f"--{option} moses: MOSES holds molecules; repeat units are compared with a file of units")
    # A table of both holds monomers beside their repeat units: a polymer's samples are the units.
    columns = MOLECULE_COLUMNS if molecules else tuple(reversed(MOLECULE_COLUMNS))
    column = smiles_column or molecule_column(samples, columns)
    lines = read_samples(samples, column)
    read_by = {}  # each reference file's column, in the samples' order of preference
    for option, (split, path) in zip(("reference", "train", "test_scaffolds"), paths.items(), strict=True):
        if path is None:
            continue
        try:  # before the statistics of any
            read_by[split] = molecule_column(path, columns)
        except ValueError as error:
            raise ValueError(f"--{option} {error}") from None
        if not is_bundled(path):
            _warn_of_another_kind(iter_smiles(path, read_by[split]), f"--{option} {path}", kind)
    n_jobs = n_jobs or default_jobs()
    with progress_bars(sys.stderr.isatty()) as progress:
        test, scaffolds = (
            reference_stats(paths[split], n_jobs, device, progress, column=read_by[split]) if paths[split] else None
            for split in ("test", "test_scaffolds")
        )
        train_set = None
        if paths["train"]:
            # MOSES's training SMILES are canonical: compared as written, as MOSES compares them.
            as_stored = is_bundled(paths["train"])
            train_set = training_set(
                paths["train"], n_jobs, progress, polymer=not molecules, as_stored=as_stored, column=read_by["train"]
            )
        result = evaluate(lines, test, train_set, scaffolds, kind, DEFAULT_KS, n_jobs, device, progress)
        replacing = (Path(output) / "metrics.json").is_file()
        inputs = {
            "samples": shown if is_stdin(samples) else _described(Path(samples)),
            "kind": kind,
            "num_samples": len(lines),
            "num_valid": round(result.metrics["valid"] * len(lines)),
            # A polymer's metrics after validity are of its polymer-valid samples.
            **({} if molecules else {"num_polymer_valid": len(result.valid)}),
            "reference": _described(paths["test"]),
            "train": _described(paths["train"]),
            "test_scaffolds": _described(paths["test_scaffolds"]),
            "polydiff": __version__,
        }
        files = write_report(result, test, output, inputs)
    console = Console()
    valid = "valid" if molecules else "polymer-valid"  # the molecules the metrics after validity are of
    console.print(
        metrics_table(result.metrics, f"{shown}: {_count(len(lines), 'sample')}, {len(result.valid)} {valid}")
    )
    for note in [*result.notes, *_unread_hint(samples, column, lines, result.metrics["valid"])]:
        console.print(f"note: {note}", style="yellow")
    replaced = " (replacing the report that was there)" if replacing else ""
    print(f"polydiff: wrote {', '.join(str(path) for path in files.values())}{replaced}")
    return result.metrics


def _described(path: Path | None) -> dict[str, str] | str | None:
    """A file the metrics are of, for inputs.json: ``moses test`` for a bundled set, else its path
    and SHA-256 (a reference file changed later gives other numbers); None where none was used."""
    if path is None:
        return None
    bundled = bundled_split(path)
    if bundled is not None:
        return f"moses {bundled}"
    return {"path": str(path.resolve()), "sha256": file_digest(path)}


def _unread_hint(path: str, column: str, samples: list[str], valid: float) -> list[str]:
    """Where no sample parses, how the file may have been misread: a table's column that holds no
    SMILES, a table named as a line file (no SMILES holds a comma), or a line file whose first
    field is not the SMILES."""
    if valid:
        return []
    if is_csv(path):
        return [f"no sample parses: its column {column!r} holds no SMILES? (--smiles_column names another)"]
    if any("," in sample for sample in samples):
        return ["no sample parses, and the lines hold commas: a table is read by its columns when named .csv"]
    return ["no sample parses: a line file is read by the first field of each line (split at whitespace)"]


def main(args: list[str] | None = None) -> None:
    """Runs ``polydiff evaluate`` on ``args``; user errors end with one line on stderr and exit code 1."""
    with user_errors("polydiff evaluate"), ends_on_sigterm("polydiff evaluate"), one_line_warnings("polydiff evaluate"):
        parser = CommandParser(prog="polydiff evaluate", description=evaluate_samples.__doc__.splitlines()[0])
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML file of these options")
        parser.add_function_arguments(evaluate_samples, as_positional=False)
        options = parser.parse_args(args).as_dict()
        options.pop("config", None)
        evaluate_samples(**options)
