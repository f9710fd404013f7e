"""Steering: a guided row whose finished molecule misses its target is taken back and written again.

Classifier-free guidance tilts each token toward the condition, but a model that has learnt the
condition loosely writes molecules spread about the target about as widely as without it: the
tilt acts token by token, and no token knows what the molecule will weigh in the end. Steering
looks at the end. When a row writes [SEP], the property head (``polydiff.model.property_head``)
reads the unconditional causal states of its tokens, which the guided calls computed anyway, and
gives a Gaussian (mu, s^2) for each targeted property of the molecule written. The row is kept
with probability

    a(x) = prod_k exp(-(mu_k - c_k)^2 / (2 (tau^2 + s_k^2))),

1 on target and falling with the distance in units of the target's width tau (in standard
deviations of each property over the training molecules) widened by the head's own uncertainty.
Otherwise it backs out of its end as it backs out of a dead end (``speculative.REWIND`` tokens,
twice as many each time, from the causal state it kept; from the fifth time, from its start) and
writes on, at most ``speculative.STEERING_REWINDS`` times, counted apart from its dead ends'; then
it is kept as it is. A rewrite that ends at a dead end with no rewind left (no molecule) gives way
to the last finished molecule steering refused. Whole-sequence rejection sampling would draw exactly from p_w(x) a(x);
redrawing the tail keeps the prefix and costs fewer calls, each of them counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polydiff.model.property_head import PropertyHead

DEFAULT_WIDTH = 0.25  # tau, in standard deviations of the property; docs/design.md measures it


class Steering:
    """What steering keeps, for one set of targets.

    Args:
        head: the checkpoint's property head.
        columns: (k,) the condition columns targeted (numeric ones).
        targets: (k,) their normalised target values.
        width: tau, in standard deviations of each property.
    """

    def __init__(self, head: PropertyHead, columns: Tensor, targets: Tensor, width: float) -> None:
        if not width > 0 or not math.isfinite(width):
            raise ValueError(f"steering width must be > 0, got {width}")
        self.head, self.columns, self.targets, self.width = head, columns, targets, width

    def acceptance(self, states: Tensor, last: Tensor) -> Tensor:
        """(r,) a(x), the probability of keeping each finished row, from the unconditional causal
        states (r, N, H) of its positions up to its last token, at ``last`` (r,)."""
        mean, log_variance = self.head.last(states, last)
        columns = self.columns.to(states.device)
        total = self.width**2 + log_variance[:, columns].double().exp()
        error = (mean[:, columns].double() - self.targets.to(states.device)) ** 2
        return torch.exp(-0.5 * (error / total).sum(-1))

    def rejected(self, states: Tensor, last: Tensor, generator: torch.Generator) -> Tensor:
        """(r,) bool: the finished rows not kept, each with probability 1 - a(x)."""
        keep = self.acceptance(states, last)
        if bool((keep >= 1).all()):  # nothing to refuse: no draw, the sampler's stream stays as it was
            return torch.zeros(len(states), dtype=torch.bool, device=states.device)
        u = torch.rand(len(states), dtype=torch.float64, device=states.device, generator=generator)
        return u >= keep
