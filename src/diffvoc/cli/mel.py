"""`diffvoc mel`: an audio file's mel-spectrogram as ``.npy`` ([n_mels, frames] float32)."""

from __future__ import annotations

import argparse

from diffvoc.cli.common import add_config_args, config_from_args


def cmd_mel(args: argparse.Namespace) -> int:
    from diffvoc.audio import compute_mel, load_audio, peak_normalize
    from diffvoc.io import atomic_save_npy

    cfg = config_from_args(args).audio
    if args.checkpoint:
        from diffvoc.checkpoint import load_checkpoint

        cfg = load_checkpoint(args.checkpoint).config.audio
    audio = peak_normalize(load_audio(args.input, cfg.sample_rate), cfg.peak_normalize)
    mel = compute_mel(audio, cfg)
    atomic_save_npy(args.output, mel)
    print(f"{args.output}: mel {mel.shape[0]}x{mel.shape[1]} ({cfg.preset}, {cfg.sample_rate} Hz, hop {cfg.hop_length})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mel", help="compute a mel-spectrogram .npy ([n_mels, frames] float32)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--checkpoint", help="use this model's mel settings")
    add_config_args(p)
    p.set_defaults(func=cmd_mel)
