"""DraftHead: a small block denoiser on top of a causal encoder.

A model with a causal context predicts the next token from the causal state h_{s-1} (which has
read x^{<s}). The draft head denoises the window of B positions s .. s + B - 1 that follows: it
reads h_{s-1} and the window's tokens (clean, or [MASK] where noised) through one bidirectional
transformer layer of its own, and gives one state per slot, which the encoder's output projection
turns into p(x^{s+b} | x_t^{window}, x^{<s}). It never sends gradients into the encoder: the
encoder trains on the next-token loss alone, as an autoregressive model does, and the head learns
to denoise from what the encoder has learnt.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import BertConfig


class DraftHead(nn.Module):
    """One transformer layer over [projected h_{s-1} ; B slots].

    Args:
        config: the encoder's ``BertConfig`` (width, heads, feed-forward width, dropout).
        block_size: B, the slots of a window.
    """

    def __init__(self, config: BertConfig, block_size: int) -> None:
        super().__init__()
        width = config.hidden_size
        self.context = nn.Linear(width, width)
        self.slot_positions = nn.Embedding(block_size, width)
        self.layer = nn.TransformerEncoderLayer(
            width,
            config.num_attention_heads,
            config.intermediate_size,
            config.hidden_dropout_prob,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, context: Tensor, slots: Tensor) -> Tensor:
        """The slots' states, (..., B, H).

        Args:
            context: (..., H) the causal state before each window (detached: no gradient reaches it).
            slots: (..., B, H) the embeddings of the window's tokens (clean or [MASK]).
        """
        leading, (block_size, width) = context.shape[:-1], slots.shape[-2:]
        if not context.numel():  # no window to draft (every row has ended)
            return slots.new_zeros(*leading, block_size, width)
        first = self.context(context.detach()).reshape(-1, 1, width)
        window = torch.cat([first, (slots + self.slot_positions.weight[:block_size]).reshape(-1, block_size, width)], 1)
        return self.norm(self.layer(window)[:, 1:]).reshape(*leading, block_size, width)
