"""Truncated diffusion (TDPM): truncation math, the implicit prior, the GAN phases, checkpoints, sampling."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli, tiny_config_yaml, train_straight_and_resumed

from diffvoc.build import build, build_implicit_prior, build_sampler
from diffvoc.config import Config, ConfigError
from diffvoc.config_validation import truncation_steps
from diffvoc.diffusion.loss import DiffusionLoss
from diffvoc.diffusion.noise import GlobalNoise
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.diffusion.truncation import d_loss, g_loss, r1_penalty, truncated_betas
from diffvoc.errors import ScheduleError
from diffvoc.inference.vocoder import Vocoder
from diffvoc.models.discriminator import MelDiscriminator
from diffvoc.training.truncation_gan import TruncatedGAN

ROOT = Path(__file__).resolve().parents[1]
GEN = {"generator_channels": 8, "generator_layers": 2, "generator_cycle": 2, "discriminator_channels": 4,
       "discriminator_scales": 2, "r1_every": 2}


def tdpm_config(**trunc) -> Config:
    d = {"model": {"preset": "tiny"}, "truncation": {"enabled": True, **GEN, **trunc}}
    return Config.from_dict(__import__("diffvoc.config", fromlist=["apply_presets"]).apply_presets(d))


def tdpm_yaml(path, data_dir, trunc=None, **sections):
    return tiny_config_yaml(path, data_dir, truncation={"enabled": True, **GEN, **(trunc or {})}, **sections)


# ----------------------------------------------------------------------------------------- the math


def test_truncation_step_from_steps_or_noise_level():
    sched = NoiseSchedule.linear(1e-4, 0.05, 50)
    assert truncation_steps(tdpm_config(steps=20), sched) == 20
    k = truncation_steps(tdpm_config(steps=None, noise_level=0.3), sched)
    assert sched.level(k) >= 0.3 > sched.level(k - 1)
    assert sched.level(k) == pytest.approx(1 - np.prod(1 - np.linspace(1e-4, 0.05, 50)[:k]), rel=1e-12)
    with pytest.raises(ConfigError, match="truncation.steps must lie in 1..49"):
        tdpm_config(steps=50)
    with pytest.raises(ConfigError, match="mel-conditioned"):
        Config.from_dict({"model": {"conditioning": "none"}, "truncation": {"enabled": True}})
    with pytest.raises(ConfigError, match="generator must be shared or separate"):
        tdpm_config(generator="both")


@pytest.mark.parametrize("n", [1, 2, 3, 6, 7])
def test_truncated_chain_ends_at_the_truncation_level(n):
    cfg = tdpm_config(steps=30)
    sched = NoiseSchedule.linear(1e-4, 0.05, 50)
    betas = truncated_betas(cfg, sched, 30, n)
    assert len(betas) == n and all(0 < b < 1 for b in betas)
    levels = 1 - np.cumprod(1 - np.asarray(betas))
    assert np.all(np.diff(levels) > 0)
    assert levels[-1] == pytest.approx(sched.level(30), rel=1e-9)
    assert levels[0] >= 1e-4
    # the aligned fractional steps stay inside the truncated range (t <= T_trunc - 1, 0-based)
    steps = sched.align(NoiseSchedule(np.asarray(betas)))
    assert steps.max() == pytest.approx(29, abs=1e-6)


def test_every_step_of_the_truncated_chain_is_the_training_schedule():
    cfg = tdpm_config(steps=12)
    train = NoiseSchedule.linear(1e-4, 0.05, 50)
    np.testing.assert_allclose(truncated_betas(cfg, train, 12, 12), train.betas[:12])
    full = build_sampler(cfg, full=True)
    assert len(full) == 12 and full.truncated


def test_real_samples_follow_q_of_x_trunc(tmp_path):
    """D's real samples: √ᾱ_k x_0 + √(1 − ᾱ_k) σ ε — the same draw as the diffusion loss's q_sample at
    t = T_trunc, and with the right mean and std over many draws."""
    cfg = tdpm_config(steps=25)
    model, sched, prior = build(cfg, {})
    gan = TruncatedGAN(cfg, model, sched, build_implicit_prior(cfg, sched, prior), torch.device("cpu"))
    x0 = torch.linspace(-0.5, 0.5, 2000).unsqueeze(0)
    std = torch.full_like(x0, 0.7)
    eps = torch.randn(4000, 2000, generator=torch.Generator().manual_seed(0))
    real = gan.real(x0, std, eps)
    ab = sched.alpha_bars[24]
    # per-sample mean: standard error √(1 − ᾱ)·0.7/√4000 ≈ 0.006; 6 standard errors over 2,000 samples
    torch.testing.assert_close(real.mean(0), math.sqrt(ab) * x0[0], atol=0.035, rtol=0)
    assert real.std(0).mean().item() == pytest.approx(math.sqrt(1 - ab) * 0.7, rel=0.02)
    # equal to the forward process of the diffusion loss at 0-based t = T_trunc - 1 on the same ε
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    batch = DiffusionLoss(sched).q_sample(x0, std, t=torch.tensor([24]), generator=g1)
    eps1 = torch.randn(x0.shape, generator=g2)
    torch.testing.assert_close(gan.real(x0, std, eps1), batch.x_t, atol=1e-6, rtol=0)


def test_untrained_separate_generator_has_the_noise_part_right():
    """generator_skip: G = √(1 − ᾱ_k) z + f with f's output layer zero at init, so G(z) = √(1 − ᾱ_k) σ ε."""
    cfg = tdpm_config(steps=35)
    model, sched, prior = build(cfg, {})
    gan = TruncatedGAN(cfg, model, sched, build_implicit_prior(cfg, sched, prior), torch.device("cpu"))
    mel = torch.randn(2, 80, 10)
    eps = torch.randn(2, 2560)
    std = torch.full((2, 2560), 0.5)
    x = gan.fake(model, mel, std, eps)
    torch.testing.assert_close(x, math.sqrt(1 - sched.alpha_bars[34]) * 0.5 * eps)


