"""Inference precision (issue 14, item 5): ``auto`` is the default of :class:`Vocoder` and of the commands
that vocode — bf16 where the CPU has AMX / AVX512-BF16 (and on CUDA), fp32 elsewhere — and
``--precision fp32`` is the exact path. Tiny random models only (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import diffvoc.precision as fp
from diffvoc.build import build
from diffvoc.checkpoint import save_checkpoint
from diffvoc.cli import build_parser, main
from diffvoc.config import Config, apply_presets
from diffvoc.inference.vocoder import Vocoder
from diffvoc.precision import resolve_precision

STATS = {"energy_min": 0.2, "energy_max": 6.0}


def _config() -> Config:
    return Config.from_dict(apply_presets({"model": {"preset": "tiny", "residual_layers": 6, "dilation_cycle": 3},
                                           "prior": {"kind": "priorgrad"}}))


def _weights(cfg: Config) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model, _, _ = build(cfg, STATS)
    for p in model.parameters():  # every weight non-zero (the output layer is zero-initialised)
        torch.nn.init.normal_(p, std=0.3)
    return model.state_dict()


@pytest.mark.parametrize("bf16_cpu", [True, False])
def test_auto_is_the_default_and_follows_the_cpu(monkeypatch, bf16_cpu):
    monkeypatch.setattr(fp, "cpu_supports_bf16", lambda: bf16_cpu)
    want = "bf16" if bf16_cpu else "fp32"
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if bf16_cpu else torch.float32)
    assert resolve_precision("auto", "cpu", engine="reference") == torch.float32  # the network as trained
    assert resolve_precision("fp32", "cpu") == torch.float32
    cfg = _config()
    v = Vocoder(cfg, _weights(cfg), STATS)  # no precision given
    assert v.precision == want and v.speed["precision"] == want
    assert v.default_chunk() == (2048 if bf16_cpu else 1024)
    assert Vocoder(cfg, _weights(cfg), STATS, precision="fp32").precision == "fp32"
    v.set_speed(engine="reference")
    assert v.precision == "fp32"
    for argv in (["vocode", "a.npy", "-o", "a.wav"],
                 ["search-schedule", "--checkpoint", "ck", "--steps", "2"]):
        assert build_parser().parse_args(argv).precision == "auto"


def test_auto_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == torch.bfloat16
    assert resolve_precision("fp32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == torch.float32


def test_cli_default_is_auto_and_fp32_is_exact(tmp_path, capsys):
    """``diffvoc vocode`` without --precision writes what ``auto`` gives on this CPU (bf16 where supported);
    ``--precision fp32`` writes the trained network's output (the reference engine, fp32) to 16-bit rounding."""
    cfg = _config()
    weights = _weights(cfg)
    save_checkpoint(tmp_path / "ck", cfg, STATS, weights)
    mel = np.random.default_rng(0).normal(-4, 1.5, (80, 24)).astype(np.float32)
    np.save(tmp_path / "m.npy", mel)
    base = ["vocode", str(tmp_path / "m.npy"), "--checkpoint", str(tmp_path / "ck"), "--steps", "6", "--seed", "3"]
    assert main(base + ["-o", str(tmp_path / "auto.wav")]) == 0
    auto_line = capsys.readouterr().out
    assert main(base + ["-o", str(tmp_path / "fp32.wav"), "--precision", "fp32"]) == 0
    assert ", fp32," in capsys.readouterr().out
    got = {k: sf.read(tmp_path / f"{k}.wav", dtype="float32")[0] for k in ("auto", "fp32")}

    def api(**speed):
        return np.clip(Vocoder(cfg, weights, STATS, **speed).vocode(mel, steps=6, seed=3), -1, 1)

    exact = api(precision="fp32", engine="reference")
    np.testing.assert_allclose(got["fp32"], exact, atol=2 / 32767)
    if fp.cpu_supports_bf16():
        assert ", bf16," in auto_line
        bf16 = api(precision="bf16")
        np.testing.assert_allclose(got["auto"], bf16, atol=2 / 32767)
        assert np.abs(got["auto"] - got["fp32"]).max() > 2 / 32767  # it really ran in bf16
        rel = np.linalg.norm(got["auto"] - exact) / np.linalg.norm(exact)
        assert rel < 0.05, rel  # and stays close (README: MR-STFT 0.03-0.05 vs 1.37 between two seeds)
    else:
        assert ", fp32," in auto_line
        np.testing.assert_array_equal(got["auto"], got["fp32"])
