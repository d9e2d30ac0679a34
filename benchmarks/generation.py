"""DiffWave Table 2 for diffvoc: FID, IS, mIS, AM score, NDB/K (and class accuracy) of generated digits.

For every ``--checkpoint`` (class-conditional or unconditional; the kind is read from its config)
it generates ``--n`` one-second clips (≥ 1,000 by default, as the paper; conditional models get
balanced labels k mod 10), classifies them with the digit classifier of
``diffvoc classifier train`` and scores them against the real training set. Two reference rows
score the real ``train`` split (against itself) and the real ``test`` split (held-out voices), as
the paper does. Metric definitions: :mod:`diffvoc.evaluation.generative`.

Writes ``OUT.json`` (rows, settings, the command line, the paper's SC09 figures for context) and
``OUT.md`` beside it, and prints the table::

    python benchmarks/generation.py --data /tmp/digits --classifier benchmarks/results/digit_classifier \\
        --checkpoint uncond=runs/sc09_uncond --checkpoint cond=runs/sc09_cond --n 1000 --steps 6 \\
        --save-audio benchmarks/results/generation_samples -o benchmarks/results/generation_cpu.json

On a GPU add ``--device cuda --batch-size 64`` (the paper's SC09 preset is T = 200: ``--full``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffvoc.errors import DiffvocError  # noqa: E402
from diffvoc.io import cpu_name, plain  # noqa: E402

DEFAULT_CLASSIFIER = ROOT / "benchmarks" / "results" / "digit_classifier"
# REFERENCE §1: DiffWave on SC09 (1,000 samples, metrics from a classifier trained on SC09).
PAPER = {
    "source": "DiffWave (Kong et al., ICLR 2021), SC09, Table 2/3 (REFERENCE §1); their classifier, not ours",
    "unconditional": {"fid": 1.287, "is": 5.30, "mis": 59.4, "am": 0.636, "ndb_k": 0.74},
    "conditional": {"accuracy": 0.912, "is": 6.63},
}
COLUMNS = [("n", "n", None), ("fid", "FID", "↓"), ("is", "IS", "↑"), ("mis", "mIS", "↑"),
           ("mis_class", "mIS within class", "↑"), ("am", "AM", "↓"), ("ndb_k", "NDB/K", "↓"),
           ("accuracy", "accuracy", "↑"), ("rtf", "RTF", "↓")]


def parse_checkpoint(text: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (named after its folder)."""
    if "=" in text and not Path(text).exists():
        name, path = text.split("=", 1)
        return name.strip(), path.strip()
    p = Path(text)
    return (p.name if p.name not in ("", ".") else str(p)), text


