"""The user-facing :class:`Vocoder`: load a checkpoint, turn mels into waveforms.

Long inputs are vocoded in chunks of ``chunk_frames`` frames, each with ``context_frames`` of
real neighbouring context on both sides and a linear cross-fade of ``fade_frames`` at every join,
so that memory stays bounded. Noise is keyed by absolute sample position
(:class:`~diffvoc.sampler.PositionalNoise`), so a chunked result equals the whole-file result up
to the context truncation (tested).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import MelSpectrogram, check_mel, load_audio, peak_normalize
from .checkpoint import Checkpoint, load_checkpoint
from .components import build, build_sampler
from .config import Config
from .errors import CheckpointError, DiffvocError
from .sampler import DiffusionSampler, NoiseSource, PositionalNoise

DEFAULT_CHECKPOINT = Path(__file__).parent / "pretrained" / "default"


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Strictly load ``weights`` into ``model`` with a one-line error on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    bad = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            parts.append(f"shape mismatch at {bad[0]}: {tuple(weights[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
        raise CheckpointError(f"{where}: weights do not match the config: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


class Vocoder:
    """A trained diffusion vocoder, ready to sample.

    Attributes:
        model: the DiffWave :class:`torch.nn.Module` (``forward(audio, diffusion_step, mel)``).
        config: the full :class:`~diffvoc.config.Config` it was trained with.
        prior: the prior (standard or PriorGrad) with its data statistics.
    """

    def __init__(self, config: Config, weights: dict[str, torch.Tensor], stats: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", where: str = "checkpoint") -> None:
        self.config = config
        self.stats = dict(stats or {})
        self.device = torch.device(device)
        model, self.schedule, self.prior = build(config, self.stats)
        load_weights(model, weights, where)
        self.model = model.to(self.device).eval()
        self._mel = MelSpectrogram(config.audio)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> "Vocoder":
        """Load a checkpoint directory, a run directory (newest checkpoint) or an
        lmnt-com/diffwave ``weights.pt``; with no argument, the bundled model."""
        if path is None:
            path = DEFAULT_CHECKPOINT
            if not path.exists():
                raise CheckpointError("no bundled model is installed with this copy of diffvoc")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise DiffvocError("--device cuda asked for, but CUDA is not available")
        ck = load_checkpoint(path)
        return cls.from_checkpoint(ck, dev)

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, device: str | torch.device = "cpu") -> "Vocoder":
        return cls(ck.config, ck.weights, ck.stats, device, where=str(ck.path))

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def hop(self) -> int:
        return self.config.audio.hop_length

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """The model's own mel of a waveform at its sample rate: ``[n_mels, frames]``."""
        with torch.no_grad():
            return self._mel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()

    def analyse_file(self, path: str | Path) -> tuple[np.ndarray, int]:
        """Read, resample and peak-normalise a file as in training; return its mel and length.

        The audio is zero-padded to whole frames first, so vocoding the mel covers every sample.
        """
        audio = peak_normalize(load_audio(path, self.sample_rate), self.config.audio.peak_normalize)
        padded = np.pad(audio, (0, -len(audio) % self.hop))
        return self.mel(padded), len(audio)

    def sampler(self, steps: int | None = 6, schedule: list[float] | None = None, full: bool = False) -> DiffusionSampler:
        return build_sampler(self.config, steps, schedule, full)

    @torch.inference_mode()
    def vocode(self, mel: np.ndarray | torch.Tensor, steps: int | None = 6, schedule: list[float] | None = None,
               full: bool = False, seed: int = 0, noise: NoiseSource | None = None, chunk_frames: int = 512,
               context_frames: int | None = None, fade_frames: int = 8) -> np.ndarray:
        """Mel ``[n_mels, frames]`` or ``[B, n_mels, frames]`` → waveform ``[T]`` or ``[B, T]``.

        ``steps`` picks a stored fast schedule (6 by default), ``schedule`` gives explicit β values,
        ``full`` runs all T training steps. ``seed`` fixes the noise (same seed, same output).
        """
        if self.config.model.conditioning != "mel":
            raise DiffvocError("this model is not mel-conditioned; use `diffvoc generate`")
        check_mel(mel, self.config.audio.n_mels)
        m = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel, dtype=torch.float32)
        single = m.dim() == 2
        m = (m.unsqueeze(0) if single else m).to(self.device)
        sampler = self.sampler(steps, schedule, full)
        noise = noise or PositionalNoise(seed)
        if context_frames is None:
            context_frames = self.default_context(len(sampler))
        out = self._vocode_chunked(m, sampler, noise, chunk_frames, context_frames, fade_frames)
        out = out.float().cpu().numpy()
        return out[0] if single else out

    def default_context(self, n_steps: int) -> int:
        """Frames of context per side: the network's receptive field times min(steps, 2), rounded up."""
        return int(math.ceil(self.model.receptive_field() * min(n_steps, 2) / self.hop)) + 2

    def _segment(self, mel: torch.Tensor, sampler: DiffusionSampler, noise: NoiseSource, start: int) -> torch.Tensor:
        B, _, frames = mel.shape
        length = frames * self.hop
        cond = self.model.condition(self.prior.conditioner(mel))
        std = self.prior.std(mel, length)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.model.denoise(x, t, cond)

        return sampler.sample(denoise, std, B, length, noise, start=start, device=self.device)

    def _vocode_chunked(self, mel: torch.Tensor, sampler: DiffusionSampler, noise: NoiseSource,
                        chunk: int, context: int, fade: int) -> torch.Tensor:
        B, _, frames = mel.shape
        hop = self.hop
        if chunk <= 0 or frames <= chunk + 2 * fade:
            return self._segment(mel, sampler, noise, 0)
        fade = max(0, min(fade, chunk // 2))
        out = torch.zeros(B, frames * hop, device=self.device)
        half = fade * hop // 2
        for a in range(0, frames, chunk):
            b = min(a + chunk, frames)
            lo, hi = max(0, a - context - fade), min(frames, b + context + fade)
            seg = self._segment(mel[..., lo:hi], sampler, noise, lo * hop)
            n = torch.arange(lo * hop, hi * hop, device=self.device, dtype=torch.float32)
            w = torch.ones_like(n)
            if a > 0 and half > 0:
                w = w * ((n - (a * hop - half)) / (2 * half)).clamp(0, 1)
            elif a > 0:
                w = w * (n >= a * hop).float()
            if b < frames and half > 0:
                w = w * (((b * hop + half) - n) / (2 * half)).clamp(0, 1)
            elif b < frames:
                w = w * (n < b * hop).float()
            out[:, lo * hop:hi * hop] += seg * w
        return out

    def vocode_file(self, path: str | Path, **kw: Any) -> np.ndarray:
        """Analysis–synthesis of an audio file (its mel, vocoded), trimmed to the input's length."""
        mel, length = self.analyse_file(path)
        return self.vocode(mel, **kw)[:length]
