"""Optimiser state on ``--resume``: the moments come from the checkpoint, the hyperparameters from the config."""

from __future__ import annotations

from typing import Any

import torch


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load ``state`` (``optimizer.state_dict()`` of a checkpoint) into ``optimizer``, keeping its hyperparameters.

    ``torch.optim.Optimizer.load_state_dict`` also restores each parameter group's ``lr``, ``betas``,
    ``weight_decay``…, so a run resumed with ``--set train.learning_rate=…`` would silently train at the
    checkpoint's rate. The groups' hyperparameters as the optimiser was built (from the config, overrides
    included) are put back after the load; the per-parameter state (Adam's moments and step counts) is the
    checkpoint's. Raises what ``load_state_dict`` raises when the state does not fit.
    """
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, hyper in zip(optimizer.param_groups, configured):
        group.update(hyper)
