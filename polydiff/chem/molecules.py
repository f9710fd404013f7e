"""One molecule at a time: parsing, canonical SMILES and PSMILES, polymer validity and the MOSES descriptors.

Definitions follow MOSES (molecularsets/moses, ``moses/metrics/utils.py``, ``molsets`` 0.3.1):
a SMILES is valid when RDKit parses and sanitizes it (an empty string is invalid), canonical
SMILES are RDKit's default (isomeric) ones, and the descriptors of a valid molecule are taken
from its canonical SMILES parsed again, as MOSES does.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TypeVar

import numpy as np
from rdkit import Chem, DataStructs, RDConfig, RDLogger, rdBase
from rdkit.Chem import QED, AllChem, Crippen, Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.Scaffolds import MurckoScaffold
from rich.progress import Progress

from polydiff.utils.files import undecodable
from polydiff.utils.parallel import parallel_map

T = TypeVar("T")
R = TypeVar("R")

FINGERPRINT_BITS = 1024  # MOSES: Morgan, radius 2, 1,024 bits
MORGAN_RADIUS = 2
MIN_SCAFFOLD_RINGS = 2  # MOSES's compute_scaffolds drops scaffolds with fewer rings
FILTER_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})
MAX_FILTER_RING = 8  # MOSES's filters reject rings of 8 atoms or more
PROPERTIES = ("logP", "SA", "QED", "weight", "TPSA", "length")  # the first four are MOSES's
# An atom property naming a unit's atom in its closed chain (``polymer_frames``).
UNIT_INDEX = "polydiff_unit_index"
# Bump when ``canonical_polymer`` writes some unit otherwise (2: units with stereo are reframed),
# so that canonical PSMILES cached by an earlier release are computed again.
CANONICAL_PSMILES_VERSION = 2


@dataclass
class MoleculeFeatures:
    """What the metrics need of one valid molecule.

    Attributes:
        smiles: canonical SMILES.
        fingerprint: the 1,024-bit Morgan fingerprint (radius 2), packed into 128 bytes.
        fragments: canonical SMILES of its BRICS fragments (with repeats).
        scaffold: canonical SMILES of its Bemis-Murcko scaffold, None below two rings.
        properties: logP, SA, QED, weight (MolWt), TPSA and canonical SMILES length (NaN where
            RDKit fails, e.g. QED of a polymer's ``*``).
        passes_filters: passes MOSES's MCF, PAINS, atom, charge and ring-size filters (None: not checked).
    """

    smiles: str
    fingerprint: bytes
    fragments: list[str]
    scaffold: str | None
    properties: tuple[float, ...]
    passes_filters: bool | None


def quiet_rdkit() -> None:
    """Silences RDKit's per-molecule parse errors for good, in a process of polydiff's own (a
    command, a worker): a sample file has many invalid lines. Library code uses ``rdkit_silenced``."""
    RDLogger.DisableLog("rdApp.*")


@contextmanager
def rdkit_silenced() -> Iterator[None]:
    """Silences RDKit's log while it lasts; the caller's is as it was afterwards (a script that
    samples or scores molecules still sees its own RDKit errors)."""
    blocked = rdBase.BlockLogs()  # restores the log's state when it goes
    try:
        yield
    finally:
        del blocked


def map_molecules(
    function: Callable[[T], R],
    items: Sequence[T],
    n_jobs: int = 1,
    progress: Progress | None = None,
    description: str = "",
    **options,
) -> list[R]:
    """``parallel_map`` (same arguments) with RDKit's per-molecule log silenced in every process."""
    with rdkit_silenced():  # in this process: ``quiet_rdkit`` runs here too where n_jobs is 1
        return parallel_map(function, items, n_jobs, progress, description, initializer=quiet_rdkit, **options)


# Longer strings are not read: RDKit's SMILES writer recurses along a chain and ended the process
# (a segmentation fault) on a chain of 20,000 atoms; 10,000 were written. Far above any molecule
# a model here writes (128 tokens) or a MOSES set holds (under 100 characters).
MAX_SMILES_CHARS = 5_000


def parse(smiles: str) -> Chem.Mol | None:
    """The molecule of a SMILES, or None when it is empty, longer than ``MAX_SMILES_CHARS``, held
    bytes that are not UTF-8, or RDKit cannot parse and sanitize it."""
    if not smiles or len(smiles) > MAX_SMILES_CHARS or undecodable(smiles):  # RDKit would raise on undecoded bytes
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except ValueError:
        return None
    return mol


def canonical(smiles: str, polymer: bool = False) -> str | None:
    """RDKit's canonical SMILES of a SMILES string, or None when it is invalid.

    With ``polymer``, a repeat unit's is its frame-independent ``canonical_polymer``.
    """
    return canonical_sample(smiles, polymer)[0]


def is_polymer(mol: Chem.Mol | None) -> bool:
    """Whether a molecule is a polymer repeat unit: exactly two ``*`` atoms, each with one single bond,
    joined through the unit (another fragment after a ``.``, a counter-ion, may stand apart, charged
    or not; ``*C.C*`` has no backbone).

    Args:
        mol: a parsed PSMILES (None counts as invalid).

    Returns:
        True for e.g. ``*CC(*)c1ccccc1`` and ``*C=C*``; False for ``*=CC*``, ``CC*``, ``**`` or ``*C(*)(*)C``.
    """
    if mol is None:
        return False
    stars = [atom for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0]
    return (
        len(stars) == 2
        and all(star.GetDegree() == 1 and star.GetBonds()[0].GetBondType() == Chem.BondType.SINGLE for star in stars)
        # Joined through at least one atom: ``**`` (a path of the two stars alone) has no unit.
        and len(Chem.GetShortestPath(mol, stars[0].GetIdx(), stars[1].GetIdx())) > 2
    )


def polymer_frames(mol: Chem.Mol) -> list[str]:
    """RDKit's canonical SMILES of a repeat unit read from each of its frames, the one written first.

    ``*CCO*``, ``*COC*`` and ``*OCC*`` are one polymer (poly(ethylene oxide)) read from different
    backbone bonds. The frames are the single, acyclic bonds on the backbone between the two
    ``*`` atoms, plus the bond that closes the chain. Stereocentres and E/Z bonds keep their
    configuration in every frame: RDKit's ``molzip`` closes the chain, putting the new bond in
    each star's place, and ``FragmentOnBonds`` opens it at the frame's bond.

    Args:
        mol: a repeat unit (``is_polymer(mol)`` holds); labels and charges on its stars are dropped.

    Returns:
        One SMILES per frame.
    """
    mol = Chem.Mol(mol)
    stars = tuple(atom.GetIdx() for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0)
    for star in stars:  # [*:1], [1*], [*-]: labels and charges name an end, not another unit
        atom = mol.GetAtomWithIdx(star)
        atom.SetAtomMapNum(0)
        atom.SetIsotope(0)
        atom.SetFormalCharge(0)
        atom.SetNumExplicitHs(0)
    written = Chem.MolToSmiles(mol)
    ends = tuple(mol.GetAtomWithIdx(star).GetNeighbors()[0].GetIdx() for star in stars)
    if ends[0] == ends[1] or mol.GetBondBetweenAtoms(*ends) is not None:
        return [written]  # the only frame is the one written
    cuts = [
        (u, v)
        for u, v in itertools.pairwise(Chem.GetShortestPath(mol, *ends))
        if (bond := mol.GetBondBetweenAtoms(u, v)).GetBondType() == Chem.BondType.SINGLE and not bond.IsInRing()
    ]
    if not cuts:
        return [written]
    for atom in mol.GetAtoms():
        atom.SetIntProp(UNIT_INDEX, atom.GetIdx())
    for star in stars:
        mol.GetAtomWithIdx(star).SetAtomMapNum(1)
    ring = Chem.molzip(mol)
    index = {atom.GetIntProp(UNIT_INDEX): atom.GetIdx() for atom in ring.GetAtoms()}
    opened = (
        Chem.FragmentOnBonds(ring, [ring.GetBondBetweenAtoms(index[u], index[v]).GetIdx()], dummyLabels=[(0, 0)])
        for u, v in cuts
    )
    return [written, *(Chem.MolToSmiles(unit) for unit in opened)]


def canonical_polymer(mol: Chem.Mol) -> str:
    """The canonical PSMILES of a polymer repeat unit, the same for every way of framing the chain:
    the shortest, then alphabetically first, of its ``polymer_frames``. A doubled unit (``*CCCC*``
    for ``*CC*``) is left as written: a polymer's unit is the one its monomers give.

    Args:
        mol: a repeat unit (``is_polymer(mol)`` holds).

    Returns:
        Its canonical PSMILES.
    """
    return min(polymer_frames(mol), key=lambda smiles: (len(smiles), smiles))


def canonical_sample(line: str, polymer: bool = False) -> tuple[str | None, bool]:
    """A sample line's canonical SMILES (None when invalid) and whether it is a polymer repeat unit.

    With ``polymer``, a repeat unit's canonical SMILES is its frame-independent ``canonical_polymer``.
    """
    mol = parse(line)
    if mol is None:
        return None, False
    repeat_unit = is_polymer(mol)
    return (canonical_polymer(mol) if polymer and repeat_unit else Chem.MolToSmiles(mol)), repeat_unit


@cache
def _sa_scorer():
    # RDKit ships Ertl & Schuffenhauer's SA score as a Contrib script, not as a module.
    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    spec = importlib.util.spec_from_file_location("polydiff_rdkit_sascorer", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"RDKit's SA score script not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sa_score(mol: Chem.Mol) -> float:
    """Synthetic accessibility (1 easy to 10 hard; Ertl & Schuffenhauer 2009), RDKit's Contrib sascorer."""
    score = _sa_scorer().calculateScore(mol)
    return math.nan if score is None else float(score)


@cache
def _filters() -> tuple[tuple[Chem.Mol, DataStructs.ExplicitBitVect], ...]:
    """MOSES's 22 MCF and 480 PAINS queries, each with its pattern fingerprint."""
    data = resources.files("polydiff.chem") / "data"
    with (data / "mcf.csv").open() as mcf:
        smarts = [row["smarts"] for row in csv.DictReader(mcf)]
    with (data / "wehi_pains.csv").open() as pains:
        smarts += [row[0] for row in csv.reader(pains)]
    # MOSES's PAINS file pads the SMARTS column with spaces.
    queries = [Chem.MolFromSmarts(pattern.strip()) for pattern in smarts]
    return tuple((query, Chem.PatternFingerprint(query)) for query in queries)


def passes_filters(mol: Chem.Mol) -> bool:
    """MOSES's ``Filters``: no ring of 8+ atoms, no charge, only C N S O F Cl Br H, no MCF or PAINS match."""
    if any(len(ring) >= MAX_FILTER_RING for ring in mol.GetRingInfo().AtomRings()):
        return False
    if any(atom.GetFormalCharge() != 0 for atom in mol.GetAtoms()):
        return False
    if any(atom.GetSymbol() not in FILTER_ATOMS for atom in mol.GetAtoms()):
        return False
    with_hydrogens = Chem.AddHs(mol)
    # RDKit's substructure screen: a query can only match a molecule whose pattern fingerprint has
    # all of the query's bits. It skips about 95% of the 502 searches (4x faster); on 76,000 MOSES
    # and generated molecules it never skipped a query that matches.
    screen = Chem.PatternFingerprint(with_hydrogens)
    for query, bits in _filters():
        if DataStructs.AllProbeBitsMatch(bits, screen) and with_hydrogens.HasSubstructMatch(query):
            return False
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


@cache
def _morgan():
    return rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=FINGERPRINT_BITS)


def fingerprint(mol: Chem.Mol) -> bytes:
    """The 1,024-bit Morgan fingerprint (radius 2; the bits of RDKit's GetMorganFingerprintAsBitVect), packed."""
    return np.packbits(_morgan().GetFingerprintAsNumPy(mol)).tobytes()


def fragments(mol: Chem.Mol) -> list[str]:
    """The canonical SMILES of the fragments left by cutting every BRICS bond."""
    return Chem.MolToSmiles(AllChem.FragmentOnBRICSBonds(mol)).split(".")


def scaffold(mol: Chem.Mol) -> str | None:
    """The Bemis-Murcko scaffold's canonical SMILES; None when it has fewer than two rings (as MOSES)."""
    try:
        core = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    rings = core.GetRingInfo().NumRings()
    smiles = Chem.MolToSmiles(core)
    return smiles if smiles and rings >= MIN_SCAFFOLD_RINGS else None


def value_or_nan(function: Callable[[Chem.Mol], float], mol: Chem.Mol) -> float:
    """``function(mol)`` as a float, NaN where RDKit raises (e.g. QED of a polymer's ``*``)."""
    try:
        return float(function(mol))
    except (ValueError, RuntimeError, ZeroDivisionError, KeyError):
        return math.nan


def properties(mol: Chem.Mol, smiles: str) -> tuple[float, ...]:
    """logP (Crippen), SA, QED, weight (MolWt), TPSA and SMILES length: the order of ``PROPERTIES``."""
    functions = (Crippen.MolLogP, sa_score, QED.qed, Descriptors.MolWt, rdMolDescriptors.CalcTPSA)
    return (*(value_or_nan(function, mol) for function in functions), float(len(smiles)))


def molecule_features(smiles: str, filters: bool = True) -> MoleculeFeatures | None:
    """All MOSES descriptors of one molecule, computed from its canonical SMILES parsed again.

    Args:
        smiles: a SMILES string (generated samples are passed canonical, as MOSES does).
        filters: also run the (slow: 502 substructure searches) MOSES filters.

    Returns:
        The features, or None when the SMILES does not parse.
    """
    mol = parse(smiles)
    if mol is None:
        return None
    canonical_smiles = Chem.MolToSmiles(mol)
    return MoleculeFeatures(
        smiles=canonical_smiles,
        fingerprint=fingerprint(mol),
        fragments=fragments(mol),
        scaffold=scaffold(mol),
        properties=properties(mol, canonical_smiles),
        passes_filters=passes_filters(mol) if filters else None,
    )
