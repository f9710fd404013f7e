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
``*`` is refused, and so is the end before the second; ``*`` has valence 1, so its one bond is
single, and a bracketed ``[*]``, whose bonds are not counted, is refused.

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

import torch
from rdkit import Chem
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from polydiff.chem.molecules import quiet_rdkit
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
UNLIMITED = 8

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


@functools.cache
def bracket_valence(token: str) -> int:
    """The most bonds (bond orders, a bond between aromatic atoms as 1) RDKit accepts on a bracket
    atom, its charge and hydrogens as written: the atom (an aromatic one in its aliphatic form)
    with as many methyl groups as it takes before RDKit refuses it. UNLIMITED where RDKit sets no
    bound below it (metal ions) or does not parse the atom alone, and for ``[*]``."""
    inner = token[1:-1]
    element = inner.lstrip("0123456789")
    if is_star(token) or not element[:1].isalpha():
        return UNLIMITED
    isotope, symbol = inner[: len(inner) - len(element)], element[:2] if element[1:2].islower() else element[:1]
    atom = f"[{isotope}{symbol.capitalize()}{element[len(symbol) :]}]"  # c, n, se: aromatic
    quiet_rdkit()
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


class TokenTable(NamedTuple):
    """What the automaton reads of each token (or token class): its kind, ring label, bond order,
    valence (0 where the kind has none), and whether it is a counted ``*``."""

    kind: Tensor
    label: Tensor
    order: Tensor
    valence: Tensor
    is_star: Tensor


def _table(entries: list[tuple[int, int, bool]], device: torch.device | str) -> TokenTable:
    kind, value, star = (torch.tensor(column, device=device) for column in zip(*entries, strict=True))
    where = {RING: "label", BOND: "order", ATOM: "valence"}
    columns = {name: torch.where(kind == token_kind, value, 0) for token_kind, name in where.items()}
    return TokenTable(kind=kind, is_star=star.bool(), **columns)


@dataclass
class SyntaxFields:
    """The fields of the automaton's state, for R rows (``SyntaxState`` holds states by id)."""

    previous: Tensor  # (R,) kind of the last token
    anchor_left: Tensor  # (R,) bonds the anchor atom may still take
    bond: Tensor  # (R,) order of a pending bond symbol, 0 for none
    branch_start: Tensor  # (R,) bool: an open parenthesis that has no atom yet
    depth: Tensor  # (R,) open parentheses
    branch_left: Tensor  # (R, MAX_DEPTH) bonds left on the atom each open parenthesis branches from
    open_rings: Tensor  # (R, NUM_LABELS) bool
    ring_bond: Tensor  # (R, NUM_LABELS) order of the bond symbol a ring was opened with, 0 for none
    opened_here: Tensor  # (R, NUM_LABELS) bool: opened at the current atom
    stars: Tensor  # (R,) ``*`` atoms written


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
        return SyntaxFields(**self.table.fields(self.ids))


