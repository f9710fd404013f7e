"""Block diffusion (BD3-LM, Arriola et al., ICLR 2025): masked diffusion inside blocks of B tokens,
autoregressive across them.

The L tokens of a sequence and its closing [SEP] are cut into blocks of B (block k holds tokens
kB+1 .. (k+1)B, counted from 1 after [CLS]; [SEP] is token L+1). The model factorises

    log p(x_0) = sum_k log p(x_0^k | x_0^{<k}),

and each term is bounded by the masked-diffusion ELBO of block k alone, with its own time t_k and
the clean earlier blocks as context:

    NLL(x_0) <= sum_k E_{t_k} E_{x_t^k ~ q} [ w(t_k) sum_{l in k: x_t^l = m} -log p_theta(x_0^l | x_t^k, x_0^{<k}) ].

Block k's tokens see their own (noisy) block and the clean blocks before it, never a later block.
Training scores every block of a sequence in one pass over the 2N-long input [x_t ; x_0] (both
halves with positions 0 .. N-1): noisy tokens of block k attend to the noisy tokens of block k and
to the clean tokens of blocks < k; clean tokens of block k attend to clean tokens of blocks <= k.
Sampling denoises block 0, then block 1, ... on one N-long copy under the block-causal mask, which
gives every position the same view it had in training.

[SEP] is generated like any token, so the model chooses the length: the sampler decodes blocks
until a sequence has ended (BD3-LM's variable-length generation), and the bound covers the length
as well (a model without blocks bounds log p(x_0 | L), with L drawn from the training histogram).
[CLS] is the one frame token: visible to every position, attending only to itself. Pads are seen
by no one.

B = 1 is an autoregressive model, and its bound is exact: a one-token block is either masked or
clean, the denoiser cannot use t (block diffusion runs without time conditioning), and
E_t[w(t) 1{masked}] = int_0^1 w(t) (1 - alpha(t)) dt = alpha(0) - alpha(1) = 1, so the term is the
token's cross-entropy given the clean tokens before it: no t to sample, and no estimator
variance, which BD3-LM identify as the cause of the perplexity gap between B = 1 and an
autoregressive model. A [MASK] query then adds nothing that the clean prefix lacks, so
``DiffusionTask`` computes B = 1 as a causal language model over x_0 alone (the hidden state of
token i, under ``sampling_mask``, predicts token i + 1): the same bound in one N-long pass.

B > L is a masked-diffusion model over the whole sequence and its length.

With a causal context (``DiffusionConfig.causal_context``) the clean half is encoded causally
instead: clean token i sees the clean tokens <= i, so its state can also predict token i + 1, and
training adds that next-token loss, computed on the clean half the pass encodes anyway. A noisy
block still sees its own block and the clean tokens before it, but it no longer needs to start
where a block of the factorisation does: training scores a few noisy windows of B tokens per
sequence, each at a random start with its own t (``draw_windows``, ``window_mask``), in one pass
over [x_0 ; windows] of N + W B positions. The sampler then decodes speculatively
(``polydiff.sampling.speculative``): what denoises the windows (the encoder, or a draft head:
``DiffusionConfig.drafter``) drafts several tokens per call, and the next-token
prediction, trained on every token of every step, accepts or replaces them, so the samples follow
it exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor


def block_index(content: Tensor, block_size: int) -> Tensor:
    """The block of every content token: its rank among the row's content tokens, over B.

    Args:
        content: (batch, N) bool, the tokens that are generated ([SEP] included; not [CLS] or pads).
        block_size: B.

    Returns:
        (batch, N) long block numbers; -1 off ``content``.
    """
    rank = content.long().cumsum(-1) - 1
    return torch.where(content, rank.div(block_size, rounding_mode="floor"), -1)


def draw_windows(
    content: Tensor, count: int, block_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draws ``count`` windows of B positions per row, each at one of the M + B - 1 starts whose
    window holds a content token (the first B - 1 begin before the content and are cut there, as
    the last ones are cut at [SEP]).

    Every content token then lies in B of the M + B - 1 possible windows, and each possible window
    is a block of exactly one of the B ways to cut the sequence into blocks (block k of offset o
    starts at kB - o + 1): a uniform window times (M + B - 1) / B estimates the block bound
    averaged over the B offsets, without bias.

    Args:
        content: (batch, N) bool, the generated tokens, a contiguous run after [CLS] ([SEP] last):
            M per row (docs/math.md, section 5).

    Returns:
        (the first position of each window (batch, count), possibly before the content; whether
        each slot stands for a content token (batch, count, B)).
    """
    lengths = content.sum(-1, keepdim=True)
    first = content.long().argmax(-1, keepdim=True)  # the first content position (1, after [CLS])
    u = torch.rand(content.shape[0], count, device=content.device, generator=generator)
    starts = first - (block_size - 1) + (u * (lengths + block_size - 1)).long().clamp(max=lengths + block_size - 2)
    slots = starts.unsqueeze(-1) + torch.arange(block_size, device=content.device)
    inside = (slots >= first.unsqueeze(-1)) & (slots < (first + lengths).unsqueeze(-1))
    return starts, inside


