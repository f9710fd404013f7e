"""SMILES syntax and valence as a token automaton: which tokens may come next in a left-to-right decode.

An autoregressive sampler (block diffusion with one-token blocks) knows the whole prefix when it
draws a token, so it can keep every sample a well-formed SMILES string: parentheses balanced, ring
closures paired, no bond without an atom on both sides, [SEP] only where the string may end, and
no atom of the organic subset (``C``, ``N``, ``O``, ``c``, ...) with more bonds than its valence
allows. This is grammar-constrained decoding (as in SD-VAE, Dai et al., ICLR 2018, and the
constrained decoding of language models). Ring labels do not span a ``.``, so no token may leave
a ring open with no atom left to close it (``C1CC#N``). Whether the lowercase atoms can be
kekulized needs the molecular graph, not this state: ``polydiff.sampling.constraints.kekulization`` checks it.
A bracket atom may have as many bonds as RDKit lets it have, its charge and hydrogens counted
(``[N+]`` four, ``[O-]`` one, ``[nH]`` two); metal ions and ``[*]`` are not limited.

A polymer repeat unit (PSMILES) has exactly two attachment points, each an ``*`` on one single
bond. With ``stars=2`` the automaton holds samples to that as it holds them to valence: a third
``*`` is refused, and so is the end before the second, a ``*`` bonded to the other (``**`` has
no unit between them) or a ``.`` between them (``*C.C*``: no backbone); ``*``, ``[*]`` and
``[*:1]`` alike have valence 1, so the one bond is single.

The state of a row: the kind of its last token; the bonds its "anchor" (the atom the next bond
attaches to) has left; a pending bond symbol; the open parentheses, with the bonds left on the
atom each one branches from; the open ring labels, with the bond symbol each was opened with; and
the labels opened at the current atom (``C11`` would bond an atom to itself). Rows hold their
state by id (``SyntaxState``): each state the automaton meets is computed from its fields once,
with its answers over the vocabulary, and then looked up (``state_table``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from rdkit import Chem
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from polydiff.chem.molecules import rdkit_silenced
from polydiff.sampling.constraints.state_table import StateTable

# Token kinds. START is the state before the first token; it allows what a dot allows.
ATOM, BOND, RING, OPEN, CLOSE, DOT, END, NEVER = range(8)
START = DOT
NUM_LABELS = 100  # ring labels 0-9 and %10-%99
MAX_DEPTH = 16  # nested parentheses tracked; deeper branches are refused
NO_ANCHOR = 99  # the bonds "left" before the first atom of a fragment: nothing to bond to

BOND_ORDERS = {"-": 1, "=": 2, "#": 3, "$": 4, ":": 1, "/": 1, "\\": 1, "~": 1}
# Most bonds an atom of the organic subset may have, counting a bond between two aromatic atoms
# as 1 (so c, with two ring bonds, keeps 2 for a substituent or an exocyclic =O). Bracket atoms
# state their own hydrogens and charge (``bracket_valence``).
VALENCES = {
    "B": 3, "C": 4, "N": 3, "O": 2, "P": 5, "S": 6, "F": 1, "Cl": 1, "Br": 1, "I": 1,
    "b": 3, "c": 4, "n": 3, "o": 2, "p": 3, "s": 4, "*": 1,
}  # fmt: skip
AROMATIC = {"b", "c", "n", "o", "p", "s"}
UNLIMITED = 8
# Alkali and alkaline-earth metals: as cations ([Na+], [Ca+2]) they are counter-ions, which SMILES
# writes apart after a "." (RDKit reads [Na+]C, a methyl radical on a cation, without a word).
SALT_CATIONS = {"Li", "Na", "K", "Rb", "Cs", "Be", "Mg", "Ca", "Sr", "Ba"}

# May a token of kind `next` (column) follow one of kind `previous` (row)? Valence, CLOSE, DOT
# and END have further conditions.
_FOLLOWS = torch.zeros(8, 8, dtype=torch.bool)
for _previous, _next in (
    *((p, n) for p in (ATOM, RING) for n in (ATOM, BOND, RING, OPEN, CLOSE, DOT, END)),
    *((CLOSE, n) for n in (ATOM, BOND, OPEN, CLOSE, DOT, END)),
    (BOND, ATOM),
    (BOND, RING),  # a bond symbol before a ring closure, C=1CCCC1
    (OPEN, ATOM),
    (OPEN, BOND),
    (DOT, ATOM),
):
    _FOLLOWS[_previous, _next] = True


def is_star(token: str) -> bool:
    """``*`` or a bracketed attachment point (``[*]``, ``[*:1]``)."""
    return token == "*" or (token.startswith("[") and token[1:].lstrip("0123456789").startswith("*"))


def is_aromatic(token: str) -> bool:
    """Whether a token is an aromatic atom (``c``, ``n``, ``[nH]``, ``[se]``): one only a ring holds."""
    element = token[1:-1].lstrip("0123456789") if token.startswith("[") and token.endswith("]") else token
    return token in AROMATIC or (token != element and element[:1].islower())


@functools.cache
def bracket_valence(token: str) -> int:
    """The most bonds (bond orders, a bond between aromatic atoms as 1) RDKit accepts on a bracket
    atom, its charge and hydrogens as written: the atom (an aromatic one in its aliphatic form)
    with as many methyl groups as it takes before RDKit refuses it. UNLIMITED where RDKit sets no
    bound below it (metal ions) or does not parse the atom alone, and for ``[*]``; none for an
    alkali or alkaline-earth cation (``SALT_CATIONS``), a counter-ion."""
    inner = token[1:-1]
    element = inner.lstrip("0123456789")
    if is_star(token) or not element[:1].isalpha():
        return UNLIMITED
    isotope, symbol = inner[: len(inner) - len(element)], element[:2] if element[1:2].islower() else element[:1]
    if symbol in SALT_CATIONS and "+" in element:
        return 0
    atom = f"[{isotope}{symbol.capitalize()}{element[len(symbol) :]}]"  # c, n, se: aromatic
    with rdkit_silenced():
        accepted = [bonds for bonds in range(UNLIMITED) if Chem.MolFromSmiles(atom + "(C)" * bonds) is not None]
    if not accepted or accepted[-1] == UNLIMITED - 1:
        return UNLIMITED
    return accepted[-1]


@functools.cache
def classify_token(token: str) -> tuple[int, int]:
    """(kind, ring label / bond order / valence, as the kind has one, else 0) of a vocabulary entry."""
    if token == "[SEP]":
        return END, 0
    if token in ("[PAD]", "[UNK]", "[CLS]", "[MASK]"):
        return NEVER, 0
    if token in VALENCES:
        return ATOM, VALENCES[token]
    if token.startswith("[") and token.endswith("]"):
        return ATOM, bracket_valence(token)
    if token.isdigit() and len(token) == 1:
        return RING, int(token)
    if token.startswith("%") and token[1:].isdigit():
        return RING, int(token[1:])
    if token in BOND_ORDERS:
        return BOND, BOND_ORDERS[token]
    return {"(": OPEN, ")": CLOSE, ".": DOT}.get(token, NEVER), 0


Array = Tensor | np.ndarray


class TokenTable(NamedTuple):
    """What the automaton reads of each token (or token class): its kind, ring label, bond order,
    valence (0 where the kind has none), whether it is a counted ``*`` and whether an aromatic
    atom. Tensors on the
    sampler's device, or numpy arrays for the automaton's own arithmetic."""

    kind: Array
    label: Array
    order: Array
    valence: Array
    is_star: Array
    is_aromatic: Array


def _table(entries: list[tuple[int, int, bool, bool]]) -> TokenTable:
    """The table of ``entries`` (kind, value, is a counted ``*``, is aromatic), as numpy arrays."""
    kind, value, star, aromatic = (np.array(column, dtype=np.int64) for column in zip(*entries, strict=True))
    where = {RING: "label", BOND: "order", ATOM: "valence"}
    columns = {name: np.where(kind == token_kind, value, 0) for token_kind, name in where.items()}
    return TokenTable(kind=kind, is_star=star.astype(bool), is_aromatic=aromatic.astype(bool), **columns)


@dataclass
class SyntaxFields:
    """The fields of the automaton's state, for R rows (``SyntaxState`` holds states by id): numpy
    arrays where the automaton computes with them, tensors where a sampler reads them
    (``SyntaxState.fields``)."""

    previous: Array  # (R,) kind of the last token
    anchor_left: Array  # (R,) bonds the anchor atom may still take
    bond: Array  # (R,) order of a pending bond symbol, 0 for none
    branch_start: Array  # (R,) bool: an open parenthesis that has no atom yet
    depth: Array  # (R,) open parentheses
    branch_left: Array  # (R, MAX_DEPTH) bonds left on the atom each open parenthesis branches from
    open_rings: Array  # (R, NUM_LABELS) bool
    ring_bond: Array  # (R, NUM_LABELS) order of the bond symbol a ring was opened with, 0 for none
    opened_here: Array  # (R, NUM_LABELS) bool: opened at the current atom
    stars: Array  # (R,) ``*`` atoms written
    anchor_star: Array  # (R,) bool: the anchor is an ``*`` with its bond still free (a unit's first atom)


@dataclass
class SyntaxState:
    """Where each row's SMILES prefix stands (R rows): the id of its state in the automaton's table
    of the states it has met (``StateTable``)."""

    ids: Tensor  # (R,)
    table: StateTable = field(repr=False)

    def __getitem__(self, rows: Tensor) -> SyntaxState:
        return SyntaxState(self.ids[rows], self.table)

    def __setitem__(self, rows: Tensor, other: SyntaxState) -> None:
        self.ids[rows] = other.ids

    @property
    def fields(self) -> SyntaxFields:
        """The rows' fields, as tensors where their ids are."""
        fields = self.table.fields(self.ids)
        return SyntaxFields(**{name: torch.from_numpy(value).to(self.ids.device) for name, value in fields.items()})


