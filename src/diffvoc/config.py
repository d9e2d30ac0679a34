"""Configuration: dataclasses that serialise to YAML, presets, and ``key=value`` overrides.

A checkpoint directory carries its full :class:`Config`, so a model is described by its config
alone: which network, which prior (standard or PriorGrad), which losses and which sampler.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin, get_type_hints

import yaml

from diffvoc.errors import ConfigError

if TYPE_CHECKING:
    from diffvoc.diffusion.schedule import NoiseSchedule

# DiffWave's paper fast schedules (DiffWave, Kong et al., ICLR 2021) and PriorGrad's official 12-step schedule (§2).
# The 2- and 3-step schedules are ours: no paper publishes one for DiffWave's T=50
# linspace(1e-4, 0.05) training schedule. A WaveGrad-style grid (`diffvoc search-schedule --method
# grid`, 25 and 61 schedules) on the CPU convergence benchmark's base models (C=32, L=10, 1,200
# steps, DiffWave and PriorGrad priors, 2 valid clips of data/speech) chose the largest first step
# and the largest noise level of its grid for both (η_1 ≈ 0.05, η_2 = 0.7 at 2 steps). We keep the
# noisiest level at most that of the paper's 6-step schedule (1 − γ̄_S ≤ 0.624; 2 steps: 0.62,
# 3 steps: 0.606), so the defaults are valid wherever the 6-step one is, and took the best of a few
# such candidates on both models: objective (MR-STFT + log-mel L1) within 4% of the best that grid
# plus local search found without that limit, on either model. Re-tune per model with
# `diffvoc search-schedule`.
FAST_SCHEDULES: dict[int, list[float]] = {
    2: [0.05, 0.6],
    3: [0.005, 0.12, 0.55],
    6: [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5],
    12: [1e-4, 5e-4, 8e-4, 1e-3, 5e-3, 8e-3, 0.01, 0.05, 0.08, 0.1, 0.2, 0.5],
}

# InferGrad "general" mode (InferGrad, Chen et al., ICASSP 2022; unverified): for each step count K, one [low, high] range
# per reverse step, noisiest last. Every range contains the default K-step schedule above; the
# ranges are ordered (high_n <= low_{n+1}) so every draw is increasing, and the all-high corner
# stays inside the T=50 training range (1 − Π(1 − high) <= 1 − ᾱ_T = 0.7203).
GENERAL_RANGES: dict[int, list[list[float]]] = {
    2: [[1e-4, 0.08], [0.2, 0.68]],
    3: [[1e-4, 5e-3], [5e-3, 0.15], [0.2, 0.65]],
    6: [[1e-4, 3e-4], [5e-4, 3e-3], [5e-3, 3e-2], [3e-2, 0.1], [0.1, 0.3], [0.3, 0.5]],
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
    """The DiffWave denoiser ε_θ(x_t, t, c) (DiffWave, Kong et al., ICLR 2021)."""

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

    def schedule(self) -> "NoiseSchedule":
        """The training schedule β = linspace(beta_start, beta_end, steps); build it once and pass it on."""
        from diffvoc.diffusion.schedule import NoiseSchedule

        return NoiseSchedule.linear(self.beta_start, self.beta_end, self.steps)


DIFFUSION_PRESETS: dict[str, dict[str, Any]] = {
    "t50": dict(steps=50, beta_start=1e-4, beta_end=0.05),
    "t200": dict(steps=200, beta_start=1e-4, beta_end=0.02),
}


@dataclass
class PriorConfig:
    """Which prior N(0, Σ) the diffusion uses: ``standard`` (Σ = I) or ``priorgrad`` (PriorGrad, Lee et al., ICLR 2022)."""

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
    precision: str = "auto"  # "auto" (bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32) | "fp32" | "bf16" | "fp16"
    engine: str = "auto"  # "auto" (fast on CPU, reference on CUDA) | "fast" (diffvoc.training.engine) | "reference"
    micro_batch: int = 0  # reference engine: items per forward/backward pass, gradients accumulated (0: all); fast: always 1
    compile: bool = False  # torch.compile the network (CUDA; falls back to eager if compilation fails)
    seed: int = 0
    log_every: int = 50
    valid_every: int = 1000
    save_every: int = 1000
    keep_checkpoints: int = 3
    valid_steps: int = 6  # fast-sampling steps for the validation log-mel L1
    audio_log_clips: int = 2


@dataclass
class InferConfig:
    """InferGrad's infer loss (Chen et al., ICASSP 2022; InferGrad, Chen et al., ICASSP 2022; :mod:`diffvoc.diffusion.infergrad`).

    Training adds ``weight`` · L_infer(x̂_0, x_0) to the diffusion loss, where x̂_0 is produced from
    the prior's noise by the K-step reverse process, run with gradients. Everything InferGrad does
    not publish is an option here; the defaults are our choices, not the paper's:

    * ``weight`` (λ) 0.1: λ·L_infer is then of the order of the diffusion loss (at the CPU benchmark's
      scale L_infer ≈ 5 and the diffusion loss ≈ 0.25), so the model stays a valid denoiser.
    * ``mode``: ``step-specific`` trains one schedule (``schedule``, or else
      ``diffusion.fast_schedules[steps]``); ``general`` draws, every training step, K uniformly from
      ``general_steps`` and then each β_n log-uniformly from ``general_ranges[K][n]`` (one
      ``[low, high]`` per reverse step, noisiest last, ``high_n <= low_{n+1}`` so the schedule is
      increasing; the all-``high`` corner must lie inside the training range). The draw is a pure
      function of (``train.seed``, step), so ``--resume`` stays exact and all DDP ranks agree.
    * the loss: ``magnitude_weight`` × MR-STFT (Parallel WaveGAN's MR-STFT, Yamamoto et al., ICASSP 2020 resolutions) + ``phase_weight`` ×
      the anti-wrapping phase loss of APNet (``phase``: ``anti_wrapping`` or ``none``) on one STFT of
      ``phase_fft``/``phase_hop``/``phase_win``, its bins weighted by the target magnitude
      (``phase_weighting``: ``magnitude`` or ``none``).
    * cost: the unrolled part uses the first ``crop_frames`` frames of the first ``batch_items``
      crops of the batch (``None``: all), every ``every`` training steps from ``start_step`` on
      (useful when training from scratch); ``checkpoint`` recomputes each step's network call in
      the backward pass (memory of about one step instead of K).
    * ``clamp``: the inference sampler clamps x to [−1, 1] after every step (hard clamping has zero
      gradient outside). ``ste`` (default) clamps the forward values exactly as inference does and
      passes the gradient straight through; ``hard`` is the plain clamp; ``none`` does not clamp.
    """

    enabled: bool = False
    weight: float = 0.1  # λ
    mode: str = "step-specific"  # "step-specific" | "general"
    steps: int = 2  # K (step-specific), unless `schedule` is given
    schedule: list[float] | None = None  # step-specific β (then K = its length); None: diffusion.fast_schedules[steps]
    general_steps: list[int] = field(default_factory=lambda: [2, 3, 6])
    general_ranges: dict[int, list[list[float]]] = field(
        default_factory=lambda: {k: [list(r) for r in v] for k, v in GENERAL_RANGES.items()})
    magnitude_weight: float = 1.0
    phase: str = "anti_wrapping"  # "anti_wrapping" | "none"
    phase_weight: float = 0.1
    phase_fft: int = 1024
    phase_hop: int = 256
    phase_win: int = 1024
    phase_weighting: str = "magnitude"  # "magnitude" | "none"
    crop_frames: int = 16
    batch_items: int | None = None
    every: int = 1
    start_step: int = 0
    checkpoint: bool = True
    clamp: str = "ste"  # "ste" | "hard" | "none"


@dataclass
class TruncationConfig:
    """Truncated diffusion with a learned implicit prior (TDPM, TDPM, Zheng et al., ICLR 2023; :mod:`diffvoc.diffusion.truncation`).

    The diffusion loss is applied only on t ≤ T_trunc (``steps``, or the first step whose noise
    level 1 − ᾱ_t reaches ``noise_level``); a generator G(z, mel) learns x_{T_trunc} adversarially
    against a mel-conditioned 1-D discriminator, and sampling runs G then the truncated reverse
    chain. the paper's constants: non-saturating loss, lazy R1 (``r1_gamma`` in 0.01–1, every
    ``r1_every`` = 16 steps), Adam learning rates 2e-4 (diffusion: ``train.learning_rate``),
    ``generator_lr`` 2e-5 and ``discriminator_lr`` 2.5e-3 with betas (0, 0.99) for both GAN optimisers.

    * ``generator``: ``shared`` — the denoiser itself evaluated at step T_trunc + 1, as the official
      code does (one extra call of the big network per utterance); ``separate`` — a small DiffWave of
      ``generator_channels`` × ``generator_layers`` (a fraction of one big call).
    * ``generator_input``: ``prior`` — z = σ ⊙ ε with the prior's σ (PriorGrad's Σ_c; ε for the
      standard prior); ``standard`` — z = ε ~ N(0, I) always.
    * ``generator_skip`` (our choice, not the paper's): G(z, c) = √(1 − ᾱ_{T_trunc}) z + f(z, c), so
      an untrained G already has the noise part of q(x_{T_trunc} | x_0) right and f learns the
      signal part; ``false`` makes G's output f(z, c) itself, as the official code.
    * ``gan_start_step``: warm-up — the GAN starts after this many steps of diffusion-only training
      (or start from a trained denoiser with ``--init-from`` and set it to 0).
    * ``schedules``: explicit β for the truncated chain, keyed by the number of reverse steps; any
      other count is derived from the stored fast schedule scaled to end at the truncation level.
    """

    enabled: bool = False
    steps: int | None = 35  # T_trunc (1-based: x_{T_trunc}); 35 of T=50: noise level 0.46. None: from noise_level
    noise_level: float | None = None  # 1 − ᾱ at truncation; used when steps is None
    generator: str = "separate"  # "shared" | "separate"
    generator_input: str = "prior"  # "prior" | "standard"
    generator_skip: bool = True
    generator_channels: int = 32
    generator_layers: int = 10
    generator_cycle: int = 10
    discriminator_channels: int = 16
    discriminator_scales: int = 3  # multi-scale sub-discriminators (raw, ×2, ×4 average-pooled)
    discriminator_periods: list[int] = field(default_factory=list)  # multi-period ones, e.g. [2, 3, 5, 7, 11]
    # spectral ones: [n_fft, hop, win] of a log-magnitude STFT each (see diffvoc.models.discriminator)
    discriminator_resolutions: list[list[int]] = field(
        default_factory=lambda: [[512, 128, 512], [1024, 256, 1024], [2048, 512, 2048]])
    generator_lr: float = 2e-5
    discriminator_lr: float = 2.5e-3
    gan_betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    r1_gamma: float = 0.01  # TDPM's range 0.01–1; larger values kept D at chance in CPU tests
    r1_every: int = 16
    gan_weight: float = 1.0  # weight of the generator's adversarial loss
    gan_start_step: int = 0
    gan_every: int = 1  # GAN phases every this many training steps
    schedules: dict[int, list[float]] = field(default_factory=dict)


@dataclass
class Config:
    """Everything that defines a model and how it was trained."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    truncation: TruncationConfig = field(default_factory=TruncationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from diffvoc.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return _build(cls, d or {}, "")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Read a YAML config; presets named in it are applied first (see :func:`apply_presets`)."""
        return cls.from_dict(apply_presets(_read_yaml_mapping(path)))

    def with_overrides(self, items: list[str]) -> "Config":
        """Apply ``section.key=value`` strings (values parsed as YAML) and validate the result."""
        d = _override(self.to_dict(), items)
        return Config.from_dict(d)

    def validate(self) -> "Config":
        from diffvoc.config_validation import check_ranges, validate_infer, validate_truncation

        check_ranges(self)
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
        if a.n_mels > a.n_fft // 2 + 1:
            raise ConfigError(f"audio.n_mels ({a.n_mels}) must not exceed the {a.n_fft // 2 + 1} frequency bins "
                              f"of audio.n_fft={a.n_fft}")
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
        if self.infer.enabled and m.conditioning != "mel":
            raise ConfigError("the infer loss is implemented for mel-conditioned models only")
        if pr.upsample not in ("repeat", "smooth"):
            raise ConfigError(f"prior.upsample must be repeat or smooth, got {pr.upsample!r}")
        if not 0 < pr.sigma_min <= 1:
            raise ConfigError("prior.sigma_min must be in (0, 1]")
        if self.train.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be auto, fp32, bf16 or fp16, got {self.train.precision!r}")
        if self.train.engine not in ("auto", "fast", "reference"):
            raise ConfigError(f"train.engine must be auto, fast or reference, got {self.train.engine!r}")
        if isinstance(self.train.micro_batch, bool) or not isinstance(self.train.micro_batch, int) \
                or self.train.micro_batch < 0:
            raise ConfigError(f"train.micro_batch must be a whole number >= 0, got {self.train.micro_batch!r}")
        if self.data.crop_frames < 1 or self.train.batch_size < 1:
            raise ConfigError("data.crop_frames and train.batch_size must be positive")
        if len(self.train.adam_betas) != 2:
            raise ConfigError(f"train.adam_betas must be two numbers, got {self.train.adam_betas!r}")
        validate_infer(self)
        validate_truncation(self)
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


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error line stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_value(key: str, raw: str) -> Any:
    """A ``--set KEY=VALUE`` value, parsed as YAML by the package's one safe YAML reader."""
    from diffvoc.io import parse_yaml

    return parse_yaml(raw, f"--set {key.strip()}", ConfigError)


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
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
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
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: expected {getattr(typ, '__name__', typ)}, got {_short(value)}") from None
    return value


def _read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    from diffvoc.io import load_yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" if not p.exists() else f"{p} is not a file (a config "
                          "YAML was expected)")
    d = load_yaml(p, "config", ConfigError) or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping")
    return d


def _override(d: dict[str, Any], items: list[str]) -> dict[str, Any]:
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
        node[parts[-1]] = _parse_value(key, raw)
    return d


def config_kind(path: str | Path) -> str:
    """``acoustic`` when the YAML file at ``path`` says ``kind: acoustic``, else ``vocoder``."""
    d = _read_yaml_mapping(path)
    return "acoustic" if d.get("kind") == "acoustic" else "vocoder"
