"""`diffvoc vocode`: mel ``.npy`` or audio files → wav, every file as if vocoded alone."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from diffvoc.errors import DiffvocError


def _inputs_to_mels(vocoder, inputs: list[str]) -> tuple[list, list[int]]:
    """Mels and output lengths (samples) of mel ``.npy`` files or audio files (analysis–synthesis)."""
    from diffvoc.audio import load_mel

    mels, lengths = [], []
    for path in inputs:
        if path.endswith(".npy"):
            mel = load_mel(path, vocoder.config.audio.n_mels)
            if mel.ndim == 3:
                raise DiffvocError(f"{path}: give one mel per file ([n_mels, frames])")
            mels.append(mel)
            lengths.append(mel.shape[-1] * vocoder.hop)
        else:
            mel, length = vocoder.analyse_file(path)
            mels.append(mel)
            lengths.append(length)
    return mels, lengths


def cmd_vocode(args: argparse.Namespace) -> int:
    import torch

    from diffvoc.diffusion.schedule import parse_schedule
    from diffvoc.inference.vocoder import Vocoder
    from diffvoc.io import atomic_write_wav

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    many = len(args.inputs) > 1 or out.suffix.lower() != ".wav"
    if many:
        if out.exists() and not out.is_dir():
            raise DiffvocError(f"{out} exists and is not a folder (several inputs need an output folder)")
    elif not out.parent.exists() and str(out.parent):
        raise DiffvocError(f"cannot write {out}: folder {out.parent} does not exist")
    schedule = parse_schedule(args.schedule) if args.schedule else None
    vocoder = Vocoder.from_pretrained(args.checkpoint, device=args.device, precision=args.precision,
                                      compile=args.compile)
    sampler = vocoder.sampler(args.steps, schedule, args.full)  # validates the choice before any work
    mels, lengths = _inputs_to_mels(vocoder, args.inputs)
    targets = [out / (Path(p).name.removesuffix(".npy").rsplit(".", 1)[0] + ".wav") for p in args.inputs] if many else [out]
    if len(set(targets)) != len(targets):
        raise DiffvocError("two inputs would write the same output file; rename one")
    if many:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DiffvocError(f"cannot create output folder {out}: {e.strerror}") from None
    t0 = time.perf_counter()
    seconds = 0.0
    wavs = vocoder.vocode_batch(mels, steps=args.steps, schedule=schedule, full=args.full, seed=args.seed,
                                batch_size=args.batch_size)
    for i, wav in enumerate(wavs):
        wav = wav[: lengths[i]]
        atomic_write_wav(targets[i], wav, vocoder.sample_rate)
        seconds += len(wav) / vocoder.sample_rate
    elapsed = time.perf_counter() - t0
    print(f"vocoded {len(mels)} file(s), {seconds:.2f} s of audio in {elapsed:.2f} s "
          f"({len(sampler)} steps, {vocoder.precision}, real-time factor {elapsed / max(seconds, 1e-9):.3f}) -> {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocode", help="mel .npy or audio files -> wav")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True, help="a .wav for one input, else a folder")
    p.add_argument("--checkpoint", default=None, help="checkpoint dir, run dir or lmnt weights.pt (default: bundled)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=6, help="use the model's stored N-step schedule (default 6)")
    g.add_argument("--schedule", help="explicit inference β, comma-separated")
    g.add_argument("--full", action="store_true", help="all training steps (ancestral sampling)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network precision: auto (default: bf16 on CPUs with AMX/AVX512-BF16 and on GPUs, "
                        "else fp32), fp32 (exact: lmnt-com/diffwave's output to float rounding), bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the network step (eager fallback)")
    p.set_defaults(func=cmd_vocode)
