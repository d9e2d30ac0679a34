"""The mixed corpus: a synthetic speech corpus and a real one joined, each source's training share chosen.

:func:`make_mixed_corpus` (``diffvoc corpus mixed OUT``) joins a synthetic corpus of
:mod:`diffvoc.data.synth` and a real corpus of :mod:`diffvoc.data.real`, a configurable share of each
source's training clips (:func:`parse_shares`), keeping every held-out split of both.
:data:`BAND_LIMITED_DECISION` records whether the band-limited G.722 Asterisk prompts train by default,
and the measurement behind it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from diffvoc.data.corpus_io import (
    FORMAT_VERSION,
    check_output,
    corpus_output,
    metadata_line,
    write_json,
    write_splits,
    write_text,
)
from diffvoc.data.real import REAL_KIND, hash_order
from diffvoc.data.synth import SPEECH_KIND
from diffvoc.errors import DiffvocError

__all__ = ["BAND_LIMITED_DECISION", "MIXED_KIND", "make_mixed_corpus", "parse_shares"]

MIXED_KIND = "diffvoc-mixed-corpus"

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
    tts, real, out = Path(tts), Path(real), Path(out)
    tts_manifest = _read_manifest(tts, (SPEECH_KIND,), "synthetic speech corpus (diffvoc corpus speech)")
    real_manifest = _read_manifest(real, (REAL_KIND,), "real corpus (diffvoc corpus real)")
    if tts_manifest["rate"] != real_manifest["rate"]:
        raise DiffvocError(f"the corpora have different rates ({tts_manifest['rate']} and "
                           f"{real_manifest['rate']} Hz); build them at one rate")
    share = {"tts": 1.0, "klettres": 1.0, "asterisk": float(BAND_LIMITED_DECISION["default_asterisk_share"])}
    share.update(shares or {})
    check_output(out, MIXED_KIND)
    family = {c["id"]: c["family"] for c in real_manifest["clips"]}
    tts_rows, real_rows = _read_metadata(tts), _read_metadata(real)
    clash = sorted(set(tts_rows) & set(real_rows))
    if clash:
        raise DiffvocError(f"the corpora share clip ids (e.g. {clash[0]}); they cannot be mixed")
    tts_splits, real_splits = _read_splits(tts), _read_splits(real)

    def sample(ids: list[str], source: str) -> list[str]:
        order = hash_order(ids, seed, f"share:{source}")
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

    with corpus_output(out, MIXED_KIND) as tmp:
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
                lines.append(metadata_line({"id": rid, "text": cols[1] if len(cols) > 1 else "",
                                             "speaker": speaker}, kind))
        write_text(tmp / "metadata.csv", "".join(sorted(lines)))
        write_splits(tmp, splits)
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
        write_json(tmp / "manifest.json", manifest)
    return manifest
