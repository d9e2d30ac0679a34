"""The WORLD-based metrics: mel-cepstral distortion (MCD, DTW-aligned) and F0 / voicing errors.

Both analyse the two waveforms with WORLD (pyworld: harvest F0, CheapTrick spectral envelope, 5 ms
frames); :func:`diffvoc.evaluation.metrics.evaluate_pair` runs that analysis once for both metrics.

* **MCD** — mel-cepstra (pysptk ``sp2mc``) of the envelope, order and all-pass constant α by sample rate
  (:data:`MCD_TABLE`), DTW-aligned, ``c0`` excluded by default;
  ``(10 / ln 10) · sqrt(2 Σ_d (c_d − ĉ_d)²)`` averaged over the aligned frame pairs, in dB.
* **F0** — RMSE of ``1200 · log2(F0_deg / F0_ref)`` in cents and F0 RMSE in Hz over frames voiced in
  both; V/UV error = the fraction of frames whose voicing decisions differ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diffvoc.errors import AudioError, ConfigError
from diffvoc.evaluation.metric_inputs import check_sr, match, require

WORLD_F0_FLOOR: float = 40.0
WORLD_F0_CEIL: float = 800.0
WORLD_FRAME_PERIOD_MS: float = 5.0

#: Mel-cepstrum order and all-pass constant α per sample rate. 16/22.05/44.1/48 kHz α are SPTK's
#: mel-scale approximations (SPTK reference manual, also used by the HTS demos); 24 kHz has no SPTK
#: entry and uses ``pysptk.util.mcepalpha(24000)`` = 0.466. Orders 23 / 34 follow the project doc.
MCD_TABLE: dict[int, tuple[int, float]] = {
    16000: (23, 0.42),
    22050: (34, 0.45),
    24000: (34, 0.466),
    44100: (34, 0.53),
    48000: (34, 0.55),
}

WORLD_DESCRIPTION = (f"WORLD (pyworld) CheapTrick spectral envelope with harvest F0 "
                     f"(floor {WORLD_F0_FLOOR:g} Hz, ceil {WORLD_F0_CEIL:g} Hz, {WORLD_FRAME_PERIOD_MS:g} ms frames)")




@dataclass(frozen=True)
class WorldAnalysis:
    """One waveform's WORLD analysis: harvest F0 ``[frames]`` (0 = unvoiced) and the CheapTrick power
    envelope ``[frames, bins]``."""

    f0: np.ndarray
    sp: np.ndarray


def world_analysis(x: np.ndarray, sr: int) -> WorldAnalysis:
    """Harvest F0 and CheapTrick spectral envelope (power) with the fixed WORLD settings."""
    pw = require("pyworld")
    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pw.harvest(x, sr, f0_floor=WORLD_F0_FLOOR, f0_ceil=WORLD_F0_CEIL,
                       frame_period=WORLD_FRAME_PERIOD_MS)
    sp = pw.cheaptrick(x, f0, t, sr)
    return WorldAnalysis(f0=np.asarray(f0), sp=np.asarray(sp))


def mcd_params(sr: int) -> tuple[int, float, str]:
    """Mel-cepstrum ``(order, alpha, source)`` for a sample rate (table, else ``pysptk.util.mcepalpha``)."""
    sr = check_sr(sr)
    if sr in MCD_TABLE:
        order, alpha = MCD_TABLE[sr]
        return order, alpha, "table"
    util = require("pysptk.util")
    alpha = round(float(util.mcepalpha(sr)), 3)
    return (23 if sr <= 16000 else 34), alpha, "pysptk.util.mcepalpha"


@dataclass(frozen=True)
class MCDResult:
    """Mel-cepstral distortion in dB together with the settings that produced it."""

    mcd_db: float
    sample_rate: int
    order: int
    alpha: float
    alpha_source: str
    include_c0: bool
    dtw: bool
    frames_ref: int
    frames_deg: int
    aligned_pairs: int
    features: str = "mel-cepstrum (pysptk.sp2mc) of " + WORLD_DESCRIPTION

    def settings(self) -> dict[str, Any]:
        """Everything except the value, for reports."""
        out = asdict(self)
        out.pop("mcd_db")
        return out


def dtw_path(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost monotonic alignment through a cost matrix ``[N, M]``.

    Steps (1, 0), (0, 1) and (1, 1), all with weight 1; the path runs from (0, 0) to (N-1, M-1).
    Returns the index pairs as an int array ``[L, 2]``. The accumulation is vectorised along
    anti-diagonals, so memory is O(N·M).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise AudioError(f"dtw_path: expected a non-empty 2-D cost matrix, got shape {cost.shape}")
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    step = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0 diagonal, 1 from (i-1, j), 2 from (i, j-1)
    for k in range(2, n + m + 1):  # k = i + j with 1-based i, j
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        cand = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        best = np.argmin(cand, axis=0)
        acc[i, j] = cost[i - 1, j - 1] + cand[best, np.arange(i.size)]
        step[i, j] = best
    path = []
    i, j = n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        s = step[i, j]
        if s == 0:
            i, j = i - 1, j - 1
        elif s == 1:
            i -= 1
        else:
            j -= 1
    return np.asarray(path[::-1], dtype=np.int64)


def mcd_from_world(wr: WorldAnalysis, wd: WorldAnalysis, sr: int, order: int | None, alpha: float | None,
                   include_c0: bool, use_dtw: bool) -> MCDResult:
    """MCD from two WORLD analyses (what :func:`mcd` and ``evaluate_pair`` share)."""
    sptk = require("pysptk")
    t_order, t_alpha, source = mcd_params(sr)
    order = t_order if order is None else int(order)
    alpha = t_alpha if alpha is None else float(alpha)
    if order < 1:
        raise ConfigError(f"MCD: order must be >= 1, got {order}")
    if not -1.0 < alpha < 1.0:
        raise ConfigError(f"MCD: alpha must be in (-1, 1), got {alpha}")
    if source == "table" and (order, alpha) != (t_order, t_alpha):
        source = "caller"
    cr = sptk.sp2mc(wr.sp, order, alpha)
    cd = sptk.sp2mc(wd.sp, order, alpha)
    first = 0 if include_c0 else 1
    cr, cd = cr[:, first:], cd[:, first:]
    if use_dtw:
        from scipy.spatial.distance import cdist

        path = dtw_path(cdist(cr, cd, metric="euclidean"))
        diff = cr[path[:, 0]] - cd[path[:, 1]]
    else:
        frames = min(len(cr), len(cd))
        diff = cr[:frames] - cd[:frames]
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(diff**2, axis=1))
    return MCDResult(mcd_db=float(np.mean(per_frame)), sample_rate=sr, order=order, alpha=alpha,
                     alpha_source=source, include_c0=include_c0, dtw=use_dtw, frames_ref=len(cr),
                     frames_deg=len(cd), aligned_pairs=len(diff))


def mcd(
    ref: np.ndarray,
    deg: np.ndarray,
    sr: int,
    *,
    order: int | None = None,
    alpha: float | None = None,
    include_c0: bool = False,
    use_dtw: bool = True,
) -> MCDResult:
    """Mel-cepstral distortion (dB) between ``ref`` and ``deg`` from WORLD spectral envelopes.

    Order and α default to :data:`MCD_TABLE` for ``sr``; ``c0`` (energy) is excluded unless
    ``include_c0``. Frames are DTW-aligned unless ``use_dtw=False``. The returned :class:`MCDResult`
    records the settings used.
    """
    sr = check_sr(sr)
    r, d = match(ref, deg)
    return mcd_from_world(world_analysis(r, sr), world_analysis(d, sr), sr, order, alpha, include_c0, use_dtw)


@dataclass(frozen=True)
class F0Result:
    """F0 errors: log-F0 RMSE in cents, F0 RMSE in Hz (frames voiced in both) and V/UV error rate."""

    rmse_cents: float
    rmse_hz: float
    vuv_error: float
    voiced_both: int
    frames: int


def f0_from_world(wr: WorldAnalysis, wd: WorldAnalysis) -> F0Result:
    """F0 errors from two WORLD analyses, frame by frame (what :func:`f0_metrics` and ``evaluate_pair`` share)."""
    frames = min(len(wr.f0), len(wd.f0))
    fr, fd = wr.f0[:frames], wd.f0[:frames]
    vr, vd = fr > 0, fd > 0
    both = vr & vd
    vuv = float(np.mean(vr != vd)) if frames else math.nan
    if both.any():
        cents = 1200.0 * np.log2(fd[both] / fr[both])
        rmse_cents = float(np.sqrt(np.mean(cents**2)))
        rmse_hz = float(np.sqrt(np.mean((fd[both] - fr[both]) ** 2)))
    else:
        rmse_cents = rmse_hz = math.nan
    return F0Result(rmse_cents=rmse_cents, rmse_hz=rmse_hz, vuv_error=vuv,
                    voiced_both=int(both.sum()), frames=frames)


def f0_metrics(ref: np.ndarray, deg: np.ndarray, sr: int) -> F0Result:
    """WORLD-harvest F0 comparison of ``deg`` against ``ref`` (frame by frame, 5 ms frames).

    RMSE values are NaN when no frame is voiced in both signals.
    """
    sr = check_sr(sr)
    r, d = match(ref, deg)
    return f0_from_world(world_analysis(r, sr), world_analysis(d, sr))
