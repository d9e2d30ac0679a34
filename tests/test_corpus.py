"""Tests for diffvoc.data.synth: synthetic speech and digits corpora made with Debian's TTS engines."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from diffvoc.cli.corpus import add_parser as add_corpus_parser
from diffvoc.data import synth as corpus
from diffvoc.data import voices
from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import DiffvocError

HAVE_ENGINE = any(shutil.which(engine) for engine in voices.ENGINES)
needs_engine = pytest.mark.skipif(
    not HAVE_ENGINE, reason=f"no TTS engine installed (CI runs: {voices.APT_INSTALL})"
)
SPLITS = ("train", "valid", "test", "test_unseen_voice")


def read_metadata(folder: Path) -> list[list[str]]:
    lines = (folder / "metadata.csv").read_text(encoding="utf-8").splitlines()
    return [line.split("|") for line in lines]


def read_split(folder: Path, name: str) -> list[str]:
    return (folder / "splits" / f"{name}.txt").read_text().split()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, dict]:
    if not HAVE_ENGINE:
        pytest.skip(f"no TTS engine installed (CI runs: {voices.APT_INSTALL})")
    out = tmp_path_factory.mktemp("speech") / "corpus"
    return out, corpus.make_speech_corpus(out, minutes=0.4, seed=3, jobs=2, progress=False)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, dict]:
    if not HAVE_ENGINE:
        pytest.skip(f"no TTS engine installed (CI runs: {voices.APT_INSTALL})")
    out = tmp_path_factory.mktemp("digits") / "corpus"
    return out, corpus.make_digits_corpus(out, n_per_class_per_voice=1, jobs=2, progress=False)


# ----------------------------------------------------------------------------- sentences


def test_sentences_are_many_distinct_and_clean():
    sentences = corpus.load_sentences()
    raw = [line.strip() for line in corpus.SENTENCES_PATH.read_text("utf-8").splitlines()]
    assert len(set(sentences)) >= 1000
    assert len(sentences) == len([line for line in raw if line])  # no duplicates in the file
    for sentence in sentences:
        assert 5 <= len(sentence.split()) <= 25, sentence
        assert sentence.isascii() and not re.search(r"[0-9|]", sentence), sentence
        assert sentence[-1] in ".?!", sentence


# ----------------------------------------------------------------------------- no engine


def test_no_engine_on_path_names_apt_get(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out = tmp_path / "out"
    with pytest.raises(DiffvocError, match="apt-get install -y flite festival") as err:
        corpus.make_speech_corpus(out, minutes=0.1, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(DiffvocError, match="apt-get install"):
        corpus.make_digits_corpus(out, n_per_class_per_voice=1, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


def test_refuses_non_empty_folder_that_is_not_a_corpus(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(DiffvocError, match="refusing"):
        corpus.make_speech_corpus(out, minutes=0.1, progress=False)
    with pytest.raises(DiffvocError, match="refusing"):
        corpus.make_digits_corpus(out, n_per_class_per_voice=1, progress=False)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize(
    "kwargs", [{"minutes": 0}, {"minutes": 1, "rate": 100}, {"minutes": 1, "jobs": 0}]
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(DiffvocError):
        corpus.make_speech_corpus(tmp_path / "out", progress=False, **kwargs)


def test_cli_parser_wires_both_commands():
    parser = argparse.ArgumentParser(prog="diffvoc")
    add_corpus_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["corpus", "speech", "OUT", "--minutes", "2.5", "--seed", "7"])
    assert (args.out, args.minutes, args.rate, args.seed) == ("OUT", 2.5, 22050, 7)
    assert callable(args.func)
    args = parser.parse_args(["corpus", "digits", "OUT"])
    assert (args.out, args.rate, args.seed) == ("OUT", 16000, 0)
    assert (
        callable(args.func) and args.func is not parser.parse_args(["corpus", "speech", "X"]).func
    )


def test_cli_handler_raises_without_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    parser = argparse.ArgumentParser(prog="diffvoc")
    add_corpus_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["corpus", "digits", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(DiffvocError, match="apt-get"):
        args.func(args)


# ----------------------------------------------------------------------------- speech corpus


@needs_engine
def test_speech_layout_and_metadata(speech):
    out, manifest = speech
    assert {p.name for p in out.iterdir()} == {"wavs", "metadata.csv", "splits", "manifest.json"}
    assert not list(out.parent.glob(".*"))  # the temporary folder was renamed into place
    rows = read_metadata(out)
    assert rows and all(len(row) == 4 for row in rows)
    assert all(row[1] == row[2] and row[1] in corpus.load_sentences() for row in rows)
    assert {f"{row[0]}.wav" for row in rows} == {p.name for p in (out / "wavs").iterdir()}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["kind"] == corpus.SPEECH_KIND
    assert [u["id"] for u in manifest["utterances"]] == [row[0] for row in rows]
    assert [u["speaker"] for u in manifest["utterances"]] == [row[3] for row in rows]
    for utt in manifest["utterances"]:
        assert {"engine", "voice", "engine_version", "settings"} <= utt.keys()
        assert utt["engine_version"] == manifest["engines"][utt["engine"]]
    for key in ("minutes", "utterances", "voices", "seconds_to_make"):
        assert key in manifest["totals"]
    assert manifest["seed"] == 3 and isinstance(manifest["skipped"], list)


@needs_engine
def test_speech_audio_format_and_honest_minutes(speech):
    out, manifest = speech
    seconds = 0.0
    for wav in (out / "wavs").iterdir():
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        seconds += info.frames / info.samplerate
        audio, _ = sf.read(wav)
        assert 0.9 <= abs(audio).max() <= 0.96
    assert seconds / 60 == pytest.approx(manifest["totals"]["minutes"], abs=1e-3)
    last = manifest["utterances"][-1]["seconds"]
    assert 0.4 <= seconds / 60 < 0.4 + last / 60 + 1e-6  # stopped as soon as the target was met


@needs_engine
def test_speech_splits_disjoint_by_sentence_and_voice_held_out(speech):
    out, manifest = speech
    text = {row[0]: row[1] for row in read_metadata(out)}
    speaker = {row[0]: row[3] for row in read_metadata(out)}
    splits = {name: read_split(out, name) for name in SPLITS}
    assert all(splits.values()), {k: len(v) for k, v in splits.items()}
    all_ids = [i for ids in splits.values() for i in ids]
    assert sorted(all_ids) == sorted(text)  # a partition of all ids
    train_texts = {text[i] for i in splits["train"]}
    for name in ("valid", "test", "test_unseen_voice"):
        assert not train_texts & {text[i] for i in splits[name]}, name
    assert not {text[i] for i in splits["valid"]} & {text[i] for i in splits["test"]}
    unseen = {speaker[i] for i in splits["test_unseen_voice"]}
    assert unseen == {manifest["held_out_voice"]}
    seen = {speaker[i] for name in ("train", "valid", "test") for i in splits[name]}
    assert not unseen & seen


@needs_engine
def test_speech_is_deterministic_and_replaces_previous_corpus(speech):
    out, manifest = speech
    before = (out / "metadata.csv").read_text()
    again = corpus.make_speech_corpus(out, minutes=0.4, seed=3, jobs=1, progress=False)
    assert (out / "metadata.csv").read_text() == before

    def plan(m: dict) -> list:
        keys = ("id", "text", "speaker", "engine", "voice", "split", "settings")
        return [{k: u[k] for k in keys} for u in m["utterances"]]

    assert plan(again) == plan(manifest)
    assert again["held_out_voice"] == manifest["held_out_voice"]
    other = corpus.make_speech_corpus(
        out.parent / "other", minutes=0.2, seed=4, jobs=2, progress=False
    )
    assert plan(other)[:3] != plan(manifest)[:3]


# ----------------------------------------------------------------------------- digits corpus


@needs_engine
def test_digits_layout_and_exact_one_second_clips(digits):
    out, manifest = digits
    assert manifest["kind"] == corpus.DIGITS_KIND
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == manifest["totals"]["clips"] == len(manifest["clips"]) > 0
    assert {p.relative_to(out).as_posix() for p in wavs} == {c["path"] for c in manifest["clips"]}
    for wav in wavs:
        split, word = wav.relative_to(out).parts[:2]
        assert split in ("train", "valid", "test") and word in DIGIT_WORDS
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            16000,
            1,
            "PCM_16",
            16000,
        )


@needs_engine
def test_digits_test_split_uses_held_out_voices(digits):
    _, manifest = digits
    by_split: dict[str, set] = {"train": set(), "valid": set(), "test": set()}
    for clip in manifest["clips"]:
        by_split[clip["split"]].add(clip["speaker"])
    assert by_split["test"] == set(manifest["held_out_voices"])
    assert not by_split["test"] & (by_split["train"] | by_split["valid"])
    words = {(c["speaker"], c["word"]) for c in manifest["clips"]}
    assert len(words) == len(manifest["clips"])  # one take per word per voice
    assert {c["word"] for c in manifest["clips"]} == set(DIGIT_WORDS)
