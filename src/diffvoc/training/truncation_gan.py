"""The adversarial half of truncated-diffusion training (TDPM, Zheng et al. 2023, §3.2 and Alg. 1).

:class:`TruncatedGAN` holds the implicit prior G (:class:`~diffvoc.diffusion.truncation.ImplicitPrior`,
built once by :func:`diffvoc.build.build_implicit_prior`), the discriminator D, their optimisers and
G's EMA, and runs one D phase and one G phase per call of :meth:`TruncatedGAN.step` with the losses of
:mod:`diffvoc.diffusion.truncation`. Optimisers: generator Adam (lr 2e-5) and discriminator Adam
(2.5e-3), betas (0, 0.99) for both, beside the trainer's diffusion Adam (2e-4). With the shared
generator the generator optimiser updates the denoiser's own weights (its own Adam state).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from diffvoc.config import Config
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.diffusion.truncation import ImplicitPrior, d_loss, g_loss, r1_penalty
from diffvoc.models.diffwave import DiffWave
from diffvoc.models.discriminator import MelDiscriminator
from diffvoc.training.ema import EMA
from diffvoc.training.optim import load_optimizer_state


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
        self.ema = EMA(self.generator)

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

    def update_ema(self, decay: float) -> None:
        """The generator's EMA, with the denoiser's decay (:mod:`diffvoc.training.ema`)."""
        self.ema.update(decay)

    def ema_weights(self) -> contextlib.AbstractContextManager[None]:
        """Sample with the generator's EMA weights (its train/eval mode left as it is)."""
        return self.ema.swapped(eval_mode=False)

    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """(weights to save as safetensors files, train-state entries)."""
        weights = {"discriminator": self.disc.state_dict()}
        if not self.generator.shared:
            weights["generator"] = self.ema.shadow
            weights["generator_raw"] = self.generator.state_dict()
        return weights, {"optimizer_g": self.g_opt.state_dict(), "optimizer_d": self.d_opt.state_dict(),
                         "gan_d_steps": self.d_steps}

    def load(self, extras: dict[str, Any], train_state: dict[str, Any]) -> None:
        """Restore from a checkpoint's extra weights and training state (``--resume``)."""
        if "discriminator" in extras:
            self.disc.load_state_dict(extras["discriminator"])
        if not self.generator.shared and "generator_raw" in extras:
            self.generator.load_state_dict(extras["generator_raw"])
            self.ema.load(extras["generator"])
        if "optimizer_g" in train_state:
            load_optimizer_state(self.g_opt, train_state["optimizer_g"])
            load_optimizer_state(self.d_opt, train_state["optimizer_d"])
        self.d_steps = int(train_state.get("gan_d_steps", 0))
