"""BertDiffusionModel: a bidirectional BERT encoder that predicts p_theta(x_0 | x_t)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import transformers
from torch import Tensor, nn
from transformers import BertConfig, BertModel, BertPreTrainedModel

from polydiff.model.draft_head import DraftHead
from polydiff.model.kv_cache import KeyValueCache, attend_with_cache
from polydiff.utils.arguments import refuse_mistyped_fields

# transformers 5 takes a per-query mask as (batch, 1, query, key) bool; 4.x as (batch, query, key) 0/1.
_FOUR_D_MASKS = int(transformers.__version__.split(".")[0]) >= 5


@dataclass
class ModelConfig:
    """Size of the BERT denoiser (the standard sizes are in ``recipes/model/``).

    Args:
        hidden_size: width of every layer.
        num_layers: number of transformer layers.
        num_heads: attention heads per layer; must divide ``hidden_size``.
        intermediate_size: width of the feed-forward block (usually 4 x hidden_size).
        max_position_embeddings: longest sequence, [CLS] and [SEP] included.
        dropout: dropout on hidden states and attention probabilities.
        time_conditioning: add an embedding of t to the input. The optimal denoiser of this
            process does not depend on t, and without it the sampler can cache model calls.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 128  # MoleculeDataModule's max_length, which the command line links here
    dropout: float = 0.1
    time_conditioning: bool = False

    def __post_init__(self) -> None:
        refuse_mistyped_fields(self, "model_config.")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"model_config.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_position_embeddings < 3:  # the command line sets it through data.max_length
            raise ValueError(
                "data.max_length must be 3 or more ([CLS], a token, [SEP]; the model's max_position_embeddings), "
                f"got {self.max_position_embeddings}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model_config.dropout must lie in [0, 1), got {self.dropout}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")

    def to_bert_config(
        self, vocab_size: int, pad_token_id: int, num_conditions: int = 0, draft_block_size: int = 0
    ) -> BertConfig:
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            pad_token_id=pad_token_id,
            time_conditioning=self.time_conditioning,
            num_conditions=num_conditions,
            draft_block_size=draft_block_size,
        )
        config._attn_implementation = "sdpa"
        return config


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t in [0, 1] followed by a two-layer MLP."""

    def __init__(self, hidden_size: int, num_frequencies: int = 64) -> None:
        super().__init__()
        # Frequencies from 1 to 1000 on a log scale, as in the transformer position code.
        frequencies = torch.exp(torch.linspace(0, math.log(1000.0), num_frequencies))
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_frequencies, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float().unsqueeze(-1) * self.frequencies
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class ConditionEmbedding(nn.Module):
    """K property values, each known or not (NaN), to one vector: a two-layer MLP on the values
    (0 where unknown) and the K known/unknown flags, so that "not given" is its own input and
    the all-unknown condition is the unconditional model's."""

    def __init__(self, num_conditions: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_conditions, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, condition: Tensor) -> Tensor:
        known = ~condition.isnan()
        return self.mlp(torch.cat([condition.nan_to_num(0.0), known.to(condition.dtype)], dim=-1))


