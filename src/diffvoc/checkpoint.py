"""Checkpoint directories: config YAML + data statistics + safetensors weights, written atomically.

Layout of a checkpoint directory::

    config.yaml              the full Config
    stats.yaml               data statistics the model needs (PriorGrad's energy range), may be {}
    model.safetensors        EMA weights (used for sampling)
    model_raw.safetensors    raw weights (training only)
    train_state.safetensors  optimizer tensors          } written by the trainer,
    train_state.json         step, optimizer groups...  } needed only for --resume
    generator.safetensors    truncated models with a separate implicit prior: its EMA weights
    generator_raw.safetensors, discriminator.safetensors    TDPM training state (--resume)

A training run directory holds ``ckpt-<step>/`` folders and ``latest`` (a text file naming the
newest). Nothing here unpickles: lmnt-com/diffwave ``.pt`` files load with ``weights_only=True``.

Every file is checked at this read boundary, so a corrupt, foreign or wrongly typed one is a one-line
:class:`CheckpointError`: YAML through :func:`diffvoc.io.load_yaml` (no aliases, bounded size), the
statistics by :func:`check_stats` (a mapping of finite numbers, PriorGrad's energy range ordered), the
training state by :func:`_check_train_state`; the weights are checked finite when they are loaded into a
network (:func:`diffvoc.build.load_weights`).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffvoc.config import AudioConfig, Config, ConfigError, ModelConfig, apply_presets
from diffvoc.errors import CheckpointError, with_path
from diffvoc.io import atomic_dir, atomic_write_text, dump_yaml, load_json, load_yaml, plain, read_text

CONFIG = "config.yaml"
STATS = "stats.yaml"
WEIGHTS = "model.safetensors"
RAW_WEIGHTS = "model_raw.safetensors"
STATE_TENSORS = "train_state.safetensors"
STATE_META = "train_state.json"
LATEST = "latest"
# extra weight files: the separate implicit prior (inference) and the GAN's training state
EXTRA_WEIGHTS = ("generator",)
EXTRA_TRAIN_WEIGHTS = ("generator_raw", "discriminator")


@dataclass
class Checkpoint:
    """A loaded checkpoint: its config, data statistics, weights and (optionally) training state."""

    config: Config
    stats: dict[str, Any]
    weights: dict[str, torch.Tensor]
    path: Path | None = None
    raw_weights: dict[str, torch.Tensor] | None = None
    train_state: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(path: str | Path, config: Config, stats: dict[str, Any], weights: dict[str, torch.Tensor],
                    raw_weights: dict[str, torch.Tensor] | None = None,
                    train_state: dict[str, Any] | None = None, dtype: torch.dtype | None = None,
                    extra_weights: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write a checkpoint directory atomically (a temporary folder renamed into place).

    ``train_state`` is a dict with ``optimizer`` (an optimizer ``state_dict``; also any other
    ``optimizer_*`` entry) and any JSON-able entries (step, scaler state, ...). ``dtype`` stores
    the weights in that precision (e.g. fp16). ``extra_weights`` maps a name in
    :data:`EXTRA_WEIGHTS` / :data:`EXTRA_TRAIN_WEIGHTS` to a state dict saved as ``<name>.safetensors``.
    """
    path = Path(path)
    try:
        _write_checkpoint(path, config, stats, weights, raw_weights, train_state, dtype, extra_weights)
    except SafetensorError as e:
        raise CheckpointError(f"cannot write {path}: {str(e).splitlines()[0][:200]}") from None
    return path


def _write_checkpoint(path: Path, config: Config, stats: dict[str, Any], weights: dict[str, torch.Tensor],
                      raw_weights: dict[str, torch.Tensor] | None, train_state: dict[str, Any] | None,
                      dtype: torch.dtype | None, extra_weights: dict[str, dict[str, torch.Tensor]] | None) -> None:
    """The body of :func:`save_checkpoint`: every file into a temporary folder, renamed into place at the end."""
    with atomic_dir(path) as tmp:
        (tmp / CONFIG).write_text(config.to_yaml())
        (tmp / STATS).write_text(dump_yaml(plain(stats)))
        w = _contiguous(weights)
        if dtype is not None:
            w = {k: v.to(dtype) if v.is_floating_point() else v for k, v in w.items()}
        save_file(w, str(tmp / WEIGHTS))
        if raw_weights is not None:
            save_file(_contiguous(raw_weights), str(tmp / RAW_WEIGHTS))
        for name, sd in (extra_weights or {}).items():
            if name not in EXTRA_WEIGHTS + EXTRA_TRAIN_WEIGHTS:
                raise ValueError(f"unknown extra weights {name!r}")
            e = _contiguous(sd)
            if dtype is not None and name in EXTRA_WEIGHTS:
                e = {k: v.to(dtype) if v.is_floating_point() else v for k, v in e.items()}
            save_file(e, str(tmp / f"{name}.safetensors"))
        if train_state is not None:
            write_train_state(tmp, train_state)


