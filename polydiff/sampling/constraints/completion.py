"""Whether a SMILES prefix can still fill the positions a fixed length leaves and end valid there.

A row written to a given length (``polydiff sample --length``, or a template that fixes only a
start) has its [SEP] waiting at its last position: it must write exactly the tokens up to it,
close its rings and parentheses by then, and end with aromatic rings that can be kekulized. The
automaton's debt (``syntax._debt``) is a lower bound of the tokens the closing takes, and the
kekulization check (``kekulization``) knows no length, so a row can pass both and still fail:
``c1cc`` with two tokens left can close its ring only as ``c1cc1``, which no Kekulé structure
fits, and ``Cc1ccccc1`` with ten left has no valence to write them with. ``CompletionSearch``
answers the question itself, by a depth-first search over the continuations: each token allowed
by the automaton within the room left and keeping the prefix kekulizable, the closest to the end
first, so that the first path tried usually closes what is open; a molecule that may end there
and take one more ``C`` fills any room left with a chain of them. Near the end (the room at most
``MAX_SLACK`` tokens above the debt) the search is complete; further from it, where the debt's
slack leaves room for any ring to be finished, it looks ``LOOKAHEAD`` tokens ahead for a
molecule that closes with no valence left.

The search writes with a few tokens the model may draw that close what is open (``)``, the open
ring labels) or carry a chain or ring on (``C``, ``c``, ``n``, ``N``, ``O``, one new ring label,
and ``*`` and ``(`` for a polymer model's unit): a prefix that only other tokens would complete is refused,
which is stricter, never invalid. A search that passes ``MAX_NODES`` tokens tried, or a row's
searches at one position ``MAX_NODES_PER_DRAW``, gives the benefit of the doubt, as the
kekulization check does past a few undecided atoms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import RING, SmilesSyntax

# The tokens a completion is sought among (those the vocabulary has), besides its ring labels: the
# open ones, and one new one (which label a ring opens with makes no difference to what can follow).
CLOSING_TOKENS = ("[SEP]", ")", "c", "C", "n", "N", "O")
# Tokens tried in one search before it gives up and answers yes; and for all the tokens one row
# tries at one position (a poorly trained model may have many refused there).
MAX_NODES = 2_000
MAX_NODES_PER_DRAW = 8_000
# Far from the end, the tokens looked ahead: enough to see a molecule closing with no valence left.
LOOKAHEAD = 3
# Searched in full only where the room left exceeds the automaton's debt by at most this many tokens.
MAX_SLACK = 4


class CompletionSearch:
    """Whether prefixes can fill exactly the positions left to them, under the automaton and the
    kekulization check; one per decoding (its answers are kept on the prefixes it meets).

    Args:
        syntax: the SMILES automaton (its states are read by id, ``SyntaxState.ids``).
        drawable: the ids of the tokens the model may draw (default: all): a continuation through
            any other could not be written (the fixed [SEP] is no draw).
    """

    def __init__(self, syntax: SmilesSyntax, drawable: torch.Tensor | None = None) -> None:
        self.syntax = syntax
        ids = {token: i for i, token in enumerate(syntax.tokens)}
        self.end = ids["[SEP]"]
        # A polymer model's unit still needs its attachment points, and a * that does not end the
        # unit goes on a branch (``c1ccccc1C(*)C*``); a molecule writes no *.
        closing = (*CLOSING_TOKENS, "*", "(") if syntax.stars is not None else CLOSING_TOKENS
        drawn = set(range(len(ids)) if drawable is None else drawable.tolist()) | {self.end}  # [SEP]: fixed
        kind, label = syntax.by_token.kind.tolist(), syntax.by_token.label.tolist()
        self._ring_labels = {t: label[t] for t in range(len(kind)) if kind[t] == RING and t in drawn}
        alphabet = [ids[t] for t in closing if ids.get(t) in drawn] + sorted(self._ring_labels)
        self.alphabet = torch.tensor(alphabet, dtype=torch.long, device=syntax.table.device)
        self._options: dict[int, list[tuple[int, int]]] = {}
        self._next: dict[tuple[int, int], int] = {}
        self._answer_rows: dict[int, tuple[list[bool], list[int]]] = {}
        self._nodes, self._budget = 0, MAX_NODES
        # A molecule that may end can fill any room with a chain of C; a polymer's unit ends on its
        # second *, which takes no chain after it.
        self.pad = ids.get("C") if syntax.stars is None and ids.get("C") in drawn else None

    def for_rows(self, states: list[int], rooms: list[int]) -> Callable[[int, int, MoleculePrefix], bool]:
        """``fits`` for rows in automaton states ``states`` with ``rooms`` tokens left after the one
        they draw, as ``draw_completable`` asks it: (row, token, the row's prefix with it). The
        searches for one row's tokens share ``MAX_NODES_PER_DRAW``; past it, a token passes."""
        left = [MAX_NODES_PER_DRAW] * len(states)

        def fits(row: int, token: int, prefix: MoleculePrefix) -> bool:
            answer = self.fits(states[row], token, prefix, rooms[row], min(MAX_NODES, left[row]))
            left[row] -= self._nodes
            return answer

        return fits

    def fits(self, state: int, token: int, prefix: MoleculePrefix, room: int, budget: int = MAX_NODES) -> bool:
        """Whether a row in automaton state ``state`` can take ``token`` (``prefix`` is its prefix
        with it) and then write exactly ``room`` more tokens, the last of them [SEP]: its fixed end.
        Past ``budget`` tokens tried, yes."""
        self._nodes, self._budget = 0, budget
        if token == self.end or budget <= 0:
            return True  # nothing to fill: at a fixed length the head draws no [SEP] before its own
        after = self._step(state, token)
        if room - self._answers(state)[1][token] > MAX_SLACK:
            return self._continues(after, prefix, room)
        return self._fills(after, prefix, room)

    def _fills(self, state: int, prefix: MoleculePrefix, room: int) -> bool:
        """Whether the row can write exactly ``room`` more tokens, the last of them [SEP]. Answers
        are kept on the prefix (one token sequence, so one state), as its kekulization answer is:
        the decoder asks again about the prefixes a search went through, one position later."""
        known = prefix.__dict__.setdefault("_fills", {})
        if room in known:
            return known[room]
        if room > 1 and self._pads(state, prefix):
            known[room] = True
            return True
        for token, debt in self._allowed(state):
            if debt > room - 1:  # sorted by debt: no later token fits either
                break
            if (token == self.end) != (room == 1):  # [SEP] goes last, and only there
                continue
            self._nodes += 1
            if self._nodes > self._budget:
                return True  # not kept: the benefit of the doubt is no answer
            if token == self.end:
                found = prefix.then("[SEP]").can_complete()
            else:
                after = prefix.then(self.syntax.tokens[token])
                found = after.can_complete() and self._fills(self._step(state, token), after, room - 1)
            if found:
                if self._nodes <= self._budget:
                    known[room] = True
                return True
        if self._nodes <= self._budget:
            known[room] = False
        return False

    def _pads(self, state: int, prefix: MoleculePrefix) -> bool:
        """Whether the row could end here and also after a ``C`` more: then it fills any room with
        a chain of them (each C leaves three bonds for the next, and no aromatic atom changes)."""
        if self.pad is None:
            return False
        options = dict(self._allowed(state))
        if self.end not in options or self.pad not in options or not prefix.then("[SEP]").can_complete():
            return False
        padded = prefix.then("C")
        return padded.can_complete() and padded.then("[SEP]").can_complete()

    def _continues(self, state: int, prefix: MoleculePrefix, room: int, depth: int = LOOKAHEAD) -> bool:
        """Whether the row, far from its end, can write ``depth`` more tokens other than [SEP]: a
        molecule complete with no valence left (``...c1``, or ``C(F)(F)(F`` closed) could not fill
        the positions still to come."""
        if depth == 0:
            return True
        # Kept under -depth, apart from the rooms, and for any room: far from the end the room
        # seldom binds, and the lookahead is a heuristic there, not the search near the end.
        known = prefix.__dict__.setdefault("_fills", {})
        if -depth in known:
            return known[-depth]
        found = False
        for token, debt in self._allowed(state):
            if debt > room - 1:
                break
            if token == self.end:
                continue
            self._nodes += 1
            if self._nodes > self._budget:
                return True
            after = prefix.then(self.syntax.tokens[token])
            if after.can_complete() and self._continues(self._step(state, token), after, room - 1, depth - 1):
                found = True
                break
        if self._nodes <= self._budget:
            known[-depth] = found
        return found

    def _answers(self, state: int) -> tuple[list[bool], list[int]]:
        """The automaton's answers in ``state``, over the vocabulary: (allowed, debt after each token)."""
        answers = self._answer_rows.get(state)
        if answers is None:
            by_rules, debt = self.syntax.table.answer(torch.tensor([state], device=self.syntax.table.device))
            answers = self._answer_rows[state] = (by_rules[0].tolist(), debt[0].tolist())
        return answers

    def _allowed(self, state: int) -> list[tuple[int, int]]:
        """(token, the tokens needed after it before the end) for the alphabet's tokens the
        automaton allows in ``state``, fewest needed first."""
        options = self._options.get(state)
        if options is None:
            by_rules, debt = self._answers(state)
            is_open = self.syntax.table.fields(torch.tensor([state]))["open_rings"][0]
            new_labels = sorted((label, t) for t, label in self._ring_labels.items() if not is_open[label])
            skipped = {token for _, token in new_labels[1:]}  # a ring opened takes the lowest free label
            allowed = [
                (token, debt[token]) for token in self.alphabet.tolist() if by_rules[token] and token not in skipped
            ]
            # Fewest needed first; among equals, in the alphabet's order (an aromatic ring goes on aromatic).
            options = sorted(allowed, key=lambda option: option[1])
            self._options[state] = options
            # The states after them, in one call: a state met for the first time costs the automaton
            # the same few dozen array operations for one token as for ten.
            device = self.syntax.table.device
            tokens = torch.tensor([token for token, _ in options], dtype=torch.long, device=device)
            following = self.syntax.table.step(torch.full_like(tokens, state), tokens).tolist()
            self._next.update(((state, token), after) for token, after in zip(tokens.tolist(), following, strict=True))
        return options

    def _step(self, state: int, token: int) -> int:
        following = self._next.get((state, token))
        if following is None:
            device = self.syntax.table.device
            ids = self.syntax.table.step(torch.tensor([state], device=device), torch.tensor([token], device=device))
            following = self._next[state, token] = int(ids[0])
        return following
