"""Copy an acoustic run's newest checkpoint (EMA weights in fp16, config with the searched schedules, phone
prior and inventory) into the package as the bundled acoustic model.

    python scripts/bundle_acoustic.py runs/acoustic_prior/priorgrad [--speaker flite:slt]

If the newest checkpoint has no schedule search yet (a run stopped between saves), the search runs first
(on the run's validation sentences) and the checkpoint is saved again with it. The folder's MODEL_CARD.md is kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from diffvoc.acoustic_checkpoint import export_acoustic, load_acoustic_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--dest", default=str(ROOT / "src" / "diffvoc" / "pretrained" / "acoustic"))
    ap.add_argument("--speaker", default="flite:slt", help="the default voice of `diffvoc tts`")
    args = ap.parse_args()
    ck = load_acoustic_checkpoint(args.run)
    if "schedule_search" not in ck.stats:
        from diffvoc.training.acoustic import AcousticTrainer

        tr = AcousticTrainer(None, args.run, resume=True, progress=False)
        tr.search_schedules()
        tr.save()
        tr.close()
        ck = load_acoustic_checkpoint(args.run)
    if args.speaker not in ck.stats["speakers"]:
        sys.exit(f"{args.speaker} is not a voice of this model")
    card = Path(args.dest) / "MODEL_CARD.md"
    text = card.read_text() if card.is_file() else None  # the checkpoint writer replaces the folder
    path = export_acoustic(ck.path, args.dest, extra_stats={"default_speaker": args.speaker})
    if text is not None:
        (path / "MODEL_CARD.md").write_text(text)
    print(f"{path}: from {ck.path}")


if __name__ == "__main__":
    main()
