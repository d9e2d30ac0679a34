"""InferGrad (Chen et al., ICASSP 2022): the infer loss and its training schedules.

During training, x̂_0 is generated from the prior's noise by the K-step reverse process of a
few-step schedule η_1..η_K — the very :class:`~diffvoc.diffusion.sampler.DiffusionSampler` used for
inference, run with gradients (and per-step gradient checkpointing) — and

    L = L_diffusion + λ · L_infer(x̂_0, x_0)                                          (λ = infer.weight)
    L_infer = w_mag · (SC + logmag)_MR-STFT + w_phase · L_phase                      (w_* = infer.*_weight)

**Magnitude part.** The multi-resolution STFT loss of Parallel WaveGAN's MR-STFT, Yamamoto et al., ICASSP 2020 (FFT 1024/2048/512, hop
120/240/50, window 600/1200/240; spectral convergence + mean |log|Y| − log|X||, averaged over the
resolutions), :class:`diffvoc.diffusion.spectral.MultiResolutionSTFTLoss`.

**Phase part (our choice; InferGrad does not publish its phase loss).** The anti-wrapping phase
loss of APNet (Ai & Ling, "APNet: an all-frame-level neural vocoder incorporating direct
prediction of amplitude and phase spectra", IEEE/ACM TASLP 2023). With the phase spectra φ̂ = ∠X̂,
φ = ∠X of one STFT and the anti-wrapping function f_AW(x) = |x − 2π·round(x / 2π)| (the distance
of x to the nearest multiple of 2π, so a phase error of 2π costs nothing):

    L_IP  = E[f_AW(φ̂ − φ)]                        instantaneous phase
    L_GD  = E[f_AW(Δ_f φ̂ − Δ_f φ)]                group delay (difference along frequency)
    L_IAF = E[f_AW(Δ_t φ̂ − Δ_t φ)]                instantaneous angular frequency (along time)
    L_phase = L_IP + L_GD + L_IAF

Why this one: it is defined directly on wrapped phase, so it needs no phase unwrapping, and its
GD/IAF terms measure phase *coherence* across frequency and time, which is what few-step samplers
get wrong (a group-delay-only or IF-only loss is a subset of it). Two departures from APNet, both
because our phase comes from a waveform rather than from a phase-predicting network:

* the expectation is weighted by the target's magnitude (``phase_weighting: magnitude``,
  w = |X| / mean|X| per utterance; a pair of bins uses the smaller weight), because the phase of a
  near-silent bin is noise and would otherwise dominate the loss (``none``: APNet's plain mean);
* the gradient of ∠X̂ is −Im/(|X̂|² + ε), Re/(|X̂|² + ε) with ε = 1e-7 (the MR-STFT magnitude floor)
  instead of 1/|X̂|², so bins where the generated spectrum is near zero cannot explode.

General mode (one model for 2, 3 and 6 steps): every training step draws K uniformly from
``infer.general_steps`` and then η_n log-uniformly from ``infer.general_ranges[K][n]``
(one ``[low, high]`` per reverse step, noisiest last), from a generator seeded by (seed, step),
so that resuming is exact and all DDP ranks draw the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffvoc.config import Config, InferConfig
from diffvoc.diffusion.noise import GeneratorNoise
from diffvoc.diffusion.prior import Prior
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.diffusion.spectral import MR_STFT_MAG_EPS, MultiResolutionSTFTLoss

__all__ = ["InferLoss", "InferLossTerms", "anti_wrapping", "anti_wrapping_phase_loss", "draw_general_schedule",
           "infer_noise_generator", "infer_schedule", "unrolled_sample"]


@dataclass
class InferLossTerms:
    """The infer loss and its parts (scalars; ``total`` carries the gradient)."""

    total: torch.Tensor
    spectral_convergence: torch.Tensor
    log_magnitude: torch.Tensor
    phase: torch.Tensor

    def scalars(self) -> dict[str, float]:
        """Plain floats for logging."""
        return {"infer_loss": float(self.total.detach()), "infer_sc": float(self.spectral_convergence.detach()),
                "infer_log_mag": float(self.log_magnitude.detach()), "infer_phase": float(self.phase.detach())}


def anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    """APNet's f_AW(x) = |x − 2π·round(x / 2π)|: distance of x to the nearest multiple of 2π, in [0, π]."""
    two_pi = 2 * math.pi
    return (x - two_pi * torch.round(x / two_pi)).abs()


