"""Validation measures of a generated mel against the recorded one (no vocoder in the loop).

* mel L1: mean |x̂ − x| of the natural-log mels over real frames, with the ground-truth durations
  (teacher forcing), so frame j of both is the same moment.
* mel-cepstral distortion (MCD_mel, dB): the cepstrum of each frame's N = 80 natural-log mel
  magnitudes x_k in the convention x_k = c_0 + 2 Σ_{m≥1} c_m cos(πm(2k+1)/2N), i.e.
  c_m = (1/N) Σ_k x_k cos(πm(2k+1)/2N) (a DCT-II / 2N), coefficients 1..24 (c0, the energy, left out),
  frames paired by DTW (free-running synthesis has its own length), per frame (10/ln 10)·√(2 Σ_d (Δc_d)²)
  averaged (Kubichek 1993). It is computed from the mel, not from WORLD envelopes of audio, so it is *not*
  the number :func:`diffvoc.evaluation.metrics.mcd` gives; it compares acoustic models on equal terms.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

N_CEPSTRA = 24


def mel_cepstra(log_mel: np.ndarray, n: int = N_CEPSTRA) -> np.ndarray:
    """``[n_mels, T]`` natural-log mel → cepstra 1..n ``[T, n]``."""
    x = np.asarray(log_mel, dtype=np.float64)
    return (dct(x, type=2, axis=0) / (2 * x.shape[0]))[1: n + 1].T


def mel_cepstral_distortion(ref: np.ndarray, gen: np.ndarray, use_dtw: bool = True) -> float:
    """MCD_mel in dB between two log-mels ``[n_mels, T]`` (DTW-paired frames unless ``use_dtw=False``)."""
    import librosa

    cr, cg = mel_cepstra(ref), mel_cepstra(gen)
    if use_dtw:
        cost = np.sqrt(((cr[:, None, :] - cg[None, :, :]) ** 2).sum(-1))
        _, path = librosa.sequence.dtw(C=cost)
        diff = cr[path[:, 0]] - cg[path[:, 1]]
    else:
        n = min(len(cr), len(cg))
        diff = cr[:n] - cg[:n]
    return float(np.mean((10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(diff ** 2, axis=1))))


def mel_l1(ref: np.ndarray, gen: np.ndarray) -> float:
    """Mean absolute difference of two equally long log-mels ``[n_mels, T]``."""
    return float(np.mean(np.abs(np.asarray(ref) - np.asarray(gen))))
