"""``python -m polydiff.commands.reference``: write the reference statistics of the bundled MOSES test
sets that ship inside the package (``polydiff/chem/data``), so that no user computes them.

Descriptors (fingerprints, fragments, scaffolds, properties): about 6 minutes per set on 2 CPU
cores; ChemNet's activation statistics: about half an hour per set on a CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from polydiff.chem.fcd import chemnet_activations, fcd_statistics
from polydiff.chem.molecules import canonical, map_molecules
from polydiff.chem.reference import bundled_reference_name, compute_reference, save_bundled_reference
from polydiff.data.files import bundled_moses_path
from polydiff.utils.cache import file_digest, save_atomically
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


def build_bundled_reference(folder: Path, n_jobs: int | None = None) -> None:
    """Computes the descriptor statistics of the bundled MOSES test sets into ``folder``, one
    ``moses-reference-<digest>.npz.xz`` file per set (``polydiff.chem.reference.save_bundled_reference``)."""
    with progress_bars(sys.stderr.isatty()) as progress:
        for split in ("test", "test_scaffolds"):
            path = bundled_moses_path(split)
            # This file leaves ChemNet's statistics out: they ship on their own (--bundle_fcd).
            stats = compute_reference(read_smiles(path), n_jobs or default_jobs(), progress=progress, chemnet=False)
            save_bundled_reference(stats, folder / bundled_reference_name(path))
            print(f"{split}: {stats.size} molecules", file=sys.stderr)


def main(
    bundle_reference: str | None = None, bundle_fcd: str | None = None, n_jobs: int | None = None, device: str = "cpu"
) -> None:
    """Write the reference statistics of the bundled MOSES test sets that ship inside polydiff.

    Args:
        bundle_reference: write their descriptor statistics into this folder (how
            ``polydiff/chem/data/moses-reference-*.npz.xz`` are made).
        bundle_fcd: write their ChemNet statistics to this ``.npz`` file (how
            ``polydiff/chem/data/moses_fcd.npz`` is made).
        n_jobs: worker processes for RDKit; None for every core.
        device: torch device for ChemNet.
    """
    if bundle_reference is None and bundle_fcd is None:
        raise ValueError("nothing to write: give --bundle_reference FOLDER, --bundle_fcd FILE, or both")
    if bundle_reference is not None:
        build_bundled_reference(Path(bundle_reference), n_jobs)
    if bundle_fcd is not None:
        build_bundled_fcd(Path(bundle_fcd), device)


if __name__ == "__main__":
    from jsonargparse import auto_cli

    from polydiff.commands import user_errors

    with user_errors("python -m polydiff.commands.reference"):
        auto_cli(main, as_positional=False)
