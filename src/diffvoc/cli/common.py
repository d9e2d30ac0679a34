"""What several subcommands share: the config flags and the argument types.

Every number a flag takes is range-checked by its ``type=`` here, so a bad value is refused by the
parser (one line, exit 2) before any work is done, the message naming the value."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from diffvoc.errors import DiffvocError


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--preset`` and ``--set KEY=VALUE``."""
    p.add_argument("--config", help="a YAML config (default: the presets below)")
    p.add_argument("--preset", default=None, choices=["hifigan", "lmnt"], help="mel recipe (default hifigan)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set audio.sample_rate=16000 (repeatable)")


def config_from_args(args: argparse.Namespace):
    """The config the flags of :func:`add_config_args` describe."""
    from diffvoc.config import Config, apply_presets

    if args.config and args.preset:
        raise DiffvocError("give either --config or --preset, not both")
    if args.config:
        cfg = Config.load(args.config)
    else:
        cfg = Config.from_dict(apply_presets({"audio": {"preset": args.preset or "hifigan"}}))
    return cfg.with_overrides(args.overrides)


def _number(text: str, kind: type, what: str) -> float | int:
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[low, high]``."""
    def parse(text: str) -> int:
        v = _number(text, int, "a whole number")
        if v < low or (high is not None and v > high):
            bound = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, got {text!r}")
        return v
    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
"""An argparse type: a whole number >= 1 (sizes, counts, steps, threads, batch sizes, budgets)."""
nonneg_int = int_at_least(0)
"""An argparse type: a whole number >= 0 (seeds, labels, limits where 0 means none)."""
seed_int = int_at_least(0, 2**63 - 1)
"""An argparse type: a random seed (0 .. 2**63 - 1)."""


def finite_float(text: str) -> float:
    """An argparse type: any finite number (no nan, inf)."""
    return float(_number(text, float, "a number"))


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    v = finite_float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return v


def fraction(text: str) -> float:
    """An argparse type: a fraction in [0, 1)."""
    v = finite_float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return v


def positive_seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return v


def comma_list(item: Callable[[str], object], what: str, max_items: int = 64) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of ``item`` values (at least one, at most ``max_items``)."""
    def parse(text: str) -> list:
        parts = [p.strip() for p in str(text).split(",")]
        if not text.strip() or any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}")
        if len(parts) > max_items:
            raise argparse.ArgumentTypeError(f"at most {max_items} {what}, got {len(parts)}")
        out = []
        for p in parts:
            try:
                out.append(item(p))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what} ({e})") from None
        return out
    parse.__name__ = f"comma_list_{getattr(item, '__name__', 'item')}"
    return parse


positive_int_list = comma_list(positive_int, "whole numbers >= 1")
"""An argparse type: ``2,6,12``."""


def beta(text: str) -> float:
    """An argparse type: a noise level β in (0, 1)."""
    v = finite_float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"every β must lie in (0, 1), got {text!r}")
    return v


beta_list = comma_list(beta, "β values", max_items=1000)
"""An argparse type: an explicit inference schedule ``b1,b2,...``."""
