"""FSDP for DiffusionTask's BERT: Lightning's ``FSDPStrategy`` with each BERT layer a shard unit.

``FSDPStrategy`` takes the layer classes to wrap as a Python set, which a YAML recipe cannot
write; this subclass fixes them, so ``recipes/trainer/fsdp.yaml`` only names the strategy.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from transformers.models.bert.modeling_bert import BertLayer


class BertFSDPStrategy(FSDPStrategy):
    """Fully sharded data parallel with each ``BertLayer`` its own FSDP unit.

    Args:
        sharding_strategy: what is sharded (``FULL_SHARD``: parameters, gradients and optimizer
            states; ``SHARD_GRAD_OP``: gradients and optimizer states; ``HYBRID_SHARD``: full
            within a node, replicated across nodes).
        activation_checkpointing: recompute each layer's activations in the backward pass
            (less memory, about a third more compute).
        **kwargs: the other ``FSDPStrategy`` options.
    """

    def __init__(self, sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = True, **kwargs: Any):
        layers = {BertLayer}
        super().__init__(
            sharding_strategy=sharding_strategy,
            auto_wrap_policy=layers,
            activation_checkpointing_policy=layers if activation_checkpointing else None,
            **kwargs,
        )
