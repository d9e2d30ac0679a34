"""Noise sources for the reverse process: draw 0 is x_T, draw k ≥ 1 the noise added after step k.

Each source says what its draws are keyed by, which decides what agrees with what:
:class:`PositionalNoise` (seed, row, draw, absolute position) makes chunked, streamed and
whole-file vocoding agree; :class:`FirstRowNoise` gives every row of a batch the noise a lone
utterance would get; :class:`ClipIndexNoise` (seed, clip index, draw) makes generation independent
of the batch size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


class NoiseSource:
    """Gaussian draws for the sampler: draw 0 is x_T, draw k ≥ 1 the noise added after step k."""

    def __call__(self, draw: int, batch: int, start: int, length: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError


class GlobalNoise(NoiseSource):
    """Sequential draws from torch's global RNG (the order lmnt-com/diffwave uses)."""

    def __call__(self, draw, batch, start, length, device):
        return torch.randn(batch, length, device=device)


class GivenNoise(NoiseSource):
    """Draws taken from a list of tensors ``[B, T]`` (tests, reproducing another sampler)."""

    def __init__(self, draws: Sequence[torch.Tensor]) -> None:
        self.draws = list(draws)

    def __call__(self, draw, batch, start, length, device):
        return self.draws[draw][:, start:start + length].to(device)


class GeneratorNoise(NoiseSource):
    """Sequential draws from a seeded :class:`torch.Generator` (training: noise is a function of the seed)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, draw, batch, start, length, device):
        return torch.randn(batch, length, device=device, generator=self.generator)


class PositionalNoise(NoiseSource):
    """Noise keyed by (seed, item, draw, block of ``block`` samples): independent of chunking."""

    def __init__(self, seed: int, block: int = 4096) -> None:
        self.seed, self.block = int(seed), int(block)

    def _block(self, item: int, draw: int, j: int, device: torch.device) -> torch.Tensor:
        key = hashlib.blake2b(f"{self.seed}:{item}:{draw}:{j}".encode(), digest_size=8).digest()
        g = torch.Generator(device="cpu").manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))
        return torch.randn(self.block, generator=g)

    def __call__(self, draw, batch, start, length, device):
        j0, j1 = start // self.block, (start + length - 1) // self.block
        rows = []
        for b in range(batch):
            blocks = torch.cat([self._block(b, draw, j, device) for j in range(j0, j1 + 1)])
            off = start - j0 * self.block
            rows.append(blocks[off:off + length])
        return torch.stack(rows).to(device)


class FirstRowNoise(NoiseSource):
    """Every batch row draws the noise that row 0 of ``inner`` would (so a batch of different
    utterances gets the same noise each would get when vocoded alone)."""

    def __init__(self, inner: NoiseSource) -> None:
        self.inner = inner

    def __call__(self, draw, batch, start, length, device):
        row = self.inner(draw, 1, start, length, device)
        return row.expand(batch, length)


class ClipIndexNoise(NoiseSource):
    """Gaussian draws keyed by (seed, clip index, draw): clip ``first + b`` of a batch gets the same
    noise whatever the batch size, so generating in batches of 1 or 64 gives the same clips."""

    def __init__(self, seed: int, first: int = 0) -> None:
        self.seed, self.first = int(seed), int(first)

    def __call__(self, draw: int, batch: int, start: int, length: int, device: torch.device) -> torch.Tensor:
        rows = []
        for b in range(batch):
            key = hashlib.blake2b(f"gen:{self.seed}:{self.first + b}:{draw}".encode(), digest_size=8).digest()
            g = torch.Generator(device="cpu").manual_seed(int.from_bytes(key, "little") & ((1 << 63) - 1))
            rows.append(torch.randn(start + length, generator=g)[start:])
        return torch.stack(rows).to(device)
