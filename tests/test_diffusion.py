"""Schedules, fast-step alignment, the ε-loss, priors and the samplers against REFERENCE §1–2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffvoc.config import AudioConfig, PriorConfig
from diffvoc.diffusion.loss import DiffusionLoss
from diffvoc.diffusion.noise import GivenNoise, PositionalNoise
from diffvoc.diffusion.prior import AdaptivePrior, StandardPrior
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.schedule import NoiseSchedule, parse_schedule
from diffvoc.errors import ScheduleError

TRAIN = NoiseSchedule.linear(1e-4, 0.05, 50)


def test_aligned_steps_of_the_paper_schedule():
    steps = TRAIN.align(NoiseSchedule(np.array([1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5])))
    np.testing.assert_allclose(steps, [0, 0.894, 4.087, 10.452, 22.992, 42.919], atol=5e-4)


def test_full_schedule_aligns_to_integers_and_t200():
    np.testing.assert_allclose(TRAIN.align(TRAIN), np.arange(50), atol=1e-9)
    t200 = NoiseSchedule.linear(1e-4, 0.02, 200)
    s = t200.align(NoiseSchedule(np.array([1e-4, 1e-3, 0.01, 0.05, 0.2, 0.7])))
    assert np.all(np.diff(s) > 0) and s[0] == 0 and s[-1] < 199


@pytest.mark.parametrize("bad", [[1e-4, 0.9], [0.5, 0.5, 0.5], [5e-5, 0.01]])
def test_schedule_outside_training_range_is_refused(bad):
    with pytest.raises(ScheduleError, match="outside the training range"):
        TRAIN.align(NoiseSchedule(np.array(bad)))


@pytest.mark.parametrize("text", ["", "a,b", "0.1,1.5", "-0.1"])
def test_bad_schedule_text(text):
    with pytest.raises(ScheduleError):
        parse_schedule(text)


def test_loss_equals_reference_formulas():
    loss = DiffusionLoss(TRAIN, "l2")
    x0 = torch.rand(2, 64) - 0.5
    std = torch.rand(2, 64) + 0.1
    t = torch.tensor([0, 30])
    g = torch.Generator().manual_seed(0)
    b = loss.q_sample(x0, std, t=t, generator=g)
    eps = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    ab = torch.tensor(TRAIN.alpha_bars[[0, 30]], dtype=torch.float32).unsqueeze(1)
    torch.testing.assert_close(b.noise, std * eps)
    torch.testing.assert_close(b.x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * std * eps)
    pred = torch.randn(2, 1, 64)
    torch.testing.assert_close(loss(pred, b), (((pred.squeeze(1) - std * eps) / std) ** 2).mean())
    l1 = DiffusionLoss(TRAIN, "l1")
    torch.testing.assert_close(l1(pred, b), ((pred.squeeze(1) - std * eps) / std).abs().mean())
    # standard prior: plain ‖ε − ε_θ‖²
    b1 = loss.q_sample(x0, torch.ones(2, 1), t=t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss(pred, b1), ((pred.squeeze(1) - eps) ** 2).mean())


def reference_sampler(eps_fn, betas, train, draws, std):
    """REFERENCE §1 written out in float64 numpy."""
    beta = np.asarray(betas, np.float64)
    alpha, ab = 1 - beta, np.cumprod(1 - beta)
    steps = train.align(NoiseSchedule(beta))
    x = std * draws[0]
    for n in range(len(beta) - 1, -1, -1):
        x = (x - beta[n] / np.sqrt(1 - ab[n]) * eps_fn(x, steps[n])) / np.sqrt(alpha[n])
        if n > 0:
            x = x + np.sqrt((1 - ab[n - 1]) / (1 - ab[n]) * beta[n]) * std * draws[len(beta) - n]
        x = np.clip(x, -1, 1)
    return x


def test_fast_sampler_equals_reference_update():
    betas = [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5]
    L = 300
    draws = [torch.randn(1, L, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    std = torch.linspace(0.1, 1.0, L).unsqueeze(0)

    def eps(x, t):  # a stand-in network depending on x and t
        return (0.3 * torch.tanh(x) + 0.01 * t.float().unsqueeze(-1)).unsqueeze(1)

    s = DiffusionSampler.fast(TRAIN, betas)
    ours = s.sample(eps, std, 1, L, GivenNoise(draws))
    ref = reference_sampler(lambda x, t: 0.3 * np.tanh(x) + 0.01 * t, betas, TRAIN,
                            [d.numpy().astype(np.float64) for d in draws], std.numpy().astype(np.float64))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)


def test_full_sampler_uses_integer_steps():
    seen = []

    def eps(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x).unsqueeze(1)

    DiffusionSampler(TRAIN).sample(eps, torch.ones(1, 1), 1, 10, PositionalNoise(0))
    assert [int(t[0]) for t in seen] == list(range(49, -1, -1))
    assert all(not t.is_floating_point() for t in seen)


def test_positional_noise_is_independent_of_chunking():
    n = PositionalNoise(3, block=100)
    whole = n(2, 2, 0, 1000, torch.device("cpu"))
    part = n(2, 2, 250, 333, torch.device("cpu"))
    torch.testing.assert_close(part, whole[:, 250:583])
    assert not torch.equal(n(1, 1, 0, 100, torch.device("cpu")), n(2, 1, 0, 100, torch.device("cpu")))
    assert abs(whole.std().item() - 1) < 0.1


def test_priorgrad_sigma_formula():
    audio = AudioConfig()
    prior = AdaptivePrior(PriorConfig(kind="priorgrad"), audio, energy_min=0.5, energy_max=9.0)
    assert prior.energy_max == 4.0  # the official override
    e = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 7.0])
    mel = torch.log((e ** 2 / 80).unsqueeze(0).repeat(80, 1)).unsqueeze(0)  # Σ_f exp(mel) = E²
    sigma = prior.frame_std(mel)[0]
    expect = torch.clamp((torch.clamp(e, max=4.0) - 0.5) / 3.5, min=0.1)
    torch.testing.assert_close(sigma, expect, rtol=1e-4, atol=1e-5)
    up = prior.std(mel, 6 * 256)
    assert up.shape == (1, 6 * 256)
    torch.testing.assert_close(up[0, ::256], expect, rtol=1e-4, atol=1e-5)
    assert torch.all(up[0, 256:512] == up[0, 256])  # frame-constant
    assert StandardPrior().std(mel, 100).shape == (1, 1)


def test_schedule_owns_forward_process_range_and_truncation_level():
    sched = NoiseSchedule.linear(1e-4, 0.05, 50)
    betas = np.linspace(1e-4, 0.05, 50)
    ab = np.cumprod(1 - betas)
    assert sched.noise_range == pytest.approx((1e-4, 1 - ab[-1]), rel=1e-12)
    assert sched.level(7) == pytest.approx(1 - ab[6], rel=1e-12)
    k = sched.step_reaching(0.3)
    assert 1 - ab[k - 1] >= 0.3 > 1 - ab[k - 2]
    assert sched.step_reaching(0.99) == 50  # never reached: the whole chain
    assert sched.outside([1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5]) is None
    assert sched.outside([0.05, 0.9]) == 1
    with pytest.raises(ScheduleError, match="step 2 .* outside the training range"):
        sched.check_inside([0.05, 0.9])
    x0, noise = torch.randn(3, 100), torch.randn(3, 100)
    t = torch.tensor([0, 17, 49])
    ref = torch.tensor(np.sqrt(ab[[0, 17, 49]]), dtype=torch.float32)[:, None] * x0 \
        + torch.tensor(np.sqrt(1 - ab[[0, 17, 49]]), dtype=torch.float32)[:, None] * noise
    torch.testing.assert_close(sched.q_sample(x0, noise, t), ref)
