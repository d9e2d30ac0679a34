"""A small grid search of the acoustic model's fast schedules on validation sentences.

As WaveGrad/DiffWave pick few-step schedules by search: for S = 2 a grid of (β_1, β_2), for S = 6 and
12 geometric sequences β_s = β_1 (β_S/β_1)^((s−1)/(S−1)) over a grid of (β_1, β_S), each kept only if
its cumulative noise levels lie inside the training range (aligned fractional steps,
:meth:`~diffvoc.diffusion.schedule.NoiseSchedule.align`). The objective is the teacher-forced mel L1
(ground-truth MAS durations, fixed noise) on the validation sentences; the stored default is always a
candidate, so the search can only improve on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from diffvoc.training.acoustic_metrics import mel_l1

if TYPE_CHECKING:
    from diffvoc.data.tts_corpus import Utterance
    from diffvoc.training.acoustic import AcousticTrainer

GRID_2 = [[b1, b2] for b1 in (0.01, 0.05, 0.1, 0.2, 0.4) for b2 in (0.5, 0.7, 0.9, 0.95, 0.99)]
ENDS = {6: ((1e-4, 1e-3, 1e-2, 0.05), (0.5, 0.7, 0.9, 0.95)), 12: ((1e-4, 1e-3, 1e-2), (0.3, 0.5, 0.7, 0.9))}


def candidates(steps: int, default: list[float] | None) -> list[list[float]]:
    """The grid for ``steps`` reverse steps (plus ``default``)."""
    if steps == 2:
        grid = [list(c) for c in GRID_2]
    else:
        lows, highs = ENDS.get(steps, ((1e-4, 1e-3, 1e-2), (0.5, 0.7, 0.9)))
        grid = [[float(v) for v in np.geomspace(lo, hi, steps)] for lo in lows for hi in highs]
    if default is not None and default not in grid:
        grid.insert(0, list(default))
    return grid


def search_fast_schedules(trainer: "AcousticTrainer", utts: list["Utterance"],
                          steps: tuple[int, ...] = (2, 6, 12)) -> tuple[dict[int, list[float]], dict[str, Any]]:
    """The best schedule per step count and a record of the search (for ``stats.yaml``)."""
    train = trainer.schedule
    best: dict[int, list[float]] = {}
    record: dict[str, Any] = {"objective": "teacher-forced mel L1 on the validation sentences",
                              "sentences": len(utts)}
    for k in steps:
        default = trainer.cfg.diffusion.fast_schedules.get(k)
        scored = []
        for betas in candidates(k, default):
            if train.outside(betas) is not None:
                continue
            gen = trainer.synthesize_set(utts, k, teacher_forced=True, schedule=betas)
            scored.append((float(np.mean([mel_l1(u.mel, g) for u, g in zip(utts, gen)])), betas))
        scored.sort(key=lambda x: x[0])
        best[k] = [float(b) for b in scored[0][1]]
        dflt = next((s for s, b in scored if b == default), None)
        record[str(k)] = {"best": best[k], "mel_l1": scored[0][0], "default_mel_l1": dflt, "candidates": len(scored)}
    return best, record
