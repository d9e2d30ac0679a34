"""The PriorGrad acoustic model (issue 19): front end, MAS, phone prior, loss, training, checkpoints, `diffvoc tts`."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli

from diffvoc.data.text import EOS, PUNCTUATION, UNK, WORD, PhonemeInventory, TextError, phonemize
from diffvoc.diffusion.phone_prior import PhonePrior, PhoneStatistics, mahalanobis_loss, q_sample_residual
from diffvoc.diffusion.schedule import NoiseSchedule
from diffvoc.models.alignment import gaussian_log_likelihood, monotonic_alignment

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SENTENCES = ["The cat sat on the mat.", "A red boat sails home, slowly.", "Where is the little dog?",
             "Seven green apples fell.", "We walked to the old mill.", "Is it time to go now?"]


# ------------------------------------------------------------------------------------------ front end
@needs_espeak
def test_phonemize_tokens_words_and_punctuation():
    toks = phonemize("Hello world, how are you?")
    assert toks[0] == WORD and toks[-1] == EOS
    assert "," in toks and toks[-2] == "?"
    # words: '#' opens each word; the comma follows the last phone of "world" and the next word opens with '#'
    words = " ".join(toks[:-1]).replace(" , ", " ,").split(WORD)
    assert len([w for w in words if w.strip()]) == 5
    assert toks[toks.index(",") + 1] == WORD
    assert any("ˈ" in t for t in toks)  # stress stays on its phone
    with pytest.raises(TextError):
        phonemize("   ")
    with pytest.raises(TextError):
        phonemize("?!")


def test_inventory_roundtrip_through_yaml():
    seqs = [[WORD, "h", "ə", "l", "ˈoʊ", ",", EOS], [WORD, "w", "ˈɜː", "l", "d", "?", EOS]]
    inv = PhonemeInventory.build(seqs)
    assert inv.symbols[0] == "<pad>" and len(set(inv.symbols)) == len(inv)
    assert all(p in inv.symbols for p in PUNCTUATION)
    back = PhonemeInventory.from_list(yaml.safe_load(yaml.safe_dump(inv.to_list(), allow_unicode=True)))
    assert back == inv
    for s in seqs:
        assert back.decode(back.encode(s)) == s
    assert inv.decode(inv.encode(["zzz"])) == [UNK]


# ------------------------------------------------------------------------------------------------ MAS
def _brute_force(L: np.ndarray, n: int, t: int) -> float:
    best = -math.inf
    for cuts in itertools.combinations(range(1, t), n - 1):
        b = [0, *cuts, t]
        best = max(best, sum(L[i, b[i]:b[i + 1]].sum() for i in range(n)))
    return best


def test_mas_equals_brute_force_and_is_monotonic():
    g = torch.Generator().manual_seed(0)
    B, N, T = 6, 5, 9
    L = torch.randn(B, N, T, generator=g)
    tok = torch.tensor([1, 2, 3, 5, 4, 5])
    frm = torch.tensor([4, 9, 3, 9, 7, 5])
    path = monotonic_alignment(L, tok, frm)
    for b in range(B):
        n, t = int(tok[b]), int(frm[b])
        p = path[b]
        assert float((p * L[b]).sum()) == pytest.approx(_brute_force(L[b].numpy(), n, t), abs=1e-4)
        assert torch.all(p[:, :t].sum(0) == 1) and p[:, t:].sum() == 0 and p[n:].sum() == 0  # every frame once
        idx = p[:, :t].argmax(0)
        assert idx[0] == 0 and idx[-1] == n - 1 and torch.all(idx.diff() >= 0) and torch.all(idx.diff() <= 1)
        assert torch.all(p[:n].sum(1) >= 1)  # every token at least one frame


def test_mas_recovers_planted_durations():
    g = torch.Generator().manual_seed(1)
    templates = torch.randn(6, 80, generator=g) * 2
    dur = torch.tensor([3, 1, 7, 2, 5, 4])
    mel = torch.repeat_interleave(templates, dur, 0).t().unsqueeze(0) + 0.3 * torch.randn(1, 80, int(dur.sum()),
                                                                                            generator=g)
    path = monotonic_alignment(gaussian_log_likelihood(mel, templates.t().unsqueeze(0)), torch.tensor([6]),
                               torch.tensor([int(dur.sum())]))
    assert path[0].sum(1).long().tolist() == dur.tolist()


# ---------------------------------------------------------------------------------------- phone prior
def test_phone_statistics_equal_direct_computation():
    g = torch.Generator().manual_seed(2)
    acc = PhoneStatistics(6, 4)
    frames, ids = [], []
    for _ in range(3):
        mel = torch.randn(4, 20, generator=g) * 3 - 2
        tok = torch.randint(1, 4, (20,), generator=g)
        tok[:2] = 4  # token 4: always the same frame → σ = 0 → 1
        mel[:, :2] = 5.0
        acc.add(mel, tok)
        frames.append(mel.t().numpy())
        ids.append(tok.numpy())
    x, t = np.concatenate(frames), np.concatenate(ids)
    mean, std = acc.finish(sigma_min=0.1)
    for p in (1, 2, 3):
        np.testing.assert_allclose(mean[p].numpy(), x[t == p].mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std[p].numpy(), np.maximum(x[t == p].std(0), 0.1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std[4].numpy(), 1.0)  # σ = 0 → 1
    for p in (0, 5):  # padding and an unseen token
        assert torch.all(mean[p] == 0) and torch.all(std[p] == 1)
    small = PhoneStatistics(2, 1)
    small.add(torch.tensor([[0.0, 0.02, 0.0, 0.02]]), torch.tensor([1, 1, 1, 1]))
    assert float(small.finish(0.1)[1][1, 0]) == pytest.approx(0.1)  # floored at σ_min


def test_residual_diffusion_and_mahalanobis_loss_equal_reference_formula():
    g = torch.Generator().manual_seed(3)
    sched = NoiseSchedule.linear(1e-4, 0.05, 400)
    prior = PhonePrior(torch.randn(5, 80, generator=g), torch.rand(5, 80, generator=g) + 0.1)
    tokens = torch.randint(0, 5, (2, 30), generator=g)
    mu, std = prior.frames(tokens)
    assert torch.equal(mu[1, :, 7], prior.mean[tokens[1, 7]]) and mu.shape == (2, 80, 30)
    x0, eps, t = torch.randn(2, 80, 30, generator=g), torch.randn(2, 80, 30, generator=g), torch.tensor([0, 399])
    xt, noise = q_sample_residual(sched, x0, mu, std, t, eps)
    ab = torch.tensor(sched.alpha_bars, dtype=torch.float32)[t].view(2, 1, 1)
    torch.testing.assert_close(xt, ab.sqrt() * (x0 - mu) + (1 - ab).sqrt() * std * eps)
    pred = torch.randn(2, 80, 30, generator=g)
    mask = torch.ones(2, 1, 30)
    mask[1, :, 20:] = 0
    ref = (((pred - std * eps) / std) ** 2)
    want = (ref[0].sum() + ref[1, :, :20].sum()) / (80 * 50)
    torch.testing.assert_close(mahalanobis_loss(pred, noise, std, mask), want)


# --------------------------------------------------------------------------------- training + tts
def _espeak_corpus(root: Path) -> Path:
    voices = ["en-us", "en-gb", "en-us+f3"]
    (root / "wavs").mkdir(parents=True)
    (root / "splits").mkdir()
    rows = []
    for i, text in enumerate(SENTENCES):
        voice = voices[2] if i == 5 else voices[i % 2]
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(root / "wavs" / f"u{i}.wav"), text], check=True)
        rows.append(f"u{i}|{text}|{text}|espeak-ng:{voice}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    (root / "splits" / "train.txt").write_text("u0\nu1\nu2\nu3\n")
    (root / "splits" / "valid.txt").write_text("u4\n")
    (root / "splits" / "test_unseen_voice.txt").write_text("u5\n")
    return root


def _tiny_config(corpus: Path, **train):
    from diffvoc.acoustic_config import AcousticConfig

    return AcousticConfig.from_dict({
        "kind": "acoustic", "data": {"path": str(corpus), "crop_frames": 32, "valid_sentences": 1, "valid_unseen": 1},
        "model": {"hidden": 32, "encoder_layers": 1, "heads": 2, "ffn_hidden": 32, "ffn_kernel": 3,
                  "duration_channels": 16, "decoder_channels": 16, "decoder_layers": 2},
        "prior": {"kind": "priorgrad", "warmup_steps": 3},
        "train": {"batch_size": 4, "max_steps": 8, "learning_rate": 3e-3, "warmup_steps": 2, "log_every": 2,
                  "valid_every": 4, "save_every": 4, "threads": 1, "schedule_search": False, **train}})


@pytest.fixture(scope="module")
def espeak_corpus(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return _espeak_corpus(tmp_path_factory.mktemp("espeak_corpus"))


@pytest.fixture(scope="module")
def tiny_acoustic(tmp_path_factory, espeak_corpus) -> Path:
    """A tiny acoustic model trained by `diffvoc train` (the `kind: acoustic` dispatch)."""
    root = tmp_path_factory.mktemp("acoustic")
    cfg = _tiny_config(espeak_corpus, valid_every=8)
    cfg.save(root / "tiny.yaml")
    r = run_cli("train", str(root / "tiny.yaml"), "--run-dir", str(root / "run"), "--quiet")
    assert r.returncode == 0, r.stderr
    return root / "run"


def test_training_lowers_the_loss(espeak_corpus, tmp_path):
    from diffvoc.training.acoustic import AcousticTrainer

    tr = AcousticTrainer(_tiny_config(espeak_corpus), tmp_path / "run", progress=False)
    first = [tr.train_step() for _ in range(3)]
    tr.compute_prior()
    diff = [tr.train_step()["diffusion"] for _ in range(12)]
    later = [tr.train_step() for _ in range(3)]
    tr.close()
    assert np.mean([f["encoder"] for f in first]) > 1.1 * np.mean([x["encoder"] for x in later])
    assert np.mean(diff[-4:]) < np.mean(diff[:4])
    mean = tr.prior.mean
    assert torch.all(mean[0] == 0) and float(mean[5:].abs().sum()) > 0  # statistics of aligned frames
    from diffvoc.training.acoustic_schedule import search_fast_schedules

    best, record = search_fast_schedules(tr, tr.valid, steps=(2,))
    assert record["2"]["mel_l1"] <= record["2"]["default_mel_l1"] and len(best[2]) == 2
    assert tr.schedule.outside(best[2]) is None


def test_checkpoint_resume_is_exact(espeak_corpus, tmp_path):
    from safetensors.torch import load_file

    from diffvoc.acoustic_checkpoint import load_acoustic_checkpoint
    from diffvoc.training.acoustic import AcousticTrainer

    cfg = _tiny_config(espeak_corpus, valid_every=8)
    a = AcousticTrainer(cfg, tmp_path / "straight", progress=False)
    a.train()
    b = AcousticTrainer(cfg, tmp_path / "resumed", progress=False)
    b.train(max_steps=4)  # past the prior's warm-up: the statistics come back from the checkpoint
    c = AcousticTrainer(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert c.step == 4 and c.prior_ready
    c.train()
    for f in ("model_raw", "model", "prior"):
        sa = load_file(tmp_path / "straight" / "ckpt-00000008" / f"{f}.safetensors")
        sc = load_file(tmp_path / "resumed" / "ckpt-00000008" / f"{f}.safetensors")
        assert set(sa) == set(sc) and all(torch.equal(sa[k], sc[k]) for k in sa), f
    ck = load_acoustic_checkpoint(tmp_path / "straight")
    assert ck.config == cfg and ck.stats["phonemes"] == a.inventory.to_list()
    rows = [json.loads(x) for x in (tmp_path / "straight" / "valid.jsonl").read_text().splitlines()]
    assert {"valid_mel_l1", "valid_mcd", "unseen_mel_l1", "unseen_mcd"} <= set(rows[-1])


@pytest.mark.slow
def test_tts_cli_writes_a_wav_and_refuses_bad_input(tiny_acoustic, tmp_path):
    import soundfile as sf

    from diffvoc.acoustic_checkpoint import load_acoustic_checkpoint
    from diffvoc.inference.tts import TextToSpeech

    ck = load_acoustic_checkpoint(tiny_acoustic)
    assert set(ck.config.diffusion.fast_schedules) == {2, 6, 12}
    out = tmp_path / "hi.wav"
    r = run_cli("tts", "The cat sat.", "-o", str(out), "--checkpoint", str(tiny_acoustic), "--vocoder", "griffin-lim",
                "--steps", "2")
    assert r.returncode == 0, r.stderr
    wav, sr = sf.read(out)
    assert sr == 22050 and len(wav) > 2000 and np.isfinite(wav).all()
    tts = TextToSpeech.from_pretrained(tiny_acoustic, vocoder="griffin-lim")
    mel, info = tts.mel("The cat sat.", steps=2, speaker="average")
    assert mel.shape == (80, sum(info["durations"])) and len(info["tokens"]) == len(info["durations"])
    bad = [(["", "-o", str(tmp_path / "a.wav")], "empty"),
           (["Hi.", "-o", str(tmp_path / "b.wav"), "--speaker", "nobody"], "unknown speaker"),
           (["Hi.", "-o", str(tmp_path / "c.wav"), "--steps", "3"], "--steps"),
           (["Hi.", "-o", str(tmp_path / "missing" / "d.wav")], "does not exist")]
    for args, words in bad:
        r = run_cli("tts", *args, "--checkpoint", str(tiny_acoustic), "--vocoder", "griffin-lim")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and words in lines[0], (args, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hi.wav"]  # nothing half-written


def test_acoustic_core_modules_load_no_outer_layer():
    import os
    import sys

    code = ("import sys, json; import diffvoc.models.acoustic, diffvoc.acoustic_checkpoint, "
            "diffvoc.diffusion.phone_prior; print(json.dumps(sorted(sys.modules)))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    mods = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [m for m in mods if m.startswith(("diffvoc.training", "diffvoc.inference", "diffvoc.evaluation",
                                            "diffvoc.data", "diffvoc.cli"))]
    assert not bad, bad
