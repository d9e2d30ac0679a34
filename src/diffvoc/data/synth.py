"""Synthetic corpora spoken by the open text-to-speech engines packaged by Debian (flite, festival, espeak-ng).

No speech corpus can be downloaded where diffvoc is developed and tested, so diffvoc makes its own:

* :func:`make_speech_corpus` writes a multi-speaker English corpus in LJSpeech layout
  (``wavs/<id>.wav``, ``metadata.csv`` with ``id|text|text|speaker``), sentence-disjoint
  train/valid/test splits plus a ``test_unseen_voice`` split spoken by one held-out voice,
  and ``manifest.json`` with every utterance's engine, voice, engine version and settings.
* :func:`make_digits_corpus` writes one-second spoken digits (zero to nine) in an SC09-like
  layout ``<split>/<word>/<id>.wav`` whose test split is spoken by held-out voices.

Both corpora are deterministic: the same seed and the same installed engines give the same ids,
texts, voices and settings (the audio itself may differ between engine versions). The voices come
from :mod:`diffvoc.data.voices`; :mod:`diffvoc.data.engines` renders the clips in a process pool; a
corpus is written into a temporary folder beside the output folder and renamed into place only when
complete (:func:`diffvoc.data.corpus_io.corpus_output`). ``diffvoc corpus speech|digits`` is the
command line.
"""

from __future__ import annotations

import itertools
import random
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffvoc.data.corpus_io import (
    FORMAT_VERSION,
    check_output,
    check_rate_and_jobs,
    corpus_output,
    progress_bar,
    write_json,
    write_splits,
    write_text,
)
from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.data.engines import (
    PEAK,
    SPEECH_MARGIN_S,
    SPEECH_TRIM_DB,
    FailureGuard,
    Job,
    engine_args,
    ordered_map,
    render,
)
from diffvoc.data.voices import ENGINES, FLITE_EXCLUDED, Voice, engine_versions, find_voices, hold_out_voices
from diffvoc.errors import DiffvocError

__all__ = [
    "DIGITS_KIND",
    "SENTENCES_PATH",
    "SPEECH_KIND",
    "load_sentences",
    "make_digits_corpus",
    "make_speech_corpus",
]

SPEECH_KIND = "diffvoc-speech-corpus"
DIGITS_KIND = "diffvoc-digits-corpus"
SENTENCES_PATH = Path(__file__).parents[1] / "assets" / "sentences.txt"

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
_DIGITS_TRIM_DB, _DIGITS_MARGIN_S = 40.0, 0.03  # light trimming (see SPEECH_TRIM_DB), a shorter margin


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


# --------------------------------------------------------------------------- plans and manifests


@dataclass(frozen=True)
class _Take:
    """One clip of a plan: ``voice`` says ``text`` (a sentence, or a digit's word) for ``split``."""

    id: str
    text: str
    voice: Voice
    split: str
    tempo: float
    pitch: float | None  # None: the voice has no pitch control


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return round(rng.uniform(*bounds), 3)


def _voice_summary(voices: list[Voice], held_out: list[Voice], rows: list[dict]) -> list[dict]:
    """The manifest's ``voices``: every voice found, whether it is held out, and what it spoke in ``rows``."""
    summary = []
    for voice in voices:
        mine = [r for r in rows if r["speaker"] == voice.id]
        summary.append({
            "id": voice.id,
            "engine": voice.engine,
            "voice": voice.name,
            "family": voice.family,
            "pitch_control": voice.pitch_control,
            "held_out": voice in held_out,
            "native_rate": mine[0]["native_rate"] if mine else None,
            "clips": len(mine),
            "seconds": round(sum(r["seconds"] for r in mine), 3),
        })
    return summary


