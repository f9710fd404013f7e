"""Statistics of a reference set (test, scaffold test, train), computed once and cached on disk.

A reference set is summarized as MOSES summarizes it (``compute_intermediate_statistics``):
its Morgan fingerprints (for SNN), BRICS fragment and scaffold counts (Frag, Scaf), ChemNet
activation mean and covariance (FCD) and property values (the Wasserstein distances). The
training set is kept as its set of canonical SMILES (Novelty).

Computing these for the 176,074 MOSES test molecules takes minutes on a CPU (ChemNet alone
about half an hour), so the result is cached under ``POLYDIFF_CACHE_DIR`` (default
``~/.cache/polydiff``), keyed by the file's SHA-256 and the RDKit release series, and the
ChemNet statistics of the bundled MOSES test sets ship with polydiff (``data/moses_fcd.npz``).
``python -m polydiff.commands.reference`` fills the cache ahead of time.
"""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
from rdkit import rdBase
from rich.progress import Progress

from polydiff.chem.fcd import FCDStatistics, chemnet_activations, fcd_statistics
from polydiff.chem.molecules import PROPERTIES, canonical, map_molecules, molecule_features
from polydiff.utils.cache import cache_dir, file_digest, save_atomically
from polydiff.utils.files import read_smiles
from polydiff.utils.parallel import advancer, default_jobs

FORMAT_VERSION = 1  # bump when what is cached changes
BUNDLED_FCD = "moses_fcd.npz"


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
) -> ReferenceStats:
    """Statistics of a reference set of molecules.

    Args:
        smiles: reference SMILES; invalid ones are skipped.
        n_jobs: worker processes for RDKit.
        device: torch device for ChemNet.
        progress: where to draw progress bars.
        fcd: precomputed ChemNet statistics (skips ChemNet).

    Returns:
        The statistics.
    """
    described = map_molecules(partial(molecule_features, filters=False), smiles, n_jobs, progress, "reference")
    features = [f for f in described if f is not None]
    fingerprints = np.frombuffer(b"".join(f.fingerprint for f in features), dtype=np.uint8).reshape(-1, 128)
    if fcd is None and len(features) >= 2:
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


def save_reference(stats: ReferenceStats, path: Path) -> None:
    """Writes reference statistics to an ``.npz`` file (atomically)."""
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
    save_atomically(path, lambda stream: np.savez_compressed(stream, **arrays))


def load_reference(path: Path) -> ReferenceStats:
    """Reads reference statistics written by ``save_reference``."""
    with np.load(path) as data:
        fcd = FCDStatistics(data["fcd_mu"], data["fcd_sigma"]) if "fcd_mu" in data else None
        return ReferenceStats(
            size=int(data["size"]),
            fingerprints=data["fingerprints"],
            fragments=_counter(data["fragment_keys"], data["fragment_counts"]),
            scaffolds=_counter(data["scaffold_keys"], data["scaffold_counts"]),
            properties=data["properties"],
            fcd=fcd,
        )


def reference_stats(
    path: str | Path,
    n_jobs: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    use_cache: bool = True,
) -> ReferenceStats:
    """Statistics of a reference file, from the cache when it has them.

    Args:
        path: molecules, one per line (``.smi``/``.txt``, or ``.csv`` with a SMILES column; ``.gz`` allowed).
        n_jobs: worker processes for RDKit; None for every core.
        device: torch device for ChemNet.
        progress: where to draw progress bars.
        use_cache: read and write the on-disk cache.
        polymer: write repeat units as canonical PSMILES (``canonical_polymer``), as polymer samples are.

    Returns:
        The statistics.
    """
    path = Path(path)
    cached = _cache_path("reference", path, ".npz") if use_cache else None
    if cached is not None and cached.is_file():
        return load_reference(cached)
    _announce(progress, f"statistics of {path}", cached)
    stats = compute_reference(read_smiles(path), n_jobs or default_jobs(), device, progress, bundled_fcd(path))
    if cached is not None:
        save_reference(stats, cached)
    return stats


def training_set(
    path: str | Path,
    n_jobs: int | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    polymer: bool = False,
) -> set[str]:
    """The canonical SMILES of a training file (for Novelty), from the cache when it has them.

    MOSES compares against its training SMILES as stored; canonicalizing them with the running
    RDKit keeps the comparison exact for any training file (on the bundled MOSES set the two
    differ in about 1 molecule in 10,000).

    Args:
        path: molecules, one per line (``.smi``/``.txt``, or ``.csv`` with a SMILES column; ``.gz`` allowed).
        n_jobs: worker processes for RDKit; None for every core.
        progress: where to draw a progress bar.
        use_cache: read and write the on-disk cache.
        polymer: write repeat units as canonical PSMILES (``canonical_polymer``), as polymer samples are.

    Returns:
        The set of canonical SMILES of its valid lines.
    """
    path = Path(path)
    cached = _cache_path("train-polymer" if polymer else "train", path, ".txt.gz") if use_cache else None
    if cached is not None and cached.is_file():
        with gzip.open(cached, "rt") as stream:
            return set(stream.read().split("\n")) - {""}
    _announce(progress, f"canonical SMILES of {path}", cached)
    canonicals = map_molecules(
        partial(canonical, polymer=polymer), read_smiles(path), n_jobs or default_jobs(), progress, "training set"
    )
    smiles = sorted({s for s in canonicals if s is not None})
    if cached is not None:
        save_atomically(cached, lambda stream: stream.write(gzip.compress("\n".join(smiles).encode(), 6)))
    return set(smiles)
