"""Class-conditional / unconditional generation, the digits reader, the digit classifier and the
generation metrics (FID, IS, mIS, AM, NDB/K) on distributions whose values are known."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, run_cli

import diffvoc.data.digits as D
import diffvoc.evaluation.classifier as C
import diffvoc.evaluation.generative as M
import diffvoc.inference.generator as G
from diffvoc.build import build
from diffvoc.checkpoint import save_checkpoint
from diffvoc.config import Config
from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import DiffvocError

SR = 16000
# One thread: on a small shared machine two OpenMP threads can wait on a busy core and make these
# tiny convolutions a hundred times slower. Restored after this module.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ helpers


def _tiny_config(conditioning: str) -> Config:
    return Config.from_dict({
        "audio": {"sample_rate": SR},
        "model": {"residual_channels": 8, "residual_layers": 2, "dilation_cycle": 2, "conditioning": conditioning,
                  "n_classes": 10},
    })


def _save_random(path: Path, conditioning: str, seed: int = 0) -> Path:
    """A randomly initialised tiny model; the zero-initialised output layer is randomised too so that
    the label and the noise reach the output."""
    cfg = _tiny_config(conditioning)
    torch.manual_seed(seed)
    model, _, _ = build(cfg, {})
    torch.nn.init.normal_(model.output_projection.weight, std=0.5)
    return save_checkpoint(path, cfg, {}, model.state_dict())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gen_ckpts")
    return {kind: _save_random(d / kind, c) for kind, c in
            (("cond", "class"), ("uncond", "none"), ("mel", "mel"))}


def cli(*args: str) -> subprocess.CompletedProcess:
    """``diffvoc ARGS`` through the main CLI, one torch thread."""
    return run_cli(*args, env=ONE_THREAD)


def assert_one_line_error(r: subprocess.CompletedProcess, *expected: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("diffvoc "), lines[0]
    for e in expected:
        assert e in lines[0], lines[0]


def make_tone_digits(root: Path, per_class: int = 4, splits: tuple[str, ...] = ("train", "valid", "test"),
                     seconds: float = 1.0) -> Path:
    """An SC09-layout corpus of tones: digit d is a harmonic tone at 150 + 70·d Hz with an envelope,
    placed at a random offset; ids ``s<speaker>_<k>``."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    for split in splits:
        for label, word in enumerate(DIGIT_WORDS):
            (root / split / word).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                f0 = (150 + 70 * label) * (1 + 0.02 * rng.standard_normal())
                length = int(0.5 * SR)
                t = np.arange(length) / SR
                tone = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3)) * np.hanning(length)
                x = np.zeros(n, np.float32)
                start = int(rng.integers(0, n - length))
                x[start:start + length] = 0.5 * tone / np.abs(tone).max()
                x += 0.003 * rng.standard_normal(n).astype(np.float32)
                sf.write(root / split / word / f"s{k % 2}_{k:03d}.wav", x, SR, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return make_tone_digits(tmp_path_factory.mktemp("tones") / "digits")


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, tones) -> Path:
    out = tmp_path_factory.mktemp("clf") / "clf"
    cfg = C.ClassifierConfig(channels=[4, 8], feature_dim=8)
    C.train_classifier(tones, out, epochs=3, batch_size=16, cfg=cfg, progress=False)
    return out


# ------------------------------------------------------------------------------- the digits reader


