"""Spoken digits (SC09-like): the ten words, and the reader of a digits corpus's clips.

Two layouts are understood: ``ROOT/<split>/<word>/<id>.wav`` (written by ``diffvoc corpus digits``)
and WaveGAN's flat SC09 release ``ROOT/<split>/<Word>_<speaker>_nohash_<k>.wav``. Labels are 0..9
for the words zero..nine; other words (the rest of Speech Commands) are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffvoc.errors import DiffvocError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""The class names of a digits model, label k = ``DIGIT_WORDS[k]``."""
SPLITS = ("train", "valid", "test")
DEFAULT_CLIP_SECONDS = 1.0
"""SC09's clip length."""


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
