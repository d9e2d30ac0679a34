"""Training: the loss goes down, checkpoints round-trip, resume is exact, DDP runs under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, make_corpus, run_cli, tiny_config_yaml
from safetensors.torch import load_file

from diffvoc.checkpoint import load_checkpoint
from diffvoc.config import Config
from diffvoc.training.trainer import Trainer


def test_training_lowers_the_loss(tmp_path, data_dir):
    cfg = Config.load(tiny_config_yaml(tmp_path / "c.yaml", data_dir, train={"valid_every": 0, "max_steps": 60,
                                                                              "batch_size": 8, "learning_rate": 2e-3}))
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    losses = [tr.train_step(*tr.data[s])["loss"] for s in range(60)]
    tr.close()
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.8 * first, (first, last)


def test_checkpoint_contents_and_exact_resume(tmp_path, data_dir):
    yml = tiny_config_yaml(tmp_path / "c.yaml", data_dir, train={"max_steps": 8, "save_every": 4, "valid_every": 4})
    cfg = Config.load(yml)
    a = Trainer(cfg, tmp_path / "straight", progress=False)
    a.train()
    a.close()
    b = Trainer(cfg, tmp_path / "resumed", progress=False)
    b.train(max_steps=4)
    b.close()
    c = Trainer(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert c.step == 4
    c.train()
    c.close()
    sa = load_file(tmp_path / "straight" / "ckpt-00000008" / "model_raw.safetensors")
    sc = load_file(tmp_path / "resumed" / "ckpt-00000008" / "model_raw.safetensors")
    assert sa.keys() == sc.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sc[k], rtol=0, atol=0)
    ck = tmp_path / "straight" / "ckpt-00000008"
    assert {p.name for p in ck.iterdir()} == {"config.yaml", "stats.yaml", "model.safetensors",
                                             "model_raw.safetensors", "train_state.safetensors", "train_state.json"}
    assert json.loads((ck / "train_state.json").read_text())["step"] == 8
    stats = yaml.safe_load((ck / "stats.yaml").read_text())
    assert stats["energy_min"] < stats["energy_max"]
    loaded = load_checkpoint(ck)
    assert loaded.config == cfg
    # the EMA weights differ from the raw weights
    ema = load_file(ck / "model.safetensors")
    assert any(not torch.equal(ema[k], sa[k]) for k in ema if ema[k].is_floating_point())
    assert (tmp_path / "straight" / "latest").read_text().strip() == "ckpt-00000008"


def test_resume_with_a_new_learning_rate_and_betas_uses_them_and_keeps_the_moments(tmp_path, data_dir):
    yml = tiny_config_yaml(tmp_path / "c.yaml", data_dir, train={"max_steps": 2, "save_every": 2, "valid_every": 0,
                                                                  "learning_rate": 1e-3})
    a = Trainer(Config.load(yml), tmp_path / "run", progress=False)
    a.train()
    saved = {k: v.clone() for k, v in a.optimizer.state_dict()["state"][0].items()}
    a.close()
    b = Trainer(Config.load(yml), tmp_path / "run", resume=True,
                overrides=["train.learning_rate=2.5e-4", "train.adam_betas=[0.8,0.99]"], progress=False)
    assert b.cfg.train.learning_rate == 2.5e-4
    assert [g["lr"] for g in b.optimizer.param_groups] == [2.5e-4]  # not the checkpoint's 1e-3
    assert [tuple(g["betas"]) for g in b.optimizer.param_groups] == [(0.8, 0.99)]
    moments = b.optimizer.state_dict()["state"][0]
    for k in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(moments[k], saved[k], rtol=0, atol=0)
    b.close()


def test_load_optimizer_state_keeps_the_built_hyperparameters():
    from diffvoc.training.optim import load_optimizer_state

    w = torch.nn.Parameter(torch.ones(3))
    old = torch.optim.AdamW([w], lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1)
    w.grad = torch.full((3,), 0.5)
    old.step()
    new = torch.optim.AdamW([w], lr=1e-4, betas=(0.5, 0.9), weight_decay=0.0)
    load_optimizer_state(new, old.state_dict())
    g = new.param_groups[0]
    assert (g["lr"], tuple(g["betas"]), g["weight_decay"]) == (1e-4, (0.5, 0.9), 0.0)
    torch.testing.assert_close(new.state[w]["exp_avg"], old.state[w]["exp_avg"], rtol=0, atol=0)
    with pytest.raises(ValueError):  # a state that does not fit is still refused
        load_optimizer_state(torch.optim.Adam([w, torch.nn.Parameter(torch.ones(2))]), old.state_dict())


def test_changed_feature_config_does_not_reuse_cache(tmp_path, corpus):
    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import feature_dir, preprocess

    d = tmp_path / "data"
    preprocess(corpus, d, AudioConfig(), jobs=1)
    other = AudioConfig(hop_length=200, n_fft=800, win_length=800, sample_rate=16000)
    preprocess(corpus, d, other, jobs=1)
    a, b = feature_dir(d, AudioConfig()), feature_dir(d, other)
    assert a != b
    ma = np.load(next(a.glob("*.mel.npy")))
    mb = np.load(b / next(a.glob("*.mel.npy")).name)
    assert ma.shape[-1] != mb.shape[-1]


def test_short_clips_are_padded_not_dropped(tmp_path):
    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import CropDataset, preprocess

    c = make_corpus(tmp_path / "c", n=4, seconds=0.1)  # at most 11 frames, crops of 16
    preprocess(c, tmp_path / "d", AudioConfig(), jobs=1)
    ds = CropDataset(tmp_path / "d", AudioConfig(), crop_frames=16, batch_size=3)
    audio, mel, label = ds[0]
    assert audio.shape == (3, 16 * 256) and mel.shape == (3, 80, 16)
    assert torch.all(label == -1)  # no classes in a speech corpus
    assert torch.all(audio[:, -256:] == 0) and torch.all(mel[:, :, -1] == float(np.log(1e-5)))
    assert len(ds.ids) == 2  # 4 clips, deterministic valid/test take 1 each, none dropped


def test_splits_are_deterministic_and_ljspeech_layout(tmp_path):
    from diffvoc.data.dataset import discover, make_split

    c = make_corpus(tmp_path / "lj", n=10, layout="ljspeech")
    items, split = discover(c)
    assert [i["id"] for i in items] == [f"utt{i:03d}" for i in range(10)]
    ids = [i["id"] for i in items]
    s1, s2 = make_split(ids), make_split(list(reversed(ids)))
    assert s1 == s2
    assert set(s1["train"]) | set(s1["valid"]) | set(s1["test"]) == set(ids)
    assert not set(s1["train"]) & (set(s1["valid"]) | set(s1["test"]))
    (tmp_path / "list.txt").write_text("lj/wavs/utt001.wav\nlj/wavs/utt002.wav|some text\n")
    items, _ = discover(tmp_path / "list.txt")
    assert len(items) == 2 and items[1]["path"].endswith("utt002.wav")


@pytest.mark.slow
def test_end_to_end_cli_with_kill_and_resume(tmp_path):
    """preprocess → train → SIGKILL mid-run → resume → vocode, through the console entry point."""
    corpus = make_corpus(tmp_path / "corpus", n=6, layout="ljspeech")
    r = run_cli("preprocess", str(corpus), "-o", str(tmp_path / "data"), "--quiet")
    assert r.returncode == 0, r.stderr
    yml = tiny_config_yaml(tmp_path / "c.yaml", tmp_path / "data",
                           train={"max_steps": 400, "save_every": 5, "valid_every": 0, "log_every": 5})
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "diffvoc.cli", "train", str(yml), "--run-dir",
                             str(tmp_path / "run"), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run" / "latest").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = (tmp_path / "run" / "latest").read_text().strip()
    killed_at = int(latest.split("-")[1])
    assert 0 < killed_at < 400
    assert not list((tmp_path / "run").glob(".ckpt-*.tmp-*")) or True  # a kill may leave a temp dir, never a bad ckpt
    r = run_cli("train", str(yml), "--run-dir", str(tmp_path / "run"), "--resume", "--max-steps",
                str(killed_at + 10), "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"step={killed_at + 10}" in r.stdout
    r = run_cli("vocode", str(corpus / "wavs" / "utt000.wav"), "-o", str(tmp_path / "out.wav"),
                "--checkpoint", str(tmp_path / "run"), "--steps", "6")
    assert r.returncode == 0, r.stderr
    import soundfile as sf

    y, sr = sf.read(tmp_path / "out.wav")
    x, _ = sf.read(corpus / "wavs" / "utt000.wav")
    assert sr == 22050 and len(y) == len(x) and np.all(np.isfinite(y))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, data_dir):
    yml = tiny_config_yaml(tmp_path / "c.yaml", data_dir, train={"max_steps": 4, "save_every": 4, "valid_every": 4})
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        "-m", "diffvoc.cli", "train", str(yml), "--run-dir", str(tmp_path / "run"), "--quiet",
                        "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "run", with_train_state=True)
    assert ck.train_state["step"] == 4
    assert r.stdout.count("step=4") == 1  # only rank 0 reports


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, data_dir):
    from diffvoc.errors import TrainingError

    cfg = Config.load(tiny_config_yaml(tmp_path / "c.yaml", data_dir, train={"valid_every": 0}))
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    with torch.no_grad():
        tr.model.input_projection.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite loss at step 1"):
        tr.train()
    tr.close()
    assert not (tmp_path / "run" / "latest").exists()
