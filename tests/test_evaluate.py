"""`diffvoc evaluate`: copy-synthesis of a tiny test set, every metric, context rows, clean errors."""

from __future__ import annotations

import argparse
import json
import math
import re
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
from conftest import make_corpus, run_cli, voiced

import diffvoc.evaluation.metrics as M
from diffvoc.audio import compute_mel
from diffvoc.cli.evaluate import add_parser as add_evaluate_parser
from diffvoc.config import AudioConfig
from diffvoc.errors import DiffvocError, ScheduleError
from diffvoc.evaluation.copy_synthesis import (
    evaluate,
    griffin_lim,
    list_test_items,
    load_utterances,
    metric_keys,
    parse_steps,
)

ALL_KEYS = metric_keys(list(M.ALL_METRICS))
DNSMOS_KEYS = M.METRIC_SETTINGS["dnsmos"]["keys"]
# An untrained model makes noise: no frame is voiced in both signals, so these are NaN (documented in
# metrics.f0_metrics) and stored as null.
NAN_ALLOWED_FOR_MODELS = {"f0_rmse_cents", "f0_rmse_hz"}


def wired(command: str) -> bool:
    from diffvoc.cli import build_parser

    subs = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any(command in s.choices for s in subs)


needs_cli = pytest.mark.skipif(not wired("evaluate"), reason="diffvoc.cli does not wire `evaluate` yet "
                               "(diffvoc.cli.evaluate)")


def absent_steps(run) -> tuple[int, str]:
    """A step count the run has no schedule for, and the list of available ones as the error gives it."""
    from diffvoc.checkpoint import load_checkpoint

    d = load_checkpoint(run).config.diffusion
    bad = next(n for n in range(2, 1000) if n not in d.fast_schedules and n != d.steps)
    return bad, ", ".join([str(n) for n in sorted(d.fast_schedules)] + [f"{d.steps} (full)"])


def run_handler(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    """A preprocessed folder whose test split holds two utterances."""
    from diffvoc.data.dataset import preprocess

    root = tmp_path_factory.mktemp("evalset")
    corpus = make_corpus(root / "corpus", n=6)
    preprocess(corpus, root / "data", AudioConfig(), jobs=1, test_fraction=0.34)
    return root / "data"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, trained_run, test_set):
    """One evaluation with every metric: steps 6 (stored schedule) and 50 (the training T: full)."""
    out = tmp_path_factory.mktemp("evalout")
    rc = run_handler("--checkpoint", str(trained_run), "--data", str(test_set), "--steps", "6,50", "--limit", "2",
                     "--save-audio", str(out / "audio"), "-o", str(out / "results.json"))
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_results_structure(evaluated, trained_run):
    out, r = evaluated
    assert r["format"] == "diffvoc-evaluation"
    meta = r["meta"]
    for key in ("checkpoints", "steps", "device", "threads", "torch_version", "metric_settings", "command",
                "created", "utterances", "peak_memory", "timing"):
        assert key in meta, key
    assert meta["steps"] == [6, 50] and meta["device"] == "cpu" and meta["threads"] >= 1
    assert meta["split"] == "test" and len(meta["utterances"]) == 2
    ck = meta["checkpoints"][0]
    assert ck["label"] == trained_run.name and ck["config"]["diffusion_steps"] == 50
    assert "22050" in meta["metric_settings"] and "mcd" in meta["metric_settings"]["22050"]
    names = [s["system"] for s in r["summary"]]
    assert names == ["reference", "griffin-lim", f"{trained_run.name}@6", f"{trained_run.name}@50"]
    by_name = {s["system"]: s for s in r["summary"]}
    assert by_name[f"{trained_run.name}@50"]["full"] is True and by_name[f"{trained_run.name}@6"]["full"] is False
    assert len(r["rows"]) == 4 * 2
    md = (out / "results.md").read_text()
    assert "| system |" in md and f"{trained_run.name}@50" in md and "griffin-lim" in md


