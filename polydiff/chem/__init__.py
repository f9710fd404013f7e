"""Chemistry: MOSES metrics for generated molecules, polymer (PSMILES) validity, and reports."""

from polydiff.chem.metrics import Evaluation, evaluate
from polydiff.chem.molecules import canonical, canonical_polymer, is_polymer
from polydiff.chem.reference import ReferenceStats, reference_stats, training_set

__all__ = [
    "Evaluation",
    "ReferenceStats",
    "canonical",
    "canonical_polymer",
    "evaluate",
    "is_polymer",
    "reference_stats",
    "training_set",
]
