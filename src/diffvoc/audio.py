"""Audio input and mel-spectrogram features.

Two mel recipes, chosen by ``AudioConfig.preset``:

* ``hifigan`` — HiFi-GAN's and PriorGrad's (REFERENCE §2): reflect-pad (n_fft − hop)/2 on both
  sides, STFT with a periodic Hann window and center off, magnitude √(re² + im² + 1e-9), slaney mel
  basis, natural log of clamp(·, 1e-5). Mels from TTS models trained on this recipe can be vocoded.
* ``lmnt`` — lmnt-com/diffwave's: centred (reflect) STFT normalised by the window's L2 norm, HTK mel
  basis without area normalisation, 20·log10(clamp(·, 1e-5)) − 20 dB mapped from [−100, 0] to [0, 1].

Frames: the ``hifigan`` recipe gives ⌊samples / hop⌋ frames, ``lmnt`` gives ⌊samples / hop⌋ + 1.
Frame ``i`` conditions the samples ``[i·hop, (i+1)·hop)``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from diffvoc.config import AudioConfig
from diffvoc.errors import AudioError, MelError

LOG_CLAMP = 1e-5
MAG_EPS = 1e-9


def load_audio(path: str | Path, sample_rate: int | None = None) -> np.ndarray:
    """Read any soundfile-supported file (wav/flac/ogg, any bit depth) as mono float32.

    Multi-channel audio is averaged to mono; audio at another rate is resampled (soxr, high quality)
    when ``sample_rate`` is given. Raises :class:`AudioError` for a missing, empty or unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"no such file: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"cannot read {path} as audio ({msg})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path} holds no audio samples")
    audio = audio.mean(axis=1)
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path} holds NaN or infinite samples")
    if sample_rate is not None and sr != sample_rate:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def peak_normalize(audio: np.ndarray, peak: float | None) -> np.ndarray:
    """Scale ``audio`` so that its largest magnitude is ``peak`` (silence is left as it is)."""
    if peak is None:
        return audio
    m = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if m == 0.0 else (audio * (peak / m)).astype(np.float32)


@lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                               htk=htk, norm=None if htk else "slaney").astype(np.float32)


class MelSpectrogram(torch.nn.Module):
    """Mel-spectrogram of a waveform batch ``[B, T]`` (or ``[T]``) → ``[B, n_mels, frames]``."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        htk = cfg.preset == "lmnt"
        fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2
        basis = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(fmax), htk)
        self.register_buffer("basis", torch.from_numpy(basis), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """How many frames ``num_samples`` samples give."""
        hop = self.cfg.hop_length
        return num_samples // hop + (1 if self.cfg.preset == "lmnt" else 0)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        squeeze = audio.dim() == 1
        x = audio.unsqueeze(0) if squeeze else audio
        x = x.float()
        if c.preset == "lmnt":
            if x.shape[-1] <= c.n_fft // 2:
                raise AudioError(f"audio too short for a mel: {x.shape[-1]} samples, need > {c.n_fft // 2}")
            spec = torch.stft(x, c.n_fft, c.hop_length, c.win_length, self.window, center=True,
                              pad_mode="reflect", normalized=False, return_complex=True).abs()
            spec = spec / self.window.pow(2).sum().sqrt()
            mel = torch.matmul(self.basis, spec)
            db = 20 * torch.log10(torch.clamp(mel, min=LOG_CLAMP)) - 20
            out = torch.clamp((db + 100) / 100, 0.0, 1.0)
        else:
            left = (c.n_fft - c.hop_length) // 2
            right = c.n_fft - c.hop_length - left
            if x.shape[-1] <= max(left, right) or x.shape[-1] < c.hop_length:
                raise AudioError(f"audio too short for a mel: {x.shape[-1]} samples")
            x = F.pad(x.unsqueeze(1), (left, right), mode="reflect").squeeze(1)
            spec = torch.stft(x, c.n_fft, c.hop_length, c.win_length, self.window, center=False,
                              normalized=False, return_complex=True)
            spec = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + MAG_EPS)
            mel = torch.matmul(self.basis, spec)
            out = torch.log(torch.clamp(mel, min=LOG_CLAMP))
        return out.squeeze(0) if squeeze else out


def mel_to_linear(mel: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Invert the log compression of a mel (not the mel filterbank): linear mel magnitudes."""
    if cfg.preset == "lmnt":
        return torch.pow(10.0, (mel * 100 - 100 + 20) / 20)
    return torch.exp(mel)


def frame_energy(mel: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """PriorGrad's frame energy E_i = √(Σ_f melₗᵢₙ[f, i]) for mels ``[..., n_mels, frames]``."""
    return torch.sqrt(mel_to_linear(mel, cfg).sum(dim=-2))


def compute_mel(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Mel of a mono float waveform as ``[n_mels, frames]`` float32 (numpy in, numpy out)."""
    with torch.no_grad():
        return MelSpectrogram(cfg)(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()


def check_mel(mel: np.ndarray | torch.Tensor, n_mels: int, what: str = "mel") -> None:
    """Raise :class:`MelError` unless ``mel`` is ``[n_mels, F]`` or ``[B, n_mels, F]`` and finite."""
    shape = tuple(mel.shape)
    if len(shape) not in (2, 3):
        raise MelError(f"{what}: expected [n_mels, frames] or [batch, n_mels, frames], got shape {shape}")
    if shape[-2] != n_mels:
        raise MelError(f"{what}: has {shape[-2]} mel bands, the model expects {n_mels}")
    if shape[-1] < 1:
        raise MelError(f"{what}: has no frames")
    finite = torch.isfinite(mel).all().item() if isinstance(mel, torch.Tensor) else np.isfinite(mel).all()
    if not finite:
        raise MelError(f"{what}: holds NaN or infinite values")


def load_mel(path: str | Path, n_mels: int) -> np.ndarray:
    """Read a mel ``.npy`` written by ``diffvoc mel`` (or a TTS model) and check it."""
    path = Path(path)
    if not path.is_file():
        raise MelError(f"no such file: {path}")
    try:
        mel = np.load(path, allow_pickle=False)
    except Exception as e:
        raise MelError(f"cannot read {path} as a .npy array ({type(e).__name__})") from None
    if not np.issubdtype(mel.dtype, np.floating):
        raise MelError(f"{path}: mel must be floating point, got {mel.dtype}")
    check_mel(mel, n_mels, str(path))
    return mel.astype(np.float32)
