"""The noise schedule: β/α/ᾱ, the forward process q(x_t | x_0), the training range, the truncation
level and the alignment of few-step inference schedules — every quantity derived from β, written once.

Notation (DiffWave, Kong et al. 2021, §2 and §4): training β_1..β_T, α_t = 1 − β_t, ᾱ_t = Π_{s≤t} α_s;
q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (eq. 1–2), under PriorGrad's prior N(0, Σ) the noise is
σ ⊙ ε (Lee et al. 2022, eq. 5). A user's few-step schedule η_1..η_S has γ_s = 1 − η_s,
γ̄_s = Π γ; step s runs the network at the fractional training step
t_s = t + (√ᾱ_t − √γ̄_s)/(√ᾱ_t − √ᾱ_{t+1}) where √ᾱ_{t+1} ≤ √γ̄_s ≤ √ᾱ_t (0-based t; DiffWave
Appendix B, "fast sampling"). Truncation (TDPM, Zheng et al. 2023): the chain stops at step
T_trunc, whose noise level is 1 − ᾱ_{T_trunc}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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

    # ---- the training range -------------------------------------------------------------------------
    @property
    def noise_range(self) -> tuple[float, float]:
        """(1 − ᾱ_1, 1 − ᾱ_T): the noise levels the network was trained on; a few-step schedule's
        cumulative levels 1 − γ̄_s must stay inside it to be aligned."""
        ab = self.alpha_bars
        return float(1.0 - ab[0]), float(1.0 - ab[-1])

    def outside(self, betas: "np.ndarray | list[float]") -> int | None:
        """The 0-based index of the first step of the schedule ``betas`` whose cumulative noise level
        1 − γ̄_s leaves the training range (relative tolerance 1e-9), or ``None`` if all are inside."""
        ab = self.alpha_bars
        g = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
        bad = np.flatnonzero((g > ab[0] * (1 + 1e-9)) | (g < ab[-1] * (1 - 1e-9)))
        return int(bad[0]) if bad.size else None

    def check_inside(self, betas: "np.ndarray | list[float]", what: str = "inference step") -> None:
        """Raise :class:`ScheduleError` naming the step when ``betas`` leaves the training range."""
        s = self.outside(betas)
        if s is not None:
            level = 1.0 - float(np.prod(1.0 - np.asarray(betas, dtype=np.float64)[: s + 1]))
            lo, hi = self.noise_range
            raise ScheduleError(f"{what} {s + 1} (cumulative noise level 1-γ̄ = {level:.6g}) is outside the "
                                f"training range [{lo:.6g}, {hi:.6g}]; use smaller β values")

    # ---- truncation (TDPM) --------------------------------------------------------------------------
    def level(self, step: int) -> float:
        """The noise level 1 − ᾱ_t of the 1-based training step ``step`` (the truncation level at T_trunc)."""
        return float(1.0 - self.alpha_bars[step - 1])

    def step_reaching(self, noise_level: float) -> int:
        """The first 1-based step t whose noise level 1 − ᾱ_t reaches ``noise_level`` (T if none does)."""
        hit = np.flatnonzero(1.0 - self.alpha_bars >= float(noise_level))
        return int(hit[0]) + 1 if hit.size else len(self)

    # ---- the forward process ------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) · noise for 0-based steps ``t`` ``[B]`` (DiffWave eq. 2; with
        PriorGrad ``noise`` = σ ⊙ ε). ``x0``/``noise``: ``[B, T]``; the tables are cached per device."""
        a, b = self._tables(x0.device)
        return a[t].unsqueeze(1) * x0 + b[t].unsqueeze(1) * noise

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.__dict__.setdefault("_on", {})
        if device not in cache:
            ab = torch.tensor(self.alpha_bars, dtype=torch.float32)
            cache[device] = (ab.sqrt().to(device), (1 - ab).sqrt().to(device))
        return cache[device]

    def align(self, inference: "NoiseSchedule") -> np.ndarray:
        """Fractional 0-based training steps t_s for each step of ``inference``.

        Raises :class:`ScheduleError` when a step's noise level γ̄_s lies outside the training
        range [ᾱ_T, ᾱ_1] (the reference code silently drops such steps).
        """
        self.check_inside(inference.betas)
        ab = self.alpha_bars
        sab = np.sqrt(ab)
        out = []
        for g in inference.alpha_bars:
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
