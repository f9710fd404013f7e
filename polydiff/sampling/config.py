"""``SamplingConfig``: every option of how a model samples, declared once.

``polydiff sample``, ``polydiff predict`` (``--model.sampling.*``) and ``DiffusionTask.sample``
all take this one dataclass. Which options a model uses depends on how it decodes
(``polydiff.sampling.generate``); one that it would ignore is refused, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Literal

from polydiff.utils.arguments import refuse_mistyped_fields

Strategy = Literal["speculative", "prefix", "confidence", "ancestral"]


@dataclass(kw_only=True)
class SamplingConfig:
    """How to sample from a model.

    Args:
        steps: steps of the uniform time grid from t = 1 to t = 0 (``confidence`` and
            ``ancestral``; in a block of B tokens at most B are taken).
        strategy: ``speculative`` drafts the next tokens with the block denoiser and verifies them
            with the next-token prediction in the same model call, so the samples follow that
            prediction exactly (block models with a causal context that end their own sequences;
            their default; ``polydiff.sampling.speculative``); ``prefix`` drafts every [MASK] of
            the current block in one model call and commits the first and then each next draft
            while it is at least ``threshold`` likely and keeps to the constraints (other block
            models that end their own sequences; their default);
            ``confidence`` reveals the schedule's count of positions, the most confident first
            (MaskGIT/GenMol; the default elsewhere); ``ancestral`` samples the reverse process
            itself. None picks the model's default.
        temperature: divides the logits; below 1 sharpens, 0 takes the most likely token.
        top_p: nucleus sampling: draw only from the smallest set of tokens whose probability
            reaches ``top_p`` (1 keeps all). 0.98 trims the unlikely tail where invalid SMILES
            start while keeping the diversity that the nucleus 0.95 cost (docs/quality.md).
        randomness: scale of the Gumbel noise added to the confidence, annealed with t
            (``confidence`` only; 0 reveals strictly by confidence).
        threshold: the probability a draft after a call's first committed token needs to be
            committed in the same call (``prefix`` only): 1 commits one token per call, lower
            commits more tokens per call at a cost in quality (the frontier is in docs/quality.md).
        cache: reuse the work the samples do not depend on. Decoders that write left to right
            (one-token blocks, ``speculative``) keep the keys and values of the tokens they have
            encoded and encode only the new positions each call (``polydiff.model.kv_cache``);
            the whole-sequence reverse process re-runs the model only on sequences that changed
            since their last call. Exact: the samples are the same as without it under one seed
            (up to the last bits of float arithmetic, which may flip a rare draw on a GPU).
        syntax: keep SMILES samples well-formed where the model writes them left to right with
            nothing fixed ahead: one-token blocks, ``speculative`` or ``prefix`` decoding where
            the model ends its own samples, and one-token-block and draft-head models at a fixed
            length (``length``, or a template that fixes only a start), which then fill exactly
            that length. Every committed token keeps the prefix completable: balanced
            parentheses and ring closures, atoms within their valence, the end only where a
            string may end, aromatic rings that can still be kekulized, and for a polymer model
            exactly two ``*`` attachment points, each on one single bond
            (``polydiff.sampling.constraints``). A row that meets a dead end it cannot back out
            of (a poorly trained model, after its rewinds) is ended there and written as it
            stands, invalid; ``polydiff sample`` counts the valid ones.
    """

    steps: int = 128
    strategy: Strategy | None = None
    temperature: float = 1.0
    top_p: float = 0.98
    randomness: float = 1.0
    threshold: float = 0.05
    cache: bool = True
    syntax: bool = True

    def __post_init__(self) -> None:
        refuse_mistyped_fields(self)  # "false" for a bool would read as true; "0.8" would fail deep in a sampler
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        # Written so that NaN fails each test too (every comparison with NaN is false).
        if not 0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not self.randomness >= 0:
            raise ValueError(f"randomness must be >= 0, got {self.randomness}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must lie in (0, 1], got {self.threshold}")

    @classmethod
    def asked(cls, names: Iterable[str], **options) -> SamplingConfig:
        """A config of ``options`` in which those ``names`` were asked for by name (on a command
        line): ``for_model`` refuses one the model would ignore even at its default value
        (``--syntax true`` at a fixed length asks for rules that do not apply there)."""
        config = cls(**options)
        config._asked = frozenset(names) & {f.name for f in fields(cls)}
        return config

    def changed(self) -> set[str]:
        """The options set to something other than their default, or asked for by name (``asked``)."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default} | getattr(self, "_asked", set())

    def for_model(
        self,
        block_size: int,
        free_length: bool,
        smiles: bool,
        causal_context: bool = False,
        draft_head: bool = False,
        fills_suffix: bool = False,
    ) -> SamplingConfig:
        """This config with the strategy the model at hand decodes by; refuses options it would ignore.

        Args:
            block_size: the model's block size B (1: left to right, one token per model call;
                0: the whole sequence at once).
            free_length: whether the model writes its own [SEP] in this run (a block model
                without a fixed length or template).
            smiles: whether the model writes SMILES (the constraints apply only to them).
            causal_context: whether the model has a causal context (its next-token prediction
                verifies drafts).
            draft_head: whether its windows are drafted by a draft head, which only drafts: with
                a fixed length or template, such a model writes one token per model call.
            fills_suffix: whether, at a fixed length, every token to write comes after every fixed
                one (a ``--length``, or a template that fixes only a start): written left to
                right, one token per call, such rows are held to the constraints too.

        Returns:
            A copy whose ``strategy`` is set (None for one model call per token: at B = 1, which has
            no reverse process to choose, and for a draft head's model at a fixed length or template).

        Raises:
            ValueError: naming every changed option that would have no effect, and why.
        """
        changed, reasons = self.changed(), []
        left_to_right = bool(block_size) and free_length
        if block_size == 1 or (draft_head and not left_to_right):
            strategy = None
            unused = sorted(changed & {"steps", "strategy", "randomness", "threshold"})
            if unused:
                model = (
                    "a model with one-token blocks" if block_size == 1 else "at a fixed length, a draft head's model"
                )
                reasons.append(f"{', '.join(unused)}: {model} makes one model call per token")
        else:
            own = ("speculative" if causal_context else "prefix") if left_to_right else "confidence"
            strategy = self.strategy or own
            if draft_head and strategy != "speculative":  # its encoder has only learnt the next token
                reasons.append(f"strategy {strategy}: a draft head's model decodes speculatively only")
            if strategy == "speculative" and not (left_to_right and causal_context):
                reasons.append(
                    "strategy speculative: it decodes block models with a causal context that end their own sequences"
                )
            if strategy == "prefix" and not (left_to_right and not causal_context):
                reasons.append(
                    "strategy prefix: it decodes block models without a causal context that end their own sequences"
                )
            if strategy in ("speculative", "prefix"):
                if "steps" in changed:
                    reasons.append(f"steps: {strategy} decoding makes one model call per committed run")
                if strategy == "prefix" and "cache" in changed:
                    reasons.append("cache: prefix decoding re-encodes its current block, which every call changes")
            elif block_size and "steps" in changed and self.steps > block_size:
                reasons.append(f"steps: a block of {block_size} tokens takes at most {block_size} steps")
            if "randomness" in changed and strategy != "confidence":
                reasons.append("randomness: it scales the confidence strategy's noise")
            if "threshold" in changed and strategy != "prefix":
                reasons.append("threshold: it decides what prefix decoding commits")
        if self.temperature == 0 and "top_p" in changed:
            reasons.append("top_p: temperature 0 takes the most likely token")
        # Written left to right with nothing fixed ahead, a row can be held to the rules token by token.
        ends_own = free_length and (block_size == 1 or strategy in ("speculative", "prefix"))
        constrained = smiles and (ends_own or (fills_suffix and strategy is None))
        if "syntax" in changed and not smiles:
            reasons.append("syntax: the constraints apply to SMILES, and this model writes another representation")
        elif "syntax" in changed and not constrained:
            reasons.append(
                "syntax: the constraints apply to SMILES written left to right with nothing fixed ahead (a "
                "one-token-block or draft-head model, or speculative or prefix decoding; no template with fixed "
                "tokens after a [MASK])"
            )
        if reasons:
            raise ValueError(f"sampling options this model cannot use: {'; '.join(reasons)}")
        return replace(self, strategy=strategy, syntax=self.syntax and constrained)
