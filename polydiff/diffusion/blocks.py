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
block still sees its own block and the clean tokens of the blocks before it. The sampler then
takes each call's first token from the next-token prediction, which has been trained on every
token of every step, and the drafts after it from the block's masked positions.
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


def context_mask(content: Tensor, frame: Tensor, block_start: Tensor, block: Tensor) -> Tensor:
    """The attention of a sampling call with a causal context: [x ; the current block], (r, N + B, N + B) bool.

    The first N positions are the sequence encoded causally (content sees content up to itself, as
    the clean half in training); the last B are each row's current block, a copy of its positions
    ``block_start .. block_start + B - 1``, which sees the block and the content before
    ``block_start``, as a noisy block does in training. Everything sees the frame.

    Args:
        content: (r, N) bool, the generated tokens (committed or not) of the first part.
        frame: (r, N) bool, the tokens every position sees ([CLS]).
        block_start: (r,) the first position of each row's current block.
        block: (r, B) bool, the slots of the copy that hold a position of the sequence (the last
            block may reach past the model's positions).
    """
    (rows, length), block_size = content.shape, block.shape[1]
    nothing = torch.zeros(rows, length, block_size, dtype=torch.bool, device=content.device)
    before_block = content & (torch.arange(length, device=content.device) < block_start.unsqueeze(-1))
    top = torch.cat([_causal_content_attention(content), nothing], -1)
    bottom = torch.cat(
        [before_block.unsqueeze(1).expand(-1, block_size, -1), block.unsqueeze(1) & block.unsqueeze(2)], -1
    )
    frame_keys = torch.cat([frame, torch.zeros_like(block)], -1)
    return torch.cat([top, bottom], 1) | frame_keys.unsqueeze(1)
