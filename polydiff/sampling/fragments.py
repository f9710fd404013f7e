"""Fragment-constrained generation: the fixed fragments written as they are, the model filling
the holes at their ``[*]`` attachment points (``polydiff.chem.fragments``).

A model that predicts the next token (one-token blocks, or a block model with a causal context)
writes a sample left to right: the fragment's fixed text up to its first hole, then the model's
tokens until it closes the hole, then the fixed text up to the next hole, and so on. Fixed text
costs no model call (it joins the key/value cache with the next call); each token in a hole is one
call, drawn from the next-token prediction under every SMILES constraint
(``polydiff.sampling.constraints``) and these rules of its own:

- a hole holds at least one atom, bonded to the fragment by the bond of its ``[*]`` (single, or
  double and triple as written: ``C(=[*])C``) and by no other: it opens with that atom (or a
  single bond symbol), never with a branch or a ring bond; it is closed by the token that would
  end its branch (``)`` at the depth it started) or the string (``[SEP]``), never by a ``.``;
- it leaves no ring open when it closes, and touches no ring label the fragment holds open
  around it (``c1ccc(<hole>)cc1``: label 1 is the fragment's);
- it is closed only where the fixed text that follows (for linking, the second fragment first)
  is allowed by the automaton and keeps the molecule kekulizable: checked when the model draws
  the closing token, which is otherwise refused and drawn again.

A row whose constraints leave it nothing to write in a hole (the model wrote itself into a
corner, e.g. a saturated atom where the linked fragment must bond) takes back its last few tokens
in the hole and writes them again, a few times at most (``REWIND``, ``MAX_REWINDS``); after that it
is given up and its sample is empty, which counts as invalid (what it holds so far may be a
molecule without the fragments). So every sample is a whole molecule with the fragments on atoms
of their own, each ``[*]`` replaced by the first atom of a substituent, or invalid as written.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from polydiff.chem.fragments import FragmentTemplate
from polydiff.sampling.blockwise import Committer, draw_completable, drawn_by, encode_up_to, pad_after_end
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import (
    ATOM,
    BOND,
    DOT,
    NUM_LABELS,
    OPEN,
    RING,
    SmilesSyntax,
    SyntaxFields,
    SyntaxState,
)
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.reverse import Head

# A row at a dead end in a hole takes back its last REWIND tokens there (never the fragment's),
# twice as many at each further dead end, and writes them again, at most MAX_REWINDS times; each
# call counts. Long holes wander into dead ends that a few tokens do not undo; past the fourth
# rewind (64 tokens) a row writes its hole again from its start. With 4 rewinds, 6% of the samples
# linking two fragments were given up (empty); with 8, none, for 8% more calls (docs/design.md).
REWIND = 4
MAX_REWINDS = 8


class FragmentPlan:
    """A ``FragmentTemplate`` as token ids: the fixed runs around the holes, and each hole's
    closing token and what is written when it closes.

    Raises:
        ValueError: if the fragments hold tokens the model's tokenizer does not know.
    """

    def __init__(self, template: FragmentTemplate, tokenizer: PreTrainedTokenizerFast, syntax: SmilesSyntax) -> None:
        self.template, self.syntax = template, syntax
        self.runs = [self._ids(tokenizer, piece) for piece in template.pieces]
        self.sep, close = tokenizer.sep_token_id, tokenizer.convert_tokens_to_ids(")")
        self.closing = [close if kind == "branch" else self.sep for kind in template.holes]
        suffix = self._ids(tokenizer, template.suffix or "")
        self.suffixes = [self._relabelled(tokenizer, suffix)] + [[]] * (len(template.holes) - 1)

    def _ids(self, tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
        if not text:
            return []
        encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        unknown = [
            text[a:b] for (a, b), i in zip(encoding.offsets, encoding.ids, strict=True) if i == tokenizer.unk_token_id
        ]
        if unknown:
            given = ".".join(self.template.fragments)
            # A piece of RDKit's writing alone (``[CH2]`` in ``[CH2][Tc]`` for ``[*]C[Tc]``) is said apart.
            named = [piece for piece in unknown if piece in given] or unknown
            written = [piece for piece in unknown if piece not in named]
            also = f"; and, as RDKit writes the fragments, {written}" if written else ""
            raise ValueError(
                f"fragments {given!r} hold pieces this model does not know: {named}{also} "
                f"(in {text!r}, as RDKit writes them)"
            )
        return list(encoding.ids)

    def _relabelled(self, tokenizer: PreTrainedTokenizerFast, suffix: list[int]) -> list[int]:
        """The linked fragment's ids with its ring labels moved off those the first fragment holds
        open at the hole (``c1ccc(<linker><second fragment>)cc1`` may not reuse label 1)."""
        if not suffix:
            return suffix
        device = self.syntax.by_token.kind.device
        state = self.syntax.start(1, device)
        for token in self.runs[0]:
            state = self.syntax.advance(state, torch.tensor([token], device=device))
        taken = set(state.fields.open_rings[0].nonzero().flatten().tolist())
        table = self.syntax.by_token
        labels = sorted({int(table.label[t]) for t in suffix if int(table.kind[t]) == RING})
        free = iter(label for label in range(1, NUM_LABELS) if label not in taken)
        mapping = {label: next(free) for label in labels}
        ids = []
        for token in suffix:
            if int(table.kind[token]) == RING:
                label = mapping[int(table.label[token])]
                token = tokenizer.convert_tokens_to_ids(str(label) if label < 10 else f"%{label}")
                if token == tokenizer.unk_token_id:
                    raise ValueError("the linked fragments need more ring labels than this model knows")
            ids.append(token)
        return ids

    def rest(self, hole: int) -> list[int]:
        """The fixed tokens written when ``hole`` closes: its suffix, the next run, and [SEP] after the last run."""
        last = hole + 1 == len(self.holes)
        return self.suffixes[hole] + self.runs[hole + 1] + ([self.sep] if last else [])

    @property
    def holes(self) -> tuple[str, ...]:
        return self.template.holes

    @property
    def fixed_tokens(self) -> int:
        """Tokens the fragments take, whatever fills the holes."""
        return sum(map(len, self.runs)) + sum(map(len, self.suffixes))

    @property
    def shortest(self) -> int:
        """Tokens of the shortest sample: the fragments, one atom per hole, and a branch hole's ``)``."""
        return self.fixed_tokens + len(self.holes) + sum(kind == "branch" for kind in self.holes)


