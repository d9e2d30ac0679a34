"""Mel features equal the reference recipes; audio of any format, depth, channel count and rate reads."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import voiced

from diffvoc.audio import MelSpectrogram, compute_mel, frame_energy, load_audio, load_mel, peak_normalize
from diffvoc.config import AudioConfig, Config, apply_presets
from diffvoc.errors import AudioError, MelError


def numpy_hifigan_mel(y: np.ndarray, sr=22050, n_fft=1024, hop=256, win=1024, n_mels=80, fmin=0, fmax=8000):
    """REFERENCE §2 written out with numpy: reflect pad (n_fft-hop)/2, frames, periodic Hann,
    |X| = sqrt(re²+im²+1e-9), slaney mel, ln(clamp(., 1e-5))."""
    p = (n_fft - hop) // 2
    y = np.pad(y.astype(np.float64), (p, n_fft - hop - p), mode="reflect")
    n_frames = 1 + (len(y) - n_fft) // hop
    w = np.zeros(n_fft)
    off = (n_fft - win) // 2
    w[off:off + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([y[i * hop:i * hop + n_fft] * w for i in range(n_frames)], axis=1)
    spec = np.fft.rfft(frames, axis=0)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return np.log(np.maximum(basis @ mag, 1e-5))


def numpy_lmnt_mel(y: np.ndarray, sr=22050, n_fft=1024, hop=256, n_mels=80):
    """lmnt-com/diffwave's recipe: centred reflect STFT normalised by ‖window‖₂, HTK mel 20 Hz–Nyquist
    without norm, 20·log10(clamp(., 1e-5)) − 20, then (x + 100)/100 clipped to [0, 1]."""
    win = hop * 4
    y = np.pad(y.astype(np.float64), (n_fft // 2, n_fft // 2), mode="reflect")
    n_frames = 1 + (len(y) - n_fft) // hop
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([y[i * hop:i * hop + n_fft] * w for i in range(n_frames)], axis=1)
    mag = np.abs(np.fft.rfft(frames, axis=0)) / np.sqrt((w ** 2).sum())
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=20.0, fmax=sr / 2, htk=True, norm=None)
    db = 20 * np.log10(np.maximum(basis @ mag, 1e-5)) - 20
    return np.clip((db + 100) / 100, 0, 1)


def test_hifigan_mel_equals_reference_recipe():
    y = voiced(1.3, 22050)
    ours = compute_mel(y, AudioConfig())
    ref = numpy_hifigan_mel(y)
    assert ours.shape == ref.shape == (80, len(y) // 256)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_lmnt_mel_equals_lmnt_recipe():
    cfg = Config.from_dict(apply_presets({"audio": {"preset": "lmnt"}})).audio
    y = voiced(1.0, 22050, seed=3)
    ours = compute_mel(y, cfg)
    ref = numpy_lmnt_mel(y)
    assert ours.shape == ref.shape == (80, len(y) // 256 + 1)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.parametrize("sr,hop,n_fft", [(16000, 200, 800), (22050, 256, 1024), (24000, 300, 1200),
                                          (44100, 512, 2048), (48000, 512, 2048)])
def test_rates_and_hops(sr, hop, n_fft):
    cfg = AudioConfig(sample_rate=sr, hop_length=hop, n_fft=n_fft, win_length=n_fft,
                      fmax=min(8000.0, sr / 2))
    y = voiced(0.5, sr)
    mel = MelSpectrogram(cfg)
    out = compute_mel(y, cfg)
    assert out.shape == (80, mel.num_frames(len(y))) == (80, len(y) // hop)
    np.testing.assert_allclose(out, numpy_hifigan_mel(y, sr, n_fft, hop, n_fft, 80, 0, min(8000, sr / 2)), atol=3e-4)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"),
                                         ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_reads_formats_and_depths(tmp_path, fmt, subtype):
    y = voiced(0.5, 22050) * 0.8
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, y, 22050, format=fmt, subtype=subtype)
    z = load_audio(path, 22050)
    assert z.dtype == np.float32 and z.ndim == 1 and len(z) == len(y)
    tol = 0.05 if fmt == "OGG" else 1e-3
    assert np.sqrt(np.mean((z - y) ** 2)) < tol


def test_stereo_is_mixed_and_rate_converted(tmp_path):
    left = voiced(1.0, 44100)
    sf.write(tmp_path / "s.wav", np.stack([left, 0.5 * left], 1), 44100, subtype="PCM_16")
    z = load_audio(tmp_path / "s.wav", 22050)
    assert z.ndim == 1 and abs(len(z) - 22050) <= 1
    ref = librosa.resample(0.75 * left, orig_sr=44100, target_sr=22050)
    assert np.sqrt(np.mean((z[:len(ref)] - ref[:len(z)]) ** 2)) < 1e-3


def test_peak_normalize():
    y = voiced(0.3, 22050)
    assert abs(np.abs(peak_normalize(y, 0.95)).max() - 0.95) < 1e-6
    assert np.all(peak_normalize(np.zeros(10, np.float32), 0.95) == 0)


@pytest.mark.parametrize("content", [b"", b"RIFF....WAVEjunk", b"hello world, not audio"])
def test_bad_audio_raises(tmp_path, content):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError):
        load_audio(p)


def test_missing_and_empty(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 22050)
    with pytest.raises(AudioError, match="no audio"):
        load_audio(tmp_path / "empty.wav")


def test_mel_checks(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((64, 10), np.float32))
    with pytest.raises(MelError, match="64 mel bands"):
        load_mel(tmp_path / "m.npy", 80)
    bad = np.zeros((80, 10), np.float32)
    bad[3, 3] = np.nan
    np.save(tmp_path / "n.npy", bad)
    with pytest.raises(MelError, match="NaN"):
        load_mel(tmp_path / "n.npy", 80)
    np.save(tmp_path / "o.npy", np.zeros((80,), np.float32))
    with pytest.raises(MelError, match="shape"):
        load_mel(tmp_path / "o.npy", 80)


def test_frame_energy_formula():
    import torch

    mel = torch.randn(2, 80, 7)
    e = frame_energy(mel, AudioConfig())
    np.testing.assert_allclose(e.numpy(), np.sqrt(np.exp(mel.numpy()).sum(1)), rtol=1e-5)
