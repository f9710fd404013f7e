"""PropertyHead: what the finished molecule's properties will be, read off a prefix.

A model with a causal context and conditions has, at every position i, the unconditional causal
state h_i, which has read x^{<=i} and no condition. The head maps the states of a prefix to a
Gaussian over each (normalised) condition column of the molecule the prefix will become: a mean
mu_i and a variance s_i^2, learnt by the Gaussian negative log-likelihood against the properties of
the training sequences that were given no condition (``ConditionCollator``'s ``properties``).
Early in a sequence the honest answer is wide (s_i near the property's own spread); by the last
token it is the property of the molecule written. Guided sampling judges its finished rows by it
(``polydiff.sampling.steering``).

The mean is a sum over the prefix plus a read of its last state,

    mu_i = sum_{j <= i} g(h_j) + f(h_i),

because the properties steered toward are mostly sums over atoms and bonds (Crippen's logP, the
weight, TPSA): g gives each token its share, which it can read from its own state, and f what the
last state knows of the rest (what is still to come, and terms no token holds alone). On a frozen
checkpoint's states the sum lifted R^2 of logP at the last token from 0.85 to 0.89 and of QED from
0.55 to 0.67 over f alone (docs/design.md). g's last layer starts at zero, so a head written before
it loads as it was.

The encoder gets ``ENCODER_GRADIENT`` of the head's gradient. In full, it cost the next-token
prediction 0.05 nats at 500 steps of the conditions recipe (val/next_nll 0.836 against 0.784
without the head, same seed); none (a probe on frozen states) left the head knowing little (R^2 of
logP at the last token 0.11); 0.3 cost 0.005 nats and kept the head's logP (R^2 0.56 against 0.53
in full; docs/design.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ENCODER_GRADIENT = 0.3


def _mlp(hidden_size: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, outputs))


class PropertyHead(nn.Module):
    """Two-layer MLPs from causal states to (mean, log variance) per condition column.

    Args:
        hidden_size: width of the encoder's states.
        columns: condition columns (``polydiff.chem.conditions.condition_columns``).
    """

    def __init__(self, hidden_size: int, columns: int) -> None:
        super().__init__()
        self.mlp = _mlp(hidden_size, 2 * columns)  # f: mean and log variance from the last state
        self.contribution = _mlp(hidden_size, columns)  # g: each token's share of the mean
        nn.init.zeros_(self.contribution[-1].weight)
        nn.init.zeros_(self.contribution[-1].bias)

    def forward(self, states: Tensor, read: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log variance) of the normalised properties at every position, (r, N, columns)
        each, for the causal states (r, N, H) of prefixes whose tokens are ``read`` (r, N); the
        positions not read add nothing to the sum."""
        mean, log_variance = self.mlp(states).chunk(2, -1)
        shares = self.contribution(states) * read.unsqueeze(-1)
        return mean + shares.cumsum(1), log_variance

    def last(self, states: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log variance), (r, columns) each, of prefixes that end at position ``last`` (r,),
        from the causal states (r, N, H) of their positions 0 .. N - 1 (N > max(last))."""
        positions = torch.arange(states.shape[1], device=states.device)
        mean, log_variance = self(states, positions <= last.unsqueeze(-1))
        rows = torch.arange(len(states), device=states.device)
        return mean[rows, last], log_variance[rows, last]

    def nll(self, states: Tensor, read: Tensor, properties: Tensor) -> Tensor:
        """The mean Gaussian negative log-likelihood (constant dropped) of ``properties`` (r,
        columns), normalised, NaN where unknown, at every position ``read`` of sequences with causal
        ``states`` (r, N, H); 0 where nothing is known."""
        known = ~properties.isnan().unsqueeze(1) & read.unsqueeze(-1)
        if not known.any():
            return states.new_zeros(())
        states = ENCODER_GRADIENT * states + (1 - ENCODER_GRADIENT) * states.detach()  # same values
        mean, log_variance = self(states, read)
        error = (properties.nan_to_num(0.0).unsqueeze(1) - mean) ** 2
        nll = 0.5 * (log_variance + error * (-log_variance).exp())
        return nll[known].mean()
