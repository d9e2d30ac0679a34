"""Truncated diffusion with a learned implicit prior (TDPM, Zheng et al., ICLR 2023).

The diffusion chain is cut at T_trunc: the denoiser is trained only on t ≤ T_trunc, and a
generator G(z, mel) learns the distribution of x_{T_trunc} adversarially. Sampling draws
x_{T_trunc} = G(z, mel) and runs only the truncated reverse chain (fast, aligned steps).

* Real samples for the discriminator: q(x_{T_trunc} | x_0) = √ᾱ_k x_0 + √(1 − ᾱ_k) σ ⊙ ε (k = T_trunc,
  σ the prior's std: PriorGrad's Σ_c or 1; :meth:`NoiseSchedule.q_sample`). TDPM eq. 7–8: the
  implicit prior p_ψ(x_{T_trunc}) replaces N(0, I) at the truncation point.

T_trunc and its level are computed once by :mod:`diffvoc.build` (:func:`~diffvoc.config.truncation_steps`,
:meth:`NoiseSchedule.level`) and passed to everything here.
* Generator (:class:`ImplicitPrior`): ``shared`` — the denoiser evaluated at step T_trunc + 1 (an
  embedding row the diffusion loss never trains), as the official code; ``separate`` — a small
  DiffWave. Input z = σ ⊙ ε (``generator_input: prior``) or ε. With ``generator_skip``,
  G(z, c) = √(1 − ᾱ_k) z + f(z, c).
* Discriminator: :class:`~diffvoc.models.discriminator.MelDiscriminator` (1-D, sees the mel).
* Losses: non-saturating, softplus(−D(G(z))) for G and softplus(−D(real)) + softplus(D(G(z))) for D;
  lazy R1 γ/2 · ‖∇_x D(real)‖² every ``r1_every`` D steps (scaled by ``r1_every``, as StyleGAN2).
* Optimisers: :class:`~diffvoc.training.truncation_gan.TruncatedGAN` (the training side).
* Truncated chain with N reverse steps (:func:`truncated_betas`): ``truncation.schedules[N]``, or
  the stored N-step fast schedule's noise levels scaled so that the noisiest equals the
  truncation level 1 − ᾱ_k (the smallest kept ≥ β_1), so the chain starts exactly where G's
  samples live. ``--steps N`` counts calls of the big network: with the shared generator one of
  them is G (N − 1 reverse steps); the separate generator is a small extra network (N reverse steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffvoc.config import FAST_SCHEDULES, Config, ModelConfig
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.errors import ScheduleError
from diffvoc.models.diffwave import DiffWave


def _levels_to_betas(levels: list[float]) -> list[float]:
    """Cumulative noise levels ℓ_1 < … < ℓ_N → per-step β_n = 1 − (1 − ℓ_n)/(1 − ℓ_{n−1})."""
    betas, prev = [], 0.0
    for lv in levels:
        betas.append(1.0 - (1.0 - lv) / (1.0 - prev))
        prev = lv
    return betas


def truncated_betas(cfg: Config, train: NoiseSchedule, k: int, reverse_steps: int) -> list[float]:
    """β of the truncated chain with ``reverse_steps`` steps, ending at the truncation level
    1 − ᾱ_k of the training schedule ``train`` (k = T_trunc)."""
    if reverse_steps < 1:
        raise ScheduleError("the truncated chain needs at least one reverse step")
    tc, df = cfg.truncation, cfg.diffusion
    if reverse_steps in tc.schedules:
        return [float(b) for b in tc.schedules[reverse_steps]]
    if reverse_steps == k:  # every training step of the truncated chain
        return [float(b) for b in train.betas[:k]]
    top = train.level(k)
    base = df.fast_schedules.get(reverse_steps) or FAST_SCHEDULES.get(reverse_steps)
    if base is None:  # geometric levels from β_1 to the truncation level
        levels = list(np.geomspace(df.beta_start, top, reverse_steps)) if reverse_steps > 1 else [top]
    else:
        lv = 1.0 - np.cumprod(1.0 - np.asarray(base, dtype=np.float64))
        levels = list(lv * (top / lv[-1]))
    floor = df.beta_start * (1 + 1e-6)
    out = []
    for i, lv in enumerate(levels):  # keep inside the training range and strictly increasing
        lv = max(float(lv), floor * (1.5 ** i))
        out.append(min(lv, top))
    out[-1] = top
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ScheduleError(f"cannot fit {reverse_steps} reverse steps below the truncation level {top:.4g}")
    return _levels_to_betas(out)


def generator_model_config(cfg: Config) -> ModelConfig:
    tc = cfg.truncation
    return ModelConfig(residual_channels=tc.generator_channels, residual_layers=tc.generator_layers,
                       dilation_cycle=tc.generator_cycle, conditioning="mel",
                       upsample_factors=cfg.model.upsample_factors)


class ImplicitPrior(nn.Module):
    """G(z, mel) → x_{T_trunc}: the denoiser at step T_trunc + 1 (``shared``) or a small DiffWave.

    Only the ``separate`` generator has parameters of its own (``net.*``); the shared one borrows
    the denoiser passed to :meth:`forward`.
    """

    def __init__(self, cfg: Config, schedule: NoiseSchedule, k: int, extra_cond_channels: int = 0) -> None:
        super().__init__()
        tc = cfg.truncation
        self.k = k
        self.level = schedule.level(k)
        self.shared = tc.generator == "shared"
        self.standard_input = tc.generator_input == "standard"
        self.skip = math.sqrt(self.level) if tc.generator_skip else 0.0
        self.net = None if self.shared else DiffWave(generator_model_config(cfg), 2, cfg.audio.n_mels,
                                                     cfg.audio.hop_length, extra_cond_channels)
        if self.net is not None:  # f starts at exactly 0 (DiffWave zeroes the output weights; the bias too)
            nn.init.zeros_(self.net.output_projection.bias)

    def condition(self, cond_input: torch.Tensor) -> torch.Tensor | None:
        """The separate generator's upsampled conditioner (``None`` for the shared one)."""
        return None if self.net is None else self.net.condition(cond_input)

    def forward(self, eps: torch.Tensor, std: torch.Tensor, denoiser: DiffWave, denoiser_cond: torch.Tensor | None,
                own_cond: torch.Tensor | None) -> torch.Tensor:
        """x_{T_trunc} ``[B, T]`` from the draw ``eps`` ``[B, T]`` (z = σ ⊙ ε or ε)."""
        z = eps if self.standard_input else std * eps
        if self.net is None:
            t = torch.full((eps.shape[0],), self.k, dtype=torch.long, device=eps.device)  # step T_trunc + 1
            f = denoiser.denoise(z, t, denoiser_cond)
        else:
            f = self.net.denoise(z, torch.zeros(eps.shape[0], dtype=torch.long, device=eps.device), own_cond)
        return self.skip * z + f.squeeze(1).to(z.dtype)

    def start_fn(self, denoiser: DiffWave, denoiser_cond: torch.Tensor | None, cond_input: torch.Tensor,
                 std: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The sampler's ``generate`` callable for one utterance (conditioners computed once)."""
        own = self.condition(cond_input)
        return lambda eps: self(eps, std, denoiser, denoiser_cond, own)


def d_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """softplus(−D(real)) + softplus(D(G(z))), averaged per sub-discriminator, summed."""
    return sum(F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(real, fake))


def g_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Non-saturating generator loss softplus(−D(G(z)))."""
    return sum(F.softplus(-f).mean() for f in fake)


def r1_penalty(disc: nn.Module, real: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """‖∇_x Σ D(x, mel)‖² per item, averaged (without the γ/2 factor)."""
    x = real.detach().requires_grad_(True)
    out = disc(x, cond)
    (grad,) = torch.autograd.grad(sum(o.sum() for o in out), x, create_graph=True)
    return grad.pow(2).sum(dim=1).mean()
