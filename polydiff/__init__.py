"""polydiff: masked ("excited-state") discrete diffusion for molecules and polymers.

The public names load on first use, so ``import polydiff`` (and ``polydiff --version``) stays
light and the command line can set up the process before torch is imported.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("polydiff")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "MoleculeDataModule": "polydiff.data.datamodule",
    "load_tokenizer": "polydiff.data.tokenizer",
    "DiffusionConfig": "polydiff.diffusion.forward",
    "ExcitedStateDiffusion": "polydiff.diffusion.forward",
    "SamplingConfig": "polydiff.sampling.config",
    "CosineSchedule": "polydiff.diffusion.schedules",
    "DiffusionSchedule": "polydiff.diffusion.schedules",
    "LinearSchedule": "polydiff.diffusion.schedules",
    "PolynomialSchedule": "polydiff.diffusion.schedules",
    "QuadraticSchedule": "polydiff.diffusion.schedules",
    "BertDiffusionModel": "polydiff.model.bert_diffusion",
    "ModelConfig": "polydiff.model.bert_diffusion",
    "DiffusionTask": "polydiff.tasks.diffusion_task",
    "LRScheduleConfig": "polydiff.tasks.lr_schedule",
    "SampleWriter": "polydiff.tasks.inference",
    "load": "polydiff.tasks.inference",
    "generate": "polydiff.sampling.generate",
}
# Names of an earlier release, kept for old scripts: each warns once and points at the new name.
_RENAMED = {"SmilesDataModule": "MoleculeDataModule"}
__all__ = [
    "BertDiffusionModel",
    "CosineSchedule",
    "DiffusionConfig",
    "DiffusionSchedule",
    "DiffusionTask",
    "ExcitedStateDiffusion",
    "LRScheduleConfig",
    "LinearSchedule",
    "ModelConfig",
    "MoleculeDataModule",
    "PolynomialSchedule",
    "QuadraticSchedule",
    "SampleWriter",
    "SamplingConfig",
    "__version__",
    "generate",
    "load",
    "load_tokenizer",
]

if TYPE_CHECKING:
    from polydiff.data.datamodule import MoleculeDataModule
    from polydiff.data.tokenizer import load_tokenizer
    from polydiff.diffusion.forward import DiffusionConfig, ExcitedStateDiffusion
    from polydiff.diffusion.schedules import (
        CosineSchedule,
        DiffusionSchedule,
        LinearSchedule,
        PolynomialSchedule,
        QuadraticSchedule,
    )
    from polydiff.model.bert_diffusion import BertDiffusionModel, ModelConfig
    from polydiff.sampling.config import SamplingConfig
    from polydiff.sampling.generate import generate
    from polydiff.tasks.diffusion_task import DiffusionTask
    from polydiff.tasks.inference import SampleWriter, load
    from polydiff.tasks.lr_schedule import LRScheduleConfig


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        warnings.warn(f"polydiff.{name} is now polydiff.{_RENAMED[name]}", FutureWarning, stacklevel=2)
        return __getattr__(_RENAMED[name])
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'polydiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
