"""Make the text-to-speech engines speak: one clip from a voice, a text and its settings.

A :class:`Job` names the engine's exact options (:func:`engine_args`: tempo and pitch in each engine's
own terms); :func:`render` runs the engine as a subprocess and resamples, high-passes, trims,
peak-normalises and writes the clip, reporting a failure in its result instead of raising.
:func:`ordered_map` renders many jobs in a process pool, in order; :class:`FailureGuard` stops a corpus
whose engines fail more often than they work. :func:`speak` is the one-clip entry point.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from diffvoc.data.dsp import highpass, resample
from diffvoc.data.voices import SUBPROCESS_TIMEOUT_S, Voice
from diffvoc.errors import DiffvocError

__all__ = [
    "PEAK",
    "SPEECH_MARGIN_S",
    "SPEECH_TRIM_DB",
    "FailureGuard",
    "Job",
    "Rendered",
    "engine_args",
    "ordered_map",
    "render",
    "speak",
]

_ESPEAK_BASE_WPM = 175
PEAK = 0.95  # written clips are peak-normalised to this, 16-bit PCM
# Light trimming of the speech corpus and speak(): cut what is this far below the loudest 10 ms, keep a margin.
SPEECH_TRIM_DB, SPEECH_MARGIN_S = 40.0, 0.08


@dataclass(frozen=True)
class Job:
    """One clip to synthesise; executed in a worker process by :func:`render`."""

    path: str
    engine: str
    args: tuple[str, ...]  # engine-specific: command-line options, or a festival prelude
    text: str
    rate: int
    top_db: float
    margin_s: float
    clip_s: float | None  # pad/crop the trimmed audio to exactly this length, centred


@dataclass(frozen=True)
class Rendered:
    """What :func:`render` made of a :class:`Job`: lengths in seconds, or the ``error`` it met."""

    seconds: float = 0.0
    speech_seconds: float = 0.0
    native_rate: int = 0
    cropped: bool = False
    error: str | None = None


# --------------------------------------------------------------------------- engines


def _espeak_pitch(factor: float) -> int:
    """espeak-ng's ``-p`` (0-99, default 50) for an f0 factor; measured with espeak-ng 1.51."""
    slope = 85.0 if factor >= 1.0 else 137.0
    return int(min(99, max(0, round(50 + (factor - 1.0) * slope))))


def engine_args(voice: Voice, tempo: float, pitch: float | None) -> tuple[str, ...]:
    """Engine-specific settings for one clip: the exact options passed to the engine."""
    if voice.engine == "flite":
        args = ["-voice", voice.name, "--setf", f"duration_stretch={tempo:.3f}"]
        if pitch is not None:
            args += ["--setf", f"f0_shift={pitch:.3f}"]
        return tuple(args)
    if voice.engine == "espeak-ng":
        args = ["-v", voice.name, "-s", str(round(_ESPEAK_BASE_WPM / tempo))]
        if pitch is not None:
            args += ["-p", str(_espeak_pitch(pitch))]
        return tuple(args)
    # festival: a Scheme prelude, one expression per element.
    prelude = [f"(voice_{voice.name})"]
    if voice.name.endswith("_hts"):  # the HTS engine ignores Duration_Stretch; -r is its speed
        speed = f'(list "-r" {1 / tempo:.3f})'
        prelude.append(f"(set! hts_engine_params (append hts_engine_params (list {speed})))")
    else:
        prelude.append(f"(Parameter.set 'Duration_Stretch {tempo:.3f})")
    if pitch is not None:  # diphone voices: scale the voice's own target f0 mean and spread
        scaled = " ".join(
            f"(list '{key} (* {pitch:.3f} (cadr (assoc '{key} int_lr_params))))"
            for key in ("target_f0_mean", "target_f0_std")
        )
        prelude.append(f"(set! int_lr_params (append (list {scaled}) int_lr_params))")
    return tuple(prelude)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _synthesize(engine: str, args: tuple[str, ...], text: str, wav: str) -> None:
    """Run one engine to write ``wav``; raise RuntimeError with one line on failure."""
    stdin = None
    if engine == "flite":
        cmd = ["flite", *args, "-t", text, "-o", wav]
    elif engine == "espeak-ng":
        cmd = ["espeak-ng", *args, "-w", wav, text]
    else:
        cmd = ["festival", "--pipe"]
        stdin = "\n".join(
            [
                *args,
                f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                f"{_scheme_string(wav)} 'riff)",
                "",
            ]
        )
    try:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{engine} timed out after {exc.timeout:.0f} s") from exc
    except OSError as exc:
        raise RuntimeError(f"{engine} could not run: {exc.strerror}") from exc
    # festival reports Scheme errors on stderr but exits 0 (and may fall back to another voice).
    failed = done.returncode != 0 or (engine == "festival" and "SIOD ERROR" in done.stderr)
    if failed or not os.path.exists(wav):
        message = " ".join((done.stderr or done.stdout).split())[:300] or "no output"
        raise RuntimeError(f"{engine} failed (exit {done.returncode}): {message}")


