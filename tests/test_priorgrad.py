"""PriorGrad: σ from frame energy, x_T ~ N(0, Σ), statistics that travel with the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config_yaml

from diffvoc.config import AudioConfig, Config, PriorConfig
from diffvoc.diffusion.noise import PositionalNoise
from diffvoc.diffusion.prior import AdaptivePrior, build_prior
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.errors import ConfigError


def mel_with_energy(e: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """A log-mel [1, n_mels, F] whose frame energies √Σ exp(mel) are ``e``."""
    return torch.log((e ** 2 / n_mels).unsqueeze(0).repeat(n_mels, 1)).unsqueeze(0)


def test_x_T_has_the_prior_std_per_frame():
    """Empirical std of x_T per frame within 4% of σ (256 samples × 64 draws per frame: s.e. ≈ 0.6%)."""
    prior = AdaptivePrior(PriorConfig(kind="priorgrad"), AudioConfig(), energy_min=0.2, energy_max=6.0)
    e = torch.linspace(0.05, 5.0, 12)
    mel = mel_with_energy(e)
    std = prior.std(mel, 12 * 256)
    seen = []

    def record(x, t):
        if not seen:
            seen.append(x.clone())
        return torch.zeros_like(x).unsqueeze(1)

    sampler = DiffusionSampler.fast(NoiseSchedule.linear(1e-4, 0.05, 50), [1e-4, 0.5])
    draws = []
    for seed in range(64):
        seen.clear()
        sampler.sample(record, std, 1, 12 * 256, PositionalNoise(seed))
        draws.append(seen[0][0].view(12, 256))
    x_T = torch.cat(draws, dim=1)  # [frames, 256*64]
    expect = prior.frame_std(mel)[0]
    rel = (x_T.std(dim=1) / expect - 1).abs()
    assert rel.max() < 0.04, rel
    assert torch.all(expect >= 0.1 - 1e-6) and torch.all(expect <= 1.0 + 1e-6)
    assert expect[0] == pytest.approx(0.1)  # σ_min respected
    assert expect[-1] == pytest.approx(1.0)  # E clamped at E_max = 4.0


def test_sigma_min_and_energy_max_options():
    mel = mel_with_energy(torch.tensor([0.5, 3.0, 8.0]))
    p = AdaptivePrior(PriorConfig(kind="priorgrad", sigma_min=0.3, energy_max=None), AudioConfig(), 0.5, 8.0)
    s = p.frame_std(mel)[0]
    torch.testing.assert_close(s, torch.tensor([0.3, 2.5 / 7.5, 1.0]), rtol=1e-4, atol=1e-5)
    smooth = AdaptivePrior(PriorConfig(kind="priorgrad", upsample="smooth"), AudioConfig(), 0.5, 8.0)
    up = smooth.std(mel, 3 * 256)[0]
    assert up.shape == (768,) and torch.all(torch.diff(up[128:640]) >= -1e-6)  # rises smoothly between frames
    with pytest.raises(ConfigError):
        build_prior(PriorConfig(kind="priorgrad"), AudioConfig(), None)
    with pytest.raises(ConfigError):
        AdaptivePrior(PriorConfig(kind="priorgrad", energy_max=None), AudioConfig(), 3.0, 2.0)


@pytest.mark.parametrize("condition", [False, True])
def test_priorgrad_checkpoint_round_trip_and_unseen_mel(tmp_path, data_dir, condition):
    from diffvoc.data.dataset import load_stats
    from diffvoc.inference.vocoder import Vocoder
    from diffvoc.training.trainer import Trainer

    yml = tiny_config_yaml(tmp_path / "c.yaml", data_dir, prior={"kind": "priorgrad", "condition_on_prior": condition},
                           train={"max_steps": 4, "save_every": 4, "valid_every": 4})
    tr = Trainer(Config.load(yml), tmp_path / "run", progress=False)
    tr.train()
    tr.close()
    stats = load_stats(data_dir, AudioConfig())
    saved = yaml.safe_load(next((tmp_path / "run").glob("ckpt-*/stats.yaml")).read_text())
    assert saved["energy_min"] == pytest.approx(stats["energy_min"]) and saved["energy_max"] == pytest.approx(stats["energy_max"])
    v = Vocoder.from_pretrained(tmp_path / "run")
    assert isinstance(v.prior, AdaptivePrior)
    assert v.prior.energy_min == pytest.approx(stats["energy_min"]) and v.prior.energy_max == 4.0
    assert v.model.cond_channels == 80 + int(condition)
    mel = np.random.default_rng(9).normal(-3, 2, (80, 25)).astype(np.float32)  # a mel it has never seen
    y = v.vocode(mel, steps=6, seed=0)
    assert y.shape == (25 * 256,) and np.all(np.isfinite(y))
    # the data statistics, not the mel being vocoded, define σ: same mel, same σ, whatever else is in the batch
    s1 = v.prior.std(torch.from_numpy(mel)[None], 25 * 256)
    s2 = v.prior.std(torch.from_numpy(np.stack([mel, mel - 3]))[:1], 25 * 256)
    torch.testing.assert_close(s1, s2)


def test_priorgrad_needs_mel_conditioning():
    with pytest.raises(ConfigError, match="mel-conditioned"):
        Config.from_dict({"model": {"conditioning": "none"}, "prior": {"kind": "priorgrad"}})
