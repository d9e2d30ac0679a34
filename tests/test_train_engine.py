"""The fast training engine: the same loss and gradients as the reference network (fp32), close in
bf16, micro-batches that the optimiser cannot tell from the whole batch, and the deadline."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config_yaml

from diffvoc.build import build_network
from diffvoc.config import Config
from diffvoc.precision import cpu_supports_bf16
from diffvoc.training.engine import FastTrainNetwork, micro_batches
from diffvoc.training.trainer import Trainer, resolve_engine


def _net(conditioning: str = "mel", C: int = 16, L: int = 6, cycle: int = 3, extra: int = 0) -> torch.nn.Module:
    cfg = Config()
    cfg.model.residual_channels, cfg.model.residual_layers, cfg.model.dilation_cycle = C, L, cycle
    cfg.model.conditioning = conditioning
    torch.manual_seed(0)
    net = build_network(cfg)
    if extra:
        from diffvoc.models.diffwave import DiffWave

        net = DiffWave(cfg.model, cfg.diffusion.steps, cfg.audio.n_mels, cfg.audio.hop_length, extra)
    torch.nn.init.normal_(net.output_projection.weight, 0, 0.1)  # zero at init: give it a gradient path
    return net


def _loss_and_grads(fn, net, audio, t, cond, std):
    net.zero_grad()
    out = fn(audio, t, **cond)
    loss = ((out.squeeze(1) - audio) / std).pow(2).mean()  # the Mahalanobis ε-loss's shape
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


def _inputs(conditioning: str, B: int = 3, frames: int = 5, extra: int = 0):
    g = torch.Generator().manual_seed(1)
    audio = 0.3 * torch.randn(B, frames * 256, generator=g)
    t = torch.tensor([0, 17, 49, 5, 30][:B])
    std = 0.1 + torch.rand(B, frames * 256, generator=g)
    if conditioning == "mel":
        cond = {"mel": torch.randn(B, 80 + extra, frames, generator=g) - 4}
    elif conditioning == "class":
        cond = {"label": torch.tensor([1, 7, 3, 0, 9][:B])}
    else:
        cond = {}
    return audio, t, cond, std


@pytest.mark.parametrize("conditioning,extra", [("mel", 0), ("mel", 1), ("class", 0), ("none", 0)])
def test_fp32_fast_engine_equals_the_reference(conditioning, extra):
    net = _net(conditioning, extra=extra)
    audio, t, cond, std = _inputs(conditioning, extra=extra)
    ref_loss, ref = _loss_and_grads(net, net, audio, t, cond, std)
    fast_loss, fast = _loss_and_grads(FastTrainNetwork(net, torch.float32), net, audio, t, cond, std)
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-5, atol=0)
    assert ref.keys() == fast.keys()
    for k in ref:  # every parameter, the upsampler and step MLP included
        scale = ref[k].abs().max().clamp(min=1e-12)
        assert (fast[k] - ref[k]).abs().max() / scale < 1e-4, k
    # a wrong tap, sign or scale would be O(1) off; make sure the gradients are not all trivial
    assert all(v.abs().max() > 0 for k, v in ref.items() if "label_embedding" not in k)


def test_fp32_fast_engine_is_closer_to_float64_than_the_reference_is():
    net = _net("mel", C=32, L=10, cycle=10)
    audio, t, cond, std = _inputs("mel", B=2, frames=8)
    _, ref = _loss_and_grads(net, net, audio, t, cond, std)
    _, fast = _loss_and_grads(FastTrainNetwork(net, torch.float32), net, audio, t, cond, std)
    net64 = copy.deepcopy(net).double()
    _, exact = _loss_and_grads(net64, net64, audio.double(), t, {"mel": cond["mel"].double()}, std.double())
    err_ref = max(((ref[k] - exact[k].float()).norm() / exact[k].norm()).item() for k in exact)
    err_fast = max(((fast[k] - exact[k].float()).norm() / exact[k].norm()).item() for k in exact)
    assert err_fast < 1e-5 and err_fast < 10 * err_ref, (err_fast, err_ref)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has neither AVX512-BF16 nor AMX")
def test_bf16_fast_engine_gradients_are_close():
    net = _net("mel", C=32, L=10, cycle=10)
    audio, t, cond, std = _inputs("mel", B=2, frames=8)
    _, ref = _loss_and_grads(net, net, audio, t, cond, std)
    _, fast = _loss_and_grads(FastTrainNetwork(net, torch.bfloat16), net, audio, t, cond, std)
    errs = {k: ((fast[k] - ref[k]).norm() / ref[k].norm().clamp(min=1e-12)).item() for k in ref}
    # bf16 operands round to 8 bits: about 0.5 % per gradient (as bf16 autocast), never O(1)
    assert np.median(list(errs.values())) < 0.02 and max(errs.values()) < 0.1, errs


def test_micro_batches_cover_the_batch():
    assert micro_batches(16, 1) == [slice(i, i + 1) for i in range(16)]
    assert micro_batches(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert micro_batches(4, 0) == [slice(0, 4)] == micro_batches(4, 9)


def test_saved_activations_are_pooled_and_items_are_independent():
    net = _net("mel")
    fast = FastTrainNetwork(net, torch.float32)
    audio, t, cond, std = _inputs("mel", B=3)
    with torch.no_grad():
        whole = fast(audio, t, **cond)
        alone = torch.cat([fast(audio[i:i + 1], t[i:i + 1], mel=cond["mel"][i:i + 1]) for i in range(3)])
        ref = net(audio, t, **cond)
    torch.testing.assert_close(whole, alone, rtol=1e-5, atol=1e-6)  # the upsampler runs batched
    torch.testing.assert_close(whole, ref, rtol=1e-5, atol=1e-6)
    pooled = len(fast.workspace(audio.shape[1]).pool)
    assert pooled == 1  # forward passes without gradients hand their buffers straight back
    out = fast(audio, t, **cond)  # three items' activations alive at once, then one backward
    assert len(fast.workspace(audio.shape[1]).pool) == 0
    out.sum().backward()
    assert len(fast.workspace(audio.shape[1]).pool) == 3


def test_resolve_engine(monkeypatch):
    import diffvoc.precision as fp

    cpu = torch.device("cpu")
    monkeypatch.setattr(fp, "cpu_supports_bf16", lambda: True)
    assert resolve_engine("auto", "auto", cpu) == ("fast", "bf16")
    monkeypatch.setattr(fp, "cpu_supports_bf16", lambda: False)
    assert resolve_engine("auto", "auto", cpu) == ("fast", "fp32")
    assert resolve_engine("reference", "fp32", cpu) == ("reference", "fp32")
    with pytest.raises(Exception, match="fp16"):
        resolve_engine("fast", "fp16", cpu)


def test_trainer_fast_fp32_matches_reference_fp32(tmp_path, data_dir):
    """Same data, noise and seed: the fast engine (one item per pass, gradients accumulated) and the
    reference network (the whole batch at once) give the same losses step after step."""
    losses = {}
    for engine in ("fast", "reference"):
        cfg = Config.load(tiny_config_yaml(tmp_path / f"{engine}.yaml", data_dir,
                                           prior={"kind": "priorgrad"},
                                           train={"valid_every": 0, "engine": engine, "precision": "fp32"}))
        tr = Trainer(cfg, tmp_path / engine, progress=False)
        assert tr.engine == engine and tr.micro_batch == (1 if engine == "fast" else 0)
        losses[engine] = [tr.train_step(*tr.data[s])["loss"] for s in range(4)]
        tr.close()
    np.testing.assert_allclose(losses["fast"], losses["reference"], rtol=2e-5)


@pytest.mark.slow
def test_deadline_is_kept_and_ends_with_a_checkpoint(tmp_path, data_dir):
    yml = tiny_config_yaml(tmp_path / "c.yaml", data_dir, train={"max_steps": 100000, "valid_every": 20,
                                                                  "save_every": 100000, "log_every": 10})
    t0 = time.time()
    r = run_cli("train", str(yml), "--run-dir", str(tmp_path / "run"), "--deadline", "40", "--quiet")
    took = time.time() - t0
    assert r.returncode == 0, r.stderr
    assert took < 40 + 2, took  # counted from the process's start, which is after t0
    assert (tmp_path / "run" / "latest").is_file()
    assert "steps/s" in r.stderr and "samples/s" in r.stderr and "peak" in r.stderr
    r = run_cli("train", str(yml), "--run-dir", str(tmp_path / "run2"), "--deadline", "0")
    assert r.returncode != 0 and "deadline" in r.stderr and "Traceback" not in r.stderr
