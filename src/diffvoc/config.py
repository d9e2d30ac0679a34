"""Configuration: dataclasses that serialise to YAML, presets, and ``key=value`` overrides.

A checkpoint directory carries its full :class:`Config`, so a model is described by its config
alone: which network, which prior (standard or PriorGrad), which losses and which sampler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

# DiffWave's paper fast schedules (REFERENCE §1) and PriorGrad's official 12-step schedule (§2).
FAST_SCHEDULES: dict[int, list[float]] = {
    6: [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5],
    12: [1e-4, 5e-4, 8e-4, 1e-3, 5e-3, 8e-3, 0.01, 0.05, 0.08, 0.1, 0.2, 0.5],
}


@dataclass
class AudioConfig:
    """How audio is read and how the mel-spectrogram is computed.

    ``preset`` names the recipe: ``hifigan`` (HiFi-GAN / PriorGrad: reflect padding of
    (n_fft - hop)/2, center off, slaney mel, natural log of clamp(., 1e-5)) or ``lmnt``
    (lmnt-com/diffwave: centred normalised STFT, HTK mel from 20 Hz to Nyquist, dB scaled to [0, 1]).
    """

    preset: str = "hifigan"
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    peak_normalize: float | None = 0.95  # training audio is scaled to this peak (HiFi-GAN: 0.95)

    def feature_key(self) -> str:
        """A short hash of every field that changes the features (the cache key)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    "hifigan": dict(preset="hifigan", sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024,
                    n_mels=80, fmin=0.0, fmax=8000.0, peak_normalize=0.95),
    "lmnt": dict(preset="lmnt", sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024,
                 n_mels=80, fmin=20.0, fmax=None, peak_normalize=None),
}


@dataclass
class ModelConfig:
    """The DiffWave denoiser ε_θ(x_t, t, c) (REFERENCE §1)."""

    residual_channels: int = 64
    residual_layers: int = 30
    dilation_cycle: int = 10
    conditioning: str = "mel"  # "mel" | "class" | "none"
    n_classes: int = 10  # class-conditional only
    upsample_factors: list[int] | None = None  # product must equal the hop; None = chosen from the hop


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(residual_channels=64, residual_layers=30, dilation_cycle=10),
    "large": dict(residual_channels=128, residual_layers=30, dilation_cycle=10),
    "sc09": dict(residual_channels=256, residual_layers=36, dilation_cycle=12, conditioning="none"),
    "tiny": dict(residual_channels=16, residual_layers=4, dilation_cycle=2),
}


@dataclass
class DiffusionConfig:
    """Training noise schedule, ε-loss and default inference schedules."""

    steps: int = 50
    beta_start: float = 1e-4
    beta_end: float = 0.05
    loss: str = "l2"  # "l2" (the paper) | "l1" (lmnt-com/diffwave's code)
    clamp: bool = True  # clamp x to [-1, 1] after every reverse step, as the reference does
    fast_schedules: dict[int, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in FAST_SCHEDULES.items()})


DIFFUSION_PRESETS: dict[str, dict[str, Any]] = {
    "t50": dict(steps=50, beta_start=1e-4, beta_end=0.05),
    "t200": dict(steps=200, beta_start=1e-4, beta_end=0.02),
}


@dataclass
class PriorConfig:
    """Which prior N(0, Σ) the diffusion uses: ``standard`` (Σ = I) or ``priorgrad`` (REFERENCE §2)."""

    kind: str = "standard"  # "standard" | "priorgrad"
    sigma_min: float = 0.1
    energy_max: float | None = 4.0  # overrides the training-set maximum (official PriorGrad)
    upsample: str = "repeat"  # "repeat" (frame-constant, official) | "smooth" (linear interpolation)
    condition_on_prior: bool = False  # feed σ per frame as an extra conditioning channel


