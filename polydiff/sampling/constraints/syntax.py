"""SMILES syntax and valence as a token automaton: which tokens may come next in a left-to-right decode.

An autoregressive sampler (block diffusion with one-token blocks) knows the whole prefix when it
draws a token, so it can keep every sample a well-formed SMILES string: parentheses balanced, ring
closures paired, no bond without an atom on both sides, [SEP] only where the string may end, and
no atom of the organic subset (``C``, ``N``, ``O``, ``c``, ...) with more bonds than its valence
allows. This is grammar-constrained decoding (as in SD-VAE, Dai et al., ICLR 2018, and the
constrained decoding of language models). Ring labels do not span a ``.``, so no token may leave
a ring open with no atom left to close it (``C1CC#N``). Whether the lowercase atoms can be
kekulized needs the molecular graph, not this state: ``polydiff.sampling.constraints.kekulization`` checks it.
Bracket atoms are not counted.

The state of a row: the kind of its last token; the bonds its "anchor" (the atom the next bond
attaches to) has left; a pending bond symbol; the open parentheses, with the bonds left on the
atom each one branches from; the open ring labels, with the bond symbol each was opened with; and
the labels opened at the current atom (``C11`` would bond an atom to itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

# Token kinds. START is the state before the first token; it allows what a dot allows.
ATOM, BOND, RING, OPEN, CLOSE, DOT, END, NEVER = range(8)
START = DOT
NUM_LABELS = 100  # ring labels 0-9 and %10-%99
MAX_DEPTH = 16  # nested parentheses tracked; deeper branches are refused
NO_ANCHOR = 99  # the bonds "left" before the first atom of a fragment: nothing to bond to

BOND_ORDERS = {"-": 1, "=": 2, "#": 3, "$": 4, ":": 1, "/": 1, "\\": 1, "~": 1}
# Most bonds an atom of the organic subset may have, counting a bond between two aromatic atoms
# as 1 (so c, with two ring bonds, keeps 2 for a substituent or an exocyclic =O). Bracket atoms
# state their own hydrogens and charge; they are not limited here.
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


def classify_token(token: str) -> tuple[int, int]:
    """(kind, ring label / bond order / valence, as the kind has one, else 0) of a vocabulary entry."""
    if token == "[SEP]":
        return END, 0
    if token in ("[PAD]", "[UNK]", "[CLS]", "[MASK]"):
        return NEVER, 0
    if token in VALENCES:
        return ATOM, VALENCES[token]
    if token.startswith("[") and token.endswith("]"):
        return ATOM, UNLIMITED
    if token.isdigit() and len(token) == 1:
        return RING, int(token)
    if token.startswith("%") and token[1:].isdigit():
        return RING, int(token[1:])
    if token in BOND_ORDERS:
        return BOND, BOND_ORDERS[token]
    return {"(": OPEN, ")": CLOSE, ".": DOT}.get(token, NEVER), 0


@dataclass
class SyntaxState:
    """Where each row's SMILES prefix stands (R rows)."""

    previous: Tensor  # (R,) kind of the last token
    anchor_left: Tensor  # (R,) bonds the anchor atom may still take
    bond: Tensor  # (R,) order of a pending bond symbol, 0 for none
    branch_start: Tensor  # (R,) bool: an open parenthesis that has no atom yet
    depth: Tensor  # (R,) open parentheses
    branch_left: Tensor  # (R, MAX_DEPTH) bonds left on the atom each open parenthesis branches from
    open_rings: Tensor  # (R, NUM_LABELS) bool
    ring_bond: Tensor  # (R, NUM_LABELS) order of the bond symbol a ring was opened with, 0 for none
    opened_here: Tensor  # (R, NUM_LABELS) bool: opened at the current atom


class SmilesSyntax:
    """The SMILES automaton over a tokenizer's vocabulary.

    Args:
        tokenizer: the atom-level SMILES tokenizer (bracket atoms, ``Cl``, ``%nn`` are one token).
        device: where the rows' states live (the tables are put there once, not at every token).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, device: torch.device | str = "cpu") -> None:
        vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        self.tokens = [token for token, _ in vocabulary]  # by id
        kind, value = zip(*(classify_token(token) for token, _ in vocabulary), strict=True)
        kind, value = torch.tensor(kind, device=device), torch.tensor(value, device=device)
        self.kind = kind
        self.label = torch.where(kind == RING, value, 0)
        self.order = torch.where(kind == BOND, value, 0)
        self.valence = torch.where(kind == ATOM, value, 0)
        self.follows = _FOLLOWS.to(device)

    def start(self, rows: int, device: torch.device) -> SyntaxState:
        zeros = torch.zeros(rows, dtype=torch.long, device=device)
        labels = torch.zeros(rows, NUM_LABELS, dtype=torch.long, device=device)
        return SyntaxState(
            previous=zeros + START,
            anchor_left=zeros + NO_ANCHOR,
            bond=zeros,
            branch_start=zeros.bool(),
            depth=zeros,
            branch_left=torch.zeros(rows, MAX_DEPTH, dtype=torch.long, device=device),
            open_rings=labels.bool(),
            ring_bond=labels,
            opened_here=labels.bool(),
        )

    def allowed(self, state: SyntaxState) -> Tensor:
        """(R, V) bool: the tokens each row may take next."""
        kind, label, order, valence = self.kind, self.label, self.order, self.valence
        allowed = self.follows[state.previous][:, kind]
        anchor, need = state.anchor_left.unsqueeze(-1), state.bond.clamp_min(1).unsqueeze(-1)
        balanced = (state.depth == 0).unsqueeze(-1)
        first_atom = (state.previous == START).unsqueeze(-1)
        closing = state.open_rings[:, label]
        ring_need = torch.where(closing, torch.maximum(need, state.ring_bond[:, label]), need)
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
        conditions = (
            (ATOM, first_atom | ((anchor >= need) & (valence >= need) & ~atom_stuck)),
            (BOND, anchor >= order),
            # No ring closed at the atom that opened it; a ring bond takes a bond from the anchor.
            (RING, ~state.opened_here[:, label] & (anchor >= ring_need) & ~ring_stuck),
            (OPEN, (anchor >= 1) & (state.depth < MAX_DEPTH).unsqueeze(-1)),
            (CLOSE, ~balanced & ~close_stuck),
            (DOT, balanced & ~rings_open),
            (END, balanced & ~rings_open),
        )
        for token_kind, condition in conditions:
            allowed &= torch.where(kind == token_kind, condition, True)
        return allowed

    def advance(self, state: SyntaxState, tokens: Tensor) -> SyntaxState:
        """The state after each row takes its token, (R,)."""
        kind, label = self.kind[tokens], self.label[tokens]
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
        anchor_left = torch.where(is_atom, self.valence[tokens] - torch.where(bonded, need, 0), anchor_left)
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
        return SyntaxState(
            previous=kind,
            anchor_left=anchor_left,
            bond=torch.where(kind == BOND, self.order[tokens], 0),
            branch_start=torch.where(is_open, True, state.branch_start & ~is_atom & ~is_close),
            depth=depth,
            branch_left=branch_left,
            open_rings=state.open_rings ^ ring,
            ring_bond=ring_bond,
            opened_here=opened_here,
        )
