"""The forward (noising) process q(x_t | x_0) and the weights of its ELBO.

Every maskable position keeps x_0 with probability alpha(t) and becomes the [MASK] id m (the
"excited state") otherwise. Pads and special tokens are never masked. The negative ELBO is

    NLL(x_0) <= E_t E_{x_t ~ q} [ w(t) * sum_{l: x_t^l = m} -log p_theta(x_0^l | x_t) ]

with t ~ U[eps, 1] in continuous time (T = 0) or t_i = i / T in discrete time (T > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import Tensor

from polydiff.diffusion.schedules import DiffusionSchedule
from polydiff.utils.arguments import refuse_mistyped_fields


@dataclass
class DiffusionConfig:
    """How time is treated.

    Args:
        num_timesteps: T > 0 for discrete time t_i = i / T, 0 for continuous time.
        time_sampling: ``antithetic`` spreads a batch's times evenly over [eps, 1] (lower
            variance, same expectation); ``uniform`` draws them independently.
        eps: smallest continuous time, where w(t) would blow up.
        loss_weighting: the training loss. ``elbo`` weights each masked cross-entropy by w(t),
            the negative ELBO itself; ``flat`` averages the cross-entropy over masked tokens
            whatever t (MaskGIT's loss, Chang et al. 2022): lower variance, since w(t) is large
            at small t where few tokens are masked. Validation reports the ELBO either way.
        block_size: B > 0 makes a block-diffusion model (``polydiff.diffusion.blocks``): masked
            diffusion inside blocks of B tokens, each block with its own t, autoregressive
            across blocks; 0 diffuses the whole sequence at once.
        causal_context: with blocks of B >= 2, encode the clean context causally and train its
            states to predict the next token as well (``polydiff.diffusion.blocks``), in the same
            pass. Training then noises ``noisy_blocks`` windows of B tokens per sequence at random
            starts instead of every block, and the sampler decodes speculatively: the windows
            draft, the next-token prediction verifies (``polydiff.sampling.speculative``).
        noisy_blocks: with a causal context, the noisy windows per training sequence, each with
            its own t: more train the drafts on more of each sequence, fewer keep the pass
            short (N + noisy_blocks B positions instead of 2N).
        drafter: with a causal context, what denoises the windows. ``windows``: the encoder itself,
            windows of [MASK]s appended to its input, so their gradients shape the states the
            next-token prediction reads. ``head``: a one-layer block denoiser on top of the encoder
            (``polydiff.model.draft_head``), reading the causal state before the window and the
            window's tokens; the encoder then trains on the next-token loss alone, over N positions.
    """

    num_timesteps: int = 0
    time_sampling: Literal["antithetic", "uniform"] = "antithetic"
    eps: float = 1e-3
    loss_weighting: Literal["elbo", "flat"] = "elbo"
    block_size: int = 0
    causal_context: bool = False
    noisy_blocks: int = 2
    drafter: Literal["windows", "head"] = "head"

    def __post_init__(self) -> None:
        refuse_mistyped_fields(self, "diffusion_config.")
        if self.num_timesteps < 0:
            raise ValueError(f"num_timesteps must be >= 0, got {self.num_timesteps}")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps must lie in (0, 1), got {self.eps}")
        if self.num_timesteps and "eps" in self.changed():
            raise ValueError("eps: discrete time (num_timesteps > 0) draws t on its grid, never near 0")
        if self.loss_weighting not in ("elbo", "flat"):
            raise ValueError(f"loss_weighting must be 'elbo' or 'flat', got {self.loss_weighting!r}")
        if self.block_size < 0:
            raise ValueError(f"block_size must be >= 0, got {self.block_size}")
        if self.causal_context and self.block_size == 0:
            raise ValueError(
                "block_size 0 diffuses the whole sequence, with no clean context before it: add "
                "--model.diffusion_config.causal_context false (recipes/blocks/whole.yaml sets both)"
            )
        if self.causal_context and self.block_size == 1:
            raise ValueError(
                "causal_context needs blocks of 2 or more tokens (block_size 1 is causal already): add "
                "--model.diffusion_config.causal_context false (recipes/ar.yaml sets both)"
            )
        if self.noisy_blocks < 1:
            raise ValueError(f"noisy_blocks must be at least 1, got {self.noisy_blocks}")
        unused = sorted(self.changed() & {"noisy_blocks", "drafter"})
        if unused and not self.causal_context:
            raise ValueError(f"{', '.join(unused)}: only a model with a causal context trains on noisy windows")

    def changed(self) -> set[str]:
        """The options set to something other than their default."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}


class ExcitedStateDiffusion:
    """The absorbing-[MASK] forward process for one schedule.

    Args:
        schedule: alpha(t).
        mask_token_id: the id m of [MASK].
        config: discrete or continuous time, time sampling, eps.
    """

    def __init__(self, schedule: DiffusionSchedule, mask_token_id: int, config: DiffusionConfig | None = None) -> None:
        self.schedule = schedule
        self.mask_token_id = mask_token_id
        self.config = config or DiffusionConfig()

    def sample_time(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """Draws one time per sequence: continuous in [eps, 1], or on the grid i / T.

        Returns:
            t of shape (batch_size,), float32.
        """
        u = torch.rand(batch_size if self.config.time_sampling == "uniform" else 1, device=device, generator=generator)
        if self.config.time_sampling == "antithetic":
            u = (u + torch.arange(batch_size, device=device) / batch_size) % 1
        T = self.config.num_timesteps
        if T > 0:
            return (torch.floor(u * T).clamp(max=T - 1) + 1) / T
        eps = self.config.eps
        return eps + (1 - eps) * u

    def elbo_weight(self, t: Tensor) -> Tensor:
        """The weight of the masked cross-entropy at time t, such that its mean over
        ``sample_time`` is the negative ELBO (discrete sum or integral over [0, 1])."""
        T = self.config.num_timesteps
        if T > 0:
            return self.schedule.discrete_weight(torch.round(t * T), T)
        # Sampling u on [eps, 1] estimates the integral over that interval divided by (1 - eps).
        return (1 - self.config.eps) * self.schedule.weight(t)

    def position_weights(self, t: Tensor, positions: Tensor) -> Tensor:
        """w(t) at every position, (batch, length), from one t per sequence (batch,) or per position."""
        weight = self.elbo_weight(t)
        return (weight if weight.dim() == 2 else weight.unsqueeze(-1)).expand(positions.shape)

    def q_sample(self, x0: Tensor, t: Tensor, maskable: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws x_t ~ q(x_t | x_0).

        Args:
            x0: clean token ids, (batch, length).
            t: one time per sequence, (batch,), or per position, (batch, length).
            maskable: positions that may be masked (not pad, not special), (batch, length).

        Returns:
            x_t with masked positions set to the [MASK] id.
        """
        alpha = self.schedule.alpha(t.double() if t.dim() == 2 else t.double().unsqueeze(-1)).to(torch.float32)
        masked = (torch.rand(x0.shape, device=x0.device, generator=generator) >= alpha) & maskable
        return torch.where(masked, torch.full_like(x0, self.mask_token_id), x0)
