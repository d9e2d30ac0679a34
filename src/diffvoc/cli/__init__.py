"""The ``diffvoc`` command: thin subcommands over the modules.

Every :class:`~diffvoc.errors.DiffvocError` ends as one line on stderr and exit status 1;
set ``DIFFVOC_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from diffvoc.errors import DiffvocError


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML config (default: the presets below)")
    p.add_argument("--preset", default=None, choices=["hifigan", "lmnt"], help="mel recipe (default hifigan)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set audio.sample_rate=16000 (repeatable)")


def _config(args: argparse.Namespace):
    from diffvoc.config import Config, apply_presets

    if args.config and args.preset:
        raise DiffvocError("give either --config or --preset, not both")
    if args.config:
        cfg = Config.load(args.config)
    else:
        cfg = Config.from_dict(apply_presets({"audio": {"preset": args.preset or "hifigan"}}))
    return cfg.with_overrides(args.overrides)


def cmd_mel(args: argparse.Namespace) -> int:
    from diffvoc.audio import compute_mel, load_audio, peak_normalize
    from diffvoc.io import atomic_save_npy

    cfg = _config(args).audio
    if args.checkpoint:
        from diffvoc.checkpoint import load_checkpoint

        cfg = load_checkpoint(args.checkpoint).config.audio
    audio = peak_normalize(load_audio(args.input, cfg.sample_rate), cfg.peak_normalize)
    mel = compute_mel(audio, cfg)
    atomic_save_npy(args.output, mel)
    print(f"{args.output}: mel {mel.shape[0]}x{mel.shape[1]} ({cfg.preset}, {cfg.sample_rate} Hz, hop {cfg.hop_length})")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from diffvoc.data.dataset import feature_dir, load_stats, preprocess

    cfg = _config(args)
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


def cmd_train(args: argparse.Namespace) -> int:
    from diffvoc.config import Config
    from diffvoc.training.trainer import Trainer

    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])  # also on --resume
    cfg = Config.load(args.config).with_overrides(overrides)
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

    from diffvoc.io import atomic_write_wav
    from diffvoc.diffusion.schedule import parse_schedule
    from diffvoc.inference.vocoder import Vocoder

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


def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from diffvoc import __version__

    parser = argparse.ArgumentParser(prog="diffvoc", description="Diffusion vocoders: DiffWave, PriorGrad, "
                                     "InferGrad and truncated diffusion.")
    parser.add_argument("--version", action="version", version=f"diffvoc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("mel", help="compute a mel-spectrogram .npy ([n_mels, frames] float32)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--checkpoint", help="use this model's mel settings")
    _add_config_args(p)
    p.set_defaults(func=cmd_mel)

    p = sub.add_parser("preprocess", help="cache features and split a corpus (folder, LJSpeech or file list)")
    p.add_argument("source")
    p.add_argument("-o", "--output", required=True, help="data folder")
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--valid-fraction", type=float, default=0.02)
    p.add_argument("--test-fraction", type=float, default=0.02)
    p.add_argument("--quiet", action="store_true")
    _add_config_args(p)
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("train", help="train a model (DDP: run under torchrun)")
    p.add_argument("config", help="YAML config (see recipes/)")
    p.add_argument("--run-dir", required=True, help="checkpoints and TensorBoard logs go here")
    p.add_argument("--data", help="preprocessed data folder (overrides data.path)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/latest")
    p.add_argument("--init-from", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop (validate and save) after this much training time, e.g. for a fixed GPU budget")
    p.add_argument("--deadline", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="finish, final validation and save included, within this many seconds of the process's start")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

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

    from diffvoc.data.synth import add_corpus_parser
    from diffvoc.evaluation.demo import add_demo_parser
    from diffvoc.evaluation.copy_synthesis import add_evaluate_parser
    from diffvoc.inference.onnx import add_export_parser
    from diffvoc.evaluation.generative import add_classifier_parser
    from diffvoc.inference.generator import add_generate_parser
    from diffvoc.evaluation.schedule_search import add_search_schedule_parser
    from diffvoc.evaluation.report import add_report_parser

    add_corpus_parser(sub)
    add_evaluate_parser(sub)
    add_report_parser(sub)
    add_export_parser(sub)
    add_demo_parser(sub)
    add_generate_parser(sub)
    add_classifier_parser(sub)
    add_search_schedule_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DiffvocError as e:
        if os.environ.get("DIFFVOC_DEBUG"):
            raise
        print(f"diffvoc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"diffvoc {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"diffvoc {args.command}: error: out of memory", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