# --------------------------------------------------------------------------- speech corpus


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
        yield _Take(
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
    jobs = check_rate_and_jobs(rate, jobs)
    out = Path(out)
    check_output(out, SPEECH_KIND)
    voices = find_voices()
    sentences = load_sentences()
    if len(sentences) < 20:
        raise DiffvocError(f"the sentence list has only {len(sentences)} sentences")
    held_out = hold_out_voices(voices, 1, random.Random(f"{seed}:held-out"))[0]
    versions = engine_versions(v.engine for v in voices)

    started = time.monotonic()
    with corpus_output(out, SPEECH_KIND) as tmp:
        wavs = tmp / "wavs"
        wavs.mkdir()

        def job_for(utt: _Take) -> Job:
            args = engine_args(utt.voice, utt.tempo, utt.pitch)
            path = str(wavs / f"{utt.id}.wav")
            trim = {"top_db": SPEECH_TRIM_DB, "margin_s": SPEECH_MARGIN_S}
            return Job(path, utt.voice.engine, args, utt.text, rate, **trim, clip_s=None)

        plan = ((utt, job_for(utt)) for utt in _speech_plan(sentences, voices, held_out, seed))
        rows, skipped, total, guard = [], [], 0.0, FailureGuard()
        bar = progress_bar(progress, round(minutes * 60), "s", "speech corpus")
        with bar, closing(ordered_map(render, plan, jobs)) as results:
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

        write_text(tmp / "metadata.csv", "".join(f"{r['id']}|{r['text']}|{r['text']}|{r['speaker']}\n" for r in rows))
        split_names = ("train", "valid", "test", "test_unseen_voice")
        write_splits(tmp, {name: [r["id"] for r in rows if r["split"] == name] for name in split_names})
        manifest = {
            "kind": SPEECH_KIND,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "rate": rate,
            "target_minutes": minutes,
            "engines": versions,
            "held_out_voice": held_out.id,
            "excluded_flite_voices": FLITE_EXCLUDED,
            "processing": {
                "dc_highpass_hz": 30.0,
                "trim_top_db": SPEECH_TRIM_DB,
                "trim_margin_s": SPEECH_MARGIN_S,
                "peak": PEAK,
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
        write_json(tmp / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- digits corpus


def _digits_path(clip: _Take) -> str:
    return f"{clip.split}/{clip.text}/{clip.id}.wav"


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
    jobs = check_rate_and_jobs(rate, jobs)
    out = Path(out)
    check_output(out, DIGITS_KIND)
    voices = find_voices()
    n_test = max(1, round(_DIGITS_TEST_VOICE_SHARE * len(voices)))
    held_out = hold_out_voices(voices, n_test, random.Random(f"{seed}:held-out-digits"))
    versions = engine_versions(v.engine for v in voices)

    rng = random.Random(f"{seed}:digits-plan")
    plan = []
    for v_index, voice in enumerate(voices):
        for word in DIGIT_WORDS:
            for take in range(n_per_class_per_voice):
                tempo, pitch = _uniform(rng, _DIGITS_TEMPO), _uniform(rng, _DIGITS_PITCH)
                in_valid = rng.random() < _DIGITS_VALID_SHARE
                split = "test" if voice in held_out else ("valid" if in_valid else "train")
                pitch = pitch if voice.pitch_control else None
                plan.append(_Take(f"v{v_index:03d}_{take:03d}", word, voice, split, tempo, pitch))

    started = time.monotonic()
    with corpus_output(out, DIGITS_KIND) as tmp:
        for split in ("train", "valid", "test"):
            for word in DIGIT_WORDS:
                (tmp / split / word).mkdir(parents=True)

        def job_for(clip: _Take) -> Job:
            args = engine_args(clip.voice, clip.tempo, clip.pitch)
            trim = {"top_db": _DIGITS_TRIM_DB, "margin_s": _DIGITS_MARGIN_S}
            return Job(
                str(tmp / _digits_path(clip)), clip.voice.engine, args, clip.text, rate, **trim, clip_s=1.0
            )

        items = [(clip, job_for(clip)) for clip in plan]
        clips, skipped, guard = [], [], FailureGuard()
        bar = progress_bar(progress, len(plan), "clip", "digits corpus")
        with bar, closing(ordered_map(render, items, jobs)) as results:
            for clip, job, done in results:
                guard.record(done)
                bar.update(1)
                record = {
                    "id": clip.id,
                    "path": _digits_path(clip),
                    "word": clip.text,
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
                "peak": PEAK,
                "clip_seconds": 1.0,
                "format": "PCM_16 mono",
            },
            "totals": {
                "clips": len(clips),
                "minutes": round(sum(c["seconds"] for c in clips) / 60, 3),
                "voices": len({c["speaker"] for c in clips}),
                "skipped": len(skipped),
                "cropped": sum(c["cropped"] for c in clips),
                "splits": {s: sum(c["split"] == s for c in clips) for s in ("train", "valid", "test")},
                "seconds_to_make": round(time.monotonic() - started, 1),
                "jobs": jobs,
            },
            "voices": _voice_summary(voices, held_out, clips),
            "skipped": skipped,
            "clips": clips,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest
