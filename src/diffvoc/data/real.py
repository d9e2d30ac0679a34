"""The corpus of real recorded speech: recordings from Debian packages, measured, selected, split and written.

:func:`make_real_corpus` (``diffvoc corpus real OUT``) decodes every recording of the packages of
:mod:`diffvoc.data.recordings`, trims leading and trailing silence and rejects clips by the measured
criteria of :mod:`diffvoc.data.analysis`, resamples to the target rate and writes an LJSpeech-layout
corpus: ``wavs/<id>.wav``, ``metadata.csv`` (``id|text|text|speaker|real``; the fifth column marks real
recordings for :func:`diffvoc.data.dataset.load_clips`), ``splits/*.txt`` and ``manifest.json`` (per clip:
package, version, licence, native rate, measured bandwidth, the measurements behind the decision).

Splits (:func:`plan_splits`; whole speakers held out, so ``test`` is speech of voices training never
heard): ``test`` holds at least two KLettres languages (15 %) and one whole Asterisk voice (when at least
two are installed); ``test_seen_voice`` holds a tenth of the Asterisk prompts (by prompt name, for
every training voice); ``test_wideband`` is the part of ``test`` whose measured bandwidth exceeds
8 kHz (real 22.05 kHz content, none of it G.722); ``valid`` is a twentieth of each training speaker's
clips. ``valid`` and ``test`` are interleaved over speakers, so their first clips cover many voices.

Everything is deterministic: the same packages and seed give byte-identical metadata and splits.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from diffvoc.data.analysis import ASTERISK_TONES, analyse, criteria
from diffvoc.data.corpus_io import (
    FORMAT_VERSION,
    check_output,
    check_rate_and_jobs,
    corpus_output,
    metadata_line,
    progress_bar,
    write_json,
    write_splits,
    write_text,
)
from diffvoc.data.dsp import highpass, resample
from diffvoc.data.recordings import (
    KLETTRES,
    PACKAGES,
    SourceClip,
    asterisk_language,
    decode,
    discover_clips,
    ensure_packages,
    package_records,
    require_g722,
)
from diffvoc.errors import DiffvocError

__all__ = ["REAL_KIND", "REAL_SPLITS", "hash_order", "make_real_corpus", "plan_splits"]

REAL_KIND = "diffvoc-real-corpus"
_HELD_OUT_LANGUAGE_SHARE, _MIN_HELD_OUT_LANGUAGES = 0.15, 2
_HELD_OUT_MIN_CLIPS = 20  # a held-out language needs this many usable clips (when enough have)
_HELD_OUT_PROMPT_SHARE = 0.10
_VALID_SHARE, _VALID_MIN_CLIPS = 0.05, 3
_WIDEBAND_HZ = 8000.0  # above G.722's Nyquist frequency
REAL_SPLITS = ("train", "valid", "test", "test_seen_voice", "test_wideband")
_PEAK = 0.95  # written clips are peak-normalised to this, 16-bit PCM


# ----------------------------------------------------------------------------- one clip


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
    tone = task.clip.family == "asterisk" and task.clip.prompt in ASTERISK_TONES
    out = {k: v for k, v in asdict(a).items() if k not in ("start", "end", "rate")}
    out["native_rate"] = native
    out.update(trim_s=[round(a.start / native, 3), round(a.end / native, 3)], seconds=round(a.seconds, 3))
    out["reject"] = "tone" if tone else a.reject()
    if out["reject"] is None:
        clip = highpass(audio.mean(axis=1), native)[a.start: a.end]
        clip = resample(clip, native, task.rate)
        clip = clip * (_PEAK / max(float(np.max(np.abs(clip))), 1e-12))
        sf.write(task.out, clip.astype(np.float32), task.rate, subtype="PCM_16")
        out["seconds"] = round(len(clip) / task.rate, 3)
    return out


# ----------------------------------------------------------------------------- splits


def hash_order(ids: Iterable[str], seed: int, salt: str) -> list[str]:
    """``ids`` in a fixed pseudo-random order given by ``seed`` and ``salt`` (SHA-1 of each id): a prefix is a
    deterministic sample, and the sample of a smaller share is part of that of a larger one."""
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
    held_prompts = set(hash_order(prompts, seed, "prompt")[:n_prompts])
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
            valid[speaker] = hash_order(ids, seed, "valid")[: max(1, round(_VALID_SHARE * len(ids)))]
            split.update(dict.fromkeys(valid[speaker], "valid"))
    tests: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if split.get(r["id"]) == "test":
            tests[r["speaker"]].append(r["id"])
    test = _interleave({s: hash_order(ids, seed, "test") for s, ids in tests.items()})
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


# ----------------------------------------------------------------------------- the corpus


def _criteria() -> dict[str, str]:
    """The manifest's ``criteria``: those of :func:`diffvoc.data.analysis.criteria`, and how kept clips are written."""
    output = f"mono (channel mean), high-passed, trimmed, resampled with soxr HQ, peak {_PEAK}, PCM_16"
    return {**criteria(), "output": output}


def _minutes(rows: Iterable[dict[str, Any]], key: str = "seconds") -> float:
    return round(sum(float(r[key]) for r in rows) / 60, 3)


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
    packages = list(dict.fromkeys(packages or PACKAGES))
    for package in packages:
        if package != KLETTRES:
            asterisk_language(package)  # unknown names are an error before anything else
    if per_speaker is not None and per_speaker < 1:
        raise DiffvocError(f"per_speaker must be at least 1, got {per_speaker}")
    jobs = check_rate_and_jobs(rate, jobs)
    out = Path(out)
    check_output(out, REAL_KIND)
    ensure_packages(packages, install=install)
    if any(p != KLETTRES for p in packages):
        require_g722()
    clips = discover_clips(packages, per_speaker)
    if not clips:
        raise DiffvocError(f"no recordings found in the packages {', '.join(packages)}")
    info = package_records(packages)
    started = time.monotonic()
    with corpus_output(out, REAL_KIND) as tmp:
        (tmp / "wavs").mkdir()
        tasks = [_Task(c, str(tmp / "wavs" / f"{c.id}.wav"), rate) for c in clips]
        kept, rejected = [], []
        bar = progress_bar(progress, len(tasks), "clip", "real corpus")
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
        write_text(tmp / "metadata.csv", "".join(metadata_line(r, "real") for r in kept))
        write_splits(tmp, splits)
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
        write_json(tmp / "manifest.json", manifest)
    return manifest
