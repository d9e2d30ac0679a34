"""What every corpus builder (speech, digits, real, mixed) shares: argument checks and the output side.

A corpus is written into a temporary folder beside the output folder and renamed into place only when
complete (:func:`corpus_output`), so an interrupted or failed build never leaves half a corpus behind and
replaces a previous corpus of the same kind only at the very end. ``manifest.json`` names the corpus kind;
an output folder that is neither new, empty nor a previous corpus of that kind is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffvoc.errors import DiffvocError

__all__ = [
    "FORMAT_VERSION",
    "check_output",
    "check_rate_and_jobs",
    "corpus_output",
    "metadata_line",
    "progress_bar",
    "write_json",
    "write_splits",
    "write_text",
]

FORMAT_VERSION = 1  # of every corpus's layout and manifest


def check_rate_and_jobs(rate: int, jobs: int | None) -> int:
    """Check the sample rate and the number of worker processes; return the workers (default: all CPUs)."""
    if not 8000 <= rate <= 96000:
        raise DiffvocError(f"rate must be between 8000 and 96000 Hz, got {rate}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise DiffvocError(f"jobs must be at least 1, got {jobs}")
    return jobs


def progress_bar(enabled: bool, total: float, unit: str, desc: str):
    """A tqdm bar over ``total`` ``unit``s (silent when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True)


# --------------------------------------------------------------------------- output folder


def _corpus_kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def check_output(out: Path, kind: str) -> None:
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
    """Check ``out`` again and make a fresh temporary folder beside it; one-line errors for unwritable places."""
    check_output(out, kind)
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise DiffvocError(f"cannot write {out}: {existing} is not a writable folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise DiffvocError(f"cannot write {out}: {exc.strerror}") from None
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


@contextmanager
def corpus_output(out: Path, kind: str) -> Iterator[Path]:
    """Write a corpus of ``kind`` atomically: ``with corpus_output(out, kind) as tmp: ...``.

    Checks ``out`` (:func:`check_output`) and yields a fresh temporary folder beside it; when the block
    ends normally the folder replaces ``out`` (a previous corpus only now), on any exception (interrupts
    included) it is removed and the exception goes on. Raises :class:`DiffvocError` when ``out`` cannot
    be written.
    """
    tmp = _start_output(out, kind)
    try:
        yield tmp
        _finish_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- files


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented UTF-8 JSON (a manifest), ending in a newline."""
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 with "\\n" line ends on every platform."""
    path.write_bytes(text.encode("utf-8"))


def write_splits(folder: Path, splits: dict[str, list[str]]) -> None:
    """Write ``folder/splits/<name>.txt``, one id a line, for every split in ``splits``."""
    (folder / "splits").mkdir()
    for name, ids in splits.items():
        write_text(folder / "splits" / f"{name}.txt", "".join(f"{i}\n" for i in ids))


def metadata_line(row: dict[str, Any], kind: str) -> str:
    """One ``metadata.csv`` row, ``id|text|text|speaker|kind``, of a real or mixed corpus (text on one line)."""
    text = " ".join(str(row.get("text", "")).replace("|", "/").split())
    return f"{row['id']}|{text}|{text}|{row['speaker']}|{kind}\n"
