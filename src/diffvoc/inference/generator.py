"""Class-conditional and unconditional waveform generation (DiffWave on SC09-like spoken digits).

Three parts:

* **The digits data reader.** :func:`list_digit_clips` lists the clips of one split of an SC09-layout
  folder with their labels, :func:`load_digit_clips` reads them as a ``[n, T]`` array. Two layouts
  are understood: ``ROOT/<split>/<word>/<id>.wav`` (written by ``diffvoc corpus digits``) and
  WaveGAN's flat SC09 release ``ROOT/<split>/<Word>_<speaker>_nohash_<k>.wav``. Labels are 0..9 for
  the words zero..nine; other words (the rest of Speech Commands) are skipped.
* **Generation.** :func:`generate` (or a reusable :class:`Generator`) samples ``n`` clips from a
  class-conditional (``model.conditioning: class``) or unconditional (``none``) checkpoint with the
  standard prior N(0, I) and DiffWave's full or fast sampler (:func:`diffvoc.build.build_sampler`).
  Clip ``k`` depends only on (seed, k, its label, the model, the sampler): not on the batch size.
* **The command line.** :func:`add_generate_parser` adds
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffvoc.checkpoint import Checkpoint, load_checkpoint
from diffvoc.build import build, build_sampler
from diffvoc.config import Config
from diffvoc.data.synth import DIGIT_WORDS
from diffvoc.errors import DiffvocError
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.noise import ClipIndexNoise

DEFAULT_CLIP_SECONDS = 1.0
SPLITS = ("train", "valid", "test")
UNCOND_TAG = "uncond"

__all__ = [
    "DEFAULT_CLIP_SECONDS",
    "DigitClip",
    "Generator",
    "clip_samples",
    "generate",
    "list_digit_clips",
    "load_digit_clips",
    "output_name",
]


# --------------------------------------------------------------------------------------------------
# The digits data reader
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitClip:
    """One spoken-digit clip: its file, label (0..9), word and speaker (``""`` when unknown)."""

    path: Path
    label: int
    word: str
    speaker: str


def _word_label(word: str) -> int | None:
    w = word.strip().lower()
    return DIGIT_WORDS.index(w) if w in DIGIT_WORDS else None


def list_digit_clips(root: str | Path, split: str) -> list[DigitClip]:
    """The digit clips of ``root/<split>``, sorted by path.

    ``root/<split>/<word>/<id>.wav`` gives the word from the folder and the speaker from the id's
    part before the first ``_`` (``v003_007`` → ``v003``); WaveGAN's flat SC09 layout
    ``root/<split>/<Word>_<speaker>_nohash_<k>.wav`` gives both from the file name. Words other
    than zero..nine are skipped. Raises :class:`DiffvocError` when the folder or split is missing
    or holds no digit clip.
    """
    root = Path(root)
    if not root.is_dir():
        raise DiffvocError(f"no such digits corpus: {root}")
    folder = root / split
    if not folder.is_dir():
        have = [s for s in SPLITS if (root / s).is_dir()]
        raise DiffvocError(f"{root} has no {split!r} split (found: {', '.join(have) or 'none'}); "
                           "expected ROOT/<split>/<word>/<id>.wav as written by `diffvoc corpus digits`")
    clips: list[DigitClip] = []
    for sub in sorted(folder.iterdir()):
        if sub.is_dir():
            label = _word_label(sub.name)
            if label is None:
                continue
            for wav in sorted(sub.glob("*.wav")):
                clips.append(DigitClip(wav, label, DIGIT_WORDS[label], wav.stem.split("_", 1)[0]))
        elif sub.suffix.lower() == ".wav":
            parts = sub.stem.split("_")
            label = _word_label(parts[0])
            if label is not None:
                clips.append(DigitClip(sub, label, DIGIT_WORDS[label], parts[1] if len(parts) > 1 else ""))
    if not clips:
        raise DiffvocError(f"{folder} holds no digit clips (folders zero..nine of .wav files)")
    return clips


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad at the end, or centre-crop, to exactly ``length`` samples."""
    n = audio.shape[-1]
    if n == length:
        return audio
    if n < length:
        return np.pad(audio, (0, length - n))
    start = (n - length) // 2
    return audio[start:start + length]


def load_digit_clips(clips: Sequence[DigitClip], sample_rate: int = 16000,
                     seconds: float = DEFAULT_CLIP_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """Read clips (resampled to ``sample_rate``, mono, not re-normalised) as ``[n, T]`` float32 with
    ``T = round(seconds · sample_rate)`` (padded or centre-cropped), and their labels ``[n]`` int64."""
    from diffvoc.audio import load_audio

    length = int(round(seconds * sample_rate))
    out = np.zeros((len(clips), length), np.float32)
    for i, clip in enumerate(clips):
        out[i] = fit_length(load_audio(clip.path, sample_rate), length)
    return out, np.asarray([c.label for c in clips], np.int64)


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
        from diffvoc.inference.engine import DenoiserFactory
        from diffvoc.build import load_weights

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
        model, _, self.prior = build(cfg, ck.stats)
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
        return build_sampler(self.config, steps, schedule, full)

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
