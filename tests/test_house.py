"""The house (issue 17): what a refactor must not change, and the rules it must keep.

- multi-file ``diffvoc vocode`` gives each file what vocoding it alone gives (same seed);
- the subcommand list, every flag and its defaults (a snapshot);
- the files of a checkpoint directory and its config keys (a snapshot);
- the import rules of ``ARCHITECTURE.md``, each checked in a fresh interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _regen() -> bool:
    return os.environ.get("DIFFVOC_UPDATE_SNAPSHOTS") == "1"


def _check_snapshot(name: str, value) -> None:
    path = SNAPSHOTS / name
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    if _regen() or not path.exists():
        path.write_text(text)
    assert json.loads(path.read_text()) == json.loads(text), (
        f"{name} changed; if on purpose, rerun with DIFFVOC_UPDATE_SNAPSHOTS=1")


# ------------------------------------------------------------------------------------------ vocode
def test_multi_file_vocode_equals_each_file_alone(tmp_path, trained_run, corpus):
    """Pin for the bug where ``cmd_vocode`` padded files into one batch: with ``--seed 0`` the second
    file got other noise (and padding) than it gets alone."""
    wavs = sorted(corpus.glob("*.wav"))[:3]
    mels = []
    for i, w in enumerate(wavs):
        m = tmp_path / f"m{i}.npy"
        r = run_cli("mel", str(w), "-o", str(m), "--checkpoint", str(trained_run))
        assert r.returncode == 0, r.stderr
        mels.append(m)
    # lengths differ, so the old code padded the shorter ones
    frames = {np.load(m).shape[-1] for m in mels}
    both = tmp_path / "both"
    r = run_cli("vocode", *map(str, mels), "-o", str(both), "--checkpoint", str(trained_run),
                "--seed", "0", "--steps", "2", "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    for m in mels:
        alone = tmp_path / f"alone_{m.stem}.wav"
        r = run_cli("vocode", str(m), "-o", str(alone), "--checkpoint", str(trained_run),
                    "--seed", "0", "--steps", "2", "--precision", "fp32")
        assert r.returncode == 0, r.stderr
        a, _ = sf.read(alone, dtype="float32")
        b, _ = sf.read(both / f"{m.stem}.wav", dtype="float32")
        assert a.shape == b.shape
        # 16-bit wav: equal to one quantisation step
        np.testing.assert_allclose(b, a, atol=2.0 / 32768)
    assert len(frames) >= 1


# ------------------------------------------------------------------------------------------ CLI
def _parser_snapshot(parser: argparse.ArgumentParser) -> dict:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out["subcommands"] = {name: _parser_snapshot(p) for name, p in sorted(action.choices.items())}
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            key = "/".join(action.option_strings) or action.dest
            default = action.default
            if not isinstance(default, (str, int, float, bool, type(None), list)):
                default = repr(default)
            out[key] = {"default": default, "nargs": action.nargs, "required": action.required,
                        "choices": sorted(map(str, action.choices)) if action.choices else None}
    return out


def test_cli_snapshot():
    from diffvoc.cli import build_parser

    _check_snapshot("cli.json", _parser_snapshot(build_parser()))


# ------------------------------------------------------------------------------------------ checkpoint
def _keys(d, prefix=""):
    if isinstance(d, dict):
        return sorted(sum((_keys(v, f"{prefix}{k}.") for k, v in d.items()), []))
    return [prefix[:-1]]


def test_checkpoint_dir_snapshot(trained_run):
    import yaml
    from safetensors import safe_open

    from diffvoc.checkpoint import resolve_checkpoint_dir

    ckpt = resolve_checkpoint_dir(trained_run)
    files = sorted(p.name for p in ckpt.iterdir())
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    weights = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(f), "pt") as s:
            weights[f.name] = sorted(s.keys())
    _check_snapshot("checkpoint.json", {"files": files, "config_keys": _keys(cfg),
                                        "stats_keys": _keys(yaml.safe_load((ckpt / "stats.yaml").read_text())),
                                        "weights": weights})


# ------------------------------------------------------------------------------------------ import rules
def _loaded_after(statement: str) -> tuple[set[str], set[str]]:
    """(diffvoc modules, top-level third-party packages) loaded by ``statement`` in a fresh interpreter."""
    code = ("import sys; before = set(sys.modules); " + statement + "; import json; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    mods = json.loads(r.stdout.strip().splitlines()[-1])
    return ({m for m in mods if m.startswith("diffvoc")}, {m.split(".")[0] for m in mods if "." not in m})


CORE = ["diffvoc.config", "diffvoc.config_validation", "diffvoc.acoustic_config", "diffvoc.audio", "diffvoc.checkpoint", "diffvoc.build", "diffvoc.precision",
        "diffvoc.models.diffwave", "diffvoc.models.discriminator", "diffvoc.diffusion.schedule",
        "diffvoc.diffusion.noise", "diffvoc.diffusion.prior", "diffvoc.diffusion.loss",
        "diffvoc.diffusion.spectral", "diffvoc.diffusion.sampler", "diffvoc.diffusion.infergrad",
        "diffvoc.diffusion.truncation"]
METRIC_PACKAGES = {"pesq", "pystoi", "pysptk", "pyworld", "speechmos", "matplotlib", "onnxruntime"}


@pytest.mark.parametrize("module", CORE)
def test_core_imports_no_outer_layer(module):
    """The core (config, audio, checkpoint, build, models, diffusion) loads no training, inference,
    evaluation, data or CLI code, and no metric package."""
    ours, third = _loaded_after(f"import {module}")
    outer = sorted(m for m in ours if m.startswith(("diffvoc.training", "diffvoc.inference", "diffvoc.evaluation",
                                                     "diffvoc.data", "diffvoc.cli")))
    assert not outer, f"{module} loads {outer}"
    assert not third & METRIC_PACKAGES, f"{module} loads {sorted(third & METRIC_PACKAGES)}"


def test_training_imports_no_inference_or_evaluation():
    ours, third = _loaded_after("import diffvoc.training.trainer, diffvoc.training.engine")
    bad = sorted(m for m in ours if m.startswith(("diffvoc.inference", "diffvoc.evaluation", "diffvoc.cli")))
    assert not bad, bad
    assert not third & METRIC_PACKAGES, sorted(third & METRIC_PACKAGES)


def test_from_diffvoc_import_vocoder_loads_only_the_inference_path():
    ours, third = _loaded_after("from diffvoc import Vocoder, Config, DiffvocError")
    bad = sorted(m for m in ours if m.startswith(("diffvoc.evaluation", "diffvoc.data", "diffvoc.cli",
                                                   "diffvoc.training")))
    assert not bad, bad
    assert not third & (METRIC_PACKAGES | {"tensorboard", "sklearn"}), sorted(third)
    assert "diffvoc.inference.vocoder" in ours


def test_only_cli_imports_argparse():
    src = Path(__file__).resolve().parents[1] / "src" / "diffvoc"
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                   if "import argparse" in p.read_text() and p.parts[-2] != "cli")
    assert not users, users


# ------------------------------------------------------------------------------------------ derived values once
def _src_lines(needle: str) -> list[str]:
    src = Path(__file__).resolve().parents[1] / "src" / "diffvoc"
    return sorted(f"{p.relative_to(src)}:{i}" for p in src.rglob("*.py")
                  for i, line in enumerate(p.read_text().splitlines(), 1) if needle in line)


def test_each_derived_value_is_computed_in_one_place():
    """The training schedule is built by DiffusionConfig.schedule only; the EMA lives in training/ema.py; ᾱ products, the training range and
    the truncation level are NoiseSchedule's; T_trunc is computed by the builder (and by config validation)
    and passed on; the sampler learns that it is truncated from its constructor."""
    assert [s.split(":")[0] for s in _src_lines("NoiseSchedule.linear(")] == ["config.py"]
    assert not [s for s in _src_lines("1.0 - (df.beta_start") + _src_lines("np.linspace(cfg.diffusion.beta_start")]
    assert {s.split(":")[0] for s in _src_lines("truncation_steps(")} <= {"config_validation.py", "build.py"}
    assert not _src_lines("sampler.truncated =")
    assert [s.split(":")[0] for s in _src_lines("np.cumprod(self.alphas)")] == ["diffusion/schedule.py"]
    # the EMA (warm-up decay, update, swap) is training/ema.py's, for every trainer
    assert {s.split(":")[0] for s in _src_lines("(10 + ")} == {"training/ema.py"}
    assert {s.split(":")[0] for s in _src_lines("load_state_dict(self.ema")} == set()
