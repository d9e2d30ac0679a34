"""Reverse-process samplers (DiffWave's full ancestral and fast aligned sampling).

For each reverse step n (from the noisiest) with schedule β (full) or η (fast):
x ← (x − β_n/√(1 − ᾱ_n) · ε_θ(x, t_n, c)) / √α_n, then + σ_n · (prior std) · z except at the last
step, σ_n = √((1 − ᾱ_{n−1})/(1 − ᾱ_n) · β_n), and x is clamped to [−1, 1]. The fast sampler feeds
the network the aligned fractional step t_n (:meth:`NoiseSchedule.align`).

Noise comes from a :class:`NoiseSource`. :class:`PositionalNoise` makes each sample's noise a
function of (seed, batch item, draw, absolute position), so that chunked, streamed and whole-file
vocoding draw the same noise and agree.

Training through the sampler (InferGrad, :mod:`diffvoc.diffusion.infergrad`): :meth:`DiffusionSampler.sample`
is differentiable when called with gradients enabled. ``checkpoint=True`` wraps each step's network
call in :func:`torch.utils.checkpoint.checkpoint`, so the backward pass keeps only x_n per step
and recomputes one network call at a time (memory of about one step instead of K). ``clamp``
chooses what the [−1, 1] clamp does to gradients (``hard``: zero outside, as inference; ``ste``:
the same forward values with the gradient passed straight through; ``none``: no clamp).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from diffvoc.diffusion.noise import NoiseSource
from diffvoc.diffusion.schedule import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B,T], t [B]) -> ε [B,1,T]


class DiffusionSampler:
    """Ancestral sampling over a schedule aligned to the training schedule.

    Args:
        train: the training schedule β_1..β_T.
        inference: the schedule to sample with (``None``: the training schedule, all T steps).
        clamp: clamp x to [−1, 1] after every step, as the reference implementation does.
        truncated: the chain ends at a truncation level (TDPM): x_T comes from the implicit prior
            (``generate``), not from N(0, σ²).
    """

    def __init__(self, train: NoiseSchedule, inference: NoiseSchedule | None = None, clamp: bool = True,
                 truncated: bool = False) -> None:
        self.train = train
        self.full = inference is None
        self.inference = train if inference is None else inference
        self.steps = np.arange(len(train), dtype=np.float64) if self.full else train.align(self.inference)
        self.clamp = clamp
        self.truncated = truncated  # a truncated chain (TDPM): x_T must come from `generate`
        beta = self.inference.betas
        ab = self.inference.alpha_bars
        self.c1 = 1.0 / np.sqrt(1.0 - beta)
        self.c2 = beta / np.sqrt(1.0 - ab)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        self.sigma = np.sqrt((1.0 - ab_prev) / (1.0 - ab) * beta)

    @classmethod
    def fast(cls, train: NoiseSchedule, betas: Sequence[float], clamp: bool = True,
             truncated: bool = False) -> "DiffusionSampler":
        """A few-step sampler over ``betas``, aligned to the training schedule ``train``."""
        return cls(train, NoiseSchedule(np.asarray(betas, dtype=np.float64)), clamp, truncated)

    def __len__(self) -> int:
        return len(self.inference)

    def sample(self, denoise: Denoiser, std: torch.Tensor, batch: int, length: int, noise: NoiseSource,
               start: int = 0, device: torch.device | str = "cpu", x_start: torch.Tensor | None = None,
               checkpoint: bool = False, clamp: str | None = None,
               generate: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Run the reverse process; returns x_0 ``[batch, length]``.

        ``std`` is the prior's σ (``[B, length]`` or ``[B, 1]``); ``start`` is the absolute sample
        offset of this segment (for :class:`PositionalNoise`); ``x_start`` overrides x_T;
        ``generate`` maps the first draw ε to x_T (a truncated chain's implicit prior,
        :mod:`diffvoc.diffusion.truncation`) instead of x_T = σ ⊙ ε.
        Differentiable under grad mode: ``checkpoint`` recomputes each network call in the backward
        pass instead of storing its activations; ``clamp`` (``hard`` | ``ste`` | ``none``) overrides
        the sampler's own clamping (``None``: ``hard`` if the sampler clamps, else ``none``).
        """
        device = torch.device(device)
        mode = clamp if clamp is not None else ("hard" if self.clamp else "none")
        if mode not in ("hard", "ste", "none"):
            raise ValueError(f"clamp must be hard, ste or none, got {mode!r}")
        use_ckpt = checkpoint and torch.is_grad_enabled()
        if x_start is not None:
            x = x_start
        elif generate is not None:
            x = generate(noise(0, batch, start, length, device))
        elif self.truncated:
            raise ValueError("a truncated sampler starts from the implicit prior: pass generate")
        else:
            x = std * noise(0, batch, start, length, device)
        n_steps = len(self)
        step_t = torch.tensor(self.steps, dtype=torch.float32, device=device)
        for n in range(n_steps - 1, -1, -1):
            t = (step_t[n].round().long() if self.full else step_t[n]).expand(batch)
            # ε_θ(x_n, t_n, c); under checkpointing only x_n is kept for the backward pass
            eps = _checkpoint(denoise, x, t, use_reentrant=False) if use_ckpt else denoise(x, t)
            eps = eps.squeeze(1).to(x.dtype)
            # x_{n−1} = (x_n − β_n/√(1 − ᾱ_n) ε_θ)/√α_n  (c1 = 1/√α_n, c2 = β_n/√(1 − ᾱ_n))
            x = self.c1[n] * (x - self.c2[n] * eps)
            if n > 0:  # + σ_n · (prior std) · z, σ_n = √((1 − ᾱ_{n−1})/(1 − ᾱ_n) β_n)
                x = x + self.sigma[n] * (std * noise(n_steps - n, batch, start, length, device))
            if mode == "hard":
                x = x.clamp(-1.0, 1.0)
            elif mode == "ste":  # forward: the clamp; backward: identity
                x = x + (x.clamp(-1.0, 1.0) - x).detach()
        return x
