"""Statistics of a reference set (test, scaffold test, train): shipped for the bundled MOSES sets,
computed once and cached on disk for any other file.

A reference set is summarized as MOSES summarizes it (``compute_intermediate_statistics``):
its Morgan fingerprints (for SNN), BRICS fragment and scaffold counts (Frag, Scaf), ChemNet
activation mean and covariance (FCD) and property values (the Wasserstein distances). The
training set is kept as its canonical SMILES (Novelty): a set, or for MOSES's training set,
whose lines are canonical already, the digests of its lines as written.

Computing these for the 176,074 MOSES test molecules takes about 6 minutes on 2 CPU cores
(ChemNet alone about half an hour), so, as MOSES ships its test statistics, polydiff ships
those of the bundled MOSES test sets (``data/moses-reference-*.npz.xz``, ``data/moses_fcd.npz``;
``python -m polydiff.commands.reference`` writes them). Any other file's are cached under
``POLYDIFF_CACHE_DIR`` (default ``~/.cache/polydiff``), keyed by the file's SHA-256 and the
RDKit release series.
"""

from __future__ import annotations

import gzip
import io
import lzma
import sys
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np
from rdkit import rdBase
from rich.progress import Progress

from polydiff.chem.fcd import FCDStatistics, chemnet_activations, fcd_statistics
from polydiff.chem.molecules import (
    CANONICAL_PSMILES_VERSION,
    PROPERTIES,
    canonical,
    map_molecules,
    molecule_features,
)
from polydiff.utils.cache import cache_dir, file_digest, save_atomically
from polydiff.utils.digest_set import DigestSet
from polydiff.utils.files import is_title, molecule_column, read_smiles
from polydiff.utils.parallel import advancer, default_jobs

FORMAT_VERSION = 1  # bump when what is cached changes
BUNDLED_FCD = "moses_fcd.npz"
BUNDLED_REFERENCE = "moses-reference-{digest}.npz.xz"  # the rest, per file (first 16 hex digits of its SHA-256)


@dataclass
class ReferenceStats:
    """What the metrics need of a reference set.

    Attributes:
        size: number of valid reference molecules.
        fingerprints: distinct packed Morgan fingerprints, (m, 128) uint8 (SNN takes a max, so
            repeats do not matter).
        fragments: BRICS fragment counts.
        scaffolds: scaffold counts (two rings or more, as MOSES).
        properties: (size, len(PROPERTIES)) values, NaN where RDKit failed.
        fcd: ChemNet activation statistics, None when fewer than two molecules.
    """

    size: int
    fingerprints: np.ndarray
    fragments: Counter
    scaffolds: Counter
    properties: np.ndarray
    fcd: FCDStatistics | None


def _cache_path(kind: str, path: Path, suffix: str) -> Path:
    # Canonical SMILES (and so every descriptor) may change between RDKit release series.
    series = ".".join(rdBase.rdkitVersion.split(".")[:2])
    name = f"{kind}-{path.name.split('.')[0]}-{file_digest(path)[:16]}-rdkit{series}-v{FORMAT_VERSION}{suffix}"
    return cache_dir() / name


def _strings_to_array(strings) -> np.ndarray:
    return np.frombuffer("\n".join(strings).encode(), dtype=np.uint8)


def _counter(keys: np.ndarray, counts: np.ndarray) -> Counter:
    text = keys.tobytes().decode()
    return Counter(dict(zip(text.split("\n") if text else [], counts.tolist(), strict=True)))


def _announce(progress: Progress | None, what: str, cached: Path | None) -> None:
    # The first run spends minutes here; say why, even where no progress bar is drawn (logs).
    if progress is not None:
        where = f"; caching them in {cached.parent}" if cached is not None else ""
        progress.console.print(f"polydiff: computing the {what} (once{where})", soft_wrap=True)


def _column_and_kind(kind: str, path: Path, column: str | None) -> tuple[str, str]:
    """The column to read, and the cache's name for what is read: a column other than the one
    ``molecule_column`` picks (a polymer's ``PSMILES`` beside its monomers' ``SMILES``) is its own."""
    default = molecule_column(path)
    column = column or default
    return column, kind if column == default else f"{kind}-{column}"


def _molecules(path: Path, column: str) -> list[str]:
    """A reference file's molecules: its lines (or column) without the title lines and comments a
    line file may hold, which are no molecules."""
    return [line for line in read_smiles(path, column) if not (line.startswith("#") or is_title(line))]


def _say_left_out(progress: Progress | None, path: Path, left_out: int, lines: int) -> None:
    """Says how many of a reference file's lines RDKit could not read, which its statistics leave out."""
    if left_out:
        said = f"polydiff: {path}: {left_out:,} of its {lines:,} lines RDKit cannot read, left out"
        if progress is not None:
            progress.console.print(said, soft_wrap=True)
        else:
            print(said, file=sys.stderr)


