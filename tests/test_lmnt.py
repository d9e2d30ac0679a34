"""lmnt-com/diffwave 0.1.7 checkpoints load safely and reproduce lmnt's network and fast sampling."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import torch

lmnt_model = pytest.importorskip("diffwave.model", reason="pip install diffwave==0.1.7 --no-deps")


@pytest.fixture(scope="module")
def lmnt_ckpt(tmp_path_factory):
    from diffwave.params import params

    torch.manual_seed(0)
    net = lmnt_model.DiffWave(params)
    for p in net.parameters():  # random, non-zero weights everywhere (the output layer too)
        p.data.normal_(0, 0.05)
    d = tmp_path_factory.mktemp("lmnt")
    torch.save({"step": 7, "model": net.state_dict(), "params": dict(params)}, d / "weights.pt")
    return net, d


def test_network_output_matches(lmnt_ckpt):
    from diffvoc.inference.vocoder import Vocoder

    net, d = lmnt_ckpt
    v = Vocoder.from_pretrained(d / "weights.pt", precision="fp32")  # the exact path
    assert v.config.audio.preset == "lmnt"
    g = torch.Generator().manual_seed(1)
    x, mel = torch.randn(2, 256 * 12, generator=g), torch.rand(2, 80, 12, generator=g)
    for t in (torch.tensor([0, 49]), torch.tensor([0.894]), torch.tensor([42.9])):  # lmnt: one fractional t per call
        with torch.no_grad():
            ref = net(x, mel, t)
            ours = v.model(x, t, mel)
        assert ours.shape == ref.shape == (2, 1, 256 * 12)
        assert (ours - ref).abs().max().item() < 1e-5


def test_fast_sampling_matches_given_the_same_noise(lmnt_ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))  # lmnt imports it, never uses it here
    import diffwave.inference as inf

    from diffvoc.diffusion.noise import GlobalNoise
    from diffvoc.inference.vocoder import Vocoder

    net, d = lmnt_ckpt
    mel = torch.rand(80, 24)
    inf.predict(mel, model_dir=str(d), device=torch.device("cpu"), fast_sampling=True)  # builds and caches lmnt's model
    torch.manual_seed(5)
    ref, sr = inf.predict(mel, model_dir=str(d), device=torch.device("cpu"), fast_sampling=True)
    v = Vocoder.from_pretrained(d / "weights.pt", precision="fp32")  # the exact path (the default is auto)
    torch.manual_seed(5)
    ours = v.vocode(mel.numpy(), steps=6, noise=GlobalNoise(), chunk_frames=0)
    assert sr == v.sample_rate == 22050
    assert ours.shape == (24 * 256,)
    assert np.abs(ours - ref[0].numpy()).max() < 1e-5


def test_checkpoint_loads_without_unpickling_code(tmp_path):
    from diffvoc.checkpoint import load_checkpoint
    from diffvoc.errors import CheckpointError

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "weights.pt", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError, match="safely"):
        load_checkpoint(tmp_path / "weights.pt")
