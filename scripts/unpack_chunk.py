"""Restore a GPU chunk's run from what came back in $OUT (see scripts/gpu_chunk.sh and pack_chunk.py).

    python scripts/unpack_chunk.py OUT RUN_DIR [--no-load-check]

Checks every ``run.tar.NN`` part against the sizes and sha256 in ``OUT/chunk.json``, unpacks the tar beside
RUN_DIR, checks that the checkpoint loads (``diffvoc.checkpoint.load_checkpoint``, with its training state),
and only then puts it in place:

* RUN_DIR absent or empty: the unpacked run is renamed into place (one rename).
* RUN_DIR is the run this chunk continued (its ``latest`` names the checkpoint the chunk resumed from, with
  the same EMA weights): the new checkpoint, this chunk's TensorBoard files, valid.jsonl and config.yaml are
  added, and ``latest`` is replaced last, so an interruption leaves the previous state intact.
* RUN_DIR already names this chunk's checkpoint: nothing to do.
* Anything else (another run, a newer or diverged run, a leftover checkpoint of that name): refused with one
  line on stderr and exit status 2; RUN_DIR is left as it was.

Afterwards ``Vocoder.from_pretrained(RUN_DIR)`` loads the chunk's EMA weights and
``diffvoc train RECIPE --run-dir RUN_DIR --resume`` continues it; ``bash scripts/prepare_chunk.sh RUN_DIR``
makes the next chunk's carry from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

FORMAT = "diffvoc-gpu-chunk"


class ChunkError(Exception):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Joined:
    """The parts, read one after the other as one file (for tarfile's stream mode)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.f = list(paths), None

    def read(self, n: int = -1) -> bytes:
        chunks = []
        while n != 0:
            if self.f is None:
                if not self.paths:
                    break
                self.f = open(self.paths.pop(0), "rb")
            b = self.f.read(n if n > 0 else -1)
            if not b:
                self.f.close()
                self.f = None
                continue
            chunks.append(b)
            if n > 0:
                n -= len(b)
        return b"".join(chunks)


def read_summary(out: Path) -> dict:
    p = out / "chunk.json"
    if not p.is_file():
        raise ChunkError(f"{out} has no chunk.json (not what scripts/gpu_chunk.sh leaves in $OUT)")
    try:
        s = json.loads(p.read_text())
    except ValueError as e:
        raise ChunkError(f"{p} is not valid JSON ({e})") from None
    if s.get("format") != FORMAT:
        raise ChunkError(f"{p} is not a diffvoc GPU chunk summary")
    return s


def verify_parts(out: Path, s: dict) -> list[Path]:
    parts, whole = [], hashlib.sha256()
    for part in s.get("parts", []):
        p = out / part["name"]
        if not p.is_file():
            raise ChunkError(f"{p} is missing (chunk.json lists {len(s['parts'])} parts)")
        if p.stat().st_size != part["bytes"]:
            raise ChunkError(f"{p}: {p.stat().st_size} bytes, chunk.json says {part['bytes']} (incomplete transfer?)")
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise ChunkError(f"{p}: sha256 differs from chunk.json (damaged in transfer)")
        whole.update(data)
        parts.append(p)
    extra = sorted({q.name for q in out.glob("run.tar.*")} - {p.name for p in parts})
    if extra:
        raise ChunkError(f"{out} holds parts that chunk.json does not list ({', '.join(extra)}): a mix of two chunks?")
    if not parts or whole.hexdigest() != s.get("tar", {}).get("sha256"):
        raise ChunkError(f"{out}: the parts do not add up to the tar chunk.json describes")
    return parts


def extract(parts: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=_Joined(parts), mode="r|") as tar:
        for m in tar:
            name = Path(m.name)
            if name.is_absolute() or ".." in name.parts or not (m.isfile() or m.isdir()):
                raise ChunkError(f"unsafe tar member {m.name!r}")
            target = dest / name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            with open(target, "wb") as f:
                shutil.copyfileobj(src, f)


def check_unpacked(tmp: Path, s: dict, load: bool) -> str:
    ckpt = s.get("checkpoint")
    if not ckpt:
        raise ChunkError(f"this chunk brought back no checkpoint (status {s.get('status')!r}; see train.log)")
    if not (tmp / "latest").is_file() or (tmp / "latest").read_text().strip() != ckpt:
        raise ChunkError(f"the tar's latest does not name {ckpt}")
    need = ["config.yaml", "model.safetensors"] + (["model_raw.safetensors", "train_state.json",
                                                    "train_state.safetensors"] if s.get("resumable") else [])
    missing = [n for n in need if not (tmp / ckpt / n).is_file()]
    if missing:
        raise ChunkError(f"{ckpt} lacks {', '.join(missing)}")
    if load:
        try:
            from diffvoc.checkpoint import load_checkpoint
            from diffvoc.errors import DiffvocError
        except ImportError:
            print("unpack_chunk: diffvoc is not importable here; the load check is skipped", file=sys.stderr)
            return ckpt
        try:
            load_checkpoint(tmp, with_train_state=bool(s.get("resumable")))
        except DiffvocError as e:
            raise ChunkError(f"the unpacked checkpoint does not load: {e}") from None
    return ckpt


def _is_empty(d: Path) -> bool:
    return d.is_dir() and not any(d.iterdir())


def install(tmp: Path, run: Path, s: dict, ckpt: str) -> str:
    """Put the unpacked run ``tmp`` in place at ``run``; returns what was done."""
    if not run.exists() or _is_empty(run):
        if run.exists():
            run.rmdir()
        os.rename(tmp, run)
        return f"restored {ckpt}"
    if not (run / "latest").is_file():
        raise ChunkError(f"{run} exists and is not a run directory (no latest); unpack into a new folder")
    cur = (run / "latest").read_text().strip()
    if cur == ckpt and (run / ckpt / "model.safetensors").is_file():
        if _sha256(run / ckpt / "model.safetensors") != _sha256(tmp / ckpt / "model.safetensors"):
            raise ChunkError(f"{run}/{ckpt} differs from this chunk's {ckpt}: another run? unpack into a new folder")
        shutil.rmtree(tmp)
        return f"already at {ckpt}, nothing to do"
    prev = s.get("resumed_from") or {}
    if cur != prev.get("checkpoint"):
        what = f"continued {prev['checkpoint']}" if prev.get("checkpoint") else "started a new run"
        raise ChunkError(f"{run} is at {cur}, but this chunk {what}; unpack into a new folder")
    if prev.get("model_sha256") and (not (run / cur / "model.safetensors").is_file()
                                     or _sha256(run / cur / "model.safetensors") != prev["model_sha256"]):
        raise ChunkError(f"{run}/{cur} is not the checkpoint this chunk continued (other weights); "
                         "unpack into a new folder")
    if (run / ckpt).exists():
        raise ChunkError(f"{run} already has {ckpt}, which its latest does not name (an interrupted unpack or "
                         "another run?); remove it or unpack into a new folder")
    os.rename(tmp / ckpt, run / ckpt)
    for f in sorted((tmp / "logs").rglob("*")) if (tmp / "logs").is_dir() else []:
        if f.is_file():
            dst = run / f.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dst)
    for name in ("valid.jsonl", "config.yaml"):
        if (tmp / name).is_file():
            os.replace(tmp / name, run / name)
    os.replace(tmp / "latest", run / "latest")  # the commit point
    shutil.rmtree(tmp)
    return f"updated from {cur} to {ckpt}"


