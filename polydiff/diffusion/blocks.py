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


def _content_attention(content: Tensor, blocks: Tensor, inclusive: bool) -> Tensor:
    """(batch, N, N): content query i may see content key j of an earlier block (or the same, if inclusive)."""
    query, key = blocks.unsqueeze(-1), blocks.unsqueeze(-2)
    earlier = key <= query if inclusive else key < query
    return earlier & content.unsqueeze(-1) & content.unsqueeze(-2)


def sampling_mask(content: Tensor, frame: Tensor, block_size: int) -> Tensor:
    """The block-causal attention of one N-long copy, (batch, N, N) bool: True where query i may see key j.

    Args:
        content: (batch, N) bool, the generated tokens ([SEP] included).
        frame: (batch, N) bool, the tokens every position sees and that see only each other ([CLS]).
        block_size: B.
    """
    blocks = block_index(content, block_size)
    return _content_attention(content, blocks, inclusive=True) | frame.unsqueeze(-2)


def training_mask(content: Tensor, frame: Tensor, block_size: int) -> Tensor:
    """The attention of the 2N-long training input [x_t ; x_0], (batch, 2N, 2N) bool.

    Args:
        content: (batch, N) bool, the generated tokens ([SEP] included).
        frame: (batch, N) bool, the tokens every position sees and that see only each other ([CLS]).
        block_size: B.

    Returns:
        Rows and columns 0 .. N-1 are x_t, N .. 2N-1 are x_0. The frame of x_t holds the only frame
        keys (that of x_0 is a duplicate nobody sees); every row sees at least [CLS].
    """
    blocks = block_index(content, block_size)
    noisy_to_clean = _content_attention(content, blocks, inclusive=False)
    clean_to_clean = _content_attention(content, blocks, inclusive=True)
    noisy_to_noisy = clean_to_clean & ~noisy_to_clean  # the same block only
    frame_keys = frame.unsqueeze(-2).expand_as(noisy_to_noisy)
    top = torch.cat([noisy_to_noisy | frame_keys, noisy_to_clean], dim=-1)
    bottom = torch.cat([frame_keys, clean_to_clean], dim=-1)
    return torch.cat([top, bottom], dim=-2)