@dataclass
class DataConfig:
    """Where the preprocessed data set lives (written by ``diffvoc preprocess``)."""

    path: str = "data"
    crop_frames: int = 62
    num_workers: int = 0
    valid_clips: int = 4  # held-out clips used for validation
    valid_seconds: float = 2.0  # each validation clip is cut to this length


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing."""

    batch_size: int = 16
    learning_rate: float = 2e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_steps: int = 1_000_000
    grad_clip: float | None = None  # max gradient norm; None logs the norm without clipping
    ema_decay: float = 0.999
    precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16" | "fp16"
    seed: int = 0
    log_every: int = 50
    valid_every: int = 1000
    save_every: int = 1000
    keep_checkpoints: int = 3
    valid_steps: int = 6  # fast-sampling steps for the validation log-mel L1
    audio_log_clips: int = 2


@dataclass
class Config:
    """Everything that defines a model and how it was trained."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return _build(cls, d or {}, "")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Read a YAML config; presets named in it are applied first (see :func:`apply_presets`)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: a config must be a YAML mapping")
        return cls.from_dict(apply_presets(d))

    def with_overrides(self, items: list[str]) -> "Config":
        """Apply ``section.key=value`` strings (values parsed as YAML) and validate the result."""
        d = self.to_dict()
        for item in items:
            if "=" not in item:
                raise ConfigError(f"override must be key=value, got {item!r}")
            key, raw = item.split("=", 1)
            parts = key.strip().split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node, dict) or p not in node:
                    raise ConfigError(f"unknown config key {key!r}")
                node = node[p]
            if not isinstance(node, dict) or parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}")
            try:
                node[parts[-1]] = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ConfigError(f"cannot parse value of {key!r}: {raw!r}") from None
        return Config.from_dict(d)

    def validate(self) -> "Config":
        a, m, df, pr = self.audio, self.model, self.diffusion, self.prior
        if a.preset not in AUDIO_PRESETS:
            raise ConfigError(f"audio.preset must be one of {sorted(AUDIO_PRESETS)}, got {a.preset!r}")
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            if getattr(a, name) <= 0:
                raise ConfigError(f"audio.{name} must be positive")
        if a.win_length > a.n_fft:
            raise ConfigError("audio.win_length must not exceed audio.n_fft")
        if a.hop_length > a.n_fft:
            raise ConfigError("audio.hop_length must not exceed audio.n_fft")
        fmax = a.fmax if a.fmax is not None else a.sample_rate / 2
        if not 0 <= a.fmin < fmax <= a.sample_rate / 2 + 1e-6:
            raise ConfigError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={a.fmin} fmax={fmax}")
        if m.conditioning not in ("mel", "class", "none"):
            raise ConfigError(f"model.conditioning must be mel, class or none, got {m.conditioning!r}")
        if m.residual_layers < 1 or m.residual_channels < 1 or m.dilation_cycle < 1:
            raise ConfigError("model sizes must be positive")
        if m.upsample_factors is not None:
            prod = 1
            for f in m.upsample_factors:
                prod *= int(f)
            if prod != a.hop_length:
                raise ConfigError(f"model.upsample_factors multiply to {prod}, not the hop {a.hop_length}")
        if df.loss not in ("l1", "l2"):
            raise ConfigError(f"diffusion.loss must be l1 or l2, got {df.loss!r}")
        if df.steps < 2 or not 0 < df.beta_start < df.beta_end < 1:
            raise ConfigError("diffusion needs steps >= 2 and 0 < beta_start < beta_end < 1")
        if pr.kind not in ("standard", "priorgrad"):
            raise ConfigError(f"prior.kind must be standard or priorgrad, got {pr.kind!r}")
        if pr.kind == "priorgrad" and m.conditioning != "mel":
            raise ConfigError("the PriorGrad prior needs a mel-conditioned model")
        if pr.upsample not in ("repeat", "smooth"):
            raise ConfigError(f"prior.upsample must be repeat or smooth, got {pr.upsample!r}")
        if not 0 < pr.sigma_min <= 1:
            raise ConfigError("prior.sigma_min must be in (0, 1]")
        if self.train.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be auto, fp32, bf16 or fp16, got {self.train.precision!r}")
        if self.data.crop_frames < 1 or self.train.batch_size < 1:
            raise ConfigError("data.crop_frames and train.batch_size must be positive")
        return self


def apply_presets(d: dict[str, Any]) -> dict[str, Any]:
    """Expand ``audio.preset``, ``model.preset`` and ``diffusion.preset``: preset values first, then
    whatever the mapping sets explicitly."""
    out = dict(d)
    for section, table in (("audio", AUDIO_PRESETS), ("model", MODEL_PRESETS), ("diffusion", DIFFUSION_PRESETS)):
        sec = dict(out.get(section) or {})
        name = sec.get("preset")
        if name is None:
            continue
        if name not in table:
            raise ConfigError(f"{section}.preset must be one of {sorted(table)}, got {name!r}")
        merged = dict(table[name])
        merged.update({k: v for k, v in sec.items() if k != "preset" or section == "audio"})
        out[section] = merged
    return out


def preset_config(audio: str = "hifigan", model: str = "base", diffusion: str = "t50") -> Config:
    """A config built from named presets."""
    return Config.from_dict(apply_presets({"audio": {"preset": audio}, "model": {"preset": model},
                                           "diffusion": {"preset": diffusion}}))


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"config section {where or 'root'} must be a mapping")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown config key {where + '.' if where else ''}{sorted(unknown)[0]}")
    kwargs = {}
    for name, value in d.items():
        typ = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value or {}, key)
        else:
            kwargs[name] = _coerce(typ, value, key)
    obj = cls(**kwargs)
    if cls is Config:
        obj.validate()
    return obj


def _coerce(typ: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(typ), get_args(typ)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key} may not be empty")
    if origin is not None and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    try:
        if typ is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if typ is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [_coerce(args[0], v, key) for v in value]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return {_coerce(args[0], k, key): _coerce(args[1], v, key) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value
