"""Shared fixtures: small synthetic corpora and tiny trained models, made per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]


def voiced(seconds: float, sr: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a harmonic source with a gliding pitch, syllable-rate envelope and
    a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    pitch = f0 * (1 + 0.2 * np.sin(2 * np.pi * 0.8 * t + seed))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 20) if k * f0 < sr / 2.5)
    env = (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed)) ** 2
    return (0.3 * harmonics * env + 0.005 * rng.standard_normal(n)).astype(np.float32)


def make_corpus(root: Path, n: int = 8, sr: int = 22050, seconds: float = 1.0, layout: str = "folder") -> Path:
    """Write ``n`` clips as a plain folder or in LJSpeech layout; returns the corpus path."""
    root.mkdir(parents=True, exist_ok=True)
    wavs = root / "wavs" if layout == "ljspeech" else root
    wavs.mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        x = voiced(seconds * (0.7 + 0.6 * (i % 3) / 2), sr, f0=110 + 15 * i, seed=i)
        sf.write(wavs / f"utt{i:03d}.wav", x, sr, subtype="PCM_16")
        lines.append(f"utt{i:03d}|text {i}|text {i}")
    if layout == "ljspeech":
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config_yaml(path: Path, data: Path, **sections) -> Path:
    """A tiny model config for CPU tests (overrides as nested dicts)."""
    import yaml

    cfg = {
        "model": {"preset": "tiny"},
        "data": {"path": str(data), "crop_frames": 16, "valid_clips": 1, "valid_seconds": 0.5},
        "train": {"batch_size": 4, "max_steps": 10, "log_every": 5, "valid_every": 5, "save_every": 5,
                  "learning_rate": 1e-3},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m diffvoc.cli ARGS`` as a user would; returns the finished process."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "diffvoc.cli", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def train_straight_and_resumed(cfg, root: Path, stop_at: int, files=("model_raw",)) -> dict:
    """Train ``cfg`` to ``train.max_steps`` in one go (``root/straight``) and again stopping at
    ``stop_at`` then resuming (``root/resumed``); assert the final checkpoints' ``files`` are
    bit-identical. Returns the straight run's last logged values."""
    from safetensors.torch import load_file

    from diffvoc.training.trainer import Trainer

    a = Trainer(cfg, root / "straight", progress=False)
    last = a.train()
    a.close()
    b = Trainer(cfg, root / "resumed", progress=False)
    b.train(max_steps=stop_at)
    b.close()
    c = Trainer(cfg, root / "resumed", resume=True, progress=False)
    c.train()
    c.close()
    name = f"ckpt-{cfg.train.max_steps:08d}"
    for f in files:
        sa = load_file(root / "straight" / name / f"{f}.safetensors")
        sc = load_file(root / "resumed" / name / f"{f}.safetensors")
        assert set(sa) == set(sc), f
        for k in sa:
            assert torch.equal(sa[k], sc[k]), (f, k)
    return last


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus) -> Path:
    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import preprocess

    d = tmp_path_factory.mktemp("data")
    preprocess(corpus, d, AudioConfig(), jobs=1)
    return d


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_dir) -> Path:
    """A tiny model trained for 10 steps (session-wide, reused by the inference tests)."""
    from diffvoc.config import Config
    from diffvoc.training.trainer import Trainer

    run = tmp_path_factory.mktemp("run")
    cfg = Config.load(tiny_config_yaml(run / "tiny.yaml", data_dir))
    tr = Trainer(cfg, run / "run", progress=False)
    tr.train()
    tr.close()
    return run / "run"
