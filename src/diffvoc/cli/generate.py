"""`diffvoc generate`: class-conditional or unconditional waveforms from a generative model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from diffvoc.cli.common import nonneg_int, positive_int, positive_seconds, seed_int
from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import DiffvocError
from diffvoc.inference.generator import DEFAULT_CLIP_SECONDS, Generator, clip_samples, output_name


def cmd_generate(args: argparse.Namespace) -> int:
    """``diffvoc generate``: sample clips and write ``DIR/<label or uncond>_<k>.wav``."""
    from diffvoc.diffusion.schedule import parse_schedule
    from diffvoc.io import atomic_files, output_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 1:
        raise DiffvocError(f"-n must be at least 1, got {args.n}")
    if args.batch_size < 1:
        raise DiffvocError(f"--batch-size must be at least 1, got {args.batch_size}")
    schedule = parse_schedule(args.schedule) if args.schedule else None
    gen = Generator(args.checkpoint, device=args.device, precision=args.precision)
    labels = gen.check_labels(args.label, args.n)  # every input check before any work or output
    sampler = gen.sampler(args.steps, schedule, args.full)
    seconds = clip_samples(gen.config, args.seconds) / gen.sample_rate
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise DiffvocError(f"{out} exists and is not a folder")
    t0 = time.perf_counter()
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.n, unit="clip", desc="generate")
    # one batch in memory at a time, written aside; every clip appears at the end, or none (and no new folder)
    with output_folder(out), atomic_files() as files:
        for a in range(0, args.n, args.batch_size):
            b = min(a + args.batch_size, args.n)
            wavs = gen.generate(None if labels is None else labels[a:b], b - a, steps=args.steps, schedule=schedule,
                                full=args.full, seed=args.seed, batch_size=args.batch_size, seconds=args.seconds,
                                first=a)
            for k, wav in enumerate(wavs, start=a):
                files.write_wav(out / output_name(args.label, k), wav, gen.sample_rate)
            if bar is not None:
                bar.update(b - a)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    what = "unconditional" if labels is None else f"label {args.label}" + (
        f" ({DIGIT_WORDS[args.label]})" if args.label < len(DIGIT_WORDS) else "")
    audio_s = args.n * seconds
    print(f"generated {args.n} clip(s) of {seconds:g} s, {what}, in {elapsed:.2f} s ({len(sampler)} steps, "
          f"real-time factor {elapsed / max(audio_s, 1e-9):.3f}) -> {out}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``generate`` to a ``diffvoc`` sub-command table; the handler is ``args.func(args) -> int``."""
    p = subparsers.add_parser(
        "generate", help="sample clips from a class-conditional or unconditional model",
        description="Sample waveforms from a class-conditional (--label) or unconditional DiffWave model; "
                    "writes DIR/<label or uncond>_<k>.wav. A clip is 1 s at the model's sample rate.")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--label", type=nonneg_int, default=None,
                   help="class to generate (0..9 = zero..nine); required for a class-conditional model, "
                        "not allowed for an unconditional one")
    p.add_argument("-n", type=positive_int, default=16, help="number of clips (default 16)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=positive_int, default=6, help="use the model's stored N-step schedule (default 6)")
    g.add_argument("--schedule", help="explicit inference β, comma-separated")
    g.add_argument("--full", action="store_true", help="all training steps (ancestral sampling)")
    p.add_argument("--seed", type=seed_int, default=0, help="clip k is a function of (seed, k, label) (default 0)")
    p.add_argument("--seconds", type=positive_seconds, default=None,
                   help=f"clip length (default {DEFAULT_CLIP_SECONDS:g} s; the config has no clip length)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="network precision: fp32 (exact), bf16 (CPUs with AMX/AVX512-BF16, GPUs), auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
    return p