def write_train_state(folder: Path, train_state: dict[str, Any]) -> None:
    """The resume state into ``folder``: every ``optimizer*`` entry flattened into
    ``train_state.safetensors`` (tensors) and the rest, with the optimisers' layout, into
    ``train_state.json`` — nothing that needs unpickling."""
    state = dict(train_state)
    tensors, meta = {}, {}
    for key in sorted(k for k in state if k.startswith("optimizer")):
        t, meta[key] = _flatten_optimizer(state.pop(key), prefix=key)
        tensors.update(t)
    meta.update(plain(state))
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_META).write_text(json.dumps(meta, indent=1))


def _flatten_optimizer(sd: dict[str, Any], prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": plain(sd["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                         prefix: str = "optimizer") -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory's newest checkpoint (named in ``latest``)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no such checkpoint: {p}")
    if p.is_dir() and (p / CONFIG).is_file() and not (p / LATEST).is_file():
        return p
    if p.is_dir() and (p / LATEST).is_file():
        name = read_text(p / LATEST, "latest file", 4096, CheckpointError).strip()
        if name and "/" not in name and "\\" not in name and name not in (".", "..") and (p / name / CONFIG).is_file():
            return p / name
        raise CheckpointError(f"{p / LATEST} names {name[:80]!r}, which is not a checkpoint in {p}")
    raise CheckpointError(f"{p} is not a diffvoc checkpoint (no {CONFIG}) nor a run directory (no {LATEST})")


def load_checkpoint(path: str | Path, with_train_state: bool = False) -> Checkpoint:
    """Load a checkpoint directory, a run directory (its newest checkpoint) or an lmnt-com/diffwave
    ``.pt`` file. Raises :class:`CheckpointError` on anything missing, corrupt or inconsistent."""
    p = Path(path)
    if p.is_file() and p.suffix == ".pt":
        return import_lmnt(p)
    d = resolve_checkpoint_dir(p)
    try:
        config = Config.load(d / CONFIG)
    except ConfigError as e:
        raise CheckpointError(with_path(d / CONFIG, str(e))) from None
    stats = {}
    if (d / STATS).exists():
        stats = check_stats(load_yaml(d / STATS, "statistics file", CheckpointError), d / STATS)
    weights = _load_safetensors(d / WEIGHTS)
    ck = Checkpoint(config=config, stats=stats, weights=weights, path=d)
    for name in EXTRA_WEIGHTS + (EXTRA_TRAIN_WEIGHTS if with_train_state else ()):
        if (d / f"{name}.safetensors").is_file():
            ck.extras[name] = _load_safetensors(d / f"{name}.safetensors")
    if config.truncation.enabled and config.truncation.generator == "separate" and "generator" not in ck.extras:
        raise CheckpointError(f"{d}: a truncated model with a separate generator needs generator.safetensors")
    if with_train_state:
        if (d / RAW_WEIGHTS).is_file():
            ck.raw_weights = _load_safetensors(d / RAW_WEIGHTS)
        if (d / STATE_META).exists():
            meta = _check_train_state(load_json(d / STATE_META, "training state", CheckpointError), d / STATE_META)
            tensors = _load_safetensors(d / STATE_TENSORS)
            try:
                for key in [k for k in meta if k.startswith("optimizer")]:
                    meta[key] = _unflatten_optimizer(tensors, meta[key], prefix=key)
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{d / STATE_TENSORS} does not match {STATE_META} "
                                      f"({type(e).__name__}: {str(e)[:120]})") from None
            ck.train_state = meta
    return ck


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_stats(stats: Any, where: str | Path) -> dict[str, Any]:
    """Data statistics as a checkpoint or a data folder stores them: a mapping whose numbers are finite,
    with PriorGrad's energy range (if present) ``0 <= energy_min < energy_max``. Returns ``stats``
    (``{}`` for an empty file); raises :class:`CheckpointError` naming ``where``."""
    if stats is None:
        return {}
    if not isinstance(stats, dict) or not all(isinstance(k, str) for k in stats):
        raise CheckpointError(f"{where}: statistics must be a mapping of names to numbers, got {type(stats).__name__}")
    for k, v in stats.items():
        if _is_number(v) and not math.isfinite(v):
            raise CheckpointError(f"{where}: statistic {k} is {v!r}, not a finite number")
    energy = [k for k in ("energy_min", "energy_max") if k in stats]
    for k in energy:
        if not _is_number(stats[k]):
            raise CheckpointError(f"{where}: statistic {k} must be a number, got {stats[k]!r:.80}")
    if len(energy) == 2 and not 0 <= stats["energy_min"] < stats["energy_max"]:
        raise CheckpointError(f"{where}: need 0 <= energy_min < energy_max, got energy_min={stats['energy_min']!r} "
                              f"energy_max={stats['energy_max']!r}")
    return stats


