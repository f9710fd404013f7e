"""Noise schedules of the excited-state (absorbing [MASK]) process.

alpha(t) is the probability that a token is still clean at time t in [0, 1]: alpha(0) = 1,
alpha(1) = 0, decreasing. Each schedule gives alpha(t) and its rate alpha'(t); the continuous
ELBO weight w(t) = -alpha'(t) / (1 - alpha(t)) and the discrete-time quantities follow from
them (``docs/math.md``). Recipes pick a schedule by ``class_path``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor


class DiffusionSchedule(ABC):
    """A schedule alpha(t): the probability that a token is still clean at time t."""

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t), with alpha(0) = 1 and alpha(1) = 0."""

    @abstractmethod
    def alpha_prime(self, t: Tensor) -> Tensor:
        """The rate d alpha / d t (negative)."""

    def weight(self, t: Tensor) -> Tensor:
        """Continuous ELBO weight w(t) = -alpha'(t) / (1 - alpha(t)); undefined at t = 0."""
        return -self.alpha_prime(t) / (1 - self.alpha(t))

    def discrete_weight(self, i: Tensor, num_timesteps: int) -> Tensor:
        """ELBO weight of step i in 1..T: T * (alpha(t_{i-1}) - alpha(t_i)) / (1 - alpha(t_i))."""
        t, s = i / num_timesteps, (i - 1) / num_timesteps
        return num_timesteps * (self.alpha(s) - self.alpha(t)) / (1 - self.alpha(t))

    def betas(self, num_timesteps: int) -> Tensor:
        """Per-step absorb probabilities beta_i = 1 - alpha(t_i) / alpha(t_{i-1}), i = 1..T."""
        t = torch.linspace(0, 1, num_timesteps + 1, dtype=torch.float64)
        alpha = self.alpha(t)
        return 1 - alpha[1:] / alpha[:-1]

    def __repr__(self) -> str:
        # A default not built yet (jsonargparse's lazy_instance) holds its methods as attributes,
        # whose reprs hold the object again, megabytes deep: it is shown by its arguments.
        lazy_type = getattr(self, "_lazy_class_type", None)
        arguments = self._lazy_kwargs if lazy_type is not None else vars(self)
        args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
        return f"{(lazy_type or type(self)).__name__}({args})"


class PolynomialSchedule(DiffusionSchedule):
    """alpha(t) = 1 - t^k, so w(t) = k / t. k = 1 is MDLM's log-linear schedule.

    Args:
        power: the exponent k > 0; larger k keeps tokens clean for longer.
    """

    def __init__(self, power: float = 1.0) -> None:
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}")
        self.power = power

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t**self.power

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -self.power * t ** (self.power - 1)

    def weight(self, t: Tensor) -> Tensor:
        return self.power / t


class LinearSchedule(PolynomialSchedule):
    """alpha(t) = 1 - t, w(t) = 1 / t."""

    def __init__(self) -> None:
        super().__init__(power=1.0)

    def __repr__(self) -> str:
        return "LinearSchedule()"


class QuadraticSchedule(PolynomialSchedule):
    """alpha(t) = 1 - t^2, w(t) = 2 / t."""

    def __init__(self) -> None:
        super().__init__(power=2.0)

    def __repr__(self) -> str:
        return "QuadraticSchedule()"


class CosineSchedule(DiffusionSchedule):
    """alpha(t) = cos(pi t / 2), w(t) = (pi / 2) cot(pi t / 4)."""

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(math.pi / 2 * t)

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -math.pi / 2 * torch.sin(math.pi / 2 * t)

    def weight(self, t: Tensor) -> Tensor:
        # (pi/2) sin(pi t/2) / (1 - cos(pi t/2)) rewritten so small t keeps its precision.
        return math.pi / 2 / torch.tan(math.pi / 4 * t)
