"""The diffusion math: noise schedules, the forward and the reverse process (DESIGN.md, "The math")."""

from polydiff.diffusion.forward import DiffusionConfig, ExcitedStateDiffusion
from polydiff.diffusion.sampling import ReverseProcess, SamplingConfig
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
    "ReverseProcess",
    "SamplingConfig",
]