def test_every_metric_is_finite(evaluated):
    _, r = evaluated
    kinds = {s["system"]: s["kind"] for s in r["summary"]}
    for row in r["rows"]:
        vals = row["metrics"]
        if kinds[row["system"]] == "reference":
            assert sorted(vals) == sorted(DNSMOS_KEYS)  # DNSMOS of the ground truth only
        else:
            assert sorted(vals) == sorted(ALL_KEYS), row["system"]
            assert row["rtf"] is not None and row["rtf"] > 0
        for k, v in vals.items():
            if v is None and kinds[row["system"]] == "model" and k in NAN_ALLOWED_FOR_MODELS:
                continue
            assert v is not None and math.isfinite(v), (row["system"], row["id"], k, v)


def test_summary_has_mean_and_ci(evaluated):
    _, r = evaluated
    for s in r["summary"]:
        assert s["n"] == 2
        assert s["metrics"], s["system"]
        for k, stat in s["metrics"].items():
            assert set(stat) == {"mean", "ci95", "n"}
            if stat["n"] == 2:
                assert math.isfinite(stat["mean"]) and math.isfinite(stat["ci95"]) and stat["ci95"] >= 0
        if s["kind"] == "reference":
            assert s["rtf"] is None
        else:
            assert math.isfinite(s["rtf"]["mean"]) and s["peak_memory_mb"] > 0 and s["peak_memory_kind"]
    gl = next(s for s in r["summary"] if s["kind"] == "griffin-lim")
    assert gl["metrics"]["log_mel_l1"]["mean"] < 0.5  # Griffin-Lim inverts the same mel, aligned in time


def test_saved_audio(evaluated, trained_run):
    out, r = evaluated
    for s in r["summary"]:
        for uid in r["meta"]["utterances"]:
            ref, sr = sf.read(out / "audio" / "reference" / f"{uid}.wav")
            wav, sr2 = sf.read(out / "audio" / s["system"] / f"{uid}.wav")
            assert sr == sr2 == 22050 and len(wav) == len(ref) > 0
    assert r["meta"]["save_audio_relative"] == "audio"


def test_utterances_match_the_vocoder(trained_run, test_set):
    from diffvoc.inference.vocoder import Vocoder

    voc = Vocoder.from_pretrained(trained_run)
    items, split, _ = list_test_items(test_set, None)
    assert split == "test" and len(items) == 2
    for it, u in zip(items, load_utterances(items, voc.config.audio, test_set)):
        mel, length = voc.analyse_file(it["path"])
        assert len(u.audio) == length
        np.testing.assert_allclose(u.mel, mel, atol=1e-5)