class _SafeAngle(torch.autograd.Function):
    """atan2(im, re) whose gradient uses |z|² + ε instead of |z|² (finite at z = 0)."""

    @staticmethod
    def forward(ctx, re: torch.Tensor, im: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(re, im)
        ctx.eps = eps
        return torch.atan2(im, re)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        re, im = ctx.saved_tensors
        d = re * re + im * im + ctx.eps
        return -grad * im / d, grad * re / d, None


def _weighted_mean(loss: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if w is None:
        return loss.mean()
    return (loss * w).sum() / w.sum().clamp(min=1e-12)


def anti_wrapping_phase_loss(pred: torch.Tensor, target: torch.Tensor, n_fft: int = 1024, hop: int = 256,
                             win: int = 1024, weighting: str = "magnitude", eps: float = MR_STFT_MAG_EPS) -> torch.Tensor:
    """L_IP + L_GD + L_IAF of APNet on one STFT (see the module docstring); waveforms ``[B, T]``."""
    window = torch.hann_window(win, dtype=pred.dtype, device=pred.device)

    def spec(x: torch.Tensor) -> torch.Tensor:  # [B, F, N] complex
        return torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=window, center=True,
                          pad_mode="reflect", return_complex=True)

    xp, xt = spec(pred), spec(target)
    phi_hat = _SafeAngle.apply(xp.real, xp.imag, eps)  # φ̂ = ∠X̂
    phi = torch.atan2(xt.imag, xt.real).detach()  # φ = ∠X (the target needs no gradient)
    w = None
    if weighting == "magnitude":
        mag = xt.abs().detach()
        w = mag / mag.mean(dim=(-2, -1), keepdim=True).clamp(min=1e-8)  # w = |X| / mean|X| per utterance
    elif weighting != "none":
        raise ValueError(f"phase weighting must be magnitude or none, got {weighting!r}")
    ip = _weighted_mean(anti_wrapping(phi_hat - phi), w)  # L_IP
    d_f = lambda p: p[..., 1:, :] - p[..., :-1, :]  # noqa: E731  Δ_f: along frequency (group delay)
    d_t = lambda p: p[..., :, 1:] - p[..., :, :-1]  # noqa: E731  Δ_t: along time (inst. frequency)
    gd = _weighted_mean(anti_wrapping(d_f(phi_hat) - d_f(phi)),
                        None if w is None else torch.minimum(w[..., 1:, :], w[..., :-1, :]))  # L_GD
    iaf = _weighted_mean(anti_wrapping(d_t(phi_hat) - d_t(phi)),
                         None if w is None else torch.minimum(w[..., :, 1:], w[..., :, :-1]))  # L_IAF
    return ip + gd + iaf


class InferLoss(torch.nn.Module):
    """L_infer(x̂_0, x_0) = w_mag · MR-STFT + w_phase · anti-wrapping phase loss (configured by
    :class:`~diffvoc.config.InferConfig`); call it as ``loss(x0_hat, x0)`` with waveforms ``[B, T]``."""

    def __init__(self, cfg: InferConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mr_stft = MultiResolutionSTFTLoss()

    def forward(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> InferLossTerms:  # type: ignore[override]
        """The infer loss of generated ``x0_hat`` against the real ``x0`` (both ``[B, T]``, float32)."""
        c = self.cfg
        x0_hat, x0 = x0_hat.float(), x0.float()
        sc, log_mag = self.mr_stft(x0_hat, x0)
        total = c.magnitude_weight * (sc + log_mag)
        phase = x0_hat.new_zeros(())
        if c.phase != "none":
            phase = anti_wrapping_phase_loss(x0_hat, x0, c.phase_fft, c.phase_hop, c.phase_win, c.phase_weighting)
            total = total + c.phase_weight * phase
        return InferLossTerms(total, sc, log_mag, phase)


def draw_general_schedule(cfg: InferConfig, seed: int, step: int) -> list[float]:
    """General mode: K uniform over ``general_steps``, then η_n log-uniform in ``general_ranges[K][n]``.

    A pure function of (seed, step): resuming reproduces it and every DDP rank draws the same one.
    """
    rng = np.random.default_rng([int(seed), int(step), 0x1F6])
    k = int(cfg.general_steps[int(rng.integers(len(cfg.general_steps)))])
    betas = []
    for lo, hi in cfg.general_ranges[k]:
        betas.append(float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo))
    return betas


def infer_schedule(cfg: Config, step: int) -> list[float]:
    """The few-step schedule η_1..η_K the infer loss uses at training step ``step``."""
    ic = cfg.infer
    if ic.mode == "general":
        return draw_general_schedule(ic, cfg.train.seed, step)
    if ic.schedule is not None:
        return list(ic.schedule)
    return list(cfg.diffusion.fast_schedules[ic.steps])


def infer_noise_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of the infer part's noise at a training step (independent of the diffusion noise)."""
    key = int(np.random.SeedSequence([int(seed), int(step), int(rank), 0x1F6]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(key & ((1 << 63) - 1))


def unrolled_sample(model: torch.nn.Module, prior: Prior, train_schedule: NoiseSchedule, betas: list[float],
                    mel: torch.Tensor, length: int, generator: torch.Generator, checkpoint: bool = True,
                    clamp: str = "ste", implicit: torch.nn.Module | None = None) -> torch.Tensor:
    """x̂_0 from the prior by the K-step reverse process over ``betas``, with gradients.

    x_K = σ ⊙ z with σ = prior.std(mel, length) (PriorGrad's σ or 1), then DiffWave's fast update
    (the :class:`~diffvoc.diffusion.sampler.DiffusionSampler` of inference) at the aligned steps; ``model`` is a
    :class:`~diffvoc.models.diffwave.DiffWave`. Returns ``[B, length]``. With ``implicit`` (a truncated
    model's :class:`~diffvoc.diffusion.truncation.ImplicitPrior`) the chain starts from x_{T_trunc} = G(z, mel),
    with gradients into G too.
    """
    sampler = DiffusionSampler.fast(train_schedule, betas, clamp=True)
    std = prior.std(mel, length)
    cond = model.condition(prior.conditioner(mel))  # computed once, shared by the K steps

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.denoise(x, t, cond)

    generate = implicit.start_fn(model, cond, prior.conditioner(mel), std) if implicit is not None else None
    return sampler.sample(denoise, std, mel.shape[0], length, GeneratorNoise(generator), device=mel.device,
                          checkpoint=checkpoint, clamp=clamp, generate=generate)
