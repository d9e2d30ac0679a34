"""Class-conditional and unconditional waveform generation (DiffWave on SC09-like spoken digits).

The spoken-digits data it is trained and measured on is read by :mod:`diffvoc.data.digits`.

* **Generation.** :func:`generate` (or a reusable :class:`Generator`) samples ``n`` clips from a
  class-conditional (``model.conditioning: class``) or unconditional (``none``) checkpoint with the
  standard prior N(0, I) and DiffWave's full or fast sampler (:func:`diffvoc.build.build_sampler`).
  Clip ``k`` depends only on (seed, k, its label, the model, the sampler): not on the batch size.
* **The command line** (:mod:`diffvoc.cli.generate`):
  ``diffvoc generate --checkpoint CKPT [--label 3] -n 16 -o DIR [--steps N|--schedule ...|--full]``,
  which writes ``DIR/<label or uncond>_<k>.wav`` (k zero-padded to 4 digits) atomically.

Clip length: the config has no clip-length field, so a clip is :data:`DEFAULT_CLIP_SECONDS` (1 s, as
SC09) at the model's ``audio.sample_rate``; ``seconds=`` / ``--seconds`` change it (the network is
fully convolutional, so any length runs, but the model has only seen what it was trained on).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diffvoc.build import build, build_sampler
from diffvoc.checkpoint import Checkpoint, load_checkpoint
from diffvoc.config import Config
from diffvoc.data.digits import DEFAULT_CLIP_SECONDS, DIGIT_WORDS
from diffvoc.diffusion.noise import ClipIndexNoise
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.errors import DiffvocError

UNCOND_TAG = "uncond"

__all__ = [
    "DEFAULT_CLIP_SECONDS",
    "Generator",
    "clip_samples",
    "generate",
    "output_name",
]


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def clip_samples(cfg: Config, seconds: float | None = None) -> int:
    """Samples per generated clip: ``seconds`` (default :data:`DEFAULT_CLIP_SECONDS`, 1 s as SC09)
    at the model's sample rate. The config has no clip-length field; this is the one place to read
    it from once it does."""
    s = DEFAULT_CLIP_SECONDS if seconds is None else float(seconds)
    if not (math.isfinite(s) and s > 0):
        raise DiffvocError(f"clip length must be a positive number of seconds, got {seconds!r}")
    from diffvoc.audio import check_length

    check_length(s, "a generated clip", error=DiffvocError)
    n = int(round(s * cfg.audio.sample_rate))
    if n < 1:
        raise DiffvocError(f"{s} s at {cfg.audio.sample_rate} Hz is less than one sample")
    return n


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffvocError("--device cuda asked for, but CUDA is not available")
    return dev


class Generator:
    """A class-conditional or unconditional DiffWave checkpoint, ready to sample.

    Args:
        checkpoint: a checkpoint or run directory, or a loaded :class:`Checkpoint`.
        device: ``cpu`` or ``cuda``.
        precision, engine: as for :class:`~diffvoc.inference.vocoder.Vocoder` — the fast inference engine
            (:mod:`diffvoc.inference.engine`, equal to the network in fp32) by default, bf16 on request.

    Raises :class:`DiffvocError` for a mel-conditioned checkpoint (use ``diffvoc vocode``) and
    :class:`CheckpointError` when the weights do not match the config.
    """

    def __init__(self, checkpoint: str | Path | Checkpoint, device: str | torch.device = "cpu",
                 precision: str = "fp32", engine: str = "fast") -> None:
        from diffvoc.build import load_weights
        from diffvoc.inference.engine import DenoiserFactory

        self.device = _device(device)
        ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        where = str(ck.path or "checkpoint")
        cfg = ck.config
        if cfg.model.conditioning == "mel":
            raise DiffvocError(f"{where} is a mel-conditioned vocoder; `generate` needs a class-conditional "
                               "(model.conditioning: class) or unconditional (none) model; use `diffvoc vocode`")
        if cfg.prior.kind != "standard":  # the config refuses this already; kept for hand-made configs
            raise DiffvocError(f"{where}: generation uses the standard prior, the model has {cfg.prior.kind!r}")
        self.config, self.path = cfg, ck.path
        model, self.schedule, self.prior = build(cfg, ck.stats)
        load_weights(model, ck.weights, where)
        self.model = model.to(self.device).eval()
        self.denoiser = DenoiserFactory(self.model, precision, engine)  # conditioner → denoise(x, t)

    @property
    def conditional(self) -> bool:
        """Whether the model takes a class label."""
        return self.config.model.conditioning == "class"

    @property
    def n_classes(self) -> int:
        return int(self.config.model.n_classes) if self.conditional else 0

    @property
    def sample_rate(self) -> int:
        return int(self.config.audio.sample_rate)

    def sampler(self, steps: int | None = 6, schedule: list[float] | None = None, full: bool = False) -> DiffusionSampler:
        """The sampler for ``--full``, ``--schedule`` or ``--steps N`` (raises ScheduleError)."""
        return build_sampler(self.config, steps, schedule, full, train=self.schedule)

    def check_labels(self, labels: int | Sequence[int] | np.ndarray | None, n: int) -> np.ndarray | None:
        """``n`` labels as int64, or ``None`` for an unconditional model; a clear error otherwise."""
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise DiffvocError(f"the number of clips must be a positive integer, got {n!r}")
        if not self.conditional:
            if labels is not None:
                raise DiffvocError("this model is unconditional (model.conditioning: none): it takes no label")
            return None
        if labels is None:
            msg = f"this model is class-conditional: give a label 0..{self.n_classes - 1}"
            if self.n_classes <= len(DIGIT_WORDS):
                msg += " (" + ", ".join(f"{i}={w}" for i, w in enumerate(DIGIT_WORDS[:self.n_classes])) + ")"
            raise DiffvocError(msg)
        raw = np.atleast_1d(np.asarray(labels))
        if raw.ndim != 1 or raw.size == 0:
            raise DiffvocError("labels must be one integer or a list of integers")
        if not np.issubdtype(raw.dtype, np.integer):
            if not (np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))):
                raise DiffvocError(f"labels must be integers, got {labels!r}")
        arr = raw.astype(np.int64)
        if arr.size == 1:
            arr = np.full(int(n), int(arr[0]), np.int64)
        if arr.size != n:
            raise DiffvocError(f"{arr.size} labels for {n} clips: give one label or one per clip")
        bad = arr[(arr < 0) | (arr >= self.n_classes)]
        if bad.size:
            raise DiffvocError(f"label {int(bad[0])} is out of range: this model has classes 0..{self.n_classes - 1}")
        return arr

    @torch.inference_mode()
    def generate(self, labels: int | Sequence[int] | np.ndarray | None = None, n: int = 1, *, steps: int | None = 6,
                 schedule: list[float] | None = None, full: bool = False, seed: int = 0, batch_size: int = 16,
                 seconds: float | None = None, first: int = 0, progress: bool = False) -> np.ndarray:
        """``n`` clips ``[n, T]`` float32 in [−1, 1] (``T`` = :func:`clip_samples`).

        ``labels`` is one label for all clips, one per clip, or ``None`` (unconditional). ``first``
        offsets the clip indices that key the noise (clip k of a call with ``first=f`` is clip
        ``f + k`` of one big call).
        """
        lab = self.check_labels(labels, n)
        if batch_size < 1:
            raise DiffvocError(f"batch size must be at least 1, got {batch_size}")
        sampler = self.sampler(steps, schedule, full)
        length = clip_samples(self.config, seconds)
        out = np.zeros((int(n), length), np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int(n), unit="clip", desc="generate", file=sys.stderr)
        try:
            for a in range(0, int(n), batch_size):
                b = min(a + batch_size, int(n))
                label_t = None if lab is None else torch.as_tensor(lab[a:b], device=self.device)
                cond = self.model.condition(label=label_t)
                std = self.prior.std(None, length, batch=b - a, device=self.device)
                x = sampler.sample(self.denoiser(cond), std, b - a, length, ClipIndexNoise(seed, first + a),
                                   device=self.device)
                out[a:b] = x.float().cpu().numpy()
                if bar is not None:
                    bar.update(b - a)
        finally:
            if bar is not None:
                bar.close()
        return out


def generate(checkpoint: str | Path | Checkpoint, labels: int | Sequence[int] | np.ndarray | None = None, n: int = 1,
             *, steps: int | None = 6, schedule: list[float] | None = None, full: bool = False, seed: int = 0,
             device: str | torch.device = "cpu", batch_size: int = 16, seconds: float | None = None) -> np.ndarray:
    """Generate ``n`` clips ``[n, T]`` from a class-conditional or unconditional checkpoint.

    ``labels``: one label (0..n_classes−1) for every clip, one per clip, or ``None`` for an
    unconditional model. ``steps`` picks a stored fast schedule (6 by default), ``schedule`` gives
    explicit β, ``full`` runs all T training steps. A clip is 1 s at the model's sample rate unless
    ``seconds`` says otherwise (see :func:`clip_samples`).
    """
    return Generator(checkpoint, device).generate(labels, n, steps=steps, schedule=schedule, full=full, seed=seed,
                                                  batch_size=batch_size, seconds=seconds)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def output_name(label: int | None, k: int) -> str:
    """``<label>_<k>.wav`` or ``uncond_<k>.wav`` (k zero-padded to 4 digits, so names sort)."""
    return f"{UNCOND_TAG if label is None else int(label)}_{k:04d}.wav"


def _prepare_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DiffvocError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DiffvocError(f"cannot create output folder {out}: {e.strerror}") from None