def _check_train_state(meta: Any, where: Path) -> dict[str, Any]:
    """The schema of ``train_state.json``: ``step`` a whole number >= 0, each ``optimizer*`` entry a mapping
    with ``param_groups`` (a list of mappings) and ``scalars`` (a mapping of ``<index>.<name>`` keys)."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{where}: not a diffvoc training state ({why})")

    if not isinstance(meta, dict):
        raise bad(f"a {type(meta).__name__}, not a mapping")
    step = meta.get("step")
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        raise bad(f"step must be a whole number >= 0, got {step!r:.40}")
    if "optimizer" not in meta:
        raise bad("no optimizer entry")
    for key in (k for k in meta if k.startswith("optimizer")):
        opt = meta[key]
        if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list) \
                or not all(isinstance(g, dict) for g in opt["param_groups"]):
            raise bad(f"{key}.param_groups must be a list of mappings")
        scalars = opt.get("scalars", {})
        if not isinstance(scalars, dict) or not all(isinstance(k, str) and k.split(".", 1)[0].isdigit() and "." in k
                                                    for k in scalars):
            raise bad(f"{key}.scalars must map '<index>.<name>' to values")
        for g in opt["param_groups"]:
            if "betas" in g and not (isinstance(g["betas"], list) and len(g["betas"]) == 2
                                     and all(_is_number(b) for b in g["betas"])):
                raise bad(f"{key}: betas must be two numbers")
    for key in ("scaler",):
        if key in meta and not isinstance(meta[key], dict):
            raise bad(f"{key} must be a mapping")
    return meta


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is corrupt ({msg})") from None


def write_latest(run_dir: str | Path, name: str) -> None:
    atomic_write_text(Path(run_dir) / LATEST, name + "\n")


def import_lmnt(path: str | Path) -> Checkpoint:
    """Read an lmnt-com/diffwave ``weights.pt`` with ``torch.load(weights_only=True)``.

    Sizes come from the saved ``params`` when present, otherwise from the weights' shapes; the
    audio config is the ``lmnt`` mel preset; the training schedule is lmnt's linspace(1e-4, 0.05, 50)
    unless ``params.noise_schedule`` says otherwise.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then reads fine (or refuses)
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load {path} safely as an lmnt-com/diffwave checkpoint "
                              f"({str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not an lmnt-com/diffwave checkpoint")
    sd = obj.get("model", obj)
    if not isinstance(sd, dict) or "input_projection.weight" not in sd:
        raise CheckpointError(f"{path} is not an lmnt-com/diffwave checkpoint (no input_projection.weight)")
    try:
        return _lmnt_checkpoint(path, obj, sd)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"{path}: an lmnt-com/diffwave checkpoint of unexpected structure "
                              f"({type(e).__name__}: {str(e)[:120]})") from None


def _lmnt_checkpoint(path: Path, obj: dict[str, Any], sd: dict[str, Any]) -> Checkpoint:
    """The :class:`Checkpoint` of an lmnt-com/diffwave state dict ``sd`` (with ``obj["params"]``, if any)."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
               if k.startswith(("input_projection.", "residual_layers.", "spectrogram_upsampler."))):
        raise TypeError("its network entries must be named tensors")
    if sd["input_projection.weight"].dim() != 3:
        raise ValueError("input_projection.weight is not a Conv1d weight")
    params = obj.get("params") or {}
    if not isinstance(params, dict):
        params = {k: getattr(params, k) for k in dir(params) if not k.startswith("_")}
    layers = len({k.split(".")[1] for k in sd if k.startswith("residual_layers.")})
    C = int(sd["input_projection.weight"].shape[0])
    has_mel = "spectrogram_upsampler.conv1.weight" in sd
    n_mels = int(sd["residual_layers.0.conditioner_projection.weight"].shape[1]) if has_mel else 80
    schedule = params.get("noise_schedule") or np.linspace(1e-4, 0.05, 50).tolist()
    hop = int(params.get("hop_samples", 256))
    audio = AudioConfig(**apply_presets({"audio": {"preset": "lmnt"}})["audio"])
    audio.sample_rate = int(params.get("sample_rate", audio.sample_rate))
    audio.hop_length, audio.n_mels = hop, n_mels
    audio.n_fft = int(params.get("n_fft", audio.n_fft))
    audio.win_length = hop * 4
    model = ModelConfig(residual_channels=C, residual_layers=layers,
                        dilation_cycle=int(params.get("dilation_cycle_length", 10)),
                        conditioning="mel" if has_mel else "none", upsample_factors=[16, 16] if hop == 256 else None)
    if not has_mel:
        model.upsample_factors = None
    config = Config(audio=audio, model=model)
    config.diffusion.steps = len(schedule)
    config.diffusion.beta_start, config.diffusion.beta_end = float(schedule[0]), float(schedule[-1])
    if not np.allclose(np.linspace(schedule[0], schedule[-1], len(schedule)), schedule):
        raise CheckpointError(f"{path}: only linear training schedules are supported")
    fast = params.get("inference_noise_schedule")
    if fast:
        config.diffusion.fast_schedules[len(fast)] = [float(b) for b in fast]
    try:
        config.validate()
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    weights = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return Checkpoint(config=config, stats={}, weights=weights, path=path, extras={"format": "lmnt"})
