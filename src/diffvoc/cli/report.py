"""`diffvoc report`: an HTML page of results, audio, spectrograms and training curves."""

from __future__ import annotations

import argparse
from typing import Any

from diffvoc.cli.common import nonneg_int
from diffvoc.evaluation.report import build_report


def cmd_report(args: argparse.Namespace) -> int:
    """``diffvoc report``: build the HTML page."""
    index = build_report(args.results, args.output, runs=args.runs, max_utterances=args.max_utterances,
                         generated=args.generated, generation_results=args.generation_results,
                         max_generated=args.max_generated)
    print(f"wrote {index} (open it in a browser; it needs no server)")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to a ``diffvoc`` sub-command table; the handler is ``args.func(args) -> int``."""
    p = subparsers.add_parser("report", help="static HTML page of evaluation results (samples, metrics, curves)",
                              description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("results", nargs="*", metavar="RESULTS.json",
                   help="results files of `diffvoc evaluate` (optional with --generated/--generation-results)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder (DIR/index.html)")
    p.add_argument("--runs", nargs="+", action="extend", default=[], metavar="RUN_DIR",
                   help="training runs whose TensorBoard curves to plot")
    p.add_argument("--max-utterances", type=nonneg_int, default=8, help="utterances in the samples table (default 8)")
    p.add_argument("--generated", action="append", default=[], metavar="[NAME=]DIR",
                   help="folder of generated wavs from diffvoc generate or benchmarks/generation.py --save-audio "
                        "(repeatable)")
    p.add_argument("--generation-results", action="append", default=[], metavar="GEN.json",
                   help="FID/IS/mIS/AM/NDB table written by benchmarks/generation.py (repeatable)")
    p.add_argument("--max-generated", type=nonneg_int, default=10, help="clips shown per --generated folder (default 10)")
    p.set_defaults(func=cmd_report)
    return p
