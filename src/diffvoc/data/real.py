"""Corpora of real recorded speech from Debian packages, and a mixed real + synthetic corpus.

No speech corpus can be downloaded where diffvoc is developed, but Debian ships recordings of
people inside ordinary packages:

* ``klettres-data``: letters and syllables of about twenty languages (KDE's KLettres), Ogg Vorbis,
  mostly 44.1 kHz, one speaker per language folder (``klettres:<language>``), GPL-2+;
* ``asterisk-core-sounds-<lang>-g722`` (``en``, ``es``, ``fr``, ``it``, ``ru``): telephone prompts read
  by professional speakers (Allison Smith reads en and es, June Wallack fr, Carlo Flora it, the
  ivrvoice.ru voice ru; ``asterisk:<name>``), G.722 wideband (16 kHz, about 7 kHz of bandwidth),
  CC-BY-SA-3.0 / CC-BY-3.0. The ``g722`` PyPI package decodes them.

:func:`make_real_corpus` (``diffvoc corpus real OUT``) decodes every recording, trims leading and
trailing silence, rejects clips by the measured criteria below, resamples to the target rate and
writes an LJSpeech-layout corpus: ``wavs/<id>.wav``, ``metadata.csv`` (``id|text|text|speaker|real``;
the fifth column marks real recordings for :func:`diffvoc.data.dataset.load_clips`), ``splits/*.txt`` and
``manifest.json`` (per clip: package, version, licence, native rate, measured bandwidth, the
measurements behind the decision). :func:`make_mixed_corpus` (``diffvoc corpus mixed OUT``) joins a
synthetic corpus of :mod:`diffvoc.data.synth` and a real corpus, a configurable share of each source's
training clips, keeping every held-out split of both.

Splits of the real corpus (whole speakers held out, so ``test`` is speech of voices training never
heard): ``test`` holds at least two KLettres languages (15 %) and one whole Asterisk voice (when at least
two are installed); ``test_seen_voice`` holds a tenth of the Asterisk prompts (by prompt name, for
every training voice); ``test_wideband`` is the part of ``test`` whose measured bandwidth exceeds
8 kHz (real 22.05 kHz content, none of it G.722); ``valid`` is a twentieth of each training speaker's
clips. ``valid`` and ``test`` are interleaved over speakers, so their first clips cover many voices.

Everything is deterministic: the same packages and seed give byte-identical metadata and splits.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from diffvoc.errors import DiffvocError

__all__ = [
    "ASTERISK_LANGUAGES",
    "BAND_LIMITED_DECISION",
    "PACKAGES",
    "Analysis",
    "SourceClip",
    "analyse",
    "bandwidth_hz",
    "decode",
    "discover_clips",
    "ensure_packages",
    "make_mixed_corpus",
    "make_real_corpus",
    "missing_packages",
    "package_version",
    "parse_shares",
    "plan_splits",
]

REAL_KIND = "diffvoc-real-corpus"
MIXED_KIND = "diffvoc-mixed-corpus"
FORMAT_VERSION = 1

KLETTRES = "klettres-data"
ASTERISK_LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGES = (KLETTRES, *(f"asterisk-core-sounds-{lang}-g722" for lang in ASTERISK_LANGUAGES))
# Where the packages put their recordings (module constants, so tests can point elsewhere).
KLETTRES_DIR = Path("/usr/share/klettres")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
DOC_DIR = Path("/usr/share/doc")
_AUDIO_SUFFIXES = (".ogg", ".opus", ".wav", ".flac")
_G722_RATE, _G722_BITRATE = 16000, 64000
# Asterisk prompts that are signal tones, not speech (its silence/ folder fails the "silent" test).
_ASTERISK_TONES = frozenset({"beep", "beeperr", "ascending-2tone", "descending-2tone"})

# ----------------------------------------------------------------------------- criteria
# Measured on all 4,667 recordings of the six packages (klettres-data 4:22.12.3-1, asterisk
# 1.6.1-1); the numbers behind each choice are in the README and in every manifest.
_FRAME_S = 0.010  # analysis frames: RMS of 10 ms, after a 30 Hz zero-phase high-pass (DC, rumble)
_DB_CLAMP = -120.0  # digital silence counts as -120 dBFS
_MIN_RUN_FRAMES = 3  # levels count when held for >= 30 ms (isolated clicks do not)
# The loud core: frames within 25 dB of the peak (speech for sure). The noise: the median level of the
# frames at least 0.1 s (10 frames) away from the core when there are >= 10 of them ("silence"); else
# (prompts cut tight at the source, or noise loud enough to join the core) the 5th percentile of all
# frame levels ("quietest frames": the pauses of continuous speech, or the noise itself).
_CORE_BELOW_PEAK_DB, _NOISE_GUARD_FRAMES, _NOISE_MIN_FRAMES, _QUIET_PERCENTILE = 25.0, 10, 10, 5
# A speech frame is above both (peak - 40 dB) and (noise + 10 dB); the clip is cut from the first to
# the last run of >= 3 speech frames, with 50 ms kept on each side.
_TRIM_BELOW_PEAK_DB, _TRIM_ABOVE_NOISE_DB, _MARGIN_S = 40.0, 10.0, 0.05
_SILENT_DBFS = -50.0  # peak below this: an empty file or a faint tone (Asterisk's silence/*)
# Clipped: more than 0.2 % of the trimmed clip's samples at >= 99 % of full scale. Full scale is 1.0,
# except for a file whose peak exceeds 2.0: a float stream with a wrong gain (KLettres' tn, peaks up
# to 61) was never clipped at 1.0 and is judged at its own peak. Lossy coding of clipped audio
# overshoots full scale by at most 1.64 (measured), so the exception cannot hide clipped files.
_CLIP_LEVEL, _CLIP_MAX_FRACTION, _FLOAT_GAIN_PEAK = 0.99, 0.002, 2.0
# Noisy: the core's median level is less than this above the noise. The quietest frames of clean continuous
# speech (Asterisk prompts without silence) lie >= 15 dB below the core for 2,386 of 2,390 prompts, those of
# humming or hissing KLettres clips 0.4-14.9 dB (measured), hence the lower bar for that estimate.
_MIN_SNR_DB = {"silence": 20.0, "quietest frames": 15.0}
_MIN_SECONDS = 0.20  # trimmed clip
_MIN_SPEECH_S = 0.10  # speech frames in it
_BANDWIDTH_DB = 50.0  # bandwidth: highest frequency within 50 dB of the long-term spectrum's peak
_PEAK = 0.95  # written clips are peak-normalised to this, 16-bit PCM

# ----------------------------------------------------------------------------- splits
_HELD_OUT_LANGUAGE_SHARE, _MIN_HELD_OUT_LANGUAGES = 0.15, 2
_HELD_OUT_MIN_CLIPS = 20  # a held-out language needs this many usable clips (when enough have)
_HELD_OUT_PROMPT_SHARE = 0.10
_VALID_SHARE, _VALID_MIN_CLIPS = 0.05, 3
_WIDEBAND_HZ = 8000.0  # above G.722's Nyquist frequency
REAL_SPLITS = ("train", "valid", "test", "test_seen_voice", "test_wideband")

#: Whether the band-limited 16 kHz source (G.722 Asterisk prompts) is in the training part of
#: ``diffvoc corpus mixed`` by default, and the measurement behind the choice (recorded in every
#: mixed manifest).
BAND_LIMITED_DECISION: dict[str, Any] = {
    "default_asterisk_share": 0.0,
    "decision": "exclude the G.722 Asterisk prompts from the training split of a 22.05 kHz mixed corpus "
                "(--share asterisk=1 puts them back); they stay in the held-out splits",
    "measurement": (
        "scripts/band_limited_check.py --seconds 600: the bundled model fine-tuned 694 steps (batch 4 x 24 "
        "frames, lr 5e-4) on the mixed corpus with and without the Asterisk prompts, 6-step copy-synthesis "
        "of 40 clips each. test_wideband (unseen KLettres speakers, > 8 kHz of bandwidth): MR-STFT 2.596 with "
        "vs 2.464 without (paired difference +0.132 +/- 0.022, worse with them on 40 of 40 clips), log-mel "
        "L1 1.357 vs 1.284 (+0.073 +/- 0.018), log-spectral distance above 8 kHz 23.2 vs 21.6 dB; test (mostly "
        "the unseen G.722 voice): MR-STFT 2.979 vs 2.847. A short CPU fine-tune, not a full training: "
        "benchmarks/results/band_limited.json"
    ),
}


# ----------------------------------------------------------------------------- packages


def package_version(package: str) -> str | None:
    """The installed version of a Debian package, ``None`` when it is not installed.

    Without ``dpkg-query`` (not Debian), a package counts as installed with version ``unknown``
    when its recordings' folder exists.
    """
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", package],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown" if _package_dirs(package) else None
    status, _, version = done.stdout.partition("|")
    return version.strip() if done.returncode == 0 and status.startswith("ii") else None


def missing_packages(packages: Iterable[str]) -> list[str]:
    """The packages of ``packages`` that are not installed (or whose recordings are gone)."""
    return [p for p in packages if package_version(p) is None or not _package_dirs(p)]


def _apt_install(packages: list[str]) -> str | None:
    """``apt-get install`` (then once more after ``apt-get update``); the last error line or None."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    error = None
    for update in (False, True):
        try:
            if update:
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)
        if done.returncode == 0:
            return None
        lines = (done.stderr or done.stdout).strip().splitlines()
        error = lines[-1] if lines else f"exit {done.returncode}"
    return error