def test_list_digit_clips_nested_and_flat_layouts(tmp_path, tones):
    clips = D.list_digit_clips(tones, "train")
    assert len(clips) == 40
    assert sorted({c.label for c in clips}) == list(range(10))
    assert all(DIGIT_WORDS[c.label] == c.word == c.path.parent.name for c in clips)
    assert {c.speaker for c in clips} == {"s0", "s1"}
    (tones / "train" / "marvin").mkdir(exist_ok=True)  # non-digit words of Speech Commands are skipped
    sf.write(tones / "train" / "marvin" / "x.wav", np.zeros(SR, np.float32), SR)
    assert len(D.list_digit_clips(tones, "train")) == 40

    flat = tmp_path / "sc09" / "test"  # WaveGAN's SC09 release: <Word>_<speaker>_nohash_<k>.wav
    flat.mkdir(parents=True)
    for name in ("Three_ab12cd_nohash_0.wav", "Nine_ff00aa_nohash_1.wav", "Happy_000000_nohash_0.wav"):
        sf.write(flat / name, np.zeros(SR // 2, np.float32), SR)
    got = [(c.label, c.speaker) for c in D.list_digit_clips(tmp_path / "sc09", "test")]
    assert got == [(9, "ff00aa"), (3, "ab12cd")]

    wavs, labels = D.load_digit_clips(D.list_digit_clips(tmp_path / "sc09", "test"), SR)
    assert wavs.shape == (2, SR) and wavs.dtype == np.float32 and labels.tolist() == [9, 3]
    assert D.fit_length(np.arange(10.0), 4).tolist() == [3, 4, 5, 6]
    assert D.fit_length(np.ones(2), 4).tolist() == [1, 1, 0, 0]


def test_list_digit_clips_errors(tmp_path, tones):
    with pytest.raises(DiffvocError, match="no such digits corpus"):
        D.list_digit_clips(tmp_path / "nope", "train")
    with pytest.raises(DiffvocError, match="no 'dev' split"):
        D.list_digit_clips(tones, "dev")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DiffvocError, match="holds no digit clips"):
        D.list_digit_clips(tmp_path / "empty", "train")


# ------------------------------------------------------------------------------------- generation


def test_generate_shapes_labels_and_determinism(ckpts):
    gen = G.Generator(ckpts["cond"])
    assert gen.conditional and gen.n_classes == 10 and gen.sample_rate == SR
    x = gen.generate(3, 3, seconds=0.1, seed=1)
    assert x.shape == (3, 1600) and x.dtype == np.float32 and np.all(np.isfinite(x)) and np.abs(x).max() <= 1
    # the fast engine (default) samples what the trained network samples (fp32, same noise)
    ref = G.Generator(ckpts["cond"], engine="reference").generate(3, 3, seconds=0.1, seed=1)
    np.testing.assert_allclose(x, ref, atol=2e-5)
    # clip k depends on (seed, k, label) only: batch size and splitting do not matter
    y = gen.generate([3, 3, 3], 3, seconds=0.1, seed=1, batch_size=1)
    np.testing.assert_allclose(x, y, atol=1e-5)
    np.testing.assert_allclose(gen.generate(3, 2, seconds=0.1, seed=1, first=1), x[1:], atol=1e-5)
    assert not np.allclose(x[0], x[1])  # different noise per clip
    other = gen.generate(4, 3, seconds=0.1, seed=1)
    assert not np.allclose(other, x)  # the label reaches the output
    assert not np.allclose(gen.generate(3, 3, seconds=0.1, seed=2), x)
    mixed = gen.generate([3, 4, 3], 3, seconds=0.1, seed=1)
    np.testing.assert_allclose(mixed[[0, 2]], x[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(mixed[1], other[1], atol=1e-5)

    u = G.generate(ckpts["uncond"], None, 2, seconds=0.1, steps=6)
    assert u.shape == (2, 1600) and np.all(np.isfinite(u))
    u_ref = G.Generator(ckpts["uncond"], engine="reference").generate(None, 2, seconds=0.1, steps=6)
    np.testing.assert_allclose(u, u_ref, atol=2e-5)
    assert G.clip_samples(gen.config) == SR  # 1 s at the model's rate by default
    full = G.generate(ckpts["uncond"], None, 1, seconds=0.05, full=True)
    assert full.shape == (1, 800)


@pytest.mark.parametrize("kind,labels,n,msg", [
    ("cond", None, 2, "class-conditional: give a label 0..9"),
    ("cond", 10, 2, "label 10 is out of range"),
    ("cond", -1, 2, "label -1 is out of range"),
    ("cond", [1, 2, 3], 2, "3 labels for 2 clips"),
    ("cond", 1.5, 2, "labels must be integers"),
    ("cond", 1, 0, "positive integer"),
    ("uncond", 3, 2, "unconditional"),
])
def test_generate_label_errors(ckpts, kind, labels, n, msg):
    with pytest.raises(DiffvocError, match=msg):
        G.generate(ckpts[kind], labels, n, seconds=0.05)


def test_generate_refuses_mel_model_and_bad_settings(ckpts):
    with pytest.raises(DiffvocError, match="mel-conditioned"):
        G.Generator(ckpts["mel"])
    with pytest.raises(DiffvocError, match="no 7-step schedule"):
        G.generate(ckpts["uncond"], None, 1, steps=7, seconds=0.05)
    with pytest.raises(DiffvocError, match="positive number of seconds"):
        G.generate(ckpts["uncond"], None, 1, seconds=0)


def test_generate_cli_writes_wavs(tmp_path, ckpts):
    out = tmp_path / "cond"
    r = cli("generate", "--checkpoint", str(ckpts["cond"]), "--label", "3", "-n", "2", "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["3_0000.wav", "3_0001.wav"]
    audio, sr = sf.read(out / "3_0000.wav")
    assert sr == SR and audio.shape == (SR,)
    assert "label 3 (three)" in r.stdout
    # the CLI writes what the API returns (16-bit PCM)
    api = G.generate(ckpts["cond"], 3, 1)
    np.testing.assert_allclose(audio, api[0], atol=2 / 32768)

    r = cli("generate", "--checkpoint", str(ckpts["uncond"]), "-n", "1", "-o", str(out), "--quiet",
            "--schedule", "1e-4,0.01,0.3", "--seconds", "0.25")
    assert r.returncode == 0, r.stderr
    assert sf.info(out / "uncond_0000.wav").frames == SR // 4


@pytest.mark.parametrize("kind,extra,msg", [
    ("uncond", ["--label", "3"], "unconditional"),
    ("cond", [], "class-conditional: give a label"),
    ("cond", ["--label", "12"], "label 12 is out of range"),
    ("mel", [], "mel-conditioned"),
    ("cond", ["--label", "1", "--steps", "7"], "no 7-step schedule"),
    ("cond", ["--label", "1", "--schedule", "0.9,2"], "β"),
])
def test_generate_cli_errors(tmp_path, ckpts, kind, extra, msg):
    out = tmp_path / "o"
    r = cli("generate", "--checkpoint", str(ckpts[kind]), "-n", "2", "-o", str(out), *extra)
    assert_one_line_error(r, "generate", msg)
    assert not out.exists()


def test_generate_cli_missing_checkpoint_and_bad_output(tmp_path, ckpts):
    assert_one_line_error(cli("generate", "--checkpoint", str(tmp_path / "nope"), "-o", str(tmp_path / "o")),
                          "no such checkpoint")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(cli("generate", "--checkpoint", str(ckpts["uncond"]), "-n", "1", "-o", str(blocker)),
                          "is not a folder")


# ---------------------------------------------------------------------------------------- metrics


def test_fid_known_values():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 6))
    assert M.fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 0])
    assert M.fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)  # same covariance
    values = [M.fid(a, rng.standard_normal((2000, 6)) + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] < 0.05 and values == sorted(values)
    # Gaussians: N(0, I) vs N(0, 4I) in d dims is d·(1 + 4 − 2·2) = d
    assert M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), 4 * np.eye(3)) == pytest.approx(3.0)
    # a singular covariance still gives a finite value
    flat = np.c_[a[:, :1], np.zeros(2000)]
    assert math.isfinite(M.fid(flat, flat + 1)) and M.fid(flat, flat + 1) == pytest.approx(2.0, abs=1e-3)


