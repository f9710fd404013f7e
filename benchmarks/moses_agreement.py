"""Checks polydiff's MOSES metrics against the MOSES reference implementation (``molsets`` 0.3.1).

molsets' pinned dependencies no longer install, so it runs in a virtual environment of its own:
``pip install torch==2.13.0 "numpy<2" "pandas<2" scipy seaborn tqdm "rdkit==2023.9.6"``, then
``pip install --no-deps molsets==0.3.1 fcd_torch==1.0.7``, plus a one-line ``rdkit/six.py`` in
that environment's site-packages defining ``iteritems = lambda d: iter(d.items())`` (molsets
imports it from RDKit, which dropped it). This script calls ``moses.get_all_metrics`` there
through a subprocess, so polydiff never imports molsets. It prints JSON: both sets of metrics,
their relative differences and whether every shared metric agrees within ``--tolerance``; the
exit code is 1 when one does not.

    python benchmarks/moses_agreement.py --moses_python /tmp/mosesref/bin/python
    python benchmarks/moses_agreement.py --moses_python ... --samples generated.smi
    python benchmarks/moses_agreement.py --moses_python ... --reference_size 2000   # quick: small sets

Without ``--samples`` it builds a mixed file of ``--num_samples`` lines from the bundled
MOSES sets: test and train molecules, molecules recombined from BRICS fragments (novel,
generated-looking), single-character edits of test molecules (some valid, most not),
repeats, invalid strings and empty lines. With the full sets (the default) MOSES uses its
own precomputed test statistics, so the comparison also checks the ones polydiff ships.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jsonargparse import auto_cli
from jsonargparse.typing import PositiveInt
from rdkit import Chem, RDLogger
from rdkit.Chem import BRICS

from polydiff.chem.metrics import evaluate
from polydiff.chem.reference import reference_stats, training_set
from polydiff.commands import user_errors
from polydiff.commands.evaluate import read_samples
from polydiff.data.files import bundled_moses_path, is_bundled
from polydiff.utils.files import read_smiles
from polydiff.utils.parallel import progress_bars

# Runs inside the MOSES environment: argv = samples file, n_jobs, [test, test_scaffolds, train files].
MOSES_SCRIPT = """
import json, sys, warnings
import moses
warnings.simplefilter("ignore")
lines = open(sys.argv[1]).read().split("\\n")[:-1]
sets = {}
if len(sys.argv) > 3:
    for name, path in zip(("test", "test_scaffolds", "train"), sys.argv[3:6]):
        sets[name] = open(path).read().split()
