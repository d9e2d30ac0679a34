"""Validation during training: fixed-step diffusion losses and few-step sampling metrics (EMA weights).

Mel-conditioned models: the diffusion loss of each validation clip at 5 evenly spaced steps with fixed
noise, and the log-mel L1 and MR-STFT (:mod:`diffvoc.diffusion.spectral`) of ``train.valid_steps``-step
sampling (plus the infer loss's own step counts when it is on); audio and mels to TensorBoard.
Class-conditional and unconditional models: the fixed-step losses, and one generated clip per label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from diffvoc.build import build_sampler
from diffvoc.data.dataset import item_labels
from diffvoc.diffusion.noise import PositionalNoise
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.spectral import log_mel_l1
from diffvoc.errors import DiffvocError

if TYPE_CHECKING:
    from diffvoc.training.trainer import Trainer


def valid_sampler(tr: "Trainer") -> DiffusionSampler:
    try:
        return build_sampler(tr.cfg, steps=tr.cfg.train.valid_steps, train=tr.schedule)
    except DiffvocError:
        return build_sampler(tr.cfg, full=True, train=tr.schedule)

def fixed_step_losses(tr: "Trainer", audio: torch.Tensor, std: torch.Tensor, cond: torch.Tensor | None,
                       seed: int) -> list[float]:
    """The diffusion loss of one clip at 5 evenly spaced steps, with fixed noise."""
    g = torch.Generator(device=tr.device).manual_seed(seed)
    out = []
    for t in np.linspace(0, (tr.max_t or tr.cfg.diffusion.steps) - 1, 5).round().astype(int):
        batch = tr.loss_fn.q_sample(audio, std, t=torch.tensor([t], device=tr.device), generator=g)
        out.append(tr.loss_fn(tr.model.denoise(batch.x_t, batch.t, cond), batch).item())
    return out

def validate_mel(tr: "Trainer") -> dict[str, float]:
    losses, l1s, mrs, samples = [], [], [], []
    sampler = valid_sampler(tr)
    extra = infer_valid_samplers(tr)
    extra_vals: dict[str, list[float]] = {}
    for i, (_, audio, mel) in enumerate(tr.valid):
        a = torch.from_numpy(audio).unsqueeze(0).to(tr.device)
        m = torch.from_numpy(mel).unsqueeze(0).to(tr.device)
        std = tr.prior.std(m, a.shape[-1])
        cond = tr.model.condition(tr.prior.conditioner(m))
        losses += fixed_step_losses(tr, a, std, cond, 1234 + i)
        gen = (tr.truncation_gan.generator.start_fn(tr.model, cond, tr.prior.conditioner(m), std)
               if tr.truncation_gan is not None else None)
        x = sampler.sample(lambda x, t: tr.model.denoise(x, t, cond), std, 1, a.shape[-1],
                           PositionalNoise(i), device=tr.device, generate=gen)
        l1s.append(log_mel_l1(tr.mel_fn(x), m).item())
        sc, mag = tr.mr_stft(x.float(), a.float())
        mrs.append((sc + mag).item())
        samples.append(x[0].float().cpu())
        for k, s in extra.items():
            y = s.sample(lambda x, t: tr.model.denoise(x, t, cond), std, 1, a.shape[-1],
                         PositionalNoise(i), device=tr.device, generate=gen)
            sc, mag = tr.mr_stft(y.float(), a.float())
            extra_vals.setdefault(f"log_mel_l1_{k}steps", []).append(log_mel_l1(tr.mel_fn(y), m).item())
            extra_vals.setdefault(f"mr_stft_{k}steps", []).append((sc + mag).item())
    if tr.writer is not None:
        for i, x in enumerate(samples[: tr.cfg.train.audio_log_clips]):
            tr.writer.add_audio(f"valid/audio_{i}", x.clamp(-1, 1).unsqueeze(0), tr.step, tr.cfg.audio.sample_rate)
            tr.writer.add_image(f"valid/mel_{i}", mel_image(tr.mel_fn(x.to(tr.device)).cpu()), tr.step)
            if tr.step == tr.cfg.train.valid_every or tr.step == 0:
                _, ref, mel = tr.valid[i]
                tr.writer.add_audio(f"reference/audio_{i}", torch.from_numpy(ref).unsqueeze(0), 0,
                                      tr.cfg.audio.sample_rate)
                tr.writer.add_image(f"reference/mel_{i}", mel_image(torch.from_numpy(mel)), 0)
    out = {"loss": float(np.mean(losses)), "log_mel_l1": float(np.mean(l1s)), "mr_stft": float(np.mean(mrs))}
    out.update({k: float(np.mean(v)) for k, v in extra_vals.items()})
    return out

def infer_valid_samplers(tr: "Trainer") -> dict[int, DiffusionSampler]:
    """With the infer loss on: the few-step samplers it trains (step-specific: its schedule;
    general: the stored schedule of each K in ``general_steps``), besides ``train.valid_steps``."""
    ic = tr.cfg.infer
    if not ic.enabled:
        return {}
    if ic.mode == "step-specific":
        betas = tr.infer_betas()
        if len(betas) == tr.cfg.train.valid_steps and betas == tr.cfg.diffusion.fast_schedules.get(len(betas)):
            return {}
        return {len(betas): DiffusionSampler.fast(tr.schedule, betas, tr.cfg.diffusion.clamp)}
    return {k: build_sampler(tr.cfg, steps=k, train=tr.schedule) for k in ic.general_steps
            if k in tr.cfg.diffusion.fast_schedules and k != tr.cfg.train.valid_steps}

def validate_generative(tr: "Trainer") -> dict[str, float]:
    """Class-conditional / unconditional models: diffusion loss on held-out clips at fixed steps
    and noise, and one generated clip per validation clip's label to TensorBoard."""
    labels = item_labels(tr.cfg.data.path, [c[0] for c in tr.valid])
    sampler = valid_sampler(tr)
    losses = []
    for i, ((_, audio, _), lab) in enumerate(zip(tr.valid, labels)):
        a = torch.from_numpy(audio).unsqueeze(0).to(tr.device)
        label = torch.tensor([lab], device=tr.device)
        cond = tr.model.condition(label=label) if tr.cfg.model.conditioning == "class" else None
        std = tr.prior.std(None, a.shape[-1], batch=1, device=tr.device)
        losses += fixed_step_losses(tr, a, std, cond, 1234 + i)
        if tr.writer is not None and i < tr.cfg.train.audio_log_clips:
            x = sampler.sample(lambda x, t: tr.model.denoise(x, t, cond), std, 1, a.shape[-1],
                               PositionalNoise(i), device=tr.device)
            tr.writer.add_audio(f"valid/generated_{i}", x[0].float().cpu().unsqueeze(0), tr.step,
                                  tr.cfg.audio.sample_rate)
    return {"loss": float(np.mean(losses))}


def mel_image(mel: torch.Tensor) -> torch.Tensor:
    """A log-mel as a [1, H, W] image in [0, 1], low frequencies at the bottom."""
    m = mel.float()
    m = (m - m.min()) / (m.max() - m.min()).clamp(min=1e-8)
    return m.flip(0).unsqueeze(0)
