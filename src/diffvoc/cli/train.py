"""`diffvoc train`: train from a YAML config (DDP under torchrun), resume, fine-tune, deadlines."""

from __future__ import annotations

import argparse

from diffvoc.cli.common import positive_int, positive_seconds


def cmd_train_acoustic(args: argparse.Namespace) -> int:
    """An acoustic model (``kind: acoustic``): :class:`diffvoc.training.acoustic.AcousticTrainer`."""
    from diffvoc.acoustic_config import AcousticConfig
    from diffvoc.errors import DiffvocError
    from diffvoc.training.acoustic import AcousticTrainer

    if args.init_from or args.deadline is not None or args.device == "cuda":
        raise DiffvocError("--init-from, --deadline and --device cuda are for vocoder configs only")
    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    cfg = AcousticConfig.load(args.config).with_overrides(overrides)
    trainer = AcousticTrainer(cfg, args.run_dir, resume=args.resume, overrides=overrides, progress=not args.quiet)
    try:
        last = trainer.train(args.max_steps, time_limit=args.time_limit)
    finally:
        trainer.close()
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
    print(f"{args.run_dir}: {shown}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from diffvoc.config import Config, config_kind
    from diffvoc.io import discard_new
    from diffvoc.training.trainer import Trainer

    if config_kind(args.config) == "acoustic":
        return cmd_train_acoustic(args)
    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])  # also on --resume
    cfg = Config.load(args.config).with_overrides(overrides)
    with discard_new(args.run_dir, unless="latest"):  # a new run that fails before its first checkpoint goes
        trainer = Trainer(cfg, args.run_dir, resume=args.resume, init_from=args.init_from, device=args.device,
                          overrides=overrides, progress=not args.quiet)
        deadline = None
        if args.deadline is not None:
            from diffvoc.io import process_start_time

            deadline = process_start_time() + args.deadline
        try:
            last = trainer.train(args.max_steps, time_limit=args.time_limit, deadline=deadline)
        finally:
            trainer.close()
    if trainer.rank == 0:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        print(f"{args.run_dir}: {shown}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (DDP: run under torchrun)")
    p.add_argument("config", help="YAML config (see recipes/)")
    p.add_argument("--run-dir", required=True, help="checkpoints and TensorBoard logs go here")
    p.add_argument("--data", help="preprocessed data folder (overrides data.path)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/latest")
    p.add_argument("--init-from", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--max-steps", type=positive_int, default=None)
    p.add_argument("--time-limit", type=positive_seconds, default=None, metavar="SECONDS",
                   help="stop (validate and save) after this much training time, e.g. for a fixed GPU budget")
    p.add_argument("--deadline", type=positive_seconds, default=None, metavar="SECONDS",
                   help="finish, final validation and save included, within this many seconds of the process's start")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)
