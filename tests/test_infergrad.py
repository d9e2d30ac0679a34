"""InferGrad: the infer loss, gradients through the unrolled sampler, checkpointed memory, general-mode
schedules, the schedule search and its storage in the checkpoint. Tiny models only."""

from __future__ import annotations

import argparse
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import run_cli, tiny_config_yaml, train_straight_and_resumed, voiced

from diffvoc.cli.search_schedule import add_parser as add_search_schedule_parser
from diffvoc.config import FAST_SCHEDULES, Config, ModelConfig
from diffvoc.diffusion.infergrad import (
    InferLoss,
    anti_wrapping,
    anti_wrapping_phase_loss,
    draw_general_schedule,
    infer_noise_generator,
    infer_schedule,
    unrolled_sample,
)
from diffvoc.diffusion.prior import StandardPrior
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.errors import ConfigError
from diffvoc.evaluation.schedule_search import (
    Evaluation,
    grid_search,
    is_valid,
    local_search,
    search_schedule,
)
from diffvoc.inference.vocoder import Vocoder
from diffvoc.models.diffwave import DiffWave
from diffvoc.training.trainer import Trainer

SIX = [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5]
TRAIN = NoiseSchedule.linear(1e-4, 0.05, 50)


def _tiny_net(seed: int = 0) -> DiffWave:
    torch.manual_seed(seed)
    net = DiffWave(ModelConfig(residual_channels=16, residual_layers=4, dilation_cycle=2), 50, 80, 256)
    torch.nn.init.normal_(net.output_projection.weight, std=0.1)  # zero-initialised: ε_θ would be 0
    return net


def _infer_yaml(tmp_path, data_dir, infer: dict, **sections):
    return tiny_config_yaml(tmp_path / "c.yaml", data_dir,
                            infer={"enabled": True, "crop_frames": 8, "batch_items": 2, **infer}, **sections)


# ---------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_validation(tmp_path):
    cfg = Config().with_overrides(["infer.enabled=true", "infer.mode=general", "infer.weight=0.5",
                                   "infer.general_steps=[2,6]", "infer.phase=none"])
    again = Config.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg and again.infer.general_ranges[6][5] == [0.3, 0.5]
    cfg.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == cfg
    assert Config().infer.enabled is False  # old configs (no infer section) load with it off
    on = "infer.enabled=true"  # a disabled section is checked for its types and choices only (issue 18)
    bad = [["infer.mode=sometimes"], ["infer.clamp=soft"], ["infer.phase=gd"], [on, "infer.weight=-1"],
           [on, "infer.crop_frames=2"],  # 512 samples < the 2048-point FFT's padding
           [on, "infer.steps=4"],  # no stored 4-step schedule
           [on, "infer.schedule=[0.5, 0.9]"],  # leaves the training range
           [on, "infer.general_ranges={2: [[0.1, 0.3], [0.2, 0.5]]}"],  # overlapping: draws may decrease
           [on, "infer.general_ranges={2: [[0.001, 0.01]]}"],  # wrong length
           [on, "infer.mode=general", "infer.general_steps=[4]"]]
    for items in bad:
        with pytest.raises(ConfigError):
            Config().with_overrides(items)


def test_default_fast_schedules_are_valid_and_inside_general_ranges():
    cfg = Config()
    for k, betas in FAST_SCHEDULES.items():
        assert is_valid(betas, cfg), k
        TRAIN.align(NoiseSchedule(np.asarray(betas)))
        if k in cfg.infer.general_ranges:
            assert all(lo <= b <= hi for b, (lo, hi) in zip(betas, cfg.infer.general_ranges[k]))


def test_general_mode_draws_valid_schedules():
    ic = Config().with_overrides(["infer.enabled=true", "infer.mode=general"]).infer
    seen = set()
    for step in range(300):
        betas = draw_general_schedule(ic, seed=3, step=step)
        k = len(betas)
        seen.add(k)
        assert k in ic.general_steps
        assert all(b2 > b1 for b1, b2 in zip(betas, betas[1:]))
        assert all(lo <= b <= hi for b, (lo, hi) in zip(betas, ic.general_ranges[k]))
        TRAIN.align(NoiseSchedule(np.asarray(betas)))  # inside the training range (raises otherwise)
        assert betas == draw_general_schedule(ic, seed=3, step=step)  # a pure function of (seed, step)
    assert seen == {2, 3, 6}
    assert draw_general_schedule(ic, 3, 0) != draw_general_schedule(ic, 4, 0)


# ---------------------------------------------------------------------------------------------- losses


