"""The properties a model is conditioned on (``data.conditions``) and guided toward at sampling.

Each is computed with RDKit from the molecule as parsed: ``qed`` (Bickerton et al. 2012),
``logp`` (Crippen), ``mw`` (molecular weight, g/mol), ``tpsa`` (topological polar surface
area) and ``sa`` (synthetic accessibility, 1 easy to 10 hard). A line RDKit cannot parse, or a
property RDKit cannot compute for it (QED of a polymer's ``*``), gets NaN: that property is
then left out of that sequence's condition, as if it had been dropped.

``class`` is categorical: the class of a polymer repeat unit, read off its backbone
(``polydiff.chem.polymer_classes``). The model reads it one-hot, one column per class
(``class=polyamide``, ...; ``condition_columns``), all NaN when it is left out or the unit has
no class. Numeric properties take one column each.

Any other name is a numeric column of the user's training CSV (a polymer's ``Tg``, a measured
solubility): its values are read with the SMILES (``polydiff.data.token_cache``), not computed,
and an empty or non-numeric cell leaves it out of that sequence's condition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors

from polydiff.chem.molecules import parse, sa_score, value_or_nan
from polydiff.chem.polymer_classes import polymer_class
from polydiff.types import CONDITIONS, POLYMER_CLASSES

PROPERTY_FUNCTIONS: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": QED.qed,
    "logp": Crippen.MolLogP,
    "mw": Descriptors.MolWt,
    "tpsa": rdMolDescriptors.CalcTPSA,
    "sa": sa_score,
}
# What each computed property can take at all: a target past these no molecule can meet.
PROPERTY_RANGES: dict[str, tuple[float, float]] = {
    "qed": (0.0, 1.0),
    "logp": (-math.inf, math.inf),
    "mw": (0.0, math.inf),
    "tpsa": (0.0, math.inf),
    "sa": (1.0, 10.0),
}
# Categorical conditions and their categories, each one column of the model's condition.
CATEGORIES: dict[str, tuple[str, ...]] = {"class": POLYMER_CLASSES}
# A category with fewer training sequences is too thin to learn, and is not offered for sampling.
MIN_CATEGORY_SEQUENCES = 1_000
assert (*PROPERTY_FUNCTIONS, *CATEGORIES) == CONDITIONS and PROPERTY_RANGES.keys() == PROPERTY_FUNCTIONS.keys()


def data_columns(names: Sequence[str]) -> list[str]:
    """The conditions among ``names`` that are read from the training CSV, not computed by RDKit."""
    return [name for name in names if name not in CONDITIONS]


def check_condition_names(names: Sequence[str], kind: str | None = None, header: Sequence[str] | None = None) -> None:
    """Raises ValueError for a repeated name, a polymer ``class`` asked of molecules (given the
    data's ``kind``), or, given the training file's CSV ``header``, a name that is neither a
    property polydiff computes nor one of its columns, or both."""
    if len(set(names)) < len(names):
        raise ValueError(f"a property is named twice in {list(names)}")
    if kind is not None and "class" in names and kind != "polymer":
        raise ValueError("conditions: class is a polymer repeat unit's class: it needs kind: polymer")
    if header is None:
        return
    # A measured logp beside RDKit's: reading either one silently would train on what the user did not mean.
    shadowed = [name for name in names if name in PROPERTY_FUNCTIONS and name in header]
    if shadowed:
        name = shadowed[0]
        raise ValueError(
            f"conditions: {name!r} is a property polydiff computes with RDKit, and the training CSV has a "
            f"column {name!r} too: rename the column (say {name}_measured) and name that to train on its values"
        )
    unknown = [name for name in data_columns(names) if name not in header]
    if unknown:
        columns = (
            f"or a column of the training CSV ({', '.join(header)})"
            if header
            else "or, with a CSV training file, one of its columns"
        )
        known = [*CONDITIONS, *header]
        # Sampling reads names in any case (logP, TG); a fit keeps the case its columns are written in.
        same = [candidate for candidate in known if candidate.casefold() == unknown[0].casefold()]
        hint = f" (names keep their case: did you mean {same[0]!r}?)" if same else ""
        raise ValueError(
            f"unknown property {unknown[0]!r}{hint}: the conditions are {', '.join(CONDITIONS)}, {columns}"
        )


def _value(function: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
    value = value_or_nan(function, mol)
    return value if math.isfinite(value) else math.nan  # an infinite condition would poison the embedding


def condition_columns(names: Sequence[str]) -> list[str]:
    """The columns of the condition the model reads for properties ``names``: a numeric property
    is one column (``logp``), a categorical one a column per category (``class=polyamide``, ...)."""
    return [column for name in names for column in _columns(name)]


def _columns(name: str) -> list[str]:
    return [f"{name}={category}" for category in CATEGORIES[name]] if name in CATEGORIES else [name]


def categorical_columns(names: Sequence[str]) -> np.ndarray:
    """(columns,) bool: which columns of ``condition_columns(names)`` are one-hot categories."""
    return np.array([name in CATEGORIES for name in names for _ in _columns(name)], dtype=bool)


def property_values(
    smiles: Sequence[str],
    names: Sequence[str],
    wanted: np.ndarray | None = None,
    given: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, columns) float64: the properties ``names`` of each SMILES in ``condition_columns``
    layout, NaN where RDKit fails and where ``wanted`` (n, K) bool, if given, is false (those
    are not computed). A data column's values come from ``given`` (name: (n,) floats)."""
    check_condition_names(names)
    given = given or {}
    missing = [name for name in data_columns(names) if name not in given]
    if missing:
        raise ValueError(f"unknown property {missing[0]!r}: the conditions are {', '.join(CONDITIONS)}")
    wanted = np.ones((len(smiles), len(names)), dtype=bool) if wanted is None else np.asarray(wanted, dtype=bool)
    spans, start = [], 0
    for name in names:
        spans.append(slice(start, start + len(_columns(name))))
        start += len(_columns(name))
    values = np.full((len(smiles), start), math.nan)
    computed = [k for k, name in enumerate(names) if name in CONDITIONS]
    for k, name in enumerate(names):
        if name in given:
            values[:, spans[k].start] = np.where(wanted[:, k], np.asarray(given[name], dtype=np.float64), math.nan)
    for row, line in enumerate(smiles):
        mol = parse(line) if wanted[row, computed].any() else None
        if mol is None:
            continue
        for k in computed:
            name, span = names[k], spans[k]
            if not wanted[row, k]:
                continue
            if name in CATEGORIES:
                category = polymer_class(mol)
                if category is not None:
                    values[row, span] = np.asarray(CATEGORIES[name]) == category
            else:
                values[row, span] = _value(PROPERTY_FUNCTIONS[name], mol)
    return values
