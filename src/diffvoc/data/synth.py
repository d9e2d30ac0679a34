"""Make synthetic speech corpora with the open text-to-speech engines packaged by Debian.

No speech corpus can be downloaded where diffvoc is developed and tested, so this module makes
its own with flite, festival and espeak-ng:

* :func:`make_speech_corpus` writes a multi-speaker English corpus in LJSpeech layout
  (``wavs/<id>.wav``, ``metadata.csv`` with ``id|text|text|speaker``), sentence-disjoint
  train/valid/test splits plus a ``test_unseen_voice`` split spoken by one held-out voice,
  and ``manifest.json`` with every utterance's engine, voice, engine version and settings.
* :func:`make_digits_corpus` writes one-second spoken digits (zero to nine) in an SC09-like
  layout ``<split>/<word>/<id>.wav`` whose test split is spoken by held-out voices.
* :func:`add_corpus_parser` adds the ``diffvoc corpus speech|digits`` command line.

Both corpora are deterministic: the same seed and the same installed engines give the same ids,
texts, voices and settings (the audio itself may differ between engine versions). The engines
run as subprocesses in a process pool; a corpus is written into a temporary folder beside the
output folder and renamed into place only when complete.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import DiffvocError

__all__ = [
    "APT_INSTALL",
    "Voice",
    "find_voices",
    "load_sentences",
    "make_digits_corpus",
    "make_speech_corpus",
]

APT_INSTALL = (
    "apt-get install -y flite festival festvox-kallpc16k festvox-kdlpc16k "
    "festvox-us-slt-hts espeak-ng"
)

SPEECH_KIND = "diffvoc-speech-corpus"
DIGITS_KIND = "diffvoc-digits-corpus"
FORMAT_VERSION = 1
ENGINES = ("flite", "festival", "espeak-ng")  # fixed order: it decides held-out voices
SENTENCES_PATH = Path(__file__).parents[1] / "assets" / "sentences.txt"

# flite's built-in voices that are not general-purpose speakers.
_FLITE_EXCLUDED = {
    "awb_time": "limited-domain talking-clock voice",
    "kal": "8 kHz copy of kal16",
}
# flite voices that ignore f0_shift (checked with flite 2.2).
_FLITE_NO_PITCH = {"rms"}
_FESTIVAL_ENGLISH_DIRS = ("english", "us", "british", "en")
# espeak-ng variants used, in this order; novelty effects (whisper, croak, robots) are left out.
_ESPEAK_VARIANTS = tuple(
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 Andrea Annie belinda linda steph "
    "klatt klatt2 klatt3 klatt4".split()
)
_ESPEAK_BASE_WPM = 175
_SUBPROCESS_TIMEOUT_S = 60.0

# Speech corpus: the plan repeats every 20 utterances; these slots are not "train".
_SPEECH_CYCLE = 20
_SPEECH_SLOTS = {1: "valid", 2: "test", 3: "test_unseen_voice"}
_VALID_SENTENCE_SHARE = 0.07
_TEST_SENTENCE_SHARE = 0.10
_SPEECH_TEMPO = (0.85, 1.20)  # duration stretch: > 1 is slower
_SPEECH_PITCH = (0.85, 1.18)  # f0 factor
_DIGITS_TEMPO = (0.80, 1.25)
_DIGITS_PITCH = (0.80, 1.25)
_DIGITS_VALID_SHARE = 0.10
_DIGITS_TEST_VOICE_SHARE = 0.15
_PEAK = 0.95
# Light trimming: cut what is this far below the loudest 10 ms, keep a margin of silence.
_SPEECH_TRIM_DB, _SPEECH_MARGIN_S = 40.0, 0.08
_DIGITS_TRIM_DB, _DIGITS_MARGIN_S = 40.0, 0.03


@dataclass(frozen=True)
class Voice:
    """One speaker: an engine and the engine's own name for the voice.

    ``family`` names the recorded speaker (or espeak-ng setting) behind the voice, so that the
    same person synthesised by two engines (flite ``slt`` and festival's SLT HTS voice) is not
    counted as an unseen voice. ``pitch_control`` says whether the engine lets us move its f0.
    """

    engine: str
    name: str
    family: str
    pitch_control: bool

    @property
    def id(self) -> str:
        """The speaker label written to metadata, e.g. ``flite:slt``."""
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True)
class _Job:
    """One clip to synthesise; executed in a worker process by :func:`_render`."""

    path: str
    engine: str
    args: tuple[str, ...]  # engine-specific: command-line options, or a festival prelude
    text: str
    rate: int
    top_db: float
    margin_s: float
    clip_s: float | None  # pad/crop the trimmed audio to exactly this length, centred


@dataclass(frozen=True)
class _Rendered:
    seconds: float = 0.0
    speech_seconds: float = 0.0
    native_rate: int = 0
    cropped: bool = False
    error: str | None = None


# --------------------------------------------------------------------------- text


def load_sentences(path: str | Path | None = None) -> list[str]:
    """Return the bundled English sentences (``diffvoc/assets/sentences.txt``), one per line.

    Blank lines and lines starting with ``#`` are ignored; duplicates are dropped (first kept).
    """
    path = Path(path) if path is not None else SENTENCES_PATH
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DiffvocError(f"cannot read the sentence list {path}: {exc.strerror}") from exc
    sentences = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return list(dict.fromkeys(sentences))


# --------------------------------------------------------------------------- engines


def _run_text(cmd: list[str], stdin: str | None = None) -> str:
    """Run ``cmd`` and return stdout + stderr; empty string when it cannot run."""
    try:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def _family(name: str) -> str:
    """Recorded speaker behind a flite or festival voice name: ``cmu_us_slt_arctic_hts`` -> slt."""
    name = re.sub(r"^cmu_us_", "", name)
    name = re.sub(r"(_arctic)?(_hts|_clunits|_cg|_diphone|_ldom)$", "", name)
    return re.sub(r"(8|16)k?$", "", name)


def _flite_voices() -> list[Voice]:
    if shutil.which("flite") is None:
        return []
    out = _run_text(["flite", "-lv"])
    listed = out.split("Voices available:", 1)[1].split() if "Voices available:" in out else []
    return [
        Voice("flite", name, _family(name), name not in _FLITE_NO_PITCH)
        for name in sorted(set(listed))
        if name not in _FLITE_EXCLUDED
    ]


def _festival_voices() -> list[Voice]:
    if shutil.which("festival") is None:
        return []
    out = _run_text(["festival", "--pipe"], stdin="(print voice-path)\n(print (voice.list))\n")
    lines = [line for line in out.splitlines() if line.startswith("(")]
    if len(lines) < 2:
        return []
    roots = re.findall(r'"([^"]+)"', lines[0])
    names = re.findall(r"[\w.-]+", lines[1])
    voices = []
    for name in sorted(set(names)):
        english = any(
            (Path(root) / lang / name).is_dir() for root in roots for lang in _FESTIVAL_ENGLISH_DIRS
        )
        if english:
            voices.append(Voice("festival", name, _family(name), name.endswith("_diphone")))
    return voices


def _espeak_voices() -> list[Voice]:
    if shutil.which("espeak-ng") is None:
        return []
    data = re.search(r"Data at:\s*(\S+)", _run_text(["espeak-ng", "--version"]))
    listing = _run_text(["espeak-ng", "--voices=en"]).splitlines()[1:]
    # Columns: priority, language, age/gender, name, file, other languages. mbrola ("mb/")
    # voices need the non-free mbrola program, so only espeak-ng's own voices are used.
    accents = sorted(
        {
            cols[1]
            for cols in map(str.split, listing)
            if len(cols) >= 5 and cols[4].startswith("gmw/")
        }
    )
    if not accents or data is None:
        return []
    variant_dir = Path(data.group(1)) / "voices" / "!v"
    variants = [v for v in _ESPEAK_VARIANTS if (variant_dir / v).is_file()]
    voices = []
    for i, variant in enumerate(variants):  # spread the variants over the accents
        name = f"{accents[i % len(accents)]}+{variant}"
        voices.append(Voice("espeak-ng", name, f"espeak-ng:{name}", True))
    return voices


def find_voices() -> list[Voice]:
    """Return every usable English voice of the installed engines, in a fixed order.

    Raises :class:`DiffvocError` naming the apt-get command when no engine is on ``PATH``.
    """
    voices = _flite_voices() + _festival_voices() + _espeak_voices()
    if not voices:
        if not any(shutil.which(engine) for engine in ENGINES):
            raise DiffvocError(
                f"no text-to-speech engine found on PATH (flite, festival, espeak-ng); "
                f"install them with: {APT_INSTALL}"
            )
        raise DiffvocError(f"the installed TTS engines offer no English voice; run: {APT_INSTALL}")
    return voices


def _engine_versions(engines: Iterable[str]) -> dict[str, str]:
    versions = {}
    for engine in sorted(set(engines)):
        out = _run_text([engine, "--version"])
        if engine == "flite":
            found = re.search(r"version:\s*(.+)", out)
        elif engine == "festival":
            found = re.search(r"System:\s*(.+)", out)
        else:
            found = re.search(r"text-to-speech:\s*(\S+)", out)
        versions[engine] = found.group(1).strip() if found else "unknown"
    return versions


def _espeak_pitch(factor: float) -> int:
    """espeak-ng's ``-p`` (0-99, default 50) for an f0 factor; measured with espeak-ng 1.51."""
    slope = 85.0 if factor >= 1.0 else 137.0
    return int(min(99, max(0, round(50 + (factor - 1.0) * slope))))


def _engine_args(voice: Voice, tempo: float, pitch: float | None) -> tuple[str, ...]:
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
            cmd, input=stdin, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S
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


# --------------------------------------------------------------------------- audio


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio
    try:
        import soxr
    except ImportError:  # librosa depends on soxr, but fall back to librosa's own choice
        import librosa

        return librosa.resample(audio, orig_sr=rate_in, target_sr=rate_out)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ")


def _remove_dc(audio: np.ndarray, rate: int) -> np.ndarray:
    """Remove DC offset (some flite voices have one) with a zero-phase 30 Hz high-pass."""
    from scipy.signal import butter, sosfiltfilt

    if len(audio) < 64:
        return audio - audio.mean()
    return sosfiltfilt(butter(2, 30.0, "highpass", fs=rate, output="sos"), audio)


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


def _render(job: _Job) -> _Rendered:
    """Synthesise, resample, remove DC, trim, peak-normalise and write one clip (in a worker)."""
    try:
        with tempfile.TemporaryDirectory(prefix="diffvoc-tts-") as tmp:
            raw = os.path.join(tmp, "raw.wav")
            _synthesize(job.engine, job.args, job.text, raw)
            audio, native_rate = sf.read(raw, dtype="float64", always_2d=True)
        audio = _resample(audio.mean(axis=1), int(native_rate), job.rate)
        audio = _trim(_remove_dc(audio, job.rate), job.rate, job.top_db, job.margin_s)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak <= 1e-4 or len(audio) < job.rate // 20:
            raise RuntimeError(f"{job.engine} produced silence")
        audio = audio * (_PEAK / peak)
        speech_seconds = len(audio) / job.rate
        cropped = False
        if job.clip_s is not None:
            audio, cropped = _fit(audio, round(job.clip_s * job.rate))
        sf.write(job.path, audio.astype(np.float32), job.rate, subtype="PCM_16")
        return _Rendered(len(audio) / job.rate, speech_seconds, int(native_rate), cropped)
    except Exception as exc:  # every failure is reported in the manifest, never raised
        return _Rendered(error=" ".join(str(exc).split()) or type(exc).__name__)


def speak(text: str, path: str | Path, voice: Voice, rate: int = 22050) -> float:
    """Speak ``text`` with ``voice`` into a 16-bit wav at ``rate`` (trimmed, peak-normalised as the
    corpus is); returns its length in seconds. Raises :class:`DiffvocError` if the engine fails."""
    job = _Job(path=str(path), engine=voice.engine, args=_engine_args(voice, 1.0, None), text=text, rate=rate,
               top_db=_SPEECH_TRIM_DB, margin_s=_SPEECH_MARGIN_S, clip_s=None)
    done = _render(job)
    if done.error:
        raise DiffvocError(f"{voice.id} could not speak the text: {done.error}")
    return done.seconds


def _ordered_map(
    fn: Callable[[_Job], _Rendered], items: Iterable[tuple[Any, _Job]], workers: int
) -> Iterator[tuple[Any, _Job, _Rendered]]:
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


class _FailureGuard:
    """Stop early, with the first error, when the engines fail more often than they work."""

    def __init__(self) -> None:
        self.failures = 0
        self.successes = 0
        self.first_error = ""

    def record(self, rendered: _Rendered) -> None:
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


# --------------------------------------------------------------------------- output folder


def _corpus_kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _check_output(out: Path, kind: str) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder holding no previous ``kind``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DiffvocError(f"{out} exists and is not a folder")
    if any(out.iterdir()) and _corpus_kind(out) != kind:
        raise DiffvocError(
            f"refusing to write into {out}: it is not empty and holds no previous "
            f"{kind} (no matching manifest.json); choose an empty or new folder"
        )


def _start_output(out: Path, kind: str) -> Path:
    """Check ``out`` again and return a fresh temporary folder beside it."""
    _check_output(out, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _finish_output(tmp: Path, out: Path) -> None:
    """Move the finished corpus into place, replacing a previous corpus only at the end."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _progress_bar(enabled: bool, total: float, unit: str, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True)


def _check_common(rate: int, jobs: int | None) -> int:
    if not 8000 <= rate <= 96000:
        raise DiffvocError(f"rate must be between 8000 and 96000 Hz, got {rate}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise DiffvocError(f"jobs must be at least 1, got {jobs}")
    return jobs


# --------------------------------------------------------------------------- voices


def _hold_out(voices: list[Voice], count: int, rng: random.Random) -> list[Voice]:
    """Pick ``count`` voices to keep out of training.

    Preferred are voices whose recorded speaker no other voice shares, taken round-robin over
    the engines (in :data:`ENGINES` order), at most a third of an engine's voices each, and
    only from engines that keep at least one voice for training.
    """
    if len(voices) < 2:
        raise DiffvocError(
            f"need at least two voices to hold one out, found {len(voices)}; run: {APT_INSTALL}"
        )
    families = [v.family for v in voices]
    by_engine = {e: [v for v in voices if v.engine == e] for e in ENGINES}
    candidates = {
        e: [v for v in vs if families.count(v.family) == 1] if len(vs) >= 2 else []
        for e, vs in by_engine.items()
    }
    limit = {e: max(1, len(vs) // 3) for e, vs in by_engine.items()}
    chosen: list[Voice] = []
    while len(chosen) < count:
        picked_any = False
        for engine in ENGINES:
            taken = sum(v.engine == engine for v in chosen)
            left = [v for v in candidates[engine] if v not in chosen]
            if len(chosen) < count and left and taken < limit[engine]:
                chosen.append(rng.choice(left))
                picked_any = True
        if not picked_any:
            break
    if not chosen:  # e.g. one voice per engine: hold out any voice
        chosen.append(rng.choice(voices))
    return chosen


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return round(rng.uniform(*bounds), 3)


def _voice_summary(voices: list[Voice], held_out: list[Voice], rows: list[dict]) -> list[dict]:
    summary = []
    for voice in voices:
        mine = [r for r in rows if r["speaker"] == voice.id]
        summary.append(
            {
                "id": voice.id,
                "engine": voice.engine,
                "voice": voice.name,
                "family": voice.family,
                "pitch_control": voice.pitch_control,
                "held_out": voice in held_out,
                "native_rate": mine[0]["native_rate"] if mine else None,
                "clips": len(mine),
                "seconds": round(sum(r["seconds"] for r in mine), 3),
            }
        )
    return summary


# --------------------------------------------------------------------------- speech corpus


@dataclass(frozen=True)
class _Utterance:
    id: str
    text: str
    voice: Voice
    split: str
    tempo: float
    pitch: float | None


def _speech_plan(sentences: list[str], voices: list[Voice], held_out: Voice, seed: int):
    """Endless, deterministic sequence of utterances.

    Sentences are shuffled and cut into train/valid/test pools, so valid and test sentences
    never occur in train; ``test_unseen_voice`` utterances (the held-out voice) read test
    sentences. Every block of 20 utterances holds one valid, one test and one unseen-voice
    utterance, so even a tiny corpus has all four splits. Seen voices are drawn by engine
    first (each engine equally likely), then uniformly within the engine.
    """
    order = list(range(len(sentences)))
    random.Random(f"{seed}:sentences").shuffle(order)
    n_valid = max(1, round(_VALID_SENTENCE_SHARE * len(order)))
    n_test = max(1, round(_TEST_SENTENCE_SHARE * len(order)))
    pools = {
        "valid": order[:n_valid],
        "test": order[n_valid : n_valid + n_test],
        "train": order[n_valid + n_test :],
    }
    used = dict.fromkeys(pools, 0)
    seen = {e: [v for v in voices if v.engine == e and v != held_out] for e in ENGINES}
    engines = [e for e in ENGINES if seen[e]]
    rng = random.Random(f"{seed}:speech-plan")
    for index in itertools.count():
        split = _SPEECH_SLOTS.get(index % _SPEECH_CYCLE, "train")
        if split == "test_unseen_voice":
            voice, pool = held_out, "test"
        else:
            voice, pool = rng.choice(seen[rng.choice(engines)]), split
        text = sentences[pools[pool][used[pool] % len(pools[pool])]]
        used[pool] += 1
        tempo, pitch = _uniform(rng, _SPEECH_TEMPO), _uniform(rng, _SPEECH_PITCH)
        yield _Utterance(
            f"dv{index:06d}", text, voice, split, tempo, pitch if voice.pitch_control else None
        )


def make_speech_corpus(
    out: str | Path,
    minutes: float = 60.0,
    rate: int = 22050,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise a multi-speaker English speech corpus in LJSpeech layout.

    Writes ``out/wavs/<id>.wav`` (16-bit PCM mono at ``rate``, lightly trimmed, peak 0.95),
    ``out/metadata.csv`` (``id|text|text|speaker``), ``out/splits/{train,valid,test,
    test_unseen_voice}.txt`` and ``out/manifest.json``. Utterances are synthesised in a fixed
    order until the written audio reaches ``minutes``; utterances an engine fails on are
    listed under ``skipped`` in the manifest. ``jobs`` worker processes are used
    (default: ``os.cpu_count()``). ``out`` must be new, empty or a previous speech corpus;
    it is replaced atomically. Returns the manifest.
    """
    if not minutes > 0:
        raise DiffvocError(f"minutes must be positive, got {minutes}")
    jobs = _check_common(rate, jobs)
    out = Path(out)
    _check_output(out, SPEECH_KIND)
    voices = find_voices()
    sentences = load_sentences()
    if len(sentences) < 20:
        raise DiffvocError(f"the sentence list has only {len(sentences)} sentences")
    held_out = _hold_out(voices, 1, random.Random(f"{seed}:held-out"))[0]
    versions = _engine_versions(v.engine for v in voices)

    started = time.monotonic()
    tmp = _start_output(out, SPEECH_KIND)
    try:
        wavs = tmp / "wavs"
        wavs.mkdir()

        def job_for(utt: _Utterance) -> _Job:
            args = _engine_args(utt.voice, utt.tempo, utt.pitch)
            path = str(wavs / f"{utt.id}.wav")
            trim = {"top_db": _SPEECH_TRIM_DB, "margin_s": _SPEECH_MARGIN_S}
            return _Job(path, utt.voice.engine, args, utt.text, rate, **trim, clip_s=None)

        plan = ((utt, job_for(utt)) for utt in _speech_plan(sentences, voices, held_out, seed))
        rows, skipped, total, guard = [], [], 0.0, _FailureGuard()
        bar = _progress_bar(progress, round(minutes * 60), "s", "speech corpus")
        with bar, closing(_ordered_map(_render, plan, jobs)) as results:
            for utt, job, done in results:
                guard.record(done)
                record = {
                    "id": utt.id,
                    "text": utt.text,
                    "speaker": utt.voice.id,
                    "engine": utt.voice.engine,
                    "engine_version": versions[utt.voice.engine],
                    "voice": utt.voice.name,
                    "split": utt.split,
                    "settings": {"tempo": utt.tempo, "pitch": utt.pitch, "args": list(job.args)},
                }
                if done.error is not None:
                    skipped.append({**record, "error": done.error})
                    continue
                record.update(seconds=round(done.seconds, 3), native_rate=done.native_rate)
                rows.append(record)
                total += done.seconds
                bar.update(min(done.seconds, minutes * 60 - bar.n))
                if total >= minutes * 60:
                    break
        kept = {f"{r['id']}.wav" for r in rows}
        for wav in wavs.iterdir():  # clips finished after the target was reached
            if wav.name not in kept:
                wav.unlink()

        with open(tmp / "metadata.csv", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{r['id']}|{r['text']}|{r['text']}|{r['speaker']}\n" for r in rows)
        (tmp / "splits").mkdir()
        split_names = ("train", "valid", "test", "test_unseen_voice")
        for name in split_names:
            ids = [r["id"] for r in rows if r["split"] == name]
            (tmp / "splits" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
        manifest = {
            "kind": SPEECH_KIND,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "rate": rate,
            "target_minutes": minutes,
            "engines": versions,
            "held_out_voice": held_out.id,
            "excluded_flite_voices": _FLITE_EXCLUDED,
            "processing": {
                "dc_highpass_hz": 30.0,
                "trim_top_db": _SPEECH_TRIM_DB,
                "trim_margin_s": _SPEECH_MARGIN_S,
                "peak": _PEAK,
                "format": "PCM_16 mono",
            },
            "totals": {
                "minutes": round(total / 60, 3),
                "utterances": len(rows),
                "voices": len({r["speaker"] for r in rows}),
                "skipped": len(skipped),
                "splits": {n: sum(r["split"] == n for r in rows) for n in split_names},
                "seconds_to_make": round(time.monotonic() - started, 1),
                "jobs": jobs,
            },
            "voices": _voice_summary(voices, [held_out], rows),
            "skipped": skipped,
            "utterances": rows,
        }
        _write_json(tmp / "manifest.json", manifest)
        _finish_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# --------------------------------------------------------------------------- digits corpus


@dataclass(frozen=True)
class _Clip:
    id: str
    word: str
    voice: Voice
    split: str
    tempo: float
    pitch: float | None

    @property
    def path(self) -> str:
        return f"{self.split}/{self.word}/{self.id}.wav"


def make_digits_corpus(
    out: str | Path,
    n_per_class_per_voice: int = 16,
    rate: int = 16000,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise spoken digits "zero" to "nine" as one-second clips, SC09-like.

    Every voice says every word ``n_per_class_per_voice`` times, each with its own tempo and
    pitch. Clips are trimmed, peak-normalised and centred in exactly one second (padded with
    silence, or centre-cropped when longer, which the manifest records). Layout:
    ``out/<split>/<word>/<id>.wav`` with splits ``train``, ``valid`` (a random tenth of the
    training voices' clips) and ``test`` (held-out voices), plus ``out/manifest.json``.
    ``out`` must be new, empty or a previous digits corpus; it is replaced atomically.
    Returns the manifest.
    """
    if n_per_class_per_voice < 1:
        raise DiffvocError(f"n_per_class_per_voice must be at least 1, got {n_per_class_per_voice}")
    jobs = _check_common(rate, jobs)
    out = Path(out)
    _check_output(out, DIGITS_KIND)
    voices = find_voices()
    n_test = max(1, round(_DIGITS_TEST_VOICE_SHARE * len(voices)))
    held_out = _hold_out(voices, n_test, random.Random(f"{seed}:held-out-digits"))
    versions = _engine_versions(v.engine for v in voices)

    rng = random.Random(f"{seed}:digits-plan")
    plan = []
    for v_index, voice in enumerate(voices):
        for word in DIGIT_WORDS:
            for take in range(n_per_class_per_voice):
                tempo, pitch = _uniform(rng, _DIGITS_TEMPO), _uniform(rng, _DIGITS_PITCH)
                in_valid = rng.random() < _DIGITS_VALID_SHARE
                split = "test" if voice in held_out else ("valid" if in_valid else "train")
                pitch = pitch if voice.pitch_control else None
                plan.append(_Clip(f"v{v_index:03d}_{take:03d}", word, voice, split, tempo, pitch))

    started = time.monotonic()
    tmp = _start_output(out, DIGITS_KIND)
    try:
        for split in ("train", "valid", "test"):
            for word in DIGIT_WORDS:
                (tmp / split / word).mkdir(parents=True)

        def job_for(clip: _Clip) -> _Job:
            args = _engine_args(clip.voice, clip.tempo, clip.pitch)
            trim = {"top_db": _DIGITS_TRIM_DB, "margin_s": _DIGITS_MARGIN_S}
            return _Job(
                str(tmp / clip.path), clip.voice.engine, args, clip.word, rate, **trim, clip_s=1.0
            )

        items = [(clip, job_for(clip)) for clip in plan]
        clips, skipped, guard = [], [], _FailureGuard()
        bar = _progress_bar(progress, len(plan), "clip", "digits corpus")
        with bar, closing(_ordered_map(_render, items, jobs)) as results:
            for clip, job, done in results:
                guard.record(done)
                bar.update(1)
                record = {
                    "id": clip.id,
                    "path": clip.path,
                    "word": clip.word,
                    "split": clip.split,
                    "speaker": clip.voice.id,
                    "engine": clip.voice.engine,
                    "engine_version": versions[clip.voice.engine],
                    "voice": clip.voice.name,
                    "settings": {"tempo": clip.tempo, "pitch": clip.pitch, "args": list(job.args)},
                }
                if done.error is not None:
                    skipped.append({**record, "error": done.error})
                    continue
                record.update(
                    seconds=round(done.seconds, 3),
                    speech_seconds=round(done.speech_seconds, 3),
                    cropped=done.cropped,
                    native_rate=done.native_rate,
                )
                clips.append(record)
        manifest = {
            "kind": DIGITS_KIND,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "rate": rate,
            "n_per_class_per_voice": n_per_class_per_voice,
            "words": list(DIGIT_WORDS),
            "engines": versions,
            "held_out_voices": [v.id for v in held_out],
            "processing": {
                "dc_highpass_hz": 30.0,
                "trim_top_db": _DIGITS_TRIM_DB,
                "trim_margin_s": _DIGITS_MARGIN_S,
                "peak": _PEAK,
                "clip_seconds": 1.0,
                "format": "PCM_16 mono",
            },
            "totals": {
                "clips": len(clips),
                "minutes": round(sum(c["seconds"] for c in clips) / 60, 3),
                "voices": len({c["speaker"] for c in clips}),
                "skipped": len(skipped),
                "cropped": sum(c["cropped"] for c in clips),
                "splits": {
                    s: sum(c["split"] == s for c in clips) for s in ("train", "valid", "test")
                },
                "seconds_to_make": round(time.monotonic() - started, 1),
                "jobs": jobs,
            },
            "voices": _voice_summary(voices, held_out, clips),
            "skipped": skipped,
            "clips": clips,
        }
        _write_json(tmp / "manifest.json", manifest)
        _finish_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