def test_anti_wrapping_and_phase_loss():
    x = torch.tensor([0.0, 2 * math.pi, -2 * math.pi + 0.1, math.pi + 0.2, 7.0])
    torch.testing.assert_close(anti_wrapping(x), torch.tensor([0.0, 0.0, 0.1, math.pi - 0.2, 7.0 - 2 * math.pi]))
    sr = 22050
    a = torch.from_numpy(voiced(0.3, sr, seed=1)).unsqueeze(0)
    assert anti_wrapping_phase_loss(a, a).item() == pytest.approx(0.0, abs=1e-5)
    shifted = torch.roll(a, 37, dims=-1)  # same magnitudes, different phase
    noisy = a + 0.05 * torch.randn_like(a)
    l_shift, l_noise = anti_wrapping_phase_loss(shifted, a), anti_wrapping_phase_loss(noisy, a)
    assert l_shift > 0.5 and 0 < l_noise < l_shift
    pred = noisy.clone().requires_grad_(True)
    anti_wrapping_phase_loss(pred, a).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # zero prediction: the guarded angle keeps gradients finite
    z = torch.zeros_like(a, requires_grad=True)
    InferLoss(Config().infer)(z, a).total.backward()
    assert torch.isfinite(z.grad).all()
    off = Config().with_overrides(["infer.phase=none"]).infer
    assert InferLoss(off)(noisy, a).phase.item() == 0.0


# ------------------------------------------------------------------------------- the unrolled sampler


class _PerStepGain(torch.nn.Module):
    """A DiffWave whose ε at each aligned step is multiplied by its own gain (to see every step's gradient)."""

    def __init__(self, net: DiffWave, steps: np.ndarray) -> None:
        super().__init__()
        self.net, self.steps = net, torch.tensor(steps, dtype=torch.float32)
        self.gain = torch.nn.Parameter(torch.ones(len(steps)))

    def condition(self, mel):
        return self.net.condition(mel)

    def denoise(self, x, t, cond):
        i = int(torch.argmin((self.steps - t[0].float()).abs()))
        return self.gain[i] * self.net.denoise(x, t, cond)


def _unroll_grads(model, betas, checkpoint: bool, clamp: str = "ste"):
    mel = torch.randn(1, 80, 8, generator=torch.Generator().manual_seed(1)) - 4
    x0 = torch.from_numpy(voiced(8 * 256 / 22050, 22050, seed=1)).unsqueeze(0)
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(5)
    y = unrolled_sample(model, StandardPrior(), TRAIN, betas, mel, x0.shape[-1], g, checkpoint=checkpoint, clamp=clamp)
    loss = InferLoss(Config().infer)(y, x0).total
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_gradients_flow_through_every_unrolled_step():
    steps = TRAIN.align(NoiseSchedule(np.asarray(SIX)))
    model = _PerStepGain(_tiny_net(), steps)
    loss_c, grads_c = _unroll_grads(model, SIX, checkpoint=True)
    assert (grads_c["gain"].abs() > 0).all(), grads_c["gain"]  # each of the 6 network calls gets a gradient
    for name, p in model.net.named_parameters():
        assert name in {k.removeprefix("net.") for k in grads_c}, name  # every parameter, the mel upsampler too
        assert torch.isfinite(grads_c["net." + name]).all()
    assert grads_c["net.spectrogram_upsampler.conv1.weight"].abs().sum() > 0
    loss_p, grads_p = _unroll_grads(model, SIX, checkpoint=False)  # checkpointing changes nothing
    torch.testing.assert_close(loss_c, loss_p)
    for k in grads_p:
        torch.testing.assert_close(grads_c[k], grads_p[k], rtol=1e-4, atol=1e-7)


def test_hard_clamp_blocks_gradients_ste_does_not():
    net = _tiny_net()
    with torch.no_grad():
        net.output_projection.weight.mul_(200.0)  # drive x far outside [-1, 1]
    _, hard = _unroll_grads(net, [1e-3, 0.6], checkpoint=False, clamp="hard")
    _, ste = _unroll_grads(net, [1e-3, 0.6], checkpoint=False, clamp="ste")
    w = "residual_layers.0.dilated_conv.weight"
    assert ste[w].abs().sum() > 2 * hard.get(w, torch.zeros(1)).abs().sum()


def _peak_bytes(fn) -> int:
    """Peak CPU memory allocated by torch while ``fn`` runs (torch.profiler allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    cur = peak = 0
    for _, nbytes in events:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def test_checkpointing_keeps_peak_memory_near_one_step():
    """Peak memory of forward + backward through K=6 steps: with per-step checkpointing within 1.5×
    the peak of a single (uncheckpointed) step; without, at least 2.5× (activations of every step)."""
    net = _tiny_net()
    mel = torch.randn(1, 80, 16) - 4
    x0 = torch.randn(1, 16 * 256) * 0.1

    def run(betas, ckpt):
        def fn():
            y = unrolled_sample(net, StandardPrior(), TRAIN, betas, mel, x0.shape[-1], torch.Generator().manual_seed(0),
                                checkpoint=ckpt)
            (y - x0).square().mean().backward()
        return fn

    one = _peak_bytes(run([0.5], False))
    six_ckpt = _peak_bytes(run(SIX, True))
    six_plain = _peak_bytes(run(SIX, False))
    assert six_ckpt <= 1.5 * one, (one, six_ckpt, six_plain)
    assert six_plain >= 2.5 * one, (one, six_ckpt, six_plain)


# ------------------------------------------------------------------------------------------- training


def _fixed_infer_loss(tr: Trainer, batch) -> float:
    """The infer loss of the trainer's raw model on a fixed batch, schedule and noise."""
    audio, mel, _ = batch
    with torch.no_grad():
        g = infer_noise_generator(0, 10**6, 0, tr.device)
        y = unrolled_sample(tr.model, tr.prior, tr.schedule, infer_schedule(tr.cfg, 0), mel[:, :, :8], 8 * 256, g)
        return tr.infer_loss(y, audio[:, : 8 * 256]).total.item()


