"""Signal analysis of a recording: levels, noise, trim points, clipping, bandwidth, and the rejection criteria.

:func:`analyse` measures one decoded recording (10 ms RMS frame levels after a 30 Hz high-pass): the loud
core, the noise level and where it was measured, the speech frames and the trim points around them, the
share of clipped samples and the bandwidth (:func:`bandwidth_hz`); :meth:`Analysis.reject` names the first
criterion a clip fails. The thresholds were measured on every recording of the packages of
:mod:`diffvoc.data.recordings`; :func:`criteria` describes them for the manifest of the real corpus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from diffvoc.data.dsp import highpass

__all__ = ["ASTERISK_TONES", "Analysis", "analyse", "bandwidth_hz", "criteria"]

# Measured on all 4,667 recordings of the six packages (klettres-data 4:22.12.3-1, asterisk
# 1.6.1-1); the numbers behind each choice are in the README and in every manifest.
_FRAME_S = 0.010  # analysis frames: RMS of 10 ms, after a 30 Hz zero-phase high-pass (DC, rumble)
_DB_CLAMP = -120.0  # digital silence counts as -120 dBFS
_MIN_RUN_FRAMES = 3  # levels count when held for >= 30 ms (isolated clicks do not)
# The loud core: frames within 25 dB of the peak (speech for sure). The noise: the median level of the
# frames at least 0.1 s (10 frames) away from the core when there are >= 10 of them ("silence"); else
# (prompts cut tight at the source, or noise loud enough to join the core) the 5th percentile of all
# frame levels ("quietest frames": the pauses of continuous speech, or the noise itself).
_CORE_BELOW_PEAK_DB, _NOISE_GUARD_FRAMES, _NOISE_MIN_FRAMES, _QUIET_PERCENTILE = 25.0, 10, 10, 5
# A speech frame is above both (peak - 40 dB) and (noise + 10 dB); the clip is cut from the first to
# the last run of >= 3 speech frames, with 50 ms kept on each side.
_TRIM_BELOW_PEAK_DB, _TRIM_ABOVE_NOISE_DB, _MARGIN_S = 40.0, 10.0, 0.05
_SILENT_DBFS = -50.0  # peak below this: an empty file or a faint tone (Asterisk's silence/*)
# Clipped: more than 0.2 % of the trimmed clip's samples at >= 99 % of full scale. Full scale is 1.0,
# except for a file whose peak exceeds 2.0: a float stream with a wrong gain (KLettres' tn, peaks up
# to 61) was never clipped at 1.0 and is judged at its own peak. Lossy coding of clipped audio
# overshoots full scale by at most 1.64 (measured), so the exception cannot hide clipped files.
_CLIP_LEVEL, _CLIP_MAX_FRACTION, _FLOAT_GAIN_PEAK = 0.99, 0.002, 2.0
# Noisy: the core's median level is less than this above the noise. The quietest frames of clean continuous
# speech (Asterisk prompts without silence) lie >= 15 dB below the core for 2,386 of 2,390 prompts, those of
# humming or hissing KLettres clips 0.4-14.9 dB (measured), hence the lower bar for that estimate.
_MIN_SNR_DB = {"silence": 20.0, "quietest frames": 15.0}
_MIN_SECONDS = 0.20  # trimmed clip
_MIN_SPEECH_S = 0.10  # speech frames in it
_BANDWIDTH_DB = 50.0  # bandwidth: highest frequency within 50 dB of the long-term spectrum's peak
# Asterisk prompts that are signal tones, not speech (its silence/ folder fails the "silent" test): rejected by name.
ASTERISK_TONES = frozenset({"beep", "beeperr", "ascending-2tone", "descending-2tone"})


def _frame_db(audio: np.ndarray, rate: int) -> np.ndarray:
    frame = max(1, round(_FRAME_S * rate))
    n = len(audio) // frame
    if n == 0:
        return np.zeros(0)
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    return np.maximum(20.0 * np.log10(np.maximum(rms, 1e-30)), _DB_CLAMP)


def _runs(mask: np.ndarray, length: int) -> np.ndarray:
    """Indices of True entries that belong to a run of at least ``length`` Trues."""
    if not mask.any():
        return np.zeros(0, dtype=int)
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    keep = [np.arange(s, e) for s, e in zip(starts, ends) if e - s >= length]
    return np.concatenate(keep) if keep else np.zeros(0, dtype=int)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` measured on one recording (levels in dBFS, times at the native rate)."""

    rate: int
    channels: int
    raw_seconds: float
    start: int  # first sample kept
    end: int  # one past the last sample kept
    peak_dbfs: float  # loudest level held for 30 ms
    noise_db: float | None  # see noise_from (None: no loud core)
    noise_from: str  # "silence": median of the frames >= 0.1 s from the loud core; else "quietest frames"
    speech_db: float  # median level of the loud core (frames within 25 dB of the peak)
    snr_db: float | None  # speech_db - noise_db
    speech_seconds: float  # speech frames between start and end
    clipped_fraction: float  # samples of the kept part at >= 99 % of full scale
    full_scale: float
    bandwidth_hz: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / self.rate

    def reject(self) -> str | None:
        """The first criterion the clip fails (``silent``, ``clipped``, ``noisy``, ``too short``), or None."""
        if self.peak_dbfs < _SILENT_DBFS or self.end <= self.start:
            return "silent"
        if self.clipped_fraction > _CLIP_MAX_FRACTION:
            return "clipped"
        if self.snr_db is not None and self.snr_db < _MIN_SNR_DB[self.noise_from]:
            return "noisy"
        if self.seconds < _MIN_SECONDS or self.speech_seconds < _MIN_SPEECH_S:
            return "too short"
        return None