def test_shared_generator_is_the_denoiser_at_step_k_plus_one():
    cfg = tdpm_config(steps=20, generator="shared", generator_skip=False)
    model, sched, prior = build(cfg, {})
    torch.nn.init.normal_(model.output_projection.weight, std=0.1)
    gan = TruncatedGAN(cfg, model, sched, build_implicit_prior(cfg, sched, prior), torch.device("cpu"))
    assert gan.generator.net is None and not list(gan.generator.parameters())
    mel, eps = torch.randn(1, 80, 6), torch.randn(1, 1536)
    out = gan.fake(model, mel, torch.ones(1, 1), eps)
    ref = model(eps, torch.tensor([20]), mel).squeeze(1)  # 0-based index 20 = step T_trunc + 1 = 21
    torch.testing.assert_close(out, ref)


# ------------------------------------------------------------------------------- GAN and its phases


def test_gan_losses_and_r1_match_their_formulas():
    r, f = [torch.tensor([[0.5, -1.0]])], [torch.tensor([[2.0, 0.0]])]
    sp = torch.nn.functional.softplus
    assert d_loss(r, f).item() == pytest.approx((sp(-r[0]).mean() + sp(f[0]).mean()).item())
    assert g_loss(f).item() == pytest.approx(sp(-f[0]).mean().item())

    class Linear(torch.nn.Module):  # D(x) = Σ w·x: ∇_x = w, so the penalty is ‖w‖²
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(64))

        def forward(self, x, mel):
            return [(x * self.w).sum(-1, keepdim=True)]

    d = Linear()
    pen = r1_penalty(d, torch.randn(3, 64), torch.zeros(3, 1, 1))
    assert pen.item() == pytest.approx(d.w.pow(2).sum().item(), rel=1e-5)
    pen.backward()  # differentiable w.r.t. D's weights (create_graph)
    torch.testing.assert_close(d.w.grad, 2 * d.w.detach())


def test_discriminator_sees_the_mel_and_handles_any_length():
    d = MelDiscriminator(81, channels=4, scales=3, periods=[2, 3], resolutions=[[256, 64, 256], [128, 32, 96]])
    x = torch.randn(2, 1001)
    mel = torch.randn(2, 81, 4)
    out = d(x, mel)
    assert len(out) == 7 and all(o.shape[0] == 2 for o in out)
    assert out[-2].shape[-1] == 1001 // 64 + 1  # spectral: one logit per STFT frame
    # the spectral sub-discriminators' input gradient is bounded by the log floor (R1 stays finite)
    from diffvoc.diffusion.truncation import r1_penalty

    quiet = MelDiscriminator(81, channels=4, scales=0, resolutions=[[256, 64, 256]])
    assert math.isfinite(r1_penalty(quiet, torch.zeros(1, 1001), mel[:1]).item())
    out2 = d(x, mel + 1.0)
    assert any(not torch.allclose(a, b) for a, b in zip(out, out2))