def test_inception_scores_known_values():
    C = 10
    uniform = np.full((50, C), 1 / C)
    onehot = np.eye(C)[np.arange(100) % C]
    confident = 0.999 * onehot + 0.001 / C
    assert M.inception_score(uniform) == pytest.approx(1.0)
    assert M.inception_score(onehot) == pytest.approx(C)
    assert M.inception_score(confident) == pytest.approx(C, rel=0.02)
    assert M.inception_score(np.tile(confident[:1], (40, 1))) == pytest.approx(1.0)  # one class only
    assert M.modified_inception_score(uniform) == pytest.approx(1.0)
    assert M.modified_inception_score(np.tile(confident[:1], (40, 1))) == pytest.approx(1.0)
    # all pairs, checked against the O(n²) definition
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(4, 0.3), size=30)
    kl = np.array([[np.sum(pi * np.log(pi / pj)) for pj in p] for pi in p])
    assert M.modified_inception_score(p) == pytest.approx(np.exp(kl.mean()), rel=1e-9)
    pred = p.argmax(1)
    within = sum((pred == c).sum() / len(p) * kl[np.ix_(pred == c, pred == c)].mean() for c in np.unique(pred))
    assert M.modified_inception_score_within_class(p) == pytest.approx(np.exp(within), rel=1e-9)
    # confident and balanced: large across classes, about 1 within a class
    assert M.modified_inception_score(confident) > 100
    assert M.modified_inception_score_within_class(confident) == pytest.approx(1.0)
    with pytest.raises(DiffvocError, match="sum to 1"):
        M.inception_score(np.ones((3, 3)))


