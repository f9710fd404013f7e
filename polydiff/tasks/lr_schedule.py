"""The learning-rate schedule of ``DiffusionTask``: linear warmup, then cosine decay or constant."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from polydiff.utils.arguments import refuse_mistyped_fields

# The options that shape only the cosine decay: with a constant rate they would change nothing.
COSINE_ONLY_OPTIONS = ("min_lr_ratio", "decay_over")


@dataclass
class LRScheduleConfig:
    """Learning-rate schedule: linear warmup, then cosine decay or constant.

    Args:
        warmup_steps: optimizer steps of linear warmup: step k (from 0) runs at (k + 1) / warmup_steps
            of the peak rate.
        decay: ``cosine`` decays to ``min_lr_ratio`` x lr by the end of training.
        min_lr_ratio: final learning rate as a fraction of the peak.
        decay_over: ``steps`` decays over the trainer's steps (``max_steps``); ``steps_or_time``
            follows whichever budget, steps or the trainer's ``max_time``, is spent faster, so a
            run stopped by its wall-clock budget still ends at the low rate (budgeted training,
            Li et al., ICLR 2020). Use ``steps`` where runs must be bit-for-bit repeatable.
    """

    warmup_steps: int = 0
    decay: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    decay_over: Literal["steps", "steps_or_time"] = "steps"

    def __post_init__(self) -> None:
        refuse_mistyped_fields(self, "lr_schedule.")
        if self.warmup_steps < 0:
            raise ValueError(f"lr_schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"lr_schedule.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.decay == "constant":  # the cosine decay's own options would shape nothing
            unused = [name for name in COSINE_ONLY_OPTIONS if getattr(self, name) != getattr(type(self), name)]
            if unused:
                names = " and ".join(f"lr_schedule.{name}" for name in unused)
                defaults = " and ".join(str(getattr(type(self), name)) for name in unused)
                shape, them = ("shapes", "it") if len(unused) == 1 else ("shape", "them")
                raise ValueError(
                    f"{names} {shape} only the cosine decay: with decay constant, set {them} back to {defaults}"
                )

    def factor(self, step: int, total_steps: float, time_progress: float = 0.0) -> float:
        """The learning rate over its peak at ``step``; ``time_progress`` is the spent fraction of max_time."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1.0, total_steps - self.warmup_steps)
        if self.decay_over == "steps_or_time":
            progress = max(progress, time_progress)
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, progress)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