def test_finetuning_with_the_infer_loss_lowers_it(tmp_path, data_dir, trained_run):
    cfg = Config.load(_infer_yaml(tmp_path, data_dir, {"weight": 1.0, "steps": 2},
                                  train={"valid_every": 0, "learning_rate": 3e-3, "batch_size": 2}))
    tr = Trainer(cfg, tmp_path / "run", init_from=trained_run, progress=False)
    fixed = tr.data[10**6]
    before = _fixed_infer_loss(tr, fixed)
    logs = [tr.train_step(*tr.data[s]) for s in range(25)]
    after = _fixed_infer_loss(tr, fixed)
    tr.close()
    assert {"diffusion_loss", "infer_loss", "infer_sc", "infer_log_mag", "infer_phase", "infer_steps"} <= set(logs[0])
    assert logs[0]["loss"] == pytest.approx(logs[0]["diffusion_loss"] + logs[0]["infer_loss"], rel=1e-5)
    assert after < 0.9 * before, (before, after)


def test_general_mode_from_scratch_validates_and_resumes_exactly(tmp_path, data_dir):
    """From scratch, PriorGrad prior, general mode: EMA/validation log the K-step metrics; resume is exact."""
    yml = _infer_yaml(tmp_path, data_dir, {"mode": "general", "general_steps": [2, 3]}, prior={"kind": "priorgrad"},
                      train={"max_steps": 4, "save_every": 2, "valid_every": 2, "batch_size": 2})
    last = train_straight_and_resumed(Config.load(yml), tmp_path, 2)
    assert {"valid_mr_stft_2steps", "valid_log_mel_l1_3steps", "infer_loss"} <= set(last)
    assert load_checkpoint_config(tmp_path / "straight").infer.mode == "general"


def load_checkpoint_config(run):
    from diffvoc.checkpoint import load_checkpoint

    return load_checkpoint(run).config


# ------------------------------------------------------------------------------------ schedule search


def test_grid_and_local_search_on_a_known_objective():
    cfg = Config()
    target = [2e-4, 0.03, 0.4]

    def objective(betas):
        d = sum((math.log(b) - math.log(t)) ** 2 for b, t in zip(betas, target))
        return Evaluation(list(betas), d, 0.0)

    start = FAST_SCHEDULES[3]
    g = grid_search(objective, cfg, start, points=4, max_evals=1000)
    assert is_valid(g.betas, cfg) and g.objective < objective(start).objective
    loc = local_search(objective, cfg, start, max_evals=200)
    assert is_valid(loc.betas, cfg)
    assert all(abs(math.log(b / t)) < 0.15 for b, t in zip(loc.betas, target)), loc.betas


def test_searched_schedule_is_stored_and_used(tmp_path, trained_run, data_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # the session fixture stays untouched
    parser = argparse.ArgumentParser()
    add_search_schedule_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["search-schedule", "--checkpoint", str(run), "--steps", "2", "--data", str(data_dir),
                              "--clips", "1", "--seconds", "0.5", "--max-evals", "3", "--json", str(tmp_path / "s.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "default" in out and "searched" in out and "fast_schedules[2]" in out
    res = yaml.safe_load((tmp_path / "s.json").read_text())
    found = res["searched"]["betas"]
    assert res["searched"]["objective"] <= res["default"]["objective"]
    ckpt = run / (run / "latest").read_text().strip()
    assert Config.load(ckpt / "config.yaml").diffusion.fast_schedules[2] == found
    voc = Vocoder.from_pretrained(run)
    assert voc.sampler(steps=2).inference.betas.tolist() == found
    mel = np.random.default_rng(0).normal(-4, 1, (80, 12)).astype(np.float32)
    np.testing.assert_array_equal(voc.vocode(mel, steps=2, seed=1), voc.vocode(mel, schedule=found, seed=1))
    np.save(tmp_path / "m.npy", mel)  # and `diffvoc vocode --steps 2` picks it up
    r = run_cli("vocode", str(tmp_path / "m.npy"), "-o", str(tmp_path / "o.wav"), "--checkpoint", str(run),
                "--steps", "2", "--seed", "1")
    assert r.returncode == 0, r.stderr
    wav, _ = sf.read(tmp_path / "o.wav", dtype="float32")
    ref = np.clip(voc.vocode(mel, schedule=found, seed=1), -1, 1)
    np.testing.assert_allclose(wav, ref, atol=2 / 32767)
    # a grid search with --no-write leaves the checkpoint as it is
    before = (ckpt / "config.yaml").read_text()
    r = search_schedule(run, 3, data=data_dir, clips=1, seconds=0.5, method="grid", max_evals=2, points=2, write=False)
    assert r.written is None and (ckpt / "config.yaml").read_text() == before
    assert r.searched.objective <= r.default.objective and len(r.searched.betas) == 3