def bandwidth_hz(audio: np.ndarray, rate: int) -> float:
    """Highest frequency at which the long-term spectrum is within 50 dB of its peak (Welch, ~46 ms Hann)."""
    from scipy.signal import welch

    if len(audio) < 16:
        return 0.0
    nperseg = min(len(audio), 1 << int(np.ceil(np.log2(0.046 * rate))))
    freqs, power = welch(audio, fs=rate, nperseg=nperseg)
    level = 10.0 * np.log10(np.maximum(power, 1e-30))
    return round(float(freqs[np.flatnonzero(level >= level.max() - _BANDWIDTH_DB)[-1]]), 1)


def _sustained(db: np.ndarray) -> np.ndarray:
    """Frame levels held for at least ``_MIN_RUN_FRAMES`` frames (a moving minimum): clicks vanish."""
    k = _MIN_RUN_FRAMES
    if len(db) < k:
        return db
    return np.min(np.stack([db[i: len(db) - k + 1 + i] for i in range(k)]), axis=0)


def analyse(audio: np.ndarray, rate: int) -> Analysis:
    """Trim points and the measurements behind the rejection criteria for one decoded recording.

    ``audio`` is ``[samples, channels]`` (or mono ``[samples]``) as :func:`decode` returns it.
    The loud core (frames within 25 dB of the peak) is speech for sure; the noise is the median
    level of the frames at least 0.1 s away from it; speech frames are above both (peak - 40 dB)
    and (noise + 10 dB); the clip is trimmed to the first and last run of speech frames.
    """
    audio = audio[:, None] if audio.ndim == 1 else audio
    mono = highpass(audio.mean(axis=1), rate)
    db = _frame_db(mono, rate)
    frame = max(1, round(_FRAME_S * rate))
    empty = Analysis(rate, audio.shape[1], len(mono) / rate, 0, 0, _DB_CLAMP, None, "none", _DB_CLAMP, None,
                     0.0, 0.0, 1.0, 0.0)
    if db.size == 0:
        return empty
    peak = float(_sustained(db).max())
    core = _runs(db > peak - _CORE_BELOW_PEAK_DB, _MIN_RUN_FRAMES)
    if core.size == 0:
        return Analysis(**{**asdict(empty), "peak_dbfs": round(peak, 2)})
    index = np.arange(len(db))
    far = (index < core[0] - _NOISE_GUARD_FRAMES) | (index > core[-1] + _NOISE_GUARD_FRAMES)
    if far.sum() >= _NOISE_MIN_FRAMES:
        noise_db, noise_from = float(np.median(db[far])), "silence"
        threshold = max(peak - _TRIM_BELOW_PEAK_DB, noise_db + _TRIM_ABOVE_NOISE_DB)
    else:  # no silence: the quietest frames (pauses in continuous speech, or the noise of a noisy file)
        noise_db, noise_from = float(np.percentile(db, _QUIET_PERCENTILE)), "quietest frames"
        threshold = peak - _TRIM_BELOW_PEAK_DB
    speech = db > threshold
    frames = _runs(speech, _MIN_RUN_FRAMES)
    first, last = int(frames[0]), int(frames[-1])  # never empty: the core is above the threshold
    margin = round(_MARGIN_S * rate)
    start = max(0, first * frame - margin)
    end = min(len(mono), (last + 1) * frame + margin)
    speech_db = float(np.median(db[core]))
    magnitude = np.abs(audio[start:end]).max(axis=1)
    top = float(np.abs(audio).max())
    full_scale = top if top > _FLOAT_GAIN_PEAK else 1.0
    clipped = float(np.mean(magnitude >= _CLIP_LEVEL * full_scale)) if magnitude.size else 0.0
    return Analysis(
        rate=rate, channels=audio.shape[1], raw_seconds=len(mono) / rate, start=start, end=end,
        peak_dbfs=round(peak, 2), noise_db=round(noise_db, 2), noise_from=noise_from,
        speech_db=round(speech_db, 2), snr_db=round(speech_db - noise_db, 2),
        speech_seconds=round(int(speech[first: last + 1].sum()) * frame / rate, 3),
        clipped_fraction=round(clipped, 6), full_scale=round(full_scale, 4),
        bandwidth_hz=bandwidth_hz(mono[start:end], rate),
    )


