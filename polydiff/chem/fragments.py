"""Fragments a chemist fixes: ``[*]`` attachment points, the text a left-to-right decoder writes
around them, and the check that a molecule keeps them.

A request is one fragment with one ``[*]`` (extend a motif), one fragment with several (decorate
a scaffold), or two fragments with one ``[*]`` each (link them), GenMol's tasks (Lee et al.,
2025). Each ``[*]`` becomes a *hole* that the model fills with a substituent of at least one atom.
The fragment is written as SMILES rooted at a real atom, so that an attachment point, an atom
with one bond, comes out either as the last atom of a branch (``C(*)(=O)c1ccccc1``, a hole closed
by that branch's ``)``) or as the last atom of the string (``c1ccc(*)cc1*``, a hole closed by the
end). For linking, the second fragment is written from its attachment atom on and is appended
where the model closes the first fragment's hole: the linker runs from one to the other.

A small group to extend (``[*]C(F)(F)F``, ``[*]N(C)C``: ``SMALL_GROUP`` heavy atoms or fewer) is
written the other way round, as the second fragment of a link with nothing before it: the model
writes a molecule and the group is appended where it ends. Written first, the group's text up to
its hole reads as a molecule nearly done (``FC(F)(F)``), and the model closed it with one atom:
CF4 in 40 of 40 samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rdkit import Chem

from polydiff.chem.molecules import parse

Task = Literal["extend", "decorate", "link"]
# The most heavy atoms of a group extended by writing the molecule first (docs/design.md: so, every one
# of 40 samples extending CF3, CHF2, tBu or NMe2 differed; with the group written first, 3 to 58% did).
SMALL_GROUP = 5


@dataclass(frozen=True)
class FragmentTemplate:
    """What a decoder writes for a fragment request.

    Attributes:
        task: ``extend``, ``decorate`` or ``link``.
        pieces: fixed SMILES text around the holes, one more than there are holes; the piece after
            a ``branch`` hole starts with the ``)`` that closes it, the piece after a ``tail`` hole is empty.
        holes: ``branch`` or ``tail``, per hole.
        suffix: for ``link`` and a small group's ``extend``, the (second) fragment from its
            attachment atom on, written where the (single) hole is closed; None otherwise.
        fragments: the fragments as given, for ``keeps_fragments``.
    """

    task: Task
    pieces: tuple[str, ...]
    holes: tuple[str, ...]
    suffix: str | None
    fragments: tuple[str, ...]


def _fragment(text: str) -> Chem.Mol:
    mol = Chem.MolFromSmiles(text) if text else None
    if mol is None:
        raise ValueError(f"fragment {text!r} is not a SMILES RDKit can read")
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 0:
            if atom.GetDegree() != 1:
                raise ValueError(f"fragment {text!r}: each [*] must have exactly one bond")
            atom.SetIsotope(0)
            atom.SetAtomMapNum(0)
    if mol.GetNumAtoms() == sum(atom.GetAtomicNum() == 0 for atom in mol.GetAtoms()):
        raise ValueError(f"fragment {text!r} has no atom besides its attachment points")
    return mol


def _attachments(mol: Chem.Mol) -> list[Chem.Atom]:
    return [atom for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0]


def _with_holes(mol: Chem.Mol, text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The SMILES of ``mol`` split at its attachment points, and the kind of each hole."""
    # Of the roots at real atoms, the one that writes the most fixed text before the first hole:
    # the model then fills the holes with the most of the fragment in view.
    # RDKit writes an attachment point "[*]" beside some bracket atoms ("[U][*]"), else "*".
    texts = {
        Chem.MolToSmiles(mol, rootedAtAtom=atom.GetIdx()).replace("[*]", "*")
        for atom in mol.GetAtoms()
        if atom.GetAtomicNum()
    }
    pieces = max(sorted(texts), key=lambda smiles: len(smiles.split("*")[0])).split("*")
    holes = []
    for after in pieces[1:]:
        if after.startswith(")"):
            holes.append("branch")
        elif after == "":
            holes.append("tail")
        else:  # an atom with one bond is always last in its branch or in the string
            raise ValueError(f"fragment {text!r}: could not place its attachment points")
    return tuple(pieces), tuple(holes)


