"""Tests for diffvoc.data.real: real recordings from Debian packages, and the mixed corpus."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import voiced

import diffvoc.data.analysis as A
import diffvoc.data.mixed as M
import diffvoc.data.real as R
import diffvoc.data.recordings as rec
from diffvoc.errors import DiffvocError

ASTERISK_EN = "asterisk-core-sounds-en-g722"
TINY_PACKAGES = [rec.KLETTRES, ASTERISK_EN]


def _why_not() -> str | None:
    missing = rec.missing_packages(TINY_PACKAGES)
    if missing:
        return f"Debian packages {', '.join(missing)} are not installed (CI runs: apt-get install -y {' '.join(missing)})"
    try:
        rec.require_g722()
    except DiffvocError:
        return "the g722 package is not installed (pip install g722)"
    return None


WHY_NOT = _why_not()
needs_packages = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
RATE = 22050


def build(out: Path) -> dict:
    return R.make_real_corpus(out, rate=RATE, packages=TINY_PACKAGES, per_speaker=4, jobs=2, progress=False)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, dict]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    out = tmp_path_factory.mktemp("real") / "corpus"
    return out, build(out)


def metadata(folder: Path) -> list[list[str]]:
    return [line.split("|") for line in (folder / "metadata.csv").read_text("utf-8").splitlines()]


def split(folder: Path, name: str) -> list[str]:
    return (folder / "splits" / f"{name}.txt").read_text().split()


# ----------------------------------------------------------------------------- criteria on made signals


def tone_burst(rate: int = 16000, before: float = 0.5, burst: float = 0.6, after: float = 0.5,
               noise: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Silence, a speech-like voiced burst (peak about 0.5), silence; white noise throughout."""
    rng = np.random.default_rng(seed)
    speech = voiced(burst, rate, seed=seed).astype(np.float64)
    speech *= 0.5 / np.max(np.abs(speech)) * np.hanning(len(speech)) ** 0.1
    x = np.concatenate([np.zeros(int(before * rate)), speech, np.zeros(int(after * rate))])
    return x + noise * rng.standard_normal(len(x))


def test_trims_silence_to_the_speech_with_margins():
    a = A.analyse(tone_burst(), 16000)
    assert a.reject() is None
    assert a.start / 16000 == pytest.approx(0.5 - 0.05, abs=0.02)
    assert a.end / 16000 == pytest.approx(1.1 + 0.05, abs=0.02)
    assert a.noise_from == "silence" and a.snr_db > 60


def test_isolated_click_is_trimmed_away():
    x = tone_burst()
    x[1000:1016] = 0.9 * np.array([1, -1] * 8)  # a 1 ms click in the leading silence
    a = A.analyse(x, 16000)
    assert a.start / 16000 > 0.4 and a.reject() is None


@pytest.mark.parametrize("name, signal, reason", [
    ("digital silence", np.zeros(16000), "silent"),
    ("faint hum", 1e-4 * np.sin(2 * np.pi * 50 * np.arange(16000) / 16000), "silent"),
    ("hard clipping", np.clip(4 * tone_burst(), -1, 1), "clipped"),
    ("speech in loud noise", tone_burst(noise=0.05), "noisy"),
    ("steady tone", 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000), "noisy"),
    ("too short", tone_burst(burst=0.04), "too short"),
])
def test_rejection_criteria(name, signal, reason):
    assert A.analyse(signal, 16000).reject() == reason, name


def test_float_stream_with_a_wrong_gain_is_not_clipped():
    a = A.analyse(30 * tone_burst(), 16000)  # KLettres' tn files peak far above 1.0, unclipped
    assert a.full_scale > 2 and a.clipped_fraction < 0.002 and a.reject() is None


def test_bandwidth_of_a_lowpassed_noise():
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(0)
    noise = rng.standard_normal(44100)
    low = sosfiltfilt(butter(12, 7000, fs=44100, output="sos"), noise)
    assert 6500 < A.bandwidth_hz(low, 44100) < 9000
    assert A.bandwidth_hz(noise, 44100) > 20000


