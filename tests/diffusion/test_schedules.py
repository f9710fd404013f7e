import math

import pytest
import torch

from polydiff.diffusion import CosineSchedule, LinearSchedule, PolynomialSchedule, QuadraticSchedule

SCHEDULES = [LinearSchedule(), CosineSchedule(), QuadraticSchedule(), PolynomialSchedule(power=0.5)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_alpha_runs_from_one_to_zero_and_decreases(schedule):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    alpha = schedule.alpha(t)
    assert alpha[0] == pytest.approx(1.0)
    assert alpha[-1] == pytest.approx(0.0, abs=1e-12)
    assert (alpha.diff() < 0).all()


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_weight_matches_finite_difference(schedule):
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    alpha_prime = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    expected = -alpha_prime / (1 - schedule.alpha(t))
    torch.testing.assert_close(schedule.weight(t), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(schedule.alpha_prime(t), alpha_prime, rtol=1e-6, atol=1e-9)


def test_closed_form_weights():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(LinearSchedule().weight(t), 1 / t)
    torch.testing.assert_close(QuadraticSchedule().weight(t), 2 / t)
    cosine = (math.pi / 2) * torch.sin(math.pi * t / 2) / (1 - torch.cos(math.pi * t / 2))
    torch.testing.assert_close(CosineSchedule().weight(t), cosine)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_betas_compose_to_alpha(schedule):
    T = 50
    betas = schedule.betas(T)
    assert betas.shape == (T,)
    assert ((betas >= 0) & (betas <= 1)).all()
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), schedule.alpha(t), rtol=1e-9, atol=1e-12)
    assert betas[-1] == pytest.approx(1.0)  # the last step absorbs whatever is left


def test_power_must_be_positive():
    with pytest.raises(ValueError, match="power"):
        PolynomialSchedule(power=0)
