"""The signal processing every corpus builder applies to its clips: a 30 Hz high-pass and resampling."""

from __future__ import annotations

import numpy as np

__all__ = ["highpass", "resample"]


def highpass(audio: np.ndarray, rate: int) -> np.ndarray:
    """Remove DC offset and rumble (some flite voices have an offset) with a zero-phase 30 Hz high-pass.

    Clips shorter than 64 samples only lose their mean.
    """
    from scipy.signal import butter, sosfiltfilt

    if len(audio) == 0:
        return audio
    if len(audio) < 64:
        return audio - audio.mean()
    return sosfiltfilt(butter(2, 30.0, "highpass", fs=rate, output="sos"), audio)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono ``audio`` from ``rate_in`` to ``rate_out`` Hz with soxr's high quality."""
    if rate_in == rate_out:
        return audio
    try:
        import soxr
    except ImportError:  # librosa depends on soxr, but fall back to librosa's own choice
        import librosa

        return librosa.resample(audio, orig_sr=rate_in, target_sr=rate_out)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ")