def unpack(out: Path, run: Path, load: bool = True) -> tuple[str, dict]:
    s = read_summary(out)
    if not s.get("checkpoint"):
        raise ChunkError(f"this chunk brought back no checkpoint (status {s.get('status')!r}; see {out}/train.log)")
    parts = verify_parts(out, s)
    run = run.absolute()
    run.parent.mkdir(parents=True, exist_ok=True)
    tmp = run.parent / f".{run.name}.unpack-{os.getpid()}"
    try:
        extract(parts, tmp)
        ckpt = check_unpacked(tmp, s, load)
        return install(tmp, run, s, ckpt), s
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder the chunk's $OUT files came back to")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--no-load-check", action="store_true", help="do not load the checkpoint before installing it")
    args = ap.parse_args()
    try:
        done, s = unpack(args.out, args.run_dir, load=not args.no_load_check)
    except (ChunkError, OSError, tarfile.TarError) as e:
        msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
        print(f"unpack_chunk: error: {msg}", file=sys.stderr)
        return 2
    steps = f"step {s.get('end_step')}" + (f", +{s['steps']} in this chunk" if s.get("steps") is not None else "")
    print(f"{args.run_dir}: {done} ({steps}; "
          f"{'resumable' if s.get('resumable') else 'NOT resumable: ' + ', '.join(s.get('dropped', []))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
