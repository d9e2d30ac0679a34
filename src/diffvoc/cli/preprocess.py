"""`diffvoc preprocess`: cache features and split a corpus (folder, LJSpeech, VCTK, file list)."""

from __future__ import annotations

import argparse
import sys

from diffvoc.cli.common import add_config_args, config_from_args, fraction, positive_int
from diffvoc.errors import DiffvocError


def cmd_preprocess(args: argparse.Namespace) -> int:
    from diffvoc.data.dataset import feature_dir, load_stats, preprocess
    from diffvoc.io import discard_new

    if args.valid_fraction + args.test_fraction >= 1:
        raise DiffvocError(f"--valid-fraction {args.valid_fraction:g} and --test-fraction {args.test_fraction:g} "
                           "leave nothing to train on (their sum must be < 1)")
    cfg = config_from_args(args)
    with discard_new(args.output):  # a data folder this command creates is removed again if it fails
        record = preprocess(args.source, args.output, cfg.audio, jobs=args.jobs, valid_fraction=args.valid_fraction,
                            test_fraction=args.test_fraction, progress=not args.quiet)
    split = record["split"]
    stats = load_stats(args.output, cfg.audio)
    print(f"{args.output}: {len(record['items'])} files; train {len(split['train'])}, valid {len(split['valid'])}, "
          f"test {len(split['test'])}; features in {feature_dir(args.output, cfg.audio)}")
    print(f"energy range (PriorGrad): E_min={stats['energy_min']:.4f} E_max={stats['energy_max']:.4f}")
    for s in record.get("skipped", []):
        print(f"skipped {s['path'] or s['id']}: {s['reason']}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="cache features and split a corpus (folder, LJSpeech or file list)")
    p.add_argument("source")
    p.add_argument("-o", "--output", required=True, help="data folder")
    p.add_argument("--jobs", type=positive_int, default=None)
    p.add_argument("--valid-fraction", type=fraction, default=0.02)
    p.add_argument("--test-fraction", type=fraction, default=0.02)
    p.add_argument("--quiet", action="store_true")
    add_config_args(p)
    p.set_defaults(func=cmd_preprocess)
