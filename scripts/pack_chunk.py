"""Pack a GPU chunk's result into $OUT within the device tool's return limits (called by gpu_chunk.sh's exit trap).

    python3 scripts/pack_chunk.py RUN_DIR OUT [--log train.log] [--info a.json ...] [--set key=value ...]

What comes back (at most 8 files of at most 16 MiB, 64 MiB in all, at the top of OUT, names of letters,
digits, '.', '_' and '-')::

    run.tar.00, run.tar.01, ...   one uncompressed tar, in parts of 15 MiB: RUN_DIR/latest, the checkpoint it
                                  names (EMA + raw weights + Adam state: exact resume), valid.jsonl, config.yaml
                                  and logs/ (TensorBoard); what is dropped when that would not fit is named in
                                  chunk.json ("dropped"): first logs/, then the training state (then it only vocodes)
    chunk.json                    the summary: status, device, steps, steps/s, samples/s, peak memory, phase
                                  times, and the size and sha256 of every part and of the whole tar
    valid.jsonl, train.log        readable without unpacking (their last MiB)

``scripts/unpack_chunk.py OUT RUN_DIR`` checks the parts against chunk.json and restores the run. Only the
standard library is used, so the trap packs even when the Python environment is what failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import tarfile
import time
from pathlib import Path

FORMAT = "diffvoc-gpu-chunk"
VERSION = 1
MIB = 1 << 20
PART_BYTES = 15 * MIB  # the device returns files of at most 16 MiB
MAX_FILES, MAX_FILE, MAX_TOTAL = 8, 16 * MIB, 64 * MIB
LOOSE_CAP = MIB  # valid.jsonl and train.log: their last MiB
SUMMARY_RESERVE = 256 * 1024
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
TRAIN_STATE = ("model_raw.safetensors", "train_state.safetensors", "train_state.json",
               "generator_raw.safetensors", "discriminator.safetensors")


class _Parts(io.RawIOBase):
    """A write-only file that cuts what is written into ``run.tar.NN`` parts of ``size`` bytes, hashing them."""

    def __init__(self, out: Path, size: int = PART_BYTES) -> None:
        self.out, self.size = out, size
        self.parts: list[dict] = []
        self.whole = hashlib.sha256()
        self._f = None
        self._h = None
        self._n = 0

    def writable(self) -> bool:
        return True

    def _next(self) -> None:
        self._close_part()
        name = f"run.tar.{len(self.parts):02d}"
        self._f, self._h, self._n = open(self.out / name, "wb"), hashlib.sha256(), 0
        self.parts.append({"name": name})

    def _close_part(self) -> None:
        if self._f is not None:
            self._f.close()
            self.parts[-1].update(bytes=self._n, sha256=self._h.hexdigest())
            self._f = None

    def write(self, b) -> int:
        b = memoryview(b).cast("B")
        self.whole.update(b)
        done = 0
        while done < len(b):
            if self._f is None or self._n >= self.size:
                self._next()
            k = min(len(b) - done, self.size - self._n)
            self._f.write(b[done:done + k])
            self._h.update(b[done:done + k])
            self._n += k
            done += k
        return len(b)

    def close(self) -> None:
        self._close_part()
        super().close()


def _tar_bytes(files: list[tuple[Path, str]]) -> int:
    """Bytes of an uncompressed tar of ``files`` (headers, 512-byte padding, end blocks, record padding)."""
    n = sum(512 + -(-f.stat().st_size // 512) * 512 + (512 * 3 if len(a) > 99 else 0) for f, a in files) + 1024
    return -(-n // 10240) * 10240


def _members(run: Path, ckpt: str | None, drop: set[str]) -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []
    if ckpt is not None:
        files.append((run / "latest", "latest"))
        for f in sorted((run / ckpt).iterdir()):
            if f.is_file() and not ("train_state" in drop and f.name in TRAIN_STATE):
                files.append((f, f"{ckpt}/{f.name}"))
    for name in ("valid.jsonl", "config.yaml"):
        if (run / name).is_file():
            files.append((run / name, name))
    if "logs" not in drop and (run / "logs").is_dir():
        files += [(f, f.relative_to(run).as_posix()) for f in sorted((run / "logs").rglob("*")) if f.is_file()]
    return files


def _tail(src: Path, dst: Path, cap: int = LOOSE_CAP) -> None:
    with open(src, "rb") as f:
        f.seek(max(0, src.stat().st_size - cap))
        dst.write_bytes(f.read())


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _throughput(summary: dict, info: dict) -> None:
    """steps/s and samples/s from the trainer wrapper's timings (train_step calls), else from the process."""
    start, end = summary.get("start_step"), summary.get("end_step")
    if start is None or end is None:
        return
    summary["steps"] = end - start
    batch = info.get("batch_size")
    loop = info.get("loop")  # first and last train_step of this chunk: (step, time)
    if loop and loop.get("steps", 0) > 1 and loop.get("seconds", 0) > 0:
        sps = loop["steps"] / loop["seconds"]
        summary["steps_per_s"] = round(sps, 3)
        summary["steps_per_s_source"] = "train loop (first to last step of this chunk, validation and saves included)"
    elif info.get("trainer_seconds"):
        sps = (end - start) / info["trainer_seconds"]
        summary["steps_per_s"] = round(sps, 3)
        summary["steps_per_s_source"] = "trainer process (start-up and final save included)"
    else:
        return
    if batch:
        summary["samples_per_s"] = round(sps * batch, 2)
        if info.get("crop_frames") and info.get("hop_length"):
            summary["audio_seconds_per_s"] = round(sps * batch * info["crop_frames"] * info["hop_length"]
                                                   / info["sample_rate"], 2)


