"""Copy a checkpoint's EMA weights (fp16), config and statistics into the package as the bundled model.

A truncated (TDPM) model's generator EMA weights travel with it (``generator.safetensors``); the
discriminator and the raw training weights do not.

    python scripts/bundle_model.py runs/interim [--dest src/diffvoc/pretrained/default]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from diffvoc.checkpoint import EXTRA_WEIGHTS, load_checkpoint, save_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--dest", default=str(ROOT / "src" / "diffvoc" / "pretrained" / "default"))
    args = ap.parse_args()
    ck = load_checkpoint(args.checkpoint)
    card = Path(args.dest) / "MODEL_CARD.md"
    text = card.read_text() if card.is_file() else None  # the checkpoint writer replaces the folder
    extras = {k: v for k, v in ck.extras.items() if k in EXTRA_WEIGHTS}  # what inference needs
    path = save_checkpoint(args.dest, ck.config, ck.stats, ck.weights, dtype=torch.float16, extra_weights=extras or None)
    if text is not None:
        (path / "MODEL_CARD.md").write_text(text)
    size = sum(p.stat().st_size for p in path.iterdir())
    print(f"{path}: {size / 1e6:.2f} MB from {ck.path}")


if __name__ == "__main__":
    main()
