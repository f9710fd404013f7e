"""Block diffusion (BD3-LM, Arriola et al., ICLR 2025): masked diffusion inside blocks of B tokens,
autoregressive across them.

The L tokens of a sequence are cut into blocks of B (block k holds tokens kB+1 .. (k+1)B, counted
from 1 after [CLS]). The model factorises

    log p(x_0) = sum_k log p(x_0^k | x_0^{<k})

and each term is bounded by the masked-diffusion ELBO of block k alone, with its own time t_k and
the clean earlier blocks as context:

    NLL(x_0) <= sum_k E_{t_k} E_{x_t^k ~ q} [ w(t_k) sum_{l in k: x_t^l = m} -log p_theta(x_0^l | x_t^k, x_0^{<k}) ].

Block k's tokens see their own (noisy) block and the clean blocks before it, never a later block.
Training scores every block of a sequence in one pass over the 2N-long input [x_t ; x_0] (both
halves with positions 0 .. N-1): noisy tokens of block k attend to the noisy tokens of block k and
to the clean tokens of blocks < k; clean tokens of block k attend to clean tokens of blocks <= k.
Sampling denoises block 0, then block 1, ... on one N-long copy under the block-causal mask, which
gives every position the same view it had in training.

[CLS] and [SEP] are visible to every position: [SEP]'s place tells each block how many tokens the
sequence has left (the sampler fixes the length before decoding, as without blocks). They attend
only to each other, so they carry their positions and nothing of the content: through them no
block could see a later one. Pads are seen by no one.

B = 1 is an autoregressive model, and its bound is exact: a one-token block is either masked or
clean, the denoiser cannot use t (block diffusion runs without time conditioning), and
E_t[w(t) 1{masked}] = int_0^1 w(t) (1 - alpha(t)) dt = alpha(0) - alpha(1) = 1, so the term is the
token's cross-entropy given the clean tokens before it. Training computes it so (every token
masked, weight 1) instead of sampling t: the same value without the estimator's variance, which
BD3-LM identify as the cause of the perplexity gap between B = 1 and an autoregressive model.
B >= L is a masked-diffusion model over the whole sequence (except that [CLS] and [SEP] carry no
content).
"""

from __future__ import annotations

import torch
from torch import Tensor


def block_index(content: Tensor, block_size: int) -> Tensor:
    """The block of every content token: its rank among the row's content tokens, over B.

    Args:
        content: (batch, N) bool, the tokens that are generated (not [CLS], [SEP] or pads).
        block_size: B.

    Returns:
        (batch, N) long block numbers; -1 off ``content``.
    """
    rank = content.long().cumsum(-1) - 1
    return torch.where(content, rank.div(block_size, rounding_mode="floor"), -1)


def _content_attention(content: Tensor, blocks: Tensor, inclusive: bool) -> Tensor:
    """(batch, N, N): content query i may see content key j of an earlier block (or the same, if inclusive)."""
    query, key = blocks.unsqueeze(-1), blocks.unsqueeze(-2)
    earlier = key <= query if inclusive else key < query
    return earlier & content.unsqueeze(-1) & content.unsqueeze(-2)


def sampling_mask(content: Tensor, frame: Tensor, block_size: int) -> Tensor:
    """The block-causal attention of one N-long copy, (batch, N, N) bool: True where query i may see key j.

    Args:
        content: (batch, N) bool, the generated tokens.
        frame: (batch, N) bool, [CLS] and [SEP] (not pads).
        block_size: B.
    """
    blocks = block_index(content, block_size)
    return _content_attention(content, blocks, inclusive=True) | frame.unsqueeze(-2)


def training_mask(content: Tensor, frame: Tensor, block_size: int) -> Tensor:
    """The attention of the 2N-long training input [x_t ; x_0], (batch, 2N, 2N) bool.

    Args:
        content: (batch, N) bool, the generated tokens.
        frame: (batch, N) bool, [CLS] and [SEP] (not pads).
        block_size: B.

    Returns:
        Rows and columns 0 .. N-1 are x_t, N .. 2N-1 are x_0. [CLS] and [SEP] of x_t are the only
        frame keys (those of x_0 are duplicates nobody sees); every row sees at least [CLS].
    """
    blocks = block_index(content, block_size)
    noisy_to_clean = _content_attention(content, blocks, inclusive=False)
    clean_to_clean = _content_attention(content, blocks, inclusive=True)
    noisy_to_noisy = clean_to_clean & ~noisy_to_clean  # the same block only
    frame_keys = frame.unsqueeze(-2).expand_as(noisy_to_noisy)
    top = torch.cat([noisy_to_noisy | frame_keys, noisy_to_clean], dim=-1)
    bottom = torch.cat([frame_keys, clean_to_clean], dim=-1)
    return torch.cat([top, bottom], dim=-2)
