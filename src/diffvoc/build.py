"""Construction from config: the network, the training schedule, the prior and the samplers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from diffvoc.config import FAST_SCHEDULES, Config
from diffvoc.config_validation import truncation_steps
from diffvoc.diffusion.prior import Prior, build_prior
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.errors import CheckpointError, ConfigError, ScheduleError
from diffvoc.models.diffwave import DiffWave

if TYPE_CHECKING:
    from diffvoc.diffusion.truncation import ImplicitPrior


def build_schedule(cfg: Config) -> NoiseSchedule:
    """The training schedule (:meth:`DiffusionConfig.schedule`)."""
    return cfg.diffusion.schedule()


def build_network(cfg: Config, prior: Prior | None = None) -> DiffWave:
    extra = prior.extra_channels if prior is not None else 0
    return DiffWave(cfg.model, cfg.diffusion.steps, cfg.audio.n_mels, cfg.audio.hop_length, extra)


def build(cfg: Config, stats: dict[str, Any] | None) -> tuple[DiffWave, NoiseSchedule, Prior]:
    """Network, training schedule and prior for a config and its data statistics."""
    prior = build_prior(cfg.prior, cfg.audio, stats)
    return build_network(cfg, prior), build_schedule(cfg), prior


def build_implicit_prior(cfg: Config, schedule: NoiseSchedule, prior: Prior) -> "ImplicitPrior | None":
    """The truncated model's generator of x_{T_trunc} (``None`` for an ordinary diffusion model);
    T_trunc is computed here, once, from the training ``schedule``."""
    if not cfg.truncation.enabled:
        return None
    from diffvoc.diffusion.truncation import ImplicitPrior

    return ImplicitPrior(cfg, schedule, truncation_steps(cfg, schedule), prior.extra_channels)


def build_sampler(cfg: Config, steps: int | None = None, schedule: list[float] | None = None,
                  full: bool = False, train: NoiseSchedule | None = None) -> DiffusionSampler:
    """The sampler for ``--full``, an explicit ``--schedule`` or ``--steps N`` (a stored N-step schedule).

    For a truncated model (TDPM) ``steps`` counts calls of the big network, its shared generator
    included, and the sampler's chain ends at the truncation level (:func:`~diffvoc.diffusion.truncation.truncated_betas`).
    """
    train = build_schedule(cfg) if train is None else train
    clamp = cfg.diffusion.clamp
    if cfg.truncation.enabled:
        return _truncated_sampler(cfg, train, steps, schedule, full)
    if full:
        return DiffusionSampler(train, None, clamp)
    if schedule is not None:
        return DiffusionSampler.fast(train, schedule, clamp)
    if steps is None:
        steps = 6
    table = cfg.diffusion.fast_schedules
    if steps in table:
        return DiffusionSampler.fast(train, table[steps], clamp)
    if steps in FAST_SCHEDULES and steps != cfg.diffusion.steps:  # a checkpoint saved before this default existed
        return DiffusionSampler.fast(train, FAST_SCHEDULES[steps], clamp)
    if steps == cfg.diffusion.steps:
        return DiffusionSampler(train, None, clamp)
    avail = sorted(set(table) | {cfg.diffusion.steps})
    raise ScheduleError(f"no {steps}-step schedule is stored with this model (have {avail}); "
                        f"pass --schedule b1,b2,... or run `diffvoc search-schedule`")


def _truncated_sampler(cfg: Config, train: NoiseSchedule, steps: int | None, schedule: list[float] | None,
                       full: bool) -> DiffusionSampler:
    from diffvoc.diffusion.truncation import truncated_betas

    clamp, k = cfg.diffusion.clamp, truncation_steps(cfg, train)
    if full:
        return DiffusionSampler(NoiseSchedule(train.betas[:k]), None, clamp, truncated=True)
    if schedule is not None:
        return DiffusionSampler.fast(train, schedule, clamp, truncated=True)
    steps = 6 if steps is None else steps
    reverse = steps - (1 if cfg.truncation.generator == "shared" else 0)
    if reverse < 1:
        raise ScheduleError(f"this truncated model's generator is the network itself: --steps must be >= 2, got {steps}")
    if reverse > k:
        raise ScheduleError(f"the truncated chain has {k} steps: --steps must be <= "
                            f"{k + (1 if cfg.truncation.generator == 'shared' else 0)}, got {steps}")
    return DiffusionSampler.fast(train, truncated_betas(cfg, train, k, reverse), clamp, truncated=True)


__all__ = ["build", "build_network", "build_prior", "build_sampler", "build_schedule", "ConfigError"]


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Strictly load ``weights`` into ``model`` with a one-line error on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    bad = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            parts.append(f"shape mismatch at {bad[0]}: {tuple(weights[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}")
        raise CheckpointError(f"{where}: weights do not match the config: " + "; ".join(parts))
    check_finite_weights(weights, where)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})


def check_finite_weights(weights: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` if a floating-point tensor of ``weights`` holds NaN or infinity (such a
    network would turn every input into NaN, written as a wav of silence)."""
    for k, v in weights.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: weight {k} is not a tensor")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{where}: weight {k} holds {n} NaN or infinite value(s); the checkpoint is corrupt")
