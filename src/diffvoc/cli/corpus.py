"""`diffvoc corpus speech|digits|real|mixed`: make training corpora (TTS engines, recordings from packages)."""

from __future__ import annotations

import argparse

from diffvoc.data.mixed import BAND_LIMITED_DECISION, make_mixed_corpus, parse_shares
from diffvoc.data.real import make_real_corpus
from diffvoc.data.recordings import PACKAGES
from diffvoc.data.synth import make_digits_corpus, make_speech_corpus
from diffvoc.data.voices import APT_INSTALL


def _run_speech(args: argparse.Namespace) -> int:
    manifest = make_speech_corpus(
        args.out,
        minutes=args.minutes,
        rate=args.rate,
        seed=args.seed,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    t = manifest["totals"]
    print(
        f"wrote {t['minutes']:.1f} min of speech ({t['utterances']} utterances, {t['voices']} "
        f"voices, {t['skipped']} skipped) to {args.out} in {t['seconds_to_make']:.0f} s"
    )
    return 0


def _run_digits(args: argparse.Namespace) -> int:
    manifest = make_digits_corpus(
        args.out,
        n_per_class_per_voice=args.per_voice,
        rate=args.rate,
        seed=args.seed,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    t = manifest["totals"]
    print(
        f"wrote {t['clips']} digit clips ({t['voices']} voices, {t['skipped']} skipped) "
        f"to {args.out} in {t['seconds_to_make']:.0f} s"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``corpus speech OUT`` and ``corpus digits OUT`` to an argparse subparsers object.

    Each leaf parser sets ``func`` to a handler that takes the parsed Namespace and returns an
    exit code. Returns the ``corpus`` parser.
    """
    corpus = subparsers.add_parser(
        "corpus",
        help="make a training corpus: synthetic (flite, festival, espeak-ng) or real recordings from Debian",
        description=f"Make synthetic corpora with the TTS engines from Debian ({APT_INSTALL}), or corpora of "
        "real recordings shipped in Debian packages (real, mixed).",
    )
    kinds = corpus.add_subparsers(
        dest="corpus_command", metavar="{speech,digits,real,mixed}", required=True
    )

    def common(parser: argparse.ArgumentParser, rate: int) -> None:
        parser.add_argument("out", help="output folder (new, empty or a previous corpus)")
        parser.add_argument("--rate", type=int, default=rate, help=f"sample rate (default {rate})")
        parser.add_argument("--seed", type=int, default=0, help="plan seed (default 0)")
        parser.add_argument(
            "--jobs", type=int, default=None, help="worker processes (default: all CPUs)"
        )
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    speech = kinds.add_parser(
        "speech",
        help="multi-speaker English sentences, LJSpeech layout",
        description="Multi-speaker English speech corpus in LJSpeech layout with splits.",
    )
    common(speech, 22050)
    speech.add_argument("--minutes", type=float, default=60.0, help="minutes of audio (default 60)")
    speech.set_defaults(func=_run_speech)

    digits = kinds.add_parser(
        "digits",
        help="one-second spoken digits, SC09-like layout",
        description="Spoken digits zero to nine, one-second clips, SC09-like layout.",
    )
    common(digits, 16000)
    digits.add_argument(
        "--per-voice",
        type=int,
        default=16,
        metavar="N",
        help="clips per word per voice (default 16)",
    )
    digits.set_defaults(func=_run_digits)

    add_real_parsers(kinds, common)
    return corpus





def _run_real(args: argparse.Namespace) -> int:
    packages = [p.strip() for p in args.packages.split(",") if p.strip()] if args.packages else None
    manifest = make_real_corpus(args.out, rate=args.rate, packages=packages, seed=args.seed, jobs=args.jobs,
                                per_speaker=args.per_speaker, progress=not args.quiet)
    t = manifest["totals"]
    rejected = ", ".join(f"{n} {why}" for why, n in t["rejected"].items()) or "none"
    print(f"wrote {t['minutes']:.1f} min of real speech ({t['kept']} of {t['recordings']} recordings, "
          f"{t['speakers']} speakers; rejected: {rejected}) to {args.out} in {t['seconds_to_make']:.0f} s")
    print("splits: " + ", ".join(f"{k} {v} ({t['split_minutes'][k]:.1f} min)" for k, v in t["splits"].items()))
    return 0


def _run_mixed(args: argparse.Namespace) -> int:
    manifest = make_mixed_corpus(args.out, args.tts, args.real, parse_shares(args.share), seed=args.seed)
    t = manifest["totals"]
    by = ", ".join(f"{k} {v:.1f} min" for k, v in t["train_minutes_by_source"].items())
    print(f"wrote {t['clips']} clips to {args.out}; training minutes: {by}")
    print("splits: " + ", ".join(f"{k} {v}" for k, v in t["splits"].items()))
    return 0


def add_real_parsers(kinds: argparse._SubParsersAction, common) -> None:
    """Add ``real`` and ``mixed`` to the ``diffvoc corpus`` sub-command table (``common`` adds OUT etc.)."""
    real = kinds.add_parser(
        "real",
        help="real recorded speech from Debian packages (KLettres, Asterisk prompts), LJSpeech layout",
        description="Real recordings from Debian packages (" + ", ".join(PACKAGES) + "), trimmed, "
                    "filtered and resampled, with unseen-speaker test splits.",
    )
    common(real, 22050)
    real.add_argument("--packages", default=None, metavar="P1,P2",
                      help=f"comma-separated Debian packages (default all: {','.join(PACKAGES)})")
    real.add_argument("--per-speaker", type=int, default=None, metavar="N",
                      help="only the first N recordings of each speaker (a quick small corpus)")
    real.set_defaults(func=_run_real)

    mixed = kinds.add_parser(
        "mixed",
        help="a synthetic corpus plus a real one, each source's share configurable",
        description="Join `diffvoc corpus speech` and `diffvoc corpus real` outputs, keeping both held-out splits.",
    )
    mixed.add_argument("out", help="output folder (new, empty or a previous mixed corpus)")
    mixed.add_argument("--tts", required=True, metavar="DIR", help="a `diffvoc corpus speech` folder")
    mixed.add_argument("--real", required=True, metavar="DIR", help="a `diffvoc corpus real` folder")
    mixed.add_argument("--share", action="append", default=[], metavar="SOURCE=FRACTION",
                       help="fraction of a source's training clips kept (SOURCE: tts, klettres, asterisk; "
                            f"default 1, asterisk {BAND_LIMITED_DECISION['default_asterisk_share']:g}); repeatable")
    mixed.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    mixed.set_defaults(func=_run_mixed)
