"""Noise schedules: β/α/ᾱ for training and few-step inference schedules aligned to training steps.

Notation (REFERENCE §1): training β_1..β_T, α_t = 1 − β_t, ᾱ_t = Π α_s. A user's few-step schedule
η_1..η_S has γ_s = 1 − η_s, γ̄_s = Π γ. Step s runs the network at the fractional training step
t_s = t + (√ᾱ_t − √γ̄_s)/(√ᾱ_t − √ᾱ_{t+1}) where √ᾱ_{t+1} ≤ √γ̄_s ≤ √ᾱ_t (0-based t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffvoc.errors import ScheduleError


@dataclass(frozen=True)
class NoiseSchedule:
    """A sequence of β with its derived α and ᾱ (float64 numpy arrays)."""

    betas: np.ndarray

    def __post_init__(self) -> None:
        b = np.asarray(self.betas, dtype=np.float64)
        if b.ndim != 1 or b.size == 0:
            raise ScheduleError("a noise schedule needs at least one β")
        if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
            raise ScheduleError(f"every β must lie in (0, 1), got {b.tolist()}")
        object.__setattr__(self, "betas", b)

    @classmethod
    def linear(cls, start: float, end: float, steps: int) -> "NoiseSchedule":
        return cls(np.linspace(start, end, steps))

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alpha_bars(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    def __len__(self) -> int:
        return int(self.betas.size)

    def align(self, inference: "NoiseSchedule") -> np.ndarray:
        """Fractional 0-based training steps t_s for each step of ``inference``.

        Raises :class:`ScheduleError` when a step's noise level γ̄_s lies outside the training
        range [ᾱ_T, ᾱ_1] (the reference code silently drops such steps).
        """
        ab = self.alpha_bars
        sab = np.sqrt(ab)
        out = []
        for s, g in enumerate(inference.alpha_bars):
            rel = 1e-12
            if g > ab[0] * (1 + rel) or g < ab[-1] * (1 - rel):
                raise ScheduleError(
                    f"inference step {s + 1} (cumulative noise level 1-γ̄ = {1 - g:.6g}) is outside the "
                    f"training range [{1 - ab[0]:.6g}, {1 - ab[-1]:.6g}]; use smaller β values")
            g = min(max(g, ab[-1]), ab[0])
            t = int(np.searchsorted(-ab, -g, side="right")) - 1  # last t with ab[t] >= g
            t = min(max(t, 0), len(ab) - 2)
            sg = np.sqrt(g)
            out.append(t + (sab[t] - sg) / (sab[t] - sab[t + 1]))
        return np.asarray(out, dtype=np.float64)


def parse_schedule(text: str) -> list[float]:
    """Parse ``"1e-4,1e-3,0.01"`` into a list of β, with a clear error on bad input."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ScheduleError(f"a schedule is comma-separated numbers, got {text!r}") from None
    if not values:
        raise ScheduleError("empty schedule")
    NoiseSchedule(np.asarray(values))
    return values