def _causal_content_attention(content: Tensor) -> Tensor:
    """(batch, N, N): content query i may see content key j at or before it."""
    rank = content.long().cumsum(-1)
    return (rank.unsqueeze(-2) <= rank.unsqueeze(-1)) & content.unsqueeze(-1) & content.unsqueeze(-2)


def _content_attention(content: Tensor, blocks: Tensor, inclusive: bool) -> Tensor:
    """(batch, N, N): content query i may see content key j of an earlier block (or the same, if inclusive)."""
    query, key = blocks.unsqueeze(-1), blocks.unsqueeze(-2)
    earlier = key <= query if inclusive else key < query
    return earlier & content.unsqueeze(-1) & content.unsqueeze(-2)


def sampling_mask(content: Tensor, frame: Tensor, block_size: int, causal_before: int | None = None) -> Tensor:
    """The block-causal attention of one N-long copy, (batch, N, N) bool: True where query i may see key j.

    Args:
        content: (batch, N) bool, the generated tokens ([SEP] included).
        frame: (batch, N) bool, the tokens every position sees and that see only each other ([CLS]).
        block_size: B.
        causal_before: for a model with a causal context, the block being denoised: the clean
            blocks before it are encoded causally, as in training; None for block-causal throughout.
    """
    blocks = block_index(content, block_size)
    allowed = _content_attention(content, blocks, inclusive=True)
    if causal_before is not None:
        clean = (content & (blocks < causal_before)).unsqueeze(-1)
        allowed = torch.where(clean, _causal_content_attention(content), allowed)
    return allowed | frame.unsqueeze(-2)


def training_mask(content: Tensor, frame: Tensor, block_size: int, causal_context: bool = False) -> Tensor:
    """The attention of the 2N-long training input [x_t ; x_0], (batch, 2N, 2N) bool.

    Args:
        content: (batch, N) bool, the generated tokens ([SEP] included).
        frame: (batch, N) bool, the tokens every position sees and that see only each other ([CLS]).
        block_size: B.
        causal_context: clean tokens see the clean tokens up to themselves, not their whole block.

    Returns:
        Rows and columns 0 .. N-1 are x_t, N .. 2N-1 are x_0. The frame of x_t holds the only frame
        keys (that of x_0 is a duplicate nobody sees); every row sees at least [CLS].
    """
    blocks = block_index(content, block_size)
    noisy_to_clean = _content_attention(content, blocks, inclusive=False)
    same_or_earlier = _content_attention(content, blocks, inclusive=True)
    noisy_to_noisy = same_or_earlier & ~noisy_to_clean  # the same block only
    clean_to_clean = _causal_content_attention(content) if causal_context else same_or_earlier
    frame_keys = frame.unsqueeze(-2).expand_as(noisy_to_noisy)
    top = torch.cat([noisy_to_noisy | frame_keys, noisy_to_clean], dim=-1)
    bottom = torch.cat([frame_keys, clean_to_clean], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def window_mask(content: Tensor, frame: Tensor, starts: Tensor, in_window: Tensor) -> Tensor:
    """The attention of a causal context with noisy windows: [x ; W windows of B slots], (r, N + W B, N + W B) bool.

    The first N positions are the sequence encoded causally (content sees content up to itself).
    Window w is a noisy block that may start at any position: slot b stands for position
    ``starts[w] + b`` and sees the content before ``starts[w]`` and the valid slots of its own
    window, never another window. Everything sees the frame. Training scores a few windows per
    sequence at random starts; sampling puts one after every place a draft may be cut.

    Args:
        content: (r, N) bool, the generated tokens of the sequence part ([SEP] included).
        frame: (r, N) bool, the tokens every position sees ([CLS]).
        starts: (r, W) the first position of each window.
        in_window: (r, W, B) bool, the slots that stand for a position of the sequence.
    """
    (rows, length), (windows, block_size) = content.shape, in_window.shape[1:]
    slots = windows * block_size
    before = content.unsqueeze(1) & (torch.arange(length, device=content.device) < starts.unsqueeze(-1))
    before = before.unsqueeze(2).expand(-1, -1, block_size, -1).reshape(rows, slots, length)
    same = torch.eye(windows, dtype=torch.bool, device=content.device).view(1, windows, 1, windows, 1)
    own = same & in_window.view(rows, windows, block_size, 1, 1) & in_window.view(rows, 1, 1, windows, block_size)
    nothing = torch.zeros(rows, length, slots, dtype=torch.bool, device=content.device)
    top = torch.cat([_causal_content_attention(content), nothing], -1)
    bottom = torch.cat([before, own.reshape(rows, slots, slots)], -1)
    frame_keys = torch.cat([frame, torch.zeros(rows, slots, dtype=torch.bool, device=content.device)], -1)
    return torch.cat([top, bottom], 1) | frame_keys.unsqueeze(1)
