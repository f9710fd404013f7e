"""The class of a polymer repeat unit, read from the linkage on its backbone.

SMiPoly (``polydiff.data.polymers``) names the class of each unit it makes by the reaction that
made it. A generated unit has no reaction, so polydiff reads the class off the chain itself:
the functional group that links the backbone, in the order below (a polyurethane's backbone
holds an ester-like ``O-C(=O)`` too, so the more specific linkage wins):

- ``polyoxazolidone``: an oxazolidin-2-one ring whose nitrogen lies on the backbone;
- ``polyimide``: an imide nitrogen (a ring N between two ring carbonyls) on the backbone;
- ``polyurethane``: ``O-C(=O)-N`` with all three atoms on the backbone;
- ``polyamide``: ``C(=O)-N`` with both atoms on the backbone;
- ``polyester``: ``C(=O)-O`` with both atoms on the backbone (carbonates included, as SMiPoly files them);
- ``polyether``: ``C-O-C`` with the oxygen on the backbone;
- ``polyolefin``: a backbone of carbon atoms only.

Anything else (a sulfide or siloxane chain, say) has no class. The backbone is the shortest path
between the open ends of three units joined head to tail, so a linkage that the chosen frame cuts
in two (``*OCCCCC(*)=O``: the ester closes across the frame) is read whole. On the SMiPoly corpus
this agrees with the reaction's class for most units (docs/design.md gives the share); the
units where they differ are mostly monomers that carry a second linkage on their own backbone.
"""

from __future__ import annotations

from functools import cache

from rdkit import Chem

from polydiff.chem.molecules import is_polymer
from polydiff.types import POLYMER_CLASSES

# Each class: a SMARTS and the indices of its atoms that must lie on the backbone.
LINKAGES: dict[str, tuple[str, tuple[int, ...]]] = {
    "polyoxazolidone": ("[#7;R]1~[#6;R](=[#8])~[#8;R]~[#6;R]~[#6;R]~1", (0,)),
    "polyimide": ("[#6;R](=[#8])~[#7;R]~[#6;R](=[#8])", (2,)),
    # The chain linkages are acyclic bonds: a lactam or cyclic urea inside a monomer links nothing.
    "polyurethane": ("[#8]-!@[#6](=[#8])-!@[#7]", (0, 1, 3)),
    "polyamide": ("[#6](=[#8])-!@[#7]", (0, 2)),
    "polyester": ("[#6](=[#8])-!@[#8]", (0, 2)),
    "polyether": ("[#6]-!@[#8]-!@[#6]", (1,)),
}
assert set(LINKAGES) | {"polyolefin"} == set(POLYMER_CLASSES)


@cache
def _patterns() -> dict[str, tuple[Chem.Mol, tuple[int, ...]]]:
    return {name: (Chem.MolFromSmarts(smarts), atoms) for name, (smarts, atoms) in LINKAGES.items()}


def _chain_of_three(mol: Chem.Mol) -> tuple[Chem.Mol, tuple[int, int]] | None:
    """Three copies of a repeat unit joined head to tail, and the indices of its two open ends (``*``)."""
    head, tail = (atom.GetIdx() for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0)
    size = mol.GetNumAtoms()
    end_atom = {star: mol.GetAtomWithIdx(star).GetNeighbors()[0].GetIdx() for star in (head, tail)}
    chain = Chem.RWMol(Chem.CombineMols(Chem.CombineMols(mol, mol), mol))
    joints = []
    for k in range(2):  # copy k's tail atom bonds to copy k + 1's head atom; the two stars between go
        chain.AddBond(end_atom[tail] + k * size, end_atom[head] + (k + 1) * size, Chem.BondType.SINGLE)
        joints += [tail + k * size, head + (k + 1) * size]
    for index in sorted(joints, reverse=True):
        chain.RemoveAtom(index)
    try:
        Chem.SanitizeMol(chain)
    except Chem.rdchem.MolSanitizeException:
        return None
    ends = (head, tail + 2 * size)
    return chain, tuple(i - sum(j < i for j in joints) for i in ends)


def polymer_class(mol: Chem.Mol | None) -> str | None:
    """The class of a repeat unit (``POLYMER_CLASSES``), or None for a unit of no class or no unit.

    Args:
        mol: a parsed PSMILES; anything but a repeat unit (``polydiff.chem.molecules.is_polymer``)
            has no class.
    """
    joined = _chain_of_three(mol) if is_polymer(mol) else None
    if joined is None:
        return None
    chain, ends = joined
    backbone = set(Chem.GetShortestPath(chain, *ends)[1:-1])
    if not backbone:
        return None
    for name, (pattern, on_backbone) in _patterns().items():
        for match in chain.GetSubstructMatches(pattern):
            if all(match[i] in backbone for i in on_backbone):
                return name
    if all(chain.GetAtomWithIdx(i).GetAtomicNum() == 6 for i in backbone):
        return "polyolefin"
    return None
