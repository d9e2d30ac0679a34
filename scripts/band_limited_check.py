"""Does the band-limited 16 kHz source (G.722 Asterisk prompts) help a 22.05 kHz model?

A small measurement for `diffvoc corpus mixed` (issue 15): the bundled model is fine-tuned for the same
number of steps on the mixed corpus with and without the Asterisk prompts in its training split, then
both are scored by copy-synthesis on the real held-out clips whose native bandwidth exceeds 8 kHz
(`test_wideband`: unseen KLettres speakers, none of it G.722) and on the real `test` split. Besides
`diffvoc evaluate`'s metrics it measures the log-spectral distance above 8 kHz (the band G.722 lacks).

    python scripts/band_limited_check.py --data data/speech_mixed --seconds 600 --work runs/band_limited \
        -o benchmarks/results/band_limited.json

Needs a `diffvoc preprocess` folder of a mixed corpus (`diffvoc corpus mixed`). CPU-sized: two short
fine-tunings and two small evaluations; the result is a hint, not a verdict (see the JSON's notes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "diffvoc" / "pretrained" / "default"


def without_asterisk(data: Path, out: Path) -> Path:
    """A preprocessed folder like ``data`` whose train split has no Asterisk clip (features linked)."""
    record = yaml.safe_load((data / "dataset.yaml").read_text())
    record["split"]["train"] = [i for i in record["split"]["train"] if not i.startswith("ast-")]
    out.mkdir(parents=True, exist_ok=True)
    for key_dir in (data / "features").iterdir():
        dst = out / "features" / key_dir.name
        dst.mkdir(parents=True, exist_ok=True)
        for f in key_dir.iterdir():
            if f.name != "stats.yaml" and not (dst / f.name).exists():  # statistics: recomputed on this train split
                os.symlink(f.resolve(), dst / f.name)
    (out / "dataset.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return out


def run(*args: str) -> None:
    print("+ diffvoc " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "diffvoc.cli", *args], check=True)


def high_band_lsd(ref: np.ndarray, deg: np.ndarray, sr: int, lo: float = 8000.0) -> float:
    """Mean |10 log10 P_ref - 10 log10 P_deg| (dB) over STFT bins above ``lo`` (1024-point, hop 256)."""
    import librosa

    n = min(len(ref), len(deg))
    spec = [np.abs(librosa.stft(x[:n].astype(np.float32), n_fft=1024, hop_length=256)) ** 2 + 1e-10
            for x in (ref, deg)]
    band = librosa.fft_frequencies(sr=sr, n_fft=1024) >= lo
    return float(np.mean(np.abs(10 * np.log10(spec[0][band]) - 10 * np.log10(spec[1][band]))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "speech_mixed")
    p.add_argument("--seconds", type=float, default=420.0, help="training time of each run")
    p.add_argument("--limit", type=int, default=40, help="utterances per test split")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "band_limited",
                   help="runs, the linked data folder and the evaluations' audio go here")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "band_limited.json")
    args = p.parse_args()
    out = args.work
    out.mkdir(parents=True, exist_ok=True)
    datasets = {"with_asterisk": args.data, "without_asterisk": without_asterisk(args.data, out / "data_without")}
    common = ["--init-from", str(BUNDLED), "--quiet",
              "--set", "train.valid_every=1000000", "--set", "train.save_every=1000000",
              "--set", "train.learning_rate=5e-4", "--set", "data.valid_clips=4"]
    steps = None  # the first run trains for --seconds; the second for as many steps (not seconds: the
    for name, data in datasets.items():  # machine is shared, so equal time would not be equal work)
        if not (out / "runs" / name / "latest").exists():
            budget = ["--time-limit", str(args.seconds)] if steps is None else ["--max-steps", str(steps)]
            run("train", str(ROOT / "recipes" / "interim_cpu.yaml"), "--run-dir", str(out / "runs" / name),
                "--data", str(data), *common, *budget)
        steps = json.loads((out / "runs" / name / "valid.jsonl").read_text().splitlines()[-1])["step"]
    summary: dict = {"command": " ".join(sys.argv), "seconds_first_run": args.seconds, "steps_per_run": steps,
                     "splits": {}}
    for split in ("test_wideband", "test"):
        res = out / f"{split}.json"
        run("evaluate", "--checkpoint", str(out / "runs" / "with_asterisk"), "--checkpoint",
            str(out / "runs" / "without_asterisk"), "--data", str(args.data), "--split", split, "--steps", "6",
            "--limit", str(args.limit), "--metrics", "mr_stft,log_mel_l1,stoi", "--no-griffin-lim", "-o", str(res))
        results = json.loads(res.read_text())
        audio = res.with_name(f"{res.stem}_audio")
        rows = {}
        for s in results["summary"]:
            entry = {k: v["mean"] for k, v in s["metrics"].items()}
            if s["kind"] == "model":
                lsd = [high_band_lsd(sf.read(audio / "reference" / f"{u}.wav")[0],
                                     sf.read(audio / s["system"] / f"{u}.wav")[0], 22050)
                       for u in results["meta"]["utterances"]]
                entry["high_band_lsd_db"] = float(np.mean(lsd))
            rows[s["system"]] = entry
        summary["splits"][split] = rows
    for name in datasets:  # the trainer's own validation: the first 4 (real) clips of the valid split
        valid = (out / "runs" / name / "valid.jsonl").read_text().splitlines()
        summary[f"{name}_final_validation"] = json.loads(valid[-1])
    args.output.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
