"""Priors N(0, Σ) for the diffusion: the standard Gaussian (DiffWave) and PriorGrad's adaptive prior.

PriorGrad (Lee et al., ICLR 2022): per mel frame i, the energy
E_i = √(Σ_f exp(logmel_{f,i})) gives σ_i = max((min(E_i, E_max) − E_min)/(E_max − E_min), σ_min),
with E_min the training-set minimum and E_max the training-set maximum overridden to 4.0.
σ is upsampled to samples (each frame repeated hop times, or linearly interpolated). Training
noise is σ ⊙ ε, the loss is Mahalanobis (see :mod:`diffvoc.diffusion.loss`), sampling starts from σ ⊙ z and
every injected noise is σ ⊙ z. E_min/E_max are saved with the checkpoint and used unchanged at
inference, so a mel from a TTS model gets the same σ as the training data did.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from diffvoc.audio import frame_energy
from diffvoc.config import AudioConfig, PriorConfig
from diffvoc.errors import ConfigError


class Prior:
    """A zero-mean Gaussian prior with diagonal covariance σ² per sample."""

    extra_channels = 0  # frame-rate channels the prior adds to the network's conditioner

    def std(self, mel: torch.Tensor | None, num_samples: int, batch: int = 1,
            device: torch.device | None = None) -> torch.Tensor:
        """σ as ``[B, num_samples]`` (or broadcastable ``[B, 1]``)."""
        raise NotImplementedError

    def conditioner(self, mel: torch.Tensor) -> torch.Tensor:
        """The mel the network is conditioned on (PriorGrad may append σ per frame)."""
        return mel

    def stats(self) -> dict[str, Any]:
        """Data statistics that must travel with the checkpoint."""
        return {}


class StandardPrior(Prior):
    """N(0, I): DiffWave's prior."""

    def std(self, mel, num_samples, batch=1, device=None):
        if mel is not None:
            batch, device = mel.shape[0], mel.device
        return torch.ones(batch, 1, device=device)


class AdaptivePrior(Prior):
    """PriorGrad's data-dependent prior: σ follows the mel's normalised frame energy."""

    def __init__(self, cfg: PriorConfig, audio: AudioConfig, energy_min: float, energy_max: float) -> None:
        e_max = cfg.energy_max if cfg.energy_max is not None else energy_max
        if not e_max > energy_min:
            raise ConfigError(f"PriorGrad needs E_max > E_min, got E_min={energy_min:.4g} E_max={e_max:.4g}")
        self.cfg, self.audio = cfg, audio
        self.energy_min, self.energy_max_data, self.energy_max = float(energy_min), float(energy_max), float(e_max)
        self.extra_channels = 1 if cfg.condition_on_prior else 0

    def frame_std(self, mel: torch.Tensor) -> torch.Tensor:
        """σ per frame ``[B, frames]`` for mels ``[B, n_mels, frames]``."""
        e = frame_energy(mel.float(), self.audio).clamp(max=self.energy_max)
        sigma = (e - self.energy_min) / (self.energy_max - self.energy_min)
        return sigma.clamp(min=self.cfg.sigma_min)

    def std(self, mel, num_samples, batch=1, device=None):
        if mel is None:
            raise ValueError("the PriorGrad prior needs a mel")
        s = self.frame_std(mel)
        hop = self.audio.hop_length
        if self.cfg.upsample == "repeat":
            up = s.repeat_interleave(hop, dim=-1)
        else:  # linear interpolation between frame centres
            up = F.interpolate(s.unsqueeze(1), scale_factor=hop, mode="linear", align_corners=False).squeeze(1)
        if up.shape[-1] < num_samples:
            up = F.pad(up, (0, num_samples - up.shape[-1]), mode="replicate")
        return up[..., :num_samples]

    def conditioner(self, mel: torch.Tensor) -> torch.Tensor:
        if not self.cfg.condition_on_prior:
            return mel
        return torch.cat([mel, self.frame_std(mel).unsqueeze(1).to(mel.dtype)], dim=1)

    def stats(self) -> dict[str, Any]:
        return {"energy_min": self.energy_min, "energy_max": self.energy_max_data}


def build_prior(cfg: PriorConfig, audio: AudioConfig, stats: dict[str, Any] | None) -> Prior:
    """The prior a config names, with the data statistics it needs."""
    if cfg.kind == "standard":
        return StandardPrior()
    if not stats or "energy_min" not in stats or "energy_max" not in stats:
        raise ConfigError("the PriorGrad prior needs energy statistics (energy_min/energy_max); "
                          "run `diffvoc preprocess` on the training data")
    return AdaptivePrior(cfg, audio, stats["energy_min"], stats["energy_max"])
