"""MOSES metrics of generated molecules, and polymer (PSMILES) validity.

Every metric follows the MOSES benchmark's definitions (Polykovskiy et al., 2020;
molecularsets/moses, ``molsets`` 0.3.1, ``moses/metrics/metrics.py``), so the numbers are
comparable with its published table; ``benchmarks/moses_agreement.py`` checks them against
``moses.get_all_metrics``:

- ``valid``: fraction of sample lines RDKit parses (empty lines are invalid). Every later
  metric is computed on the valid samples' canonical SMILES, repeats included.
- ``unique@k``: distinct canonical SMILES among the first k valid samples, divided by their
  number (all valid samples when fewer than k, with a note, as MOSES warns).
- ``FCD``: Fréchet ChemNet Distance; ``SNN``: mean over samples of the highest Tanimoto
  similarity to a reference molecule (Morgan, radius 2, 1,024 bits); ``Frag``/``Scaf``:
  cosine similarity of BRICS fragment / Bemis-Murcko scaffold (two rings or more) counts;
  ``/Test`` against the test set, ``/TestSF`` against the scaffold test set.
- ``IntDiv``: 1 - mean pairwise Tanimoto similarity over all ordered pairs, self-pairs
  included; ``IntDiv2``: 1 - mean over samples of the root mean square similarity.
- ``Filters``: fraction passing MOSES's MCF/PAINS/atom/charge/ring filters.
- ``logP``, ``SA``, ``QED``, ``weight``: Wasserstein-1 distance to the test set's values.
- ``Novelty``: fraction of distinct valid samples absent from the training set.

Polymer mode adds ``polymer_valid`` (exactly two ``*`` atoms, each single-bonded once, joined
through the unit) and computes the later metrics on the polymer-valid samples, written as canonical PSMILES
(``canonical_polymer``: ``*CCO*`` and ``*OCC*`` are one polymer, so one unique and one
novelty entry; a doubled unit, ``*CCCC*`` for ``*CC*``, is another); ``Filters`` is left out
(MOSES's atom filter rejects ``*``).

Duplicates are described once and weighted by their count, which gives the same numbers as
MOSES's per-sample computation with less work.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from rich.progress import Progress
from scipy.stats import wasserstein_distance

from polydiff.chem.fcd import chemnet_activations, fcd_statistics, frechet_distance
from polydiff.chem.molecules import (
    MAX_SMILES_CHARS,
    PROPERTIES,
    canonical_sample,
    map_molecules,
    molecule_features,
)
from polydiff.chem.reference import ReferenceStats
from polydiff.types import Kind
from polydiff.utils.arguments import refuse_mistyped
from polydiff.utils.parallel import advancer

MOSES_PROPERTIES = ("logP", "SA", "QED", "weight")
DEFAULT_KS = (1000, 10000)
# Below this many valid samples a report says that its FCD reads high: the bias of FCD's mean and
# covariance estimates falls with the sample count (polydiff's benchmarks score 1,000).
FCD_FEW_SAMPLES = 1_000
GEN_CHUNK = 1024  # rows of generated fingerprints per similarity block
REF_CHUNK = 16384  # rows of reference fingerprints per similarity block


@dataclass
class Evaluation:
    """The result of ``evaluate``.

    Attributes:
        metrics: MOSES key names to values (NaN where undefined, e.g. no valid sample).
        valid: canonical SMILES of the valid samples, in sample order, repeats included.
        distinct: the distinct valid canonical SMILES, in order of first appearance.
        counts: how often each of ``distinct`` occurs.
        properties: (len(distinct), len(PROPERTIES)) property values of ``distinct``.
        notes: remarks for the user (e.g. unique@k computed on fewer than k samples).
    """

    metrics: dict[str, float]
    valid: list[str]
    distinct: list[str]
    counts: np.ndarray
    properties: np.ndarray
    notes: list[str] = field(default_factory=list)


def fraction_unique(valid: Sequence[str], k: int | None = None) -> float:
    """unique@k: distinct canonical SMILES among the first ``k`` valid ones over their number (NaN if none)."""
    head = valid if k is None else valid[:k]
    return len(set(head)) / len(head) if head else math.nan


def novelty(valid: Sequence[str], train: Container[str]) -> float:
    """Fraction of the distinct canonical SMILES that are not in ``train`` (a set, or any container
    such as ``DigestSet``; NaN if there are none)."""
    distinct = set(valid)
    return sum(s not in train for s in distinct) / len(distinct) if distinct else math.nan


def cosine_similarity(reference: Counter, generated: Counter) -> float:
    """Cosine similarity of two count vectors given as {key: count} (NaN when either is empty)."""
    if not reference or not generated:
        return math.nan
    dot = sum(count * reference.get(key, 0) for key, count in generated.items())
    norms = math.sqrt(sum(c * c for c in reference.values())) * math.sqrt(sum(c * c for c in generated.values()))
    return dot / norms


def unpack(fingerprints: np.ndarray) -> torch.Tensor:
    """Packed fingerprints (m, 128) uint8 as an (m, 1024) int8 tensor of bits."""
    return torch.from_numpy(np.unpackbits(fingerprints, axis=1).view(np.int8))


def _intersections(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i & b_j| for bit rows a (n, d) and b (m, d), as float32 (exact: counts are below 2^24).

    A float32 product: ``torch._int_mm`` (int8 in, int32 out) would be exact too, but on CPUs it
    ran 20x slower (16 s against 0.75 s for 1,024 x 16,384 fingerprints, torch 2.13, 2 cores).
    """
    return a.float() @ b.float().T


