"""The acoustic model's configuration (text → mel; PriorGrad-acoustic): dataclasses ⇄ YAML.

A YAML file with a top-level ``kind: acoustic`` is an :class:`AcousticConfig` (see
:func:`diffvoc.config.config_kind`); it reuses the vocoder's audio and diffusion sections and the
YAML ⇄ dataclass machinery of :mod:`diffvoc.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffvoc.config import (
    AUDIO_PRESETS,
    AudioConfig,
    DiffusionConfig,
    _build,
    _override,
    _read_yaml_mapping,
    apply_presets,
)
from diffvoc.config_validation import check_schedule
from diffvoc.errors import ConfigError

# Default fast schedules for the acoustic model's T = 400 training schedule (β = linspace(1e-4,
# 0.05, 400)). Unlike the vocoder's, they end near pure noise (1 − γ̄_S ≈ 0.95–0.99), because
# sampling starts from the prior N(μ, Σ) itself. Training replaces them with a grid search on
# validation sentences (:mod:`diffvoc.training.acoustic_schedule`), stored in the checkpoint.
ACOUSTIC_FAST_SCHEDULES: dict[int, list[float]] = {
    2: [0.1, 0.95],
    6: [1e-3, 0.01, 0.05, 0.2, 0.5, 0.9],
    12: [1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8],
}


def _acoustic_diffusion() -> DiffusionConfig:
    return DiffusionConfig(steps=400, beta_start=1e-4, beta_end=0.05, loss="l2", clamp=False,
                           fast_schedules={k: list(v) for k, v in ACOUSTIC_FAST_SCHEDULES.items()})


@dataclass
class TextConfig:
    """The text front end (:mod:`diffvoc.data.text`): espeak-ng phonemes in this language/voice."""

    language: str = "en-us"


@dataclass
class AcousticModelConfig:
    """Sizes of :class:`diffvoc.models.acoustic.AcousticModel` (the official PriorGrad-acoustic code; scaled down for CPUs)."""

    hidden: int = 160  # encoder width (official 256)
    encoder_layers: int = 3  # pre-LayerNorm transformer layers (official 4)
    heads: int = 2
    ffn_hidden: int = 384  # Conv1d hidden → ffn_hidden, kernel ffn_kernel, then Linear back (official 1024, 9)
    ffn_kernel: int = 5
    dropout: float = 0.1  # encoder (official 0.2)
    duration_channels: int = 160
    duration_kernel: int = 3
    duration_dropout: float = 0.5
    # DiffWave decoder: residual channels (official 128; fewer than the 80 mel bins cannot carry x_t through the
    # ReLU in-conv, and the ε-loss then stalls at large t), layers (official 12), kernel 3, dilation 1
    decoder_channels: int = 128
    decoder_layers: int = 6
    speaker_dropout: float = 0.1  # share of training items whose speaker is replaced by the "average" speaker 0


@dataclass
class PhonePriorConfig:
    """Which prior the mel decoder diffuses towards (the official PriorGrad-acoustic code).

    ``standard``: N(0, I), plain MSE. ``priorgrad``: per phone token the per-bin mean μ_p and std σ_p of
    the training-split frames aligned to it (σ = 0 → 1, then floored at ``sigma_min``; unseen tokens
    and padding μ = 0, σ = 1); diffusion on x − μ with a Mahalanobis loss.

    Durations come from monotonic alignment search, so the statistics need an alignment first: the
    first ``warmup_steps`` train the encoder/aligner and duration predictor only; then one alignment
    pass over the training split computes the statistics (for both kinds, so both runs are trained on
    equal terms) and the diffusion decoder starts training.
    """

    kind: str = "priorgrad"  # "standard" | "priorgrad"
    sigma_min: float = 0.1
    warmup_steps: int = 300


@dataclass
class AcousticDataConfig:
    """An LJSpeech-layout corpus (``metadata.csv`` id|text|text|speaker, ``wavs/``, ``splits/``)."""

    path: str = "data/corpus"
    cache: str | None = None  # features and phonemes; None: <path>/features-acoustic (or the run dir)
    crop_frames: int = 128  # the diffusion loss sees a random window of this many frames per item
    valid_sentences: int = 8  # from the valid split
    valid_unseen: int = 4  # from unseen_split (a held-out voice), if the corpus has it
    unseen_split: str = "test_unseen_voice"


@dataclass
class AcousticTrainConfig:
    """Optimisation (AdamW, Noam-style warm-up, grad-norm clip 1 as in the official PriorGrad-acoustic code), logging, saving."""

    batch_size: int = 16
    learning_rate: float = 1e-3  # peak
    warmup_steps: int = 400
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_steps: int = 100_000
    ema_decay: float = 0.995
    seed: int = 0
    threads: int | None = None  # torch threads (None: leave as is)
    log_every: int = 25
    valid_every: int = 250
    save_every: int = 250
    keep_checkpoints: int = 2
    valid_steps: int = 6
    schedule_search: bool = True  # grid-search the fast schedules on validation sentences at the final save


@dataclass
class AcousticConfig:
    """Everything that defines a text → mel model and its training."""

    kind: str = "acoustic"
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: AcousticModelConfig = field(default_factory=AcousticModelConfig)
    diffusion: DiffusionConfig = field(default_factory=_acoustic_diffusion)
    prior: PhonePriorConfig = field(default_factory=PhonePriorConfig)
    data: AcousticDataConfig = field(default_factory=AcousticDataConfig)
    train: AcousticTrainConfig = field(default_factory=AcousticTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        from diffvoc.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AcousticConfig":
        d = apply_presets(dict(d or {}))
        d.setdefault("kind", "acoustic")
        if d["kind"] != "acoustic":
            raise ConfigError(f"kind must be acoustic, got {d['kind']!r}")
        diff = dataclasses.asdict(_acoustic_diffusion())
        diff.update(d.get("diffusion") or {})
        d["diffusion"] = diff
        return _build(cls, d, "").validate()

    @classmethod
    def load(cls, path: str | Path) -> "AcousticConfig":
        return cls.from_dict(_read_yaml_mapping(path))

    def with_overrides(self, items: list[str]) -> "AcousticConfig":
        """Apply ``section.key=value`` strings (values parsed as YAML) and validate the result."""
        return AcousticConfig.from_dict(_override(self.to_dict(), items))

    def validate(self) -> "AcousticConfig":
        m, pr, df, tc, dc = self.model, self.prior, self.diffusion, self.train, self.data
        if self.audio.preset not in AUDIO_PRESETS:
            raise ConfigError(f"audio.preset must be one of {sorted(AUDIO_PRESETS)}, got {self.audio.preset!r}")
        if pr.kind not in ("standard", "priorgrad"):
            raise ConfigError(f"prior.kind must be standard or priorgrad, got {pr.kind!r}")
        if not 0 < pr.sigma_min <= 1:
            raise ConfigError("prior.sigma_min must be in (0, 1]")
        if pr.warmup_steps < 0:
            raise ConfigError("prior.warmup_steps must be >= 0")
        if min(m.hidden, m.encoder_layers, m.heads, m.ffn_hidden, m.ffn_kernel, m.duration_channels,
               m.duration_kernel, m.decoder_channels, m.decoder_layers) < 1:
            raise ConfigError("acoustic model sizes must be positive")
        if m.hidden % m.heads:
            raise ConfigError(f"model.hidden ({m.hidden}) must be divisible by model.heads ({m.heads})")
        if m.ffn_kernel % 2 == 0 or m.duration_kernel % 2 == 0:
            raise ConfigError("model kernel sizes must be odd")
        if not all(0 <= p < 1 for p in (m.dropout, m.duration_dropout, m.speaker_dropout)):
            raise ConfigError("model dropouts must lie in [0, 1)")
        if df.steps < 2 or not 0 < df.beta_start < df.beta_end < 1:
            raise ConfigError("diffusion needs steps >= 2 and 0 < beta_start < beta_end < 1")
        train = df.schedule()
        for k, betas in df.fast_schedules.items():
            if len(betas) != k:
                raise ConfigError(f"diffusion.fast_schedules[{k}] must have {k} values")
            check_schedule(betas, train, f"diffusion.fast_schedules[{k}]")
        if min(tc.batch_size, tc.max_steps, dc.crop_frames, tc.valid_steps) < 1 or tc.learning_rate <= 0:
            raise ConfigError("train.batch_size, max_steps, valid_steps, data.crop_frames and the learning rate "
                              "must be positive")
        if tc.threads is not None and tc.threads < 1:
            raise ConfigError("train.threads must be >= 1")
        if dc.valid_sentences < 1 or dc.valid_unseen < 0:
            raise ConfigError("data.valid_sentences must be >= 1 and data.valid_unseen >= 0")
        return self
