"""Validation of a vocoder :class:`~diffvoc.config.Config`: the range of every number, then the rules
that tie sections together (the infer loss's schedules inside the training range, the truncation step
inside the chain). :meth:`Config.validate` runs it; messages name the value and the key."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from diffvoc.errors import ConfigError, ScheduleError

if TYPE_CHECKING:
    from diffvoc.config import Config
    from diffvoc.diffusion.schedule import NoiseSchedule


# The allowed range of every number in a :class:`Config`, checked by one pass over all its fields
# (:func:`check_ranges`) before any other validation: "section.field" -> (low, high, bounds), bounds
# "[]" closed, "(]", "[)", "()" open at that end; for a list or dict field every number in it (dict
# keys included) is checked. A section with an ``enabled`` flag that is off is checked for its types
# only (YAML → dataclass coercion), not its ranges. Every number field of Config must be listed here
# (tests/test_bad_input.py checks), so a new field gets its range when it is added.
_BIG = 10**12
_INF = math.inf
RANGES: dict[str, tuple[float, float, str]] = {
    "audio.sample_rate": (1000, 384000, "[]"), "audio.n_fft": (16, 65536, "[]"),
    "audio.hop_length": (1, 65536, "[]"), "audio.win_length": (1, 65536, "[]"), "audio.n_mels": (1, 1024, "[]"),
    "audio.fmin": (0, _INF, "[)"), "audio.fmax": (0, _INF, "()"), "audio.peak_normalize": (0, 1, "(]"),
    "model.residual_channels": (1, 4096, "[]"), "model.residual_layers": (1, 1024, "[]"),
    "model.dilation_cycle": (1, 24, "[]"), "model.n_classes": (1, 100000, "[]"),
    "model.upsample_factors": (1, 65536, "[]"),
    "diffusion.steps": (2, 100000, "[]"), "diffusion.beta_start": (0, 1, "()"), "diffusion.beta_end": (0, 1, "()"),
    "diffusion.fast_schedules": (0, 100000, "()"),  # keys: step counts; values: β in (0, 1) (see _check_fast)
    "prior.sigma_min": (0, 1, "(]"), "prior.energy_max": (0, _INF, "()"),
    "data.crop_frames": (1, 10**6, "[]"), "data.num_workers": (0, 256, "[]"), "data.valid_clips": (0, 10**5, "[]"),
    "data.valid_seconds": (0, 3600, "(]"),
    "train.batch_size": (1, 10**6, "[]"), "train.learning_rate": (0, 10, "(]"), "train.adam_betas": (0, 1, "[)"),
    "train.max_steps": (1, _BIG, "[]"), "train.grad_clip": (0, _INF, "()"), "train.ema_decay": (0, 1, "[]"),
    "train.micro_batch": (0, 10**6, "[]"), "train.seed": (0, 2**63 - 1, "[]"), "train.log_every": (1, _BIG, "[]"),
    "train.valid_every": (0, _BIG, "[]"), "train.save_every": (1, _BIG, "[]"),
    "train.keep_checkpoints": (1, 10**6, "[]"), "train.valid_steps": (1, 10000, "[]"),
    "train.audio_log_clips": (0, 1000, "[]"),
    "infer.weight": (0, _INF, "[)"), "infer.steps": (1, 10000, "[]"), "infer.schedule": (0, 1, "()"),
    "infer.general_steps": (1, 10000, "[]"), "infer.general_ranges": (0, 10000, "()"),
    "infer.magnitude_weight": (0, _INF, "[)"), "infer.phase_weight": (0, _INF, "[)"),
    "infer.phase_fft": (16, 65536, "[]"), "infer.phase_hop": (1, 65536, "[]"), "infer.phase_win": (1, 65536, "[]"),
    "infer.crop_frames": (1, 10**6, "[]"), "infer.batch_items": (1, 10**6, "[]"), "infer.every": (1, _BIG, "[]"),
    "infer.start_step": (0, _BIG, "[]"),
    "truncation.steps": (1, 100000, "[]"), "truncation.noise_level": (0, 1, "()"),
    "truncation.generator_channels": (1, 4096, "[]"), "truncation.generator_layers": (1, 1024, "[]"),
    "truncation.generator_cycle": (1, 24, "[]"), "truncation.discriminator_channels": (1, 4096, "[]"),
    "truncation.discriminator_scales": (0, 8, "[]"), "truncation.discriminator_periods": (2, 1000, "[]"),
    "truncation.discriminator_resolutions": (1, 65536, "[]"), "truncation.generator_lr": (0, 10, "[]"),
    "truncation.discriminator_lr": (0, 10, "[]"), "truncation.gan_betas": (0, 1, "[)"),
    "truncation.r1_gamma": (0, _INF, "[)"), "truncation.r1_every": (1, _BIG, "[]"),
    "truncation.gan_weight": (0, _INF, "[)"), "truncation.gan_start_step": (0, _BIG, "[]"),
    "truncation.gan_every": (1, _BIG, "[]"), "truncation.schedules": (0, 100000, "()"),
}
# dict fields whose keys are step counts and whose values are β (or [low, high] pairs of β) in (0, 1)
_BETA_TABLES = ("diffusion.fast_schedules", "infer.general_ranges", "truncation.schedules")


def _numbers(value: Any) -> list[Any]:
    """Every number inside a field's value (a number, or nested lists/dicts of them, dict keys included)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(k) + _numbers(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers(v)]
    return []


