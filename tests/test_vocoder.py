"""Inference: the Python API, batching, chunked = whole-file output, any sample rate and hop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_corpus, tiny_config_yaml

from diffvoc.config import Config
from diffvoc.errors import MelError, ScheduleError
from diffvoc.inference.vocoder import Vocoder


@pytest.fixture(scope="module")
def vocoder(trained_run):
    v = Vocoder.from_pretrained(trained_run, precision="fp32")  # exactness tests: the fp32 path
    torch.nn.init.normal_(v.model.output_projection.weight, std=0.3)  # a non-trivial network output
    return v


def test_api_shapes_and_seed(vocoder):
    mel = np.random.default_rng(0).normal(-4, 1, (80, 30)).astype(np.float32)
    a = vocoder.vocode(mel, steps=6, seed=1)
    b = vocoder.vocode(mel, steps=6, seed=1)
    c = vocoder.vocode(mel, steps=6, seed=2)
    assert a.shape == (30 * 256,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    batch = vocoder.vocode(np.stack([mel, mel[:, ::-1]]), steps=6, seed=1)
    assert batch.shape == (2, 30 * 256)
    np.testing.assert_allclose(batch[0], a, atol=1e-5)  # item 0 of a batch draws the same noise
    assert np.abs(a).max() <= 1.0
    out = vocoder.model(torch.zeros(2, 2560), torch.tensor([1, 2]), torch.zeros(2, 80, 10))
    assert out.shape == (2, 1, 2560)


def test_schedules(vocoder):
    mel = np.full((80, 12), -5, np.float32)
    assert vocoder.vocode(mel, full=True).shape == (12 * 256,)
    assert vocoder.vocode(mel, schedule=[1e-4, 0.05, 0.5]).shape == (12 * 256,)
    assert vocoder.vocode(mel, steps=12).shape == (12 * 256,)
    with pytest.raises(ScheduleError, match="no 4-step schedule"):
        vocoder.vocode(mel, steps=4)
    with pytest.raises(ScheduleError):
        vocoder.vocode(mel, schedule=[1e-4, 0.99])


def test_bad_mels_raise(vocoder):
    with pytest.raises(MelError, match="bands"):
        vocoder.vocode(np.zeros((64, 10), np.float32))
    bad = np.zeros((80, 10), np.float32)
    bad[0, 0] = np.inf
    with pytest.raises(MelError, match="NaN or infinite"):
        vocoder.vocode(bad)


def test_chunked_equals_whole(vocoder):
    """Long input in chunks agrees with one pass on the same (position-keyed) noise."""
    rng = np.random.default_rng(3)
    mel = rng.normal(-4, 1.5, (80, 160)).astype(np.float32)
    whole = vocoder.vocode(mel, steps=6, seed=7, chunk_frames=0)
    ctx = vocoder.default_context(6)
    chunked = vocoder.vocode(mel, steps=6, seed=7, chunk_frames=40, context_frames=ctx, fade_frames=4)
    assert chunked.shape == whole.shape
    err = np.abs(chunked - whole).max()
    assert err < 1e-4, err  # tiny model: its 6-step receptive field fits in the default context
    # with too little context the chunks still join without a seam: the error is bounded and local
    rough = vocoder.vocode(mel, steps=6, seed=7, chunk_frames=40, context_frames=1, fade_frames=4)
    assert np.sqrt(np.mean((rough - whole) ** 2)) < 0.5 * np.sqrt(np.mean(whole ** 2))


def test_analysis_synthesis_length(vocoder, corpus):
    path = sorted(corpus.glob("*.wav"))[0]
    import soundfile as sf

    n = sf.info(path).frames
    assert vocoder.vocode_file(path, steps=6).shape == (n,)


@pytest.mark.slow
@pytest.mark.parametrize("sr,hop", [(16000, 200), (22050, 256), (24000, 300), (44100, 512), (48000, 512)])
def test_rates_and_hops_end_to_end(tmp_path, sr, hop):
    from diffvoc.data.dataset import preprocess
    from diffvoc.training.trainer import Trainer

    corpus = make_corpus(tmp_path / "c", n=4, sr=44100, seconds=0.6)  # resampled to `sr` by preprocess
    n_fft = 4 * hop if hop != 256 else 1024
    audio = {"sample_rate": sr, "hop_length": hop, "n_fft": n_fft, "win_length": n_fft, "fmax": min(8000.0, sr / 2)}
    cfg = Config.load(tiny_config_yaml(tmp_path / "c.yaml", tmp_path / "data", audio=audio,
                                       train={"max_steps": 2, "save_every": 2, "valid_every": 2}))
    preprocess(corpus, tmp_path / "data", cfg.audio, jobs=1)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    tr.train()
    tr.close()
    v = Vocoder.from_pretrained(tmp_path / "run")
    y = v.vocode_file(sorted(corpus.glob("*.wav"))[0], steps=6)
    assert v.sample_rate == sr and v.model.spectrogram_upsampler.factors
    assert abs(len(y) - int(0.6 * 0.7 * sr)) <= 2 and np.all(np.isfinite(y))


def test_streaming_equals_offline_chunking(vocoder):
    rng = np.random.default_rng(5)
    mel = rng.normal(-4, 1.5, (80, 150)).astype(np.float32)
    kw = dict(steps=6, seed=4, chunk_frames=32, context_frames=6, fade_frames=4)
    offline = vocoder.vocode(mel, **kw)
    sizes = [1, 7, 13, 40, 3, 60, 26]
    blocks, i = [], 0
    for s in sizes:
        blocks.append(mel[:, i:i + s])
        i += s
    pieces = list(vocoder.stream(iter(blocks), **kw))
    assert len(pieces) > 2  # audio arrives before the input ends
    streamed = np.concatenate(pieces)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-5
    short = mel[:, :20]
    np.testing.assert_allclose(np.concatenate(list(vocoder.stream([short], **kw))), vocoder.vocode(short, **kw), atol=1e-5)
