"""The diffusion math: noise schedules, the forward process and its ELBO weights, blocks (docs/math.md).

The reverse process, which generates, lives in ``polydiff.sampling``.
"""

from polydiff.diffusion.forward import DiffusionConfig, ExcitedStateDiffusion
from polydiff.diffusion.schedules import (
    CosineSchedule,
    DiffusionSchedule,
    LinearSchedule,
    PolynomialSchedule,
    QuadraticSchedule,
)

__all__ = [
    "CosineSchedule",
    "DiffusionConfig",
    "DiffusionSchedule",
    "ExcitedStateDiffusion",
    "LinearSchedule",
    "PolynomialSchedule",
    "QuadraticSchedule",
]
