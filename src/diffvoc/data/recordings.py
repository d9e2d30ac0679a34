"""Recordings of people shipped in Debian packages: the packages, their licences, the recordings, decoding.

No speech corpus can be downloaded where diffvoc is developed, but Debian ships recordings of
people inside ordinary packages:

* ``klettres-data``: letters and syllables of about twenty languages (KDE's KLettres), Ogg Vorbis,
  mostly 44.1 kHz, one speaker per language folder (``klettres:<language>``), GPL-2+;
* ``asterisk-core-sounds-<lang>-g722`` (``en``, ``es``, ``fr``, ``it``, ``ru``): telephone prompts read
  by professional speakers (Allison Smith reads en and es, June Wallack fr, Carlo Flora it, the
  ivrvoice.ru voice ru; ``asterisk:<name>``), G.722 wideband (16 kHz, about 7 kHz of bandwidth),
  CC-BY-SA-3.0 / CC-BY-3.0. The ``g722`` PyPI package decodes them.

:func:`ensure_packages` installs missing packages (as root, with apt-get), :func:`package_records` reads
their versions and licences, :func:`discover_clips` lists the recordings as :class:`SourceClip` and
:func:`decode` reads one. :mod:`diffvoc.data.real` builds the corpus from them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

from diffvoc.errors import DiffvocError

__all__ = [
    "ASTERISK_LANGUAGES",
    "KLETTRES",
    "PACKAGES",
    "SourceClip",
    "asterisk_language",
    "decode",
    "discover_clips",
    "ensure_packages",
    "missing_packages",
    "package_records",
    "package_version",
    "require_g722",
]

KLETTRES = "klettres-data"
ASTERISK_LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGES = (KLETTRES, *(f"asterisk-core-sounds-{lang}-g722" for lang in ASTERISK_LANGUAGES))
# Where the packages put their recordings (module constants, so tests can point elsewhere).
KLETTRES_DIR = Path("/usr/share/klettres")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
DOC_DIR = Path("/usr/share/doc")
_AUDIO_SUFFIXES = (".ogg", ".opus", ".wav", ".flac")
_G722_RATE, _G722_BITRATE = 16000, 64000


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
    lang = asterisk_language(package)
    if not ASTERISK_DIR.is_dir():
        return []
    return [d for d in sorted(ASTERISK_DIR.glob(f"{lang}_*")) if d.is_dir() and any(d.rglob("*.g722"))]


def asterisk_language(package: str) -> str:
    """The language of an Asterisk package (``en`` for ``asterisk-core-sounds-en-g722``).

    Raises :class:`DiffvocError` naming the known packages for any other name.
    """
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


def package_records(packages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per package: its installed ``version``, the ``licence`` and ``copyright`` holders of its recordings."""
    records = {}
    for package in packages:
        hint = "sounds/recording" if package == KLETTRES else f"{asterisk_language(package)}-core-sounds"
        licence, holders = _copyright(package, hint)
        records[package] = {"version": package_version(package) or "unknown", "licence": licence,
                            "copyright": holders}
    return records


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
    lang = asterisk_language(package)
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


# ----------------------------------------------------------------------------- decoding


def require_g722() -> ModuleType:
    """The ``G722`` module of the ``g722`` package; :class:`DiffvocError` naming pip when it is missing."""
    try:
        import G722
    except ImportError:
        raise DiffvocError("decoding the Asterisk prompts needs the g722 package: pip install g722") from None
    return G722


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a recording as float64 ``[samples, channels]`` at its native rate.

    ``.g722`` files (raw G.722 at 64 kbit/s) are decoded with the ``g722`` package; everything else
    with soundfile. Raises :class:`DiffvocError` when the file cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".g722":
        G722 = require_g722()
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

