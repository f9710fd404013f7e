"""Times ``polydiff evaluate`` on 10,000 samples against the bundled MOSES sets, end to end; prints JSON.

    python benchmarks/evaluate_speed.py                    # 10,000 mixed samples, every core
    python benchmarks/evaluate_speed.py --n_jobs 2 --test_scaffolds true

The samples are the mixed file of ``moses_agreement.py`` (test, train, recombined, edited,
invalid and empty lines). Reference statistics come from the cache; the first run fills it
(minutes) and reports that time separately as ``cold_cache_seconds``. The phases that follow
are timed one by one, then the whole command (``end_to_end``). Timings on a shared machine are
noisy: the JSON carries the load average so runs can be compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from jsonargparse import auto_cli
from moses_agreement import mixed_samples

from polydiff.chem import molecules
from polydiff.chem.fcd import chemnet_activations
from polydiff.chem.metrics import internal_diversity, nearest_neighbour_similarity
from polydiff.chem.reference import reference_stats, training_set
from polydiff.commands.evaluate import evaluate_samples
from polydiff.data.files import bundled_moses_path
from polydiff.utils.cache import cache_dir
from polydiff.utils.parallel import default_jobs, parallel_map


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - start, 2)


def speed(
    num_samples: int = 10_000,
    n_jobs: int | None = None,
    test_scaffolds: bool = False,
    seed: int = 0,
    mix: str = "mixed",
) -> dict:
    """Times each phase of the evaluation and the whole command.

    Args:
        num_samples: sample lines.
        n_jobs: worker processes for RDKit; None for every core.
        test_scaffolds: also compute the /TestSF metrics.
        seed: seed of the mixed samples.
        mix: ``mixed`` (MOSES-like, with repeats and broken lines), ``generated`` or ``distinct`` (all
            valid and distinct: the most work).

    Returns:
        Seconds per phase, end to end, and the machine's state.
    """
    n_jobs = n_jobs or default_jobs()
    lines = mixed_samples(num_samples, seed, mix)
    splits = ["test", "train"] + (["test_scaffolds"] if test_scaffolds else [])
    start = time.perf_counter()
    stats = {split: reference_stats(bundled_moses_path(split), n_jobs) for split in splits if split != "train"}
    training_set(bundled_moses_path("train"), n_jobs)
    cold = round(time.perf_counter() - start, 2)

    phases = {}
    checked, phases["validity"] = _timed(parallel_map, molecules.check, lines, n_jobs)
    distinct = list(dict.fromkeys(smiles for smiles, _ in checked if smiles is not None))
    features, phases["descriptors"] = _timed(parallel_map, molecules.molecule_features, distinct, n_jobs)
    features = [f for f in features if f is not None]
    _, phases["chemnet"] = _timed(chemnet_activations, [f.smiles for f in features])
    packed = np.frombuffer(b"".join(f.fingerprint for f in features), dtype=np.uint8).reshape(-1, 128)
    ones = np.ones(len(packed), dtype=np.int64)
    _, phases["snn_test"] = _timed(nearest_neighbour_similarity, packed, ones, stats["test"].fingerprints)
    _, phases["intdiv"] = _timed(internal_diversity, packed, ones)

    with tempfile.TemporaryDirectory() as folder:
        samples = Path(folder) / "samples.smi"
        samples.write_text("".join(f"{line}\n" for line in lines))
        scaffolds = "moses" if test_scaffolds else "none"
        with contextlib.redirect_stdout(sys.stderr):  # the table goes to stderr, the JSON to stdout
            metrics, end_to_end = _timed(
                evaluate_samples,
                str(samples),
                f"{folder}/report",
                test_scaffolds=scaffolds,
                n_jobs=n_jobs,
                device="cpu",
            )
    return {
        "num_samples": num_samples,
        "mix": mix,
        "valid": metrics["valid"],
        "n_jobs": n_jobs,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "test_scaffolds": test_scaffolds,
        "cold_cache_seconds": cold,
        "phase_seconds": phases,
        "end_to_end_seconds": end_to_end,
        "cache_dir": str(cache_dir()),
    }


if __name__ == "__main__":
    print(json.dumps(auto_cli(speed, as_positional=False), indent=2))
