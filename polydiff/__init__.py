"""polydiff: masked ("excited-state") discrete diffusion for molecules and polymers.

The public names load on first use, so ``import polydiff`` (and ``polydiff --version``) stays
light and the command line can set up the process before torch is imported.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("polydiff")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "SmilesDataModule": "polydiff.data.datamodule",
    "load_tokenizer": "polydiff.data.tokenizer",
    "DiffusionConfig": "polydiff.diffusion.forward",
    "ExcitedStateDiffusion": "polydiff.diffusion.forward",
    "SamplingConfig": "polydiff.diffusion.sampling",
    "CosineSchedule": "polydiff.diffusion.schedules",
    "DiffusionSchedule": "polydiff.diffusion.schedules",
    "LinearSchedule": "polydiff.diffusion.schedules",
    "PolynomialSchedule": "polydiff.diffusion.schedules",
    "QuadraticSchedule": "polydiff.diffusion.schedules",
    "BertDiffusionModel": "polydiff.model.bert_diffusion",
    "ModelConfig": "polydiff.model.bert_diffusion",
    "DiffusionTask": "polydiff.tasks.diffusion_task",
    "LRScheduleConfig": "polydiff.tasks.diffusion_task",
    "SampleWriter": "polydiff.tasks.inference",
    "load": "polydiff.tasks.inference",
}
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
    "PolynomialSchedule",
    "QuadraticSchedule",
    "SampleWriter",
    "SamplingConfig",
    "SmilesDataModule",
    "__version__",
    "load",
    "load_tokenizer",
]

if TYPE_CHECKING:
    from polydiff.data.datamodule import SmilesDataModule
    from polydiff.data.tokenizer import load_tokenizer
    from polydiff.diffusion.forward import DiffusionConfig, ExcitedStateDiffusion
    from polydiff.diffusion.sampling import SamplingConfig
    from polydiff.diffusion.schedules import (
        CosineSchedule,
        DiffusionSchedule,
        LinearSchedule,
        PolynomialSchedule,
        QuadraticSchedule,
    )
    from polydiff.model.bert_diffusion import BertDiffusionModel, ModelConfig
    from polydiff.tasks.diffusion_task import DiffusionTask, LRScheduleConfig
    from polydiff.tasks.inference import SampleWriter, load


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'polydiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
