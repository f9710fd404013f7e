"""Incremental encoding: the keys and values of positions already encoded are kept and reused.

A left-to-right decoder (one-token blocks, or the speculative decoder of a causal-context model)
encodes its committed prefix causally: a position's keys and values depend only on the tokens at
or before it, so once written they stay valid while the prefix grows. A call then computes only
its new positions and lets them attend to the cache, O(new x prefix) attention and O(new) for
everything else, where re-encoding the prefix costs O(prefix^2) and O(prefix).

Transformers' BERT has no cache for this pattern (queries of several kinds, each seeing its own
part of the prefix), so the attention is computed here, from the weights of its own modules: the
three projections in one matrix product, then torch's ``scaled_dot_product_attention`` over the
cache. The output projections, feed-forward blocks and layer norms are its modules, called as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import scaled_dot_product_attention
from transformers.models.bert.modeling_bert import BertEncoder, BertSelfAttention


class KeyValueCache:
    """Keys and values per layer for R rows, (R, heads, length, hidden / heads), indexed by absolute
    position. Heads before positions: a read of the first positions of every row is then a view
    that the attention takes as it is, where (R, length, hidden) would be copied per head.

    Args:
        rows: R, the rows of the batch being decoded.
        length: positions kept per row; a decoder may write past its last real position (padded
            queries of a ragged call), so it allocates a few more than the model reads.
        num_layers: layers of the encoder.
        num_heads: attention heads per layer.
    """

    def __init__(self, rows: int, length: int, num_layers: int, num_heads: int) -> None:
        self.rows, self.length, self.num_heads = rows, length, num_heads
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers

    def _store(self, layer: int, like: Tensor) -> tuple[Tensor, Tensor]:
        if self.keys[layer] is None:  # allocated on first use, in the dtype the layer computes in
            shape = (self.rows, self.num_heads, self.length, like.shape[-1] // self.num_heads)
            self.keys[layer] = like.new_zeros(shape)
            self.values[layer] = like.new_zeros(shape)
        return self.keys[layer], self.values[layer]

    def write(self, layer: int, rows: Tensor, positions: Tensor, keys: Tensor, values: Tensor) -> None:
        """Stores (n, hidden) keys and values of ``rows`` (n,) at ``positions`` (n,)."""
        cached_keys, cached_values = self._store(layer, keys)
        cached_keys[rows, :, positions] = keys.unflatten(-1, (self.num_heads, -1)).to(cached_keys.dtype)
        cached_values[rows, :, positions] = values.unflatten(-1, (self.num_heads, -1)).to(cached_values.dtype)

    def read(self, layer: int, rows: Tensor | None, extent: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of positions 0 .. extent - 1 of ``rows`` (r,), (r, heads, extent,
        hidden / heads) each; ``rows`` None reads every row, as a view (no copy)."""
        cached_keys, cached_values = self._store(layer, like)
        if rows is None:
            return cached_keys[:, :, :extent], cached_values[:, :, :extent]
        # index_select on the narrowed view copies only what is read (advanced indexing: 3x slower here).
        return cached_keys[:, :, :extent].index_select(0, rows), cached_values[:, :, :extent].index_select(0, rows)


def _heads(states: Tensor, num_heads: int) -> Tensor:
    """(r, n, hidden) -> (r, heads, n, hidden / heads)."""
    return states.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _projections(attention: BertSelfAttention, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values of ``hidden``, from one matrix product with the three weights
    stacked: a call's few hundred rows make three separate products pay their overhead three times."""
    weight = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
    bias = torch.cat([attention.query.bias, attention.key.bias, attention.value.bias])
    return torch.nn.functional.linear(hidden, weight, bias).chunk(3, -1)


def attend_with_cache(
    encoder: BertEncoder,
    cache: KeyValueCache,
    rows: Tensor,
    embeddings: Tensor,
    positions: Tensor,
    sees_before: Tensor,
    group: Tensor,
) -> Tensor:
    """Runs BERT's layers on new queries that attend to the cache and to each other.

    Args:
        encoder: the BERT encoder whose layers are run (in eval mode: no dropout is applied).
        cache: keys and values of the positions encoded before; updated in place.
        rows: (r,) which rows of the cache the queries belong to.
        embeddings: (r, n, hidden) the queries' input embeddings.
        positions: (r, n) where each query sits; a context query's keys and values are written
            there (a padded query may sit past the model's positions, in the cache's spare room).
        sees_before: (r, n) each query sees the cached positions before this one.
        group: (r, n) -1 for a context query: its keys and values are written to the cache before
            anyone attends, so that context queries see each other through ``sees_before``.
            Queries sharing a group >= 0 (a window of [MASK]s) see each other and are not cached.

    Returns:
        (r, n, hidden) final hidden states.
    """
    extent = int(sees_before.max())
    context = group < 0
    # Context queries see nothing of this call but through the cache: when every query is one (a
    # draft head's call, one-token decoding), the new keys need not be appended to what is read.
    windows = not bool(context.all())
    to_cache = torch.arange(extent, device=positions.device) < sees_before.unsqueeze(-1)
    mask = to_cache
    if windows:
        same_group = (group.unsqueeze(-1) == group.unsqueeze(-2)) & ~context.unsqueeze(-1) & ~context.unsqueeze(-2)
        mask = torch.cat([to_cache, same_group], -1)
    mask = mask.unsqueeze(1)  # (r, 1, n, extent [+ n]): True where a query may attend (every query sees [CLS])
    written_rows = rows.unsqueeze(-1).expand_as(positions)[context]
    written_positions = positions[context]
    # Every row in order: the cache is read as a view.
    read_rows = (
        None if len(rows) == cache.rows and bool((rows == torch.arange(cache.rows, device=rows.device)).all()) else rows
    )
    hidden = embeddings
    for index, layer in enumerate(encoder.layer):
        num_heads = layer.attention.self.num_attention_heads
        queries, keys, values = _projections(layer.attention.self, hidden)
        cache.write(index, written_rows, written_positions, keys[context], values[context])
        cached_keys, cached_values = cache.read(index, read_rows, extent, keys)
        if windows:
            cached_keys = torch.cat([cached_keys, _heads(keys, num_heads).to(cached_keys.dtype)], 2)
            cached_values = torch.cat([cached_values, _heads(values, num_heads).to(cached_values.dtype)], 2)
        queries = _heads(queries, num_heads).to(cached_keys.dtype)
        attended = scaled_dot_product_attention(queries, cached_keys, cached_values, attn_mask=mask)
        attended = attended.transpose(1, 2).flatten(2)
        hidden = layer.attention.output(attended, hidden)
        hidden = layer.output(layer.intermediate(hidden), hidden)
    return hidden
