"""`diffvoc demo`: the README's main job — vocode speech with the bundled model and build the page."""

from __future__ import annotations

import argparse
from typing import Any

from diffvoc.cli.common import int_at_least, positive_int_list
from diffvoc.evaluation.demo import run_demo


def cmd_demo(args: argparse.Namespace) -> int:
    from diffvoc.evaluation.results import format_table

    steps = list(args.steps) if args.steps else None
    metrics = args.metrics.split(",") if args.metrics else None
    page, results = run_demo(args.output, args.inputs, args.checkpoint, steps, args.sentences, args.device, metrics)
    print(format_table(results))
    print(f"report: {page.resolve()}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="vocode a few spoken sentences (or your wavs) and write the HTML report")
    p.add_argument("inputs", nargs="*", help="your own audio files (default: TTS engines speak demo sentences)")
    p.add_argument("-o", "--output", default="diffvoc-demo")
    p.add_argument("--checkpoint", default=None, help="default: the bundled model")
    p.add_argument("--steps", type=positive_int_list, default="2,6")
    p.add_argument("--sentences", type=int_at_least(1, 4), default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--metrics", default=None, help="metric groups (default: all)")
    p.set_defaults(func=cmd_demo)
    return p
