"""Objective speech metrics for vocoder evaluation (reference vs. degraded/generated waveform).

Every setting is fixed in :data:`METRIC_SETTINGS` (print it with :func:`format_metric_settings`):

* **MR-STFT** — FFT sizes (1024, 2048, 512), hops (120, 240, 50), Hann windows (600, 1200, 240);
  ``|X| = sqrt(max(re² + im², 1e-7))``; per resolution spectral convergence
  ``‖|Y| − |X|‖_F / ‖|Y|‖_F`` (Y = reference) plus ``mean |log|Y| − log|X||``, both averaged over the
  resolutions; the total is their sum. Implemented with :func:`torch.stft`, so
  :class:`MultiResolutionSTFTLoss` doubles as a differentiable training loss.
* **Log-mel L1 (LS-MAE)** — ``mean |logmel(ref) − logmel(deg)|`` with a caller-supplied mel function
  (the model's own, already log-compressed) or a fixed default log-mel.
* **MCD** and **F0** — from a WORLD analysis (pyworld harvest F0, CheapTrick envelope, 5 ms frames):
  DTW-aligned mel-cepstral distortion in dB, and log-F0 RMSE in cents, F0 RMSE in Hz and V/UV error
  (:mod:`diffvoc.evaluation.world_metrics`, which states the formulas).
* **PESQ** wide-band (``pesq``, mode ``'wb'``) at 16 kHz, **STOI**/**ESTOI** (``pystoi``, which resamples to
  its native 10 kHz itself), **DNSMOS** P.835 SIG/BAK/OVRL and P.808 (``speechmos``, bundled ONNX models,
  runs offline) at 16 kHz. Resampling to 16 kHz uses :func:`librosa.resample` (soxr_hq).

The optional packages (pesq, pystoi, pysptk, pyworld, speechmos) are imported lazily
(:mod:`diffvoc.evaluation.metric_inputs`); a missing one raises :class:`~diffvoc.errors.DiffvocError`
naming the ``pip install`` to run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from diffvoc.diffusion.spectral import (
    MR_STFT_FFT_SIZES,
    MR_STFT_HOP_SIZES,
    MR_STFT_MAG_EPS,
    MR_STFT_WIN_LENGTHS,
    MultiResolutionSTFTLoss,
)
from diffvoc.errors import AudioError, ConfigError, DiffvocError
from diffvoc.evaluation.metric_inputs import as_mono, check_sr, match, require, resample
from diffvoc.evaluation.world_metrics import (
    MCD_TABLE,
    WORLD_DESCRIPTION,
    WORLD_F0_CEIL,
    WORLD_F0_FLOOR,
    WORLD_FRAME_PERIOD_MS,
    F0Result,
    MCDResult,
    dtw_path,
    f0_from_world,
    f0_metrics,
    mcd,
    mcd_from_world,
    mcd_params,
    world_analysis,
)

__all__ = [
    "ALL_METRICS",
    "METRIC_SETTINGS",
    "MCD_TABLE",
    "F0Result",
    "MCDResult",
    "default_log_mel",
    "dnsmos",
    "dtw_path",
    "evaluate_pair",
    "f0_metrics",
    "format_metric_settings",
    "log_mel_l1",
    "mcd",
    "mcd_params",
    "mean_ci95",
    "metric_settings",
    "mr_stft",
    "mr_stft_parts",
    "pesq_wb",
    "stoi",
]

# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------

#: Metric groups understood by :func:`evaluate_pair` (``which=``), in report order.
ALL_METRICS: tuple[str, ...] = ("mr_stft", "log_mel_l1", "mcd", "f0", "pesq", "stoi", "estoi", "dnsmos")


PESQ_SR: int = 16000
DNSMOS_SR: int = 16000

#: Default log-mel for the LS-MAE when no ``mel_fn`` is given (HiFi-GAN style analysis).
DEFAULT_LOG_MEL: dict[str, Any] = {
    "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 80, "fmin": 0.0, "fmax": "sr/2",
    "window": "hann (periodic)", "center": True, "magnitude": "|STFT| (power 1)", "mel_basis": "slaney",
    "log": "ln(clamp(mel, 1e-5))",
}

#: Human-readable description of every metric setting (sample-rate independent part).
METRIC_SETTINGS: dict[str, dict[str, Any]] = {
    "mr_stft": {
        "fft_sizes": list(MR_STFT_FFT_SIZES), "hop_sizes": list(MR_STFT_HOP_SIZES),
        "win_lengths": list(MR_STFT_WIN_LENGTHS), "window": "hann (periodic), zero-padded to fft size",
        "stft": "torch.stft, center=True, reflect padding",
        "magnitude": f"sqrt(max(re^2 + im^2, {MR_STFT_MAG_EPS:g}))",
        "spectral_convergence": "||S_ref| - |S_deg||_F / ||S_ref||_F per utterance",
        "log_magnitude": "mean |log|S_ref| - log|S_deg||",
        "aggregation": "each part averaged over resolutions; mr_stft = sc + mag",
        "keys": ["mr_stft", "mr_stft_sc", "mr_stft_mag"],
    },
    "log_mel_l1": {
        "formula": "mean |logmel(ref) - logmel(deg)| over bands and frames",
        "mel": "caller's mel_fn (model features, already log-compressed) or the default log-mel",
        "default_log_mel": DEFAULT_LOG_MEL,
        "keys": ["log_mel_l1"],
    },
    "mcd": {
        "features": "mel-cepstrum via pysptk.sp2mc of the " + WORLD_DESCRIPTION,
        "order_alpha_by_sr": {str(k): {"order": v[0], "alpha": v[1]} for k, v in MCD_TABLE.items()},
        "other_sr": "order 23 (sr <= 16 kHz) or 34, alpha = pysptk.util.mcepalpha(sr)",
        "c0": "excluded (coefficients 1..order) unless include_c0=True",
        "alignment": "DTW (steps (1,0), (0,1), (1,1), Euclidean cepstral distance)",
        "formula": "(10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2), mean over aligned frame pairs (dB)",
        "frames": "all frames (no silence removal)",
        "keys": ["mcd"],
    },
    "f0": {
        "extractor": f"pyworld.harvest, f0_floor {WORLD_F0_FLOOR:g} Hz, f0_ceil {WORLD_F0_CEIL:g} Hz, "
                     f"frame_period {WORLD_FRAME_PERIOD_MS:g} ms",
        "alignment": "frame by frame (no DTW)",
        "f0_rmse_cents": "RMSE of 1200 * log2(f0_deg / f0_ref) over frames voiced in both (NaN if none)",
        "f0_rmse_hz": "RMSE of f0_deg - f0_ref in Hz over frames voiced in both (NaN if none)",
        "vuv_error": "fraction of all frames whose voiced/unvoiced decisions differ",
        "keys": ["f0_rmse_cents", "f0_rmse_hz", "vuv_error"],
    },
    "pesq": {
        "package": "pesq", "mode": "wb (ITU-T P.862.2)", "sample_rate": PESQ_SR,
        "resampling": "librosa.resample soxr_hq when sr != 16 kHz", "range": "about 1.04 .. 4.64",
        "keys": ["pesq_wb"],
    },
    "stoi": {"package": "pystoi", "extended": False, "sample_rate": "native 10 kHz (pystoi resamples)",
             "too_short": "NaN when < 30 non-silent frames (~0.4 s of speech)", "keys": ["stoi"]},
    "estoi": {"package": "pystoi", "extended": True, "sample_rate": "native 10 kHz (pystoi resamples)",
              "too_short": "NaN when < 30 non-silent frames (~0.4 s of speech)", "keys": ["estoi"]},
    "dnsmos": {
        "package": "speechmos (bundled ONNX models, offline)", "sample_rate": DNSMOS_SR,
        "models": "P.835 sig_bak_ovr.onnx (non-personalized) + P.808 model_v8.onnx",
        "input": "degraded signal only (no reference), resampled to 16 kHz, clipped to [-1, 1], "
                 "tiled to >= 9.01 s and scored per 9.01 s window with 1 s hop",
        "keys": ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"],
    },
    "common": {
        "length_matching": "both signals trimmed to the shorter length",
        "aggregation": "per-utterance mean with 95% CI half width t_{0.975, n-1} * s / sqrt(n)",
    },
}

# ---------------------------------------------------------------------------------------------------
# MR-STFT
# ---------------------------------------------------------------------------------------------------


def mr_stft_parts(ref: np.ndarray, deg: np.ndarray) -> dict[str, float]:
    """MR-STFT distance of ``deg`` from ``ref`` (float64): ``{'mr_stft', 'mr_stft_sc', 'mr_stft_mag'}``.

    ``mr_stft`` is ``mr_stft_sc + mr_stft_mag``. Signals are trimmed to the shorter length.
    """
    r, d = match(ref, deg)
    loss = MultiResolutionSTFTLoss()
    with torch.no_grad():
        sc, mag = loss(torch.from_numpy(d), torch.from_numpy(r))
    sc_f, mag_f = float(sc), float(mag)
    return {"mr_stft": sc_f + mag_f, "mr_stft_sc": sc_f, "mr_stft_mag": mag_f}


def mr_stft(ref: np.ndarray, deg: np.ndarray) -> float:
    """Total MR-STFT distance (spectral convergence + log-magnitude L1) of ``deg`` from ``ref``."""
    return mr_stft_parts(ref, deg)["mr_stft"]


# ---------------------------------------------------------------------------------------------------
# Log-mel L1
# ---------------------------------------------------------------------------------------------------


def default_log_mel(sr: int) -> Callable[[np.ndarray], np.ndarray]:
    """The fixed log-mel used for the LS-MAE when no model mel is given (see :data:`DEFAULT_LOG_MEL`)."""
    sr = check_sr(sr)

    def mel_fn(audio: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(
            y=np.asarray(audio, dtype=np.float64), sr=sr, n_fft=1024, hop_length=256, win_length=1024,
            window="hann", center=True, pad_mode="reflect", power=1.0, n_mels=80, fmin=0.0,
            fmax=sr / 2, htk=False, norm="slaney")
        return np.log(np.maximum(mel, 1e-5))

    return mel_fn


def log_mel_l1(
    ref: np.ndarray,
    deg: np.ndarray,
    mel_fn: Callable[[np.ndarray], Any],
    *,
    apply_log: bool = False,
) -> float:
    """Mean absolute difference of log-mel spectrograms (LS-MAE).

    ``mel_fn`` maps a waveform to the model's mel features, expected already log-compressed (as
    ``diffvoc.audio.compute_mel`` returns them); pass ``apply_log=True`` if it returns linear mel
    magnitudes, which are then compressed with ``ln(clamp(·, 1e-5))``. Feature units follow ``mel_fn``
    (natural-log mel, or normalised dB for the lmnt recipe), so values are only comparable across
    models sharing the same mel recipe. Frame counts are trimmed to the shorter one.
    """
    if mel_fn is None:
        raise ConfigError("log_mel_l1 needs a mel_fn (use default_log_mel(sr) for the fixed default)")
    r, d = match(ref, deg)
    mr = np.asarray(mel_fn(r.astype(np.float32)), dtype=np.float64)
    md = np.asarray(mel_fn(d.astype(np.float32)), dtype=np.float64)
    if mr.shape[:-1] != md.shape[:-1] or mr.ndim < 1:
        raise AudioError(f"log_mel_l1: mel shapes differ: {mr.shape} vs {md.shape}")
    frames = min(mr.shape[-1], md.shape[-1])
    mr, md = mr[..., :frames], md[..., :frames]
    if apply_log:
        mr, md = np.log(np.maximum(mr, 1e-5)), np.log(np.maximum(md, 1e-5))
    if mr.size == 0:
        raise AudioError("log_mel_l1: mel has no frames")
    return float(np.mean(np.abs(mr - md)))


# ---------------------------------------------------------------------------------------------------
# PESQ, STOI, DNSMOS
# ---------------------------------------------------------------------------------------------------


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """Wide-band PESQ (P.862.2) at 16 kHz; both signals are resampled to 16 kHz first."""
    sr = check_sr(sr)
    mod = require("pesq")
    r, d = match(ref, deg)
    r16, d16 = resample(r, sr, PESQ_SR), resample(d, sr, PESQ_SR)
    try:
        return float(mod.pesq(PESQ_SR, r16, d16, "wb"))
    except mod.PesqError as exc:
        raise AudioError(f"PESQ failed ({type(exc).__name__}): {exc}") from exc


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int, *, extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended=True``) via pystoi, which resamples to 10 kHz itself.

    Returns NaN (instead of pystoi's placeholder 1e-5) when fewer than 30 non-silent analysis frames
    (about 0.4 s of speech) remain, i.e. the utterance is too short or too quiet for STOI.
    """
    sr = check_sr(sr)
    mod = require("pystoi")
    r, d = match(ref, deg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(mod.stoi(r, d, sr, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return value


def dnsmos(audio: np.ndarray, sr: int) -> dict[str, float]:
    """Non-intrusive DNSMOS of one waveform: ``{'sig', 'bak', 'ovrl'}`` (P.835) and ``'p808'``.

    Uses the ONNX models bundled in the ``speechmos`` wheel (no network access). The signal is
    resampled to 16 kHz and clipped to [-1, 1] (as writing a 16-bit file would).
    """
    sr = check_sr(sr)
    x = as_mono(audio, "audio")
    mod = require("speechmos.dnsmos")
    x16 = np.clip(resample(x, sr, DNSMOS_SR), -1.0, 1.0).astype(np.float32)
    try:
        out = mod.run(x16, DNSMOS_SR)
    except (OSError, RuntimeError) as exc:  # missing model file / onnxruntime failure
        raise DiffvocError(f"DNSMOS (speechmos) failed: {exc}") from exc
    return {"sig": float(out["sig_mos"]), "bak": float(out["bak_mos"]),
            "ovrl": float(out["ovrl_mos"]), "p808": float(out["p808_mos"])}


# ---------------------------------------------------------------------------------------------------
# All together
# ---------------------------------------------------------------------------------------------------


def metric_settings(sr: int | None = None, *, mel_fn_given: bool | None = None) -> dict[str, Any]:
    """:data:`METRIC_SETTINGS`, resolved for a sample rate (MCD order/α, resampling) if ``sr`` is given."""
    out: dict[str, Any] = {k: dict(v) for k, v in METRIC_SETTINGS.items()}
    if sr is not None:
        try:
            order, alpha, source = mcd_params(sr)
            out["mcd"]["resolved"] = {"sample_rate": int(sr), "order": order, "alpha": alpha,
                                      "alpha_source": source}
        except DiffvocError as exc:  # an off-table rate needs pysptk to derive alpha
            out["mcd"]["resolved"] = f"unavailable: {exc}"
        out["pesq"]["resampled_from"] = int(sr)
        out["dnsmos"]["resampled_from"] = int(sr)
    if mel_fn_given is not None:
        out["log_mel_l1"]["mel_used"] = "caller mel_fn" if mel_fn_given else "default log-mel"
    return out


def format_metric_settings(sr: int | None = None, *, mel_fn_given: bool | None = None) -> str:
    """A plain-text block describing every metric setting, for printing in reports."""
    lines: list[str] = []

    def emit(obj: Any, indent: int) -> None:
        for key, val in obj.items():
            if isinstance(val, dict):
                lines.append(" " * indent + f"{key}:")
                emit(val, indent + 2)
            else:
                lines.append(" " * indent + f"{key}: {val}")

    emit(metric_settings(sr, mel_fn_given=mel_fn_given), 0)
    return "\n".join(lines)


def evaluate_pair(
    ref: np.ndarray,
    deg: np.ndarray,
    sr: int,
    mel_fn: Callable[[np.ndarray], Any] | None = None,
    which: set[str] | None = None,
) -> dict[str, float]:
    """Compute the requested metric groups (default: all of :data:`ALL_METRICS`) for one utterance.

    Both signals are trimmed to the shorter length. ``mel_fn`` is the model's (log-)mel function for
    the log-mel L1; without it the fixed :func:`default_log_mel` is used. Returned keys (per group):
    ``mr_stft, mr_stft_sc, mr_stft_mag``; ``log_mel_l1``; ``mcd``; ``f0_rmse_cents, f0_rmse_hz,
    vuv_error``; ``pesq_wb``; ``stoi``; ``estoi``; ``dnsmos_sig, dnsmos_bak, dnsmos_ovrl, dnsmos_p808``
    (DNSMOS of the degraded signal only). Settings: :func:`metric_settings`.
    """
    sr = check_sr(sr)
    groups = set(ALL_METRICS) if which is None else set(which)
    unknown = groups - set(ALL_METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; choose from {list(ALL_METRICS)}")
    r, d = match(ref, deg)
    out: dict[str, float] = {}
    if "mr_stft" in groups:
        out.update(mr_stft_parts(r, d))
    if "log_mel_l1" in groups:
        out["log_mel_l1"] = log_mel_l1(r, d, mel_fn if mel_fn is not None else default_log_mel(sr))
    if "mcd" in groups or "f0" in groups:
        wr, wd = world_analysis(r, sr), world_analysis(d, sr)
        if "mcd" in groups:
            out["mcd"] = mcd_from_world(wr, wd, sr, None, None, False, True).mcd_db
        if "f0" in groups:
            f0 = f0_from_world(wr, wd)
            out.update(f0_rmse_cents=f0.rmse_cents, f0_rmse_hz=f0.rmse_hz, vuv_error=f0.vuv_error)
    if "pesq" in groups:
        out["pesq_wb"] = pesq_wb(r, d, sr)
    if "stoi" in groups:
        out["stoi"] = stoi(r, d, sr)
    if "estoi" in groups:
        out["estoi"] = stoi(r, d, sr, extended=True)
    if "dnsmos" in groups:
        out.update({f"dnsmos_{k}": v for k, v in dnsmos(d, sr).items()})
    return out


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% confidence half width ``t_{0.975, n-1} · s / sqrt(n)`` (Student t, sample std).

    Non-finite values (e.g. an F0 RMSE with no voiced frames) are dropped. Returns ``(nan, nan)`` when
    nothing is left and ``(mean, nan)`` for a single value. Raises :class:`DiffvocError` on empty input.
    """
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise DiffvocError("mean_ci95: no values")
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, half