def test_am_score_and_accuracy():
    C = 10
    p_star = np.full(C, 1 / C)
    onehot = np.eye(C)[np.arange(100) % C]
    assert M.am_score(onehot, p_star) == pytest.approx(0.0, abs=1e-9)
    assert M.am_score(np.full((20, C), 1 / C), p_star) == pytest.approx(math.log(C))  # KL 0 + entropy ln C
    one_class = np.eye(C)[np.zeros(20, int)]
    assert M.am_score(one_class, p_star) > 10  # collapsed onto one class: KL(p* || p) explodes
    assert M.class_accuracy(onehot, np.arange(100) % C) == 1.0
    assert M.class_accuracy(onehot, (np.arange(100) + 1) % C) == 0.0


def test_ndb_known_cases():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 4)) * 10
    real = np.concatenate([c + rng.standard_normal((200, 4)) for c in centres])
    bins = M.NDBBins(real, k=5, seed=0)
    assert bins.score(real)["ndb"] == 0  # the real set against itself
    same = np.concatenate([c + rng.standard_normal((200, 4)) for c in centres])
    assert bins.score(same)["ndb_k"] <= 0.2
    collapsed = centres[0] + rng.standard_normal((500, 4))
    res = bins.score(collapsed)
    assert res["ndb_k"] == 1.0 and res["proportions"][int(np.argmax(res["proportions"]))] == 1.0
    assert M.ndb(real, collapsed, k=5) == 1.0
    z = M.two_proportion_z(np.array([0.5, 0.0]), 100, np.array([0.3, 0.0]), 100)
    assert z[0] == pytest.approx(0.2 / math.sqrt(0.4 * 0.6 * 0.02)) and z[1] == 0.0


# ------------------------------------------------------------------------------------- classifier