@needs_packages
def test_real_files_known_to_be_bad_are_rejected():
    ml = sorted((rec.KLETTRES_DIR / "ml").rglob("*.ogg"))  # Malayalam: recorded with hard clipping
    if ml:
        assert A.analyse(*rec.decode(ml[0])).reject() == "clipped"
    silence = sorted((rec.ASTERISK_DIR).glob("en_*/silence/*.g722"))
    assert silence and A.analyse(*rec.decode(silence[0])).reject() == "silent"
    audio, rate = rec.decode(next(rec.ASTERISK_DIR.glob("en_*/vm-goodbye.g722")))
    assert rate == 16000 and audio.shape[1] == 1 and A.analyse(audio, rate).reject() is None


# ----------------------------------------------------------------------------- a tiny real corpus


@needs_packages
def test_layout_and_audio(real):
    out, manifest = real
    rows = metadata(out)
    assert rows and all(len(r) == 5 and r[4] == "real" and r[1] == r[2] for r in rows)
    speakers = {r[3] for r in rows}
    assert "asterisk:allison" in speakers and sum(s.startswith("klettres:") for s in speakers) >= 4
    by_id = {c["id"]: c for c in manifest["clips"]}
    assert set(by_id) == {r[0] for r in rows} == {p.stem for p in (out / "wavs").iterdir()}
    for rid in list(by_id)[::5]:
        info = sf.info(out / "wavs" / f"{rid}.wav")
        assert info.samplerate == RATE and info.channels == 1 and info.subtype == "PCM_16"
        audio, _ = sf.read(out / "wavs" / f"{rid}.wav")
        assert np.max(np.abs(audio)) == pytest.approx(0.95, abs=1e-3)
        assert len(audio) / RATE == pytest.approx(by_id[rid]["seconds"], abs=2e-3)
        assert len(audio) / RATE <= by_id[rid]["raw_seconds"] + 2e-3  # trimmed, never longer


@needs_packages
def test_manifest_records_provenance(real):
    _, manifest = real
    for clip in manifest["clips"]:
        assert clip["package"] in TINY_PACKAGES and clip["package_version"] not in ("", "unknown")
        assert clip["licence"] in ("GPL-2+", "CC-BY-SA-3.0"), clip["licence"]
        if clip["family"] == "asterisk":
            assert clip["native_rate"] == 16000 and clip["bandwidth_hz"] <= 8000
            assert clip["licence"] == "CC-BY-SA-3.0" and "Allison Smith" in clip["copyright"]
        else:
            assert clip["native_rate"] >= 22050 and clip["licence"] == "GPL-2+"
    sources = manifest["sources"]
    assert set(sources) == set(TINY_PACKAGES)
    assert sum(s["kept"] for s in sources.values()) == manifest["totals"]["kept"] == len(manifest["clips"])
    assert manifest["totals"]["recordings"] == manifest["totals"]["kept"] + len(manifest["rejected"])
    assert set(manifest["criteria"]) >= {"clipped", "noisy", "silent", "too_short", "trim", "bandwidth"}


@needs_packages
def test_splits_hold_out_whole_speakers_and_prompts(real):
    out, manifest = real
    speaker = {r[0]: r[3] for r in metadata(out)}
    train, valid, test = split(out, "train"), split(out, "valid"), split(out, "test")
    seen = {speaker[i] for i in train + valid}
    held = {speaker[i] for i in test}
    assert held and not held & seen  # the test split is voices training never heard
    assert sum(s.startswith("klettres:") for s in held) >= 2
    assert held == set(manifest["held_out_speakers"])
    prompts = {c["id"]: c["prompt"] for c in manifest["clips"]}
    seen_voice = split(out, "test_seen_voice")
    assert seen_voice and all(speaker[i] == "asterisk:allison" for i in seen_voice)
    assert not {prompts[i] for i in seen_voice} & {prompts[i] for i in train}
    every = train + valid + test + seen_voice
    assert len(every) == len(set(every)) == len(manifest["clips"])
    assert set(split(out, "test_wideband")) <= set(test)
    firsts = [speaker[i] for i in valid[: len({speaker[i] for i in valid})]]
    assert len(set(firsts)) == len(firsts)  # valid is interleaved: its first clips are all different voices


