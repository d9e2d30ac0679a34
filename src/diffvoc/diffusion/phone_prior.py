"""The phone-level prior of the PriorGrad acoustic model (Lee et al., ICLR 2022, §3 and §5).

For every phone token p, μ_p and σ_p are the per-mel-bin mean and standard deviation of all
training-split frames aligned to p (80-d, diagonal Σ). σ = 0 becomes 1, then σ ≥ σ_min (0.1);
tokens never seen in training and padding get μ = 0, σ = 1. Expanded to frames by the durations,
the prior is N(μ, Σ) per frame, and the diffusion runs on the residual x_0 − μ:

    x_t = √ᾱ_t (x_0 − μ) + √(1 − ᾱ_t) σ ⊙ ε                 (PriorGrad eq. 5 with mean μ)
    L   = mean(((ε_θ(x_t, t, c) − σ ⊙ ε) / σ)²)                (eq. 6: ‖ε − ε_θ‖² under Σ⁻¹)

sampling starts from x_T = σ ⊙ z, every injected noise is σ ⊙ z, and μ is added back at the end.
The ``standard`` prior is μ = 0, σ = 1 (plain MSE). The statistics travel with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffvoc.diffusion.noise import NoiseSource
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.schedule import NoiseSchedule


class PhoneStatistics:
    """Running sums of frames per token, turned into μ and σ by :meth:`finish`."""

    def __init__(self, n_tokens: int, n_mels: int) -> None:
        self.count = torch.zeros(n_tokens, dtype=torch.float64)
        self.sum = torch.zeros(n_tokens, n_mels, dtype=torch.float64)
        self.sumsq = torch.zeros(n_tokens, n_mels, dtype=torch.float64)

    def add(self, mel: torch.Tensor, frame_tokens: torch.Tensor) -> None:
        """Frames ``mel`` ``[n_mels, T]`` aligned to token ids ``frame_tokens`` ``[T]``."""
        x = mel.detach().double().t()  # [T, n_mels]
        idx = frame_tokens.long().cpu()
        self.count.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
        self.sum.index_add_(0, idx, x.cpu())
        self.sumsq.index_add_(0, idx, x.cpu().pow(2))

    def finish(self, sigma_min: float, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) ``[n_tokens, n_mels]`` float32: population std; σ = 0 → 1, then floored at σ_min;
        tokens without frames and ``pad_id`` get μ = 0, σ = 1."""
        n = self.count.clamp(min=1).unsqueeze(1)
        mean = self.sum / n
        var = (self.sumsq / n - mean.pow(2)).clamp(min=0)
        std = var.sqrt()
        std = torch.where(std == 0, torch.ones_like(std), std).clamp(min=sigma_min)
        unseen = self.count == 0
        unseen[pad_id] = True
        mean[unseen] = 0.0
        std[unseen] = 1.0
        return mean.float(), std.float()


class PhonePrior:
    """N(μ, Σ) per frame from per-token statistics (``mean``/``std`` ``[n_tokens, n_mels]``)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != std.shape or mean.dim() != 2:
            raise ValueError(f"phone prior statistics must be two equal [tokens, n_mels] tables, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        self.mean, self.std = mean.float(), std.float()

    @classmethod
    def standard(cls, n_tokens: int, n_mels: int) -> "PhonePrior":
        """μ = 0, σ = 1 for every token (DiffWave's N(0, I))."""
        return cls(torch.zeros(n_tokens, n_mels), torch.ones(n_tokens, n_mels))

    def to(self, device: torch.device | str) -> "PhonePrior":
        return PhonePrior(self.mean.to(device), self.std.to(device))

    def frames(self, frame_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) as ``[B, n_mels, T]`` for token ids per frame ``[B, T]`` (padding: id 0)."""
        return (self.mean[frame_tokens].transpose(1, 2).contiguous(),
                self.std[frame_tokens].transpose(1, 2).contiguous())


def q_sample_residual(schedule: NoiseSchedule, x0: torch.Tensor, mu: torch.Tensor, std: torch.Tensor,
                      t: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = √ᾱ_t (x_0 − μ) + √(1 − ᾱ_t) σ ⊙ ε for mels ``[B, n_mels, T]``; returns (x_t, σ ⊙ ε)."""
    noise = std * eps
    B = x0.shape[0]
    xt = schedule.q_sample((x0 - mu).reshape(B, -1), noise.reshape(B, -1), t).reshape(x0.shape)
    return xt, noise


def mahalanobis_loss(eps_pred: torch.Tensor, noise: torch.Tensor, std: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean(((ε_θ − σ ⊙ ε)/σ)²) over the real frames (``mask`` ``[B, 1, T]``, 1 = real)."""
    d = ((eps_pred.float() - noise.float()) / std.float()).pow(2)
    if mask is None:
        return d.mean()
    m = mask.float().expand_as(d)
    return (d * m).sum() / m.sum().clamp(min=1)


def sample_mel(sampler: DiffusionSampler, denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               mu: torch.Tensor, std: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    """Reverse process over mel frames: x_T = σ ⊙ z, every injected noise σ ⊙ z, then x_0 + μ.

    ``denoise(x [B, n_mels, T], t [B]) → ε [B, n_mels, T]``; ``mu``/``std`` ``[B, n_mels, T]``. The frames
    are flattened to the sampler's ``[B, n_mels·T]`` (the sampler does not clamp: ``clamp=False``).
    """
    B, M, T = mu.shape

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return denoise(x.view(B, M, T), t).reshape(B, 1, M * T)

    x = sampler.sample(eps, std.reshape(B, M * T), B, M * T, noise, device=mu.device)
    return x.view(B, M, T) + mu