def _in_range(v: float, low: float, high: float, bounds: str) -> bool:
    lo_ok = v > low if bounds[0] == "(" else v >= low
    hi_ok = v < high if bounds[1] == ")" else v <= high
    return math.isfinite(v) and lo_ok and hi_ok


def _describe_range(low: float, high: float, bounds: str) -> str:
    def num(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    if high == _INF:
        return f"{'>' if bounds[0] == '(' else '>='} {num(low)}"
    return f"in {bounds[0]}{num(low)}, {num(high)}{bounds[1]}"


def check_ranges(cfg: "Config") -> None:
    """One pass over every number field of ``cfg`` against :data:`RANGES`; the message names the value."""
    for section in dataclasses.fields(cfg):
        sec = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(sec) or getattr(sec, "enabled", True) is False:
            continue
        for f in dataclasses.fields(sec):
            key = f"{section.name}.{f.name}"
            value = getattr(sec, f.name)
            if key in _BETA_TABLES:
                _check_beta_table(key, value)
                continue
            if key not in RANGES:
                continue
            low, high, bounds = RANGES[key]
            for v in _numbers(value):
                if not _in_range(v, low, high, bounds):
                    raise ConfigError(f"{key} must be {_describe_range(low, high, bounds)}, got {v!r}")


def _check_beta_table(key: str, table: Any) -> None:
    """A ``{steps: [β, ...]}`` table: whole step counts >= 1 and every β in (0, 1)."""
    for k, betas in table.items():
        if not 1 <= k <= 100000:
            raise ConfigError(f"{key}: step counts must be in [1, 100000], got {k!r}")
        for b in _numbers(betas):
            if not _in_range(b, 0, 1, "()"):
                raise ConfigError(f"{key}[{k}]: every β must lie in (0, 1), got {b!r}")


def check_schedule(betas: list[float], train: "NoiseSchedule", what: str) -> None:
    if not betas or any(not 0 < b < 1 for b in betas):
        raise ConfigError(f"{what}: every β must lie in (0, 1), got {betas}")
    if any(b2 < b1 for b1, b2 in zip(betas, betas[1:])):
        raise ConfigError(f"{what}: β must not decrease, got {betas}")
    try:
        train.check_inside(betas, f"{what}: step")
    except ScheduleError as e:
        raise ConfigError(str(e)) from None


def validate_infer(cfg: "Config") -> None:
    ic, df = cfg.infer, cfg.diffusion
    if ic.mode not in ("step-specific", "general"):
        raise ConfigError(f"infer.mode must be step-specific or general, got {ic.mode!r}")
    if ic.phase not in ("anti_wrapping", "none"):
        raise ConfigError(f"infer.phase must be anti_wrapping or none, got {ic.phase!r}")
    if ic.phase_weighting not in ("magnitude", "none"):
        raise ConfigError(f"infer.phase_weighting must be magnitude or none, got {ic.phase_weighting!r}")
    if ic.clamp not in ("ste", "hard", "none"):
        raise ConfigError(f"infer.clamp must be ste, hard or none, got {ic.clamp!r}")
    if not ic.enabled:  # a disabled section is checked for its types and choices only
        return
    if min(ic.weight, ic.magnitude_weight, ic.phase_weight) < 0:
        raise ConfigError("infer.weight, infer.magnitude_weight and infer.phase_weight must be >= 0")
    if not (ic.phase_hop > 0 and 0 < ic.phase_win <= ic.phase_fft):
        raise ConfigError("infer needs phase_hop > 0 and 0 < phase_win <= phase_fft")
    if ic.every < 1 or ic.start_step < 0 or ic.steps < 1 or (ic.batch_items is not None and ic.batch_items < 1):
        raise ConfigError("infer.every, infer.steps and infer.batch_items must be >= 1, infer.start_step >= 0")
    # MR-STFT's largest FFT (2048) reflect-pads by 1024 samples: the infer crop must be longer.
    need = max(2048, ic.phase_fft) // 2 + 1
    if ic.crop_frames * cfg.audio.hop_length < need:
        raise ConfigError(f"infer.crop_frames × hop = {ic.crop_frames * cfg.audio.hop_length} samples; "
                          f"the infer loss's STFTs need at least {need}")
    for k, ranges in ic.general_ranges.items():
        if len(ranges) != k or any(len(r) != 2 or not 0 < r[0] <= r[1] < 1 for r in ranges):
            raise ConfigError(f"infer.general_ranges[{k}] must be {k} pairs [low, high] with 0 < low <= high < 1")
        if any(a[1] > b[0] for a, b in zip(ranges, ranges[1:])):
            raise ConfigError(f"infer.general_ranges[{k}] must be ordered (high_n <= low_(n+1))")
    train = df.schedule()
    if ic.mode == "step-specific":
        betas = ic.schedule if ic.schedule is not None else df.fast_schedules.get(ic.steps)
        if betas is None:
            raise ConfigError(f"infer.steps={ic.steps}: no such schedule in diffusion.fast_schedules "
                              f"(have {sorted(df.fast_schedules)}); set infer.schedule")
        check_schedule(betas, train, "infer.schedule")
    else:
        if not ic.general_steps:
            raise ConfigError("infer.general_steps must name at least one step count")
        for k in ic.general_steps:
            if k not in ic.general_ranges:
                raise ConfigError(f"infer.general_steps has {k} but infer.general_ranges has no {k}-step ranges")
            check_schedule([r[0] for r in ic.general_ranges[k]], train, f"infer.general_ranges[{k}] (low corner)")
            check_schedule([r[1] for r in ic.general_ranges[k]], train, f"infer.general_ranges[{k}] (high corner)")


def truncation_steps(cfg: "Config", train: "NoiseSchedule") -> int:
    """T_trunc: ``truncation.steps``, or the first step of the training schedule ``train`` whose noise
    level 1 − ᾱ_t reaches ``truncation.noise_level`` (:meth:`NoiseSchedule.step_reaching`)."""
    tc = cfg.truncation
    return int(tc.steps) if tc.steps is not None else train.step_reaching(tc.noise_level)


def validate_truncation(cfg: "Config") -> None:
    tc, df = cfg.truncation, cfg.diffusion
    if tc.generator not in ("shared", "separate"):
        raise ConfigError(f"truncation.generator must be shared or separate, got {tc.generator!r}")
    if tc.generator_input not in ("prior", "standard"):
        raise ConfigError(f"truncation.generator_input must be prior or standard, got {tc.generator_input!r}")
    if not tc.enabled:  # a disabled section is checked for its types and choices only
        return
    if tc.steps is None and tc.noise_level is None:
        raise ConfigError("truncation needs steps or noise_level")
    if tc.noise_level is not None and not 0 < tc.noise_level < 1:
        raise ConfigError("truncation.noise_level must lie in (0, 1)")
    if min(tc.generator_channels, tc.generator_layers, tc.generator_cycle, tc.discriminator_channels,
           tc.r1_every, tc.gan_every) < 1 or tc.discriminator_scales < 0 or tc.gan_start_step < 0:
        raise ConfigError("truncation sizes, r1_every and gan_every must be >= 1, gan_start_step >= 0")
    if tc.discriminator_scales == 0 and not tc.discriminator_periods and not tc.discriminator_resolutions:
        raise ConfigError("truncation needs at least one discriminator (scales, periods or resolutions)")
    if any(len(r) != 3 or not (0 < r[1] and 0 < r[2] <= r[0]) for r in tc.discriminator_resolutions):
        raise ConfigError("truncation.discriminator_resolutions: each must be [n_fft, hop, win] with 0 < win <= n_fft")
    if any(p < 2 for p in tc.discriminator_periods):
        raise ConfigError("truncation.discriminator_periods must be >= 2")
    if len(tc.gan_betas) != 2 or not all(0 <= b < 1 for b in tc.gan_betas):
        raise ConfigError("truncation.gan_betas must be two numbers in [0, 1)")
    if min(tc.generator_lr, tc.discriminator_lr, tc.r1_gamma, tc.gan_weight) < 0:
        raise ConfigError("truncation learning rates, r1_gamma and gan_weight must be >= 0")
    if cfg.model.conditioning != "mel":
        raise ConfigError("truncation (TDPM) is implemented for mel-conditioned models only")
    k = truncation_steps(cfg, df.schedule())
    if not 1 <= k < df.steps:
        raise ConfigError(f"truncation.steps must lie in 1..{df.steps - 1} (T = {df.steps}), got {k}")
    if cfg.infer.enabled and cfg.infer.mode != "step-specific":
        raise ConfigError("the infer loss through a truncated chain supports infer.mode=step-specific only")
    for n, betas in tc.schedules.items():
        if len(betas) != n:
            raise ConfigError(f"truncation.schedules[{n}] must have {n} values")