def _fmt(value: Any, key: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if key == "n":
        return str(value)
    if key == "accuracy":
        return f"{100 * value:.1f}%"
    if key in ("mis", "mis_class") and value >= 100:
        return f"{value:.1f}"
    return f"{value:.3f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    head = ["system"] + [f"{title} {arrow}" if arrow else title for _, title, arrow in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["system"]] + [_fmt(r.get(k), k) for k, _, _ in COLUMNS]) + " |")
    return "\n".join(lines)


def format_markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    c = m["classifier"]
    p = results["paper"]
    pu, pc = p["unconditional"], p["conditional"]
    return "\n".join([
        "# Generation metrics (DiffWave Table 2)", "",
        (f"{m['created']} · {m['n']} generated clips per model · {m['sampler']} · seed {m['seed']} · "
         f"data {m['data']}" if any(r["kind"] == "generated" for r in results["rows"]) else
         f"{m['created']} · real-data rows only · data {m['data']}"), "",
        format_table(results["rows"]), "",
        f"Classifier `{c['path']}`: held-out-voice (test) accuracy {100 * c['test_accuracy']:.2f}% "
        f"({c['clips'].get('test', '?')} clips), trained on {c['clips'].get('train', '?')} clips. "
        "FID and NDB/K are against the real train split; NDB/K uses K = 50 k-means bins and a two-proportion "
        "z-test at α = 0.05; mIS is over all pairs (DiffWave's scale), 'mIS within class' over pairs of the same "
        "predicted class (Gurumurthy et al.); AM uses p* = the train label distribution. Real rows use every clip "
        "of the split. RTF = generation seconds / audio seconds.",
        f"Paper (their SC09 classifier, not comparable in absolute terms): unconditional FID {pu['fid']}, "
        f"IS {pu['is']}, mIS {pu['mis']}, AM {pu['am']}, NDB/K {pu['ndb_k']}; conditional accuracy "
        f"{100 * pc['accuracy']:.1f}%, IS {pc['is']}.",
        f"Device {m['device']} ({m['device_name']}), {m['threads']} threads, torch {m['torch']}.", "",
        f"Command: `{m['command']}`", "",
    ])


def _display_path(path: str | Path) -> str:
    """A path relative to the repository when it lies inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(path)


def _sampler_text(args: argparse.Namespace) -> str:
    if args.full:
        return "full sampling (all T steps)"
    if args.schedule:
        return f"schedule {args.schedule}"
    return f"{args.steps}-step fast sampling"


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from diffvoc.data.digits import list_digit_clips, load_digit_clips
    from diffvoc.diffusion.schedule import parse_schedule
    from diffvoc.evaluation.classifier import DigitClassifier
    from diffvoc.evaluation.generative import RealReference, generation_metrics
    from diffvoc.inference.generator import Generator, output_name
    from diffvoc.io import atomic_write_wav

    t_all = time.perf_counter()
    clf = DigitClassifier.load(args.classifier, device=args.device)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)
    schedule = parse_schedule(args.schedule) if args.schedule else None

    # Every checkpoint and sampler is checked before the long work starts.
    named = [parse_checkpoint(c) for c in args.checkpoint]
    if len({n for n, _ in named}) != len(named):
        raise DiffvocError("two checkpoints have the same name; name them NAME=PATH")
    gens = []
    for name, path in named:
        g = Generator(path, device=args.device)
        g.sampler(args.steps, schedule, args.full)
        gens.append((name, path, g))

    say(f"reading {args.data} (train, test) ...")
    real: dict[str, Any] = {}
    for split in ("train", "test"):
        clips = list_digit_clips(args.data, split)
        wavs, labels = load_digit_clips(clips, clf.cfg.sample_rate, clf.cfg.seconds)
        real[split] = (clf.classify(wavs), labels)
    train_out, train_labels = real["train"]
    ref = RealReference.from_features(train_out.features, train_labels, clf.cfg.n_classes, k=args.k, seed=args.seed)

    rows: list[dict[str, Any]] = []
    for name, path, g in gens:
        labels = (np.arange(args.n) % g.n_classes) if g.conditional else None
        say(f"{name}: generating {args.n} clips ({'class-conditional' if g.conditional else 'unconditional'}, "
            f"{_sampler_text(args)}) ...")
        t0 = time.perf_counter()
        wavs = g.generate(labels, args.n, steps=args.steps, schedule=schedule, full=args.full, seed=args.seed,
                          batch_size=args.batch_size, progress=not args.quiet)
        seconds = time.perf_counter() - t0
        out = clf.classify(wavs, g.sample_rate)
        row = {"system": name, "kind": "generated", "checkpoint": str(path),
               "conditioning": g.config.model.conditioning,
               "model": {"residual_channels": g.config.model.residual_channels,
                         "residual_layers": g.config.model.residual_layers,
                         "dilation_cycle": g.config.model.dilation_cycle,
                         "parameters": sum(p.numel() for p in g.model.parameters()),
                         "diffusion_steps": g.config.diffusion.steps, "sample_rate": g.sample_rate},
               "sampler_steps": len(g.sampler(args.steps, schedule, args.full)),
               "generation_seconds": round(seconds, 2), "rtf": seconds / (args.n * wavs.shape[1] / g.sample_rate)}
        row.update(generation_metrics(out.probs, out.features, ref, labels=labels, alpha=args.alpha))
        rows.append(row)
        say(f"{name}: " + ", ".join(f"{k} {_fmt(row.get(k), k)}" for k, _, _ in COLUMNS if row.get(k) is not None))
        if args.save_audio:
            folder = Path(args.save_audio) / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(min(args.save_count, args.n)):
                atomic_write_wav(folder / output_name(None if labels is None else int(labels[k]), k), wavs[k],
                                 g.sample_rate)

    for split, title in (("train", "real train"), ("test", "real test (held-out voices)")):
        out, labels = real[split]
        row = {"system": title, "kind": "real", "split": split}
        row.update(generation_metrics(out.probs, out.features, ref, labels=labels, alpha=args.alpha))
        rows.append(row)

    info = clf.info
    return {
        "meta": {
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command,
            "data": str(args.data),
            "n": args.n,
            "sampler": _sampler_text(args),
            "steps": None if (args.full or args.schedule) else args.steps,
            "schedule": schedule,
            "full": bool(args.full),
            "seed": args.seed,
            "k": args.k,
            "alpha": args.alpha,
            "clip_seconds": 1.0,
            "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
            "threads": torch.get_num_threads(),
            "torch": str(torch.__version__),
            "seconds": round(time.perf_counter() - t_all, 1),
            "save_audio": args.save_audio,
            "classifier": {"path": _display_path(args.classifier), "test_accuracy": info.get("accuracy", {}).get("test"),
                           "accuracy": info.get("accuracy"), "clips": info.get("clips", {}),
                           "test_is_held_out_voices": info.get("test_is_held_out_voices")},
            "metrics": {
                "fid": "Fréchet distance of classifier penultimate-feature Gaussians, generated vs real train",
                "is": "exp E_x KL(p(y|x) || p(y))",
                "mis": "exp E_{x,x'} KL(p(y|x) || p(y|x')) over all ordered pairs",
                "mis_class": "exp sum_c (n_c/n) E_{x,x' in predicted class c} KL(p(y|x) || p(y|x'))",
                "am": "KL(p*(y) || p(y)) + E_x H(p(y|x)), p* = train label distribution",
                "ndb_k": "bins of K-means (K=k) on real train features whose generated proportion differs "
                         "(two-proportion z-test, alpha), divided by K",
                "accuracy": "argmax p(y|x) == label asked for (balanced labels k mod 10)",
            },
        },
        "rows": rows,
        "paper": PAPER,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=[], metavar="[NAME=]CKPT",
                    help="class-conditional or unconditional checkpoint/run dir (repeatable)")
    ap.add_argument("--data", required=True, help="digits corpus (train/test splits; test = held-out voices)")
    ap.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER), help="from `diffvoc classifier train`")
    ap.add_argument("--n", type=int, default=1000, help="generated clips per model (default 1000, as the paper)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=6)
    g.add_argument("--schedule", help="explicit inference β, comma-separated")
    g.add_argument("--full", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=50, help="NDB bins (default 50)")
    ap.add_argument("--alpha", type=float, default=0.05, help="NDB test level (default 0.05)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--save-audio", metavar="DIR", help="write DIR/<system>/<label|uncond>_<k>.wav")
    ap.add_argument("--save-count", type=int, default=10, help="clips per system to save (default 10)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("-o", "--output", required=True, help="results JSON (Markdown written beside it)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/generation.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.n < 2:
            raise DiffvocError("--n must be at least 2 (FID needs a covariance)")
        out = Path(args.output)
        if out.suffix.lower() != ".json":
            raise DiffvocError(f"{out}: give a .json name (the Markdown table is written beside it)")
        if not out.parent.is_dir():
            raise DiffvocError(f"cannot write {out}: folder {out.parent} does not exist")
        results = run(args, command)
    except DiffvocError as e:
        if os.environ.get("DIFFVOC_DEBUG"):
            raise
        print(f"generation benchmark: error: {e}", file=sys.stderr)
        return 1
    from diffvoc.io import atomic_write_text

    atomic_write_text(out, json.dumps(plain(results, nan_as_none=True), indent=1, allow_nan=False) + "\n")
    atomic_write_text(out.with_suffix(".md"), format_markdown(results))
    print(format_table(results["rows"]))
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
