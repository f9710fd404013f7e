"""``SamplingConfig``: every option of how a model samples, declared once.

``polydiff sample``, ``polydiff predict`` (``--model.sampling.*``) and ``DiffusionTask.sample``
all take this one dataclass. Which options a model uses depends on how it decodes
(``polydiff.sampling.generate``); one that it would ignore is refused, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

Strategy = Literal["ancestral", "confidence"]


@dataclass(kw_only=True)
class SamplingConfig:
    """How to sample from a model.

    Args:
        steps: steps of the uniform time grid from t = 1 to t = 0 (whole-sequence models; a block
            model runs at most one step per token of a block).
        strategy: ``ancestral`` samples the reverse process itself; ``confidence`` reveals the
            schedule's count of positions, the most confident first (MaskGIT/GenMol).
        temperature: divides the logits; below 1 sharpens, 0 takes the most likely token.
        top_p: nucleus sampling: draw only from the smallest set of tokens whose probability
            reaches ``top_p`` (1 keeps all). 0.98 trims the unlikely tail where invalid SMILES
            start while keeping the diversity that the nucleus 0.95 cost (docs/quality.md).
        randomness: scale of the Gumbel noise added to the confidence, annealed with t
            (``confidence`` only; 0 reveals strictly by confidence).
        cache: re-run the model only on sequences that changed since their last call. Exact:
            the samples are the same as without it under one seed, wherever a row's output does
            not depend on which rows share its batch (true of the CPU kernels; GPU kernels may
            differ in the last bits, which can flip a rare draw).
        syntax: keep SMILES samples well-formed where the model writes them left to right and
            ends them itself (one-token blocks, no fixed length or template): balanced
            parentheses and ring closures, atoms within their valence, the end only where a
            string may end, and aromatic rings that can still be kekulized
            (``polydiff.sampling.constraints``).
    """

    steps: int = 128
    strategy: Strategy = "confidence"
    temperature: float = 1.0
    top_p: float = 0.98
    randomness: float = 1.0
    cache: bool = True
    syntax: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.strategy not in ("ancestral", "confidence"):
            raise ValueError(f"strategy must be 'ancestral' or 'confidence', got {self.strategy!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.randomness < 0:
            raise ValueError(f"randomness must be >= 0, got {self.randomness}")

    def changed(self) -> set[str]:
        """The options set to something other than their default."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}

    def refuse_unused(self, block_size: int, constrained: bool) -> None:
        """Raises if an option was changed that the decoder at hand would ignore.

        Args:
            block_size: the model's block size B (1: left to right, one token per model call;
                0: the whole sequence at once).
            constrained: whether this run can apply the SMILES constraints (a SMILES model with
                one-token blocks that writes its own length).

        Raises:
            ValueError: naming every such option and why it has no effect.
        """
        changed = self.changed()
        reasons = []
        if block_size == 1:
            unused = sorted(changed & {"steps", "strategy", "randomness", "cache"})
            if unused:
                reasons.append(f"{', '.join(unused)}: a model with one-token blocks makes one model call per token")
        elif block_size and "steps" in changed and self.steps > block_size:
            reasons.append(f"steps: a block of {block_size} tokens takes at most {block_size} steps")
        if block_size != 1 and self.strategy == "ancestral" and "randomness" in changed:
            reasons.append("randomness: it scales the confidence strategy's noise")
        if self.temperature == 0 and "top_p" in changed:
            reasons.append("top_p: temperature 0 takes the most likely token")
        if "syntax" in changed and not constrained:
            reasons.append(
                "syntax: the constraints apply to SMILES models with one-token blocks that end their "
                "own sequences (no --length or template)"
            )
        if reasons:
            raise ValueError(f"sampling options with no effect on this model: {'; '.join(reasons)}")