@pytest.mark.parametrize("generator", ["separate", "shared"])
def test_each_phase_updates_only_its_own_parameters(generator):
    cfg = tdpm_config(steps=20, generator=generator)
    model, sched, prior = build(cfg, {})
    gan = TruncatedGAN(cfg, model, sched, build_implicit_prior(cfg, sched, prior), torch.device("cpu"))
    g_params = list(model.parameters()) if generator == "shared" else list(gan.generator.parameters())
    d_params = list(gan.disc.parameters())
    den_before = [p.detach().clone() for p in model.parameters()]
    seen = {}

    def wrap(opt, name, own, other):
        orig = opt.step

        def step(*a, **k):
            other_before = [p.detach().clone() for p in other]
            seen[name + "_other_grads"] = [p.grad is None for p in other]
            own_before = [p.detach().clone() for p in own]
            r = orig(*a, **k)
            seen[name + "_other_same"] = all(torch.equal(a, p) for a, p in zip(other_before, other))
            seen[name + "_own_changed"] = any(not torch.equal(a, p) for a, p in zip(own_before, own))
            return r
        opt.step = step

    wrap(gan.d_opt, "d", d_params, g_params)
    wrap(gan.g_opt, "g", g_params, d_params)
    audio = torch.randn(2, 16 * 256) * 0.3
    mel = torch.randn(2, 80, 16)
    logs = gan.step(model, audio, mel, prior.std(mel, audio.shape[-1]), torch.Generator().manual_seed(0))
    assert {"gan/d_loss", "gan/g_loss", "gan/r1", "gan/d_real", "gan/d_fake"} <= set(logs)
    assert seen["d_own_changed"] and seen["g_own_changed"]
    assert seen["d_other_same"] and seen["g_other_same"]
    assert all(seen["d_other_grads"])  # G (or the shared denoiser) gets no gradient in D's phase
    if generator == "separate":  # the denoiser is not touched by the GAN at all
        assert all(torch.equal(a, p) for a, p in zip(den_before, model.parameters()))
    assert all(p.requires_grad for p in g_params + d_params)


def test_sampler_refuses_a_truncated_chain_without_its_generator():
    s = build_sampler(tdpm_config(steps=20), steps=2)
    assert s.truncated and len(s) == 2
    with pytest.raises(ValueError, match="generate"):
        s.sample(lambda x, t: torch.zeros(x.shape[0], 1, x.shape[1]), torch.ones(1, 1), 1, 100, GlobalNoise())
    x = s.sample(lambda x, t: torch.zeros(x.shape[0], 1, x.shape[1]), torch.ones(1, 1), 1, 100, GlobalNoise(),
                 generate=lambda eps: torch.full_like(eps, 0.25))
    assert x.shape == (1, 100)
    with pytest.raises(ScheduleError, match="--steps must be >= 2"):
        build_sampler(tdpm_config(steps=20, generator="shared"), steps=1)
    assert len(build_sampler(tdpm_config(steps=20, generator="shared"), steps=3)) == 2


# ------------------------------------------------------------------------------ training and checkpoints


def test_training_draws_t_only_below_the_truncation(tmp_path, data_dir):
    from diffvoc.training.trainer import Trainer

    cfg = Config.load(tdpm_yaml(tmp_path / "c.yaml", data_dir, {"steps": 7, "gan_start_step": 100}))
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    orig = tr.loss_fn.q_sample

    def record(*a, **k):
        b = orig(*a, **k)
        seen.extend(b.t.tolist())
        return b

    tr.loss_fn.q_sample = record
    for s in range(15):
        logs = tr.train_step(*tr.data[s])
    tr.close()
    assert max(seen) == 6 and min(seen) == 0  # 0-based t < T_trunc = 7
    assert "gan/d_loss" not in logs  # warm-up: no GAN before gan_start_step