def ensure_packages(packages: Sequence[str], install: bool = True) -> None:
    """Make sure ``packages`` are installed: with apt-get when running as root, else raise.

    Raises :class:`DiffvocError` (one line, naming the packages and the command) when some are
    missing and cannot be installed.
    """
    missing = missing_packages(packages)
    if not missing:
        return
    command = "apt-get install -y " + " ".join(missing)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not (install and is_root and shutil.which("apt-get")):
        raise DiffvocError(
            f"missing Debian package(s) {', '.join(missing)}: install them as root with `{command}` "
            f"(or leave them out with --packages)"
        )
    error = _apt_install(missing)
    still = missing_packages(missing)
    if still:
        raise DiffvocError(f"could not install {', '.join(still)} with `{command}`: {error or 'not installed'}")


def _package_dirs(package: str) -> list[Path]:
    """The folders holding a package's recordings (KLettres: one per language)."""
    if package == KLETTRES:
        if not KLETTRES_DIR.is_dir():
            return []
        return [d for d in sorted(KLETTRES_DIR.iterdir()) if d.is_dir() and _audio_files(d)]
    lang = _asterisk_language(package)
    if not ASTERISK_DIR.is_dir():
        return []
    return [d for d in sorted(ASTERISK_DIR.glob(f"{lang}_*")) if d.is_dir() and any(d.rglob("*.g722"))]


