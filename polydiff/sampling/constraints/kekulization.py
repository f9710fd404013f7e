"""Whether a SMILES prefix can still become a molecule RDKit accepts: its aromatic atoms' rings.

RDKit accepts lowercase (aromatic) atoms only in rings, and only when the aromatic rings have a
Kekulé structure: double bonds along aromatic ring bonds such that every aromatic carbon, and every
two-connected aromatic nitrogen (pyridine's), has exactly one, while pyrrole-type atoms (``o``,
``s``, ``[nH]``, a three-connected ``n``) have none. That is a matching in the graph of aromatic
ring bonds that covers every atom needing a double bond. Most invalid samples of a SMILES model
fail here ("Can't kekulize"): a five-membered ring of ``c``, a pyrrole ``n`` without its H.

Left to right, an atom stops gaining bonds once the string moves past it. Only the atom being
extended and the atoms with an open branch, while their valence has room, and those with an open
ring label can still gain one (they are "free"); every other atom is final.
``MoleculePrefix.can_complete`` asks whether some continuation could satisfy RDKit: each final
aromatic atom lies on a ring (or on a ring that a future bond through the free atoms could close),
each free one has two bonds that are or may still be ring bonds, and the matching exists with the
free atoms matched or not, as their later bonds may decide; a free aromatic atom that need not
bond again is tried both as final and as bonding again. A token
that makes it false can never be repaired, so a sampler may refuse it, as ``smiles_syntax``
refuses an unbalanced parenthesis.
The test is conservative: it refuses only what no continuation can fix. Bracket atoms other than
``[nH]`` and ``[cH]`` may take a ring double bond or not (charges and hydrogens are not judged).

A sampler asks this of every row at every token, so a prefix keeps its answer and the prefixes it
was extended to, and an extension that touches no aromatic atom inherits its parent's yes without
a search (``_keeps_completable``). The ring structure is carried from token to token as well: each
atom's parent in the depth-first tree that SMILES writes, and the bonds on a cycle, which grow as
rings close, with each atom's bonds and its depth in that tree; a search finds the bonds that later
atoms may still put on a ring by letting the free atoms climb the tree until they meet
(``_ring_bonds``), not by a bridge search over the whole graph.

The build compiles this source with Cython, unchanged (``setup.py``): where the compiled twin
exists and was built from this very file, ``MoleculePrefix`` is its class (``COMPILED``), the
same answers about 1.7x faster.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from polydiff.sampling.constraints.syntax import (
    ATOM,
    BOND,
    BOND_ORDERS,
    CLOSE,
    DOT,
    END,
    OPEN,
    RING,
    classify_token,
)

AROMATIC_BOND = frozenset(("", ":"))  # an unwritten bond between two aromatic atoms is aromatic
MULTIPLE_BONDS = frozenset(("=", "#", "$"))
REQUIRED, FREE, EXCLUDED = range(3)  # must take a ring double bond, may, may not
MAX_SEARCH = 10_000  # matching attempts before an aromatic system is given the benefit of the doubt
MAX_UNDECIDED = 3  # aromatic atoms whose next bond is tried both ways (2^3 cases at most)


@functools.cache
def is_aromatic(atom: str) -> bool:
    """``c``, ``n``, ``[nH]``, ``[se]``, ... ; ``*`` and uppercase atoms are not."""
    element = atom.strip("[]").lstrip("0123456789")
    return element[:1].islower()


@dataclass(frozen=True)
class MoleculePrefix:
    """The graph a SMILES prefix has written so far.

    atoms: atom tokens in order. bonds: (atom, atom, bond symbol), the symbol "" where none was
    written.
    anchor: the atom the next atom or ring bond attaches to (None at the start and after ``.``).
    branch_points: the atom each open parenthesis branches from. open_rings: (label, atom, bond
    symbol) for each open ring label. bond: a pending bond symbol. broken: the prefix wrote a bond
    twice (``CC1C1``), which no continuation repairs.
    aromatic: the indices of the aromatic atoms. parents: for each atom, (the atom it hangs from,
    the bond's index) in a spanning forest of the bonds, None for a tree's root; an atom hangs from
    the atom it was written after (SMILES writes a depth-first tree). cyclic: the bonds on a cycle
    of the written graph, which only grows as ring bonds close.
    incident: for each atom, the indices of its bonds in the order written; symbols: their symbols.
    links: for each atom, (bond index, other atom) of its aromatic bonds (unwritten or ``:``) to
    aromatic atoms, the edges a Kekulé matching may use. places: each atom's (depth in the
    spanning forest, its tree's root). (Carried so that a search reads them without a scan.)
    """

    atoms: tuple[str, ...] = ()
    bonds: tuple[tuple[int, int, str], ...] = ()
    anchor: int | None = None
    branch_points: tuple[int, ...] = ()
    open_rings: tuple[tuple[int, int, str], ...] = ()
    bond: str = ""
    broken: bool = False
    aromatic: tuple[int, ...] = ()
    parents: tuple[tuple[int, int] | None, ...] = ()
    cyclic: frozenset[int] = frozenset()
    incident: tuple[tuple[int, ...], ...] = ()
    symbols: tuple[tuple[str, ...], ...] = ()
    links: tuple[tuple[tuple[int, int], ...], ...] = ()
    places: tuple[tuple[int, int], ...] = ()

    def then(self, token: str) -> MoleculePrefix:
        """The prefix after one more token; assumes well-formed SMILES (``smiles_syntax`` sees to it).

        The same token gives the same object again, so that an answer of ``can_complete`` is
        computed once for a drawn token and the prefix it is committed to.
        """
        # A frozen dataclass: memos go into the instance dict directly, as functools.cached_property's do.
        children = self.__dict__.get("_children")
        if children is None:
            children = self.__dict__["_children"] = {}
        child = children.get(token)
        if child is None:
            kind, value = classify_token(token)
            child = self._extended(token, kind, value)
            if child is self:  # a pad writes nothing; not memoised: a prefix among its own children is a cycle
                return self
            children[token] = child
            if self.__dict__.get("_completable") and self._keeps_completable(token, kind, value, child):
                child.__dict__["_completable"] = True
        return child

    def _keeps_completable(self, token: str, kind: int, value: int, child: MoleculePrefix) -> bool:
        """Whether ``child`` (this prefix and ``token``) is sure to be completable when this prefix is.

        Tokens that add no bond to an aromatic atom and free no aromatic atom: a non-aromatic atom,
        a bond symbol, an opening parenthesis or a ring label, each after a non-aromatic anchor (or
        none). They leave every aromatic atom's bonds and roles as they were, and the ring bonds can
        only grow: an atom that stops being free passes its way to the future atoms on through the
        anchor, which stays free. A closing parenthesis, a dot or the end make an atom final, and
        are checked in full.
        """
        if child.broken or (self.anchor is not None and is_aromatic(self.atoms[self.anchor])):
            return False
        if child.anchor is not None and not child._anchor_is_free():
            return False  # a full anchor (C=O) ends the way through it
        if kind == ATOM:
            return not is_aromatic(token)
        if kind == RING:  # closing it bonds the anchor to the atom that opened it: that one too
            return all(not is_aromatic(self.atoms[atom]) for label, atom, _ in self.open_rings if label == value)
        return kind in (BOND, OPEN)

    def _with(self, **changes: object) -> MoleculePrefix:
        """This prefix with ``changes`` (fields only: not the memos), built without
        ``dataclasses.replace``, whose checks cost more than the rest of a token."""
        child = object.__new__(MoleculePrefix)
        state = child.__dict__
        state.update(self.__dict__)
        for memo in _MEMOS:
            state.pop(memo, None)
        state.update(changes)
        return child

    def _extended(self, token: str, kind: int, value: int) -> MoleculePrefix:
        if kind == ATOM:
            new = len(self.atoms)
            grown = self._with(
                atoms=(*self.atoms, token),
                anchor=new,
                bond="",
                aromatic=(*self.aromatic, new) if is_aromatic(token) else self.aromatic,
                parents=(*self.parents, None if self.anchor is None else (self.anchor, len(self.bonds))),
                places=(*self.places, (0, new) if self.anchor is None else _below(self.places[self.anchor])),
                incident=(*self.incident, ()),
                symbols=(*self.symbols, ()),
                links=(*self.links, ()),
            )
            return grown if self.anchor is None else grown._bonded(self.anchor, new, self.bond)
        if kind == BOND:
            return self._with(bond=token)
        if kind == RING:
            opened = [ring for ring in self.open_rings if ring[0] == value]
            if not opened:
                return self._with(open_rings=(*self.open_rings, (value, self.anchor, self.bond)), bond="")
            (_, start, symbol), anchor, closing = opened[0], self.anchor, len(self.bonds)
            duplicate = any({i, j} == {start, anchor} for i, j, _ in self.bonds)
            path = _tree_path(self.parents, start, anchor)
            if path is None:  # a ring bond across a dot (C1.C1) joins two trees: it is a tree bond
                parents, cyclic = _hung(self.parents, anchor, start, closing), self.cyclic
                places = _places(parents)
            else:
                parents, cyclic = self.parents, self.cyclic.union(path, (closing,))
                places = self.places
            return self._with(
                open_rings=tuple(ring for ring in self.open_rings if ring[0] != value),
                bond="",
                broken=self.broken or duplicate,
                parents=parents,
                cyclic=cyclic,
                places=places,
            )._bonded(start, anchor, self.bond or symbol)
        if kind == OPEN:
            return self._with(branch_points=(*self.branch_points, self.anchor))
        if kind == CLOSE:
            return self._with(anchor=self.branch_points[-1], branch_points=self.branch_points[:-1])
        if kind in (DOT, END):
            return self._with(anchor=None)
        return self

    def _bonded(self, i: int, j: int, symbol: str) -> MoleculePrefix:
        """This prefix, changed in place (a child not yet handed out), with the bond i-j written."""
        k = len(self.bonds)
        incident, symbols = list(self.incident), list(self.symbols)
        for atom in (i, j):
            incident[atom] += (k,)
            symbols[atom] += (symbol,)
        state = self.__dict__
        state["bonds"] = (*self.bonds, (i, j, symbol))
        state["incident"], state["symbols"] = tuple(incident), tuple(symbols)
        if symbol in AROMATIC_BOND and is_aromatic(self.atoms[i]) and is_aromatic(self.atoms[j]):
            links = list(self.links)
            links[i] += ((k, j),)
            links[j] += ((k, i),)
            state["links"] = tuple(links)
        return self

    def free_atoms(self) -> set[int]:
        """Atoms that may still gain bonds: those with an open ring label, and the anchor and branch
        points if a bond is on its way to them or their valence has room for one (``C=O``'s O has
        none, nor has a bonded ``*``: nothing more can go through them)."""
        return set(self._coming())

    def _coming(self) -> dict[int, list[str]]:
        """Each free atom (``free_atoms``) and the symbols of the bonds it is sure to gain ("" where
        none is written yet), in one pass over the open ring labels."""
        coming: dict[int, list[str]] = {}
        for _, atom, bond in self.open_rings:
            coming.setdefault(atom, []).append(bond)
        anchor = self.anchor
        for atom in self.branch_points:
            if atom != anchor and atom not in coming and self._has_room(atom):
                coming[atom] = []
        if anchor is not None:
            to_anchor = coming.setdefault(anchor, [])
            to_anchor += self._coming_to_anchor()
            if not to_anchor and not self._has_room(anchor):
                del coming[anchor]
        return coming

    def _coming_to_anchor(self) -> list[str]:
        """The bond the anchor is sure to gain besides those of its open ring labels, if any."""
        if self.bond or self.branch_points[-1:] == (self.anchor,):  # "=" or "(" just written: one bond
            return [self.bond]
        if self.open_rings and not self.branch_points:
            return [""]  # outside every branch an open ring is closed through the anchor
        return []

    def _anchor_is_free(self) -> bool:
        """Whether the anchor is free (``free_atoms``): a bond is on its way to it or it has room."""
        anchor = self.anchor
        return (
            bool(self._coming_to_anchor())
            or any(atom == anchor for _, atom, _ in self.open_rings)
            or self._has_room(anchor)
        )

    def _has_room(self, atom: int) -> bool:
        """Whether ``atom`` may take one more bond (``_room``)."""
        return _room(self.atoms[atom], self.symbols[atom])

    def can_complete(self) -> bool:
        """Whether some continuation makes every aromatic atom a ring atom with a Kekulé structure."""
        answer = self.__dict__.get("_completable")
        if answer is None:
            answer = self.__dict__["_completable"] = self._search()
        return answer

    def _search(self) -> bool:
        if self.broken:
            return False
        if not self.aromatic:
            return True
        coming = self._coming()  # an atom that is not free has none
        free = set(coming)
        # An aromatic atom that may gain a bond but need not (no bond is on its way) is tried both
        # ways: staying as it is keeps it off any ring it is not on yet, and makes a two-bonded n
        # pyridine-type; gaining one may close a ring through it, and makes that n pyrrole-type.
        # Judged at once, each answer would pass on the other's terms (``c3cccc(C)n3`` inside an
        # open branch with rings left to close).
        undecided = [i for i in self.aromatic if i in free and not coming[i]]
        if len(undecided) > MAX_UNDECIDED:  # beyond a few, judged at once: the benefit of the doubt
            return self._kekulizable(coming, free, ())
        return any(
            self._kekulizable(coming, free.difference(staying), [i for i in undecided if i not in staying])
            for size in range(len(undecided) + 1)
            for staying in itertools.combinations(undecided, size)
        )

    def _kekulizable(self, coming: dict[int, list[str]], free: set[int], gaining: Collection[int]) -> bool:
        """Whether every final aromatic atom lies on a ring and the matching exists, when the atoms in
        ``free`` may gain bonds (``coming``: those they will) and those in ``gaining`` will gain one."""
        ring_bonds = self._ring_bonds(free)
        atoms, symbols, incident = self.atoms, self.symbols, self.incident
        links = self.links  # along aromatic bonds, as written
        role: dict[int, int] = {}
        for i in self.aromatic:
            if i in free:
                # A ring passes through two of its atoms' bonds: ones that may lie on a ring, or ones
                # still to come (C[nH] and Co leave the N and O one bond, so no ring).
                left = _bonds_left(atoms[i], symbols[i])
                if left < 2 and left + sum([bond in ring_bonds for bond in incident[i]]) < 2:
                    return False
                role_i = _role(atoms[i], symbols[i], coming[i], True, i in gaining)
            elif ring_bonds.isdisjoint(incident[i]):
                return False  # a final aromatic atom off every ring
            else:
                role_i = _final_role(atoms[i], symbols[i])
            if role_i is None:
                return False
            # RDKit asks no ring double bond of an aromatic atom without aromatic bonds (C1CnC=C1).
            if role_i != EXCLUDED and links[i]:
                role[i] = role_i
        neighbours = {i: [other for k, other in links[i] if other in role and k in ring_bonds] for i in role}
        return _covering_matching_exists(neighbours, [i for i, role_i in role.items() if role_i == REQUIRED])

    def _ring_bonds(self, free: set[int]) -> set[int]:
        """Indices of the bonds that lie on a ring, now or once later atoms join two free atoms.

        A bond off every cycle of the written graph is a bridge of the spanning forest: it lies on a
        cycle that later tokens can close when the atoms below it in its tree and those above it
        each include a free atom (a path through future atoms then joins the two sides).
        """
        ring = set(self.cyclic)
        if len(free) < 2:
            return ring
        places, parents = self.places, self.parents
        in_tree: dict[int, int] = {}  # root -> free atoms in its tree
        for atom in free:
            root = places[atom][1]
            in_tree[root] = in_tree.get(root, 0) + 1
        # The free atoms climb their trees, deepest first, and merge where they meet: every bond
        # climbed before all of a tree's free atoms have met has free atoms on both sides. The heap
        # holds -(depth * n + atom), one int per atom (cheaper to compare than a tuple).
        n = len(self.atoms)
        gathered = dict.fromkeys(free, 1)  # atom -> free atoms that have climbed to it
        climbing = [-(places[atom][0] * n + atom) for atom in free]
        heapq.heapify(climbing)
        while climbing:
            atom = -heapq.heappop(climbing) % n
            count = gathered.pop(atom)
            if count == in_tree[places[atom][1]]:
                continue
            parent, bond = parents[atom]
            ring.add(bond)
            if parent in gathered:
                gathered[parent] += count
            else:
                gathered[parent] = count
                heapq.heappush(climbing, -(places[parent][0] * n + parent))
        return ring


# What ``then`` and ``can_complete`` keep in an instance, and ``completion.CompletionSearch`` the
# lengths it can still fill: answers about this prefix, which a child must not inherit.
_MEMOS = ("_children", "_completable", "_fills")


@functools.cache
def _room(token: str, written: tuple[str, ...]) -> bool:
    """Whether an atom ``token`` with bonds ``written`` may take one more: its valence (as the
    automaton counts it, a bond between aromatic atoms as 1, a bracket atom's from RDKit) is not
    used up, and an aromatic c or n has fewer than three."""
    if token in ("c", "n") and len(written) >= 3:
        return False
    return sum([BOND_ORDERS.get(symbol, 1) for symbol in written]) < classify_token(token)[1]


@functools.cache
def _bonds_left(token: str, written: tuple[str, ...]) -> int:
    """How many more single bonds an atom ``token`` with bonds ``written`` may take (``_room``)."""
    more: tuple[str, ...] = ()
    while _room(token, written + more):
        more += ("",)
    return len(more)


@functools.cache
def _final_role(token: str, written: tuple[str, ...]) -> int | None:
    """``_role`` of an atom that gains no more bonds: it depends on its token and bonds alone."""
    return _role(token, written, [], False, False)


def _role(token: str, written: Sequence[str], coming: list[str], free: bool, gaining: bool) -> int | None:
    """Whether an aromatic atom needs a double bond inside its aromatic system; None if it has more
    bonds than any aromatic atom of its kind may have. ``written``, ``coming``: the symbols of its
    bonds and of those it is sure to gain; ``free``: it may gain more, ``gaining``: it will."""
    degree = len(written) + len(coming)
    multiple = not (MULTIPLE_BONDS.isdisjoint(written) and MULTIPLE_BONDS.isdisjoint(coming))
    if token in ("o", "s", "[nH]") and degree > 2 and not (token == "s" and multiple):
        return None  # a furan O, thiophene S or pyrrole NH has no room for a substituent
    if token in ("o", "s", "[nH]"):
        return EXCLUDED  # no double bond in the ring
    if token in ("c", "[cH]"):
        # RDKit keeps a written bond as written, between aromatic atoms too, and asks a carbon
        # for a ring double bond while its valence has room for one: ``c1=ccccc1`` is read as
        # C1=C=CC=CC=1, ``c1ccccc1=O`` has no room (an aromatic bond counts 1 here).
        valence = degree + (token == "[cH]")  # each bond 1, unless a multiple one is written
        if multiple:
            valence += sum([BOND_ORDERS[symbol] - 1 for symbol in (*written, *coming) if symbol in MULTIPLE_BONDS])
        if degree > 3 or valence > 4:
            return None
        if valence == 4:
            return EXCLUDED
        # With three bonds a carbon has room for nothing but a double bond along one of them:
        # one it has, unless a bond still to come may be aromatic.
        full = not free or (degree == 3 and AROMATIC_BOND.isdisjoint(coming))
        return REQUIRED if full else FREE
    if multiple:
        return EXCLUDED  # a ring double bond written already (n=O is refused by the valence)
    if token == "n":
        if degree > 3:
            return None
        if degree == 3 or (degree == 2 and gaining):
            return EXCLUDED  # a substituted or bridgehead pyrrole-type n
        return FREE if free else REQUIRED  # pyridine n, unless it gains a third bond
    return FREE  # charged and rarer aromatic atoms: not judged


def _tree_path(parents: tuple[tuple[int, int] | None, ...], a: int, b: int) -> list[int] | None:
    """The bonds on the path between atoms ``a`` and ``b`` in the spanning forest ``parents``
    (``MoleculePrefix.parents``); None when they lie in different trees."""
    ancestors, climbed = {a: 0}, []  # each ancestor of a -> the bonds climbed to reach it
    atom = a
    while (up := parents[atom]) is not None:
        atom, bond = up
        climbed.append(bond)
        ancestors[atom] = len(climbed)
    path, atom = [], b
    while atom not in ancestors:
        up = parents[atom]
        if up is None:
            return None
        atom, bond = up
        path.append(bond)
    return climbed[: ancestors[atom]] + path


def _hung(
    parents: tuple[tuple[int, int] | None, ...], atom: int, parent: int, bond: int
) -> tuple[tuple[int, int] | None, ...]:
    """``parents`` with ``atom``'s tree re-rooted at ``atom`` and hung from ``parent`` by ``bond``."""
    hung, up = list(parents), (parent, bond)
    while True:  # up the old tree, each atom now hangs from the one below it
        up, hung[atom] = hung[atom], up
        if up is None:
            return tuple(hung)
        up, atom = (atom, up[1]), up[0]


def _below(place: tuple[int, int]) -> tuple[int, int]:
    """The place (depth, root) of an atom hung from one at ``place``."""
    return place[0] + 1, place[1]


def _places(parents: tuple[tuple[int, int] | None, ...]) -> tuple[tuple[int, int], ...]:
    """Each atom's (depth, root) in the spanning forest ``parents``."""
    places: list[tuple[int, int] | None] = [None] * len(parents)
    for atom in range(len(parents)):
        path = []
        while places[atom] is None and parents[atom] is not None:
            path.append(atom)
            atom = parents[atom][0]
        if places[atom] is None:  # a root
            places[atom] = (0, atom)
        for below in reversed(path):
            places[below] = _below(places[atom])
            atom = below
    return tuple(places)


def _covering_matching_exists(neighbours: dict[int, list[int]], required: list[int]) -> bool:
    """Whether a matching in the graph covers every required atom (the others may stay unmatched).

    Most systems are matched by each required atom taking the first partner left to it, so that is
    tried first; then a depth-first search (``_matched_from``). Aromatic systems of drug-like
    molecules are small; a search longer than MAX_SEARCH answers yes.
    """
    matched: set[int] = set()
    for atom in required:
        if atom in matched:
            continue
        for other in neighbours[atom]:
            if other not in matched:
                matched.add(atom)
                matched.add(other)
                break
        else:
            break  # no partner left to it: search
    else:
        return True
    matched.clear()
    return _matched_from(neighbours, required, matched, [0])


def _matched_from(
    neighbours: dict[int, list[int]], required: list[int], matched: set[int], attempts: list[int]
) -> bool:
    """Whether the required atoms left out of ``matched`` can be matched, depth-first: the one with
    the fewest options picks a partner first; yes once ``attempts`` (one count, shared by the
    calls) passes MAX_SEARCH. A function of the module, not a closure: a recursive closure is a
    reference cycle, which only the garbage collector frees, and ``generate`` pauses it."""
    attempts[0] += 1
    if attempts[0] > MAX_SEARCH:
        return True
    best: tuple[int, list[int]] | None = None
    for atom in required:
        if atom in matched:
            continue
        options = [other for other in neighbours[atom] if other not in matched]
        if not options:
            return False
        if best is None or len(options) < len(best[1]):
            best = (atom, options)
    if best is None:
        return True
    atom, options = best
    matched.add(atom)
    for other in options:
        matched.add(other)
        if _matched_from(neighbours, required, matched, attempts):
            return True
        matched.discard(other)
    matched.discard(atom)
    return False


def _compiled_twin() -> ModuleType | None:
    """This module compiled by Cython (``setup.py``), if it was built from this very source; None
    where the build found no C compiler, after an edit of this file until the next build, and
    where the source cannot be read to tell."""
    try:
        from polydiff.sampling.constraints import _kekulization_compiled as twin

        digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    except (ImportError, OSError):
        return None
    return twin if getattr(twin, "COMPILED_FROM", None) == digest else None


# The same code compiled, where it is current: the check's users all reach it through this name.
# (The twin runs these lines too, under its own name, and skips them.)
if __name__ == "polydiff.sampling.constraints.kekulization" and (_twin := _compiled_twin()) is not None:
    MoleculePrefix = _twin.MoleculePrefix
COMPILED = MoleculePrefix.__module__ != __name__  # whether the compiled twin answers
