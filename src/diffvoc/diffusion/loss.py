"""The diffusion ε-loss: DiffWave's, Mahalanobis under PriorGrad's prior.

t ~ U{1..T}, ε ~ N(0, I), noise = σ ⊙ ε, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) noise. Loss
mean(((ε_θ − noise)/σ)²): with σ = 1 DiffWave's ‖ε − ε_θ(x_t, t)‖² (Kong et al. 2021, eq. 3 with
the unweighted objective of Ho et al. 2020); with PriorGrad's σ, ‖ε − ε_θ‖² under Σ⁻¹ (Lee et al.
2022, eq. 6 and Alg. 1). ``l1`` uses |·| instead (as lmnt-com/diffwave trains).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffvoc.diffusion.schedule import NoiseSchedule


@dataclass
class DiffusionBatch:
    """What one training step feeds the network."""

    x_t: torch.Tensor  # [B, T]
    t: torch.Tensor  # [B] int64, 0-based
    noise: torch.Tensor  # σ ⊙ ε, [B, T]
    std: torch.Tensor  # σ, [B, T] or [B, 1]

    def items(self, sl: slice) -> "DiffusionBatch":
        """The batch items ``sl`` (a micro-batch)."""
        return DiffusionBatch(self.x_t[sl], self.t[sl], self.noise[sl], self.std[sl])


class DiffusionLoss:
    """ε-prediction loss of DiffWave, weighted by Σ⁻¹ under a PriorGrad prior."""

    def __init__(self, schedule: NoiseSchedule, kind: str = "l2") -> None:
        if kind not in ("l1", "l2"):
            raise ValueError(f"loss kind must be l1 or l2, got {kind!r}")
        self.kind = kind
        self.schedule = schedule

    def q_sample(self, x0: torch.Tensor, std: torch.Tensor, t: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, max_step: int | None = None) -> DiffusionBatch:
        """Draw t (uniform over 0..max_step−1, default all T), ε ~ N(0, I) and x_t ~ q(x_t | x_0) under
        the prior (:meth:`NoiseSchedule.q_sample` with noise σ ⊙ ε)."""
        B = x0.shape[0]
        T = len(self.schedule) if max_step is None else max_step
        if t is None:
            t = torch.randint(0, T, (B,), device=x0.device, generator=generator)
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        noise = std * eps
        return DiffusionBatch(x_t=self.schedule.q_sample(x0, noise, t), t=t, noise=noise, std=std)

    def __call__(self, eps_pred: torch.Tensor, batch: DiffusionBatch) -> torch.Tensor:
        d = (eps_pred.squeeze(1).float() - batch.noise.float()) / batch.std.float()
        return d.pow(2).mean() if self.kind == "l2" else d.abs().mean()
