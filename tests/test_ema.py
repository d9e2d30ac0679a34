"""The shared EMA of :mod:`diffvoc.training.ema`: the formula, the tensor kinds, the swap and the reload."""

from __future__ import annotations

import pytest
import torch

from diffvoc.training.ema import EMA, warmup_decay


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("scale16", torch.zeros(4, dtype=torch.float16))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_warmup_decay_follows_the_formula_and_caps_at_the_configured_decay() -> None:
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 10) == pytest.approx(11 / 20)
    assert warmup_decay(0.999, 10**6) == 0.999


def test_update_blends_floats_with_the_formula_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    net = _Net()
    ema = EMA(net)
    assert all(v.dtype == torch.float32 for k, v in ema.shadow.items() if k != "count")
    assert ema.shadow["count"].dtype == torch.long
    expected = {k: v.detach().clone().float() for k, v in net.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            net.lin.weight.add_(torch.randn_like(net.lin.weight))
            net.scale16.add_(1.0)
            net.count.add_(1)
        d = warmup_decay(0.999, step)
        ema.update(d)  # the cached foreach path from the second call on
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v.float()
            else:
                expected[k] = v.clone()
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v.to(ema.shadow[k].dtype), rtol=1e-6, atol=1e-6)
    assert int(ema.shadow["count"]) == 5
    assert not torch.equal(ema.shadow["lin.weight"], net.lin.weight.detach())  # an average, not a copy


def test_swapped_runs_on_the_ema_weights_and_restores_the_raw_weights_and_mode_even_on_error() -> None:
    torch.manual_seed(1)
    net = _Net()
    ema = EMA(net)
    with torch.no_grad():
        net.lin.weight.add_(1.0)
    raw = net.lin.weight.detach().clone()
    net.train()
    with ema.swapped():
        assert not net.training
        torch.testing.assert_close(net.lin.weight.detach(), ema.shadow["lin.weight"])
    assert net.training
    torch.testing.assert_close(net.lin.weight.detach(), raw)
    net.eval()
    with pytest.raises(RuntimeError, match="inside"):
        with ema.swapped():
            raise RuntimeError("inside")
    assert not net.training  # the previous mode, not always train mode
    torch.testing.assert_close(net.lin.weight.detach(), raw)
    net.train()
    with ema.swapped(eval_mode=False):
        assert net.training


def test_start_weights_and_load_are_used_in_place_by_later_updates() -> None:
    net = _Net()
    start = {k: torch.full_like(v, 2) for k, v in net.state_dict().items()}
    start["lin.weight"] = start["lin.weight"].half()  # a bundled fp16 checkpoint
    ema = EMA(net, start)
    assert ema.shadow["lin.weight"].dtype == torch.float32
    assert torch.all(ema.shadow["lin.weight"] == 2)
    ema.update(0.5)  # caches the foreach pairs
    ema.load({k: torch.full_like(v, 4) for k, v in ema.shadow.items()})
    with torch.no_grad():
        net.lin.weight.fill_(0.0)
    ema.update(0.5)
    assert torch.all(ema.shadow["lin.weight"] == 2)  # 0.5 · 4 + 0.5 · 0: the reloaded values were blended


def test_missing_tensors_are_refused() -> None:
    net = _Net()
    weights = {k: v for k, v in net.state_dict().items() if k != "lin.bias"}
    with pytest.raises(KeyError, match="lin.bias"):
        EMA(net, weights)
    ema = EMA(net)
    with pytest.raises(KeyError, match="lin.bias"):
        ema.load(weights)
