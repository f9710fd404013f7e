"""What a sampler needs of a trained model: the ``Denoiser`` protocol.

``DiffusionTask`` satisfies it; so can any object with these members (a model served without
Lightning, or a test's stand-in), which keeps ``polydiff.sampling`` free of the training code.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from polydiff.data.representation import Representation
from polydiff.diffusion.schedules import DiffusionSchedule
from polydiff.model.kv_cache import KeyValueCache
from polydiff.types import Kind


class Denoiser(Protocol):
    """A trained masked-diffusion model as the samplers see it.

    Attributes:
        tokenizer: its tokenizer ([CLS], [SEP], [PAD], [MASK] and the vocabulary).
        representation: how its text becomes SMILES (``to_smiles``) and whether it is SMILES.
        kind: ``molecule``, or ``polymer`` (repeat units with two ``*`` attachment points).
        schedule: alpha(t) of its forward process.
        block_size: B of its block diffusion (1: left to right; 0: the whole sequence).
        causal_context: whether its clean context is encoded causally and predicts the next token
            (``polydiff.diffusion.blocks``).
        has_draft_head: whether a draft head on the causal states denoises its windows (``draft``),
            rather than the encoder itself.
        max_positions: the longest sequence it reads, [CLS] and [SEP] included.
        time_conditioned: whether ``encode`` uses t.
        length_histogram: counts of training lengths L (tokens between [CLS] and [SEP]).
        token_histogram: counts of each token in the training data (all zero: unknown).
        device: where its weights are.
    """

    tokenizer: PreTrainedTokenizerFast
    representation: Representation
    kind: Kind
    schedule: DiffusionSchedule
    length_histogram: Tensor
    token_histogram: Tensor

    @property
    def block_size(self) -> int: ...

    @property
    def causal_context(self) -> bool: ...

    @property
    def has_draft_head(self) -> bool: ...

    @property
    def max_positions(self) -> int: ...

    @property
    def time_conditioned(self) -> bool: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def evaluations_per_call(self) -> int:
        """Network evaluations in one call of ``encode`` (two for classifier-free guidance): the
        NFE a sampler reports is its calls times this."""
        ...

    def encode(
        self,
        x_t: Tensor,
        attention_mask: Tensor | None = None,
        t: Tensor | None = None,
        positions: Tensor | None = None,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Final hidden states (batch, length, hidden) of x_t (``BertDiffusionModel.encode``), given
        ``condition`` (batch, K) for a model trained with conditions."""
        ...

    def new_cache(self, rows: int, length: int) -> KeyValueCache:
        """An empty key/value cache for ``encode_incremental``."""
        ...

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
        """Final hidden states of new queries attending to cached positions
        (``BertDiffusionModel.encode_incremental``)."""
        ...

    def draft(self, context: Tensor, slot_ids: Tensor) -> Tensor:
        """The draft head's states (..., B, H) of windows of tokens ``slot_ids`` (..., B) after causal
        states ``context`` (..., H) (``BertDiffusionModel.draft``)."""
        ...

    def logits_from_hidden(self, hidden: Tensor, allow_end: bool = True) -> Tensor:
        """Logits of p_theta(x_0 | x_t) from hidden states, float32, tokens it may not predict forbidden;
        ``allow_end=False`` forbids [SEP] too."""
        ...
