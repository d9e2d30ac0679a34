"""Acoustic-model checkpoint directories (text → mel), written atomically; loading never unpickles.

Layout (next to the vocoder's, :mod:`diffvoc.checkpoint`)::

    config.yaml              the full AcousticConfig (``kind: acoustic``; searched fast schedules included)
    stats.yaml               phoneme inventory, speakers, the default speaker, alignment/search records
    prior.safetensors        the phone prior: ``mean`` and ``std`` [tokens, n_mels] (PriorGrad statistics)
    model.safetensors        EMA weights (used for synthesis)
    model_raw.safetensors    raw weights            }
    train_state.safetensors  optimizer tensors      } only for --resume
    train_state.json         step, phase, RNG seed  }

A run directory holds ``ckpt-<step>/`` folders and ``latest``, as for the vocoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from diffvoc.acoustic_config import AcousticConfig
from diffvoc.checkpoint import (
    CONFIG,
    RAW_WEIGHTS,
    STATE_META,
    STATE_TENSORS,
    STATS,
    WEIGHTS,
    _load_safetensors,
    _unflatten_optimizer,
    resolve_checkpoint_dir,
    write_train_state,
)
from diffvoc.config import ConfigError
from diffvoc.errors import CheckpointError
from diffvoc.io import atomic_dir, load_yaml, plain

PRIOR = "prior.safetensors"


@dataclass
class AcousticCheckpoint:
    """A loaded acoustic checkpoint."""

    config: AcousticConfig
    stats: dict[str, Any]
    prior: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    path: Path | None = None
    raw_weights: dict[str, torch.Tensor] | None = None
    train_state: dict[str, Any] | None = None


def _cpu(sd: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    out = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    if dtype is not None:
        out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}
    return out


def save_acoustic_checkpoint(path: str | Path, config: AcousticConfig, stats: dict[str, Any],
                             prior: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                             raw_weights: dict[str, torch.Tensor] | None = None,
                             train_state: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write an acoustic checkpoint directory atomically; ``dtype`` (e.g. fp16) applies to the model
    weights only (the prior statistics stay fp32)."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        (tmp / CONFIG).write_text(config.to_yaml())
        (tmp / STATS).write_text(yaml.safe_dump(plain(stats), sort_keys=True, allow_unicode=True))
        save_file(_cpu(prior), str(tmp / PRIOR))
        save_file(_cpu(weights, dtype), str(tmp / WEIGHTS))
        if raw_weights is not None:
            save_file(_cpu(raw_weights), str(tmp / RAW_WEIGHTS))
        if train_state is not None:
            write_train_state(tmp, train_state)
    return path


def is_acoustic_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` (a checkpoint or run directory) holds an acoustic model."""
    try:
        d = resolve_checkpoint_dir(path)
        return (load_yaml(d / CONFIG, error=CheckpointError) or {}).get("kind") == "acoustic"
    except (CheckpointError, OSError, yaml.YAMLError, AttributeError):
        return False


def load_acoustic_checkpoint(path: str | Path, with_train_state: bool = False) -> AcousticCheckpoint:
    """Load an acoustic checkpoint directory or a run directory's newest one; raises
    :class:`CheckpointError` on anything missing, corrupt or not an acoustic model."""
    d = resolve_checkpoint_dir(path)
    if not is_acoustic_checkpoint(d):
        raise CheckpointError(f"{d} is not an acoustic-model checkpoint (its config has no `kind: acoustic`)")
    try:
        config = AcousticConfig.load(d / CONFIG)
    except ConfigError as e:
        raise CheckpointError(f"{d / CONFIG}: {e}") from None
    try:
        stats = load_yaml(d / STATS, error=CheckpointError) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{d / STATS}: cannot read ({type(e).__name__})") from None
    for key in ("phonemes", "speakers"):
        if not isinstance(stats.get(key), list):
            raise CheckpointError(f"{d / STATS} has no {key} list")
    prior = _load_safetensors(d / PRIOR)
    if set(prior) != {"mean", "std"}:
        raise CheckpointError(f"{d / PRIOR} must hold mean and std")
    ck = AcousticCheckpoint(config=config, stats=stats, prior=prior, weights=_load_safetensors(d / WEIGHTS), path=d)
    if with_train_state:
        ck.raw_weights = _load_safetensors(d / RAW_WEIGHTS)
        meta = json.loads((d / STATE_META).read_text())
        tensors = _load_safetensors(d / STATE_TENSORS)
        for key in [k for k in meta if k.startswith("optimizer")]:
            meta[key] = _unflatten_optimizer(tensors, meta[key], prefix=key)
        ck.train_state = meta
    return ck


def export_acoustic(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
                    extra_stats: dict[str, Any] | None = None) -> Path:
    """Write an inference-only copy of an acoustic checkpoint (EMA weights in ``dtype``, no training
    state; the phone prior stays fp32), e.g. into ``src/diffvoc/pretrained/acoustic``."""
    ck = load_acoustic_checkpoint(src)
    stats = {**ck.stats, **(extra_stats or {}), "exported_from": str(ck.path)}
    return save_acoustic_checkpoint(dst, ck.config, stats, ck.prior, ck.weights, dtype=dtype)
