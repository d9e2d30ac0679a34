"""`diffvoc vocode`: mel ``.npy`` or audio files → wav, every file as if vocoded alone.

All inputs are checked from their headers (kind, shape, length) before any work; the files are then
vocoded ``--batch-size`` at a time (so memory is bounded by one group, not by the number of inputs) and
the outputs written aside, renamed into place only when every one of them is complete
(:func:`diffvoc.io.atomic_files`): a failure leaves no output at all.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from diffvoc.cli.common import beta_list, positive_int, seed_int
from diffvoc.errors import DiffvocError


def _probe(vocoder, path: str) -> None:
    """Check one input from its header only (no samples read): kind, mel shape and bands, length."""
    import soundfile as sf

    from diffvoc.audio import check_length, probe_mel
    from diffvoc.errors import AudioError

    p = Path(path)
    if not p.exists():
        raise DiffvocError(f"no such file: {p}")
    if not p.is_file():
        raise DiffvocError(f"{p} is not a file")
    if path.endswith(".npy"):
        if len(probe_mel(p, vocoder.config.audio.n_mels, vocoder.hop / vocoder.sample_rate)) == 3:
            raise DiffvocError(f"{path}: give one mel per file ([n_mels, frames])")
        return
    try:
        info = sf.info(str(p))
    except Exception:  # noqa: BLE001 - load_audio gives the message
        from diffvoc.audio import load_audio

        load_audio(p)
        raise AudioError(f"cannot read {p} as audio") from None
    if info.samplerate > 0:
        check_length(info.frames / info.samplerate, str(p), vocoder.max_seconds)


def _inputs_to_mels(vocoder, inputs: list[str]) -> tuple[list, list[int]]:
    """Mels and output lengths (samples) of mel ``.npy`` files or audio files (analysis–synthesis)."""
    from diffvoc.audio import load_mel

    mels, lengths = [], []
    for path in inputs:
        if path.endswith(".npy"):
            mel = load_mel(path, vocoder.config.audio.n_mels, vocoder.hop / vocoder.sample_rate)
            if mel.ndim == 3:
                raise DiffvocError(f"{path}: give one mel per file ([n_mels, frames])")
            mels.append(mel)
            lengths.append(mel.shape[-1] * vocoder.hop)
        else:
            mel, length = vocoder.analyse_file(path)
            mels.append(mel)
            lengths.append(length)
    return mels, lengths


def _targets(inputs: list[str], out: Path, many: bool) -> list[Path]:
    """The output file of each input (``OUT/<name>.wav`` for several inputs, else ``OUT``)."""
    if many and out.exists() and not out.is_dir():
        raise DiffvocError(f"{out} exists and is not a folder (several inputs need an output folder)")
    if not many:
        if out.is_dir():
            raise DiffvocError(f"cannot write {out}: it is a folder")
        if str(out.parent) and not out.parent.is_dir():
            why = f"{out.parent} is not a folder" if out.parent.exists() else f"folder {out.parent} does not exist"
            raise DiffvocError(f"cannot write {out}: {why}")
        return [out]
    targets = [out / (Path(p).name.removesuffix(".npy").rsplit(".", 1)[0] + ".wav") for p in inputs]
    if len(set(targets)) != len(targets):
        raise DiffvocError("two inputs would write the same output file; rename one")
    return targets


def cmd_vocode(args: argparse.Namespace) -> int:
    import contextlib

    import torch

    from diffvoc.diffusion.schedule import parse_schedule
    from diffvoc.inference.vocoder import Vocoder
    from diffvoc.io import atomic_files, output_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    many = len(args.inputs) > 1 or out.suffix.lower() != ".wav"
    targets = _targets(args.inputs, out, many)
    schedule = parse_schedule(",".join(map(str, args.schedule))) if args.schedule else None
    vocoder = Vocoder.from_pretrained(args.checkpoint, device=args.device, precision=args.precision,
                                      compile=args.compile)
    sampler = vocoder.sampler(args.steps, schedule, args.full)  # validates the choice before any work
    for path in args.inputs:
        _probe(vocoder, path)
    t0 = time.perf_counter()
    seconds = 0.0
    with output_folder(out) if many else contextlib.nullcontext(), atomic_files() as files:
        for g in range(0, len(args.inputs), args.batch_size):
            group = args.inputs[g:g + args.batch_size]
            mels, lengths = _inputs_to_mels(vocoder, group)
            wavs = vocoder.vocode_batch(mels, steps=args.steps, schedule=schedule, full=args.full, seed=args.seed,
                                        batch_size=args.batch_size)
            for target, wav, length in zip(targets[g:g + args.batch_size], wavs, lengths):
                files.write_wav(target, wav[:length], vocoder.sample_rate)
                seconds += length / vocoder.sample_rate
    elapsed = time.perf_counter() - t0
    print(f"vocoded {len(args.inputs)} file(s), {seconds:.2f} s of audio in {elapsed:.2f} s "
          f"({len(sampler)} steps, {vocoder.precision}, real-time factor {elapsed / max(seconds, 1e-9):.3f}) -> {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocode", help="mel .npy or audio files -> wav")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", required=True, help="a .wav for one input, else a folder")
    p.add_argument("--checkpoint", default=None, help="checkpoint dir, run dir or lmnt weights.pt (default: bundled)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=positive_int, default=6, help="use the model's stored N-step schedule (default 6)")
    g.add_argument("--schedule", type=beta_list, help="explicit inference β, comma-separated")
    g.add_argument("--full", action="store_true", help="all training steps (ancestral sampling)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network precision: auto (default: bf16 on CPUs with AMX/AVX512-BF16 and on GPUs, "
                        "else fp32), fp32 (exact: lmnt-com/diffwave's output to float rounding), bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the network step (eager fallback)")
    p.set_defaults(func=cmd_vocode)