# --------------------------------------------------------------------------- one clip


def _trim(audio: np.ndarray, rate: int, top_db: float, margin_s: float) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` below the loudest 10 ms frame,
    keeping ``margin_s`` seconds on each side."""
    frame = max(1, rate // 100)
    n = len(audio) // frame
    if n == 0:
        return audio[:0]
    rms = np.std(audio[: n * frame].reshape(n, frame), axis=1)  # blind to any offset left
    if rms.max() <= 0.0:
        return audio[:0]
    loud = np.flatnonzero(rms > rms.max() * 10.0 ** (-top_db / 20.0))
    margin = int(margin_s * rate)
    start = max(0, int(loud[0]) * frame - margin)
    end = min(len(audio), (int(loud[-1]) + 1) * frame + margin)
    return audio[start:end]


def _fit(audio: np.ndarray, length: int) -> tuple[np.ndarray, bool]:
    """Centre ``audio`` in exactly ``length`` samples: pad with zeros, or crop the middle."""
    if len(audio) > length:
        start = (len(audio) - length) // 2
        return audio[start : start + length], True
    left = (length - len(audio)) // 2
    return np.pad(audio, (left, length - len(audio) - left)), False


def render(job: Job) -> Rendered:
    """Synthesise, resample, remove DC, trim, peak-normalise and write one clip (in a worker)."""
    try:
        with tempfile.TemporaryDirectory(prefix="diffvoc-tts-") as tmp:
            raw = os.path.join(tmp, "raw.wav")
            _synthesize(job.engine, job.args, job.text, raw)
            audio, native_rate = sf.read(raw, dtype="float64", always_2d=True)
        audio = resample(audio.mean(axis=1), int(native_rate), job.rate)
        audio = _trim(highpass(audio, job.rate), job.rate, job.top_db, job.margin_s)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak <= 1e-4 or len(audio) < job.rate // 20:
            raise RuntimeError(f"{job.engine} produced silence")
        audio = audio * (PEAK / peak)
        speech_seconds = len(audio) / job.rate
        cropped = False
        if job.clip_s is not None:
            audio, cropped = _fit(audio, round(job.clip_s * job.rate))
        sf.write(job.path, audio.astype(np.float32), job.rate, subtype="PCM_16")
        return Rendered(len(audio) / job.rate, speech_seconds, int(native_rate), cropped)
    except Exception as exc:  # every failure is reported in the manifest, never raised
        return Rendered(error=" ".join(str(exc).split()) or type(exc).__name__)


def speak(text: str, path: str | Path, voice: Voice, rate: int = 22050) -> float:
    """Speak ``text`` with ``voice`` into a 16-bit wav at ``rate`` (trimmed, peak-normalised as the
    corpus is); returns its length in seconds. Raises :class:`DiffvocError` if the engine fails."""
    job = Job(path=str(path), engine=voice.engine, args=engine_args(voice, 1.0, None), text=text, rate=rate,
              top_db=SPEECH_TRIM_DB, margin_s=SPEECH_MARGIN_S, clip_s=None)
    done = render(job)
    if done.error:
        raise DiffvocError(f"{voice.id} could not speak the text: {done.error}")
    return done.seconds


# --------------------------------------------------------------------------- many clips


def ordered_map(
    fn: Callable[[Job], Rendered], items: Iterable[tuple[Any, Job]], workers: int
) -> Iterator[tuple[Any, Job, Rendered]]:
    """Yield ``(meta, job, fn(job))`` for ``(meta, job)`` items, in input order, from a
    process pool. Only a few jobs are in flight at a time, so ``items`` may be endless.
    Closing the iterator waits for the running jobs and cancels the queued ones."""
    pool = ProcessPoolExecutor(max_workers=workers)
    pending: deque = deque()
    source = iter(items)
    try:
        while True:
            while len(pending) < 4 * workers:
                item = next(source, None)
                if item is None:
                    break
                meta, job = item
                pending.append((meta, job, pool.submit(fn, job)))
            if not pending:
                return
            meta, job, future = pending.popleft()
            yield meta, job, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class FailureGuard:
    """Stop early, with the first error, when the engines fail more often than they work."""

    def __init__(self) -> None:
        self.failures = 0
        self.successes = 0
        self.first_error = ""

    def record(self, rendered: Rendered) -> None:
        """Count one result; raise :class:`DiffvocError` once 20 or more failed and failures outnumber successes."""
        if rendered.error is None:
            self.successes += 1
            return
        self.failures += 1
        self.first_error = self.first_error or rendered.error
        if self.failures >= 20 and self.failures > self.successes:
            raise DiffvocError(
                f"the TTS engines keep failing ({self.failures} of "
                f"{self.failures + self.successes} clips); first error: {self.first_error}"
            )