def _asterisk_language(package: str) -> str:
    found = re.fullmatch(r"asterisk-core-sounds-([a-z]{2})-g722", package)
    if found is None or package not in PACKAGES:
        raise DiffvocError(f"unknown package {package!r}; choose from {', '.join(PACKAGES)}")
    return found.group(1)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES and p.is_file())


def _copyright(package: str, hint: str) -> tuple[str, str]:
    """(licence, copyright holders) of ``hint`` from the package's machine-readable copyright file.

    The last ``Files:`` stanza whose pattern matches ``hint`` wins (the DEP-5 rule).
    """
    try:
        text = (DOC_DIR / package / "copyright").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown", ""
    licence, holders = "unknown", ""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1].isspace() and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and any(fnmatch(hint, pat) for pat in fields["files"].split()):
            licence = fields.get("license", "unknown").splitlines()[0].strip() or "unknown"
            holders = " ".join(fields.get("copyright", "").split())
    return licence, holders


# ----------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class SourceClip:
    """One recording in a package: where it is and who speaks it."""

    id: str
    path: str
    package: str
    family: str  # "klettres" | "asterisk"
    speaker: str  # "klettres:<language>" | "asterisk:<name>"
    language: str
    text: str  # KLettres: the letter or syllable; Asterisk: the prompt's name (no transcript ships)
    prompt: str  # path inside the voice or language folder, without the suffix


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


def _klettres_names() -> dict[str, str]:
    """Recording path (relative to the KLettres folder) -> the letter or syllable it says."""
    names: dict[str, str] = {}
    for xml in sorted(KLETTRES_DIR.glob("*/sounds.xml")):
        try:
            root = ET.parse(xml).getroot()
        except (ET.ParseError, OSError):
            continue
        for sound in root.iter("sound"):
            file, name = sound.get("file"), sound.get("name")
            if file and name:
                names.setdefault(file, " ".join(name.split()).replace("|", "/"))
    return names


def _klettres_clips() -> list[SourceClip]:
    names = _klettres_names()
    clips = []
    for folder in _package_dirs(KLETTRES):
        lang = folder.name
        for path in _audio_files(folder):
            rel = path.relative_to(KLETTRES_DIR).as_posix()
            prompt = path.relative_to(folder).with_suffix("").as_posix()
            clips.append(SourceClip(
                id=_safe_id(f"kl-{lang}-{prompt.replace('/', '-')}"), path=str(path), package=KLETTRES,
                family="klettres", speaker=f"klettres:{lang}", language=lang,
                text=names.get(rel, path.stem), prompt=prompt,
            ))
    return clips


def _asterisk_clips(package: str) -> list[SourceClip]:
    lang = _asterisk_language(package)
    clips = []
    for folder in _package_dirs(package):
        parts = folder.name.split("_")  # en_US_f_Allison: language, region, gender, name
        name = parts[-1].lower() if len(parts) >= 4 else folder.name.lower()
        for path in sorted(folder.rglob("*.g722")):
            prompt = path.relative_to(folder).with_suffix("").as_posix()
            clips.append(SourceClip(
                id=_safe_id(f"ast-{lang}-{prompt.replace('/', '-')}"), path=str(path), package=package,
                family="asterisk", speaker=f"asterisk:{name}", language="_".join(parts[:2]),
                text=prompt.rsplit("/", 1)[-1].replace("|", "/"), prompt=prompt,
            ))
    return clips


def discover_clips(packages: Sequence[str], per_speaker: int | None = None) -> list[SourceClip]:
    """Every recording of the installed ``packages``, sorted by id; at most ``per_speaker`` each."""
    clips: list[SourceClip] = []
    for package in packages:
        clips += _klettres_clips() if package == KLETTRES else _asterisk_clips(package)
    clips.sort(key=lambda c: c.id)
    ids = [c.id for c in clips]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise DiffvocError(f"two recordings map to the same clip id {dup!r}")
    if per_speaker is not None:
        taken: Counter[str] = Counter()
        kept = []
        for clip in clips:
            if taken[clip.speaker] < per_speaker:
                taken[clip.speaker] += 1
                kept.append(clip)
        clips = kept
    return clips