class SmilesSyntax:
    """The SMILES automaton over a tokenizer's vocabulary.

    Args:
        tokenizer: the atom-level SMILES tokenizer (bracket atoms, ``Cl``, ``%nn`` are one token).
        device: where the rows' states live (the tables are put there once, not at every token).
        stars: exactly this many ``*`` atoms per sequence (2: a polymer repeat unit); None: any.
        dots: whether a ``.`` may be written (a model whose training data had none draws none).
            Without it, an atom that leaves its fragment with no bond to give is refused while a
            polymer unit still misses an attachment point, as it is while a ring is open: only a
            ``.`` could follow it.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        device: torch.device | str = "cpu",
        stars: int | None = None,
        dots: bool = True,
    ) -> None:
        vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        self.tokens = [token for token, _ in vocabulary]  # by id
        self.stars, self.dots = stars, dots
        # (kind, value, is a counted *, is aromatic) of each token.
        classified = []
        for token in self.tokens:
            kind, value = classify_token(token)
            star = stars is not None and kind == ATOM and is_star(token)
            if star:  # an attachment point has one single bond, however it is written (*, [*], [*:1])
                value = 1
            classified.append((kind, value, star, kind == ATOM and is_aromatic(token)))
        # The automaton computes a state it meets the first time field-wise (``_advance``,
        # ``_answers``) in numpy: a few states at a time, where a tensor operation's overhead would
        # be most of its cost. After that, its answers and transitions are looked up by its id.
        self._by_token = _table(classified)
        self.by_token = TokenTable(*(torch.from_numpy(column).to(device) for column in self._by_token))
        # Whether a token may come next depends on it only through its class: ``_answers`` decides
        # for each of the few dozen distinct classes and spreads that over the vocabulary.
        classes = sorted(set(classified))
        self._by_class = _table(classes)
        self._token_class = np.array([classes.index(key) for key in classified], dtype=np.int64)
        self._follows = _FOLLOWS.numpy()
        self.table = StateTable(
            vars(self._start_fields(1)),
            lambda fields, tokens: vars(self._advance(SyntaxFields(**fields), tokens)),
            lambda fields: self._answers(SyntaxFields(**fields)),
            len(self.tokens),
            device,
        )

    def start(self, rows: int, device: torch.device | str) -> SyntaxState:
        """The state before the first token, for ``rows`` rows."""
        return SyntaxState(torch.full((rows,), self.table.start_id, dtype=torch.long, device=device), self.table)

    def _start_fields(self, rows: int) -> SyntaxFields:
        zeros = np.zeros(rows, dtype=np.int64)
        labels = np.zeros((rows, NUM_LABELS), dtype=np.int64)
        return SyntaxFields(
            previous=zeros + START,
            anchor_left=zeros + NO_ANCHOR,
            bond=zeros,
            branch_start=zeros.astype(bool),
            depth=zeros,
            branch_left=np.zeros((rows, MAX_DEPTH), dtype=np.int64),
            open_rings=labels.astype(bool),
            ring_bond=labels,
            opened_here=labels.astype(bool),
            stars=zeros,
            anchor_star=zeros.astype(bool),
        )

    def allowed(self, state: SyntaxState, room: Tensor | None = None) -> Tensor:
        """(R, V) bool: the tokens each row may take next.

        Args:
            state: the rows' states.
            room: (R,) positions each row has left after this token, when its length is bounded:
                then a token is allowed only if the end stays within reach (``_debt``), so that no
                row runs out of positions with a ring or a parenthesis still open.
        """
        return self.allowed_within(state, room)[1]

    def allowed_within(
        self, state: SyntaxState, room: Tensor | None, columns: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(what the rules allow, what they allow within ``room``), each (R, V) bool: ``allowed``
        with and without the length bound, from one lookup; (R, len(columns)) over the token ids
        ``columns`` alone, when given (a sampler that may draw only those)."""
        by_rules, debt = self.table.answer(state.ids, columns)
        return by_rules, by_rules if room is None else by_rules & (debt <= room.unsqueeze(-1))

    def advance(self, state: SyntaxState, tokens: Tensor) -> SyntaxState:
        """The state after each row takes its token, (R,)."""
        return SyntaxState(self.table.step(state.ids, tokens), self.table)

    def _answers(self, state: SyntaxFields) -> tuple[np.ndarray, np.ndarray]:
        """(what the rules allow, (R, V) bool; the fewest tokens each row needs after each token
        before it may end, (R, V)), from the state's fields."""
        kind, label, order, valence, is_star, _ = self._by_class
        allowed = self._follows[state.previous][:, kind]
        anchor, need = state.anchor_left[:, None], np.maximum(state.bond, 1)[:, None]
        balanced = (state.depth == 0)[:, None]
        branch_start = state.branch_start[:, None]
        first_atom = (state.previous == START)[:, None]
        closing = state.open_rings[:, label]
        ring_need = np.where(closing, np.maximum(need, state.ring_bond[:, label]), need)
        ring_mismatch = closing & (need > 1) & (state.ring_bond[:, label] != need)
        # Ring labels do not span a '.', so no token may leave the anchor and every atom an open
        # branch leaves without a bond while a ring is open: nothing could close it.
        open_count = state.open_rings.sum(-1, keepdims=True)
        rings_open, rings_open_after_ring = open_count > 0, np.where(closing, open_count - 1, open_count + 1) > 0
        level = np.arange(MAX_DEPTH)
        top = np.maximum(state.depth - 1, 0)[:, None]
        top_left = np.where(state.depth[:, None] > 0, np.take_along_axis(state.branch_left, top, 1), 0)
        below_top_full = ((state.branch_left == 0) | (level >= top)).all(-1, keepdims=True)
        top_left_after_atom = top_left - np.where(branch_start, need, 0)
        # A polymer unit still missing a * cannot end, nor take a '.' once it has one * (or
        # where '.' is never written): a token that leaves no bond to give is a dead end there too.
        stars_blocked = np.zeros_like(is_star)
        if self.stars is not None:
            written_after = state.stars[:, None] + is_star
            stars_blocked = (written_after < self.stars) & ((written_after > 0) | (not self.dots))
        atom_stuck = (valence == need) & below_top_full & (top_left_after_atom == 0) & (rings_open | stars_blocked)
        ring_stuck = (anchor == ring_need) & below_top_full & (top_left == 0) & (rings_open_after_ring | stars_blocked)
        close_stuck = (top_left == 0) & below_top_full & (rings_open | stars_blocked)
        atom_ok = first_atom | ((anchor >= need) & (valence >= need) & ~atom_stuck)
        can_end = dot_ok = balanced & ~rings_open
        if self.stars is not None:
            written = state.stars[:, None]
            # No '.' between the two *: each fragment after it is another molecule (*C.C* has no backbone);
            # a counter-ion before the unit or after it is fine.
            dot_ok = dot_ok & ((written == 0) | (written == self.stars))
            # No * on the other *: a unit needs an atom between its two attachment points (** is none).
            atom_ok = atom_ok & (~is_star | ((written < self.stars) & ~state.anchor_star[:, None]))
            can_end = can_end & (written == self.stars)
        conditions = (
            (ATOM, atom_ok),
            (BOND, anchor >= order),
            # No ring closed at the atom that opened it; a ring bond takes a bond from the anchor. A
            # double or triple bond written at the closure must be the one the ring was opened
            # with: the opening atom's valence counted only that (RDKit writes neither form). A
            # branch starts with an atom, after its bond if it has one: C(-1 is no SMILES.
            (RING, ~state.opened_here[:, label] & (anchor >= ring_need) & ~ring_stuck & ~ring_mismatch & ~branch_start),
            (OPEN, (anchor >= 1) & (state.depth < MAX_DEPTH)[:, None]),
            (CLOSE, ~balanced & ~close_stuck),
            (DOT, dot_ok),
            (END, can_end),
        )
        for token_kind, condition in conditions:
            allowed = allowed & np.where(kind == token_kind, condition, True)
        debt = self._debt(state, closing, open_count).astype(np.int16)  # kept per state: a few tokens at most
        return allowed[:, self._token_class], debt[:, self._token_class]

    def _debt(self, state: SyntaxFields, closing: np.ndarray, open_count: np.ndarray) -> np.ndarray:
        """(R, classes): the fewest tokens each row needs after taking a token of each class before it
        may end, [SEP] included: a token per open ring label and per open parenthesis, an atom for
        a pending bond (unless a ring closure takes it) or an empty branch, two atoms for a ring label
        opened, an atom or bond before a closure after ``)``, a ring for an aromatic atom written
        where none is open, and for a polymer model each ``*`` still missing (one of which may be
        the atom a branch, a bond or a new fragment needs: ``C(*)*``; the first * of a sequence
        needs an atom after it besides). A lower bound: valence may
        ask for more, and so may a ring opened earlier."""
        kind = self._by_class.kind
        after_atom = open_count + state.depth[:, None] + 1  # close each ring and branch, then end
        # An aromatic atom lies on a ring: with none open, a label, two more atoms and the closure at least.
        ringless = self._by_class.is_aromatic & (open_count == 0)
        debts = (
            (ATOM, after_atom + np.where(ringless, 4, 0)),
            (BOND, after_atom + (open_count == 0)),
            # A ring label opened needs two atoms before its closure: the first is bonded to the atom
            # that opened it already (C1C1 would bond them twice), and closing on that atom is no ring.
            (RING, after_atom + np.where(closing, -1, 3)),
            (OPEN, after_atom + 2),  # an atom in the branch and its ")"
            (CLOSE, after_atom - 1 + (open_count > 0)),  # no ring closure right after ")"
            (DOT, after_atom + 1),
        )
        debt = np.zeros(closing.shape, dtype=np.int64)
        for token_kind, value in debts:
            debt = np.where(kind == token_kind, value, debt)
        if self.stars is not None:  # and a token for each * still to be written, less one that is that atom
            missing = np.maximum(self.stars - state.stars[:, None] - self._by_class.is_star, 0)
            star_may_be_the_atom = (kind == OPEN) | (kind == DOT) | ((kind == BOND) & (open_count == 0))
            debt = debt + np.maximum(missing - star_may_be_the_atom, 0)
            # A * that starts the sequence bonds to an atom, which the other * cannot be (no **):
            # *C* is the shortest unit.
            starts = (state.previous == START)[:, None] & self._by_class.is_star & (missing > 0)
            debt = debt + starts
        return debt

    def _advance(self, state: SyntaxFields, tokens: np.ndarray) -> SyntaxFields:
        """The fields after each row takes its token, (R,)."""
        kind, label = self._by_token.kind[tokens], self._by_token.label[tokens]
        rows = np.arange(len(tokens))
        need = np.maximum(state.bond, 1)
        is_atom, is_ring = kind == ATOM, kind == RING
        is_open, is_close = kind == OPEN, kind == CLOSE

        # An atom bonds to the anchor (unless it starts a fragment) and becomes the anchor; the
        # first atom of a branch takes its bond from the atom the branch leaves.
        bonded = is_atom & (state.previous != START)
        top = np.maximum(state.depth - 1, 0)
        branch_left = state.branch_left.copy()
        branch_left[rows, top] -= np.where(bonded & state.branch_start, need, 0)
        # A ring closure takes a bond from the anchor, of the order either end declared.
        closing = is_ring & state.open_rings[rows, label]
        ring_order = np.where(closing, np.maximum(need, state.ring_bond[rows, label]), need)
        anchor_left = np.where(is_ring, state.anchor_left - ring_order, state.anchor_left)
        anchor_left = np.where(is_atom, self._by_token.valence[tokens] - np.where(bonded, need, 0), anchor_left)
        depth = state.depth + is_open - is_close
        level = np.minimum(state.depth, MAX_DEPTH - 1)
        branch_left[rows, level] = np.where(is_open, state.anchor_left, branch_left[rows, level])
        anchor_left = np.where(is_close, branch_left[rows, np.clip(depth, 0, MAX_DEPTH - 1)], anchor_left)
        anchor_left = np.where(kind == DOT, NO_ANCHOR, anchor_left)

        ring = is_ring[:, None] & (np.arange(NUM_LABELS) == label[:, None])
        opening = ring & ~state.open_rings
        ring_bond = np.where(opening, state.bond[:, None], state.ring_bond)
        opened_here = np.where(is_atom[:, None], False, state.opened_here) | opening
        return SyntaxFields(
            previous=kind,
            anchor_left=anchor_left,
            bond=np.where(kind == BOND, self._by_token.order[tokens], 0),
            branch_start=np.where(is_open, True, state.branch_start & ~is_atom & ~is_close),
            depth=depth,
            branch_left=branch_left,
            open_rings=state.open_rings ^ ring,
            ring_bond=ring_bond,
            opened_here=opened_here,
            stars=state.stars + self._by_token.is_star[tokens],
            # After ")" the anchor is the atom the branch left, which the branch bonded: a * has no
            # bond left then, so it counts as no *.
            anchor_star=np.where(
                is_atom, self._by_token.is_star[tokens], state.anchor_star & ~is_close & (kind != DOT)
            ),
        )
