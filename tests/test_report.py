"""`diffvoc report`: a static page whose every audio player and image loads from disk in Chromium."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import run_cli

from diffvoc.cli.report import add_parser as add_report_parser
from diffvoc.errors import DiffvocError
from diffvoc.evaluation.copy_synthesis import evaluate
from diffvoc.evaluation.report import build_report
from diffvoc.evaluation.results import write_results

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH "
                                    "(Debian: apt-get install -y chromium)")


def wired(command: str) -> bool:
    from diffvoc.cli import build_parser

    subs = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any(command in s.choices for s in subs)


@pytest.fixture(scope="module")
def results(tmp_path_factory, trained_run, data_dir) -> Path:
    """A small evaluation (2 utterances, cheap metrics) with its audio saved."""
    out = tmp_path_factory.mktemp("reportsrc")
    r = evaluate([str(trained_run)], data_dir, split="train", steps=[6], limit=2,
                 metrics=["mr_stft", "log_mel_l1", "stoi"], save_audio=out / "audio", log=None)
    write_results(r, out / "results.json")
    return out / "results.json"


@pytest.fixture(scope="module")
def report(tmp_path_factory, results, trained_run) -> Path:
    index = build_report([results], tmp_path_factory.mktemp("site") / "report", runs=[trained_run])
    assert index.name == "index.html"
    return index


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
           f"--user-data-dir={user_data}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_page_and_assets(report, trained_run):
    page = report.read_text()
    assert 'content="diffvoc report"' in page and "<pre id=\"selfcheck\"" in page
    assert page.count("<audio controls preload=\"auto\"") == 2 * 3  # 2 utterances x (truth, Griffin-Lim, model)
    for name in ("ground truth", "griffin-lim", f"{trained_run.name}@6", "train/loss", "valid/loss", "↓", "↑"):
        assert name in page, name
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) >= 2 * 3 * 2 + 2  # audio + spectrograms + at least two curves
    for link in links:
        assert not link.startswith(("/", "file:", "http")), link  # relative: opens from disk, moves with the folder
        assert (report.parent / unquote(link)).is_file(), link


@needs_chromium
def test_every_player_and_image_loads_in_chromium(report, tmp_path):
    r = chromium("--dump-dom", report.as_uri(), user_data=tmp_path / "profile")
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'<pre id="selfcheck" data-status="(\w+)">([^<]*)</pre>', r.stdout)
    assert m, r.stdout[-2000:]
    status, text = m.groups()
    counts = re.search(r"audio (\d+)/(\d+), images (\d+)/(\d+)", text)
    assert status == "ok", text
    assert counts and counts[1] == counts[2] == "6" and counts[3] == counts[4] and int(counts[4]) >= 8, text

    shot = tmp_path / "report.png"
    r = chromium("--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={shot}", report.as_uri(),
                 user_data=tmp_path / "profile")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280) and shot.stat().st_size > 20_000
    assert pixels[..., :3].std() > 0.05  # not a blank page


@needs_chromium
def test_selfcheck_reports_broken_assets(report, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report.parent, broken)
    wav = next((broken / "audio").rglob("*.wav"))
    wav.write_bytes(b"not a wav")
    r = chromium("--dump-dom", (broken / "index.html").as_uri(), user_data=tmp_path / "profile")
    assert 'data-status="fail"' in r.stdout and "audio 5/6" in r.stdout


def test_without_saved_audio(trained_run, data_dir, tmp_path):
    r = evaluate([str(trained_run)], data_dir, split="train", steps=[6], limit=1, metrics=["mr_stft"],
                 with_griffin_lim=False, log=None)
    write_results(r, tmp_path / "r.json")
    page = build_report([tmp_path / "r.json"], tmp_path / "site").read_text()
    assert "<audio" not in page and "--save-audio" in page and "No training runs" in page


def test_bad_inputs(results, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DiffvocError, match="not a diffvoc report"):
        build_report([results], mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(DiffvocError, match="not a results file"):
        build_report([tmp_path / "x.json"], tmp_path / "site")
    with pytest.raises(DiffvocError, match="no TensorBoard logs"):
        build_report([results], tmp_path / "site", runs=[tmp_path])
    assert not (tmp_path / "site").exists()


def test_rebuild_replaces_an_earlier_report(results, tmp_path):
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(results), "-o", str(tmp_path / "site"), "--max-utterances", "1"])
    assert args.func(args) == 0
    assert build_report([results], tmp_path / "site", max_utterances=2).read_text().count("<audio") == 6


@pytest.mark.skipif(not wired("report"), reason="diffvoc.cli does not wire `report` yet "
                    "(diffvoc.cli.report)")
def test_cli_report(results, trained_run, tmp_path):
    r = run_cli("report", str(results), "-o", str(tmp_path / "site"), "--runs", str(trained_run))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "index.html").is_file() and "index.html" in r.stdout
    r = run_cli("report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "site2"))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("diffvoc report: error:"), r.stderr


# ------------------------------------------------------------------------- generated samples (issue 8)


@pytest.fixture(scope="module")
def generated_dirs(tmp_path_factory) -> dict[str, Path]:
    """Two folders named as `diffvoc generate` names its clips, and a benchmarks/generation.py JSON."""
    import json

    import numpy as np
    import soundfile as sf

    from diffvoc.inference.generator import output_name

    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(0)
    for kind, labels in (("cond", [0, 1, 2, 3]), ("uncond", [None, None, None])):
        (root / kind).mkdir()
        for k, label in enumerate(labels):
            x = 0.3 * np.sin(2 * np.pi * (200 + 50 * k) * np.arange(16000) / 16000) + 0.01 * rng.standard_normal(16000)
            sf.write(root / kind / output_name(label, k), x.astype(np.float32), 16000, subtype="PCM_16")
    (root / "gen.json").write_text(json.dumps({
        "meta": {"created": "2026-01-01T00:00:00", "n": 4, "sampler": "6-step fast sampling",
                 "classifier": {"path": "benchmarks/results/digit_classifier", "test_accuracy": 0.986},
                 "command": "python benchmarks/generation.py --n 4"},
        "rows": [{"system": "cond", "kind": "generated", "n": 4, "fid": 12.5, "is": 1.25, "mis": 150.0,
                  "mis_class": 1.0, "am": 1.5, "ndb_k": 0.9, "accuracy": 0.25, "rtf": 0.5},
                 {"system": "real train", "kind": "real", "n": 40, "fid": 0.0, "is": 9.5, "accuracy": 1.0}]}))
    return {"cond": root / "cond", "uncond": root / "uncond", "json": root / "gen.json"}


@pytest.fixture(scope="module")
def generated_report(tmp_path_factory, generated_dirs) -> Path:
    d = generated_dirs
    return build_report([], tmp_path_factory.mktemp("gensite") / "report",
                        generated=[f"conditional={d['cond']}", str(d["uncond"])], generation_results=[d["json"]],
                        max_generated=3)


def test_generated_samples_page(generated_report):
    page = generated_report.read_text()
    assert 'id="generated"' in page and 'id="samples"' not in page  # no copy-synthesis results given
    assert page.count('<audio controls preload="auto"') == 3 + 3  # max_generated per folder
    for text in ("conditional", "uncond", "“zero” (label 0) #0", "“two” (label 2) #2", "unconditional #1",
                 "FID ↓", "12.500", "25.0%", "150.0", "real train", "98.6% on held-out voices",
                 "python benchmarks/generation.py --n 4"):
        assert text in page, text
    assert "“three”" not in page  # the fourth clip is past --max-generated
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) == 2 * 6
    for link in links:
        assert not link.startswith(("/", "file:", "http")), link
        assert (generated_report.parent / unquote(link)).is_file(), link


@needs_chromium
def test_generated_players_load_in_chromium(generated_report, tmp_path):
    r = chromium("--dump-dom", generated_report.as_uri(), user_data=tmp_path / "profile")
    m = re.search(r'<pre id="selfcheck" data-status="(\w+)">([^<]*)</pre>', r.stdout)
    assert m and m[1] == "ok" and "audio 6/6, images 6/6" in m[2], r.stdout[-2000:]


def test_generated_with_copy_synthesis_results(results, generated_dirs, tmp_path):
    page = build_report([results], tmp_path / "site", generated=[str(generated_dirs["cond"])]).read_text()
    assert 'id="samples"' in page and 'id="generated"' in page
    assert page.count("<audio") == 2 * 3 + 4


def test_generated_bad_inputs(generated_dirs, tmp_path):
    with pytest.raises(DiffvocError, match="nothing to report"):
        build_report([], tmp_path / "site")
    with pytest.raises(DiffvocError, match="no such folder"):
        build_report([], tmp_path / "site", generated=[f"x={tmp_path / 'missing'}"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffvocError, match="no .wav files"):
        build_report([], tmp_path / "site", generated=[str(tmp_path / "empty")])
    (tmp_path / "x.json").write_text('{"rows": 1}')
    with pytest.raises(DiffvocError, match="not a results file of benchmarks/generation.py"):
        build_report([], tmp_path / "site", generation_results=[tmp_path / "x.json"])
    with pytest.raises(DiffvocError, match="--max-generated"):
        build_report([], tmp_path / "site", generated=[str(generated_dirs["cond"])], max_generated=0)
    assert not (tmp_path / "site").exists()


@pytest.mark.skipif(not wired("report"), reason="diffvoc.cli does not wire `report` yet")
def test_cli_report_generated_only(generated_dirs, tmp_path):
    r = run_cli("report", "-o", str(tmp_path / "site"), "--generated", f"cond={generated_dirs['cond']}",
                "--generation-results", str(generated_dirs["json"]), "--max-generated", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "index.html").read_text().count("<audio") == 2
    r = run_cli("report", "-o", str(tmp_path / "site2"))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "nothing to report" in lines[0], r.stderr