class SmilesSyntax:
    """The SMILES automaton over a tokenizer's vocabulary.

    Args:
        tokenizer: the atom-level SMILES tokenizer (bracket atoms, ``Cl``, ``%nn`` are one token).
        device: where the rows' states live (the tables are put there once, not at every token).
        stars: exactly this many ``*`` atoms per sequence (2: a polymer repeat unit); None: any.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerFast, device: torch.device | str = "cpu", stars: int | None = None
    ) -> None:
        vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        self.tokens = [token for token, _ in vocabulary]  # by id
        self.stars = stars
        # (kind, value, is a counted *) of each token.
        classified = []
        for token in self.tokens:
            kind, value = classify_token(token)
            star = stars is not None and kind == ATOM and is_star(token)
            if star and value != 1:  # [*]: its bonds are not counted
                kind, value, star = NEVER, 0, False
            classified.append((kind, value, star))
        self.by_token = _table(classified, device)  # for ``advance``
        # Whether a token may come next depends on it only through its class: ``allowed`` decides
        # for each of the ~120 distinct classes and spreads that over the ~1,500 tokens.
        classes = sorted(set(classified))
        self.by_class = _table(classes, device)
        self.token_class = torch.tensor([classes.index(key) for key in classified], device=device)
        self.follows = _FOLLOWS.to(device)
        # The automaton works field-wise (``_advance``, ``_answers``) for each state it meets the
        # first time; after that its answers and transitions are looked up by the state's id.
        self.table = StateTable(
            vars(self._start_fields(1, device)),
            lambda fields, tokens: vars(self._advance(SyntaxFields(**fields), tokens)),
            lambda fields: self._answers(SyntaxFields(**fields)),
            len(self.tokens),
            device,
        )

    def start(self, rows: int, device: torch.device | str) -> SyntaxState:
        """The state before the first token, for ``rows`` rows."""
        return SyntaxState(torch.full((rows,), self.table.start_id, dtype=torch.long, device=device), self.table)

    def _start_fields(self, rows: int, device: torch.device | str) -> SyntaxFields:
        zeros = torch.zeros(rows, dtype=torch.long, device=device)
        labels = torch.zeros(rows, NUM_LABELS, dtype=torch.long, device=device)
        return SyntaxFields(
            previous=zeros + START,
            anchor_left=zeros + NO_ANCHOR,
            bond=zeros,
            branch_start=zeros.bool(),
            depth=zeros,
            branch_left=torch.zeros(rows, MAX_DEPTH, dtype=torch.long, device=device),
            open_rings=labels.bool(),
            ring_bond=labels,
            opened_here=labels.bool(),
            stars=zeros,
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

    def allowed_within(self, state: SyntaxState, room: Tensor | None) -> tuple[Tensor, Tensor]:
        """(what the rules allow, what they allow within ``room``), each (R, V) bool: ``allowed``
        with and without the length bound, from one lookup."""
        by_rules, debt = self.table.answer(state.ids)
        return by_rules, by_rules if room is None else by_rules & (debt <= room.unsqueeze(-1))

    def advance(self, state: SyntaxState, tokens: Tensor) -> SyntaxState:
        """The state after each row takes its token, (R,)."""
        return SyntaxState(self.table.step(state.ids, tokens), self.table)

    def _answers(self, state: SyntaxFields) -> tuple[Tensor, Tensor]:
        """(what the rules allow, (R, V) bool; the fewest tokens each row needs after each token
        before it may end, (R, V)), from the state's fields."""
        kind, label, order, valence, is_star = self.by_class
        allowed = self.follows[state.previous][:, kind]
        anchor, need = state.anchor_left.unsqueeze(-1), state.bond.clamp_min(1).unsqueeze(-1)
        balanced = (state.depth == 0).unsqueeze(-1)
        branch_start = state.branch_start.unsqueeze(-1)
        first_atom = (state.previous == START).unsqueeze(-1)
        closing = state.open_rings[:, label]
        ring_need = torch.where(closing, torch.maximum(need, state.ring_bond[:, label]), need)
        ring_mismatch = closing & (need > 1) & (state.ring_bond[:, label] != need)
        # Ring labels do not span a '.', so no token may leave the anchor and every atom an open
        # branch leaves without a bond while a ring is open: nothing could close it.
        open_count = state.open_rings.sum(-1, keepdim=True)
        rings_open, rings_open_after_ring = open_count > 0, torch.where(closing, open_count - 1, open_count + 1) > 0
        level = torch.arange(MAX_DEPTH, device=kind.device)
        top = (state.depth - 1).clamp_min(0).unsqueeze(-1)
        top_left = torch.where(state.depth.unsqueeze(-1) > 0, state.branch_left.gather(1, top), 0)
        below_top_full = ((state.branch_left == 0) | (level >= top)).all(-1, keepdim=True)
        top_left_after_atom = top_left - torch.where(state.branch_start.unsqueeze(-1), need, 0)
        atom_stuck = (valence == need) & below_top_full & (top_left_after_atom == 0) & rings_open
        ring_stuck = (anchor == ring_need) & below_top_full & (top_left == 0) & rings_open_after_ring
        close_stuck = (top_left == 0) & below_top_full & rings_open
        atom_ok = first_atom | ((anchor >= need) & (valence >= need) & ~atom_stuck)
        can_end = balanced & ~rings_open
        if self.stars is not None:
            written = state.stars.unsqueeze(-1)
            atom_ok = atom_ok & (~is_star | (written < self.stars))
            can_end = can_end & (written == self.stars)
        conditions = (
            (ATOM, atom_ok),
            (BOND, anchor >= order),
            # No ring closed at the atom that opened it; a ring bond takes a bond from the anchor. A
            # double or triple bond written at the closure must be the one the ring was opened
            # with: the opening atom's valence counted only that (RDKit writes neither form). A
            # branch starts with an atom, after its bond if it has one: C(-1 is no SMILES.
            (RING, ~state.opened_here[:, label] & (anchor >= ring_need) & ~ring_stuck & ~ring_mismatch & ~branch_start),
            (OPEN, (anchor >= 1) & (state.depth < MAX_DEPTH).unsqueeze(-1)),
            (CLOSE, ~balanced & ~close_stuck),
            (DOT, balanced & ~rings_open),
            (END, can_end),
        )
        for token_kind, condition in conditions:
            allowed &= torch.where(kind == token_kind, condition, True)
        debt = self._debt(state, closing, open_count).to(torch.int16)  # kept per state: a few tokens at most
        return allowed[:, self.token_class], debt[:, self.token_class]

    def _debt(self, state: SyntaxFields, closing: Tensor, open_count: Tensor) -> Tensor:
        """(R, classes): the fewest tokens each row needs after taking a token of each class before it
        may end, [SEP] included: a token per open ring label and per open parenthesis, an atom for
        a pending bond (unless a ring closure takes it) or an empty branch. A lower bound: valence
        may ask for more."""
        kind = self.by_class.kind
        after_atom = open_count + state.depth.unsqueeze(-1) + 1  # close each ring and branch, then end
        debts = (
            (ATOM, after_atom),
            (BOND, after_atom + (open_count == 0).long()),
            (RING, after_atom + torch.where(closing, -1, 1)),
            (OPEN, after_atom + 2),  # an atom in the branch and its ")"
            (CLOSE, after_atom - 1),
            (DOT, after_atom + 1),
        )
        debt = torch.zeros_like(closing, dtype=torch.long)
        for token_kind, value in debts:
            debt = torch.where(kind == token_kind, value, debt)
        return debt

    def _advance(self, state: SyntaxFields, tokens: Tensor) -> SyntaxFields:
        """The fields after each row takes its token, (R,)."""
        kind, label = self.by_token.kind[tokens], self.by_token.label[tokens]
        rows = torch.arange(len(tokens), device=tokens.device)
        need = state.bond.clamp_min(1)
        is_atom, is_ring = kind == ATOM, kind == RING
        is_open, is_close = kind == OPEN, kind == CLOSE

        # An atom bonds to the anchor (unless it starts a fragment) and becomes the anchor; the
        # first atom of a branch takes its bond from the atom the branch leaves.
        bonded = is_atom & (state.previous != START)
        top = (state.depth - 1).clamp_min(0)
        branch_left = state.branch_left.clone()
        branch_left[rows, top] -= torch.where(bonded & state.branch_start, need, 0)
        # A ring closure takes a bond from the anchor, of the order either end declared.
        closing = is_ring & state.open_rings[rows, label]
        ring_order = torch.where(closing, torch.maximum(need, state.ring_bond[rows, label]), need)
        anchor_left = torch.where(is_ring, state.anchor_left - ring_order, state.anchor_left)
        anchor_left = torch.where(is_atom, self.by_token.valence[tokens] - torch.where(bonded, need, 0), anchor_left)
        depth = state.depth + is_open.long() - is_close.long()
        branch_left[rows, state.depth.clamp_max(MAX_DEPTH - 1)] = torch.where(
            is_open, state.anchor_left, branch_left[rows, state.depth.clamp_max(MAX_DEPTH - 1)]
        )
        anchor_left = torch.where(is_close, branch_left[rows, depth.clamp(0, MAX_DEPTH - 1)], anchor_left)
        anchor_left = torch.where(kind == DOT, NO_ANCHOR, anchor_left)

        ring = is_ring.unsqueeze(-1) & (torch.arange(NUM_LABELS, device=tokens.device) == label.unsqueeze(-1))
        opening = ring & ~state.open_rings
        ring_bond = torch.where(opening, state.bond.unsqueeze(-1), state.ring_bond)
        opened_here = torch.where(is_atom.unsqueeze(-1), False, state.opened_here) | opening
        return SyntaxFields(
            previous=kind,
            anchor_left=anchor_left,
            bond=torch.where(kind == BOND, self.by_token.order[tokens], 0),
            branch_start=torch.where(is_open, True, state.branch_start & ~is_atom & ~is_close),
            depth=depth,
            branch_left=branch_left,
            open_rings=state.open_rings ^ ring,
            ring_bond=ring_bond,
            opened_here=opened_here,
            stars=state.stars + self.by_token.is_star[tokens].long(),
        )
