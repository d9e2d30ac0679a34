"""Mel-conditioned 1-D discriminators for the truncated-diffusion GAN (TDPM, :mod:`diffvoc.diffusion.truncation`).

They judge x_{T_trunc}: real samples from q(x_{T_trunc} | x_0), fake ones from the implicit prior
G(z, mel). The mel enters every sub-discriminator: a 1×1 projection of the log-mel (plus any prior
channel) to ``mel_channels``, repeated to the sub-discriminator's sample rate and concatenated
with the waveform at the input.

* :class:`ScaleDiscriminator` (MelGAN-style multi-scale): strided grouped 1-D convolutions on the
  waveform average-pooled by 1, 2, 4, ...
* :class:`PeriodDiscriminator` (HiFi-GAN-style multi-period): the waveform folded into
  ``[T/p, p]`` and 2-D convolutions with kernels ``(k, 1)``.
* :class:`SpectralDiscriminator` (multi-resolution, as UnivNet/Vocos): 1-D convolutions over the
  frames of the log-magnitude STFT (bins as channels). Near the truncation point speech lies 10–20 dB
  below the diffusion noise in the waveform, but its harmonics stand above the noise floor in the
  spectrum, next to the mel that predicts them: in the CPU tests here the waveform-only
  discriminators stayed at chance for hundreds of steps, the spectral one did not.

Each returns a list of logit maps; the losses average over their positions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LEAK = 0.2
SPEC_FLOOR = 1e-2  # power floor of the spectral discriminator's log-magnitude


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


class SpectralDiscriminator(nn.Module):
    """Log-magnitude STFT of one resolution, frames judged by 1-D convolutions with the mel beside them."""

    def __init__(self, n_fft: int, hop: int, win: int, n_cond: int, channels: int = 16, mel_channels: int = 16) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        c = 2 * channels
        self.mel_proj = nn.Conv1d(n_cond, mel_channels, 1)
        self.spec_proj = nn.Conv1d(n_fft // 2 + 1, c, 1)
        self.convs = nn.ModuleList([
            nn.Conv1d(c + mel_channels, c, 3, padding=1),
            nn.Conv1d(c, c, 3, padding=2, dilation=2),
            nn.Conv1d(c, c, 3, padding=4, dilation=4),
        ])
        self.out = nn.Conv1d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.float(), self.n_fft, self.hop, self.win, self.window, center=True, return_complex=True)
        # log-magnitude with a floor: ∂/∂|X| stays ≤ 1/(2√floor), so R1 is not dominated by near-silent bins
        logmag = torch.log(spec.real.pow(2) + spec.imag.pow(2) + SPEC_FLOOR) * 0.5
        h = torch.cat([self.spec_proj(logmag), _mel_features(self.mel_proj, mel, logmag.shape[-1])], dim=1)
        h = F.leaky_relu(h, LEAK)
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
        resolutions: ``[n_fft, hop, win]`` of the spectral sub-discriminators.
    """

    def __init__(self, n_cond: int, channels: int = 16, scales: int = 3, periods: list[int] | None = None,
                 resolutions: list[list[int]] | None = None) -> None:
        super().__init__()
        self.scales = nn.ModuleList(ScaleDiscriminator(n_cond, channels) for _ in range(scales))
        self.periods = nn.ModuleList(PeriodDiscriminator(p, n_cond, channels) for p in (periods or []))
        self.spectral = nn.ModuleList(SpectralDiscriminator(*r, n_cond=n_cond, channels=channels)
                                      for r in (resolutions or []))

    def forward(self, x: torch.Tensor, mel: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``[B, T]``, ``mel`` ``[B, n_cond, frames]``."""
        out = []
        h = x
        for i, d in enumerate(self.scales):
            if i:
                h = F.avg_pool1d(h.unsqueeze(1), 4, stride=2, padding=1).squeeze(1)
            out.append(d(h, mel))
        out += [d(x, mel) for d in self.periods]
        out += [d(x, mel) for d in self.spectral]
        return out
