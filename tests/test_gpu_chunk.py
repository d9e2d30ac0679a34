"""The GPU training chunk (issue 14, item 4): scripts/gpu_chunk.sh rehearsed on a CPU with a tiny model leaves
in $OUT only what the device tool returns (at most 8 files of at most 16 MiB, 64 MiB in all, plain names), and
scripts/unpack_chunk.py restores a run that Vocoder.from_pretrained loads and `diffvoc train --resume` continues;
pack/unpack refuse damaged parts and mixed states with one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

TINY = "model.residual_channels=8 model.residual_layers=4 train.batch_size=2 data.crop_frames=8"
MIB = 1 << 20


def _script(name: str, *args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    cmd = ["bash", str(ROOT / "scripts" / name)] if name.endswith(".sh") else [sys.executable, str(ROOT / "scripts" / name)]
    return subprocess.run(cmd + list(args), env=e, capture_output=True, text=True, timeout=timeout)


def _assert_return_limits(out: Path) -> list[str]:
    """What the device tool brings back: <= 8 plain files of <= 16 MiB, <= 64 MiB together."""
    entries = sorted(out.iterdir())
    assert all(p.is_file() for p in entries), entries
    assert len(entries) <= 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in entries)
    assert all(p.stat().st_size <= 16 * MIB for p in entries)
    assert sum(p.stat().st_size for p in entries) <= 64 * MIB
    return [p.name for p in entries]


def _tiny_run(run: Path, step: int, seed: int = 0) -> None:
    """A run directory as the trainer leaves it: ckpt-<step>/ with training state, latest, valid.jsonl, logs/."""
    from diffvoc.build import build
    from diffvoc.checkpoint import save_checkpoint, write_latest
    from diffvoc.config import Config

    cfg = Config.load(ROOT / "recipes" / "priorgrad_base.yaml").with_overrides(TINY.split())
    stats = {"energy_min": 0.5, "energy_max": 4.0}
    torch.manual_seed(seed)
    model, _, _ = build(cfg, stats)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 2048), torch.tensor([3]), torch.randn(1, 80, 8)).sum().backward()
    opt.step()
    sd = model.state_dict()
    name = f"ckpt-{step:08d}"
    save_checkpoint(run / name, cfg, stats, sd, sd, {"optimizer": opt.state_dict(), "step": step})
    write_latest(run, name)
    (run / "valid.jsonl").write_text(json.dumps({"step": step, "loss": 1.0}) + "\n")
    (run / "logs").mkdir(exist_ok=True)
    (run / "logs" / f"events.out.tfevents.{step}").write_bytes(b"x" * 1000)
    cfg.save(run / "config.yaml")


def _pack(run: Path, out: Path, **extra) -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pack_chunk
    finally:
        sys.path.pop(0)
    return pack_chunk.pack(run, out, extra=extra, part_bytes=MIB)


def _one_line_refusal(r: subprocess.CompletedProcess, words: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unpack_chunk: error:") and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_pack_and_unpack_round_trip_and_refusals(tmp_path):
    import hashlib

    _tiny_run(tmp_path / "a", 5)
    out = tmp_path / "out"
    s = _pack(tmp_path / "a", out, status="trained", start_step=0)
    names = _assert_return_limits(out)
    assert len(s["parts"]) >= 3 and s["resumable"] and s["return_limits_ok"] and s["dropped"] == []  # 1 MiB parts
    assert set(names) == {"chunk.json", "valid.jsonl"} | {p["name"] for p in s["parts"]}
    assert s["end_step"] == 5 and s["steps"] == 5

    r = _script("unpack_chunk.py", str(out), str(tmp_path / "restored"))
    assert r.returncode == 0, r.stderr
    restored = tmp_path / "restored"
    assert (restored / "latest").read_text().strip() == "ckpt-00000005"
    for f in ("model.safetensors", "model_raw.safetensors", "train_state.safetensors"):
        assert (restored / "ckpt-00000005" / f).read_bytes() == (tmp_path / "a" / "ckpt-00000005" / f).read_bytes()
    assert (restored / "logs" / "events.out.tfevents.5").is_file() and (restored / "valid.jsonl").is_file()
    r = _script("unpack_chunk.py", str(out), str(restored))
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr

    # the next chunk continued ckpt-5 of this run: unpacked into the same folder, it updates it
    _tiny_run(tmp_path / "b", 9, seed=1)
    sha = hashlib.sha256((restored / "ckpt-00000005" / "model.safetensors").read_bytes()).hexdigest()
    out2 = tmp_path / "out2"
    _pack(tmp_path / "b", out2, start_step=5, resumed_from={"checkpoint": "ckpt-00000005", "model_sha256": sha})
    other = tmp_path / "other"  # another run at ckpt-5 (other weights) is refused, and left as it was
    _tiny_run(other, 5, seed=2)
    _one_line_refusal(_script("unpack_chunk.py", str(out2), str(other)), "not the checkpoint this chunk continued")
    assert (other / "latest").read_text().strip() == "ckpt-00000005" and not (other / "ckpt-00000009").exists()
    r = _script("unpack_chunk.py", str(out2), str(restored))
    assert r.returncode == 0 and "updated from ckpt-00000005 to ckpt-00000009" in r.stdout, r.stderr
    assert (restored / "latest").read_text().strip() == "ckpt-00000009"
    assert (restored / "logs" / "events.out.tfevents.9").is_file() and (restored / "ckpt-00000005").is_dir()
    assert not list(tmp_path.glob(".*unpack*"))  # no temporary folder left behind
    # an older chunk over a newer run, a damaged part, a missing part, a folder that is no run: refused
    _one_line_refusal(_script("unpack_chunk.py", str(out), str(restored)), "is at ckpt-00000009")
    part = out / s["parts"][1]["name"]
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    _one_line_refusal(_script("unpack_chunk.py", str(out), str(tmp_path / "new")), "sha256")
    part.unlink()
    _one_line_refusal(_script("unpack_chunk.py", str(out), str(tmp_path / "new")), "missing")
    assert not (tmp_path / "new").exists()
    _one_line_refusal(_script("unpack_chunk.py", str(out2), str(tmp_path / "a" / "logs")), "not a run directory")
    _one_line_refusal(_script("unpack_chunk.py", str(tmp_path), str(tmp_path / "new")), "no chunk.json")


def test_pack_drops_logs_then_training_state_to_fit(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import pack_chunk
    finally:
        sys.path.pop(0)
    _tiny_run(tmp_path / "a", 3)
    (tmp_path / "a" / "logs" / "big").write_bytes(os.urandom(3 * MIB))
    ck = tmp_path / "a" / "ckpt-00000003"
    inference = sum(f.stat().st_size for f in ck.iterdir() if f.name not in pack_chunk.TRAIN_STATE)
    monkeypatch.setattr(pack_chunk, "MAX_TOTAL", int(inference + 2.6 * MIB))  # room for the weights only
    s = pack_chunk.pack(tmp_path / "a", tmp_path / "out", part_bytes=MIB)
    assert s["dropped"] == ["logs", "train_state"] and not s["resumable"] and s["checkpoint"] == "ckpt-00000003"
    assert "ckpt-00000003/model.safetensors" in s["tar"]["members"]
    assert not any(m.startswith("logs/") or "train_state" in m for m in s["tar"]["members"])


@pytest.mark.slow
def test_cpu_rehearsal_unpacks_loads_and_resumes(tmp_path):
    """The rehearsal from nothing (no corpus, no run: it writes a synthetic corpus), a tiny model and 2 MiB
    parts: trained to the deadline, packed within the return limits; unpacked, it loads and resumes."""
    from diffvoc.inference.vocoder import Vocoder

    out, budget = tmp_path / "out", 60
    env = {"DEVICE": "cpu", "BUDGET": str(budget), "OUT": str(out), "RUN": str(tmp_path / "none"),
           "CORPUS": str(tmp_path / "none"), "EXTRA_SET": TINY, "PACK_RESERVE": "15", "GRACE": "4", "PART_MIB": "2"}
    t0 = time.time()
    r = _script("gpu_chunk.sh", env=env, timeout=budget + 90)
    took = time.time() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert took < budget + 30, took  # ends by the budget; slack for a loaded machine (a killed process can linger)
    names = _assert_return_limits(out)
    s = json.loads((out / "chunk.json").read_text())
    assert s["status"] == "trained" and s["resumable"] and s["return_limits_ok"] and s["device"] == "cpu"
    assert set(names) == {"chunk.json", "train.log", "valid.jsonl"} | {p["name"] for p in s["parts"]}
    assert len(s["parts"]) >= 2 and s["steps"] > 0 and s["steps_per_s"] > 0 and s["samples_per_s"] > 0
    assert "preflight: ok" in (out / "train.log").read_text()

    run = tmp_path / "run"
    r = _script("unpack_chunk.py", str(out), str(run))
    assert r.returncode == 0, r.stderr
    voc = Vocoder.from_pretrained(run)
    assert voc.model.cfg.residual_channels == 8
    y = voc.vocode(np.full((80, 6), -5.0, np.float32), steps=2)
    assert y.shape == (6 * 256,) and np.isfinite(y).all()

    corpus, data = tmp_path / "corpus", tmp_path / "data"
    assert _script("pack_corpus.py", "--synthetic", "8", str(corpus)).returncode == 0
    assert run_cli("preprocess", str(corpus), "-o", str(data), "--quiet", "--jobs", "1").returncode == 0
    step = s["end_step"]
    r = run_cli("train", str(ROOT / "recipes" / "priorgrad_base.yaml"), "--run-dir", str(run), "--resume",
                "--data", str(data), "--device", "cpu", "--quiet", "--max-steps", str(step + 3),
                "--set", "train.valid_every=0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "latest").read_text().strip() == f"ckpt-{step + 3:08d}"
