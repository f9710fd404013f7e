"""Everything that generates: the reverse process, block-by-block decoding, SMILES constraints, ``generate``.

``generate`` takes any ``Denoiser`` (a trained ``DiffusionTask`` is one) and a ``SamplingConfig``.
"""

from polydiff.sampling.config import SamplingConfig, Strategy
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.generate import Generation, generate
from polydiff.sampling.reverse import ReverseProcess

__all__ = ["Denoiser", "Generation", "ReverseProcess", "SamplingConfig", "Strategy", "generate"]