# ----------------------------------------------------------------------------- audio


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a recording as float64 ``[samples, channels]`` at its native rate.

    ``.g722`` files (raw G.722 at 64 kbit/s) are decoded with the ``g722`` package; everything else
    with soundfile. Raises :class:`DiffvocError` when the file cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".g722":
        try:
            import G722
        except ImportError as exc:
            raise DiffvocError("decoding the Asterisk prompts needs the g722 package: pip install g722") from exc
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DiffvocError(f"cannot read {path}: {exc.strerror}") from None
        pcm = np.asarray(G722.G722(_G722_RATE, _G722_BITRATE).decode(data), dtype=np.float64)
        return (pcm / 32768.0)[:, None], _G722_RATE
    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        raise DiffvocError(f"cannot decode {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return audio, int(rate)


def _highpass(audio: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    if len(audio) == 0:
        return audio
    if len(audio) < 64:
        return audio - audio.mean()
    return sosfiltfilt(butter(2, 30.0, "highpass", fs=rate, output="sos"), audio)


def _frame_db(audio: np.ndarray, rate: int) -> np.ndarray:
    frame = max(1, round(_FRAME_S * rate))
    n = len(audio) // frame
    if n == 0:
        return np.zeros(0)
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    return np.maximum(20.0 * np.log10(np.maximum(rms, 1e-30)), _DB_CLAMP)


def _runs(mask: np.ndarray, length: int) -> np.ndarray:
    """Indices of True entries that belong to a run of at least ``length`` Trues."""
    if not mask.any():
        return np.zeros(0, dtype=int)
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    keep = [np.arange(s, e) for s, e in zip(starts, ends) if e - s >= length]
    return np.concatenate(keep) if keep else np.zeros(0, dtype=int)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyse` measured on one recording (levels in dBFS, times at the native rate)."""

    rate: int
    channels: int
    raw_seconds: float
    start: int  # first sample kept
    end: int  # one past the last sample kept
    peak_dbfs: float  # loudest level held for 30 ms
    noise_db: float | None  # see noise_from (None: no loud core)
    noise_from: str  # "silence": median of the frames >= 0.1 s from the loud core; else "quietest frames"
    speech_db: float  # median level of the loud core (frames within 25 dB of the peak)
    snr_db: float | None  # speech_db - noise_db
    speech_seconds: float  # speech frames between start and end
    clipped_fraction: float  # samples of the kept part at >= 99 % of full scale
    full_scale: float
    bandwidth_hz: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / self.rate

    def reject(self) -> str | None:
        """The first criterion the clip fails (``silent``, ``clipped``, ``noisy``, ``too short``), or None."""
        if self.peak_dbfs < _SILENT_DBFS or self.end <= self.start:
            return "silent"
        if self.clipped_fraction > _CLIP_MAX_FRACTION:
            return "clipped"
        if self.snr_db is not None and self.snr_db < _MIN_SNR_DB[self.noise_from]:
            return "noisy"
        if self.seconds < _MIN_SECONDS or self.speech_seconds < _MIN_SPEECH_S:
            return "too short"
        return None


def bandwidth_hz(audio: np.ndarray, rate: int) -> float:
    """Highest frequency at which the long-term spectrum is within 50 dB of its peak (Welch, ~46 ms Hann)."""
    from scipy.signal import welch

    if len(audio) < 16:
        return 0.0
    nperseg = min(len(audio), 1 << int(np.ceil(np.log2(0.046 * rate))))
    freqs, power = welch(audio, fs=rate, nperseg=nperseg)
    level = 10.0 * np.log10(np.maximum(power, 1e-30))
    return round(float(freqs[np.flatnonzero(level >= level.max() - _BANDWIDTH_DB)[-1]]), 1)


def _sustained(db: np.ndarray) -> np.ndarray:
    """Frame levels held for at least ``_MIN_RUN_FRAMES`` frames (a moving minimum): clicks vanish."""
    k = _MIN_RUN_FRAMES
    if len(db) < k:
        return db
    return np.min(np.stack([db[i: len(db) - k + 1 + i] for i in range(k)]), axis=0)


def analyse(audio: np.ndarray, rate: int) -> Analysis:
    """Trim points and the measurements behind the rejection criteria for one decoded recording.

    ``audio`` is ``[samples, channels]`` (or mono ``[samples]``) as :func:`decode` returns it.
    The loud core (frames within 25 dB of the peak) is speech for sure; the noise is the median
    level of the frames at least 0.1 s away from it; speech frames are above both (peak - 40 dB)
    and (noise + 10 dB); the clip is trimmed to the first and last run of speech frames.
    """
    audio = audio[:, None] if audio.ndim == 1 else audio
    mono = _highpass(audio.mean(axis=1), rate)
    db = _frame_db(mono, rate)
    frame = max(1, round(_FRAME_S * rate))
    empty = Analysis(rate, audio.shape[1], len(mono) / rate, 0, 0, _DB_CLAMP, None, "none", _DB_CLAMP, None,
                     0.0, 0.0, 1.0, 0.0)
    if db.size == 0:
        return empty
    peak = float(_sustained(db).max())
    core = _runs(db > peak - _CORE_BELOW_PEAK_DB, _MIN_RUN_FRAMES)
    if core.size == 0:
        return Analysis(**{**asdict(empty), "peak_dbfs": round(peak, 2)})
    index = np.arange(len(db))
    far = (index < core[0] - _NOISE_GUARD_FRAMES) | (index > core[-1] + _NOISE_GUARD_FRAMES)
    if far.sum() >= _NOISE_MIN_FRAMES:
        noise_db, noise_from = float(np.median(db[far])), "silence"
        threshold = max(peak - _TRIM_BELOW_PEAK_DB, noise_db + _TRIM_ABOVE_NOISE_DB)
    else:  # no silence: the quietest frames (pauses in continuous speech, or the noise of a noisy file)
        noise_db, noise_from = float(np.percentile(db, _QUIET_PERCENTILE)), "quietest frames"
        threshold = peak - _TRIM_BELOW_PEAK_DB
    speech = db > threshold
    frames = _runs(speech, _MIN_RUN_FRAMES)
    first, last = int(frames[0]), int(frames[-1])  # never empty: the core is above the threshold
    margin = round(_MARGIN_S * rate)
    start = max(0, first * frame - margin)
    end = min(len(mono), (last + 1) * frame + margin)
    speech_db = float(np.median(db[core]))
    magnitude = np.abs(audio[start:end]).max(axis=1)
    top = float(np.abs(audio).max())
    full_scale = top if top > _FLOAT_GAIN_PEAK else 1.0
    clipped = float(np.mean(magnitude >= _CLIP_LEVEL * full_scale)) if magnitude.size else 0.0
    return Analysis(
        rate=rate, channels=audio.shape[1], raw_seconds=len(mono) / rate, start=start, end=end,
        peak_dbfs=round(peak, 2), noise_db=round(noise_db, 2), noise_from=noise_from,
        speech_db=round(speech_db, 2), snr_db=round(speech_db - noise_db, 2),
        speech_seconds=round(int(speech[first: last + 1].sum()) * frame / rate, 3),
        clipped_fraction=round(clipped, 6), full_scale=round(full_scale, 4),
        bandwidth_hz=bandwidth_hz(mono[start:end], rate),
    )


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ")


@dataclass(frozen=True)
class _Task:
    clip: SourceClip
    out: str  # the wav to write when the clip is kept
    rate: int


def _process(task: _Task) -> dict[str, Any]:
    """Decode, measure, and (when kept) trim, resample, normalise and write one clip (in a worker)."""
    try:
        audio, native = decode(task.clip.path)
    except DiffvocError as exc:
        return {"reject": "undecodable", "error": str(exc)}
    if audio.size == 0:
        return {"reject": "silent", "error": "no samples"}
    if not np.all(np.isfinite(audio)):
        return {"reject": "undecodable", "error": "non-finite samples"}
    a = analyse(audio, native)
    tone = task.clip.family == "asterisk" and task.clip.prompt in _ASTERISK_TONES
    out = {k: v for k, v in asdict(a).items() if k not in ("start", "end", "rate")}
    out["native_rate"] = native
    out.update(trim_s=[round(a.start / native, 3), round(a.end / native, 3)], seconds=round(a.seconds, 3))
    out["reject"] = "tone" if tone else a.reject()
    if out["reject"] is None:
        clip = _highpass(audio.mean(axis=1), native)[a.start: a.end]
        clip = _resample(clip, native, task.rate)
        clip = clip * (_PEAK / max(float(np.max(np.abs(clip))), 1e-12))
        sf.write(task.out, clip.astype(np.float32), task.rate, subtype="PCM_16")
        out["seconds"] = round(len(clip) / task.rate, 3)
    return out


# ----------------------------------------------------------------------------- splits


def _hash_order(ids: Iterable[str], seed: int, salt: str) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha1(f"{seed}:{salt}:{i}".encode()).hexdigest())


def _interleave(groups: dict[str, list[str]]) -> list[str]:
    """Round-robin over the groups in key order: the first ids cover as many groups as possible."""
    out: list[str] = []
    lists = [list(groups[k]) for k in sorted(groups)]
    for k in range(max((len(x) for x in lists), default=0)):
        out += [x[k] for x in lists if k < len(x)]
    return out


def _held_out_speakers(rows: list[dict[str, Any]], rng: random.Random) -> list[str]:
    """At least two KLettres languages (15 % of them) and one whole Asterisk voice (of two or more)."""
    counts = Counter(r["speaker"] for r in rows)
    languages = sorted({r["speaker"] for r in rows if r["family"] == "klettres"})
    n = min(max(_MIN_HELD_OUT_LANGUAGES, round(_HELD_OUT_LANGUAGE_SHARE * len(languages))), len(languages) - 1)
    held: list[str] = []
    if n > 0:
        big = [s for s in languages if counts[s] >= _HELD_OUT_MIN_CLIPS]
        held += rng.sample(big if len(big) >= n else languages, n)
    voices = sorted({r["speaker"] for r in rows if r["family"] == "asterisk"})
    if len(voices) >= 2:  # keep the voice with the most prompts for training
        largest = max(voices, key=lambda v: (counts[v], v))
        held.append(rng.choice([v for v in voices if v != largest]))
    return sorted(held)


def plan_splits(rows: list[dict[str, Any]], seed: int) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Splits of the kept clips (``rows`` with id, speaker, family, prompt, bandwidth_hz), and what was held out."""
    rng = random.Random(f"{seed}:real-held-out")
    held = set(_held_out_speakers(rows, rng))
    prompts = sorted({r["prompt"] for r in rows if r["family"] == "asterisk" and r["speaker"] not in held})
    n_prompts = max(1, round(_HELD_OUT_PROMPT_SHARE * len(prompts))) if prompts else 0
    held_prompts = set(_hash_order(prompts, seed, "prompt")[:n_prompts])
    split: dict[str, str] = {}
    for r in rows:
        if r["speaker"] in held:
            split[r["id"]] = "test"
        elif r["family"] == "asterisk" and r["prompt"] in held_prompts:
            split[r["id"]] = "test_seen_voice"
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r["id"] not in split:
            by_speaker[r["speaker"]].append(r["id"])
    valid: dict[str, list[str]] = {}
    for speaker, ids in by_speaker.items():
        if len(ids) >= _VALID_MIN_CLIPS:
            valid[speaker] = _hash_order(ids, seed, "valid")[: max(1, round(_VALID_SHARE * len(ids)))]
            split.update(dict.fromkeys(valid[speaker], "valid"))
    tests: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if split.get(r["id"]) == "test":
            tests[r["speaker"]].append(r["id"])
    test = _interleave({s: _hash_order(ids, seed, "test") for s, ids in tests.items()})
    wide = {r["id"] for r in rows if r["bandwidth_hz"] > _WIDEBAND_HZ}
    splits = {
        "train": sorted(r["id"] for r in rows if r["id"] not in split),
        "valid": _interleave(valid),
        "test": test,
        "test_seen_voice": sorted(i for i, s in split.items() if s == "test_seen_voice"),
        "test_wideband": [i for i in test if i in wide],
    }
    info = {"held_out_speakers": sorted(held), "held_out_prompts": sorted(held_prompts)}
    return splits, info


# ----------------------------------------------------------------------------- output helpers


def _write_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))  # "\n" line ends on every platform


def _write_splits(folder: Path, splits: dict[str, list[str]]) -> None:
    (folder / "splits").mkdir()
    for name, ids in splits.items():
        _write_text(folder / "splits" / f"{name}.txt", "".join(f"{i}\n" for i in ids))


def _metadata_line(row: dict[str, Any], kind: str) -> str:
    text = " ".join(str(row.get("text", "")).replace("|", "/").split())
    return f"{row['id']}|{text}|{text}|{row['speaker']}|{kind}\n"


def _start(out: Path, kind: str) -> Path:
    """Check ``out`` and make the temporary folder beside it; one-line errors for unwritable places."""
    from diffvoc.data.synth import _check_output, _start_output

    _check_output(out, kind)
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise DiffvocError(f"cannot write {out}: {existing} is not a writable folder")
    try:
        return _start_output(out, kind)
    except OSError as exc:
        raise DiffvocError(f"cannot write {out}: {exc.strerror}") from None


def _minutes(rows: Iterable[dict[str, Any]], key: str = "seconds") -> float:
    return round(sum(float(r[key]) for r in rows) / 60, 3)


def _criteria() -> dict[str, Any]:
    return {
        "analysis": f"{_FRAME_S * 1000:.0f} ms RMS frames after a 30 Hz zero-phase high-pass; levels in dBFS, "
                    f"digital silence counted as {_DB_CLAMP:.0f} dB",
        "loud_core": f"frames within {_CORE_BELOW_PEAK_DB:g} dB of the peak (the loudest level held for "
                     f"{_MIN_RUN_FRAMES * _FRAME_S * 1000:.0f} ms)",
        "noise": f"median level of the frames >= {_NOISE_GUARD_FRAMES * _FRAME_S:g} s away from the loud core, "
                 f"when there are >= {_NOISE_MIN_FRAMES} of them ('silence'); else the {_QUIET_PERCENTILE}th "
                 f"percentile of all frame levels ('quietest frames')",
        "speech_frame": f"above both (peak - {_TRIM_BELOW_PEAK_DB:g} dB) and, with noise from silence, "
                        f"(noise + {_TRIM_ABOVE_NOISE_DB:g} dB)",
        "trim": f"from the first to the last run of >= {_MIN_RUN_FRAMES} speech frames, "
                f"plus {_MARGIN_S:g} s on each side",
        "tone": "Asterisk's signal tones: " + ", ".join(sorted(_ASTERISK_TONES)),
        "silent": f"peak below {_SILENT_DBFS:g} dBFS, or no loud core",
        "clipped": f"more than {_CLIP_MAX_FRACTION:.1%} of the trimmed clip's samples at >= "
                   f"{_CLIP_LEVEL:.0%} of full scale (1.0; a file peaking above {_FLOAT_GAIN_PEAK:g} is a float "
                   f"stream with a wrong gain, judged at its own peak)",
        "noisy": "the loud core's median level less than "
                 + " or ".join(f"{v:g} dB above the noise from {k}" for k, v in _MIN_SNR_DB.items()),
        "too_short": f"trimmed clip shorter than {_MIN_SECONDS:g} s or less than {_MIN_SPEECH_S:g} s of speech frames",
        "bandwidth": f"highest frequency within {_BANDWIDTH_DB:g} dB of the peak of the trimmed clip's "
                     f"long-term spectrum (Welch, Hann, ~46 ms segments) at the native rate",
        "output": f"mono (channel mean), high-passed, trimmed, resampled with soxr HQ, peak {_PEAK}, PCM_16",
    }


# ----------------------------------------------------------------------------- real corpus


def _package_records(packages: Sequence[str]) -> dict[str, dict[str, Any]]:
    records = {}
    for package in packages:
        hint = "sounds/recording" if package == KLETTRES else f"{_asterisk_language(package)}-core-sounds"
        licence, holders = _copyright(package, hint)
        records[package] = {"version": package_version(package) or "unknown", "licence": licence,
                            "copyright": holders}
    return records


def _source_summary(packages: Sequence[str], info: dict[str, dict[str, Any]], kept: list[dict[str, Any]],
                    rejected: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for package in packages:
        mine = [r for r in kept if r["package"] == package]
        bad = [r for r in rejected if r["package"] == package]
        out[package] = {
            **info[package],
            "recordings": len(mine) + len(bad),
            "kept": len(mine),
            "rejected": dict(sorted(Counter(r["reject"] for r in bad).items())),
            "minutes_raw": _minutes(mine + [r for r in bad if "raw_seconds" in r], "raw_seconds"),
            "minutes_kept": _minutes(mine),
            "minutes_speech_frames": _minutes(mine, "speech_seconds"),
            "speakers": sorted({r["speaker"] for r in mine}),
            "native_rates": dict(sorted(Counter(str(r["native_rate"]) for r in mine).items())),
            "median_bandwidth_hz": float(np.median([r["bandwidth_hz"] for r in mine])) if mine else None,
        }
    return out


def _speaker_summary(kept: list[dict[str, Any]], held: list[str]) -> list[dict[str, Any]]:
    out = []
    for speaker in sorted({r["speaker"] for r in kept}):
        mine = [r for r in kept if r["speaker"] == speaker]
        out.append({
            "speaker": speaker, "family": mine[0]["family"], "languages": sorted({r["language"] for r in mine}),
            "packages": sorted({r["package"] for r in mine}), "held_out": speaker in held, "clips": len(mine),
            "minutes": _minutes(mine), "splits": dict(sorted(Counter(r["split"] for r in mine).items())),
        })
    return out


def make_real_corpus(
    out: str | Path,
    rate: int = 22050,
    packages: Sequence[str] | None = None,
    seed: int = 0,
    jobs: int | None = None,
    per_speaker: int | None = None,
    install: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the corpus of real recordings (module docstring) in ``out``; return its manifest.

    ``packages`` (default :data:`PACKAGES`) are installed with apt-get when missing and running as
    root (``install``), else a :class:`DiffvocError` names them. ``per_speaker`` keeps only the first
    N recordings (by id) of each speaker: a quick, small corpus. ``out`` must be new, empty or a
    previous real corpus; it is replaced atomically.
    """
    from diffvoc.data.synth import _check_common, _check_output, _finish_output, _progress_bar, _write_json

    packages = list(dict.fromkeys(packages or PACKAGES))
    for package in packages:
        if package != KLETTRES:
            _asterisk_language(package)  # unknown names are an error before anything else
    if per_speaker is not None and per_speaker < 1:
        raise DiffvocError(f"per_speaker must be at least 1, got {per_speaker}")
    jobs = _check_common(rate, jobs)
    out = Path(out)
    _check_output(out, REAL_KIND)
    ensure_packages(packages, install=install)
    if any(p != KLETTRES for p in packages):
        try:
            import G722  # noqa: F401
        except ImportError:
            raise DiffvocError("decoding the Asterisk prompts needs the g722 package: pip install g722") from None
    clips = discover_clips(packages, per_speaker)
    if not clips:
        raise DiffvocError(f"no recordings found in the packages {', '.join(packages)}")
    info = _package_records(packages)
    started = time.monotonic()
    tmp = _start(out, REAL_KIND)
    try:
        (tmp / "wavs").mkdir()
        tasks = [_Task(c, str(tmp / "wavs" / f"{c.id}.wav"), rate) for c in clips]
        kept, rejected = [], []
        bar = _progress_bar(progress, len(tasks), "clip", "real corpus")
        with bar, ProcessPoolExecutor(max_workers=jobs) as pool:
            for clip, done in zip(clips, pool.map(_process, tasks, chunksize=8)):
                bar.update(1)
                record = {**asdict(clip), "path": clip.path, **info[clip.package], **done}
                record["package_version"] = record.pop("version")
                (rejected if done["reject"] is not None else kept).append(record)
        for r in kept:
            del r["reject"]
        splits, held = plan_splits(kept, seed)
        where = {i: name for name in ("train", "valid", "test", "test_seen_voice") for i in splits[name]}
        for r in kept:
            r["split"] = where[r["id"]]
        _write_text(tmp / "metadata.csv", "".join(_metadata_line(r, "real") for r in kept))
        _write_splits(tmp, splits)
        manifest = {
            "kind": REAL_KIND,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "rate": rate,
            "packages": packages,
            "per_speaker": per_speaker,
            "criteria": _criteria(),
            **held,
            "totals": {
                "recordings": len(clips),
                "kept": len(kept),
                "rejected": dict(sorted(Counter(r["reject"] for r in rejected).items())),
                "minutes": _minutes(kept),
                "speakers": len({r["speaker"] for r in kept}),
                "splits": {name: len(ids) for name, ids in splits.items()},
                "split_minutes": {name: _minutes(r for r in kept if r["id"] in set(ids))
                                  for name, ids in splits.items()},
                "seconds_to_make": round(time.monotonic() - started, 1),
                "jobs": jobs,
            },
            "sources": _source_summary(packages, info, kept, rejected),
            "speakers": _speaker_summary(kept, held["held_out_speakers"]),
            "clips": kept,
            "rejected": rejected,
        }
        _write_json(tmp / "manifest.json", manifest)
        _finish_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ----------------------------------------------------------------------------- mixed corpus


def _read_manifest(folder: Path, kinds: tuple[str, ...], what: str) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("kind") not in kinds:
        raise DiffvocError(f"{folder} is not a {what} (no manifest.json of kind {' or '.join(kinds)})")
    return manifest


def _read_splits(folder: Path) -> dict[str, list[str]]:
    return {p.stem: p.read_text().split() for p in sorted((folder / "splits").glob("*.txt"))}


def _read_metadata(folder: Path) -> dict[str, list[str]]:
    rows = {}
    for line in (folder / "metadata.csv").read_text(encoding="utf-8").splitlines():
        cols = line.split("|")
        if cols and cols[0]:
            rows[cols[0]] = cols
    return rows


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def parse_shares(specs: Sequence[str]) -> dict[str, float]:
    """``["tts=1", "asterisk=0.5"]`` -> ``{"tts": 1.0, "asterisk": 0.5}`` (sources tts, klettres, asterisk)."""
    shares = {}
    for spec in specs:
        name, sep, value = str(spec).partition("=")
        name = name.strip()
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or name not in ("tts", "klettres", "asterisk") or not 0.0 <= share <= 1.0:
            raise DiffvocError(f"--share takes SOURCE=FRACTION with SOURCE tts, klettres or asterisk and "
                               f"FRACTION in [0, 1], got {spec!r}")
        shares[name] = share
    return shares


def make_mixed_corpus(
    out: str | Path,
    tts: str | Path,
    real: str | Path,
    shares: dict[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Join a synthetic corpus (``diffvoc corpus speech``) and a real one (``diffvoc corpus real``).

    ``shares`` gives, per source (``tts``, ``klettres``, ``asterisk``), the fraction of its training
    clips kept (chosen by a hash of the id, so a smaller share is a subset of a larger one); the
    default asterisk share is :data:`BAND_LIMITED_DECISION`'s, the others 1. Every held-out split of
    both corpora is kept whole: ``valid`` (real clips first, those of sources with a share above 0 before
    the others, then synthetic), ``test`` /
    ``test_seen_voice`` / ``test_wideband`` (real) and ``test_tts`` / ``test_tts_unseen_voice``
    (synthetic). Wavs are hard-linked when possible. Returns the manifest.
    """
    from diffvoc.data.synth import SPEECH_KIND, _check_output, _finish_output, _write_json

    tts, real, out = Path(tts), Path(real), Path(out)
    tts_manifest = _read_manifest(tts, (SPEECH_KIND,), "synthetic speech corpus (diffvoc corpus speech)")
    real_manifest = _read_manifest(real, (REAL_KIND,), "real corpus (diffvoc corpus real)")
    if tts_manifest["rate"] != real_manifest["rate"]:
        raise DiffvocError(f"the corpora have different rates ({tts_manifest['rate']} and "
                           f"{real_manifest['rate']} Hz); build them at one rate")
    share = {"tts": 1.0, "klettres": 1.0, "asterisk": float(BAND_LIMITED_DECISION["default_asterisk_share"])}
    share.update(shares or {})
    _check_output(out, MIXED_KIND)
    family = {c["id"]: c["family"] for c in real_manifest["clips"]}
    tts_rows, real_rows = _read_metadata(tts), _read_metadata(real)
    clash = sorted(set(tts_rows) & set(real_rows))
    if clash:
        raise DiffvocError(f"the corpora share clip ids (e.g. {clash[0]}); they cannot be mixed")
    tts_splits, real_splits = _read_splits(tts), _read_splits(real)

    def sample(ids: list[str], source: str) -> list[str]:
        order = _hash_order(ids, seed, f"share:{source}")
        return sorted(order[: round(share[source] * len(order))])

    real_valid = real_splits.get("valid", [])
    train = sample(tts_splits.get("train", []), "tts")
    for source in ("klettres", "asterisk"):
        train += sample([i for i in real_splits.get("train", []) if family.get(i) == source], source)
    splits = {
        "train": sorted(train),
        "valid": [i for i in real_valid if share.get(family.get(i, ""), 0.0) > 0]  # trained sources first
        + [i for i in real_valid if share.get(family.get(i, ""), 0.0) == 0] + tts_splits.get("valid", []),
        "test": real_splits.get("test", []),
        "test_seen_voice": real_splits.get("test_seen_voice", []),
        "test_wideband": real_splits.get("test_wideband", []),
        "test_tts": tts_splits.get("test", []),
        "test_tts_unseen_voice": tts_splits.get("test_unseen_voice", []),
    }
    used = set().union(*map(set, splits.values()))
    seconds = {c["id"]: c["seconds"] for c in real_manifest["clips"]}
    seconds.update({u["id"]: u["seconds"] for u in tts_manifest.get("utterances", [])})

    def minutes(ids: Iterable[str]) -> float:
        return round(sum(seconds.get(i, 0.0) for i in ids) / 60, 3)

    tmp = _start(out, MIXED_KIND)
    try:
        (tmp / "wavs").mkdir()
        lines = []
        for source, rows, folder, kind in (("tts", tts_rows, tts, "tts"), ("real", real_rows, real, "real")):
            for rid, cols in rows.items():
                if rid not in used:
                    continue
                src = folder / "wavs" / f"{rid}.wav"
                if not src.is_file():
                    raise DiffvocError(f"{src} is missing; rebuild the {source} corpus")
                _link_or_copy(src, tmp / "wavs" / f"{rid}.wav")
                speaker = cols[3] if len(cols) > 3 else source
                lines.append(_metadata_line({"id": rid, "text": cols[1] if len(cols) > 1 else "",
                                             "speaker": speaker}, kind))
        _write_text(tmp / "metadata.csv", "".join(sorted(lines)))
        _write_splits(tmp, splits)
        train_by_source = {"tts": [i for i in splits["train"] if i in tts_rows]}
        for source in ("klettres", "asterisk"):
            train_by_source[source] = [i for i in splits["train"] if family.get(i) == source]
        manifest = {
            "kind": MIXED_KIND,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "rate": real_manifest["rate"],
            "tts_corpus": str(tts.resolve()),
            "real_corpus": str(real.resolve()),
            "shares": share,
            "band_limited_source": {**BAND_LIMITED_DECISION, "asterisk_share_used": share["asterisk"]},
            "totals": {
                "clips": len(lines),
                "train_clips_by_source": {k: len(v) for k, v in train_by_source.items()},
                "train_minutes_by_source": {k: minutes(v) for k, v in train_by_source.items()},
                "splits": {name: len(ids) for name, ids in splits.items()},
                "split_minutes": {name: minutes(ids) for name, ids in splits.items()},
            },
            "tts_manifest": {k: tts_manifest.get(k) for k in ("seed", "target_minutes", "engines", "held_out_voice",
                                                              "totals")},
            "real_manifest": {k: real_manifest.get(k) for k in ("seed", "packages", "held_out_speakers", "totals",
                                                                "sources", "criteria")},
        }
        _write_json(tmp / "manifest.json", manifest)
        _finish_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