def bundled_fcd(path: Path) -> FCDStatistics | None:
    """The shipped ChemNet statistics of a bundled MOSES file, when ``path`` holds exactly its bytes."""
    source = resources.files("polydiff.chem") / "data" / BUNDLED_FCD
    if not source.is_file():
        return None
    digest = file_digest(path)
    with source.open("rb") as stream, np.load(stream) as data:
        if f"{digest}_mu" not in data:
            return None
        return FCDStatistics(data[f"{digest}_mu"].astype(np.float64), data[f"{digest}_sigma"].astype(np.float64))


def compute_reference(
    smiles: list[str],
    n_jobs: int = 1,
    device: str = "cpu",
    progress: Progress | None = None,
    fcd: FCDStatistics | None = None,
    chemnet: bool = True,
) -> ReferenceStats:
    """Statistics of a reference set of molecules.

    Args:
        smiles: reference SMILES; invalid ones are skipped.
        n_jobs: worker processes for RDKit.
        device: torch device for ChemNet.
        progress: where to draw progress bars.
        fcd: precomputed ChemNet statistics (skips ChemNet).
        chemnet: False leaves the ChemNet statistics out (None) where ``fcd`` is not given.

    Returns:
        The statistics.
    """
    described = map_molecules(partial(molecule_features, filters=False), smiles, n_jobs, progress, "reference")
    features = [f for f in described if f is not None]
    fingerprints = np.frombuffer(b"".join(f.fingerprint for f in features), dtype=np.uint8).reshape(-1, 128)
    if fcd is None and chemnet and len(features) >= 2:
        canonical_smiles = [f.smiles for f in features]
        advance = advancer(progress, "ChemNet (reference)", len(canonical_smiles))
        fcd = fcd_statistics(chemnet_activations(canonical_smiles, device, progress=advance))
    return ReferenceStats(
        size=len(features),
        fingerprints=np.unique(fingerprints, axis=0),
        fragments=Counter(fragment for f in features for fragment in f.fragments),
        scaffolds=Counter(f.scaffold for f in features if f.scaffold is not None),
        properties=np.array([f.properties for f in features], dtype=np.float64).reshape(-1, len(PROPERTIES)),
        fcd=fcd,
    )


def _arrays(stats: ReferenceStats) -> dict[str, np.ndarray]:
    arrays = {
        "size": np.array(stats.size),
        "fingerprints": stats.fingerprints,
        "fragment_keys": _strings_to_array(stats.fragments),
        "fragment_counts": np.array(list(stats.fragments.values()), dtype=np.int64),
        "scaffold_keys": _strings_to_array(stats.scaffolds),
        "scaffold_counts": np.array(list(stats.scaffolds.values()), dtype=np.int64),
        "properties": stats.properties,
    }
    if stats.fcd is not None:
        arrays |= {"fcd_mu": stats.fcd.mu, "fcd_sigma": stats.fcd.sigma}
    return arrays


def save_reference(stats: ReferenceStats, path: Path) -> None:
    """Writes reference statistics to an ``.npz`` file (atomically)."""
    save_atomically(path, lambda stream: np.savez_compressed(stream, **_arrays(stats)))


def load_reference(source: Path | BinaryIO) -> ReferenceStats:
    """Reads reference statistics written by ``save_reference`` or ``save_bundled_reference``."""
    with np.load(source) as data:
        fcd = FCDStatistics(data["fcd_mu"], data["fcd_sigma"]) if "fcd_mu" in data else None
        return ReferenceStats(
            size=int(data["size"]),
            fingerprints=data["fingerprints"],
            fragments=_counter(data["fragment_keys"], data["fragment_counts"]),
            scaffolds=_counter(data["scaffold_keys"], data["scaffold_counts"]),
            properties=data["properties"].astype(np.float64),
            fcd=fcd,
        )


def bundled_reference_name(path: Path) -> str:
    """The name under ``polydiff/chem/data`` of the shipped statistics of the file at ``path``."""
    return BUNDLED_REFERENCE.format(digest=file_digest(path)[:16])


def save_bundled_reference(stats: ReferenceStats, path: Path) -> None:
    """Writes the statistics of a bundled set as they ship: xz-compressed, properties as float32 (a
    relative change below 1e-7), and without the ChemNet part, which ``moses_fcd.npz`` holds."""
    arrays = _arrays(stats) | {"properties": stats.properties.astype(np.float32)}
    arrays = {key: value for key, value in arrays.items() if not key.startswith("fcd_")}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    packed = lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    save_atomically(path, lambda stream: stream.write(packed))