@needs_packages
def test_deterministic(real, tmp_path):
    out, _ = real
    again = tmp_path / "again"
    build(again)
    for rel in ["metadata.csv", *(f"splits/{n}.txt" for n in R.REAL_SPLITS)]:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    some = sorted((out / "wavs").iterdir())[:3]
    assert all(p.read_bytes() == (again / "wavs" / p.name).read_bytes() for p in some)


@needs_packages
def test_preprocess_and_validation_clips_are_real(real, tmp_path):
    """The trainer's validation clips (data.load_clips on "valid") come from the real held-out clips."""
    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import load_clips, load_record, preprocess

    out, _ = real
    tts = fake_tts_corpus(tmp_path / "tts", n=12)
    mixed = tmp_path / "mixed"
    M.make_mixed_corpus(mixed, tts, out)
    data = tmp_path / "data"
    preprocess(mixed, data, AudioConfig(), jobs=1)
    record = load_record(data)
    kinds = {it["id"]: it.get("kind") for it in record["items"]}
    assert set(kinds.values()) == {"real", "tts"}
    valid = record["split"]["valid"]
    assert any(kinds[i] == "tts" for i in valid) and any(kinds[i] == "real" for i in valid)
    n_real = sum(kinds[i] == "real" for i in valid)
    clips = load_clips(data, AudioConfig(), "valid", n_real + 1, 0.5)
    assert [kinds[c[0]] for c in clips] == ["real"] * n_real + ["tts"]


# ----------------------------------------------------------------------------- mixed corpus


def fake_tts_corpus(folder: Path, n: int = 12, rate: int = RATE) -> Path:
    """A stand-in for `diffvoc corpus speech` output (its layout and manifest kind), made of tones."""
    from diffvoc.data.synth import SPEECH_KIND

    (folder / "wavs").mkdir(parents=True)
    (folder / "splits").mkdir()
    names = ["train"] * (n - 3) + ["valid", "test", "test_unseen_voice"]
    utts = []
    for k, name in enumerate(names):
        rid = f"dv{k:06d}"
        sf.write(folder / "wavs" / f"{rid}.wav", 0.5 * tone_burst(rate, 0.1, 0.5, 0.1, seed=k), rate, subtype="PCM_16")
        utts.append({"id": rid, "split": name, "seconds": 0.7, "speaker": f"flite:v{k % 3}", "text": f"text {k}"})
    (folder / "metadata.csv").write_text("".join(f"{u['id']}|{u['text']}|{u['text']}|{u['speaker']}\n" for u in utts))
    for name in ("train", "valid", "test", "test_unseen_voice"):
        (folder / "splits" / f"{name}.txt").write_text("".join(f"{u['id']}\n" for u in utts if u["split"] == name))
    manifest = {"kind": SPEECH_KIND, "rate": rate, "seed": 0, "utterances": utts}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@needs_packages