@pytest.mark.slow
def test_truncated_checkpoint_round_trips_resumes_exactly_and_vocodes(tmp_path, data_dir):
    yml = tdpm_yaml(tmp_path / "c.yaml", data_dir, {"steps": 30, "gan_start_step": 1}, prior={"kind": "priorgrad"},
                    train={"max_steps": 4, "save_every": 2, "valid_every": 2, "batch_size": 2})
    last = train_straight_and_resumed(Config.load(yml), tmp_path, 2,
                                      ("model_raw", "generator_raw", "generator", "discriminator"))
    assert {"gan/d_loss", "gan/g_loss", "valid_mr_stft"} <= set(last)

    voc = Vocoder.from_pretrained(tmp_path / "straight", precision="fp32")  # chunked == whole to 1e-4
    assert voc.implicit is not None and voc.config.truncation.enabled
    mel = np.load(next((data_dir / "features").glob("*/*.mel.npy")))[:, :40]
    for steps in (1, 2, 6):
        y = voc.vocode(mel, steps=steps, seed=1)
        assert y.shape == (40 * 256,) and np.isfinite(y).all() and np.abs(y).max() <= 1
        np.testing.assert_array_equal(y, voc.vocode(mel, steps=steps, seed=1))
    assert not np.array_equal(voc.vocode(mel, steps=2, seed=1), voc.vocode(mel, steps=2, seed=2))
    # chunked vocoding (the generator's receptive field is in the context) agrees with one pass
    long = np.load(next((data_dir / "features").glob("*/*.mel.npy")))[:, :60]
    whole = voc.vocode(long, steps=2, chunk_frames=0)
    chunked = voc.vocode(long, steps=2, chunk_frames=20)
    assert np.abs(whole - chunked).max() < 1e-4

    # the CLI picks the truncated path from the checkpoint; a missing generator is refused
    np.save(tmp_path / "m.npy", mel)
    r = run_cli("vocode", str(tmp_path / "m.npy"), "-o", str(tmp_path / "o.wav"), "--checkpoint",
                str(tmp_path / "straight"), "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o.wav").stat().st_size > 40 * 256
    ck = tmp_path / "straight" / "ckpt-00000004"
    # scripts/bundle_model.py carries the generator's EMA weights (fp16), not the training-only ones
    dest = tmp_path / "bundle"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle_model.py"), str(ck), "--dest", str(dest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in dest.iterdir()} == {"config.yaml", "stats.yaml", "model.safetensors", "generator.safetensors"}
    bundled = Vocoder.from_pretrained(dest, precision="fp32")
    y16, y32 = bundled.vocode(mel, steps=2, seed=1), voc.vocode(mel, steps=2, seed=1)
    assert np.abs(y16 - y32).max() < 0.05 * np.abs(y32).max()  # the same model in fp16
    (ck / "generator.safetensors").unlink()
    r = run_cli("vocode", str(tmp_path / "m.npy"), "-o", str(tmp_path / "o2.wav"), "--checkpoint", str(ck))
    assert r.returncode != 0 and "generator.safetensors" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o2.wav").exists()


@pytest.mark.slow
def test_shared_generator_with_the_infer_loss_trains(tmp_path, data_dir):
    """Shared G + the infer loss through G and the truncated 2-step chain: both losses are logged and
    the shared model's 1-call limit is refused on the command line."""
    from diffvoc.training.trainer import Trainer

    yml = tdpm_yaml(tmp_path / "c.yaml", data_dir, {"steps": 30, "generator": "shared"},
                    infer={"enabled": True, "steps": 2, "crop_frames": 10, "batch_items": 1},
                    train={"max_steps": 3, "save_every": 3, "valid_every": 3, "batch_size": 2})
    tr = Trainer(Config.load(yml), tmp_path / "run", progress=False)
    last = tr.train()
    tr.close()
    assert {"infer_loss", "gan/g_loss", "valid_mr_stft"} <= set(last)
    assert not (tmp_path / "run" / "ckpt-00000003" / "generator.safetensors").exists()
    assert yaml.safe_load((tmp_path / "run" / "ckpt-00000003" / "config.yaml").read_text())["truncation"]["generator"] == "shared"
    mel = np.zeros((80, 20), np.float32) - 5
    np.save(tmp_path / "m.npy", mel)
    r = run_cli("vocode", str(tmp_path / "m.npy"), "-o", str(tmp_path / "o.wav"), "--checkpoint",
                str(tmp_path / "run"), "--steps", "1")
    assert r.returncode != 0 and "--steps must be >= 2" in r.stderr and "Traceback" not in r.stderr
