"""Floating-point operations of a generation, counted by torch's ``FlopCounterMode``.

torch counts matrix products (``addmm``, ``bmm``, ...) but not the fused kernels a CPU runs some
modules as: an LSTM layer through oneDNN (``aten.mkldnn_rnn_layer``), at inference a whole
``nn.TransformerEncoderLayer`` (``aten._transformer_encoder_layer_fwd``, the draft head's), and
``scaled_dot_product_attention``'s CPU kernel (the key/value cache's attention). Their
formulas are given here, counted as torch counts a product: two FLOPs per multiply-add, for every
weight matrix with every token, and for attention its scores and its weighted sum. Element-wise
work (activations, norms, softmax) is not counted, by torch or here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

Shape = tuple[int, ...]
T = TypeVar("T")


def _matrix_flops(tokens: int, *weights: Shape) -> int:
    """Two FLOPs per multiply-add of each (out, in) weight matrix with each of ``tokens`` vectors."""
    return 2 * tokens * sum(rows * columns for rows, columns in weights)


def _rnn_layer_flops(input: Shape, weight_ih: Shape, weight_hh: Shape, *args: Any, **kwargs: Any) -> int:
    """One LSTM layer over (steps, batch, features): the input and the recurrent products per token."""
    return _matrix_flops(math.prod(input[:-1]), weight_ih, weight_hh)


def _encoder_layer_flops(
    src: Shape, embed_dim: int, num_heads: int, qkv_weight: Shape, qkv_bias: Shape, proj_weight: Shape,
    proj_bias: Shape, use_gelu: bool, norm_first: bool, eps: float, norm_weight_1: Shape, norm_bias_1: Shape,
    norm_weight_2: Shape, norm_bias_2: Shape, ffn_weight_1: Shape, ffn_bias_1: Shape, ffn_weight_2: Shape,
    *args: Any, **kwargs: Any,
) -> int:  # fmt: skip
    """A fused encoder layer over (batch, length, width): its four products per token and attention
    over the whole length (scores and weighted sum, 2 x 2 x length x width per token)."""
    *batch, length, width = src
    tokens = math.prod(batch) * length
    return _matrix_flops(tokens, qkv_weight, proj_weight, ffn_weight_1, ffn_weight_2) + 4 * tokens * length * width


def _cpu_attention_flops(query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any) -> int:
    """Attention of (..., n, d) queries over (..., m, d) keys and (..., m, d_v) values: the scores and
    the weighted sum, over every key whatever the mask (the kernel computes them all)."""
    *batch, queries, width = query
    keys, value_width = key[-2], value[-1]
    return 2 * math.prod(batch) * queries * keys * (width + value_width)


FUSED_FORMULAS = {
    torch.ops.aten.mkldnn_rnn_layer: _rnn_layer_flops,
    torch.ops.aten._transformer_encoder_layer_fwd: _encoder_layer_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
}


def counted_flops(work: Callable[[], T]) -> tuple[T, int]:
    """What ``work()`` returns and the FLOPs its tensor operations took (matrix products and the
    fused layers above)."""
    with FlopCounterMode(display=False, custom_mapping=FUSED_FORMULAS) as counter:
        result = work()
    return result, counter.get_total_flops()