def test_mixed_keeps_held_out_splits_and_applies_shares(real, tmp_path):
    out, _ = real
    tts = fake_tts_corpus(tmp_path / "tts")
    mixed = tmp_path / "mixed"
    m = M.make_mixed_corpus(mixed, tts, out, {"tts": 0.5, "asterisk": 0.0})
    rows = {r[0]: r for r in metadata(mixed)}
    assert all(len(r) == 5 for r in rows.values())
    real_train, tts_train = split(out, "train"), split(tts, "train")
    train = split(mixed, "train")
    assert sum(i in tts_train for i in train) == round(0.5 * len(tts_train))
    assert not [i for i in train if i.startswith("ast-")]  # asterisk share 0
    assert {i for i in train if i.startswith("kl-")} == {i for i in real_train if i.startswith("kl-")}
    assert split(mixed, "test") == split(out, "test") and split(mixed, "test_tts") == split(tts, "test")
    assert split(mixed, "test_tts_unseen_voice") == split(tts, "test_unseen_voice")
    real_valid = split(out, "valid")
    kl_first = [i for i in real_valid if i.startswith("kl-")] + [i for i in real_valid if i.startswith("ast-")]
    assert split(mixed, "valid") == kl_first + split(tts, "valid")  # real first, trained sources first
    assert all(rows[i][4] == "real" for i in split(out, "valid")) and rows["dv000009"][4] == "tts"
    assert m["shares"] == {"tts": 0.5, "klettres": 1.0, "asterisk": 0.0}
    assert m["band_limited_source"]["asterisk_share_used"] == 0.0
    assert {p.stem for p in (mixed / "wavs").iterdir()} == set(rows)
    # a smaller share is a subset of a larger one
    bigger = M.make_mixed_corpus(tmp_path / "mixed2", tts, out, {"tts": 0.8, "asterisk": 1.0})
    assert set(train) <= set(split(tmp_path / "mixed2", "train"))
    assert bigger["totals"]["train_clips_by_source"]["asterisk"] > 0
    default = M.make_mixed_corpus(tmp_path / "mixed3", tts, out)  # the measured default: no G.722 in training
    assert default["shares"]["asterisk"] == M.BAND_LIMITED_DECISION["default_asterisk_share"] == 0.0
    assert "MR-STFT" in default["band_limited_source"]["measurement"]


def test_mixed_refuses_what_is_not_a_corpus(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DiffvocError, match="not a synthetic speech corpus"):
        M.make_mixed_corpus(tmp_path / "out", tmp_path / "a", tmp_path / "a")


@pytest.mark.parametrize("spec", ["tts", "tts=2", "voices=0.5", "asterisk=x"])
def test_bad_shares(spec):
    with pytest.raises(DiffvocError, match="SOURCE=FRACTION"):
        M.parse_shares([spec])


# ----------------------------------------------------------------------------- errors and CLI


def test_missing_packages_without_root_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from diffvoc.cli import main

    monkeypatch.setattr(rec, "package_version", lambda p: None if p == ASTERISK_EN else "1")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DiffvocError, match=f"missing Debian package.*{ASTERISK_EN}.*apt-get install -y {ASTERISK_EN}"):
        rec.ensure_packages([ASTERISK_EN])
    rc = main(["corpus", "real", str(tmp_path / "out"), "--packages", ASTERISK_EN, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err and ASTERISK_EN in err
    assert not (tmp_path / "out").exists()


def test_unknown_package_and_unwritable_output(tmp_path, capsys):
    from diffvoc.cli import main

    assert main(["corpus", "real", str(tmp_path / "o"), "--packages", "fortune-mod"]) == 1
    assert "unknown package 'fortune-mod'" in capsys.readouterr().err
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    if WHY_NOT is None:
        rc = main(["corpus", "real", str(blocker / "out"), "--packages", rec.KLETTRES, "--per-speaker", "1", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and "cannot write" in err


def test_refuses_a_folder_that_is_not_a_real_corpus(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DiffvocError, match="refusing"):
        R.make_real_corpus(out, packages=[rec.KLETTRES], progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_wires_real_and_mixed():
    from diffvoc.cli.corpus import add_parser as add_corpus_parser

    parser = argparse.ArgumentParser(prog="diffvoc")
    add_corpus_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["corpus", "real", "OUT"])
    assert (args.out, args.rate, args.packages, args.per_speaker) == ("OUT", 22050, None, None)
    args = parser.parse_args(["corpus", "mixed", "OUT", "--tts", "T", "--real", "R", "--share", "asterisk=0"])
    assert (args.tts, args.real, args.share) == ("T", "R", ["asterisk=0"]) and callable(args.func)
