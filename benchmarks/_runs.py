"""Training runs for the benchmarks: start ``diffvoc train`` in a subprocess, reuse finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def train(run: Path, cfg: dict, device: str, threads: int, init_from: str | None) -> subprocess.Popen:
    """Start ``diffvoc train`` on ``cfg`` in ``run`` (log in ``run/train.log``), optionally ``--init-from``."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "valid.jsonl").unlink(missing_ok=True)
    (run / "run.yaml").write_text(yaml.safe_dump(cfg))
    (run / "init_from").write_text(str(init_from))
    cmd = [sys.executable, "-m", "diffvoc.cli", "train", str(run / "run.yaml"), "--run-dir", str(run), "--quiet",
           "--device", device]
    if init_from:
        cmd += ["--init-from", init_from]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(threads))
    return subprocess.Popen(cmd, env=env, stdout=open(run / "train.log", "w"), stderr=subprocess.STDOUT)


def finished(run: Path, cfg: dict, steps: int, init_from: str | None) -> bool:
    """A run from an earlier invocation with the same config and init that reached ``steps`` (reused)."""
    try:
        same = yaml.safe_load((run / "run.yaml").read_text()) == cfg and (run / "init_from").read_text() == str(init_from)
        last = json.loads((run / "valid.jsonl").read_text().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        return False
    return same and last["step"] == steps


def wait(procs: dict[str, subprocess.Popen], out: Path) -> None:
    """Wait for every run; exit with one line naming the log of the first that failed."""
    for name, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"training {name} failed; see {out / name / 'train.log'}")
