"""The ``diffvoc`` command: thin subcommands over the modules.

Every :class:`~diffvoc.errors.DiffvocError`, every operating-system error (disk full, permissions, a
folder where a file was expected, ...) and every argument error ends as one line on stderr and a
non-zero exit (1; 2 for a bad argument); set ``DIFFVOC_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from diffvoc.errors import DiffvocError, describe_os_error

SUBCOMMANDS = ("mel", "preprocess", "train", "vocode", "corpus", "evaluate", "report", "export", "demo", "generate",
               "classifier", "search_schedule", "tts")
"""The modules of :mod:`diffvoc.cli`, one per subcommand, in the order ``diffvoc --help`` lists them."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``PROG: error: MESSAGE``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``diffvoc`` parser: every subcommand module adds its own sub-parser."""
    from diffvoc import __version__

    parser = OneLineParser(prog="diffvoc", description="Diffusion vocoders: DiffWave, PriorGrad, "
                           "InferGrad and truncated diffusion.")
    parser.add_argument("--version", action="version", version=f"diffvoc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"diffvoc.cli.{name}").add_parser(sub)
    return parser


def error_line(e: BaseException) -> str | None:
    """The one line a failed command prints for ``e``, or ``None`` when ``e`` is not a user-facing error."""
    if isinstance(e, DiffvocError):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, UnicodeDecodeError):
        return f"a text file is not UTF-8 ({e.reason} at byte {e.start})"
    if isinstance(e, OSError):
        return describe_os_error(e)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"diffvoc {args.command}: interrupted", file=sys.stderr)
        return 130
    except (DiffvocError, OSError, UnicodeDecodeError, MemoryError) as e:
        if os.environ.get("DIFFVOC_DEBUG"):
            raise
        print(f"diffvoc {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 1
