"""Block-by-block decoding of a block-diffusion model (``polydiff.diffusion.blocks``).

A block of B tokens is denoised by the reverse process (``polydiff.sampling.reverse``) while it
sees only the clean blocks before it, then the next block, until every row has written [SEP] or
a fixed length is filled. One-token blocks (B = 1) are the autoregressive limit: each token is
drawn from the hidden state of the token before it, one model call per token, and there the
SMILES constraints (``polydiff.sampling.constraints``) can keep every prefix completable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from polydiff.diffusion.blocks import block_index, sampling_mask
from polydiff.sampling.config import SamplingConfig
from polydiff.sampling.constraints.kekulization import MoleculePrefix
from polydiff.sampling.constraints.syntax import SmilesSyntax
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
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> tuple[Tensor, Tensor]:
    """Block diffusion at a fixed length: denoises block 0, then block 1, ..., each seeing only the
    blocks before it; ``content`` is everything after [CLS] but pads, [SEP] included.

    Returns:
        (the filled tokens, the model calls per row).
    """
    blocks = block_index(content, block_size)
    attention = sampling_mask(content, x == cls_token_id, block_size)
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for k in range(int(blocks.max()) + 1):
        x, block_calls = process.sample(x, attention, generator, on_step, active=blocks == k)
        calls += block_calls
    return x, calls


def decode_until_end(
    process: ReverseProcess,
    x: Tensor,
    sep_token_id: int,
    pad_token_id: int,
    block_size: int,
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
    num_blocks = -(-(x.shape[1] - 1) // block_size)
    for k in range(num_blocks):
        running = ~(x == sep_token_id).any(-1)
        if not running.any():
            for _ in range((num_blocks - k) * process.config.steps if on_step is not None else 0):
                on_step()
            break
        rows, end = running.nonzero().squeeze(-1), min(1 + (k + 1) * block_size, x.shape[1])
        prefix = x[rows, :end]
        content = torch.ones_like(prefix, dtype=torch.bool)
        content[:, 0] = False
        active = torch.zeros_like(content)
        active[:, 1 + k * block_size :] = True
        attention = sampling_mask(content, ~content, block_size)
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


def draw_completable(
    logits: Tensor,
    prefixes: list[MoleculePrefix],
    vocabulary: Sequence[str],
    config: SamplingConfig,
    generator: torch.Generator,
) -> tuple[Tensor, list[MoleculePrefix | None]]:
    """Draws one token per row, refusing tokens after which no SMILES could be kekulized.

    A refused token is removed from its row's distribution and the row draws again: a draw from
    the distribution restricted to the tokens that keep the molecule completable. A row with no
    such token gets None for its prefix: no continuation can make it valid (the check is
    conservative, so a prefix can pass it and still be a dead end).

    Returns:
        (the tokens, (R,); the rows' prefixes with them).
    """
    tokens = draw_tokens(logits, config, generator)[0]
    after: list[MoleculePrefix | None] = [p.then(vocabulary[t]) for p, t in zip(prefixes, tokens.tolist(), strict=True)]
    pending = [row for row, prefix in enumerate(after) if not prefix.can_complete()]
    while pending:
        index = torch.tensor(pending, device=logits.device)
        logits[index, tokens[index]] = -math.inf
        exhausted = torch.isinf(logits[index]).all(-1)
        for row in index[exhausted].tolist():
            after[row] = None
        pending = index[~exhausted].tolist()
        if pending:
            tokens[pending] = draw_tokens(logits[pending], config, generator)[0]
        refused = []
        for row, token in zip(pending, tokens[pending].tolist(), strict=True):
            after[row] = prefixes[row].then(vocabulary[token])
            if not after[row].can_complete():
                refused.append(row)
        pending = refused
    return tokens, after


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
) -> tuple[Tensor, Tensor]:
    """One-token blocks: fills the [MASK]s of x left to right, each drawn from the hidden state of
    the token before it (the causal model ``DiffusionTask`` trains at B = 1). A pass runs on the
    prefix before the drawn position, for the rows that draw there.

    Args:
        model: the denoiser.
        head: hidden states to logits (the model's head, with what may not be drawn removed).
        x: (R, N) [CLS], then [MASK]s to fill and fixed tokens; [SEP] and pads too, unless
            ``free_length``: then all [MASK]s, ended by the [SEP] the model draws (pads after it).
        syntax: restricts every draw to the tokens that keep the SMILES well-formed and its
            aromatic rings kekulizable.

    Returns:
        (the filled tokens, the model calls per row).
    """
    tokenizer = model.tokenizer
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    pad, mask = tokenizer.pad_token_id, tokenizer.mask_token_id
    calls = torch.zeros(len(x), dtype=torch.long, device=x.device)
    state = syntax.start(len(x), x.device) if syntax is not None else None
    prefixes = [MoleculePrefix()] * len(x)
    for p in range(1, x.shape[1]):
        draw = x[:, p] == mask
        if draw.any():
            rows = draw.nonzero().squeeze(-1)
            prefix = x[rows, :p]
            content = (prefix != pad) & (prefix != cls)
            hidden = model.encode(prefix, sampling_mask(content, ~content & (prefix != pad), 1))[:, -1]
            logits = head(hidden)
            if p == 1:
                logits[:, cannot_start(model)] = -math.inf
            if syntax is None:
                x[rows, p] = draw_tokens(logits, config, generator)[0]
            else:
                logits = logits.masked_fill(~syntax.allowed(state)[rows], -math.inf)
                drawing = [prefixes[row] for row in rows.tolist()]
                x[rows, p], drawn = draw_completable(logits, drawing, syntax.tokens, config, generator)
                for row, prefix in zip(rows.tolist(), drawn, strict=True):
                    if prefix is None:  # no valid molecule can come of it: end it, not write on
                        x[row, p], prefix = sep, MoleculePrefix()
                    prefixes[row] = prefix
            calls[rows] += 1
        if syntax is not None:
            state = syntax.advance(state, x[:, p])
        if free_length:
            x = pad_after_end(x, sep, pad)
        done = not (x[:, p + 1 :] == mask).any()
        if on_step is not None:
            for _ in range(x.shape[1] - p if done else 1):  # a finished batch fills its part of the bar
                on_step()
        if done:
            break
    return x, calls
