"""`diffvoc classifier train|eval`: the digit classifier behind the generative metrics."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from diffvoc.cli.common import fraction, positive_float, positive_int, positive_int_list, seed_int
from diffvoc.errors import DiffvocError
from diffvoc.evaluation.classifier import (
    ClassifierConfig,
    DigitClassifier,
    _check_classifier_out,
    _class_names,
    evaluate_classifier,
    train_classifier,
)


def cmd_classifier_train(args: argparse.Namespace) -> int:
    """``diffvoc classifier train``: train, save, print the held-out-voice accuracy."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise DiffvocError("--device cuda asked for, but CUDA is not available")
    _check_classifier_out(Path(args.output))
    cfg = ClassifierConfig()
    if args.channels:
        cfg.channels = list(args.channels)
        if not cfg.channels or min(cfg.channels) < 1 or len(cfg.channels) > 5:
            raise DiffvocError("--channels takes 1 to 5 positive integers")
    clf = train_classifier(args.data, args.output, epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.lr, label_smoothing=args.label_smoothing, seed=args.seed, cfg=cfg,
                           device=args.device, progress=not args.quiet)
    acc = clf.info["accuracy"]
    parts = [f"{s} {acc[s]:.4f}" for s in ("train", "valid", "test") if s in acc]
    print(f"digit classifier -> {args.output}: accuracy {', '.join(parts)} (test = held-out voices; "
          f"epoch {clf.info['selected_epoch']} of {args.epochs}, {clf.info['training']['seconds']:.0f} s)")
    return 0


def cmd_classifier_eval(args: argparse.Namespace) -> int:
    """``diffvoc classifier eval``: accuracy and confusion matrix on a split."""
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = DigitClassifier.load(args.classifier)
    res = evaluate_classifier(clf, args.data, args.split)
    names = _class_names(clf.cfg.n_classes)
    print(f"{args.split}: {res['clips']} clips, accuracy {res['accuracy']:.4f}")
    print("confusion (rows: true, columns: predicted)")
    print("       " + " ".join(f"{n[:5]:>5}" for n in names))
    for name, row in zip(names, res["confusion"]):
        print(f"{name[:6]:>6} " + " ".join(f"{v:5d}" for v in row))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``classifier train|eval`` to a ``diffvoc`` sub-command table (handlers: ``args.func(args) -> int``)."""
    p = subparsers.add_parser("classifier", help="the spoken-digit classifier behind the generation metrics",
                              description="Train or check the digit classifier used by FID/IS/mIS/AM/NDB.")
    sub = p.add_subparsers(dest="classifier_command", metavar="{train,eval}", required=True)
    t = sub.add_parser("train", help="train on DIGITS/train, pick the epoch on valid, report test accuracy",
                       description="Train the digit classifier on a `diffvoc corpus digits` folder (or SC09); "
                                   "the test split's voices are never seen in training.")
    t.add_argument("--data", required=True, help="digits corpus folder (train/valid/test/<word>/*.wav)")
    t.add_argument("-o", "--output", required=True, help="classifier folder (classifier.safetensors + .yaml)")
    t.add_argument("--epochs", type=positive_int, default=12)
    t.add_argument("--batch-size", type=positive_int, default=64)
    t.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate (one-cycle)")
    t.add_argument("--label-smoothing", type=fraction, default=0.02,
                   help="keeps softmax outputs off 0/1 so that mIS stays finite (default 0.02)")
    t.add_argument("--channels", type=positive_int_list, default=None, metavar="C1,C2,...",
                   help="conv block widths (default 16,32,64,128; 1 to 5 blocks)")
    t.add_argument("--seed", type=seed_int, default=0)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_classifier_train)
    e = sub.add_parser("eval", help="accuracy and confusion matrix on a split")
    e.add_argument("--classifier", required=True, help="classifier folder")
    e.add_argument("--data", required=True, help="digits corpus folder")
    e.add_argument("--split", default="test")
    e.add_argument("--threads", type=positive_int, default=None)
    e.set_defaults(func=cmd_classifier_eval)
    return p
