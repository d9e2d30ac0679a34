"""`diffvoc search-schedule`: search an N-step inference schedule and store it in a checkpoint."""

from __future__ import annotations

import argparse
import json

import torch

from diffvoc.cli.common import int_at_least, nonneg_float, positive_int, seed_int
from diffvoc.errors import DiffvocError
from diffvoc.evaluation.schedule_search import search_schedule


def cmd_search_schedule(args: argparse.Namespace) -> int:
    """``diffvoc search-schedule``: search, print default vs searched, then write the checkpoint's config and
    the ``--json`` file as one set (both or neither, :func:`diffvoc.io.atomic_files`)."""
    from pathlib import Path

    from diffvoc.evaluation.schedule_search import write_schedule
    from diffvoc.io import atomic_files, check_writable

    if args.json:
        check_writable(Path(args.json))  # before the search, not after it
    if not args.no_write and Path(args.checkpoint).is_file():
        raise DiffvocError(f"{args.checkpoint}: search-schedule writes into a diffvoc checkpoint directory, not a "
                           "file; pass --no-write to only print the result")
    if args.threads:
        torch.set_num_threads(args.threads)
    res = search_schedule(args.checkpoint, args.steps, data=args.data, split=args.split, clips=args.clips,
                          seconds=args.seconds if args.seconds > 0 else None, method=args.method, seed=args.seed,
                          max_evals=args.max_evals, points=args.points, write=False, device=args.device,
                          precision=args.precision)
    with atomic_files() as files:
        if not args.no_write:
            res.written = str(write_schedule(res.checkpoint, res.steps, res.searched.betas, files))
        if args.json:
            files.write_text(args.json, json.dumps(res.to_dict(), indent=1))
    print(f"search-schedule: {res.checkpoint}, {res.steps} steps, method {res.method}, {res.evaluations} "
          f"evaluations in {res.seconds:.1f} s on {res.clips} {res.split} clip(s) of {res.data} "
          f"(fixed noise, seed {args.seed})")
    print(res.table())
    if res.written:
        print(f"wrote diffusion.fast_schedules[{res.steps}] = {res.searched.betas} to {res.written}/config.yaml")
    else:
        print("not written (--no-write)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``search-schedule`` on the ``diffvoc`` sub-command parser (sets ``func``)."""
    p = subparsers.add_parser("search-schedule", help="search an N-step inference schedule and store it in the checkpoint",
                              description="Search an N-step inference schedule that minimises MR-STFT + log-mel "
                                          "L1 on held-out clips (fixed noise), print default vs searched, and store "
                                          "it in the checkpoint as diffusion.fast_schedules[N] (used by vocode --steps N).")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory (its newest checkpoint)")
    p.add_argument("--steps", type=positive_int, required=True, help="N, the number of inference steps")
    p.add_argument("--data", default=None, help="preprocessed data folder (default: the checkpoint's data.path)")
    p.add_argument("--split", default="valid", help="split of the held-out clips (default valid)")
    p.add_argument("--clips", type=positive_int, default=4, help="number of clips (default 4)")
    p.add_argument("--seconds", type=nonneg_float, default=1.0, help="cut each clip to this length; 0: whole clips")
    p.add_argument("--method", choices=["local", "grid", "both"], default="local",
                   help="local: coordinate descent in log β (cheap, default); grid: WaveGrad-style grid; both")
    p.add_argument("--max-evals", type=positive_int, default=None, help="evaluation budget (default grid 64, local 40)")
    p.add_argument("--points", type=int_at_least(2), default=None, help="grid candidates per step (default 5/4/3 by N)")
    p.add_argument("--seed", type=seed_int, default=0, help="noise seed (clip i uses seed + i)")
    p.add_argument("--no-write", action="store_true", help="only print; leave the checkpoint unchanged")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="vocoder precision (default auto: bf16 on CPUs with AMX/AVX512-BF16 and GPUs, else fp32)")
    p.set_defaults(func=cmd_search_schedule)
    return p
