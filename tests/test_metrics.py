"""Tests for diffvoc.evaluation.metrics: exact values on identical/tiny inputs, monotone degradation, packaging."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import signal

import diffvoc.evaluation.metrics as M
from diffvoc.errors import AudioError, ConfigError, DiffvocError

SRC = Path(__file__).resolve().parents[1] / "src"


def _needs(*modules: str) -> None:
    for mod in modules:
        pytest.importorskip(mod)


# ------------------------------------------------------------------------------------------------
# Signals
# ------------------------------------------------------------------------------------------------


def speechlike(sr: int, dur: float = 2.5, seed: int = 0) -> np.ndarray:
    """Source-filter toy speech: harmonic source with a pitch contour, syllable-wise vowel formants,
    amplitude envelopes, pauses, band-passed fricative noise bursts and leading/trailing silence."""
    rng = np.random.default_rng(seed)
    n = int(dur * sr)
    t = np.arange(n) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t) + 25 * t
    phase = 2 * np.pi * np.cumsum(f0) / sr
    src = sum((1.0 / k) * (k * f0 < 0.45 * sr) * np.sin(k * phase) for k in range(1, 40))
    vowels = [(700, 1200, 2600), (300, 2300, 3000), (500, 900, 2500), (400, 1900, 2600)]
    syl = int(0.3 * sr)
    out = np.zeros(n)
    for s0 in range(0, n, syl):
        seg = src[s0:s0 + syl]
        for fc, gain in zip(vowels[(s0 // syl) % len(vowels)], (1.0, 0.6, 0.3)):
            b, a = signal.iirpeak(fc, Q=fc / 90.0, fs=sr)
            out[s0:s0 + syl] += gain * signal.lfilter(b, a, seg)
    env = np.clip(np.sin(np.pi * (t % 0.3) / 0.3) * 1.6, 0, 1) ** 1.5
    voiced = (t % 0.9) < 0.6
    out = out * env * voiced
    out = 0.5 * out / np.max(np.abs(out))
    sos = signal.butter(4, [3000, min(7000, 0.45 * sr)], btype="band", fs=sr, output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(n))
    burst = (~voiced) & ((t % 0.9) > 0.65) & ((t % 0.9) < 0.8)
    out += 0.045 * noise / np.std(noise) * burst
    out[: int(0.15 * sr)] = 0
    out[-int(0.15 * sr):] = 0
    return out + 1e-4 * rng.standard_normal(n)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal(x.size)
    return x + w / np.std(w) * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))


def lowpass(x: np.ndarray, sr: int, cutoff: float) -> np.ndarray:
    return signal.sosfiltfilt(signal.butter(8, cutoff, fs=sr, output="sos"), x)


def harmonic(sr: int, f0: float, dur: float = 1.5) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    return 0.3 * x / np.max(np.abs(x))


# ------------------------------------------------------------------------------------------------
# Import / packaging
# ------------------------------------------------------------------------------------------------


def test_import_does_not_load_optional_packages() -> None:
    code = ("import sys, diffvoc.evaluation.metrics\n"
            "bad = [m for m in ('pesq', 'pystoi', 'pysptk', 'pyworld', 'speechmos', 'onnxruntime')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("module", "call", "pip_name"),
    [
        ("pesq", lambda x: M.pesq_wb(x, x, 16000), "pesq"),
        ("pystoi", lambda x: M.stoi(x, x, 16000), "pystoi"),
        ("pyworld", lambda x: M.f0_metrics(x, x, 16000), "pyworld"),
        ("pysptk", lambda x: M.mcd(x, x, 16000), "pysptk"),
        ("speechmos", lambda x: M.dnsmos(x, 16000), "speechmos"),
    ],
)
def test_missing_package_raises_diffvoc_error(monkeypatch, module, call, pip_name) -> None:
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    x = harmonic(16000, 150.0, dur=0.5)
    with pytest.raises(DiffvocError, match=f"pip install {pip_name}"):
        call(x)
    # Metrics without optional packages keep working.
    assert M.evaluate_pair(x, x, 16000, which={"mr_stft", "log_mel_l1"})["mr_stft"] == 0.0


# ------------------------------------------------------------------------------------------------
# MR-STFT
# ------------------------------------------------------------------------------------------------


def _np_stft_mag(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    n = np.arange(win)
    window = np.zeros(n_fft)
    off = (n_fft - win) // 2
    window[off:off + win] = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann, centred
    xp = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack([xp[i:i + n_fft] for i in range(0, xp.size - n_fft + 1, hop)])
    spec = np.fft.rfft(frames * window, axis=1)
    return np.sqrt(np.maximum(spec.real**2 + spec.imag**2, 1e-7))


def _np_mr_stft(ref: np.ndarray, deg: np.ndarray) -> tuple[float, float]:
    sc, mag = [], []
    for n_fft, hop, win in [(1024, 120, 600), (2048, 240, 1200), (512, 50, 240)]:
        y, x = _np_stft_mag(ref, n_fft, hop, win), _np_stft_mag(deg, n_fft, hop, win)
        sc.append(np.linalg.norm(y - x) / np.linalg.norm(y))
        mag.append(np.mean(np.abs(np.log(y) - np.log(x))))
    return float(np.mean(sc)), float(np.mean(mag))


def test_mr_stft_matches_hand_computed_reference() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(1100)
    deg = 0.7 * ref + 0.1 * rng.standard_normal(1100)
    sc, mag = _np_mr_stft(ref, deg)
    parts = M.mr_stft_parts(ref, deg)
    assert parts["mr_stft_sc"] == pytest.approx(sc, rel=1e-9, abs=1e-12)
    assert parts["mr_stft_mag"] == pytest.approx(mag, rel=1e-9, abs=1e-12)
    assert M.mr_stft(ref, deg) == pytest.approx(sc + mag, rel=1e-9)
    assert sc > 0.1 and mag > 0.1


def test_mr_stft_identical_is_zero_and_trims() -> None:
    x = speechlike(16000, dur=0.5)
    assert M.mr_stft(x, x) <= 1e-6
    longer = np.concatenate([x, np.ones(300)])
    assert M.mr_stft(x, longer) <= 1e-6  # trimmed to the shorter signal


def test_mr_stft_loss_gradients_and_batching() -> None:
    torch.manual_seed(0)
    from diffvoc.diffusion.spectral import MultiResolutionSTFTLoss

    loss = MultiResolutionSTFTLoss()
    target = torch.randn(2, 4000)
    pred = (target + 0.3 * torch.randn(2, 4000)).requires_grad_(True)
    sc, mag = loss(pred, target)
    assert sc.dim() == 0 and mag.dim() == 0
    (sc + mag).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    with torch.no_grad():  # batch value is the mean of per-utterance values
        singles = [loss(pred[i:i + 1], target[i:i + 1]) for i in range(2)]
        assert float(sc) == pytest.approx(np.mean([float(s[0]) for s in singles]), rel=1e-5)
        assert float(mag) == pytest.approx(np.mean([float(s[1]) for s in singles]), rel=1e-5)
        sc3, _ = loss(pred[:, None], target[:, None])  # [B, 1, T] accepted
        assert float(sc3) == pytest.approx(float(sc), rel=1e-6)
    assert "window_0" not in loss.state_dict()
    with pytest.raises(AudioError, match="too short"):
        loss(torch.zeros(1, 1024), torch.zeros(1, 1024))
    with pytest.raises(AudioError):
        loss(torch.zeros(1, 4000), torch.zeros(1, 3999))


# ------------------------------------------------------------------------------------------------
# Log-mel L1, DTW, MCD, F0
# ------------------------------------------------------------------------------------------------


def test_log_mel_l1_caller_mel_and_apply_log() -> None:
    sr = 16000
    x = speechlike(sr, dur=1.0)
    y = add_noise(x, 10)
    log_fn = M.default_log_mel(sr)
    assert M.log_mel_l1(x, x, log_fn) == 0.0
    lin_fn = lambda a: np.exp(log_fn(a))  # noqa: E731 - a "linear mel" function
    assert M.log_mel_l1(x, y, lin_fn, apply_log=True) == pytest.approx(M.log_mel_l1(x, y, log_fn), rel=1e-6)
    torch_fn = lambda a: torch.from_numpy(log_fn(a))  # noqa: E731 - tensors are accepted too
    assert M.log_mel_l1(x, y, torch_fn) == pytest.approx(M.log_mel_l1(x, y, log_fn))
    assert M.evaluate_pair(x, y, sr, mel_fn=log_fn, which={"log_mel_l1"})["log_mel_l1"] > 0.5


def test_dtw_path() -> None:
    cost = np.array([[0.0, 5, 5], [5, 0, 5], [5, 0, 5], [5, 5, 0]])
    assert M.dtw_path(cost).tolist() == [[0, 0], [1, 1], [2, 1], [3, 2]]
    a = np.random.default_rng(0).standard_normal((30, 4))
    b = np.repeat(a, 2, axis=0)  # b is a stretched by 2: perfect alignment has zero cost
    from scipy.spatial.distance import cdist

    path = M.dtw_path(cdist(a, b))
    assert np.allclose(a[path[:, 0]], b[path[:, 1]])
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [29, 59]


def test_mcd_params_table() -> None:
    assert M.mcd_params(16000) == (23, 0.42, "table")
    assert M.mcd_params(22050) == (34, 0.45, "table")
    assert M.mcd_params(24000)[:2] == (34, 0.466)
    assert M.mcd_params(44100)[:2] == (34, 0.53)
    assert M.mcd_params(48000)[:2] == (34, 0.55)
    _needs("pysptk")
    order, alpha, source = M.mcd_params(32000)
    assert (order, source) == (34, "pysptk.util.mcepalpha") and 0.45 < alpha < 0.55


def test_mcd_gain_only_changes_c0() -> None:
    """Halving the amplitude scales the WORLD power envelope by 1/4: only c0 moves, by ln(1/2).

    Excluding c0 the MCD is ~0; including it, (10/ln10)·sqrt(2)·ln 2 = 4.2572 dB exactly.
    """
    _needs("pyworld", "pysptk")
    sr = 22050
    x = speechlike(sr, dur=1.5)
    res = M.mcd(x, 0.5 * x, sr)
    assert res.mcd_db < 0.05
    assert (res.order, res.alpha, res.include_c0, res.dtw, res.alpha_source) == (34, 0.45, False, True, "table")
    assert "WORLD" in res.settings()["features"] and "mcd_db" not in res.settings()
    with_c0 = M.mcd(x, 0.5 * x, sr, include_c0=True, use_dtw=False)
    assert with_c0.mcd_db == pytest.approx(10 / math.log(10) * math.sqrt(2) * math.log(2), abs=0.05)
    assert M.mcd(x, x, sr).mcd_db == 0.0


def test_f0_metrics_units() -> None:
    _needs("pyworld")
    sr = 16000
    x = harmonic(sr, 150.0)
    up = harmonic(sr, 150.0 * 2 ** (100 / 1200))  # +100 cents
    same = M.f0_metrics(x, x, sr)
    assert same.rmse_cents == 0.0 and same.rmse_hz == 0.0 and same.vuv_error == 0.0
    res = M.f0_metrics(x, up, sr)
    assert res.rmse_cents == pytest.approx(100.0, abs=5.0)
    assert res.rmse_hz == pytest.approx(150.0 * (2 ** (1 / 12) - 1), abs=0.8)
    half = x.copy()
    half[x.size // 2:] = 0.0
    vuv = M.f0_metrics(x, half, sr)
    assert vuv.vuv_error == pytest.approx(0.5, abs=0.05)
    assert vuv.voiced_both == pytest.approx(vuv.frames / 2, abs=0.05 * vuv.frames)


# ------------------------------------------------------------------------------------------------
# All metrics: identity and monotone degradation
# ------------------------------------------------------------------------------------------------

ALL_PACKAGES = ("pesq", "pystoi", "pysptk", "pyworld", "speechmos", "onnxruntime")
CONDITIONS = ("clean", "noise20", "noise5", "lp4k", "lp2k")


@pytest.fixture(scope="module", params=[16000, 22050], ids=["16k", "22k"])
def results(request) -> tuple[int, dict[str, dict[str, float]]]:
    for mod in ALL_PACKAGES:
        pytest.importorskip(mod)
    sr = request.param
    x = speechlike(sr)
    degraded = {"clean": x.copy(), "noise20": add_noise(x, 20), "noise5": add_noise(x, 5),
                "lp4k": lowpass(x, sr, 4000), "lp2k": lowpass(x, sr, 2000)}
    return sr, {name: M.evaluate_pair(x, y, sr) for name, y in degraded.items()}


def test_identical_signals(results) -> None:
    _, res = results
    clean = res["clean"]
    assert clean["mr_stft"] <= 1e-6 and clean["mr_stft_sc"] <= 1e-6 and clean["mr_stft_mag"] <= 1e-6
    assert clean["log_mel_l1"] == 0.0
    assert clean["mcd"] == 0.0
    assert clean["f0_rmse_cents"] == 0.0 and clean["f0_rmse_hz"] == 0.0 and clean["vuv_error"] == 0.0
    assert clean["pesq_wb"] >= 4.5
    assert clean["stoi"] >= 0.999 and clean["estoi"] >= 0.999
    for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"):
        assert 1.0 <= clean[key] <= 5.0
    assert set(clean) == {"mr_stft", "mr_stft_sc", "mr_stft_mag", "log_mel_l1", "mcd", "f0_rmse_cents",
                          "f0_rmse_hz", "vuv_error", "pesq_wb", "stoi", "estoi", "dnsmos_sig",
                          "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}


HIGHER_IS_WORSE = ("mr_stft", "mr_stft_sc", "mr_stft_mag", "log_mel_l1", "mcd")
LOWER_IS_WORSE = ("pesq_wb", "stoi", "estoi")


@pytest.mark.parametrize("series", [("clean", "noise20", "noise5"), ("clean", "lp4k", "lp2k")],
                         ids=["noise", "lowpass"])
def test_metrics_degrade_monotonically(results, series) -> None:
    _, res = results
    for key in HIGHER_IS_WORSE:
        values = [res[c][key] for c in series]
        assert values[0] < values[1] < values[2], (key, values)
    for key in LOWER_IS_WORSE:
        values = [res[c][key] for c in series]
        assert values[0] > values[1] > values[2], (key, values)


def test_heavy_noise_hurts_dnsmos_and_f0(results) -> None:
    _, res = results
    ovrl = [res[c]["dnsmos_ovrl"] for c in ("clean", "noise20", "noise5")]
    assert ovrl[0] > ovrl[1] > ovrl[2], ovrl
    bak = [res[c]["dnsmos_bak"] for c in ("clean", "noise20", "noise5")]
    assert bak[0] > bak[1] > bak[2], bak
    for key in ("f0_rmse_cents", "f0_rmse_hz", "vuv_error"):
        assert res["noise5"][key] > res["clean"][key], key


def test_dnsmos_runs_offline(monkeypatch) -> None:
    _needs("speechmos", "onnxruntime")
    import speechmos.dnsmos as sd

    def no_network(*args, **kwargs):
        raise AssertionError("DNSMOS tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(sd, "dnsmos", None)  # force the ONNX models to be (re)loaded under the block
    out = M.dnsmos(speechlike(22050, dur=1.0) * 4.0, 22050)  # over-range input is clipped, not rejected
    assert set(out) == {"sig", "bak", "ovrl", "p808"} and all(1.0 <= v <= 5.0 for v in out.values())


# ------------------------------------------------------------------------------------------------
# Aggregation, settings, validation
# ------------------------------------------------------------------------------------------------


def test_mean_ci95_known_sample() -> None:
    mean, half = M.mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    # t_{0.975,4} = 2.7764451, s = sqrt(2.5), n = 5
    assert mean == 3.0
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert half == pytest.approx(1.963243, rel=1e-5)
    assert M.mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")]) == (mean, half)
    m1, h1 = M.mean_ci95([2.5])
    assert m1 == 2.5 and math.isnan(h1)
    assert all(math.isnan(v) for v in M.mean_ci95([float("nan")]))
    with pytest.raises(DiffvocError):
        M.mean_ci95([])


def test_settings_are_complete_and_printable() -> None:
    for group in M.ALL_METRICS:
        assert group in M.METRIC_SETTINGS
    s = M.metric_settings(22050, mel_fn_given=False)
    assert s["mcd"]["resolved"] == {"sample_rate": 22050, "order": 34, "alpha": 0.45, "alpha_source": "table"}
    assert s["mr_stft"]["fft_sizes"] == [1024, 2048, 512]
    assert "resolved" not in M.METRIC_SETTINGS["mcd"]  # the constant is not mutated
    text = M.format_metric_settings(16000)
    assert "hop_sizes: [120, 240, 50]" in text and "alpha: 0.42" in text and "f0_ceil 800" in text


def test_input_validation() -> None:
    x = harmonic(16000, 150.0, dur=0.5)
    with pytest.raises(AudioError):
        M.mr_stft(np.stack([x, x]), x)
    bad = x.copy()
    bad[10] = np.nan
    with pytest.raises(AudioError):
        M.mr_stft(x, bad)
    with pytest.raises(AudioError):
        M.mr_stft(np.array([]), x)
    with pytest.raises(ConfigError):
        M.evaluate_pair(x, x, 16000, which={"mr_stft", "nope"})
    with pytest.raises(ConfigError):
        M.evaluate_pair(x, x, 0, which={"mr_stft"})
    assert set(M.evaluate_pair(x, x, 16000, which={"mr_stft"})) == {"mr_stft", "mr_stft_sc", "mr_stft_mag"}


def test_stoi_too_short_is_nan() -> None:
    _needs("pystoi")
    x = harmonic(16000, 150.0, dur=0.25)
    assert math.isnan(M.stoi(x, x, 16000))