def pack(run: Path, out: Path, log: Path | None = None, infos: list[Path] = (), extra: dict | None = None,
         part_bytes: int = PART_BYTES) -> dict:
    """Write the parts, valid.jsonl, train.log and chunk.json into ``out``; returns the summary."""
    part_bytes = max(64 * 1024, min(int(part_bytes), PART_BYTES))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("run.tar.*"):
        old.unlink()
    summary: dict = {"format": FORMAT, "version": VERSION, "packed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    info: dict = {}
    for p in infos:
        info.update(_read_json(p))
    summary.update(info)
    summary.update(extra or {})
    ckpt = None
    if (run / "latest").is_file():
        name = (run / "latest").read_text().strip()
        if name and (run / name / "config.yaml").is_file() and (run / name / "model.safetensors").is_file():
            ckpt = name
        else:
            summary.setdefault("notes", []).append(f"{run}/latest names {name!r}, which is not a checkpoint")
    loose = [n for n in ("valid.jsonl",) if (run / n).is_file()] + (["train.log"] if log and log.is_file() else [])
    budget_files = MAX_FILES - 1 - len(loose)
    budget_bytes = MAX_TOTAL - SUMMARY_RESERVE - len(loose) * LOOSE_CAP
    dropped: list[str] = []
    files = _members(run, ckpt, set())
    for drop in ("logs", "train_state"):
        size = _tar_bytes(files)
        if size <= budget_bytes and -(-size // part_bytes) <= budget_files:
            break
        dropped.append(drop)
        files = _members(run, ckpt, set(dropped))
    size = _tar_bytes(files)
    if size > budget_bytes or -(-size // part_bytes) > budget_files:
        dropped.append("checkpoint")
        files = _members(run, None, set(dropped))
    parts = _Parts(out, part_bytes)
    with tarfile.open(fileobj=parts, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for f, arc in files:
            ti = tar.gettarinfo(str(f), arcname=arc)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            with open(f, "rb") as fh:
                tar.addfile(ti, fh)
    parts.close()
    summary["checkpoint"] = ckpt if "checkpoint" not in dropped else None
    summary["resumable"] = ckpt is not None and not {"train_state", "checkpoint"} & set(dropped)
    summary["dropped"] = dropped
    summary["parts"] = parts.parts
    summary["part_bytes"] = part_bytes
    summary["tar"] = {"bytes": sum(p["bytes"] for p in parts.parts), "sha256": parts.whole.hexdigest(),
                      "members": [a for _, a in files]}
    valid = []
    if (run / "valid.jsonl").is_file():
        _tail(run / "valid.jsonl", out / "valid.jsonl")
        for line in (run / "valid.jsonl").read_text().splitlines():
            try:
                valid.append(json.loads(line))
            except ValueError:
                pass
    if valid:
        summary["last_valid"] = valid[-1]
    if log and log.is_file():
        _tail(log, out / "train.log")
    if ckpt is not None:
        meta = _read_json(run / ckpt / "train_state.json")
        if "step" in meta:
            summary["end_step"] = int(meta["step"])
    _throughput(summary, info)
    (out / "chunk.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")  # for the listing
    listing = sorted(out.iterdir())
    problems = [p.name for p in listing if not p.is_file() or not NAME.match(p.name) or p.stat().st_size > MAX_FILE]
    total = sum(p.stat().st_size for p in listing if p.is_file())
    summary["return_files"] = [{"name": p.name, "bytes": p.stat().st_size} for p in listing if p.is_file()]
    summary["return_limits_ok"] = not problems and len(listing) <= MAX_FILES and total <= MAX_TOTAL
    if problems:
        summary["return_problems"] = problems
    (out / "chunk.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the chunk's run directory")
    ap.add_argument("out", type=Path, help="$OUT")
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--info", type=Path, action="append", default=[], help="JSON files merged into the summary")
    ap.add_argument("--part-mib", type=float, default=PART_BYTES / MIB, help="part size (at most 15 MiB)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra summary entries (VALUE parsed as JSON when it parses)")
    args = ap.parse_args()
    extra = {}
    for kv in args.sets:
        k, _, v = kv.partition("=")
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    s = pack(args.run, args.out, args.log, args.info, extra, int(args.part_mib * MIB))
    parts = ", ".join(f"{p['name']} {p['bytes'] / MIB:.1f} MiB" for p in s["parts"])
    print(f"packed {s.get('checkpoint') or 'no checkpoint'} into {args.out} ({parts}; "
          f"dropped: {', '.join(s['dropped']) or 'nothing'}; return limits {'ok' if s['return_limits_ok'] else 'EXCEEDED'})")


if __name__ == "__main__":
    main()
