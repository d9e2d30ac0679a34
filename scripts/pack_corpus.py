"""Pack a speech corpus (LJSpeech layout with splits/) into FLAC under a size cap, for the GPU carry.

Keeps the utterances of the non-train splits named by ``--splits`` (default: all of them; the GPU
chunk needs only ``valid``) and as many training utterances, in a fixed hash-shuffled order, as fit
in ``--max-mb`` (so a smaller cap gives a subset of a larger one: chunks packed with the same cap
train on the same audio). ``--synthetic N`` writes N short speech-like clips instead (train + one
valid clip, 22.05 kHz): the corpus of the CPU rehearsal of ``scripts/gpu_chunk.sh``, made in a second.

    python scripts/pack_corpus.py data/corpus .gpu/corpus --max-mb 14 --splits valid
    python scripts/pack_corpus.py --synthetic 8 /tmp/corpus
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import soundfile as sf


def voiced(seconds: float, sr: int, f0: float, seed: int) -> np.ndarray:
    """A speech-like test signal: harmonics of a gliding pitch, a syllable-rate envelope, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.2 * np.sin(2 * np.pi * 0.8 * t + seed))) / sr
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 20) if k * f0 < sr / 2.5)
    env = (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed)) ** 2
    return (0.3 * harmonics * env + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def synthetic(dst: Path, n: int, sr: int = 22050, seconds: float = 1.0) -> None:
    (dst / "wavs").mkdir(parents=True, exist_ok=True)
    (dst / "splits").mkdir(exist_ok=True)
    ids = [f"syn{i:03d}" for i in range(max(2, n))]
    for i, rid in enumerate(ids):
        sf.write(dst / "wavs" / f"{rid}.flac", voiced(seconds * (0.8 + 0.4 * (i % 3) / 2), sr, 110 + 15 * i, i),
                 sr, format="FLAC", subtype="PCM_16")
    (dst / "metadata.csv").write_text("".join(f"{i}|synthetic {i}|synthetic {i}|syn\n" for i in ids))
    (dst / "splits" / "valid.txt").write_text(ids[-1] + "\n")
    (dst / "splits" / "train.txt").write_text("".join(i + "\n" for i in ids[:-1]))
    print(f"{dst}: {len(ids)} synthetic utterances, {sum(sf.info(p).duration for p in (dst / 'wavs').iterdir()):.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", help="corpus in LJSpeech layout with splits/ (not with --synthetic)")
    ap.add_argument("dest")
    ap.add_argument("--max-mb", type=float, default=44.0, help="cap on the FLAC bytes, in MB (10^6 bytes)")
    ap.add_argument("--splits", default=None, help="comma-separated non-train splits to keep (default: all)")
    ap.add_argument("--synthetic", type=int, default=None, metavar="N", help="write N synthetic clips instead")
    args = ap.parse_args()
    dst = Path(args.dest)
    if dst.exists() and any(dst.iterdir()):
        sys.exit(f"pack_corpus: error: {dst} exists and is not empty; remove it first")
    if args.synthetic is not None:
        synthetic(dst, args.synthetic)
        return
    if not args.source:
        sys.exit("pack_corpus: error: give a source corpus (or --synthetic N)")
    src = Path(args.source)
    if not (src / "metadata.csv").is_file() or not (src / "splits").is_dir():
        sys.exit(f"pack_corpus: error: {src} is not a corpus in LJSpeech layout with splits/ "
                 f"(make one with `diffvoc corpus speech {src}`)")
    (dst / "wavs").mkdir(parents=True, exist_ok=True)
    (dst / "splits").mkdir(exist_ok=True)
    splits = {f.stem: f.read_text().split() for f in (src / "splits").glob("*.txt")}
    wanted = set(args.splits.split(",")) if args.splits else set(splits) - {"train"}
    meta = {l.split("|")[0]: l for l in (src / "metadata.csv").read_text().splitlines() if l}
    keep, size, seconds = [], 0, 0.0
    cap = args.max_mb * 1e6

    def add(i: str, must: bool) -> bool:
        nonlocal size, seconds
        wav = next((src / "wavs" / f"{i}{e}" for e in (".wav", ".flac") if (src / "wavs" / f"{i}{e}").is_file()), None)
        if wav is None:
            return True
        x, sr = sf.read(wav, dtype="int16")
        out = dst / "wavs" / f"{i}.flac"
        sf.write(out, x, sr, format="FLAC", subtype="PCM_16")
        n = out.stat().st_size
        if not must and size + n > cap:
            out.unlink()
            return False
        size += n
        seconds += len(x) / sr
        keep.append(i)
        return True

    for name in sorted(k for k in splits if k in wanted and k != "train"):
        for i in splits[name]:
            add(i, must=True)
    for i in sorted(splits.get("train", []), key=lambda i: hashlib.sha1(i.encode()).hexdigest()):
        if not add(i, must=False):
            break
    kept = set(keep)
    for name, ids in splits.items():
        if name == "train" or name in wanted:
            (dst / "splits" / f"{name}.txt").write_text("".join(i + "\n" for i in ids if i in kept))
    (dst / "metadata.csv").write_text("\n".join(meta[i] for i in sorted(kept)) + "\n")
    print(f"{dst}: {len(keep)} utterances, {seconds / 60:.1f} min, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
