"""Speculative decoding of a block-diffusion model with a causal context: the block denoiser
drafts, the model's own next-token prediction verifies, in the same call.

A model with a causal context (``polydiff.diffusion.blocks``) is two predictors in one network:
its clean, causal states give p(x^i | x^{<i}), the next-token prediction, and a window of B
[MASK]s after a prefix gives the block denoiser's marginals q(x^{i+b} | x^{<i}) for every slot at
once. Each model call reads, for every row, its committed tokens followed by its draft d_1..d_m
(drawn from q by the call before) as the causal context, and one all-[MASK] window starting at
each position the draft may be cut at (j = 0 .. m). Then, left to right (speculative sampling:
Leviathan et al., 2023; Chen et al., 2023):

- d_j is accepted with probability min(1, p_j(d_j) / q_j(d_j));
- at the first rejection, that position is drawn from the residual (p_j - q_j)^+, normalised;
- if all m drafts are accepted, one more token is drawn from p_{m+1}.

Every committed token thus follows p exactly, whatever the drafts were, and a call commits the
accepted drafts plus one. The window that starts at the position just drawn supplies the next
draft (its other B - 1 slots), so no call is spent on drafting alone: good drafts cost nothing in
quality and buy fewer calls.

A model with a draft head (``DiffusionConfig.drafter``) encodes no windows: the encoder reads only
the committed token and the draft, and once the call has drawn its token at position s, the head
reads the causal state that predicted it and the window [that token, [MASK] x (B - 1)] and gives
the next draft, conditioned on the token just drawn rather than a marginal over it. One encoder
pass and one pass of the one-layer head per call; NFE counts the calls.

p and q are tempered and top-p filtered alike, and restricted by the SMILES automaton
(``polydiff.sampling.constraints``) at every position, drafts included, so no committed prefix
breaks the grammar; tokens after which the aromatic atoms cannot be kekulized are refused and
redrawn, as in one-token decoding (from the whole of p when its nucleus has nothing left).

Restricting p and renormalising keeps every prefix it meets, however unlikely the model thought
it could continue: a model that wants to end with a ring still open is made to close it, often
far from where it opened, which gives the large rings MOSES's filters refuse. So a row treats two
kinds of position as dead ends: those where no token keeps it completable, and those where the
automaton refuses more than half of p's mass (``REFUSED_SHARE``: left alone, the model would more
likely than not have broken the rules there). It backs out: it takes back its last few tokens
(``REWIND``) and, in the same call, draws the first of them again from the causal state it kept
for that position, then writes on as before; every call is counted. A guided model that steers
(``polydiff.sampling.steering``) backs a finished row out of its end the same way when its
molecule misses the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor

from polydiff.diffusion.blocks import sampling_mask, window_mask
from polydiff.model.kv_cache import KeyValueCache
from polydiff.sampling.blockwise import Committer, cannot_start, draw_completable, pad_after_end
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.constraints.syntax import SmilesSyntax, SyntaxState
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.reverse import Head, draw_from_probs, outside_nucleus
from polydiff.sampling.steering import Steering

# A row at a dead end backs out of it: it takes back its last REWIND tokens (twice as many at each
# further one) and writes them again, at most MAX_REWINDS times (from the fifth, a row of 128
# tokens is taken back to its start); after that it is ended there and will not be valid. Where the
# automaton refuses most of p it backs out too, while it has rewound fewer than REFUSED_REWINDS
# times, and is restricted after. Every call counts. On 1,000 samples of E28, a 10-minute default
# (seed 0): dead ends only, three rewinds of 8, 16, 32 tokens, each spending a call: valid 0.978,
# Filters 0.869 (9% of molecules with a ring of 8+ atoms) at 0.484 model calls per token;
# REFUSED_SHARE 0.5 and two rewinds, drawing again in the same call: valid 0.961, Filters 0.925
# (4%) at 0.481. The polymer recipe's long units meet dead ends that 8 and 16 tokens do not undo:
# two rewinds left 22% of them invalid, eight 0.5%; and they exhaust two backings-out where most of
# p is refused early, after which forced ring closures gave 29% of them a ring of 8+ atoms (none
# in the corpus), four 16%. On E32 (MOSES) the same costs nothing: 0.422 calls per token against
# 0.428 with two, valid 1.000 (docs/design.md).
REWIND = 8
MAX_REWINDS = 8
REFUSED_REWINDS = 4
REFUSED_SHARE = 0.5
# Steering takes a finished row back at most this many times: 8, 16, 32 and 64 tokens, then from
# its start, as a dead end. It has a count of its own, so a row it took back keeps every rewind of
# its dead ends (sharing them, a tenth of the rows steered toward logP 5 ran out and ended
# invalid; docs/design.md).
STEERING_REWINDS = 8


def target_probs(logits: Tensor, config: SamplingConfig) -> Tensor:
    """The distribution a token is drawn from, (K, V) float64: tempered and top-p filtered, or
    all mass on the most likely token at temperature 0."""
    if config.temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    log_p = torch.log_softmax(logits.double() / config.temperature, dim=-1)
    probs = log_p.exp()
    if config.top_p == 1:
        return probs
    probs = probs.masked_fill(outside_nucleus(log_p, config.top_p), 0.0)
    return probs / probs.sum(-1, keepdim=True)


def _call(model: Denoiser, x: Tensor, start: Tensor, drafted: Tensor) -> tuple[Tensor, Tensor]:
    """One model call for rows whose first uncommitted position is ``start`` and whose drafts fill
    the next ``drafted`` positions of x.

    Returns:
        (the causal states that predict positions start .. start + max(drafted), (r, M + 1, H);
        the states of the windows that start at those positions, (r, M + 1, B, H), or None for a
        model with a draft head, which drafts once the call has drawn its token).
    """
    block_size, width, device = model.block_size, x.shape[1], x.device
    rows = torch.arange(len(x), device=device).unsqueeze(-1)
    windows = int(drafted.max()) + 1
    end = int((start + drafted).max())
    positions = torch.arange(end, device=device)
    content = (positions >= 1) & (positions < (start + drafted).unsqueeze(-1))
    if model.has_draft_head:  # the encoder reads the sequence causally, without windows
        frame = (positions == 0).expand(len(x), -1)
        hidden = model.encode(x[:, :end], sampling_mask(content, frame, 1), None, positions.expand(len(x), -1))
        predicting = (start.unsqueeze(-1) - 1 + torch.arange(windows, device=device)).clamp(max=end - 1)
        return hidden[rows, predicting], None
    starts = start.unsqueeze(-1) + torch.arange(windows, device=device)
    slots = starts.unsqueeze(-1) + torch.arange(block_size, device=device)  # (r, W, B)
    in_window = (slots < width) & (starts <= (start + drafted).unsqueeze(-1)).unsqueeze(-1)
    masks = torch.full((len(x), windows * block_size), model.tokenizer.mask_token_id, device=device)
    ids = torch.cat([positions.expand(len(x), -1), slots.flatten(1).clamp(max=width - 1)], -1)
    attention = window_mask(content, positions.expand(len(x), -1) == 0, starts, in_window)
    hidden = model.encode(torch.cat([x[:, :end], masks], -1), attention, None, ids)
    predicting = (starts - 1).clamp(max=end - 1)  # the state of the token before each position
    return hidden[rows, predicting], hidden[:, end:].unflatten(1, (windows, block_size))


def _call_cached(
    model: Denoiser, cache: KeyValueCache, rows: Tensor, x: Tensor, start: Tensor, drafted: Tensor
) -> tuple[Tensor, Tensor]:
    """``_call`` with the committed tokens' keys and values taken from ``cache``: the queries are
    the token committed last (at start - 1) and the draft after it, which join the cache, and the
    windows (drafted by the draft head instead, where the model has one). Every position before
    start - 1 was encoded by an earlier call with the token it now holds (a draft accepted there),
    so only these positions are new."""
    block_size, width, device = model.block_size, x.shape[1], x.device
    windows = int(drafted.max()) + 1
    offsets = torch.arange(windows, device=device)
    # Context queries at start - 1 .. start - 1 + max(drafted); a row with a shorter draft writes
    # its extra ones past its draft, where nothing reads them before they are overwritten.
    context = (start - 1).unsqueeze(-1) + offsets
    if model.has_draft_head:  # only the context queries go through the encoder
        ids = x.gather(1, context.clamp(max=width - 1))
        return model.encode_incremental(cache, rows, ids, context, context + 1, torch.full_like(context, -1)), None
    starts = start.unsqueeze(-1) + offsets
    slots = starts.unsqueeze(-1) + torch.arange(block_size, device=device)  # (r, W, B)
    in_window = (slots < width) & (starts <= (start + drafted).unsqueeze(-1)).unsqueeze(-1)
    # A slot outside the sequence gets a group of its own, so that no valid slot sees it.
    lone = windows + torch.arange(windows * block_size, device=device).view(windows, block_size)
    group = torch.where(in_window, offsets.view(-1, 1), lone).flatten(1)
    masks = torch.full_like(group, model.tokenizer.mask_token_id)
    hidden = model.encode_incremental(
        cache,
        rows,
        torch.cat([x.gather(1, context.clamp(max=width - 1)), masks], -1),
        torch.cat([context, slots.flatten(1).clamp(max=width - 1)], -1),
        torch.cat([context + 1, starts.repeat_interleave(block_size, -1)], -1),
        torch.cat([torch.full_like(context, -1), group], -1),
    )
    return hidden[:, :windows], hidden[:, windows:].unflatten(1, (windows, block_size))


def _draw(
    probs: Tensor,
    writer: Committer,
    rows: Tensor,
    generator: torch.Generator,
    sep: int,
    names: Sequence[str],
    whole: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """One token per row from ``probs`` (already tempered and filtered, over the tokens ``names``),
    refusing tokens after which a row could not be kekulized.

    ``probs`` is p's nucleus (top_p): when nothing in it keeps a row completable, the row draws
    from ``whole(indices)``, p before the nucleus cut (within the automaton), for those rows.

    Returns:
        (the tokens, (r,); whether no token keeps the row completable: its token is then [SEP]).
    """
    if writer.syntax is None:
        tokens = draw_from_probs(probs, generator)
        return tokens, torch.zeros_like(tokens, dtype=torch.bool)

    def draw(log_probs: Tensor) -> Tensor:
        # By inverse transform, one uniform per draw: tokens of probability 0 take no part, so the
        # samples do not depend on which of them the distributions span (``vocabulary``).
        return draw_from_probs(log_probs.exp(), generator)

    prefixes = [writer.prefixes[row] for row in rows.tolist()]
    tokens, drawn = draw_completable(probs.log(), prefixes, names, draw)
    dead = torch.tensor([prefix is None for prefix in drawn], dtype=torch.bool, device=probs.device)
    if whole is not None and dead.any():
        index = dead.nonzero().squeeze(-1)
        again, redrawn = draw_completable(whole(index).log(), [prefixes[i] for i in index.tolist()], names, draw)
        tokens[index] = again
        dead[index] = torch.tensor([prefix is None for prefix in redrawn], dtype=torch.bool, device=probs.device)
    return tokens.masked_fill(dead, sep), dead


class _SpeculativeDecoder:
    """The state of one batch: committed tokens (in ``writer``), each row's first uncommitted
    position, whether it has ended, and its draft (tokens in x after that position, with the
    distributions q they were drawn from)."""

    def __init__(
        self,
        model: Denoiser,
        head: Head,
        x: Tensor,
        config: SamplingConfig,
        generator: torch.Generator,
        syntax: SmilesSyntax | None,
        vocabulary: Tensor,
    ) -> None:
        self.model, self.head, self.config, self.generator = model, head, config, generator
        self.x, self.writer = x, Committer(x, syntax)
        self.width, device = x.shape[1], x.device
        # Distributions and drawn tokens span ``vocabulary`` alone, in its order (a token's index in
        # it); x and the constraints take token ids (``vocabulary[index]``).
        self.vocabulary = vocabulary
        index_of = torch.full((len(model.tokenizer),), -1, dtype=torch.long, device=device)
        index_of[vocabulary] = torch.arange(len(vocabulary), device=device)
        self.sep = int(index_of[model.tokenizer.sep_token_id])
        if self.sep < 0:
            raise ValueError("the speculative decoder needs [SEP] among the tokens it may draw")
        self.names = [syntax.tokens[token] for token in vocabulary.tolist()] if syntax is not None else []
        first_tokens = index_of[cannot_start(model)]
        self.first_tokens = first_tokens[first_tokens >= 0]
        self.position = torch.ones(len(x), dtype=torch.long, device=device)
        self.ended = torch.zeros(len(x), dtype=torch.bool, device=device)
        draft_length = model.block_size - 1
        self.draft = torch.zeros(len(x), draft_length, dtype=torch.long, device=device)
        self.draft_probs = torch.zeros(len(x), draft_length, len(vocabulary), dtype=torch.float64, device=device)
        self.drafted = torch.zeros(len(x), dtype=torch.long, device=device)
        self.rewinds = torch.zeros(len(x), dtype=torch.long, device=device)  # backings-out of dead ends
        self.steered = torch.zeros(len(x), dtype=torch.long, device=device)  # ends steering took back
        # Rows that met a dead end with no rewind left, where [SEP] was written: what they wrote is no molecule.
        self.forced = torch.zeros(len(x), dtype=torch.bool, device=device)
        # Spare room past the last position for the padded context queries of ragged drafts.
        self.cache = model.new_cache(len(x), self.width + model.block_size) if config.cache else None
        self.states: Tensor | None = None  # the causal state of every committed position (``_remember``)

    def restart(self, rows: Tensor, initial: Tensor) -> None:
        """``rows``, whose sequences have ended, start new ones from ``initial`` (r, N): nothing of
        the old ones is read again (a call writes the keys, values and states of every position
        before any later call reads them)."""
        self.x[rows] = initial
        self.position[rows], self.ended[rows], self.drafted[rows] = 1, False, 0
        self.rewinds[rows], self.steered[rows], self.forced[rows] = 0, 0, False
        self.writer.restart(rows)

    def last_encoded(self, rows: Tensor) -> Tensor:
        """(r,) each row's last encoded position: its causal state has read every committed token but
        the one drawn last, which the next call would encode (of a row that has ended, every token
        of its molecule)."""
        return (self.position[rows] - 2).clamp(min=0)

    def _restricted(
        self, logits: Tensor, rows: Tensor, positions: Tensor, state: SyntaxState | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``logits`` without what the automaton refuses at ``positions`` after each row's prefix
        (its committed one, or ``state``: a draft's); whether it refuses everything: a dead end,
        where only [SEP] is left (and the row would not be valid); and what the rules alone allow,
        the length bound aside (None without the automaton)."""
        if self.writer.syntax is None:
            return logits, torch.zeros(len(logits), dtype=torch.bool, device=logits.device), None
        state = self.writer.state_of(rows) if state is None else state
        by_rules, allowed = self.writer.syntax.allowed_within(state, self.width - 1 - positions, self.vocabulary)
        restricted = logits.masked_fill(~allowed, -math.inf)
        empty = torch.isinf(restricted).all(-1)
        restricted[empty, self.sep] = 0.0
        return restricted, empty, by_rules

    def _mostly_refused(self, logits: Tensor, by_rules: Tensor | None, rows: Tensor) -> Tensor:
        """(r,) bool: the rules alone (the length bound aside) refuse more than ``REFUSED_SHARE`` of p,
        a dead end in all but name, and the row has rewound fewer than ``REFUSED_REWINDS`` times."""
        if by_rules is None:
            return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        kept = target_probs(logits, self.config).masked_fill(~by_rules, 0.0).sum(-1)
        return (kept < 1 - REFUSED_SHARE) & (self.rewinds[rows] < REFUSED_REWINDS)

    def _untruncated(self, logits: Tensor, rows: Tensor, positions: Tensor, index: Tensor) -> Tensor:
        """p of ``rows[index]`` without the nucleus cut: the whole tempered distribution the automaton allows."""
        restricted = self._restricted(logits[index], rows[index], positions[index])[0]
        return target_probs(restricted, replace(self.config, top_p=1.0))

    def step(self, rows: Tensor) -> None:
        """One model call for ``rows``: verifies their drafts, commits, and drafts again. A row at a
        dead end (or where the rules refuse most of p) backs out of it (``REWIND``) and draws again
        in the same call, from the causal state it remembers for the position it backed out to."""
        start, drafted = self.position[rows], self.drafted[rows]
        if self.cache is None:
            next_states, window_states = _call(self.model, self.x[rows], start, drafted)
        else:
            next_states, window_states = _call_cached(self.model, self.cache, rows, self.x[rows], start, drafted)
        accepted, stuck = self._verify(rows, start, drafted, self._next_logits(next_states, start))
        self._remember(rows, start, next_states, accepted)
        self.position[rows] = start + accepted + (~stuck).long()  # a dead end commits nothing there
        index = torch.arange(len(rows), device=rows.device)
        context = next_states[index, accepted]  # the state that predicted the token just drawn
        self._back_out_of(rows, stuck, context)
        self._clear_stale(rows)
        if window_states is None:  # the draft head reads the state before the token just drawn, and that token
            self._draft(rows, self._head_window(rows, context))
        else:  # the encoder's windows drafted at the positions of this call; a row that backed out has none
            self.drafted[rows[stuck]] = 0
            self._draft(rows[~stuck], window_states[index, accepted][~stuck])

    def reopen(self, rows: Tensor) -> None:
        """Takes back the end of ``rows``, finished rows whose molecules steering refused
        (``polydiff.sampling.steering``): each backs out of it as out of a dead end, and drafts
        again; no model call."""
        if len(rows) == 0:  # most calls: every row that ended was kept
            return
        self.ended[rows], self.forced[rows] = False, False
        context = self.states.new_zeros(len(rows), self.states.shape[-1])
        self._back_out_of(rows, torch.ones(len(rows), dtype=torch.bool, device=rows.device), context, self.steered)
        self._clear_stale(rows)
        if self.model.has_draft_head:
            self._draft(rows, self._head_window(rows, context))
        else:  # the encoder drafts in the next call's windows
            self.drafted[rows] = 0

    def _back_out_of(self, rows: Tensor, backing: Tensor, context: Tensor, count: Tensor | None = None) -> None:
        """Backs the ``backing`` (r,) bool of ``rows`` out (``_back_out``), again while they meet a dead
        end, and writes the state that predicted each one's new token into its row of ``context``.
        ``count`` (default: the dead ends', ``rewinds``) counts the first backing-out of each and sizes it."""
        backing = backing.nonzero().squeeze(-1)
        count = self.rewinds if count is None else count
        while len(backing):
            context[backing], again = self._back_out(rows[backing], count)
            backing, count = backing[again], self.rewinds

    def _clear_stale(self, rows: Tensor) -> None:
        """What is left of a draft past the token just drawn goes; the next draft takes its place."""
        stale = torch.arange(self.width, device=self.x.device) >= self.position[rows].unsqueeze(-1)
        self.x[rows] = torch.where(
            stale & ~self.ended[rows].unsqueeze(-1), self.model.tokenizer.mask_token_id, self.x[rows]
        )

    def _next_logits(self, states: Tensor, start: Tensor) -> Tensor:
        """The next-token logits (r, M + 1, D) from the causal states before positions start .. start + M;
        no sample starts with a token that cannot start a SMILES."""
        logits = self._logits(states)
        logits[(start == 1).nonzero().squeeze(-1).unsqueeze(-1), 0, self.first_tokens] = -math.inf
        return logits

    def _logits(self, states: Tensor) -> Tensor:
        """The head's logits over the tokens the decoder may draw, (..., D)."""
        return self.head(states).index_select(-1, self.vocabulary)

    def _remember(self, rows: Tensor, start: Tensor, states: Tensor, accepted: Tensor) -> None:
        """Keeps the causal states of the positions whose tokens are now committed (start - 1 and the
        accepted drafts): a row that backs out to position P draws again from the state at P - 1."""
        if self.states is None:
            self.states = states.new_zeros(len(self.x), self.width, states.shape[-1])
        offsets = torch.arange(states.shape[1], device=rows.device)
        positions = start.unsqueeze(-1) - 1 + offsets
        row, slot = ((offsets <= accepted.unsqueeze(-1)) & (positions < self.width)).nonzero(as_tuple=True)
        self.states[rows[row], positions[row, slot]] = states[row, slot]

    def _back_out(self, rows: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        """Takes back the last ``REWIND`` tokens of ``rows`` (twice as many for each backing-out
        ``count`` (R,) has counted, which counts this one) and draws the first of them again from the
        state remembered before it: no further model call.

        Returns:
            (the causal state that predicted each row's new token, (r, H); whether the row met a
            dead end again, with a rewind left).
        """
        position = (self.position[rows] - REWIND * 2 ** count[rows]).clamp(min=1)
        count[rows] += 1
        self.writer.rewind(rows, position)
        context = self.states[rows, position - 1]
        logits = self._next_logits(context.unsqueeze(1), position)
        _, stuck = self._verify(rows, position, torch.zeros_like(position), logits)
        self.position[rows] = position + (~stuck).long()
        return context, stuck

    def _head_window(self, rows: Tensor, context: Tensor) -> Tensor:
        """The draft head's states (r, B, H) of the window at each row's token just drawn: slot 0
        holds that token, the others [MASK]; ``context`` is the causal state that predicted it."""
        slots = torch.full((len(rows), self.model.block_size), self.model.tokenizer.mask_token_id, device=rows.device)
        slots[:, 0] = self.x[rows, (self.position[rows] - 1).clamp(max=self.width - 1)]  # (rows past the end: unused)
        return self.model.draft(context, slots)

    def _verify(self, rows: Tensor, start: Tensor, drafted: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Accepts each row's drafts left to right against p, then draws one token from the residual
        at the first rejection or from p after a fully accepted draft.

        Returns:
            (the drafts accepted per row, (r,); whether the row met a dead end after them, where it
            committed nothing, and has a rewind left to back out of it).
        """
        accepted = torch.zeros_like(start)
        going = torch.ones_like(start, dtype=torch.bool)
        stuck = torch.zeros_like(going)
        for i in range(int(drafted.max()) + 1):
            here = (going & (start + i < self.width)).nonzero().squeeze(-1)  # no token after the last position
            if len(here) == 0:
                break
            at = rows[here]
            restricted, blocked, by_rules = self._restricted(logits[here, i], at, start[here] + i)
            refused = self._mostly_refused(logits[here, i], by_rules, at)
            if refused.any():  # commit nothing from here: back out
                stuck[here[refused]], going[here[refused]] = True, False
                here, at, restricted, blocked = here[~refused], at[~refused], restricted[~refused], blocked[~refused]
                if len(here) == 0:
                    break
            p = target_probs(restricted, self.config)
            verify = i < drafted[here]
            token, take, residual = torch.zeros_like(here), torch.zeros_like(verify), p
            if verify.any():
                d, q = self.draft[at, i], self.draft_probs[at, i]
                q_d, p_d = q.gather(1, d.unsqueeze(-1)).squeeze(-1), p.gather(1, d.unsqueeze(-1)).squeeze(-1)
                u = torch.rand(len(here), dtype=torch.float64, device=p.device, generator=self.generator)
                take = verify & (u * q_d <= p_d) & (p_d > 0) & ~blocked
                candidates = take.nonzero().squeeze(-1)
                take[candidates] = self.writer.completable(at[candidates], self.vocabulary[d[candidates]])
                token = torch.where(take, d, token)
                excess = torch.where(verify.unsqueeze(-1), (p - q).clamp(min=0), p)
                # p = q leaves no residual; the test then rejects nothing, so only a refused draft lands here.
                residual = torch.where(excess.sum(-1, keepdim=True) > 1e-12, excess, p)
            fresh = (~take).nonzero().squeeze(-1)
            if len(fresh):
                whole = partial(self._untruncated, logits[here[fresh], i], at[fresh], start[here[fresh]] + i)
                token[fresh], dead = _draw(
                    residual[fresh], self.writer, at[fresh], self.generator, self.sep, self.names, whole
                )
                dead |= blocked[fresh]
                backs_out = self.rewinds[at[fresh]] < MAX_REWINDS
                stuck[here[fresh[dead & backs_out]]] = True
                self.forced[at[fresh[dead & ~backs_out]]] = True
            commit = ~stuck[here]
            self.writer.commit(at[commit], start[here[commit]] + i, self.vocabulary[token[commit]])
            self.ended[at[commit]] |= token[commit] == self.sep
            accepted[here] += take.long()
            going[here] = take & (token != self.sep)
        return accepted, stuck

    def _draft(self, rows: Tensor, states: Tensor) -> None:
        """Draws the next draft of each going row from ``states`` (r, B, H), the window that starts
        at the token it just drew (slots 1 .. B - 1 stand for the positions after it), left to right
        so that the automaton restricts every slot; writes it into x. A draft stops after [SEP] and
        at the model's last position."""
        self.drafted[rows] = 0
        live = (~self.ended[rows] & (self.position[rows] < self.width)).nonzero().squeeze(-1)
        at, states = rows[live], states[live]
        state = self.writer.state_of(at) if self.writer.syntax is not None else None
        open_ = torch.ones(len(at), dtype=torch.bool, device=rows.device)
        for b in range(self.draft.shape[1]):
            where = self.position[at] + b
            open_ &= where < self.width
            if not open_.any():
                break
            q = target_probs(self._restricted(self._logits(states[:, b + 1]), at, where, state)[0], self.config)
            token = draw_from_probs(q, self.generator)
            self.draft[at, b], self.draft_probs[at, b] = token, q
            self.drafted[at] += open_.long()
            ids = self.vocabulary[token]
            self.x[at[open_], where[open_]] = ids[open_]
            if state is not None:
                state = self.writer.syntax.advance(state, ids)
            open_ &= token != self.sep


@torch.inference_mode()
def decode_speculative(
    model: Denoiser,
    head: Head,
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[int], None] | None,
    syntax: SmilesSyntax | None,
    steering: Steering | None = None,
    samples: int | None = None,
    vocabulary: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Decodes x = [CLS] + [MASK]s until every row has committed [SEP] or filled the model's positions.

    Args:
        model: the denoiser, with a causal context and blocks of B >= 2.
        head: hidden states to logits (with what may not be drawn removed).
        x: (R, N) [CLS], then [MASK]s to the last position.
        config: temperature and top_p, for p and q alike; ``cache`` keeps the committed tokens'
            keys and values (``polydiff.model.kv_cache``) rather than re-encode the prefix every call.
        on_step: called after every model call with the number of sequences that ended in it.
        syntax: the SMILES automaton, with which the kekulization check runs; None for neither.
        steering: takes back the end of rows whose finished molecules miss a guided model's
            targets (``polydiff.sampling.steering``; ``model`` is then a guided ``GuidedDenoiser``).
        samples: sequences to write (at least R; default R). A row whose sequence ends starts the
            next one in the same call, from its row of x as given, while any are left (continuous
            batching): the calls do not wait for a batch's slowest rows (in fixed batches of 256,
            three calls in five held 16 rows or fewer).
        vocabulary: the ids of the tokens ``head`` may give any probability, ascending (default:
            all). p and q span these alone: a MOSES model's 24 of 126 tokens make every operation
            on them five times smaller.

    Returns:
        (the tokens of each sequence, in the order started (row i of x writes sequence i first),
        pads after its [SEP]; the model calls of each).
    """
    samples = len(x) if samples is None else samples
    if samples < len(x):
        raise ValueError(f"samples ({samples}) must be at least the rows of x ({len(x)})")
    initial = x.clone() if samples > len(x) else x
    if vocabulary is None:
        vocabulary = torch.arange(len(model.tokenizer), device=x.device)
    decoder = _SpeculativeDecoder(model, head, x, config, generator, syntax, vocabulary)
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    sequence = torch.arange(len(x), device=x.device)  # the sequence each row is writing
    written, written_calls = x.new_empty(samples, x.shape[1]), calls.new_zeros(samples)
    started = len(x)
    # The last finished molecule of each row steering took back (``has_kept``): written in place of
    # a rewrite that ends at a dead end, so steering never leaves a row worse than it found it.
    kept, has_kept = torch.zeros_like(x), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    while True:
        rows = (~decoder.ended & (decoder.position < decoder.width)).nonzero().squeeze(-1)
        if len(rows) == 0:
            break
        decoder.step(rows)
        calls[rows] += 1
        finished = rows[decoder.ended[rows]] if steering is not None else rows[:0]
        while len(finished):  # a row that writes [SEP] again as it backs out is judged again
            last = decoder.last_encoded(finished)
            if model.uses_guidance:  # the guided calls computed the unconditional states
                states = model.unconditional(decoder.states[finished, : int(last.max()) + 1])
            else:  # a pass of the unconditional model of their own (positions 0 .. last), counted
                states = _call(model.model, decoder.x[finished], torch.ones_like(last), last)[0]
                calls[finished] += 1
            rejected = steering.rejected(states, last, generator)
            refused = finished[rejected & (decoder.steered[finished] < STEERING_REWINDS)]
            molecules = refused[~decoder.forced[refused]]
            kept[molecules], has_kept[molecules] = x[molecules], True
            decoder.reopen(refused)
            finished = refused[decoder.ended[refused]]
        done = rows[decoder.ended[rows] | (decoder.position[rows] >= decoder.width)]
        worse = (has_kept[done] & (decoder.forced[done] | ~decoder.ended[done])).unsqueeze(-1)
        written[sequence[done]], written_calls[sequence[done]] = torch.where(worse, kept[done], x[done]), calls[done]
        fresh = done[: samples - started]
        if len(fresh):
            sequence[fresh] = started + torch.arange(len(fresh), device=x.device)
            started += len(fresh)
            decoder.restart(fresh, initial[fresh])
            calls[fresh], has_kept[fresh] = 0, False
        if on_step is not None:
            on_step(len(done))
    return pad_after_end(written, model.tokenizer.sep_token_id, model.tokenizer.pad_token_id), written_calls
