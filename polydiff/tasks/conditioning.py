"""What a ``DiffusionTask`` with conditions (``data.conditions``) adds: the targets a user names
read as the condition vector the model reads, the guided and steered denoisers that sample
toward them (``polydiff.sampling.guidance``, ``polydiff.sampling.steering``), and the training
batches' conditions in the model's units."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from polydiff.chem.conditions import CATEGORIES, MIN_CATEGORY_SEQUENCES, PROPERTY_RANGES
from polydiff.sampling.denoiser import Denoiser
from polydiff.sampling.guidance import GuidedDenoiser
from polydiff.sampling.steering import DEFAULT_WIDTH, Steering

UNCONDITIONAL_UNTRAINED = (
    "this checkpoint was fitted with data.condition_dropout 0, so its unconditional model never trained"
)


def _in_case_of(name: str, known: Iterable[str]) -> str:
    """``name`` as written in ``known`` when exactly one of them matches it ignoring case, else as given."""
    matches = [candidate for candidate in known if candidate.casefold() == name.casefold()]
    return matches[0] if name not in matches and len(matches) == 1 else name


class Conditioning:
    """Conditions and guidance, mixed into ``DiffusionTask``, whose ``conditions``,
    ``condition_columns``, ``condition_statistics`` (``MoleculeDataModule.condition_statistics``),
    ``property_head`` and ``_categorical`` (which columns are one-hot) they read."""

    def condition_vector(self, targets: Mapping[str, float | str]) -> Tensor:
        """The condition (columns,) the model reads for targets such as ``{"logp": 3.0}`` or
        ``{"class": "polyamide"}``: numeric properties normalised, a category one-hot, anything not
        named NaN (left free).

        Raises:
            TypeError: for targets that are not a mapping.
            ValueError: for a checkpoint trained without conditions, no targets, a property it was
                not trained on, a target outside the values its training data had, or a category it
                saw too few training sequences of.
        """
        if not self.conditions:
            raise ValueError("this checkpoint was trained without conditions (data.conditions): it cannot be guided")
        if not isinstance(targets, Mapping):  # a string would be read a character at a time
            raise TypeError(f"condition takes a mapping such as {{'logp': 3.0}}, got {type(targets).__name__}")
        if not targets:  # all free: the unconditional model, at twice the calls
            raise ValueError("condition names no property: give at least one target, e.g. {'logp': 3.0}")
        # As chemists write them (logP, MW, class=Polyamide): a name or category of another case
        # is the one it matches, where exactly one does.
        targets = {_in_case_of(name, self.conditions): value for name, value in targets.items()}
        unknown = [name for name in targets if name not in self.conditions]
        if unknown:
            raise ValueError(f"unknown property {unknown[0]!r}: this checkpoint knows {', '.join(self.conditions)}")
        mean, std, low, high = self.condition_statistics
        vector = torch.full((len(self.condition_columns),), math.nan, device=self.device)
        for name, value in targets.items():
            if name in CATEGORIES:  # one-hot over the category's columns
                columns, value = self._category_columns(name, value)
                for k in columns:
                    vector[k] = float(self.condition_columns[k] == f"{name}={value}")
                continue
            if isinstance(value, str):
                raise ValueError(f"{name} takes a number, got {value!r}")
            k = self.condition_columns.index(name)
            # Guidance may reach a little past the training data, not far: within one standard
            # deviation of its extremes, and never past what the property can take (QED 0 to 1).
            bottom, top = PROPERTY_RANGES.get(name, (-math.inf, math.inf))
            lowest, highest = max((low[k] - std[k]).item(), bottom), min((high[k] + std[k]).item(), top)
            if not lowest <= value <= highest:
                raise ValueError(
                    f"{name}={value:g} lies outside what this checkpoint was trained on: its training "
                    f"molecules span {low[k].item():.3g} to {high[k].item():.3g}, and targets may lie one "
                    f"standard deviation beyond{', within what it can take' if name in PROPERTY_RANGES else ''} "
                    f"({lowest:.3g} to {highest:.3g})"
                )
            vector[k] = (value - mean[k]) / std[k]
        return vector

    def _category_columns(self, name: str, value: float | str) -> tuple[list[int], float | str]:
        """The columns of categorical condition ``name``, and ``value`` as the category it names
        (matched ignoring case), after checking that it is one with enough training sequences
        (``MIN_CATEGORY_SEQUENCES``)."""
        columns = [k for k, column in enumerate(self.condition_columns) if column.partition("=")[0] == name]
        offered = {self.condition_columns[k].partition("=")[2]: self.condition_statistics[3, k].item() for k in columns}
        value = _in_case_of(value, offered) if isinstance(value, str) else value
        enough = [category for category, count in offered.items() if count >= MIN_CATEGORY_SEQUENCES]
        if not isinstance(value, str):
            raise ValueError(f"{name} takes a category's name, not a number: choose from {', '.join(enough) or 'none'}")
        if value not in offered:
            raise ValueError(f"unknown {name} {value!r}: choose from {', '.join(enough) or 'none'}")
        if offered[value] < MIN_CATEGORY_SEQUENCES:
            trained = f"{offered[value]:,.0f} such sequence{'' if round(offered[value]) == 1 else 's'}"
            raise ValueError(
                f"{name}={value}: this checkpoint was trained on about {trained}, "
                f"fewer than {MIN_CATEGORY_SEQUENCES:,} (it offers {', '.join(enough) or 'none'})"
            )
        return columns, value

    def thin_categories(self) -> dict[str, list[str]]:
        """Per categorical condition (``class``), the categories this model saw too few training
        sequences of (``MIN_CATEGORY_SEQUENCES``) to be guided toward, as ``condition_statistics`` counts them."""
        thin: dict[str, list[str]] = {}
        for k, column in enumerate(self.condition_columns):
            name, _, category = column.partition("=")
            if name in CATEGORIES and self.condition_statistics[3, k].item() < MIN_CATEGORY_SEQUENCES:
                thin.setdefault(name, []).append(category)
        return thin

    def guided(
        self,
        condition: Mapping[str, float | str] | None = None,
        guidance_scale: float | None = None,
        steering: float | None = None,
    ) -> Denoiser:
        """The denoiser that samples toward property targets (``polydiff.sampling.guidance``): this
        model given ``condition`` (e.g. ``{"logp": 3.0}``; properties not named are free), with
        classifier-free guidance of scale ``guidance_scale``; without a condition, this model.

        Args:
            condition: the targets.
            guidance_scale: w >= 0; None: 0 (the conditional model alone).
            steering: the width tau, in standard deviations of each property, of the target that
                guided rows are steered toward by the property head (``polydiff.sampling.steering``);
                0 steers none; None: ``DEFAULT_WIDTH`` where it can (numeric targets, a checkpoint
                with a trained property head, speculative decoding), none elsewhere.

        Raises:
            ValueError: for a guidance scale without a condition, a condition ``condition_vector``
                refuses, or a steering width where steering cannot work.
        """
        if condition is None:  # 0 too, for either: there is no guidance or steering to turn off
            if guidance_scale is not None:
                raise ValueError("guidance_scale needs a condition to guide toward (--condition)")
            if steering is not None:
                raise ValueError("steering needs a condition to steer toward (--condition)")
            return self
        vector = self.condition_vector(condition)
        if guidance_scale and not self._unconditional_trained:
            raise ValueError(
                f"guidance_scale: {UNCONDITIONAL_UNTRAINED}, and guidance pushes away from it: leave "
                "--guidance_scale out to sample the conditional model alone, or fit again"
            )
        scale, steered = guidance_scale or 0.0, self._steering(vector, steering)
        return GuidedDenoiser(self, vector, scale, steered, steering_asked=steering is not None)

    def _steering(self, vector: Tensor, width: float | None) -> Steering | None:
        """``guided``'s steering toward the numeric targets of ``vector``, or None; refuses a width
        asked for where steering cannot work (0 too: there it has nothing to turn off)."""
        numeric = (~vector.isnan() & ~self._categorical.to(vector.device)).nonzero().squeeze(-1)
        reasons = []
        if self.property_head is None:
            reasons.append("the checkpoint has no property head (a draft-head model fitted with data.conditions)")
        elif not self._property_head_trained:
            reasons.append("the checkpoint was written before its property head was trained: fit it again")
        elif not self._unconditional_trained:
            reasons.append(f"{UNCONDITIONAL_UNTRAINED}, nor did the property head, which reads it: fit it again")
        if not len(numeric):
            reasons.append("it steers toward numeric properties, and none is asked for")
        if reasons:
            if width is None:
                return None
            raise ValueError(f"steering: {'; '.join(reasons)}")
        if width == 0:  # turned off where it would steer by default
            return None
        if width is not None and not 0 < width < math.inf:
            raise ValueError(f"steering must be above 0 (0 turns it off), got {width}")
        return Steering(self.property_head, numeric, vector[numeric], width or DEFAULT_WIDTH)

    def training_condition(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The normalised conditions of a training batch, (batch, K), NaN where the data module left
        a property out (``ConditionCollator``); None for a model without conditions."""
        if not self.conditions:
            return None
        return self._normalised(batch["conditions"])

    def _normalised(self, values: Tensor) -> Tensor:
        """Condition columns (batch, K) in the model's units: standardised with the training statistics."""
        mean, std = self.condition_statistics[0], self.condition_statistics[1]
        if not (std > 0).all():
            raise ValueError("conditions are read against statistics the data module computes at setup: fit with it")
        values = values.to(mean)
        return torch.where(self._categorical.to(values.device), values, (values - mean) / std)
