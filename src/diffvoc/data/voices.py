"""The English voices of the open text-to-speech engines packaged by Debian: flite, festival, espeak-ng.

:func:`find_voices` lists every usable voice of the installed engines in a fixed order;
:func:`hold_out_voices` picks, from that order and a seeded generator, the voices a corpus keeps out of
training; :func:`engine_versions` reads the engines' versions for the manifests. :mod:`diffvoc.data.engines`
makes the engines speak.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from diffvoc.errors import DiffvocError

__all__ = [
    "APT_INSTALL",
    "ENGINES",
    "FLITE_EXCLUDED",
    "SUBPROCESS_TIMEOUT_S",
    "Voice",
    "engine_versions",
    "find_voices",
    "hold_out_voices",
]

APT_INSTALL = (
    "apt-get install -y flite festival festvox-kallpc16k festvox-kdlpc16k "
    "festvox-us-slt-hts espeak-ng"
)
ENGINES = ("flite", "festival", "espeak-ng")  # fixed order: it decides held-out voices
SUBPROCESS_TIMEOUT_S = 60.0

#: flite's built-in voices that are not general-purpose speakers.
FLITE_EXCLUDED = {
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


def _run_text(cmd: list[str], stdin: str | None = None) -> str:
    """Run ``cmd`` and return stdout + stderr; empty string when it cannot run."""
    try:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
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
        if name not in FLITE_EXCLUDED
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


def engine_versions(engines: Iterable[str]) -> dict[str, str]:
    """The version each of ``engines`` reports (``unknown`` when it reports none), by engine name."""
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


def hold_out_voices(voices: list[Voice], count: int, rng: random.Random) -> list[Voice]:
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
