"""The DiffWave network: sizes, conditioning modes, any hop, and equality with lmnt-com/diffwave."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffvoc.config import ModelConfig, preset_config
from diffvoc.models.diffwave import DiffWave, upsample_factors


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_base_parameter_count_matches_lmnt():
    cfg = preset_config(model="base")
    m = DiffWave(cfg.model, cfg.diffusion.steps, 80, 256)
    assert abs(n_params(m) - 2_619_971) <= 0.01 * 2_619_971
    assert n_params(m) == 2_619_971  # identical architecture to lmnt-com/diffwave 0.1.7


def test_large_parameter_count():
    cfg = preset_config(model="large", diffusion="t200")
    m = DiffWave(cfg.model, cfg.diffusion.steps, 80, 256)
    assert 6.5e6 < n_params(m) < 7.3e6  # REFERENCE: ≈ 6.9M


@pytest.mark.parametrize("hop", [200, 256, 300, 512, 120, 441])
def test_upsampler_any_hop(hop):
    m = DiffWave(ModelConfig(residual_channels=8, residual_layers=2, dilation_cycle=2), 50, 80, hop)
    mel = torch.randn(2, 80, 9)
    assert m.condition(mel).shape == (2, 80, 9 * hop)
    out = m(torch.randn(2, 9 * hop), torch.tensor([0, 49]), mel)
    assert out.shape == (2, 1, 9 * hop)
    prod = 1
    for f in upsample_factors(hop):
        prod *= f
    assert prod == hop


def test_class_and_unconditional():
    cm = DiffWave(ModelConfig(residual_channels=8, residual_layers=3, dilation_cycle=3, conditioning="class",
                              n_classes=10), 200)
    x = torch.randn(3, 1000)
    out = cm(x, torch.tensor([1, 2, 3]), label=torch.tensor([0, 5, 9]))
    assert out.shape == (3, 1, 1000)
    # different labels give different outputs once the output layer is non-zero
    torch.nn.init.normal_(cm.output_projection.weight)
    a = cm(x[:1], torch.tensor([5]), label=torch.tensor([0]))
    b = cm(x[:1], torch.tensor([5]), label=torch.tensor([9]))
    assert not torch.allclose(a, b)
    um = DiffWave(ModelConfig(residual_channels=8, residual_layers=3, dilation_cycle=3, conditioning="none"), 200)
    assert um(x, torch.tensor([0, 1, 2])).shape == (3, 1, 1000)
    assert not any("conditioner" in k or "upsampler" in k for k in um.state_dict())


def test_output_layer_zero_initialised_and_step_embedding_interpolates():
    m = DiffWave(ModelConfig(residual_channels=8, residual_layers=2, dilation_cycle=2), 50, 80, 256)
    assert torch.count_nonzero(m.output_projection.weight) == 0
    emb = m.diffusion_embedding
    lo, hi = emb.table(torch.tensor([3])), emb.table(torch.tensor([4]))
    mid = emb.table(torch.tensor([3.25]))
    torch.testing.assert_close(mid, lo + 0.25 * (hi - lo))
    # 64 sin + 64 cos of t·10^(4j/63)
    j = torch.arange(64, dtype=torch.float32)
    torch.testing.assert_close(emb.table(torch.tensor([7]))[0], torch.cat([torch.sin(7 * 10 ** (4 * j / 63)),
                                                                          torch.cos(7 * 10 ** (4 * j / 63))]))


def test_conditioner_is_computed_once_per_utterance(trained_run):
    from diffvoc.inference.vocoder import Vocoder

    v = Vocoder.from_pretrained(trained_run)
    calls = []
    h = v.model.spectrogram_upsampler.register_forward_hook(lambda *a: calls.append(1))
    v.vocode(np.random.randn(80, 20).astype(np.float32) - 5, steps=6, chunk_frames=0)
    h.remove()
    assert len(calls) == 1
