"""What several subcommands share: the config flags and argument types."""

from __future__ import annotations

import argparse

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


def positive_seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return v