class BertDiffusionModel(BertPreTrainedModel):
    """BERT encoder + token head, giving logits over the vocabulary at every position.

    Args:
        config: a ``BertConfig``; ``config.time_conditioning`` adds an embedding of t, and
            ``config.num_conditions`` > 0 an embedding of that many (normalised) properties,
            added to every token's embedding (as the time embedding is), and
            ``config.draft_block_size`` = B > 0 a ``DraftHead`` that denoises windows of B tokens.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.time_embedding = (
            TimestepEmbedding(config.hidden_size) if getattr(config, "time_conditioning", False) else None
        )
        num_conditions = getattr(config, "num_conditions", 0)
        self.condition_embedding = ConditionEmbedding(num_conditions, config.hidden_size) if num_conditions else None
        draft_block_size = getattr(config, "draft_block_size", 0)
        self.draft_head = DraftHead(config, draft_block_size) if draft_block_size else None
        self.output_projection = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.GELU(),
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps),
            nn.Linear(config.hidden_size, config.vocab_size),
        )
        self.post_init()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """Logits of p_theta(x_0 | x_t).

        Args:
            input_ids: x_t, (batch, length).
            attention_mask: 1 for real tokens, 0 for pads; None when there are no pads.
            t: time per sequence, (batch,); used only with time conditioning.

        Returns:
            logits of shape (batch, length, vocab_size).
        """
        return self.output_projection(self.encode(input_ids, attention_mask, t))

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        t: Tensor | None = None,
        position_ids: Tensor | None = None,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Final hidden states, (batch, length, hidden_size); ``forward`` without the head, so
        that training can project only the masked positions.

        Args:
            input_ids: x_t, (batch, length).
            attention_mask: (batch, length), 0 at pads; or (batch, length, length) bool, True
                where a query may see a key (block diffusion, ``polydiff.diffusion.blocks``).
            t: time per sequence, (batch,); used only with time conditioning.
            position_ids: (batch, length) positions, when they are not 0 .. length - 1.
            condition: (batch, K) normalised properties, NaN where not given; None gives none
                (the unconditional model). Only for a model with conditions.
        """
        embeds = self._word_embeddings(input_ids, condition)
        if self.time_embedding is not None:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t")
            embeds = embeds + self.time_embedding(t).to(embeds.dtype).unsqueeze(1)
        if attention_mask is not None and attention_mask.dim() == 3:
            attention_mask = attention_mask.unsqueeze(1) if _FOUR_D_MASKS else attention_mask.long()
        # Explicit segment ids: transformers 4.x slices a buffer of max_position_embeddings of them,
        # too short for block diffusion's 2N-long training input.
        token_type_ids = torch.zeros_like(input_ids)
        return self.bert(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
        ).last_hidden_state

    def _word_embeddings(self, input_ids: Tensor, condition: Tensor | None) -> Tensor:
        """Token embeddings, with the condition's embedding added to each (a learnt bias per
        condition: every token, the key/value cache's too, sees it from the first layer on)."""
        embeds = self.bert.embeddings.word_embeddings(input_ids)
        if self.condition_embedding is None:
            if condition is not None:
                raise ValueError("this model was trained without conditions")
            return embeds
        if condition is None:
            condition = embeds.new_full((len(input_ids), self.config.num_conditions), math.nan)
        return embeds + self.condition_embedding(condition.to(embeds.dtype)).unsqueeze(1)

    def draft(self, context: Tensor, slot_ids: Tensor) -> Tensor:
        """The draft head's states of windows of B slots, (..., B, H) (``DraftHead``).

        Args:
            context: (..., H) the causal state before each window.
            slot_ids: (..., B) the window's tokens, [MASK] where noised.
        """
        if self.draft_head is None:
            raise ValueError("this model has no draft head (diffusion_config.drafter: head)")
        # The word embeddings are the encoder's, read without gradient: the head learns from them, never changes them.
        return self.draft_head(
            context, nn.functional.embedding(slot_ids, self.bert.embeddings.word_embeddings.weight.detach())
        )

    def new_cache(self, rows: int, length: int) -> KeyValueCache:
        """An empty key/value cache for ``encode_incremental``: ``rows`` rows of ``length`` positions."""
        return KeyValueCache(rows, length, self.config.num_hidden_layers, self.config.num_attention_heads)

    def encode_incremental(
        self,
        cache: KeyValueCache,
        rows: Tensor,
        input_ids: Tensor,
        positions: Tensor,
        sees_before: Tensor,
        group: Tensor,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Final hidden states of new queries that attend to the positions already encoded
        (``polydiff.model.kv_cache.attend_with_cache``, which documents the arguments); gives
        the states ``encode`` gives under the matching attention mask, in eval mode.

        Args:
            input_ids: (r, n) the queries' tokens; ``positions`` (r, n) where they sit.
            condition: (r, K) as in ``encode``.
        """
        if self.time_embedding is not None:
            raise ValueError("incremental encoding needs a model without time conditioning")
        embeddings = self.bert.embeddings(
            inputs_embeds=self._word_embeddings(input_ids, condition),
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=positions.clamp(max=self.config.max_position_embeddings - 1),
        )
        return attend_with_cache(self.bert.encoder, cache, rows, embeddings, positions, sees_before, group)
