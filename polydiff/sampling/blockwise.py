"""Block-by-block decoding of a block-diffusion model (``polydiff.diffusion.blocks``).

A block of B tokens is decoded while it sees only the clean blocks before it, then the next
block, until every row has written [SEP] or a fixed length is filled. Within a block:

- ``decode_prefix`` (the default where a model without a causal context ends its own sequences):
  each model call drafts every [MASK] of the block at once and commits a left-to-right run of
  them, so a call commits several tokens, each held to the SMILES constraints
  (``polydiff.sampling.constraints``); a model with a causal context decodes speculatively
  instead (``polydiff.sampling.speculative``);
- ``decode_until_end`` and ``decode_blocks``: the reverse process (``polydiff.sampling.reverse``)
  on the block, ``confidence`` or ``ancestral``;
- ``decode_next_tokens``: one-token blocks (B = 1), the autoregressive limit, one model call per
  token drawn from the hidden state of the token before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from polydiff.diffusion.blocks import block_index, sampling_mask
from polydiff.model.kv_cache import KeyValueCache
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.constraints.completion import CompletionSearch
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import SmilesSyntax, SyntaxState
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.reverse import Head, ReverseProcess, draw_tokens


def pad_after_end(x: Tensor, sep_token_id: int, pad_token_id: int) -> Tensor:
    """x with every position after a row's first [SEP] set to [PAD]."""
    is_end = (x == sep_token_id).long()
    return x.masked_fill(is_end.cumsum(-1) - is_end > 0, pad_token_id)


