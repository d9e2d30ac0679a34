"""The PriorGrad acoustic model: text tokens → mel frames (the official PriorGrad-acoustic code; scaled down for CPUs).

* :class:`TextEncoder` — FastSpeech 2's encoder (Ren et al. 2021, §2.1): token embedding scaled by
  √H plus sinusoidal positions, pre-LayerNorm transformer layers whose feed-forward part is
  Conv1d(H → F, kernel k) · ReLU · Linear(F → H), a final LayerNorm.
* a speaker embedding added to the encoder output (row 0 is the "average" speaker, trained by
  speaker dropout and used for voices the model has not seen).
* :class:`DurationPredictor` — 2 × (Conv1d k3 · ReLU · LayerNorm · dropout) + Linear, predicting
  log(d + 1) from the *detached* encoder output (FastSpeech 2 §2.2; official code).
* an aligner head μ_enc = W·h (Grad-TTS/Glow-TTS): the mean of each token's frames under N(μ_enc, I),
  used only by monotonic alignment search (:mod:`diffvoc.models.alignment`) and its encoder loss.
* :func:`length_regulate` — the frame → token index gather (FastSpeech, Ren et al. 2019).
* :class:`MelDecoder` — DiffWave (Kong et al. 2021) over mel frames: the 80 bins are the channels,
  1×1 in-conv + ReLU, residual layers of kernel 3 and dilation 1 with a per-layer step embedding and a
  per-layer 1×1 projection of the regulated encoder output, skips summed / √L, zero-initialised out-conv.
  It predicts ε of the residual x_t (see :mod:`diffvoc.diffusion.phone_prior`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffvoc.acoustic_config import AcousticModelConfig
from diffvoc.diffusion.noise import NoiseSource
from diffvoc.diffusion.phone_prior import PhonePrior, sample_mel
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.models.alignment import gaussian_log_likelihood, monotonic_alignment
from diffvoc.models.diffwave import ResidualBlock, StepEmbedding, _conv1x1


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Transformer positions ``[length, dim]`` (Vaswani et al. 2017, §3.5)."""
    pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    i = torch.arange(0, dim, 2, dtype=torch.float32, device=device)
    angle = pos / (10000.0 ** (i / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(angle)
    out[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return out


class EncoderLayer(nn.Module):
    """Pre-LayerNorm self-attention + convolutional feed-forward block."""

    def __init__(self, hidden: int, heads: int, ffn_hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden)
        self.conv = nn.Conv1d(hidden, ffn_hidden, kernel, padding=kernel // 2)
        self.linear = nn.Linear(ffn_hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)
        x = x + self.dropout(h)
        h = self.norm2(x).masked_fill(pad.unsqueeze(-1), 0.0)
        h = F.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        x = x + self.dropout(self.linear(self.dropout(h)))
        return x.masked_fill(pad.unsqueeze(-1), 0.0)


class TextEncoder(nn.Module):
    """Token ids ``[B, N]`` → hidden states ``[B, N, H]`` (padding id 0)."""

    def __init__(self, n_tokens: int, cfg: AcousticModelConfig) -> None:
        super().__init__()
        self.hidden = cfg.hidden
        self.embedding = nn.Embedding(n_tokens, cfg.hidden, padding_idx=0)
        nn.init.normal_(self.embedding.weight, 0.0, cfg.hidden ** -0.5)
        self.layers = nn.ModuleList(EncoderLayer(cfg.hidden, cfg.heads, cfg.ffn_hidden, cfg.ffn_kernel, cfg.dropout)
                                    for _ in range(cfg.encoder_layers))
        self.norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        x = self.embedding(tokens) * math.sqrt(self.hidden)
        x = self.dropout(x + sinusoidal_positions(tokens.shape[1], self.hidden, tokens.device))
        for layer in self.layers:
            x = layer(x, pad)
        return self.norm(x).masked_fill(pad.unsqueeze(-1), 0.0)


class DurationPredictor(nn.Module):
    """Hidden states ``[B, N, H]`` → log(d + 1) per token ``[B, N]``."""

    def __init__(self, hidden: int, channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(hidden, channels, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(channels, 1)

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = h.transpose(1, 2)
        x = self.dropout(self.norm1(F.relu(self.conv1(x)).transpose(1, 2))).transpose(1, 2)
        x = self.dropout(self.norm2(F.relu(self.conv2(x)).transpose(1, 2)))
        return self.out(x).squeeze(-1).masked_fill(pad, 0.0)


def durations_from_log(log_d: torch.Tensor, pad: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Inference durations d = max(round(exp(x) − 1), 0) (official code), ``scale`` × the predicted
    length; at least one frame in all."""
    d = torch.clamp(torch.round((torch.exp(log_d) - 1) * scale), min=0).long().masked_fill(pad, 0)
    empty = d.sum(1) == 0
    if bool(empty.any()):
        d[empty, 0] = 1
    return d


def frame_index(durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For durations ``[B, N]`` the token index of every frame ``[B, T]`` (T = longest total) and
    the frame mask ``[B, T]`` (True = real)."""
    total = durations.sum(1)
    T = int(total.max()) if total.numel() else 0
    ends = durations.cumsum(1)  # [B, N]
    frames = torch.arange(T, device=durations.device)
    idx = (frames.view(1, -1, 1) >= ends.unsqueeze(1)).sum(-1)  # tokens that ended before frame j
    mask = frames.unsqueeze(0) < total.unsqueeze(1)
    return idx.clamp(max=durations.shape[1] - 1).masked_fill(~mask, 0), mask


def length_regulate(h: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gather token states ``[B, N, H]`` to frames by ``index`` ``[B, T]`` → ``[B, H, T]`` (zero on padding)."""
    out = torch.gather(h, 1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
    return out.masked_fill(~mask.unsqueeze(-1), 0.0).transpose(1, 2)


class MelDecoder(nn.Module):
    """ε_θ(x_t, t, c) over mel frames: ``x`` ``[B, n_mels, T]``, ``t`` ``[B]``, ``cond`` ``[B, H, T]``."""

    def __init__(self, n_mels: int, cond_channels: int, channels: int, layers: int, max_steps: int) -> None:
        super().__init__()
        self.input_projection = _conv1x1(n_mels, channels)
        self.diffusion_embedding = StepEmbedding(max_steps)
        self.residual_layers = nn.ModuleList(ResidualBlock(channels, 1, cond_channels) for _ in range(layers))
        self.skip_projection = _conv1x1(channels, channels)
        self.output_projection = _conv1x1(channels, n_mels)
        nn.init.zeros_(self.output_projection.weight)
        nn.init.zeros_(self.output_projection.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.input_projection(x))
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.diffusion_embedding(t)
        skip = None
        for layer in self.residual_layers:
            h, s = layer(h, emb, cond)
            skip = s if skip is None else skip + s
        h = F.relu(self.skip_projection(skip * (1 / math.sqrt(len(self.residual_layers)))))
        return self.output_projection(h)


class AcousticModel(nn.Module):
    """Encoder, speaker embedding, aligner head, duration predictor and mel decoder together."""

    def __init__(self, cfg: AcousticModelConfig, n_tokens: int, n_speakers: int, n_mels: int, max_steps: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TextEncoder(n_tokens, cfg)
        self.speaker_embedding = nn.Embedding(n_speakers + 1, cfg.hidden)  # row 0: the average speaker
        nn.init.normal_(self.speaker_embedding.weight, 0.0, 0.1)
        self.mean_projection = nn.Linear(cfg.hidden, n_mels)  # μ_enc for alignment (Grad-TTS)
        self.duration_predictor = DurationPredictor(cfg.hidden, cfg.duration_channels, cfg.duration_kernel,
                                                    cfg.duration_dropout)
        self.decoder = MelDecoder(n_mels, cfg.hidden, cfg.decoder_channels, cfg.decoder_layers, max_steps)

    def encode(self, tokens: torch.Tensor, speakers: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hidden states ``h`` [B, N, H] (speaker added), μ_enc [B, n_mels, N], log(d+1) [B, N], pad mask."""
        pad = tokens == 0
        h = self.encoder(tokens) + self.speaker_embedding(speakers).unsqueeze(1)
        h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        mu = self.mean_projection(h).transpose(1, 2)
        log_d = self.duration_predictor(h.detach(), pad)
        return {"h": h, "mu_enc": mu, "log_d": log_d, "pad": pad}

    def align(self, enc: dict[str, torch.Tensor], mel: torch.Tensor, token_lengths: torch.Tensor,
              frame_lengths: torch.Tensor) -> torch.Tensor:
        """The MAS alignment ``[B, N, T]`` of the mel frames to the tokens under N(μ_enc, I)."""
        return monotonic_alignment(gaussian_log_likelihood(mel, enc["mu_enc"]), token_lengths, frame_lengths)


@torch.no_grad()
def generate(model: AcousticModel, prior: PhonePrior, sampler: DiffusionSampler, tokens: torch.Tensor,
             speakers: torch.Tensor, noise: NoiseSource, durations: torch.Tensor | None = None,
             length_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens → mel ``[B, n_mels, T]``, the durations used ``[B, N]`` and the frame mask ``[B, T]``.

    ``durations`` (e.g. from an alignment) replaces the predicted ones (teacher forcing)."""
    enc = model.encode(tokens, speakers)
    if durations is None:
        durations = durations_from_log(enc["log_d"], enc["pad"], length_scale)
    index, mask = frame_index(durations)
    cond = length_regulate(enc["h"], index, mask)
    mu, std = prior.frames(torch.gather(tokens, 1, index).masked_fill(~mask, 0))
    mel = sample_mel(sampler, lambda x, t: model.decoder(x, t, cond), mu, std, noise)
    return mel, durations, mask
