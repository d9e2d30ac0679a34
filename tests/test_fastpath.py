"""The fast inference engine (issue 7): equal to the reference network, chunking, bf16, compile
fallback, batched vocoding and the CLI flags. Tiny random models only (fast)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import run_cli

from diffvoc.build import build
from diffvoc.config import Config, apply_presets
from diffvoc.errors import DiffvocError
from diffvoc.inference.engine import DenoiserFactory, FastDenoiser
from diffvoc.inference.vocoder import Vocoder
from diffvoc.precision import cpu_supports_bf16

STATS = {"energy_min": 0.2, "energy_max": 6.0}


def _config(hop: int = 256, prior: str = "standard", extra: bool = False, layers: int = 6, cycle: int = 3,
            conditioning: str = "mel") -> Config:
    d = {"audio": {"preset": "hifigan", "hop_length": hop}, "model": {"preset": "tiny", "residual_layers": layers,
                                                                      "dilation_cycle": cycle,
                                                                      "conditioning": conditioning},
         "prior": {"kind": prior, "condition_on_prior": extra}}
    return Config.from_dict(apply_presets(d))


def _model(cfg: Config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, _, _ = build(cfg, STATS)
    for p in model.parameters():  # every weight non-zero (the output layer is zero-initialised)
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def _vocoder(cfg: Config, **speed) -> Vocoder:
    speed.setdefault("precision", "fp32")  # the exact path unless a test asks otherwise (Vocoder's default is auto)
    return Vocoder(cfg, _model(cfg).state_dict(), STATS, **speed)


@pytest.mark.parametrize("hop,prior,extra", [(256, "standard", False), (200, "priorgrad", True), (300, "priorgrad", False)])
def test_fp32_engine_equals_reference(hop, prior, extra):
    """FastDenoiser == DiffWave.denoise (max abs diff ≤ 1e-5 relative to the output's scale), batched, with
    integer and fractional steps, per-item steps, and tiles smaller than the input."""
    cfg = _config(hop, prior, extra)
    model = _model(cfg)
    B, frames = 3, 9
    mel = torch.randn(B, model.cond_channels, frames)
    x = torch.randn(B, frames * hop)
    with torch.inference_mode():
        cond = model.condition(mel)
        for t in (torch.tensor([3, 3, 3]), torch.tensor([0.4, 17.5, 49.0])):
            ref = model.denoise(x, t, cond)
            for tile in (64, 500, 10_000):
                out = FastDenoiser(model, tile=tile)(x, t, cond)
                assert out.shape == ref.shape
                err = (out - ref).abs().max().item()
                assert err <= 1e-5 * max(1.0, ref.abs().max().item()), (tile, err)


def test_items_of_different_lengths_are_independent():
    """With ``lengths``, each item of a padded batch gives what it gives alone (zero padding after it)."""
    cfg = _config()
    model = _model(cfg)
    lengths = [256 * 5, 256 * 9]
    mels = [torch.randn(1, 80, n // 256) for n in lengths]
    eng = FastDenoiser(model, tile=300)
    with torch.inference_mode():
        conds = [model.condition(m) for m in mels]
        xs = [torch.randn(1, n) for n in lengths]
        T = max(lengths)
        cond = torch.cat([torch.nn.functional.pad(c, (0, T - c.shape[-1])) for c in conds])
        x = torch.cat([torch.nn.functional.pad(v, (0, T - v.shape[-1])) for v in xs])
        batched = eng.closure(cond, lengths)(x, torch.tensor([7.0, 7.0]))
        for i, n in enumerate(lengths):
            alone = model.denoise(xs[i], torch.tensor([7.0]), conds[i])
            assert (batched[i, :, :n] - alone).abs().max().item() < 1e-5 * max(1.0, alone.abs().max().item())


def test_engine_sees_weight_changes():
    """The Vocoder rebuilds its engine when the model's weights change after loading."""
    cfg = _config()
    v = _vocoder(cfg)
    mel = np.random.default_rng(0).normal(-4, 1, (80, 12)).astype(np.float32)
    a = v.vocode(mel, steps=6, seed=0)
    torch.nn.init.normal_(v.model.output_projection.weight, std=1.0)
    b = v.vocode(mel, steps=6, seed=0)
    v.set_speed(engine="reference")
    np.testing.assert_allclose(b, v.vocode(mel, steps=6, seed=0), atol=1e-5)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("prior,extra", [("standard", False), ("priorgrad", True)])
def test_vocoding_fast_equals_reference_and_chunked_equals_whole(prior, extra):
    """Fixed noise: fast engine == reference network after 6 steps (≤ 2e-5 on a waveform clamped to ±1: one
    call agrees to ~1e-6, the engine sums in another order and the steps amplify it), and the fast engine's
    chunked output equals its whole-file output (≤ 1e-4, the tiny model's receptive field fits the context)."""
    cfg = _config(prior=prior, extra=extra)
    fast, ref = _vocoder(cfg), _vocoder(cfg, engine="reference")
    mel = np.random.default_rng(3).normal(-4, 1.5, (80, 120)).astype(np.float32)
    whole = fast.vocode(mel, steps=6, seed=7, chunk_frames=0)
    np.testing.assert_allclose(whole, ref.vocode(mel, steps=6, seed=7, chunk_frames=0), atol=2e-5)
    ctx = fast.default_context(6)
    chunked = fast.vocode(mel, steps=6, seed=7, chunk_frames=30, context_frames=ctx, fade_frames=4)
    assert np.abs(chunked - whole).max() < 1e-4
    streamed = np.concatenate(list(fast.stream([mel[:, i:i + 7] for i in range(0, 120, 7)], steps=6, seed=7,
                                               chunk_frames=30, context_frames=ctx, fade_frames=4)))
    np.testing.assert_allclose(streamed, chunked, atol=1e-5)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_bf16_runs_and_stays_close():
    cfg = _config()
    v32, v16 = _vocoder(cfg), _vocoder(cfg, precision="bf16")
    mel = np.random.default_rng(1).normal(-4, 1.5, (80, 40)).astype(np.float32)
    a, b = v32.vocode(mel, steps=6, seed=0), v16.vocode(mel, steps=6, seed=0)
    assert np.isfinite(b).all()
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert rel < 0.05, rel


def test_bf16_refused_without_cpu_support(monkeypatch):
    import diffvoc.precision as fp

    monkeypatch.setattr(fp, "cpu_supports_bf16", lambda: False)
    monkeypatch.delenv("DIFFVOC_FORCE_BF16", raising=False)
    with pytest.raises(DiffvocError, match="bf16"):
        _vocoder(_config(), precision="bf16")
    with pytest.raises(DiffvocError, match="precision"):
        _vocoder(_config(), precision="fp8")
    with pytest.raises(DiffvocError, match="engine"):
        _vocoder(_config(), engine="turbo")


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    cfg = _config()
    model = _model(cfg)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        factory = DenoiserFactory(model, compile=True)
    assert any("torch.compile" in str(x.message) and "eagerly" in str(x.message) for x in w)
    mel = torch.randn(1, 80, 4)
    with torch.inference_mode():
        cond = model.condition(mel)
        x = torch.randn(1, 1024)
        out = factory(cond)(x, torch.tensor([2.0]))
        ref = model.denoise(x, torch.tensor([2.0]), cond)
    assert (out - ref).abs().max().item() < 1e-5 * max(1.0, ref.abs().max().item())


def test_vocode_batch_equals_individual_vocode():
    cfg = _config(prior="priorgrad", extra=True)
    v = _vocoder(cfg)
    rng = np.random.default_rng(5)
    mels = [rng.normal(-4, 1.5, (80, n)).astype(np.float32) for n in (7, 20, 13, 60)]
    outs = v.vocode_batch(mels, steps=6, seed=2, batch_size=3, chunk_frames=40)
    for m, o in zip(mels, outs):
        assert o.shape == (m.shape[-1] * 256,)
        np.testing.assert_allclose(o, v.vocode(m, steps=6, seed=2, chunk_frames=40), atol=1e-5)


def test_vocode_batch_groups_bound_the_padded_frames():
    """Batches take at most batch_size items and at most max_frames padded frames (items × longest)."""
    from diffvoc.inference.vocoder import _groups

    assert _groups([5, 5, 6, 9, 40, 41], 3, 0) == [[0, 1, 2], [3, 4, 5]]
    groups = _groups([5, 5, 6, 9, 40, 41], 8, 80)
    assert groups == [[0, 1, 2, 3], [4], [5]]
    frames = [5, 5, 6, 9, 40, 41]
    assert all(len(g) * max(frames[j] for j in g) <= 80 or len(g) == 1 for g in groups)
    assert sorted(j for g in groups for j in g) == list(range(6))


def test_cli_vocode_speed_flags(tmp_path):
    cfg = _config()
    v = _vocoder(cfg)

    ck = tmp_path / "ck"
    _save(v, ck)
    mel = np.random.default_rng(0).normal(-4, 1, (80, 10)).astype(np.float32)
    np.save(tmp_path / "a.npy", mel)
    r = run_cli("vocode", str(tmp_path / "a.npy"), "-o", str(tmp_path / "a.wav"), "--checkpoint", str(ck),
                "--threads", "1", "--precision", "fp32", "--steps", "6")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.wav").exists()
    r = run_cli("vocode", str(tmp_path / "a.npy"), "-o", str(tmp_path / "b.wav"), "--checkpoint", str(ck),
                "--precision", "fp64")
    assert r.returncode != 0 and "precision" in r.stderr
    if cpu_supports_bf16():
        r = run_cli("vocode", str(tmp_path / "a.npy"), "-o", str(tmp_path / "c.wav"), "--checkpoint", str(ck),
                    "--precision", "bf16", "--threads", "1")
        assert r.returncode == 0, r.stderr


def _save(v: Vocoder, path) -> None:
    """A checkpoint directory for ``v`` (config, stats, weights)."""
    import yaml
    from safetensors.torch import save_file

    path.mkdir()
    (path / "config.yaml").write_text(v.config.to_yaml())
    (path / "stats.yaml").write_text(yaml.safe_dump(v.stats))
    save_file({k: t.contiguous() for k, t in v.model.state_dict().items()}, str(path / "model.safetensors"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wavefront_stages_change_nothing(dtype):
    """The wavefront (every layer advancing in stages, in-place residual updates, saved left taps)
    gives the same result whatever the stage size, including stages shorter than a dilation (to the
    rounding of BLAS kernels picked by row count: a wrong tap or a missed row would be off by O(1)),
    equals the reference network in fp32, and keeps the items of a batch independent."""
    if dtype == torch.bfloat16 and not cpu_supports_bf16():
        pytest.skip("this CPU has neither AMX nor AVX512-BF16")
    cfg = _config(layers=7, cycle=6)  # dilations up to 32
    model = _model(cfg)
    lengths = [256 * 3, 256 * 11]
    T = max(lengths)
    with torch.inference_mode():
        cond = model.condition(torch.randn(2, 80, T // 256))
        x = torch.randn(2, T)
        t = torch.tensor([5.0, 5.0])
        outs = [FastDenoiser(model, dtype, tile=tile).closure(cond, lengths)(x, t) for tile in (1, 7, 33, 500, 100_000)]
        tol = (1e-5 if dtype == torch.float32 else 1e-4) * max(1.0, outs[-1].abs().max().item())
        for o in outs[:-1]:
            assert (o - outs[-1]).abs().max().item() <= tol
        for i, n in enumerate(lengths):
            alone = FastDenoiser(model, dtype, tile=33).closure(cond[i:i + 1, :, :n])(x[i:i + 1, :n], t[:1])
            assert (outs[2][i, :, :n] - alone[0]).abs().max().item() <= tol
            assert (outs[2][i, :, n:] == 0).all()
        if dtype == torch.float32:
            ref = model.denoise(x[1:], t[1:], cond[1:])
            assert (outs[0][1:] - ref).abs().max().item() < 1e-5 * max(1.0, ref.abs().max().item())
