"""The diffusion math: noise schedules and the forward process (DESIGN.md, "The math")."""

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
