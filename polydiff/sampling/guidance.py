"""Sampling toward property targets: a conditioned model, with or without classifier-free guidance.

A model trained with ``data.conditions`` reads a condition c (normalised property values, NaN
for a property left free) with every token and, since conditions were dropped in training,
also gives the unconditional p(x) (every property free). ``GuidedDenoiser`` wraps it as a
``Denoiser`` for any sampler. With guidance scale w > 0 every model call runs the conditional
and the unconditional model side by side (one pass over twice the rows, each half with its own
key/value cache), and the sampler draws from

    log p_w(x^i | ...) = log p(x^i | ..., c) + w (log p(x^i | ..., c) - log p(x^i | ...)),

renormalised: p(x | c)^(1 + w) / p(x)^w, the discrete classifier-free guidance of Schiff et al.
(2024, "Simple Guidance Mechanisms for Discrete Diffusion Models"; their gamma is 1 + w). w = 0
samples the conditional model alone. A guided call is two network evaluations and counts as two.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from polydiff.model.kv_cache import KeyValueCache
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.steering import Steering


def parse_condition(text: str) -> dict[str, float | str]:
    """``"logp=3,qed=0.8"`` -> ``{"logp": 3.0, "qed": 0.8}``; a category stays a word
    (``"class=polyamide"`` -> ``{"class": "polyamide"}``).

    Raises:
        ValueError: for a piece that is not ``name=number`` or ``name=word``, or a name given twice.
    """
    targets: dict[str, float | str] = {}
    for piece in text.split(","):
        name, sign, value = piece.partition("=")
        name, value = name.strip(), value.strip()
        try:
            target: float | str = float(value)
        except ValueError:
            target = value if value.isidentifier() else math.nan
        if sign and name and value.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise ValueError(f"--condition {piece.strip()}: a target is a finite number (or a category's name)")
        if not sign or not name or (isinstance(target, float) and not math.isfinite(target)):
            got = f"an empty pair in {text!r} (a comma too many?)" if not piece.strip() and "," in text else repr(piece)
            raise ValueError(
                "--condition takes name=value pairs separated by commas, e.g. logp=3,qed=0.8 or "
                f"class=polyamide; got {got}"
            )
        if name in targets:
            raise ValueError(f"property {name!r} is given twice in --condition")
        targets[name] = target
    return targets


class GuidedDenoiser:
    """A conditioned ``Denoiser`` that samples toward ``condition``, with guidance scale ``scale``.

    Args:
        model: a model trained with conditions (``DiffusionTask`` with ``conditions``).
        condition: (K,) normalised targets, NaN for properties left free (``DiffusionTask.condition_vector``).
        scale: w >= 0; 0 samples p(x | c) alone.
        steering: judges each finished row by the property head and takes back the ends of those
            far from the targets (``polydiff.sampling.steering``), or None.
        steering_asked: whether the user gave a steering width, 0 included (a decoder that cannot
            steer then refuses to sample), rather than taking steering where it applies.
    """

    def __init__(
        self,
        model: Denoiser,
        condition: Tensor,
        scale: float = 0.0,
        steering: Steering | None = None,
        steering_asked: bool = False,
    ) -> None:
        if scale < 0 or not math.isfinite(scale):
            raise ValueError(f"guidance_scale must be >= 0, got {scale}")
        self.model, self.condition, self.scale, self.steering = model, condition, scale, steering
        self.steering_asked = steering_asked

    def __getattr__(self, name: str):
        # Everything else (tokenizer, block size, histograms, ...) is the wrapped model's.
        return getattr(self.model, name)

    @property
    def uses_guidance(self) -> bool:
        """Whether each call pairs the conditional rows with unconditional ones (scale above 0)."""
        return self.scale > 0

    @property
    def evaluations_per_call(self) -> int:
        return 2 if self.uses_guidance else 1

    def _conditions(self, rows: int) -> Tensor:
        """The conditions of ``rows`` rows, then (guided) of as many unconditional ones."""
        given = self.condition.to(self.model.device).expand(rows, -1)
        return torch.cat([given, torch.full_like(given, math.nan)]) if self.uses_guidance else given

    def _twice(self, value: Tensor | None) -> Tensor | None:
        return value if value is None or not self.uses_guidance else torch.cat([value, value])

    def _paired(self, hidden: Tensor) -> Tensor:
        """(2r, ..., H) conditional then unconditional states -> (r, ..., 2H), side by side for the head."""
        return torch.cat(hidden.chunk(2), -1) if self.uses_guidance else hidden

    def encode(
        self,
        x_t: Tensor,
        attention_mask: Tensor | None = None,
        t: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        doubled = [self._twice(v) for v in (x_t, attention_mask, t, positions)]
        hidden = self.model.encode(*doubled, condition=self._conditions(len(x_t)))
        return self._paired(hidden)

    def new_cache(self, rows: int, length: int) -> KeyValueCache:
        return self.model.new_cache(rows * self.evaluations_per_call, length)

    def encode_incremental(
        self,
        cache: KeyValueCache,
        rows: Tensor,
        input_ids: Tensor,
        positions: Tensor,
        sees_before: Tensor,
        group: Tensor,
    ) -> Tensor:
        if self.uses_guidance:  # the unconditional copy of row i is row i + R of the cache
            rows = torch.cat([rows, rows + cache.rows // 2])
            input_ids, positions, sees_before, group = (
                torch.cat([v, v]) for v in (input_ids, positions, sees_before, group)
            )
        hidden = self.model.encode_incremental(
            cache,
            rows,
            input_ids,
            positions,
            sees_before,
            group,
            condition=self._conditions(len(rows) // self.evaluations_per_call),
        )
        return self._paired(hidden)

    def unconditional(self, hidden: Tensor) -> Tensor:
        """The unconditional model's half of paired states (guided calls only)."""
        return hidden.chunk(2, -1)[1]

    def draft(self, context: Tensor, slot_ids: Tensor) -> Tensor:
        """The draft head's window states after paired causal states (``_paired``), paired likewise."""
        if not self.uses_guidance:
            return self.model.draft(context, slot_ids)
        return torch.cat([self.model.draft(half, slot_ids) for half in context.chunk(2, -1)], -1)

    def logits_from_hidden(self, hidden: Tensor, allow_end: bool = True) -> Tensor:
        if not self.uses_guidance:
            return self.model.logits_from_hidden(hidden, allow_end)
        conditional, unconditional = (
            torch.log_softmax(self.model.logits_from_hidden(half, allow_end), -1) for half in hidden.chunk(2, -1)
        )
        # Tokens the model may not predict keep a logit near its -1e4 floor: the difference of two
        # log-probabilities is small beside it, so they stay out of reach.
        return conditional + self.scale * (conditional - unconditional)