class _FragmentDecoder:
    """The state of one batch: each row's position, stage (2k: fixed run k is next; 2k + 1: in
    hole k), and, in a hole, where it started (depth, open rings) and how many atoms it has."""

    def __init__(
        self,
        model: Denoiser,
        head: Head,
        x: Tensor,
        config: SamplingConfig,
        generator: torch.Generator,
        syntax: SmilesSyntax,
        plan: FragmentPlan,
    ) -> None:
        self.model, self.head, self.config, self.generator, self.plan = model, head, config, generator, plan
        self.x, self.syntax, self.writer = x, syntax, Committer(x, syntax)
        rows, device = len(x), x.device
        self.width = x.shape[1]
        self.position = torch.ones(rows, dtype=torch.long, device=device)
        self.stage = torch.zeros(rows, dtype=torch.long, device=device)
        self.ended = torch.zeros(rows, dtype=torch.bool, device=device)
        self.hole_depth = torch.zeros(rows, dtype=torch.long, device=device)
        self.hole_rings = torch.zeros(rows, NUM_LABELS, dtype=torch.bool, device=device)
        self.hole_atoms = torch.zeros(rows, dtype=torch.long, device=device)
        self.hole_start = torch.zeros(rows, dtype=torch.long, device=device)
        self.rewinds = torch.zeros(rows, dtype=torch.long, device=device)
        self.cache = model.new_cache(rows, self.width)
        self.encoded = torch.zeros(rows, dtype=torch.long, device=device)
        table = syntax.by_token
        self.is_ring, self.label, self.kind = table.kind == RING, table.label, table.kind
        # What may not open a hole: a ring bond to the fragment, a double or triple bond, or a branch
        # (its "(" would hang a second substituent on the fragment's atom: ``N[*]`` written ``N(C)C``).
        self.cannot_open = self.is_ring | ((table.kind == BOND) & (table.order > 1)) | (table.kind == OPEN)
        # Tokens still to come after hole k closes, the room it must leave: the fixed ones and an atom
        # for each later hole (the automaton's room counts the final [SEP] itself).
        later = [
            len(plan.suffixes[k])
            + len(plan.runs[k + 1])
            + sum(1 + len(plan.suffixes[j]) + len(plan.runs[j + 1]) for j in range(k + 1, len(plan.holes)))
            for k in range(len(plan.holes))
        ]
        self.after_hole = torch.tensor(later, dtype=torch.long, device=device)

    def _write(self, rows: Tensor, tokens: list[int]) -> None:
        """Commits the same fixed ``tokens`` to ``rows``; a row they would carry past the last
        position is given up, as is one they end on it without [SEP] (the hole after them needs one)."""
        ends = bool(tokens) and tokens[-1] == self.plan.sep
        fits = self.position[rows] + len(tokens) <= self.width - (0 if ends else 1)
        self._end(rows[~fits])
        rows = rows[fits]
        for token in tokens:
            self.writer.commit(rows, self.position[rows], torch.full_like(rows, token))
            self.position[rows] += 1
        self.ended[rows] |= ends

    def _end(self, rows: Tensor) -> None:
        """Gives up on ``rows``: they become empty (invalid) samples, for what they hold need not
        keep the fragments."""
        if len(rows):
            self.x[rows, 1] = self.plan.sep
            self.ended[rows] = True

    def write_runs(self) -> None:
        """Writes the fixed run each row has reached, and opens the hole after it."""
        runs = self.plan.runs
        for k, run in enumerate(runs):
            rows = ((self.stage == 2 * k) & ~self.ended).nonzero().squeeze(-1)
            if len(rows) == 0:
                continue
            self._write(rows, run + ([self.plan.sep] if k + 1 == len(runs) else []))
            rows = rows[~self.ended[rows]]
            self.stage[rows] = 2 * k + 1
            fields = self.writer.state_of(rows).fields
            self.hole_depth[rows], self.hole_rings[rows] = fields.depth, fields.open_rings
            self.hole_atoms[rows] = 0
            self.hole_start[rows] = self.position[rows]

    def _allowed(self, rows: Tensor, hole: Tensor, state: SyntaxState, fields: SyntaxFields) -> Tensor:
        """(r, V) what each row in a hole may write next: the automaton's answer (leaving room for
        the fixed tokens after the hole) under the hole's own rules; ``fields``: the state's."""
        room = self.width - 1 - self.position[rows] - self.after_hole[hole]
        allowed = self.syntax.allowed(state, room)
        closing = torch.tensor(self.plan.closing, device=rows.device)[hole]
        index = torch.arange(len(rows), device=rows.device)
        # The token that closes the hole takes no position: the fixed tokens after it write it.
        allowed[index, closing] = self.syntax.allowed(state, room + 1)[index, closing]
        allowed &= ~(self.is_ring & self.hole_rings[rows][:, self.label])  # the fragment's own open rings
        allowed &= self.kind != DOT
        allowed &= ~((self.hole_atoms[rows] == 0).unsqueeze(-1) & self.cannot_open)
        may_close = (self.hole_atoms[rows] > 0) & (fields.open_rings == self.hole_rings[rows]).all(-1)
        # ")" closes the hole only at the depth it started; deeper, it closes the model's own branch.
        at_start = (fields.depth == self.hole_depth[rows]) | (closing == self.plan.sep)
        allowed[index, closing] &= may_close | ~at_start
        return allowed

    def _closes(self, row: int, hole: int) -> bool:
        """Whether the fixed tokens after ``hole`` may follow ``row``'s prefix: each allowed by the
        automaton and the molecule still kekulizable after each."""
        state = self.writer.state_of(torch.tensor([row], device=self.x.device))
        prefix = self.writer.prefixes[row]
        for token in self.plan.rest(hole):
            room = torch.tensor([self.width - 1], device=self.x.device)
            if not self.syntax.allowed(state, room)[0, token]:
                return False
            prefix = prefix.then(self.syntax.tokens[token])
            if not prefix.can_complete():
                return False
            state = self.syntax.advance(state, torch.tensor([token], device=self.x.device))
        return True

    def _saturates(self, rows: Tensor, hole: Tensor, index: Tensor, state: SyntaxState, tokens: Tensor) -> Tensor:
        """(r,) bool: whether each token leaves the atom a linked fragment would bond to with no bond
        to spare (``C(=O``, ``CCl`` at the hole's own depth), in a hole that links: the second fragment
        could then never follow."""
        links = torch.tensor([bool(suffix) for suffix in self.plan.suffixes], device=rows.device)[hole]
        if not links.any():
            return torch.zeros_like(links)
        after = self.syntax.advance(state[index], tokens).fields
        writes = (self.kind[tokens] == ATOM) | (self.kind[tokens] == RING)
        return links & writes & (after.depth == self.hole_depth[rows]) & (after.anchor_left < 1)

    def _back_out(self, rows: Tensor) -> None:
        """Takes back the last ``REWIND`` tokens (doubling with each rewind) of ``rows`` in their hole
        (their cache entries past that point are written again before they are read)."""
        if len(rows) == 0:
            return
        back = REWIND * 2 ** self.rewinds[rows]
        self.rewinds[rows] += 1
        self.position[rows] = torch.maximum(self.hole_start[rows], self.position[rows] - back)
        self.writer.rewind(rows, self.position[rows])
        self.encoded[rows] = torch.minimum(self.encoded[rows], self.position[rows] - 1)
        for row, start, end in zip(
            rows.tolist(), self.hole_start[rows].tolist(), self.position[rows].tolist(), strict=True
        ):
            self.hole_atoms[row] = int((self.kind[self.x[row, start:end]] == ATOM).sum())

    def step(self) -> Tensor:
        """One model call for the rows in a hole; returns them."""
        rows = ((self.stage % 2 == 1) & ~self.ended).nonzero().squeeze(-1)
        if len(rows) == 0:
            return rows
        start = self.position[rows]
        hidden = encode_up_to(self.model, self.cache, rows, self.x[rows], self.encoded[rows], start)
        self.encoded[rows] = start
        hole = self.stage[rows] // 2
        state = self.writer.state_of(rows)
        fields = state.fields
        depth = fields.depth
        closing = torch.tensor(self.plan.closing, device=rows.device)[hole]
        logits = self.head(hidden)
        # Where the model would end the molecule, a branch hole's substituent ends: the mass of
        # [SEP] goes to the ")" that closes the hole (the automaton refuses [SEP] inside a branch).
        index = torch.arange(len(rows), device=rows.device)
        at_start = (depth == self.hole_depth[rows]) & (closing != self.plan.sep)
        merged = torch.logaddexp(logits[index, closing], logits[:, self.plan.sep])
        logits[index, closing] = torch.where(at_start, merged, logits[index, closing])
        logits = logits.masked_fill(~self._allowed(rows, hole, state, fields), -math.inf)
        prefixes = [self.writer.prefixes[row] for row in rows.tolist()]
        pending = torch.arange(len(rows), device=rows.device)
        tokens = torch.zeros_like(rows)
        drawn: list[MoleculePrefix | None] = [None] * len(rows)
        while len(pending):
            again, after = draw_completable(
                logits[pending],
                [prefixes[i] for i in pending.tolist()],
                self.syntax.tokens,
                drawn_by(self.config, self.generator),
            )
            tokens[pending] = again
            saturating = self._saturates(rows[pending], hole[pending], pending, state, again).tolist()
            refused = []
            for i, token, prefix, saturates in zip(pending.tolist(), again.tolist(), after, saturating, strict=True):
                drawn[i] = prefix
                closes = token == int(closing[i]) and (
                    int(closing[i]) == self.plan.sep or int(depth[i]) == int(self.hole_depth[rows[i]])
                )
                if prefix is not None and (saturates or (closes and not self._closes(int(rows[i]), int(hole[i])))):
                    logits[i, token] = -math.inf
                    refused.append(i)
            pending = torch.tensor(refused, dtype=torch.long, device=rows.device)
        dead = torch.tensor([prefix is None for prefix in drawn], dtype=torch.bool, device=rows.device)
        self._back_out(rows[dead & (self.rewinds[rows] < MAX_REWINDS)])
        self._end(rows[dead & (self.rewinds[rows] >= MAX_REWINDS)])
        is_closing = (tokens == closing) & ((closing == self.plan.sep) | (depth == self.hole_depth[rows])) & ~dead
        for k in range(len(self.plan.holes)):
            done = rows[is_closing & (hole == k)]
            if len(done):
                self._write(done, self.plan.suffixes[k])
                self.stage[done] = 2 * k + 2
        going = ~dead & ~is_closing
        writing = rows[going]
        self.writer.commit(writing, self.position[writing], tokens[going])
        self.position[writing] += 1
        self.hole_atoms[writing] += (self.kind[tokens[going]] == ATOM).long()
        self._end(writing[self.position[writing] >= self.width])
        return rows


@torch.inference_mode()
def decode_fragments(
    model: Denoiser,
    head: Head,
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
    syntax: SmilesSyntax,
    plan: FragmentPlan,
) -> tuple[Tensor, Tensor]:
    """Writes the fragments of ``plan`` into every row of x and fills their holes.

    Args:
        model: a denoiser that predicts the next token (one-token blocks or a causal context).
        head: hidden states to logits (with what may not be drawn removed).
        x: (R, N) [CLS], then [MASK]s to the last position.
        config: temperature and top_p of the draws.
        syntax: the SMILES automaton, with which the kekulization check runs.
        plan: the fragments' fixed tokens and holes.

    Returns:
        (the tokens, pads after each row's [SEP]; the model calls per row).
    """
    decoder = _FragmentDecoder(model, head, x, config, generator, syntax, plan)
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    while True:
        decoder.write_runs()
        rows = decoder.step()
        if len(rows) == 0:
            break
        calls[rows] += 1
        if on_step is not None:
            on_step()
    return pad_after_end(decoder.x, plan.sep, model.tokenizer.pad_token_id), calls
