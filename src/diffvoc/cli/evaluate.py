"""`diffvoc evaluate`: copy-synthesis of a test split with several checkpoints, scored and tabled."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import torch

import diffvoc.evaluation.metrics as M
from diffvoc.cli.common import positive_int, seed_int
from diffvoc.evaluation.copy_synthesis import evaluate, parse_metrics, parse_steps
from diffvoc.evaluation.results import check_output, format_table, write_results


def command_line(args: argparse.Namespace) -> str:
    """The ``diffvoc evaluate`` command that reproduces this run, with every option spelled out."""
    argv = ["diffvoc", "evaluate"]
    for ck in args.checkpoint:
        argv += ["--checkpoint", str(ck)]
    argv += ["--data", str(args.data), "--steps", str(args.steps), "--seed", str(args.seed), "--device", args.device,
             "--metrics", str(args.metrics)]
    for flag, value in (("--split", args.split), ("--limit", args.limit), ("--threads", args.threads),
                        ("--precision", getattr(args, "precision", None)),
                        ("--save-audio", args.save_audio)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, on in (("--no-griffin-lim", args.no_griffin_lim), ("--no-audio", getattr(args, "no_audio", False))):
        if on:
            argv.append(flag)
    return shlex.join([*argv, "-o", str(args.output)])


def default_audio_dir(output: str | Path) -> Path:
    """Where ``diffvoc evaluate -o results.json`` keeps its audio by default: ``results_audio/`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}_audio")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``diffvoc evaluate``: run, write results JSON + Markdown, print the table."""
    output = Path(args.output)
    check_output(output)
    steps = parse_steps(args.steps)
    groups = parse_metrics(args.metrics)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = command_line(args)
    audio = None if args.no_audio else (args.save_audio or default_audio_dir(output))
    results = evaluate(args.checkpoint, args.data, split=args.split, steps=steps, limit=args.limit, seed=args.seed,
                       device=args.device, metrics=groups, with_griffin_lim=not args.no_griffin_lim,
                       save_audio=audio, command=command, precision=args.precision)
    md = write_results(results, output)
    print()
    print(format_table(results))
    print(f"\nwrote {output} and {md}" + (f"; audio in {audio}" if audio else ""))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate`` to a ``diffvoc`` sub-command table; the handler is ``args.func(args) -> int``."""
    p = subparsers.add_parser("evaluate", help="copy-synthesis of a test set, scored with objective metrics",
                              description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help="run dir, checkpoint dir or lmnt weights.pt (repeat to compare several)")
    p.add_argument("--data", required=True, metavar="TEST",
                   help="a `diffvoc preprocess` folder (uses its --split) or an audio folder / LJSpeech / file list")
    p.add_argument("--split", default=None, help="split of a preprocessed folder (default test)")
    p.add_argument("--steps", default="6", help="comma-separated step counts; the training T means full "
                   "sampling (default 6)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N utterances")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network precision (default auto: bf16 on CPUs with AMX/AVX512-BF16 and on GPUs, else fp32); "
                        "recorded per system in the results")
    p.add_argument("--metrics", default=",".join(M.ALL_METRICS),
                   help=f"comma-separated metric groups (default all: {','.join(M.ALL_METRICS)})")
    p.add_argument("--no-griffin-lim", action="store_true", help="skip the Griffin-Lim context row")
    audio = p.add_mutually_exclusive_group()
    audio.add_argument("--save-audio", metavar="DIR", help="write the audio to DIR/<system>/<id>.wav, for "
                       "`diffvoc report` (default: RESULTS_audio/ beside the results JSON)")
    audio.add_argument("--no-audio", action="store_true", help="do not keep the vocoded audio")
    p.add_argument("-o", "--output", required=True, help="results JSON (a .md table is written beside it)")
    p.set_defaults(func=cmd_evaluate)
    return p
