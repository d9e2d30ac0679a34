"""`diffvoc tts`: text → wav with the bundled acoustic model and the bundled vocoder (or others)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from diffvoc.errors import DiffvocError


def _check_output(path: str) -> Path:
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise DiffvocError(f"-o {out} is a folder; give a .wav file name")
    if not parent.is_dir():
        raise DiffvocError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DiffvocError(f"cannot write {out}: folder {parent} is not writable")
    return out


def cmd_tts(args: argparse.Namespace) -> int:
    from diffvoc.inference.tts import TextToSpeech

    tts = TextToSpeech.from_pretrained(args.checkpoint, vocoder=args.vocoder, device=args.device)
    if args.list_speakers:
        print("\n".join(["average"] + tts.speakers))
        return 0
    if args.text is None:
        raise DiffvocError("give the text to speak (or --list-speakers)")
    if args.output is None:
        raise DiffvocError("give -o OUT.wav")
    out = _check_output(args.output)
    if not args.text.strip():
        raise DiffvocError("the text is empty")
    if args.steps not in tts.steps:
        raise DiffvocError(f"--steps must be one of {tts.steps}, got {args.steps}")
    tts.speaker_id(args.speaker)  # refuse an unknown speaker before any work
    from diffvoc.io import atomic_write_wav

    wav, sr = tts.synthesize(args.text, speaker=args.speaker, steps=args.steps, seed=args.seed,
                             vocoder_steps=args.vocoder_steps, length_scale=args.length_scale)
    atomic_write_wav(out, wav, sr)
    which = "Griffin-Lim" if tts.uses_griffin_lim else f"diffusion vocoder, {args.vocoder_steps} steps"
    print(f"{out}: {len(wav) / sr:.2f} s at {sr} Hz (speaker {args.speaker or tts.default_speaker}, "
          f"{args.steps} acoustic steps, {which})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tts", help="speak text: the acoustic model (text → mel) and a vocoder (mel → wav)")
    p.add_argument("text", nargs="?", help="the text to speak (English by default)")
    p.add_argument("-o", "--output", help="the .wav to write")
    p.add_argument("--speaker", default=None, help="a voice of the model (--list-speakers), or 'average'")
    p.add_argument("--steps", type=int, default=6, help="acoustic-model reverse steps (a stored schedule: 2, 6, 12)")
    p.add_argument("--vocoder", default=None, metavar="CKPT|griffin-lim",
                   help="vocoder checkpoint (default: the bundled one) or griffin-lim")
    p.add_argument("--vocoder-steps", type=int, default=6)
    p.add_argument("--checkpoint", default=None, help="acoustic-model checkpoint (default: the bundled one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--length-scale", type=float, default=1.0, help="> 1 speaks slower")
    p.add_argument("--list-speakers", action="store_true", help="print the model's voices and exit")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=cmd_tts)
