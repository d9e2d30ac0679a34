"""The DiffWave denoiser ε_θ(x_t, t, c) (Kong et al., 2021).

Parameter names follow lmnt-com/diffwave so that its ``weights.pt`` loads without renaming.
The conditioner (the mel upsampled to the sample rate, or the label embedding) does not depend
on the diffusion step: :meth:`DiffWave.condition` computes it once per utterance and
:meth:`DiffWave.denoise` reuses it at every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffvoc.config import ModelConfig

EMBED_DIM = 128  # 64 sin + 64 cos
HIDDEN_DIM = 512
LABEL_DIM = 128


def _conv1x1(cin: int, cout: int) -> nn.Conv1d:
    conv = nn.Conv1d(cin, cout, 1)
    nn.init.kaiming_normal_(conv.weight)
    return conv


def upsample_factors(hop: int) -> list[int]:
    """Split the hop into two transposed-convolution strides, as balanced as possible (256 → 16·16)."""
    best = [hop]
    for a in range(2, int(math.isqrt(hop)) + 1):
        if hop % a == 0:
            best = [a, hop // a]
    return best


class StepEmbedding(nn.Module):
    """Sinusoidal diffusion-step embedding with a 2-layer SiLU MLP.

    Row t holds sin/cos of t·10^(4j/63), j = 0..63. A fractional t (fast sampling) interpolates
    linearly between the neighbouring integer rows.
    """

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        t = torch.arange(max_steps, dtype=torch.float32).unsqueeze(1)
        j = torch.arange(EMBED_DIM // 2, dtype=torch.float32).unsqueeze(0)
        table = t * 10.0 ** (j * 4.0 / 63.0)
        self.register_buffer("embedding", torch.cat([torch.sin(table), torch.cos(table)], dim=1), persistent=False)
        self.projection1 = nn.Linear(EMBED_DIM, HIDDEN_DIM)
        self.projection2 = nn.Linear(HIDDEN_DIM, HIDDEN_DIM)

    def table(self, t: torch.Tensor) -> torch.Tensor:
        if not t.is_floating_point():
            return self.embedding[t]
        lo = torch.floor(t).long().clamp(0, self.embedding.shape[0] - 1)
        hi = torch.ceil(t).long().clamp(0, self.embedding.shape[0] - 1)
        w = (t - lo.to(t.dtype)).unsqueeze(-1)
        return self.embedding[lo] + (self.embedding[hi] - self.embedding[lo]) * w

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.projection1(self.table(t)))
        return F.silu(self.projection2(x))


class MelUpsampler(nn.Module):
    """Mel frames → sample rate with 2-D transposed convolutions (kernel [3, 2s], stride [1, s]),
    each followed by leaky ReLU 0.4; any hop works (the strides multiply to the hop)."""

    def __init__(self, factors: list[int]) -> None:
        super().__init__()
        self.factors = list(factors)
        convs = []
        for s in self.factors:
            pad = (s + 1) // 2
            convs.append(nn.ConvTranspose2d(1, 1, [3, 2 * s], stride=[1, s], padding=[1, pad],
                                            output_padding=[0, 2 * pad - s]))
        # lmnt-com/diffwave names the two stages conv1 and conv2
        for i, conv in enumerate(convs):
            self.add_module(f"conv{i + 1}", conv)
        self.n = len(convs)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.unsqueeze(1)
        for i in range(self.n):
            x = F.leaky_relu(getattr(self, f"conv{i + 1}")(x), 0.4)
        return x.squeeze(1)


class ResidualBlock(nn.Module):
    """One gated residual layer: y = dilated_conv(x + W·emb) + cond; gate; 1×1 → residual, skip."""

    def __init__(self, channels: int, dilation: int, cond_channels: int | None) -> None:
        super().__init__()
        self.dilated_conv = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        nn.init.kaiming_normal_(self.dilated_conv.weight)
        self.diffusion_projection = nn.Linear(HIDDEN_DIM, channels)
        self.conditioner_projection = _conv1x1(cond_channels, 2 * channels) if cond_channels else None
        self.output_projection = _conv1x1(channels, 2 * channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.dilated_conv(x + self.diffusion_projection(emb).unsqueeze(-1))
        if self.conditioner_projection is not None and cond is not None:
            y = y + self.conditioner_projection(cond)
        a, b = torch.chunk(y, 2, dim=1)
        y = self.output_projection(torch.sigmoid(a) * torch.tanh(b))
        residual, skip = torch.chunk(y, 2, dim=1)
        return (x + residual) * (1 / math.sqrt(2.0)), skip


class DiffWave(nn.Module):
    """The DiffWave network.

    Args:
        cfg: network sizes and the kind of conditioning (``mel``, ``class`` or ``none``).
        max_steps: number of training diffusion steps T (rows of the step embedding).
        n_mels: mel bands (``mel`` conditioning).
        hop: samples per mel frame (``mel`` conditioning).
        extra_cond_channels: extra frame-rate channels appended to the mel (PriorGrad's σ).
    """

    def __init__(self, cfg: ModelConfig, max_steps: int, n_mels: int = 80, hop: int = 256,
                 extra_cond_channels: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.conditioning = cfg.conditioning
        self.hop = hop
        self.cond_channels = n_mels + extra_cond_channels
        C, L = cfg.residual_channels, cfg.residual_layers
        self.input_projection = _conv1x1(1, C)
        self.diffusion_embedding = StepEmbedding(max_steps)
        block_cond = None
        if cfg.conditioning == "mel":
            self.spectrogram_upsampler = MelUpsampler(cfg.upsample_factors or upsample_factors(hop))
            block_cond = self.cond_channels
        elif cfg.conditioning == "class":
            self.label_embedding = nn.Embedding(cfg.n_classes, LABEL_DIM)
            block_cond = LABEL_DIM
        self.residual_layers = nn.ModuleList(
            ResidualBlock(C, 2 ** (i % cfg.dilation_cycle), block_cond) for i in range(L))
        self.skip_projection = _conv1x1(C, C)
        self.output_projection = _conv1x1(C, 1)
        nn.init.zeros_(self.output_projection.weight)

    def receptive_field(self) -> int:
        """Samples of context one network call sees on each side of a sample."""
        return sum(2 ** (i % self.cfg.dilation_cycle) for i in range(self.cfg.residual_layers))

    def condition(self, mel: torch.Tensor | None = None, label: torch.Tensor | None = None) -> torch.Tensor | None:
        """The step-independent conditioner: upsampled mel ``[B, n_mels, frames·hop]``, label
        embedding ``[B, 128, 1]`` or ``None`` (unconditional)."""
        if self.conditioning == "mel":
            if mel is None:
                raise ValueError("this model is mel-conditioned: pass a mel")
            return self.spectrogram_upsampler(mel)
        if self.conditioning == "class":
            if label is None:
                raise ValueError("this model is class-conditional: pass a label")
            return self.label_embedding(label).unsqueeze(-1)
        return None

    def denoise(self, audio: torch.Tensor, diffusion_step: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """ε_θ(x_t, t, c) with a precomputed conditioner; ``audio`` [B, T] → [B, 1, T]."""
        x = F.relu(self.input_projection(audio.unsqueeze(1)))
        if diffusion_step.dim() == 0:
            diffusion_step = diffusion_step.expand(audio.shape[0])
        emb = self.diffusion_embedding(diffusion_step)
        if cond is not None and cond.shape[-1] not in (1, x.shape[-1]):
            raise ValueError(f"conditioner has {cond.shape[-1]} samples, audio has {x.shape[-1]}")
        skip = None
        for layer in self.residual_layers:
            x, s = layer(x, emb, cond)
            skip = s if skip is None else skip + s
        x = skip * (1 / math.sqrt(len(self.residual_layers)))
        x = F.relu(self.skip_projection(x))
        return self.output_projection(x)

    def forward(self, audio: torch.Tensor, diffusion_step: torch.Tensor, mel: torch.Tensor | None = None,
                label: torch.Tensor | None = None) -> torch.Tensor:
        """ε_θ(x_t, t, c): ``audio`` [B, T], ``diffusion_step`` [B] (int or fractional),
        ``mel`` [B, n_mels, frames] → [B, 1, T] (lmnt-com/diffwave's signature)."""
        return self.denoise(audio, diffusion_step, self.condition(mel, label))
