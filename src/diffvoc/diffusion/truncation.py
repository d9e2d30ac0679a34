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
* Optimisers (:class:`TruncatedGAN`): the trainer's diffusion Adam (lr 2e-4), generator Adam
  (2e-5) and discriminator Adam (2.5e-3), betas (0, 0.99) for the two GAN ones. With the shared
  generator the generator optimiser updates the denoiser's own weights (its own Adam state).
* Truncated chain with N reverse steps (:func:`truncated_betas`): ``truncation.schedules[N]``, or
  the stored N-step fast schedule's noise levels scaled so that the noisiest equals the
  truncation level 1 − ᾱ_k (the smallest kept ≥ β_1), so the chain starts exactly where G's
  samples live. ``--steps N`` counts calls of the big network: with the shared generator one of
  them is G (N − 1 reverse steps); the separate generator is a small extra network (N reverse steps).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from diffvoc.config import FAST_SCHEDULES, Config, ModelConfig
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.errors import ScheduleError
from diffvoc.models.diffwave import DiffWave
from diffvoc.models.discriminator import MelDiscriminator


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


def _set_grad(params: list[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _all_reduce_grads(params: list[nn.Parameter], world: int) -> None:
    """Average gradients over DDP processes (the GAN phases run on the raw modules)."""
    if world <= 1 or not dist.is_initialized():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


class TruncatedGAN:
    """The adversarial half of TDPM training: the implicit prior G, the discriminator D, their
    optimisers, G's EMA, and one D phase + one G phase per call of :meth:`step`.

    The trainer keeps the diffusion optimiser and the denoiser's EMA; it calls :meth:`step` after
    its own update, once ``truncation.gan_start_step`` is reached.
    """

    def __init__(self, cfg: Config, denoiser: DiffWave, schedule: NoiseSchedule, generator: ImplicitPrior,
                 device: torch.device, world: int = 1) -> None:
        tc = cfg.truncation
        self.cfg, self.world = cfg, world
        self.schedule = schedule
        self.generator = generator.to(device)
        self.disc = MelDiscriminator(denoiser.cond_channels, tc.discriminator_channels, tc.discriminator_scales,
                                     tc.discriminator_periods, tc.discriminator_resolutions).to(device)
        self.k = self.generator.k
        self.g_params = list(denoiser.parameters()) if self.generator.shared else list(self.generator.parameters())
        self.d_params = list(self.disc.parameters())
        betas = tuple(tc.gan_betas)
        self.g_opt = torch.optim.Adam(self.g_params, lr=tc.generator_lr, betas=betas)
        self.d_opt = torch.optim.Adam(self.d_params, lr=tc.discriminator_lr, betas=betas)
        self.d_steps = 0
        self.ema = {k: v.detach().clone().float() for k, v in self.generator.state_dict().items()}

    def active(self, step: int) -> bool:
        tc = self.cfg.truncation
        return step >= tc.gan_start_step and (step - tc.gan_start_step) % tc.gan_every == 0

    def real(self, x0: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_{T_trunc} | x_0) = √ᾱ_k x_0 + √(1 − ᾱ_k) σ ⊙ ε."""
        t = torch.full((x0.shape[0],), self.k - 1, dtype=torch.long, device=x0.device)
        return self.schedule.q_sample(x0, std * eps, t)

    def fake(self, denoiser: DiffWave, cond_input: torch.Tensor, std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        den_cond = denoiser.condition(cond_input) if self.generator.shared else None
        return self.generator(eps, std, denoiser, den_cond, self.generator.condition(cond_input))

    def step(self, denoiser: DiffWave, x0: torch.Tensor, cond_input: torch.Tensor, std: torch.Tensor,
             generator: torch.Generator) -> dict[str, float]:
        """One discriminator phase, then one generator phase; returns the logged scalars."""
        tc = self.cfg.truncation
        shape = x0.shape
        eps_real = torch.randn(shape, device=x0.device, generator=generator)
        eps_fake = torch.randn(shape, device=x0.device, generator=generator)
        # D phase: only D's parameters receive gradients
        _set_grad(self.g_params, False)
        real = self.real(x0, std, eps_real)
        with torch.no_grad():
            fake = self.fake(denoiser, cond_input, std, eps_fake)
        out_r, out_f = self.disc(real, cond_input), self.disc(fake, cond_input)
        loss_d = d_loss(out_r, out_f)
        logs = {"gan/d_loss": loss_d.item(), "gan/d_real": float(sum(o.detach().mean() for o in out_r)),
                "gan/d_fake": float(sum(o.detach().mean() for o in out_f))}
        if tc.r1_gamma > 0 and self.d_steps % tc.r1_every == 0:
            r1 = r1_penalty(self.disc, real, cond_input)
            loss_d = loss_d + 0.5 * tc.r1_gamma * tc.r1_every * r1
            logs["gan/r1"] = r1.item()
        self.d_opt.zero_grad(set_to_none=True)
        loss_d.backward()
        _all_reduce_grads(self.d_params, self.world)
        self.d_opt.step()
        self.d_steps += 1
        _set_grad(self.g_params, True)
        # G phase: only G's parameters (the denoiser's, if shared) receive gradients
        _set_grad(self.d_params, False)
        fake = self.fake(denoiser, cond_input, std, eps_fake)
        loss_g = tc.gan_weight * g_loss(self.disc(fake, cond_input))
        self.g_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        _all_reduce_grads(self.g_params, self.world)
        self.g_opt.step()
        _set_grad(self.d_params, True)
        self.g_opt.zero_grad(set_to_none=True)
        logs["gan/g_loss"] = loss_g.item()
        logs["gan/fake_std"] = float(fake.detach().std())
        logs["gan/real_std"] = float(real.detach().std())
        return logs

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for k, v in self.generator.state_dict().items():
            self.ema[k].mul_(decay).add_(v.float(), alpha=1 - decay)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        raw = {k: v.clone() for k, v in self.generator.state_dict().items()}
        self.generator.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.generator.load_state_dict(raw)

    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """(weights to save as safetensors files, train-state entries)."""
        weights = {"discriminator": self.disc.state_dict()}
        if not self.generator.shared:
            weights["generator"] = self.ema
            weights["generator_raw"] = self.generator.state_dict()
        return weights, {"optimizer_g": self.g_opt.state_dict(), "optimizer_d": self.d_opt.state_dict(),
                         "gan_d_steps": self.d_steps}

    def load(self, extras: dict[str, Any], train_state: dict[str, Any]) -> None:
        """Restore from a checkpoint's extra weights and training state (``--resume``)."""
        if "discriminator" in extras:
            self.disc.load_state_dict(extras["discriminator"])
        if not self.generator.shared and "generator_raw" in extras:
            self.generator.load_state_dict(extras["generator_raw"])
            self.ema = {k: v.to(self.ema[k].device).float() for k, v in extras["generator"].items()}
        if "optimizer_g" in train_state:
            self.g_opt.load_state_dict(train_state["optimizer_g"])
            self.d_opt.load_state_dict(train_state["optimizer_d"])
        self.d_steps = int(train_state.get("gan_d_steps", 0))
