"""polydiff: masked ("excited-state") discrete diffusion for molecules and polymers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("polydiff")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

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
