"""Small types shared by every layer: what a sequence is of, and how it is written.

They live here, below ``data/``, ``chem/`` and ``sampling/``, so that each of those can name
them without importing another.
"""

from __future__ import annotations

from typing import Literal

# A corpus line is a molecule, or a polymer repeat unit (PSMILES: exactly two ``*``).
Kind = Literal["molecule", "polymer"]

# The text a model reads and writes (``polydiff.data.representation``); files are SMILES either way.
RepresentationName = Literal["smiles", "kekule_smiles", "selfies"]
REPRESENTATIONS: tuple[str, ...] = RepresentationName.__args__

# Properties polydiff computes, that a model can be conditioned on and guided toward
# (``polydiff.chem.conditions``): QED, Crippen logP, molecular weight, TPSA and the SA score with
# RDKit, and a polymer repeat unit's class. Any other condition is a column of the training CSV.
ConditionName = Literal["qed", "logp", "mw", "tpsa", "sa", "class"]
CONDITIONS: tuple[str, ...] = ConditionName.__args__

# The classes of polymer repeat units (SMiPoly's, Ohno et al. 2023): the reaction that makes a
# unit in ``polydiff.data.polymers``, the backbone linkage of any unit in ``polydiff.chem.polymer_classes``.
PolymerClass = Literal[
    "polyolefin", "polyester", "polyether", "polyamide", "polyimide", "polyurethane", "polyoxazolidone"
]
POLYMER_CLASSES: tuple[str, ...] = PolymerClass.__args__