def criteria() -> dict[str, str]:
    """The measurements and rejection criteria in words, with their thresholds (the real corpus's manifest)."""
    return {
        "analysis": f"{_FRAME_S * 1000:.0f} ms RMS frames after a 30 Hz zero-phase high-pass; levels in dBFS, "
                    f"digital silence counted as {_DB_CLAMP:.0f} dB",
        "loud_core": f"frames within {_CORE_BELOW_PEAK_DB:g} dB of the peak (the loudest level held for "
                     f"{_MIN_RUN_FRAMES * _FRAME_S * 1000:.0f} ms)",
        "noise": f"median level of the frames >= {_NOISE_GUARD_FRAMES * _FRAME_S:g} s away from the loud core, "
                 f"when there are >= {_NOISE_MIN_FRAMES} of them ('silence'); else the {_QUIET_PERCENTILE}th "
                 f"percentile of all frame levels ('quietest frames')",
        "speech_frame": f"above both (peak - {_TRIM_BELOW_PEAK_DB:g} dB) and, with noise from silence, "
                        f"(noise + {_TRIM_ABOVE_NOISE_DB:g} dB)",
        "trim": f"from the first to the last run of >= {_MIN_RUN_FRAMES} speech frames, "
                f"plus {_MARGIN_S:g} s on each side",
        "tone": "Asterisk's signal tones: " + ", ".join(sorted(ASTERISK_TONES)),
        "silent": f"peak below {_SILENT_DBFS:g} dBFS, or no loud core",
        "clipped": f"more than {_CLIP_MAX_FRACTION:.1%} of the trimmed clip's samples at >= "
                   f"{_CLIP_LEVEL:.0%} of full scale (1.0; a file peaking above {_FLOAT_GAIN_PEAK:g} is a float "
                   f"stream with a wrong gain, judged at its own peak)",
        "noisy": "the loud core's median level less than "
                 + " or ".join(f"{v:g} dB above the noise from {k}" for k, v in _MIN_SNR_DB.items()),
        "too_short": f"trimmed clip shorter than {_MIN_SECONDS:g} s or less than {_MIN_SPEECH_S:g} s of speech frames",
        "bandwidth": f"highest frequency within {_BANDWIDTH_DB:g} dB of the peak of the trimmed clip's "
                     f"long-term spectrum (Welch, Hann, ~46 ms segments) at the native rate",
    }
