"""``python -m polydiff.commands.reference``: compute the bundled MOSES sets' reference statistics ahead of time.

The first ``polydiff evaluate`` on the bundled sets computes them itself (minutes on a CPU) and
caches them (``polydiff.chem.reference``); this fills the cache beforehand, or writes the ChemNet
statistics that ship inside the package (``polydiff/chem/data/moses_fcd.npz``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from polydiff.chem.fcd import chemnet_activations, fcd_statistics
from polydiff.chem.molecules import canonical, map_molecules
from polydiff.chem.reference import reference_stats, training_set
from polydiff.data.files import bundled_moses_path
from polydiff.utils.cache import cache_dir, file_digest, save_atomically
from polydiff.utils.files import read_smiles
from polydiff.utils.parallel import advancer, default_jobs, progress_bars


def build_bundled_fcd(output: Path, device: str = "cpu") -> None:
    """Computes the ChemNet statistics of the bundled MOSES test sets into ``output`` (float32 ``.npz``)."""
    arrays = {}
    with progress_bars(sys.stderr.isatty()) as progress:
        for split in ("test", "test_scaffolds"):
            path = bundled_moses_path(split)
            smiles = [s for s in map_molecules(canonical, read_smiles(path), default_jobs(), progress, split) if s]
            advance = advancer(progress, f"ChemNet ({split})", len(smiles))
            stats = fcd_statistics(chemnet_activations(smiles, device, progress=advance))
            digest = file_digest(path)
            arrays |= {f"{digest}_mu": stats.mu.astype(np.float32), f"{digest}_sigma": stats.sigma.astype(np.float32)}
            print(f"{split}: {len(smiles)} molecules", file=sys.stderr)
    save_atomically(output, lambda stream: np.savez_compressed(stream, **arrays))


def warm_cache(n_jobs: int | None = None, device: str = "cpu") -> None:
    """Fills the cache with the statistics of the bundled MOSES test, scaffold test and training sets."""
    with progress_bars(sys.stderr.isatty()) as progress:
        for split in ("test", "test_scaffolds"):
            reference_stats(bundled_moses_path(split), n_jobs, device, progress)
        training_set(bundled_moses_path("train"), n_jobs, progress)
    print(f"polydiff: reference statistics cached in {cache_dir()}", file=sys.stderr)


def main(bundle_fcd: str | None = None, n_jobs: int | None = None, device: str = "cpu") -> None:
    """Fill the cache with the reference statistics of the bundled MOSES sets, or write the bundled ChemNet ones.

    Args:
        bundle_fcd: write the ChemNet statistics of the bundled test sets to this ``.npz`` file
            instead (how ``polydiff/chem/data/moses_fcd.npz`` is made).
        n_jobs: worker processes for RDKit; None for every core.
        device: torch device for ChemNet.
    """
    if bundle_fcd is not None:
        build_bundled_fcd(Path(bundle_fcd), device)
    else:
        warm_cache(n_jobs, device)


if __name__ == "__main__":
    from jsonargparse import auto_cli

    auto_cli(main, as_positional=False)