def test_classifier_round_trip(tmp_path, tiny_classifier, tones):
    files = sorted(p.name for p in tiny_classifier.iterdir())
    assert files == ["classifier.safetensors", "classifier.yaml"]
    clf = C.DigitClassifier.load(tiny_classifier)
    info = clf.info
    assert set(info["accuracy"]) == {"train", "valid", "test"} and info["test_is_held_out_voices"]
    assert np.allclose(clf.train_label_distribution, 0.1)
    wavs, labels = D.load_digit_clips(D.list_digit_clips(tones, "test"), SR)
    out = clf.classify(wavs)
    assert out.probs.shape == (40, 10) and out.features.shape == (40, 8)
    np.testing.assert_allclose(out.probs.sum(1), 1.0)
    assert info["accuracy"]["test"] == pytest.approx(float(np.mean(out.predictions == labels)), abs=1e-6)
    # save again and reload: identical outputs
    clf.save(tmp_path / "copy")
    again = C.DigitClassifier.load(tmp_path / "copy").classify(wavs)
    np.testing.assert_allclose(again.logits, out.logits, atol=1e-6)
    # another sample rate is resampled to the classifier's
    down = clf.classify(wavs[:, ::2], sample_rate=SR // 2)
    assert down.probs.shape == (40, 10)


def test_classifier_errors(tmp_path, tiny_classifier):
    with pytest.raises(DiffvocError, match="not a digit classifier"):
        C.DigitClassifier.load(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "classifier.yaml").write_text((tiny_classifier / "classifier.yaml").read_text())
    (bad / "classifier.safetensors").write_bytes(b"garbage")
    with pytest.raises(DiffvocError, match="corrupt"):
        C.DigitClassifier.load(bad)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("user data")
    with pytest.raises(DiffvocError, match="not empty"):
        C.DigitClassifier.load(tiny_classifier).save(busy)
    assert (busy / "keep.txt").exists()


def test_classifier_cli(tmp_path, tones):
    out = tmp_path / "clf"
    r = cli("classifier", "train", "--data", str(tones), "-o", str(out), "--epochs", "1", "--quiet",
            "--channels", "4,8")
    assert r.returncode == 0, r.stderr
    assert "test" in r.stdout and "held-out voices" in r.stdout
    assert (out / "classifier.safetensors").is_file() and (out / "classifier.yaml").is_file()
    assert_one_line_error(cli("classifier", "train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "x")),
                          "no such digits corpus")


def test_generation_metrics_and_benchmark(tmp_path, tiny_classifier, tones, ckpts):
    clf = C.DigitClassifier.load(tiny_classifier)
    wavs, labels = D.load_digit_clips(D.list_digit_clips(tones, "train"), SR)
    real = clf.classify(wavs)
    ref = M.RealReference.from_features(real.features, labels, k=5)
    self_row = M.generation_metrics(real.probs, real.features, ref, labels=labels)
    assert self_row["fid"] == pytest.approx(0.0, abs=1e-6) and self_row["ndb"] == 0
    assert {"is", "mis", "mis_class", "am", "ndb_k", "accuracy"} <= set(self_row)

    out = tmp_path / "gen.json"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import generation as bench
    finally:
        sys.path.pop(0)
    rc = bench.main(["--data", str(tones), "--classifier", str(tiny_classifier), "--checkpoint",
                     f"c={ckpts['cond']}", "--checkpoint", f"u={ckpts['uncond']}", "--n", "10", "--k", "5",
                     "--quiet", "--save-audio", str(tmp_path / "audio"), "--save-count", "2", "-o", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    systems = [r["system"] for r in res["rows"]]
    assert systems == ["c", "u", "real train", "real test (held-out voices)"]
    rows = {r["system"]: r for r in res["rows"]}
    assert "accuracy" in rows["c"] and "accuracy" not in rows["u"] and rows["c"]["n"] == 10
    assert rows["real train"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert "benchmarks/generation.py" in res["meta"]["command"] and out.with_suffix(".md").is_file()
    assert sorted(p.name for p in (tmp_path / "audio" / "c").iterdir()) == ["0_0000.wav", "1_0001.wav"]
    assert sorted(p.name for p in (tmp_path / "audio" / "u").iterdir()) == ["uncond_0000.wav", "uncond_0001.wav"]


@pytest.mark.slow
@pytest.mark.parametrize("conditioning", ["class", "none"])
def test_train_generative_model_on_digits_and_generate(tmp_path, conditioning):
    """An SC09-layout corpus trains a class-conditional / unconditional model whose checkpoint generates."""
    import soundfile as sf
    from conftest import tiny_config_yaml, voiced

    from diffvoc.config import Config
    from diffvoc.data.dataset import discover, preprocess
    from diffvoc.inference.generator import generate
    from diffvoc.training.trainer import Trainer

    root = tmp_path / "digits"
    for split in ("train", "valid", "test"):
        for k, word in enumerate(("zero", "one", "two")):
            (root / split / word).mkdir(parents=True)
            for j in range(2):
                sf.write(root / split / word / f"v{j}.wav", voiced(0.5, 16000, f0=100 + 40 * k, seed=j), 16000)
    items, split = discover(root)
    assert {it["label"] for it in items} == {0, 1, 2} and len(split["train"]) == 6
    audio = {"sample_rate": 16000, "hop_length": 200, "n_fft": 800, "win_length": 800, "fmax": 8000.0}
    model = {"conditioning": conditioning, "n_classes": 10}
    cfg = Config.load(tiny_config_yaml(tmp_path / "c.yaml", tmp_path / "data", audio=audio, model=model,
                                       train={"max_steps": 30, "save_every": 30, "valid_every": 15,
                                              "learning_rate": 2e-3}))
    cfg.data.crop_frames = 40  # 0.5 s clips
    preprocess(root, tmp_path / "data", cfg.audio, jobs=1)
    tr = Trainer(cfg, tmp_path / "run", progress=False)
    first = np.mean([tr.train_step(*tr.data[s])["loss"] for s in range(5)])
    last = tr.train()
    tr.close()
    assert np.isfinite(last["valid_loss"]) and last["loss"] < first
    labels = [0, 2] if conditioning == "class" else None
    out = generate(tmp_path / "run", labels=labels, n=2, steps=6, seed=0)
    assert out.shape == (2, 16000) and np.all(np.isfinite(out))