def _from_attachment(mol: Chem.Mol) -> str:
    """The SMILES of a one-``[*]`` fragment without its ``[*]``, starting at the atom it was bonded
    to, led by the symbol of that bond (``=O``, ``/C=C/F``; none for a single bond). Written rooted
    at the ``[*]`` and cut after it, so that its atom keeps its hydrogens and stereo: the molecule
    without the ``[*]`` would be another (``[*]S(=O)(=O)C`` as ``[SH](C)(=O)=O``)."""
    (star,) = _attachments(mol)
    return Chem.MolToSmiles(mol, rootedAtAtom=star.GetIdx()).removeprefix("[*]").removeprefix("*")


def fragment_template(text: str) -> FragmentTemplate:
    """The template of a request such as ``c1ccc([*])cc1[*]`` or ``[*]C(=O)O.[*]N1CCCC1``.

    Raises:
        ValueError: for a fragment RDKit cannot read, an attachment point with more than one bond,
            a request that is not one fragment with ``[*]`` or two fragments with one ``[*]`` each.
    """
    parts = text.split(".")
    mols = [_fragment(part) for part in parts]
    counts = [len(_attachments(mol)) for mol in mols]
    if len(mols) == 1 and counts[0] == 1 and mols[0].GetNumHeavyAtoms() <= SMALL_GROUP:
        return FragmentTemplate("extend", ("", ""), ("tail",), _from_attachment(mols[0]), tuple(parts))
    if len(mols) == 1 and counts[0] >= 1:
        pieces, holes = _with_holes(mols[0], text)
        return FragmentTemplate("extend" if counts[0] == 1 else "decorate", pieces, holes, None, tuple(parts))
    if len(mols) == 2 and counts == [1, 1]:
        pieces, holes = _with_holes(mols[0], parts[0])
        return FragmentTemplate("link", pieces, holes, _from_attachment(mols[1]), tuple(parts))
    raise ValueError(
        f"fragments {text!r}: give one fragment with [*] attachment points (extend or decorate it) "
        "or two fragments with one [*] each (link them), separated by '.'"
    )


def _query(text: str) -> Chem.Mol:
    """A fragment as a substructure query: each ``[*]`` (labelled or not) matches any atom, and each
    other atom has the bonds it has in the fragment and no more: a substituent on the N of
    ``c1ccccc1C(=O)N[*]`` besides the one at ``[*]`` makes another fragment (a tertiary amide)."""
    parameters = Chem.AdjustQueryParameters.NoAdjustments()
    parameters.makeDummiesQueries = True
    parameters.adjustDegree = True
    parameters.adjustDegreeFlags = Chem.AdjustQueryWhichFlags.ADJUST_IGNOREDUMMIES
    return Chem.AdjustQueryProperties(_fragment(text), parameters)


def keeps_fragments(smiles: str, fragments: Sequence[str]) -> bool:
    """Whether a molecule contains every fragment on atoms of its own (no two fragments sharing a
    non-attachment atom), each ``[*]`` standing for some atom of the molecule, each other atom
    bonded as in its fragment (substituents only where the fragment has a ``[*]``) and each of its
    stereocentres kept: ``[*][C@H](F)Cl`` completed with an F is no stereocentre any more."""
    mol = parse(smiles)
    if mol is None:
        return False
    matches = []
    for text in fragments:
        query = _query(text)
        real = [atom.GetIdx() for atom in query.GetAtoms() if atom.GetAtomicNum()]
        found = mol.GetSubstructMatches(query, uniquify=False, maxMatches=1000, useChirality=True)
        if not found:
            return False
        matches.append([frozenset(match[i] for i in real) for match in found])
    return _disjoint(matches, frozenset())


def _disjoint(matches: list[list[frozenset[int]]], used: frozenset[int]) -> bool:
    if not matches:
        return True
    return any(not (atoms & used) and _disjoint(matches[1:], used | atoms) for atoms in matches[0])
