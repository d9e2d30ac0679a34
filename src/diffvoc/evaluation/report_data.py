"""Inputs of ``diffvoc report``: the results, generated-sample and training-curve data the page is built from.

Reads a ``diffvoc evaluate`` results JSON (and locates its saved audio), folders of generated wav
files with their captions, ``benchmarks/generation.py`` results and a run's TensorBoard scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import DiffvocError
from diffvoc.evaluation.results import check_results
from diffvoc.io import load_json

CURVE_TAGS_PREFIX = ("valid/",)
CURVE_TAGS = ("train/loss",)


@dataclass
class Results:
    """One results JSON with the folder its saved audio is in (``None`` when there is none)."""

    path: Path
    data: dict[str, Any]
    audio_dir: Path | None


@dataclass
class Column:
    """A system shown in the samples table."""

    label: str
    kind: str
    results: Results
    system: dict[str, Any]
    cells: dict[str, dict[str, str]] = field(default_factory=dict)  # utterance id -> {audio, image}


@dataclass
class GeneratedSet:
    """A folder of generated clips: ``clips`` are (wav file, caption), in file-name order."""

    name: str
    folder: Path
    clips: list[tuple[Path, str]]
    cells: list[dict[str, str]] = field(default_factory=list)  # per clip: {audio, image, caption}


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing, undecodable or unparsable one is a one-line :class:`DiffvocError`."""
    return load_json(path, what)


def load_results(path: str | Path) -> Results:
    """Read a ``diffvoc evaluate`` results JSON (its shape checked: :func:`check_results`) and locate its
    saved audio."""
    path = Path(path)
    data = check_results(_read_json(path, "results file"), path)
    meta = data["meta"]
    audio_dir = None
    for cand in (meta.get("save_audio_relative"), meta.get("save_audio")):
        if cand and isinstance(cand, str) and (path.resolve().parent / cand).is_dir():
            audio_dir = (path.resolve().parent / cand).resolve()
            break
    return Results(path, data, audio_dir)


def _caption(stem: str) -> str:
    """``3_0007`` -> ``"three" (label 3) #7``; ``uncond_0002`` -> ``unconditional #2``; else the stem."""
    head, _, tail = stem.rpartition("_")
    if head and tail.isdigit():
        if head == "uncond":
            return f"unconditional #{int(tail)}"
        if head.isdigit() and int(head) < len(DIGIT_WORDS):
            return f"“{DIGIT_WORDS[int(head)]}” (label {int(head)}) #{int(tail)}"
    return stem


def load_generated(spec: str | Path, limit: int = 10) -> GeneratedSet:
    """``[NAME=]DIR``: the first ``limit`` wav files of DIR (named after the folder without NAME)."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, folder = (part.strip() for part in text.split("=", 1))
    else:
        name, folder = Path(text).resolve().name, text
    path = Path(folder)
    where = f"--generated {text}" + (f" ({path})" if str(path) != text else "")
    if not path.is_dir():
        raise DiffvocError(f"{where}: no such folder")
    wavs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise DiffvocError(f"{where}: no .wav files in that folder")
    return GeneratedSet(name or path.resolve().name, path, [(w, _caption(w.stem)) for w in wavs[:max(limit, 0)]])


def load_generation_results(path: str | Path) -> dict[str, Any]:
    """A results JSON of ``benchmarks/generation.py`` (``{"meta", "rows", ...}``)."""
    path = Path(path)
    data = _read_json(path, "generation results file")
    if not (isinstance(data, dict) and isinstance(data.get("rows"), list) and isinstance(data.get("meta"), dict)
            and all(isinstance(r, dict) and "system" in r for r in data["rows"])):
        raise DiffvocError(f"{path} is not a results file of benchmarks/generation.py")
    return data


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``train/loss`` and ``valid/*`` scalars of a run's TensorBoard logs: tag -> [(step, value)].

    Several event files (a resumed run) are read together; a step logged twice keeps its last value.
    """
    run = Path(run_dir)
    logs = run / "logs"
    if not logs.is_dir() or not any(p.name.startswith("events.out.tfevents") for p in logs.iterdir()):
        raise DiffvocError(f"{run}: no TensorBoard logs (expected event files in {logs})")
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(logs), size_guidance={SCALARS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get(SCALARS, []):
        if tag in CURVE_TAGS or tag.startswith(CURVE_TAGS_PREFIX):
            by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
            out[tag] = sorted(by_step.items())
    return out