def _tanimoto(a: torch.Tensor, b: torch.Tensor, bits_a: torch.Tensor, bits_b: torch.Tensor) -> torch.Tensor:
    similarity = _intersections(a, b)
    union = bits_a[:, None] + bits_b[None, :]
    union -= similarity
    similarity /= union  # in place: these blocks are large, and memory traffic is most of the time
    return similarity.nan_to_num_(1.0)  # MOSES: two empty fingerprints are identical


def nearest_neighbour_similarity(
    generated: np.ndarray, counts: np.ndarray, reference: np.ndarray, device: str = "cpu"
) -> float:
    """SNN: mean over samples of the highest Tanimoto similarity to any reference fingerprint.

    Args:
        generated: distinct packed fingerprints of the samples, (n, 128) uint8.
        counts: how often each occurs among the samples.
        reference: packed reference fingerprints, (m, 128) uint8.
        device: torch device for the similarity blocks.

    Returns:
        The count-weighted mean of the maxima (NaN without samples or reference).
    """
    if len(generated) == 0 or len(reference) == 0:
        return math.nan
    gen, ref = unpack(generated).to(device), unpack(reference).to(device)
    gen_bits, ref_bits = gen.sum(1, dtype=torch.float32), ref.sum(1, dtype=torch.float32)
    best = torch.zeros(len(gen), device=device)
    for j in range(0, len(ref), REF_CHUNK):
        block, block_bits = ref[j : j + REF_CHUNK], ref_bits[j : j + REF_CHUNK]
        for i in range(0, len(gen), GEN_CHUNK):
            similarity = _tanimoto(gen[i : i + GEN_CHUNK], block, gen_bits[i : i + GEN_CHUNK], block_bits)
            best[i : i + GEN_CHUNK] = torch.maximum(best[i : i + GEN_CHUNK], similarity.max(1).values)
    weights = torch.as_tensor(counts, dtype=torch.float64)
    return float((best.double().cpu() * weights).sum() / weights.sum())


def internal_diversity(fingerprints: np.ndarray, counts: np.ndarray, p: int = 1, device: str = "cpu") -> float:
    """IntDiv_p = 1 - mean_i (mean_j T(i, j)^p)^(1/p) over all samples i, j (repeats and self-pairs included).

    Args:
        fingerprints: distinct packed fingerprints, (n, 128) uint8.
        counts: how often each occurs among the samples.
        p: 1 for IntDiv, 2 for IntDiv2.
        device: torch device for the similarity blocks.

    Returns:
        The internal diversity (NaN without samples).
    """
    if len(fingerprints) == 0:
        return math.nan
    bits = unpack(fingerprints).to(device)
    popcount = bits.sum(1, dtype=torch.float32)
    weights = torch.as_tensor(counts, dtype=torch.float64, device=device)
    total = weights.sum()
    row_means = torch.empty(len(bits), dtype=torch.float64, device=device)
    for i in range(0, len(bits), GEN_CHUNK):
        similarity = _tanimoto(bits[i : i + GEN_CHUNK], bits, popcount[i : i + GEN_CHUNK], popcount).double()
        row_means[i : i + GEN_CHUNK] = similarity.pow(p) @ weights / total
    return float(1 - (row_means.pow(1 / p) * weights).sum() / total)


def property_distance(reference: np.ndarray, generated: np.ndarray, counts: np.ndarray) -> float:
    """Wasserstein-1 distance between reference values and count-weighted generated values (finite ones)."""
    keep_ref, keep_gen = np.isfinite(reference), np.isfinite(generated)
    if not keep_ref.any() or not keep_gen.any():
        return math.nan
    return float(wasserstein_distance(reference[keep_ref], generated[keep_gen], v_weights=counts[keep_gen]))


def _against(prefix: str, stats: ReferenceStats, features, counts, fcd_stats, device: str) -> dict[str, float]:
    fingerprints = np.frombuffer(b"".join(f.fingerprint for f in features), dtype=np.uint8).reshape(-1, 128)
    fragments, scaffolds = Counter(), Counter()
    for f, count in zip(features, counts.tolist(), strict=True):
        fragments.update({fragment: count * n for fragment, n in Counter(f.fragments).items()})
        if f.scaffold is not None:
            scaffolds[f.scaffold] += count
    fcd = math.nan if fcd_stats is None or stats.fcd is None else frechet_distance(stats.fcd, fcd_stats)
    return {
        f"FCD/{prefix}": fcd,
        f"SNN/{prefix}": nearest_neighbour_similarity(fingerprints, counts, stats.fingerprints, device),
        f"Frag/{prefix}": cosine_similarity(stats.fragments, fragments),
        f"Scaf/{prefix}": cosine_similarity(stats.scaffolds, scaffolds),
    }


