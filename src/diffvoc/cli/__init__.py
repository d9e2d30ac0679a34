"""The ``diffvoc`` command: thin subcommands over the modules.

Every :class:`~diffvoc.errors.DiffvocError` ends as one line on stderr and exit status 1;
set ``DIFFVOC_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from diffvoc.errors import DiffvocError

SUBCOMMANDS = ("mel", "preprocess", "train", "vocode", "corpus", "evaluate", "report", "export", "demo", "generate",
               "classifier", "search_schedule")
"""The modules of :mod:`diffvoc.cli`, one per subcommand, in the order ``diffvoc --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The ``diffvoc`` parser: every subcommand module adds its own sub-parser."""
    from diffvoc import __version__

    parser = argparse.ArgumentParser(prog="diffvoc", description="Diffusion vocoders: DiffWave, PriorGrad, "
                                     "InferGrad and truncated diffusion.")
    parser.add_argument("--version", action="version", version=f"diffvoc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"diffvoc.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DiffvocError as e:
        if os.environ.get("DIFFVOC_DEBUG"):
            raise
        print(f"diffvoc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"diffvoc {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"diffvoc {args.command}: error: out of memory", file=sys.stderr)
        return 1