def bundled_reference(path: Path) -> ReferenceStats | None:
    """The shipped statistics of a bundled MOSES test set, when ``path`` holds exactly its bytes.

    They were computed once, with the RDKit release named in ``polydiff/chem/data/README.md``, and
    serve every release, as MOSES's own shipped test statistics do.
    """
    source = resources.files("polydiff.chem") / "data" / bundled_reference_name(path)
    if not source.is_file():
        return None
    with source.open("rb") as stream:
        stats = load_reference(io.BytesIO(lzma.decompress(stream.read())))
    stats.fcd = bundled_fcd(path)
    return stats


def reference_stats(
    path: str | Path,
    n_jobs: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    use_cache: bool = True,
    column: str | None = None,
) -> ReferenceStats:
    """Statistics of a reference file: the shipped ones for the bundled MOSES test sets, else from the
    cache when it has them, else computed (and cached).

    Args:
        path: molecules, one per line (``.smi``/``.txt``, or ``.csv`` with a SMILES or PSMILES column; ``.gz`` allowed).
        n_jobs: worker processes for RDKit; None for every core.
        device: torch device for ChemNet.
        progress: where to draw progress bars.
        use_cache: read and write the on-disk cache.
        column: the CSV column to read; None for ``molecule_column``'s.

    Returns:
        The statistics.
    """
    path = Path(path)
    shipped = bundled_reference(path)
    if shipped is not None:
        return shipped
    column, kind = _column_and_kind("reference", path, column)
    cached = _cache_path(kind, path, ".npz") if use_cache else None
    if cached is not None and cached.is_file():
        stats = load_reference(cached)
        if stats.size:  # (an empty one was cached before empty files were refused: computed again)
            return stats
    _announce(progress, f"statistics of {path}", cached)
    molecules = _molecules(path, column)
    stats = compute_reference(molecules, n_jobs or default_jobs(), device, progress, bundled_fcd(path))
    if stats.size == 0:  # every metric against it would be n/a
        raise ValueError(f"{path}: no line RDKit can parse, so nothing to compare samples with")
    _say_left_out(progress, path, len(molecules) - stats.size, len(molecules))
    if cached is not None:
        save_reference(stats, cached)
    return stats


def training_set(
    path: str | Path,
    n_jobs: int | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    polymer: bool = False,
    as_stored: bool = False,
    column: str | None = None,
) -> Container[str]:
    """The canonical SMILES of a training file (for Novelty), from the cache when it has them.

    A file of canonical SMILES (``as_stored``: MOSES's training set) is compared as written, as
    MOSES compares against its training SMILES: that takes seconds, where canonicalizing its 1.6
    million lines takes minutes. Any other file is canonicalized with the running RDKit, so that
    a molecule written another way is still found (cached after the first run).

    Args:
        path: molecules, one per line (``.smi``/``.txt``, or ``.csv`` with a SMILES or PSMILES column; ``.gz`` allowed).
        n_jobs: worker processes for RDKit; None for every core.
        progress: where to draw a progress bar.
        use_cache: read and write the on-disk cache.
        polymer: write repeat units as canonical PSMILES (``canonical_polymer``), as polymer samples are.
        as_stored: the lines are canonical already; take them as written.
        column: the CSV column to read; None for ``molecule_column``'s.

    Returns:
        The canonical SMILES of its valid lines: a set, or a ``DigestSet`` of the lines as written.
    """
    path = Path(path)
    polymer_kind = f"train-polymer{CANONICAL_PSMILES_VERSION}"
    column, kind = _column_and_kind(polymer_kind if polymer else "train", path, column)
    if as_stored:
        return DigestSet(read_smiles(path, column))
    cached = _cache_path(kind, path, ".txt.gz") if use_cache else None
    if cached is not None and cached.is_file():
        with gzip.open(cached, "rt") as stream:
            found = set(stream.read().split("\n")) - {""}
        if found:  # (an empty one was cached before empty files were refused: computed again)
            return found
    _announce(progress, f"canonical SMILES of {path}", cached)
    molecules = _molecules(path, column)
    canonicals = map_molecules(
        partial(canonical, polymer=polymer), molecules, n_jobs or default_jobs(), progress, "training set"
    )
    smiles = sorted({s for s in canonicals if s is not None})
    if not smiles:  # every sample would count as novel
        raise ValueError(f"{path}: no line RDKit can parse, so no training set to measure Novelty against")
    _say_left_out(progress, path, sum(s is None for s in canonicals), len(molecules))
    if cached is not None:
        save_atomically(cached, lambda stream: stream.write(gzip.compress("\n".join(smiles).encode(), 6)))
    return set(smiles)
