"""Mel-conditioned 1-D discriminators for the truncated-diffusion GAN (TDPM, :mod:`diffvoc.truncation`).

They judge x_{T_trunc}: real samples from q(x_{T_trunc} | x_0), fake ones from the implicit prior
G(z, mel). The mel enters every sub-discriminator: a 1×1 projection of the log-mel (plus any prior
channel) to ``mel_channels``, repeated to the sub-discriminator's sample rate and concatenated
with the waveform at the input.

* :class:`ScaleDiscriminator` (MelGAN-style multi-scale): strided grouped 1-D convolutions on the
  waveform average-pooled by 1, 2, 4, ...
* :class:`PeriodDiscriminator` (HiFi-GAN-style multi-period): the waveform folded into
  ``[T/p, p]`` and 2-D convolutions with kernels ``(k, 1)``.

Each returns a list of logit maps; the losses average over their positions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LEAK = 0.2


def _mel_features(proj: nn.Conv1d, mel: torch.Tensor, length: int) -> torch.Tensor:
    """``[B, n_mels, F]`` → ``[B, mel_channels, length]`` (nearest repeat over time)."""
    return F.interpolate(proj(mel), size=length, mode="nearest")


class ScaleDiscriminator(nn.Module):
    """Strided 1-D convolutions on one time scale (channels grow 1×, 2×, 4×, 4×; stride 4 twice)."""

    def __init__(self, n_cond: int, channels: int = 16, mel_channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.mel_proj = nn.Conv1d(n_cond, mel_channels, 1)
        self.convs = nn.ModuleList([
            nn.Conv1d(1 + mel_channels, c, 15, padding=7),
            nn.Conv1d(c, 2 * c, 41, stride=4, padding=20, groups=min(4, c)),
            nn.Conv1d(2 * c, 4 * c, 41, stride=4, padding=20, groups=min(16, 2 * c)),
            nn.Conv1d(4 * c, 4 * c, 5, padding=2),
        ])
        self.out = nn.Conv1d(4 * c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x.unsqueeze(1), _mel_features(self.mel_proj, mel, x.shape[-1])], dim=1)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LEAK)
        return self.out(h)


class PeriodDiscriminator(nn.Module):
    """The waveform (with its mel features) folded by ``period`` and judged by 2-D convolutions."""

    def __init__(self, period: int, n_cond: int, channels: int = 16, mel_channels: int = 16) -> None:
        super().__init__()
        self.period = period
        c = channels
        self.mel_proj = nn.Conv1d(n_cond, mel_channels, 1)
        self.convs = nn.ModuleList([
            nn.Conv2d(1 + mel_channels, c, (5, 1), stride=(3, 1), padding=(2, 0)),
            nn.Conv2d(c, 2 * c, (5, 1), stride=(3, 1), padding=(2, 0)),
            nn.Conv2d(2 * c, 4 * c, (5, 1), stride=(3, 1), padding=(2, 0)),
            nn.Conv2d(4 * c, 4 * c, (5, 1), padding=(2, 0)),
        ])
        self.out = nn.Conv2d(4 * c, 1, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x.unsqueeze(1), _mel_features(self.mel_proj, mel, x.shape[-1])], dim=1)
        pad = -h.shape[-1] % self.period
        if pad:
            h = F.pad(h, (0, pad), mode="reflect" if pad < h.shape[-1] else "constant")
        B, C, T = h.shape
        h = h.view(B, C, T // self.period, self.period)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LEAK)
        return self.out(h)


class MelDiscriminator(nn.Module):
    """Multi-scale and/or multi-period mel-conditioned discriminator: ``D(x, mel)`` → list of logits.

    Args:
        n_cond: conditioning channels per frame (mel bands + any prior channel).
        channels: width of the first layer of every sub-discriminator.
        scales: number of multi-scale sub-discriminators (the k-th sees x average-pooled by 2^k).
        periods: periods of the multi-period sub-discriminators.
    """

    def __init__(self, n_cond: int, channels: int = 16, scales: int = 3, periods: list[int] | None = None) -> None:
        super().__init__()
        self.scales = nn.ModuleList(ScaleDiscriminator(n_cond, channels) for _ in range(scales))
        self.periods = nn.ModuleList(PeriodDiscriminator(p, n_cond, channels) for p in (periods or []))

    def forward(self, x: torch.Tensor, mel: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``[B, T]``, ``mel`` ``[B, n_cond, frames]``."""
        out = []
        h = x
        for i, d in enumerate(self.scales):
            if i:
                h = F.avg_pool1d(h.unsqueeze(1), 4, stride=2, padding=1).squeeze(1)
            out.append(d(h, mel))
        out += [d(x, mel) for d in self.periods]
        return out
