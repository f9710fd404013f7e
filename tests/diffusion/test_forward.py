import math

import pytest
import torch

from polydiff.diffusion import CosineSchedule, DiffusionConfig, ExcitedStateDiffusion, LinearSchedule

MASK = 4


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.95])
def test_mask_rate_matches_one_minus_alpha(t):
    process = ExcitedStateDiffusion(CosineSchedule(), MASK)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randint(5, 50, (200, 500), generator=generator)
    maskable = torch.ones_like(x0, dtype=torch.bool)
    x_t = process.q_sample(x0, torch.full((200,), t), maskable, generator)
    p = 1 - math.cos(math.pi * t / 2)
    n = x0.numel()
    rate = (x_t == MASK).float().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n)  # five binomial standard deviations
    unmasked = x_t != MASK
    assert torch.equal(x_t[unmasked], x0[unmasked])  # clean positions keep x_0


def test_positions_that_are_not_maskable_are_never_masked():
    process = ExcitedStateDiffusion(LinearSchedule(), MASK)
    x0 = torch.randint(5, 50, (64, 40))
    maskable = torch.rand(64, 40) < 0.5
    x_t = process.q_sample(x0, torch.full((64,), 0.999), maskable)
    assert torch.equal(x_t[~maskable], x0[~maskable])
    assert (x_t[maskable] == MASK).float().mean() > 0.99


def test_antithetic_times_cover_the_interval_evenly():
    config = DiffusionConfig(eps=1e-3)
    process = ExcitedStateDiffusion(LinearSchedule(), MASK, config)
    t = process.sample_time(100, generator=torch.Generator().manual_seed(1))
    assert ((t >= config.eps) & (t <= 1)).all()
    u = (t - config.eps) / (1 - config.eps)
    assert torch.equal(torch.sort(torch.floor(u * 100)).values, torch.arange(100.0))  # one per bin


def test_discrete_times_lie_on_the_grid():
    process = ExcitedStateDiffusion(LinearSchedule(), MASK, DiffusionConfig(num_timesteps=10))
    t = process.sample_time(1000, generator=torch.Generator().manual_seed(2))
    i = t * 10
    torch.testing.assert_close(i, torch.round(i))
    assert set(torch.round(i).long().tolist()) == set(range(1, 11))


def _expected_bound(process, t, g):
    """E over x_t of the weighted masked loss when a masked token costs g(t) nats: w(t) (1 - alpha) g(t)."""
    return process.elbo_weight(t) * (1 - process.schedule.alpha(t)) * g(t)


@pytest.mark.parametrize("schedule", [LinearSchedule(), CosineSchedule()], ids=repr)
def test_discrete_elbo_tends_to_the_continuous_one(schedule):
    def g(t):
        return 1 + 2 * t  # a per-token loss that grows with noise, as a real model's does

    eps = 1e-4
    continuous = ExcitedStateDiffusion(schedule, MASK, DiffusionConfig(eps=eps))
    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000  # midpoint rule
    reference = _expected_bound(continuous, eps + (1 - eps) * u, g).mean().item()
    exact = 1 + 2 * torch.trapezoid(-schedule.alpha_prime(u) * u, u).item()  # integral of -alpha' g
    assert reference == pytest.approx(exact, rel=1e-3)

    gaps = []
    for T in (10, 100, 1000):
        process = ExcitedStateDiffusion(schedule, MASK, DiffusionConfig(num_timesteps=T))
        grid = torch.arange(1, T + 1, dtype=torch.float64) / T
        gaps.append(abs(_expected_bound(process, grid, g).mean().item() - reference))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 5e-3 * reference


@pytest.mark.parametrize(("block_size", "recipe"), [(0, "recipes/blocks/whole.yaml"), (1, "recipes/ar.yaml")])
def test_a_causal_context_without_blocks_to_denoise_names_the_option_to_turn_off(block_size, recipe):
    with pytest.raises(ValueError, match=rf"causal_context false \({recipe} sets both\)"):
        DiffusionConfig(block_size=block_size, causal_context=True)
