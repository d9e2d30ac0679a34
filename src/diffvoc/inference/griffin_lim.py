"""Griffin-Lim phase reconstruction of a log-mel (the vocoder-free baseline of ``diffvoc tts``).

The mel is turned back into a linear magnitude spectrogram by non-negative least squares against the
same slaney mel basis (:func:`librosa.feature.inverse.mel_to_stft`), then Griffin & Lim (1984)
iterations estimate a phase. Quality is the classic "phasey" Griffin-Lim sound: a reference point
for the diffusion vocoder, not a replacement.
"""

from __future__ import annotations

import numpy as np

from diffvoc.audio import mel_to_linear
from diffvoc.config import AudioConfig


def griffin_lim(log_mel: np.ndarray, cfg: AudioConfig, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Waveform ``[frames·hop]`` float32 in [−1, 1] from a log-mel ``[n_mels, frames]`` of preset ``cfg``."""
    import librosa
    import torch

    mag = mel_to_linear(torch.from_numpy(np.asarray(log_mel, dtype=np.float32)), cfg).numpy()
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2
    stft = librosa.feature.inverse.mel_to_stft(mag, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0, fmin=cfg.fmin,
                                               fmax=fmax, htk=cfg.preset == "lmnt",
                                               norm=None if cfg.preset == "lmnt" else "slaney")
    wav = librosa.griffinlim(stft, n_iter=n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
                             n_fft=cfg.n_fft, center=True, random_state=seed,
                             length=(log_mel.shape[-1] - 1) * cfg.hop_length)
    wav = np.pad(wav, (0, cfg.hop_length))  # frames · hop samples, as the vocoder gives
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > 0:
        wav = wav * (0.95 / peak)
    return wav.astype(np.float32)
