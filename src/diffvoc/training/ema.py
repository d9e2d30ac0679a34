"""Exponential moving average of a module's weights, shared by every trainer in :mod:`diffvoc.training`.

DiffWave, PriorGrad and the acoustic model all evaluate and ship the EMA of the training weights
(``train.ema_decay`` = 0.999, REFERENCE §1):

    θ̄ ← d · θ̄ + (1 − d) · θ,        d = min(ema_decay, (1 + step) / (10 + step)),

the warm-up form of the decay, so that the average is not dominated by the random initialisation in
the first steps. The vocoder trainer calls :meth:`EMA.update` on every step of its hot loop, so the
float32 tensors go through one ``torch._foreach`` pair (cached after the first call) instead of a
Python loop over ~100 tensors; other floating tensors are blended one by one and integer buffers
are copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch


def warmup_decay(decay: float, step: int) -> float:
    """The decay used at ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


def _check_keys(needed: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> None:
    """A :class:`KeyError` naming the first of ``needed``'s tensors that ``weights`` lacks."""
    missing = [k for k in needed if k not in weights]
    if missing:
        raise KeyError(f"EMA weights lack {len(missing)} tensor(s), e.g. {missing[0]!r}")


class EMA:
    """The EMA weights ``shadow`` (float32, on the module's device) of ``module``.

    Args:
        module: the trained module; its ``state_dict()`` keys are the shadow's keys.
        weights: start from these (e.g. a checkpoint's EMA weights on ``--resume``); default: a copy
            of the module's current weights.
    """

    def __init__(self, module: torch.nn.Module, weights: Mapping[str, torch.Tensor] | None = None) -> None:
        self.module = module
        live = module.state_dict()
        src = live if weights is None else weights
        _check_keys(live, src)
        self.shadow: dict[str, torch.Tensor] = {
            k: src[k].detach().to(device=live[k].device, dtype=torch.float32 if live[k].is_floating_point()
                                  else live[k].dtype).clone() for k in live}
        self._pairs: tuple[list[torch.Tensor], ...] | None = None

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """θ̄ ← decay·θ̄ + (1 − decay)·θ for floating tensors; integer buffers are copied."""
        if self._pairs is None:
            live = self.module.state_dict()  # tensors sharing the parameters' storage
            fp32 = [k for k, v in live.items() if v.dtype == torch.float32]
            other = [k for k, v in live.items() if v.is_floating_point() and v.dtype != torch.float32]
            ints = [k for k, v in live.items() if not v.is_floating_point()]
            self._pairs = tuple(t for keys in (fp32, other, ints)
                                for t in ([self.shadow[k] for k in keys], [live[k] for k in keys]))
        ema_f, live_f, ema_o, live_o, ema_i, live_i = self._pairs
        if ema_f:
            torch._foreach_mul_(ema_f, decay)
            torch._foreach_add_(ema_f, live_f, alpha=1 - decay)
        for e, v in zip(ema_o, live_o):
            e.mul_(decay).add_(v.float(), alpha=1 - decay)
        for e, v in zip(ema_i, live_i):
            e.copy_(v)

    @contextlib.contextmanager
    def swapped(self, eval_mode: bool = True) -> Iterator[None]:
        """Run the block with the EMA weights loaded (and the module in eval mode); the raw weights
        and the previous train/eval mode come back afterwards, also on an exception."""
        raw = {k: v.clone() for k, v in self.module.state_dict().items()}
        was_training = self.module.training
        self.module.load_state_dict(self.shadow)
        if eval_mode:
            self.module.eval()
        try:
            yield
        finally:
            self.module.load_state_dict(raw)
            self.module.train(was_training)

    def load(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Copy ``weights`` (a checkpoint's EMA tensors) into the shadow in place."""
        _check_keys(self.shadow, weights)  # before anything is copied
        with torch.no_grad():
            for k, v in self.shadow.items():
                v.copy_(weights[k])
