"""`diffvoc export`: the network and conditioner as ONNX files."""

from __future__ import annotations

import argparse
from typing import Any

from diffvoc.checkpoint import load_checkpoint
from diffvoc.inference.onnx import export_onnx, export_paths
from diffvoc.inference.vocoder import Vocoder


def cmd_export(args: argparse.Namespace) -> int:
    export_paths(args.output)  # the output names are checked before the model is loaded
    vocoder = Vocoder.from_checkpoint(load_checkpoint(args.checkpoint))
    paths = export_onnx(vocoder, args.output)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export the denoiser and conditioner to ONNX")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("-o", "--output", required=True, help="model.onnx (the conditioner goes beside it)")
    p.set_defaults(func=cmd_export)
    return p