def evaluate(
    samples: Sequence[str],
    reference: ReferenceStats | None = None,
    train: Container[str] | None = None,
    test_scaffolds: ReferenceStats | None = None,
    kind: Kind = "molecule",
    ks: Sequence[int] = DEFAULT_KS,
    n_jobs: int = 1,
    device: str = "cpu",
    progress: Progress | None = None,
) -> Evaluation:
    """MOSES metrics of generated samples.

    Args:
        samples: one generated SMILES (or PSMILES) per sample; empty strings count as invalid.
        reference: test-set statistics (``reference_stats``) for the ``/Test`` metrics and the
            property distances; None leaves them out.
        train: the training set's canonical SMILES (``training_set``) for ``Novelty``; None leaves it out.
        test_scaffolds: scaffold test-set statistics for the ``/TestSF`` metrics; None leaves them out.
        kind: ``molecule``, or ``polymer`` for PSMILES repeat units.
        ks: the k of the ``unique@k`` metrics.
        n_jobs: worker processes for RDKit.
        device: torch device for ChemNet and the similarity blocks.
        progress: where to draw progress bars.

    Returns:
        The metrics and what the report draws.
    """
    if isinstance(samples, str):  # its letters would be scored as samples
        raise TypeError(f"samples must be a list of SMILES, not one string: evaluate([{samples[:40]!r}]) scores one")
    if not hasattr(samples, "__len__"):  # an iterator: scored more than once below
        raise TypeError(f"samples must be a list of SMILES (list(...) of an iterator), got {type(samples).__name__}")
    refuse_mistyped("", evaluate, {"kind": kind, "ks": ks})
    if len(samples) == 0:
        raise ValueError("no samples to evaluate")
    not_text = [sample for sample in samples if not isinstance(sample, str)]
    if not_text:
        raise TypeError(f"samples must be strings (an invalid one as ''), got {not_text[0]!r}")
    polymer = kind == "polymer"
    checked = map_molecules(partial(canonical_sample, polymer=polymer), samples, n_jobs, progress, "validity")
    metrics = {"valid": sum(smiles is not None for smiles, _ in checked) / len(samples)}
    if polymer:
        metrics["polymer_valid"] = sum(is_polymer for _, is_polymer in checked) / len(samples)
        valid = [smiles for smiles, is_polymer in checked if is_polymer]
    else:
        valid = [smiles for smiles, _ in checked if smiles is not None]
    notes = []
    too_long = sum(len(sample) > MAX_SMILES_CHARS for sample in samples)
    if too_long:
        notes.append(f"{too_long} samples longer than {MAX_SMILES_CHARS:,} characters are counted invalid, unread")
    # The other kind's samples score without an error, and wrongly: say which kind they look like.
    units = sum(is_unit for _, is_unit in checked)
    if not polymer and units:
        notes.append(f"{units} valid samples are polymer repeat units (two *): score them with --kind polymer")
    if polymer:
        # Valid molecules that are no unit: with no * (molecules), or with * but not two single-bonded ones.
        others = [smiles for smiles, is_unit in checked if smiles is not None and not is_unit]
        starred = sum("*" in smiles for smiles in others)
        if len(others) > starred:
            molecules = len(others) - starred
            hint = ": molecules are scored with --kind molecule" if not units else ""
            are = "1 valid sample is a molecule (no *), not a repeat unit"
            if molecules > 1:
                are = f"{molecules} valid samples are molecules (no *), not repeat units"
            notes.append(f"{are}{hint}")
        if starred:
            have = (
                "1 valid sample has a * but is no repeat unit"
                if starred == 1
                else (f"{starred} valid samples have a * but are no repeat units")
            )
            notes.append(f"{have} (two *, each on one single bond)")
    counted = "polymer-valid" if polymer else "valid"  # the samples every metric after validity is of
    for k in ks:
        metrics[f"unique@{k}"] = fraction_unique(valid, k)
        if len(valid) < k:
            notes.append(f"unique@{k} is computed on all {len(valid)} {counted} samples (fewer than {k})")

    occurrences = Counter(valid)
    distinct = list(occurrences)
    counts = np.array([occurrences[s] for s in distinct], dtype=np.int64)
    described = map_molecules(
        partial(molecule_features, filters=not polymer), distinct, n_jobs, progress, "descriptors"
    )
    # A canonical SMILES that RDKit cannot read back (rare) has no descriptors, as in MOSES.
    keep = [i for i, f in enumerate(described) if f is not None]
    features, counts_kept = [described[i] for i in keep], counts[keep]
    properties = np.array([f.properties for f in features], dtype=np.float64).reshape(-1, len(PROPERTIES))

    fcd_stats = None
    needs_fcd = any(s is not None and s.fcd is not None for s in (reference, test_scaffolds))
    if needs_fcd and counts_kept.sum() >= 2:
        smiles = [f.smiles for f in features]
        activations = chemnet_activations(smiles, device, progress=advancer(progress, "ChemNet", len(smiles)))
        fcd_stats = fcd_statistics(activations, counts_kept)
        if counts_kept.sum() < FCD_FEW_SAMPLES:
            notes.append(
                f"FCD from {counts_kept.sum():,} {counted} samples reads higher than from more (it estimates "
                f"their mean and covariance): compare FCDs of equal sample counts (MOSES reports 30,000)"
            )
    elif needs_fcd:
        notes.append("FCD needs at least 2 valid samples (a covariance): n/a")
    for prefix, stats in (("Test", reference), ("TestSF", test_scaffolds)):
        if stats is not None:
            metrics |= _against(prefix, stats, features, counts_kept, fcd_stats, device)
            if stats.fcd is None:
                notes.append(f"FCD/{prefix} needs a reference of at least 2 molecules (a covariance): n/a")

    fingerprints = np.frombuffer(b"".join(f.fingerprint for f in features), dtype=np.uint8).reshape(-1, 128)
    metrics["IntDiv"] = internal_diversity(fingerprints, counts_kept, 1, device)
    metrics["IntDiv2"] = internal_diversity(fingerprints, counts_kept, 2, device)
    if not polymer:
        passes = np.array([f.passes_filters for f in features], dtype=np.float64)
        metrics["Filters"] = float(passes @ counts_kept / counts_kept.sum()) if len(features) else math.nan
    if reference is not None:
        for column, name in enumerate(MOSES_PROPERTIES):
            metrics[name] = property_distance(reference.properties[:, column], properties[:, column], counts_kept)
    if train is not None:
        metrics["Novelty"] = novelty(valid, train)
    return Evaluation(metrics, valid, [distinct[i] for i in keep], counts_kept, properties, notes)
