"""PropertyHead: what the finished molecule's properties will be, read off a prefix.

A model with a causal context and conditions has, at every position i, the unconditional causal
state h_i, which has read x^{<=i} and no condition. The head maps it to a Gaussian over each
(normalised) condition column of the molecule the prefix will become: a mean mu_i and a variance
s_i^2, learnt by the Gaussian negative log-likelihood against the properties of the training
sequences that were given no condition (``ConditionCollator``'s ``properties``). Early in a
sequence the honest answer is wide (s_i near the property's own spread); by the last token it is
the property of the molecule written. Guided sampling judges its finished rows by it
(``polydiff.sampling.steering``).

The encoder gets ``ENCODER_GRADIENT`` of the head's gradient. In full, it cost the next-token
prediction 0.05 nats at 500 steps of the conditions recipe (val/next_nll 0.836 against 0.784
without the head, same seed); none (a probe on frozen states) left the head knowing little (R^2 of
logP at the last token 0.11); 0.3 cost 0.005 nats and kept the head's logP (R^2 0.56 against 0.53
in full; docs/design.md).
"""

from __future__ import annotations

from torch import Tensor, nn

ENCODER_GRADIENT = 0.3


class PropertyHead(nn.Module):
    """A two-layer MLP from a causal state to (mean, log variance) per condition column.

    Args:
        hidden_size: width of the encoder's states.
        columns: condition columns (``polydiff.chem.conditions.condition_columns``).
    """

    def __init__(self, hidden_size: int, columns: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, 2 * columns))

    def forward(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log variance) of the normalised properties, (..., columns) each, for states (..., H)."""
        mean, log_variance = self.mlp(states).chunk(2, -1)
        return mean, log_variance

    def nll(self, states: Tensor, properties: Tensor) -> Tensor:
        """The mean Gaussian negative log-likelihood (constant dropped) of ``properties`` (..., columns),
        normalised, NaN where unknown, given ``states`` (..., H); 0 where nothing is known."""
        known = ~properties.isnan()
        if not known.any():
            return states.new_zeros(())
        states = ENCODER_GRADIENT * states + (1 - ENCODER_GRADIENT) * states.detach()  # same values
        mean, log_variance = self(states)
        error = (properties.nan_to_num(0.0) - mean) ** 2
        nll = 0.5 * (log_variance + error * (-log_variance).exp())
        return nll[known].mean()
