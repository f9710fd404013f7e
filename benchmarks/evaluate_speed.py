"""Times ``polydiff evaluate`` against the bundled MOSES sets: a first run on a fresh machine, then
10,000 samples phase by phase and end to end; prints JSON.

    python benchmarks/evaluate_speed.py                    # 10,000 mixed samples, every core
    python benchmarks/evaluate_speed.py --n_jobs 2 --test_scaffolds true

The samples are the mixed file of ``moses_agreement.py`` (test, train, recombined, edited,
invalid and empty lines). ``cold_start_seconds`` is the first ``polydiff evaluate`` of
``--cold_samples`` of them as a user starts it on a fresh machine: a new process with an empty
``POLYDIFF_CACHE_DIR``, start-up, reading the references and writing the report included. The
phases are then timed one by one, and the whole command in this process (``end_to_end``).
Timings on a shared machine are noisy: the JSON carries the load average so runs can be compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from jsonargparse import auto_cli
from jsonargparse.typing import PositiveInt
from moses_agreement import mixed_samples

from polydiff.chem import molecules
from polydiff.chem.fcd import chemnet_activations
from polydiff.chem.metrics import internal_diversity, nearest_neighbour_similarity
from polydiff.chem.reference import reference_stats, training_set
from polydiff.commands import user_errors
from polydiff.commands.evaluate import evaluate_samples
from polydiff.data.files import bundled_moses_path
from polydiff.utils.cache import CACHE_ENV
from polydiff.utils.parallel import default_jobs, parallel_map


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - start, 2)


def _cold_start(lines: list[str], n_jobs: int, test_scaffolds: bool) -> float:
    """Seconds of a first ``polydiff evaluate`` in a new process with an empty cache."""
    with tempfile.TemporaryDirectory() as folder:
        samples = Path(folder) / "samples.smi"
        samples.write_text("".join(f"{line}\n" for line in lines))
        command = [
            sys.executable,
            "-m",
            "polydiff",
            "evaluate",
            "--samples",
            str(samples),
            "--output",
            f"{folder}/report",
        ]
        command += ["--n_jobs", str(n_jobs), "--device", "cpu"]
        command += ["--test_scaffolds", "moses" if test_scaffolds else "none"]
        env = os.environ | {CACHE_ENV: f"{folder}/cache"}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        return round(time.perf_counter() - start, 2)


def speed(
    num_samples: PositiveInt = 10_000,
    cold_samples: PositiveInt = 1000,
    n_jobs: PositiveInt | None = None,
    test_scaffolds: bool = False,
    seed: int = 0,
    mix: str = "mixed",
) -> dict:
    """Times a first evaluation on a fresh machine, each phase of the evaluation, and the whole command.

    Args:
        num_samples: sample lines.
        cold_samples: sample lines of the first, fresh-machine evaluation (the first of ``num_samples``).
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
    cold = _cold_start(lines[:cold_samples], n_jobs, test_scaffolds)

    phases = {}
    splits = ["test"] + (["test_scaffolds"] if test_scaffolds else [])
    stats, phases["reference_statistics"] = _timed(
        lambda: {split: reference_stats(bundled_moses_path(split), n_jobs) for split in splits}
    )
    _, phases["training_set"] = _timed(training_set, bundled_moses_path("train"), as_stored=True)
    checked, phases["validity"] = _timed(parallel_map, molecules.canonical_sample, lines, n_jobs)
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
        "cold_samples": min(cold_samples, num_samples),
        "cold_start_seconds": cold,
        "phase_seconds": phases,
        "end_to_end_seconds": end_to_end,
    }


if __name__ == "__main__":
    with user_errors("benchmarks/evaluate_speed.py"):
        print(json.dumps(auto_cli(speed, as_positional=False), indent=2))