def decode_blocks(
    process: ReverseProcess,
    x: Tensor,
    content: Tensor,
    cls_token_id: int,
    block_size: int,
    causal_context: bool,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion at a fixed length: denoises block 0, then block 1, ..., each seeing only the
    blocks before it (encoded causally with a causal context); ``content`` is everything after
    [CLS] but pads, [SEP] included.

    Returns:
        (the filled tokens, the model calls per row).
    """
    blocks = block_index(content, block_size)
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for k in range(int(blocks.max()) + 1):
        attention = sampling_mask(content, x == cls_token_id, block_size, k if causal_context else None)
        x, block_calls = process.sample(x, attention, generator, on_step, active=blocks == k)
        calls += block_calls
    return x, calls


def decode_until_end(
    process: ReverseProcess,
    x: Tensor,
    sep_token_id: int,
    pad_token_id: int,
    block_size: int,
    causal_context: bool,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion without a length: decodes x = [CLS] + [MASK]s block by block until every
    row has generated [SEP] or filled the model's positions. A block sees only the blocks before
    it, so each pass runs on the decoded prefix and the current block alone, and only on the rows
    still going.

    Returns:
        (the tokens, pads after each row's [SEP]; the model calls per row).
    """
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for k in range(-(-(x.shape[1] - 1) // block_size)):
        running = ~(x == sep_token_id).any(-1)
        if not running.any():
            break
        rows, end = running.nonzero().squeeze(-1), min(1 + (k + 1) * block_size, x.shape[1])
        prefix = x[rows, :end]
        content = torch.ones_like(prefix, dtype=torch.bool)
        content[:, 0] = False
        active = torch.zeros_like(content)
        active[:, 1 + k * block_size :] = True
        attention = sampling_mask(content, ~content, block_size, k if causal_context else None)
        x[rows, :end], block_calls = process.sample(prefix, attention, generator, on_step, active=active)
        calls[rows] += block_calls
        x = pad_after_end(x, sep_token_id, pad_token_id)  # a block may have drawn tokens past [SEP]
    return x, calls


def cannot_start(model: Denoiser) -> list[int]:
    """Token ids a sequence may not start with: [SEP] (a sample has at least one token) and, for
    SELFIES, ring and branch symbols (with no atom before them they decode to nothing)."""
    ids = [model.tokenizer.sep_token_id]
    if model.representation.name == "selfies":
        ids += [i for token, i in model.tokenizer.get_vocab().items() if "Ring" in token or "Branch" in token]
    return ids


def _draft_states(model: Denoiser, x: Tensor, positions: Tensor) -> Tensor:
    """The states that predict ``positions`` (r, B) of x in one model call: the first uncommitted
    position and the rest of its block, which are [MASK] in x. One block-causal pass over x up to
    the longest block, whose masked positions give the drafts.

    Returns:
        (r, B, hidden) states.
    """
    rows = torch.arange(len(x), device=x.device).unsqueeze(-1)
    end = int(positions.max()) + 1
    content = torch.ones_like(x[:, :end], dtype=torch.bool)
    content[:, 0] = False
    hidden = model.encode(x[:, :end], sampling_mask(content, ~content, model.block_size))
    return hidden[rows, positions]


Draw = Callable[[Tensor], Tensor]  # logits (K, V) -> one token per row, (K,)


def drawn_by(config: SamplingConfig, generator: torch.Generator) -> Draw:
    """Draws from logits tempered and filtered by ``config`` (``draw_tokens``)."""
    return lambda logits: draw_tokens(logits, config, generator)[0]


def draw_completable(
    logits: Tensor,
    prefixes: list[MoleculePrefix],
    vocabulary: Sequence[str],
    draw: Draw,
    fits: Callable[[int, int, MoleculePrefix], bool] | None = None,
) -> tuple[Tensor, list[MoleculePrefix | None]]:
    """Draws one token per row (``draw``), refusing tokens after which no SMILES could be kekulized
    (or, with ``fits``, fill its fixed length).

    A refused token is removed from its row's distribution and the row draws again: a draw from
    the distribution restricted to the tokens that keep the molecule completable. A row with no
    such token gets None for its prefix: no continuation can make it valid (the check is
    conservative, so a prefix can pass it and still be a dead end).

    Args:
        fits: a further test, (row, token, the row's prefix with it) -> whether the token may be
            drawn there (``CompletionSearch.for_rows``: whether the row can still fill its length).

    Returns:
        (the tokens, (R,); the rows' prefixes with them).
    """
    tokens = draw(logits)

    def refused(row: int, prefix: MoleculePrefix) -> bool:  # with its row's token as drawn last
        return not prefix.can_complete() or (fits is not None and not fits(row, int(tokens[row]), prefix))

    after: list[MoleculePrefix | None] = [p.then(vocabulary[t]) for p, t in zip(prefixes, tokens.tolist(), strict=True)]
    for row in torch.isinf(logits).all(-1).nonzero().flatten().tolist():  # the automaton left nothing
        after[row] = None
    pending = [row for row, prefix in enumerate(after) if prefix is not None and refused(row, prefix)]
    while pending:
        index = torch.tensor(pending, device=logits.device)
        logits[index, tokens[index]] = -math.inf
        exhausted = torch.isinf(logits[index]).all(-1)
        for row in index[exhausted].tolist():
            after[row] = None
        pending = index[~exhausted].tolist()
        if pending:
            tokens[pending] = draw(logits[pending])
        again = []
        for row, token in zip(pending, tokens[pending].tolist(), strict=True):
            after[row] = prefixes[row].then(vocabulary[token])
            if refused(row, after[row]):
                again.append(row)
        pending = again
    return tokens, after


class Committer:
    """Writes tokens into x one position at a time per row, holding them to the constraints when given.

    Args:
        x: (R, N) the sequences being written.
        syntax: the SMILES automaton (its state kept here for every row), or None.
    """

    def __init__(self, x: Tensor, syntax: SmilesSyntax | None) -> None:
        self.x, self.syntax = x, syntax
        self.state = syntax.start(len(x), x.device) if syntax is not None else None
        # Rows share their prefixes' objects, and with them the kekulization answers (``then``).
        self.root, self.restarted = MoleculePrefix(), 0
        self.prefixes = [self.root] * len(x)

    def restart(self, rows: Tensor) -> None:
        """``rows`` start new sequences: their constraint state becomes the empty prefix's. After
        as many restarts as there are rows, a new root: the prefixes of sequences long ended go."""
        self.restarted += len(rows)
        if self.restarted >= len(self.x):
            self.root, self.restarted = MoleculePrefix(), 0
        for row in rows.tolist():
            self.prefixes[row] = self.root
        if self.syntax is not None:
            self.state[rows] = self.syntax.start(len(rows), self.x.device)

    def state_of(self, rows: Tensor) -> SyntaxState:
        """The automaton state of ``rows`` alone (with constraints)."""
        return self.state[rows]

    def allowed(self, rows: Tensor, positions: Tensor) -> Tensor | None:
        """(r, V) bool, what each of ``rows`` may take next at ``positions`` by the automaton (the end
        kept within the model's positions); None without constraints."""
        if self.syntax is None:
            return None
        # Only the rows asked about: the automaton's tables span the vocabulary for every row it is given.
        return self.syntax.allowed(self.state_of(rows), self.x.shape[1] - 1 - positions)

    def completable(self, rows: Tensor, tokens: Tensor) -> Tensor:
        """(r,) bool: whether each row's aromatic atoms can still be kekulized after its token."""
        if self.syntax is None:
            return torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        vocabulary = self.syntax.tokens
        return torch.tensor(
            [
                self.prefixes[row].then(vocabulary[token]).can_complete()
                for row, token in zip(rows.tolist(), tokens.tolist(), strict=True)
            ],
            dtype=torch.bool,
            device=rows.device,
        )

    def rewind(self, rows: Tensor, positions: Tensor) -> None:
        """Takes back what ``rows`` committed from ``positions`` on: their constraint state becomes
        that of their tokens before those positions again (the tokens themselves stay in x)."""
        if self.syntax is None or len(rows) == 0:
            return
        state = self.syntax.start(len(rows), self.x.device)
        for position in range(1, int(positions.max())):
            going = (position < positions).nonzero().squeeze(-1)
            state[going] = self.syntax.advance(state[going], self.x[rows[going], position])
        self.state[rows] = state
        for row, end in zip(rows.tolist(), positions.tolist(), strict=True):
            prefix = self.root  # the objects of the first pass, with their answers
            for token in self.x[row, 1:end].tolist():
                prefix = prefix.then(self.syntax.tokens[token])
            self.prefixes[row] = prefix

    def commit(self, rows: Tensor, positions: Tensor, tokens: Tensor) -> None:
        """Writes ``tokens`` at ``positions`` of ``rows`` and moves their constraint state past them."""
        self.x[rows, positions] = tokens
        if self.syntax is None:
            return
        self.state[rows] = self.syntax.advance(self.state[rows], tokens)
        for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
            self.prefixes[row] = self.prefixes[row].then(self.syntax.tokens[token])


@torch.inference_mode()
def decode_prefix(
    model: Denoiser,
    head: Head,
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
    syntax: SmilesSyntax | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion without a length, by parallel drafts committed along the prefix.

    Each model call sees a row's committed tokens and the [MASK]s left in its current block and
    drafts all of them at once from p_theta. The first is drawn from its conditional given
    everything before it, which is clean, restricted (with ``syntax``) to the tokens that keep the
    prefix completable (``draw_completable``), and always committed. The drafts after it are
    committed left to right while each is at least ``config.threshold`` likely and, with
    ``syntax``, allowed by the automaton and the kekulization check; the first that is not stays
    masked for the next call. So every committed prefix keeps to the same rules as a decoder that
    writes one token at a time, and a call commits as many tokens as the model is sure of.

    Args:
        model: the denoiser, block size B >= 2.
        head: hidden states to logits (with what may not be drawn removed).
        x: (R, N) [CLS], then [MASK]s to the last position; a row ends at the [SEP] it commits.
        config: temperature, top_p and threshold.
        syntax: the SMILES automaton, with which the kekulization check runs; None for neither.

    Returns:
        (the tokens, pads after each row's [SEP]; the model calls per row).
    """
    tokenizer, block_size = model.tokenizer, model.block_size
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    width, device = x.shape[1], x.device
    writer = Committer(x, syntax)
    calls = torch.zeros(len(x), dtype=torch.long, device=device)
    position = torch.ones(len(x), dtype=torch.long, device=device)  # each row's first uncommitted position
    ended = torch.zeros(len(x), dtype=torch.bool, device=device)
    log_threshold = math.log(config.threshold)
    while True:
        rows = (~ended & (position < width)).nonzero().squeeze(-1)
        if len(rows) == 0:
            break
        start = position[rows]
        # The row's masked run in its block: positions start .. block_end - 1 (within the model's width).
        positions = start.unsqueeze(-1) + torch.arange(block_size, device=device)
        block_end = ((start - 1) // block_size + 1) * block_size + 1  # one past the block's last position
        inside = positions < block_end.clamp(max=width).unsqueeze(-1)
        logits = head(_draft_states(model, x[rows], positions.clamp(max=width - 1)))
        calls[rows] += 1

        first = logits[:, 0]
        first[
            (start == 1).nonzero().squeeze(-1).unsqueeze(-1), torch.tensor(cannot_start(model), device=device)
        ] = -math.inf
        allowed = writer.allowed(rows, start)
        if allowed is None:
            tokens = draw_tokens(first, config, generator)[0]
        else:
            drawing = [writer.prefixes[row] for row in rows.tolist()]
            tokens, drawn = draw_completable(
                first.masked_fill(~allowed, -math.inf), drawing, syntax.tokens, drawn_by(config, generator)
            )
            dead = torch.tensor([prefix is None for prefix in drawn], dtype=torch.bool, device=device)
            tokens[dead] = sep  # no valid molecule can come of it: end it, not write on
        writer.commit(rows, start, tokens)
        going = tokens != sep
        ended[rows] |= ~going
        committed = torch.ones_like(start)

        drafts, log_p = draw_tokens(logits[:, 1:].reshape(-1, logits.shape[-1]), config, generator)
        drafts, log_p = drafts.view(len(rows), -1), log_p.view(len(rows), -1)
        for j in range(1, block_size):
            take = going & inside[:, j] & (log_p[:, j - 1] >= log_threshold)
            allowed = writer.allowed(rows, positions[:, j])
            if allowed is not None:
                take &= allowed.gather(1, drafts[:, j - 1 : j]).squeeze(-1)
                candidates = take.nonzero().squeeze(-1)
                take[candidates] = writer.completable(rows[candidates], drafts[candidates, j - 1])
            if not take.any():
                break
            writer.commit(rows[take], positions[take, j], drafts[take, j - 1])
            committed += take.long()
            ended[rows[take & (drafts[:, j - 1] == sep)]] = True
            going = take & (drafts[:, j - 1] != sep)
        position[rows] = start + committed
        if on_step is not None:
            on_step()
    return pad_after_end(x, sep, pad), calls


def encode_up_to(
    model: Denoiser, cache: KeyValueCache, rows: Tensor, x: Tensor, encoded: Tensor, p: Tensor | int
) -> Tensor:
    """The state of position p - 1 of each row, (r, hidden), whose positions before ``encoded`` are
    in the cache: positions encoded .. p - 1 are encoded causally and join it. ``p`` may differ by
    row. Rows with fewer new positions (a template's fixed tokens make them ragged) re-encode some
    cached ones (or position 0 more than once), which gives the same keys and values."""
    p = torch.as_tensor(p, device=x.device).expand(len(rows))
    new = max(int((p - encoded).max()), 1)  # position p - 1 is a query even when it is cached
    positions = (p.unsqueeze(-1) - new + torch.arange(new, device=x.device)).clamp(min=0)
    context = torch.full_like(positions, -1)
    return model.encode_incremental(cache, rows, x.gather(1, positions), positions, positions + 1, context)[:, -1]


@torch.inference_mode()
def decode_next_tokens(
    model: Denoiser,
    head: Head,
    x: Tensor,
    config: SamplingConfig,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
    free_length: bool,
    syntax: SmilesSyntax | None,
    vocabulary: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One-token blocks: fills the [MASK]s of x left to right, each drawn from the hidden state of
    the token before it (the causal model ``DiffusionTask`` trains at B = 1). A pass runs on the
    prefix before the drawn position, for the rows that draw there; with ``config.cache`` only on
    the positions written since the row's last pass, which attend to the cached ones.

    Args:
        model: the denoiser.
        head: hidden states to logits (the model's head, with what may not be drawn removed).
        x: (R, N) [CLS], then [MASK]s to fill and fixed tokens; [SEP] and pads too, unless
            ``free_length``: then all [MASK]s, ended by the [SEP] the model draws (pads after it).
        syntax: restricts every draw to the tokens that keep the SMILES well-formed and its
            aromatic rings kekulizable; at a fixed [SEP] (x holds no fixed token after a [MASK]
            then), to those after which the row can fill every position up to it and end valid
            there (``CompletionSearch``). A row with no such token ends where it stands, before
            a fixed [SEP].
        vocabulary: the ids of the tokens ``head`` may give any probability (default: all): the
            continuations that a fixed length asks for are written with these.

    Returns:
        (the filled tokens, the model calls per row).
    """
    tokenizer = model.tokenizer
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    pad, mask = tokenizer.pad_token_id, tokenizer.mask_token_id
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    state = syntax.start(len(x), x.device) if syntax is not None else None
    prefixes = [MoleculePrefix()] * len(x)
    search = CompletionSearch(syntax, vocabulary) if syntax is not None and not free_length else None
    # Where each row's [SEP] goes: its template's or length's, or the last position for a row that ends itself.
    last = torch.where((x == sep).any(-1), (x == sep).int().argmax(-1), x.shape[1] - 1)
    # config.cache: a call encodes only the tokens written since the row's last call.
    cache = model.new_cache(len(x), x.shape[1]) if config.cache else None
    encoded = torch.zeros(len(x), dtype=torch.long, device=x.device)  # positions in the cache, per row
    for p in range(1, x.shape[1]):
        draw = x[:, p] == mask
        if draw.any():
            rows = draw.nonzero().squeeze(-1)
            if cache is None:
                prefix = x[rows, :p]
                content = (prefix != pad) & (prefix != cls)
                hidden = model.encode(prefix, sampling_mask(content, ~content & (prefix != pad), 1))[:, -1]
            else:
                hidden = encode_up_to(model, cache, rows, x[rows], encoded[rows], p)
                encoded[rows] = p
            logits = head(hidden)
            if p == 1:
                logits[:, cannot_start(model)] = -math.inf
            if syntax is None:
                x[rows, p] = draw_tokens(logits, config, generator)[0]
            else:
                logits = logits.masked_fill(~syntax.allowed(state, last - p)[rows], -math.inf)
                drawing = [prefixes[row] for row in rows.tolist()]
                # A fixed [SEP] waits at ``last``: each row must fill the positions up to it exactly.
                fits = None if search is None else search.for_rows(state.ids[rows].tolist(), (last[rows] - p).tolist())
                x[rows, p], drawn = draw_completable(logits, drawing, syntax.tokens, drawn_by(config, generator), fits)
                for row, prefix in zip(rows.tolist(), drawn, strict=True):
                    if prefix is None:  # no valid molecule can come of it: end it (short of a fixed end), not write on
                        x[row, p], x[row, p + 1 :], prefix = sep, pad, MoleculePrefix()
                    prefixes[row] = prefix
            calls[rows] += 1
        if syntax is not None:
            state = syntax.advance(state, x[:, p])
            # A template's fixed tokens are part of the molecule the ring check judges.
            for row in (~draw & (x[:, p] != pad) & (x[:, p] != sep)).nonzero().flatten().tolist():
                prefixes[row] = prefixes[row].then(syntax.tokens[int(x[row, p])])
        if free_length:
            x = pad_after_end(x, sep, pad)
        if on_step is not None:
            on_step()
        if not (x[:, p + 1 :] == mask).any():
            break
    return x, calls