def test_griffin_lim_is_aligned():
    cfg = AudioConfig()
    x = voiced(1.0, cfg.sample_rate)
    x = 0.9 * x / np.abs(x).max()

    def mel_fn(a: np.ndarray) -> np.ndarray:  # the model's mel
        return compute_mel(a, cfg)

    mel = mel_fn(np.pad(x, (0, -len(x) % cfg.hop_length)))
    y = griffin_lim(mel, cfg, len(x), seed=0)
    assert y.shape == x.shape and np.abs(y).max() <= 1.0
    aligned = M.log_mel_l1(x, y, mel_fn)
    shifted = M.log_mel_l1(x, np.roll(y, cfg.hop_length // 2), mel_fn)
    assert aligned < 0.3 and aligned < shifted


def test_plain_folder_in_order(trained_run, tmp_path):
    corpus = make_corpus(tmp_path / "plain", n=3)
    r = evaluate([str(trained_run)], corpus, steps=[12], limit=2, metrics=["mr_stft"], with_griffin_lim=False,
                 log=None)
    assert r["meta"]["utterances"] == ["utt000", "utt001"]
    assert [s["system"] for s in r["summary"]] == ["reference", f"{trained_run.name}@12"]
    assert set(r["rows"][-1]["metrics"]) == {"mr_stft", "mr_stft_sc", "mr_stft_mag"}


def test_bad_input_is_an_error_before_any_output(trained_run, test_set, tmp_path):
    out = tmp_path / "r.json"
    bad, avail = absent_steps(trained_run)
    with pytest.raises(ScheduleError, match=f"no {bad}-step schedule .*available step counts: {re.escape(avail)}"):
        run_handler("--checkpoint", str(trained_run), "--data", str(test_set), "--steps", f"6,{bad}", "-o", str(out))
    with pytest.raises(DiffvocError, match="--steps"):
        parse_steps("6,x")
    with pytest.raises(DiffvocError, match="unknown metric"):
        run_handler("--checkpoint", str(trained_run), "--data", str(test_set), "--metrics", "mr_stft,bogus",
                    "-o", str(out))
    with pytest.raises(DiffvocError, match="no 'nope' split"):
        run_handler("--checkpoint", str(trained_run), "--data", str(test_set), "--split", "nope", "-o", str(out))
    with pytest.raises(DiffvocError, match="does not exist"):
        run_handler("--checkpoint", str(trained_run), "--data", str(test_set), "-o", str(tmp_path / "no" / "r.json"))
    assert list(tmp_path.iterdir()) == []


@needs_cli
def test_cli_bad_steps_is_one_clean_line(trained_run, test_set, tmp_path):
    out = tmp_path / "results.json"
    bad, avail = absent_steps(trained_run)
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(test_set), "--steps", f"{bad},6",
                "-o", str(out))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("diffvoc evaluate: error:") and f"no {bad}-step schedule" in lines[0]
    assert avail in lines[0] and "Traceback" not in r.stderr
    assert not out.exists() and not out.with_suffix(".md").exists()


@needs_cli
def test_cli_evaluate(trained_run, test_set, tmp_path):
    out = tmp_path / "results.json"
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(test_set), "--steps", "12",
                "--limit", "1", "--metrics", "mr_stft,log_mel_l1", "--no-griffin-lim", "--threads", "1",
                "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "| system |" in r.stdout and f"{trained_run.name}@12" in r.stdout
    res = json.loads(out.read_text())
    assert [s["system"] for s in res["summary"]] == ["reference", f"{trained_run.name}@12"]
    assert "evaluate" in res["meta"]["command"] and out.with_suffix(".md").is_file()
    assert res["meta"]["threads"] == 1


@needs_cli
def test_evaluate_then_report_shows_audio_without_extra_flags(trained_run, test_set, tmp_path):
    """As a new user: `diffvoc evaluate -o results.json`, then `diffvoc report results.json -o page`."""
    out = tmp_path / "results.json"
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(test_set), "--steps", "6",
                "--limit", "2", "--metrics", "mr_stft", "--threads", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    audio = tmp_path / "results_audio"
    systems = ["reference", "griffin-lim", f"{trained_run.name}@6"]
    assert sorted(p.name for p in audio.iterdir()) == sorted(systems)
    ids = json.loads(out.read_text())["meta"]["utterances"]
    for system in systems:
        assert sorted(p.stem for p in (audio / system).iterdir()) == sorted(ids)
        wav, sr = sf.read(audio / system / f"{ids[0]}.wav")
        assert sr == 22050 and len(wav) > 0
    assert json.loads(out.read_text())["meta"]["save_audio_relative"] == "results_audio"
    r = run_cli("report", str(out), "-o", str(tmp_path / "page"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "page" / "index.html").read_text()
    assert page.count("<audio controls") == len(ids) * len(systems)
    assert page.count('<img src="spec/') >= len(ids) * len(systems)
    assert "No audio" not in page
    for wav in re.findall(r'<audio controls preload="auto" src="([^"]+)"', page):
        assert (tmp_path / "page" / unquote(wav)).is_file()


@needs_cli
def test_evaluate_no_audio(trained_run, test_set, tmp_path):
    out = tmp_path / "results.json"
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(test_set), "--steps", "6",
                "--limit", "1", "--metrics", "mr_stft", "--no-griffin-lim", "--no-audio", "-o", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["meta"]["save_audio"] is None and "--no-audio" in res["meta"]["command"]
    assert not (tmp_path / "results_audio").exists()
    r = run_cli("evaluate", "--checkpoint", str(trained_run), "--data", str(test_set), "--no-audio",
                "--save-audio", str(tmp_path / "a"), "-o", str(out))
    assert r.returncode == 2 and "not allowed with" in r.stderr
