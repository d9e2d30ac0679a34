"""Pack a speech corpus (LJSpeech layout with splits/) into FLAC under a size cap, for the GPU carry.

Keeps every valid/test/held-out-voice utterance and as many training utterances (in a fixed,
hash-shuffled order) as fit in ``--max-mb``.

    python scripts/pack_corpus.py data/corpus .gpu/corpus --max-mb 44
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import soundfile as sf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("dest")
    ap.add_argument("--max-mb", type=float, default=44.0)
    args = ap.parse_args()
    src, dst = Path(args.source), Path(args.dest)
    (dst / "wavs").mkdir(parents=True, exist_ok=True)
    (dst / "splits").mkdir(exist_ok=True)
    splits = {f.stem: f.read_text().split() for f in (src / "splits").glob("*.txt")}
    meta = {l.split("|")[0]: l for l in (src / "metadata.csv").read_text().splitlines() if l}
    keep, size, seconds = [], 0, 0.0

    def add(i: str) -> None:
        nonlocal size, seconds
        x, sr = sf.read(src / "wavs" / f"{i}.wav", dtype="int16")
        out = dst / "wavs" / f"{i}.flac"
        sf.write(out, x, sr, format="FLAC", subtype="PCM_16")
        size += out.stat().st_size
        seconds += len(x) / sr
        keep.append(i)

    for name in sorted(k for k in splits if k != "train"):
        for i in splits[name]:
            add(i)
    for i in sorted(splits.get("train", []), key=lambda i: hashlib.sha1(i.encode()).hexdigest()):
        if size > args.max_mb * 1e6:
            break
        add(i)
    kept = set(keep)
    for name, ids in splits.items():
        (dst / "splits" / f"{name}.txt").write_text("\n".join(i for i in ids if i in kept) + "\n")
    (dst / "metadata.csv").write_text("\n".join(meta[i] for i in sorted(kept)) + "\n")
    print(f"{dst}: {len(keep)} utterances, {seconds / 60:.1f} min, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
