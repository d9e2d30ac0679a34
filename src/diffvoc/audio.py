"""Audio input and mel-spectrogram features.

Two mel recipes, chosen by ``AudioConfig.preset``:

* ``hifigan`` — HiFi-GAN's and PriorGrad's (PriorGrad, Lee et al., ICLR 2022): reflect-pad (n_fft − hop)/2 on both
  sides, STFT with a periodic Hann window and center off, magnitude √(re² + im² + 1e-9), slaney mel
  basis, natural log of clamp(·, 1e-5). Mels from TTS models trained on this recipe can be vocoded.
* ``lmnt`` — lmnt-com/diffwave's: centred (reflect) STFT normalised by the window's L2 norm, HTK mel
  basis without area normalisation, 20·log10(clamp(·, 1e-5)) − 20 dB mapped from [−100, 0] to [0, 1].

Frames: the ``hifigan`` recipe gives ⌊samples / hop⌋ frames, ``lmnt`` gives ⌊samples / hop⌋ + 1.
Frame ``i`` conditions the samples ``[i·hop, (i+1)·hop)``.

Length limit: memory grows with the length of an input (the waveform, its mel, the output buffer and
the write-time copies), so every audio file and every mel is refused up front when it is longer than
:func:`max_seconds` — 10 minutes by default, ``DIFFVOC_MAX_SECONDS`` to change it — with a message
saying so. The length is read from the file's header before its samples are (``sf.info``, the
``.npy`` header), so refusing costs nothing.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from diffvoc.config import AudioConfig
from diffvoc.errors import AudioError, DiffvocError, MelError

LOG_CLAMP = 1e-5
MAG_EPS = 1e-9
MEL_LIMIT = 1e4
"""The largest magnitude a log-mel value may have (the recipes give about −11.5 … 8, lmnt's 0 … 1)."""
DEFAULT_MAX_SECONDS = 600.0
"""The longest audio or mel accepted by default (10 minutes); ``DIFFVOC_MAX_SECONDS`` overrides it."""


def max_seconds() -> float:
    """The length limit for inputs: ``DIFFVOC_MAX_SECONDS`` if set (a positive number), else 600 s."""
    text = os.environ.get("DIFFVOC_MAX_SECONDS")
    if not text:
        return DEFAULT_MAX_SECONDS
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (v > 0 and math.isfinite(v)):
        raise DiffvocError(f"DIFFVOC_MAX_SECONDS must be a positive number of seconds, got {text!r}")
    return v


def check_length(seconds: float, what: str, limit: float | None = None, error: type[DiffvocError] = AudioError) -> None:
    """Refuse an input ``seconds`` long when that exceeds ``limit`` (default :func:`max_seconds`)."""
    limit = max_seconds() if limit is None else limit
    if seconds > limit:
        raise error(f"{what} is {seconds:.3g} s long, more than the {limit:g} s limit "
                    f"(memory grows with the length; set DIFFVOC_MAX_SECONDS to allow longer inputs)")


def _sndfile_reason(msg: str) -> str:
    """libsndfile's reason without its ``Error opening '<path>': `` prefix (the error line names the path)."""
    return re.sub(r"^Error opening .*?: ", "", msg).strip() or msg


def load_audio(path: str | Path, sample_rate: int | None = None, limit: float | None = None) -> np.ndarray:
    """Read any soundfile-supported file (wav/flac/ogg, any bit depth) as mono float32.

    Multi-channel audio is averaged to mono; audio at another rate is resampled (soxr, high quality)
    when ``sample_rate`` is given. Raises :class:`AudioError` for a missing, empty or unreadable file
    and for one longer than ``limit`` seconds (default :func:`max_seconds`; checked from the header).
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"no such file: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"cannot read {path} as audio ({_sndfile_reason(msg)})") from None
    if info.samplerate > 0:
        check_length(info.frames / info.samplerate, str(path), limit)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioError(f"cannot read {path} as audio ({_sndfile_reason(msg)})") from None
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
    with warnings.catch_warnings():  # a few empty filters (many bands, a short FFT) are allowed: constant bands
        warnings.filterwarnings("ignore", message="Empty filters detected", category=UserWarning)
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


def check_mel(mel: np.ndarray | torch.Tensor, n_mels: int, what: str = "mel", frames: bool = True) -> None:
    """Raise :class:`MelError` unless ``mel`` is ``[n_mels, F]`` or ``[B, n_mels, F]`` of real numbers and
    finite (with ``frames=False`` only the shape's rank and band count are checked)."""
    if not hasattr(mel, "shape") or not hasattr(mel, "dtype"):
        raise MelError(f"{what}: expected a numpy array or torch tensor, got {type(mel).__name__}")
    shape = tuple(mel.shape)
    if len(shape) not in (2, 3):
        raise MelError(f"{what}: expected [n_mels, frames] or [batch, n_mels, frames], got shape {shape}")
    if shape[-2] != n_mels:
        raise MelError(f"{what}: has {shape[-2]} mel bands, the model expects {n_mels}")
    real = not (mel.is_complex() or mel.dtype == torch.bool) if isinstance(mel, torch.Tensor) else (
        np.issubdtype(mel.dtype, np.floating) or np.issubdtype(mel.dtype, np.integer))
    if not real:
        raise MelError(f"{what}: expected real numbers, got dtype {mel.dtype}")
    if not frames:
        return
    if shape[-1] < 1 or (len(shape) == 3 and shape[0] < 1):
        raise MelError(f"{what}: has no frames")
    finite = torch.isfinite(mel).all().item() if isinstance(mel, torch.Tensor) else np.isfinite(mel).all()
    if not finite:
        raise MelError(f"{what}: holds NaN or infinite values")
    peak = float(mel.abs().max()) if isinstance(mel, torch.Tensor) else float(np.abs(mel).max())
    if peak > MEL_LIMIT:
        raise MelError(f"{what}: holds values as large as {peak:.3g}; a log-mel spectrogram lies within "
                       f"±{MEL_LIMIT:g} (is this a linear-magnitude or unscaled array?)")


def _open_mel(path: Path, n_mels: int, frame_seconds: float | None) -> np.ndarray:
    """The mel ``.npy`` at ``path`` memory-mapped, its header checked (kind, dtype, rank, bands, length)."""
    if not path.exists():
        raise MelError(f"no such file: {path}")
    if not path.is_file():
        raise MelError(f"{path} is not a file (a mel .npy was expected)")
    try:
        head = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise MelError(f"cannot read {path} as a .npy array ({type(e).__name__})") from None
    if not isinstance(head, np.ndarray):
        raise MelError(f"{path}: expected one .npy array, got {type(head).__name__}")
    if not np.issubdtype(head.dtype, np.floating):
        raise MelError(f"{path}: mel must be floating point, got {head.dtype}")
    check_mel(head, n_mels, str(path), frames=False)  # rank and bands, before the data is read
    if frame_seconds is not None:
        check_length(head.shape[-1] * frame_seconds, f"{path} (a mel of {head.shape[-1]} frames)", error=MelError)
    return head


def probe_mel(path: str | Path, n_mels: int, frame_seconds: float | None = None) -> tuple[int, ...]:
    """Check a mel ``.npy`` from its header only (see :func:`load_mel`); returns its shape."""
    return tuple(_open_mel(Path(path), n_mels, frame_seconds).shape)


def load_mel(path: str | Path, n_mels: int, frame_seconds: float | None = None) -> np.ndarray:
    """Read a mel ``.npy`` written by ``diffvoc mel`` (or a TTS model) and check it.

    The header is read first: with ``frame_seconds`` (hop / sample rate) a mel longer than
    :func:`max_seconds` is refused before its data is read. The values are checked finite after the
    cast to float32 (a float64 1e300 becomes inf there)."""
    path = Path(path)
    head = _open_mel(path, n_mels, frame_seconds)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes inf, refused just below
        mel = np.array(head, dtype=np.float32)
    del head
    check_mel(mel, n_mels, str(path))
    return mel