metrics = moses.get_all_metrics(lines, n_jobs=int(sys.argv[2]), **sets)
print(json.dumps({key: float(value) for key, value in metrics.items()}))
"""
INVALID = ["C1CC", "c1ccccc", "C(C)(C)(C)(C)C", "CC(=O", "N#N#N", "xyz", "[Xx]C", "C==C", "c1cccc1", "CC)C", "(", "1"]
ALPHABET = "CNOSFcnos()=#123[]+-H@l"


def _edit(smiles: str, rng: random.Random) -> str:
    """One random character deletion, insertion or substitution."""
    position = rng.randrange(len(smiles))
    operation = rng.choice(("delete", "insert", "substitute"))
    if operation == "delete":
        return smiles[:position] + smiles[position + 1 :]
    character = rng.choice(ALPHABET)
    tail = smiles[position:] if operation == "insert" else smiles[position + 1 :]
    return smiles[:position] + character + tail


def _recombined(test: list[str], count: int, rng: random.Random) -> list[str]:
    """Novel molecules built from BRICS fragments of test molecules (drug-like, generated-looking)."""
    if count == 0:
        return []
    random.seed(rng.random())  # BRICSBuild shuffles with the global generator
    fragments = set()
    for smiles in rng.sample(test, max(300, count)):
        fragments |= BRICS.BRICSDecompose(Chem.MolFromSmiles(smiles))
    built = []
    for mol in BRICS.BRICSBuild([Chem.MolFromSmiles(f) for f in sorted(fragments)], maxDepth=2):
        try:
            Chem.SanitizeMol(mol)
        except (ValueError, RuntimeError):
            continue
        if 10 <= mol.GetNumHeavyAtoms() <= 35:
            built.append(Chem.MolToSmiles(mol))
        if len(built) == count:
            break
    return built


MIXES = {
    # MOSES-like: mostly known molecules, some novel ones, some broken lines
    "mixed": {"test": 0.40, "train": 0.15, "recombined": 0.15, "edited": 0.15, "invalid": 0.03, "empty": 0.02},
    # generated-looking: mostly novel molecules, many broken lines (edits), few known molecules
    "generated": {"test": 0.05, "train": 0.05, "recombined": 0.45, "edited": 0.35, "invalid": 0.02, "empty": 0.01},
    # every line a valid, distinct molecule: the most work per line
    "distinct": {"test": 0.8, "train": 0.2, "recombined": 0, "edited": 0, "invalid": 0, "empty": 0},
}


def mixed_samples(num_samples: int = 2000, seed: int = 0, mix: str = "mixed") -> list[str]:
    """A sample file's lines mixing valid, repeated, novel, invalid and empty entries (see the module docstring).

    Args:
        num_samples: lines.
        seed: seed of every random choice.
        mix: ``mixed``, ``generated`` or ``distinct`` (the shares of ``MIXES``; the rest are repeats).

    Returns:
        The lines.
    """
    RDLogger.DisableLog("rdApp.*")
    rng = random.Random(seed)
    test, train = read_smiles(bundled_moses_path("test")), read_smiles(bundled_moses_path("train"))
    fractions = MIXES[mix]
    share = {name: round(fraction * num_samples) for name, fraction in fractions.items()}
    lines = rng.sample(test, share["test"]) + rng.sample(train, share["train"])
    lines += _recombined(test, share["recombined"], rng)
    lines += [_edit(smiles, rng) for smiles in rng.sample(test, share["edited"])]
    lines += [rng.choice(INVALID) for _ in range(share["invalid"])] + [""] * share["empty"]
    lines += rng.choices([line for line in lines if line], k=num_samples - len(lines))  # repeats
    rng.shuffle(lines)
    return lines


def _write(lines: list[str], path: Path) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def agreement(
    moses_python: str,
    samples: str | None = None,
    num_samples: PositiveInt = 2000,
    seed: int = 0,
    mix: str = "mixed",
    reference_size: PositiveInt | None = None,
    n_jobs: PositiveInt = 2,
    tolerance: float = 0.01,
) -> dict:
    """Runs both implementations on the same samples and compares every shared metric.

    Args:
        moses_python: the python executable of a virtual environment with molsets 0.3.1.
        samples: a file of samples (one per line); None builds a mixed one.
        num_samples: lines of the mixed file.
        seed: seed of the mixed file.
        mix: ``mixed`` (MOSES-like), ``generated`` (mostly novel and broken lines) or ``distinct``.
        reference_size: use only the first this many test, scaffold test and training
            molecules on both sides (a quick check); None for the full bundled sets.
        n_jobs: worker processes on both sides.
        tolerance: largest relative difference that counts as agreement.

    Returns:
        Both metric sets, relative differences and the verdict.
    """
    folder = Path(tempfile.mkdtemp(prefix="moses_agreement_"))
    lines = read_samples(samples) if samples else mixed_samples(num_samples, seed, mix)
    samples_file = _write(lines, folder / "samples.smi")
    paths = {split: bundled_moses_path(split) for split in ("test", "test_scaffolds", "train")}
    extra = []
    if reference_size is not None:
        paths = {
            split: _write(read_smiles(path)[:reference_size], folder / f"{split}.smi") for split, path in paths.items()
        }
        extra = [str(paths[split]) for split in ("test", "test_scaffolds", "train")]

    start = time.perf_counter()
    command = [moses_python, "-c", MOSES_SCRIPT, str(samples_file), str(n_jobs), *extra]
    ran = subprocess.run(command, capture_output=True, text=True)
    if ran.returncode:  # its last line says why (most often: molsets is not importable there)
        reason = (ran.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{moses_python} could not compute MOSES's metrics: {reason}")
    moses = json.loads(ran.stdout)
    moses_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with progress_bars(sys.stderr.isatty()) as progress:
        test = reference_stats(paths["test"], n_jobs, progress=progress)
        scaffolds = reference_stats(paths["test_scaffolds"], n_jobs, progress=progress)
        # As ``polydiff evaluate`` does: the bundled training set as written, any other canonicalized.
        train = training_set(paths["train"], n_jobs, progress=progress, as_stored=is_bundled(paths["train"]))
        ours = evaluate(lines, test, train, scaffolds, n_jobs=n_jobs, progress=progress).metrics
    ours_seconds = time.perf_counter() - start

    shared = [key for key in moses if key in ours]
    relative = {key: _relative(ours[key], moses[key]) for key in shared}
    worst = max(relative.values())
    return {
        "samples": str(samples) if samples else f"{mix} (num_samples={num_samples}, seed={seed})",
        "lines": len(lines),
        "reference_size": reference_size or "full bundled MOSES sets",
        "moses": moses,
        "polydiff": {key: ours[key] for key in shared},
        "relative_difference": relative,
        "max_relative_difference": worst,
        "agree": worst <= tolerance,
        "seconds": {"moses": round(moses_seconds, 1), "polydiff": round(ours_seconds, 1)},
        "not_shared": sorted(set(moses) ^ set(ours)),
    }


def _relative(ours: float, theirs: float) -> float:
    if math.isnan(ours) and math.isnan(theirs):
        return 0.0
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


def main() -> None:
    result = auto_cli(agreement, as_positional=False)
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result["agree"] else 1)


if __name__ == "__main__":
    with user_errors("benchmarks/moses_agreement.py"):
        main()
