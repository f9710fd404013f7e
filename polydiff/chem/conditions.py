"""The properties a model is conditioned on (``data.conditions``) and guided toward at sampling.

Each is computed with RDKit from the molecule as parsed: ``qed`` (Bickerton et al. 2012),
``logp`` (Crippen), ``mw`` (molecular weight, g/mol), ``tpsa`` (topological polar surface
area) and ``sa`` (synthetic accessibility, 1 easy to 10 hard). A line RDKit cannot parse, or a
property RDKit cannot compute for it (QED of a polymer's ``*``), gets NaN: that property is
then left out of that sequence's condition, as if it had been dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors

from polydiff.chem.molecules import parse, sa_score, value_or_nan
from polydiff.types import CONDITIONS

PROPERTY_FUNCTIONS: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": QED.qed,
    "logp": Crippen.MolLogP,
    "mw": Descriptors.MolWt,
    "tpsa": rdMolDescriptors.CalcTPSA,
    "sa": sa_score,
}
assert tuple(PROPERTY_FUNCTIONS) == CONDITIONS


def check_condition_names(names: Sequence[str]) -> None:
    """Raises ValueError for a name that is not a known property, or a repeated one."""
    unknown = [name for name in names if name not in PROPERTY_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown property {unknown[0]!r}: the conditions are {', '.join(CONDITIONS)}")
    if len(set(names)) < len(names):
        raise ValueError(f"a property is named twice in {list(names)}")


def _value(function: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
    value = value_or_nan(function, mol)
    return value if math.isfinite(value) else math.nan  # an infinite condition would poison the embedding


def property_values(smiles: Sequence[str], names: Sequence[str], wanted: np.ndarray | None = None) -> np.ndarray:
    """(n, K) float64: the properties ``names`` of each SMILES, NaN where RDKit fails and where
    ``wanted`` (n, K) bool, if given, is false (those are not computed)."""
    check_condition_names(names)
    functions = [PROPERTY_FUNCTIONS[name] for name in names]
    wanted = np.ones((len(smiles), len(names)), dtype=bool) if wanted is None else np.asarray(wanted, dtype=bool)
    values = np.full((len(smiles), len(names)), math.nan)
    for row, line in enumerate(smiles):
        mol = parse(line) if wanted[row].any() else None
        if mol is not None:
            for k, function in enumerate(functions):
                if wanted[row, k]:
                    values[row, k] = _value(function, mol)
    return values
