"""Bad input: one clear line on stderr, a non-zero exit, no traceback and no partial output."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import run_cli, voiced


def assert_clean_failure(r, *expected: str):
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("diffvoc ")
    for e in expected:
        assert e in lines[0], lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage garbage")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio\n")
    sf.write(d / "silent0.wav", np.zeros(0, np.float32), 22050)
    sf.write(d / "good.wav", voiced(0.5, 22050), 22050)
    np.save(d / "bands.npy", np.zeros((64, 20), np.float32))
    nan = np.full((80, 20), -5, np.float32)
    nan[1, 1] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "good.npy", np.full((80, 20), -5, np.float32))
    (d / "pickle.npy").write_bytes(b"\x93NUMPY garbage")
    return d


@pytest.mark.parametrize("name,msg", [("corrupt.wav", "cannot read"), ("empty.wav", "cannot read"),
                                      ("text.wav", "cannot read"), ("silent0.wav", "no audio"),
                                      ("missing.wav", "no such file")])
def test_vocode_bad_audio(tmp_path, trained_run, inputs, name, msg):
    out = tmp_path / "o.wav"
    r = run_cli("vocode", str(inputs / name), "-o", str(out), "--checkpoint", str(trained_run))
    assert_clean_failure(r, msg)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name,msg", [("bands.npy", "64 mel bands"), ("nan.npy", "NaN"), ("pickle.npy", "cannot read")])
def test_vocode_bad_mel(tmp_path, trained_run, inputs, name, msg):
    r = run_cli("vocode", str(inputs / "good.npy"), str(inputs / name), "-o", str(tmp_path / "outdir"),
                "--checkpoint", str(trained_run))
    assert_clean_failure(r, msg)
    assert not (tmp_path / "outdir").exists()


def test_mel_bad_input_and_unwritable_output(tmp_path, inputs):
    assert_clean_failure(run_cli("mel", str(inputs / "corrupt.wav"), "-o", str(tmp_path / "m.npy")), "cannot read")
    assert not (tmp_path / "m.npy").exists()
    r = run_cli("mel", str(inputs / "good.wav"), "-o", str(tmp_path / "no" / "such" / "m.npy"))
    assert_clean_failure(r, "does not exist")
    r = run_cli("vocode", str(inputs / "good.npy"), "-o", str(tmp_path / "no" / "x.wav"))
    assert_clean_failure(r, "does not exist")


def test_checkpoint_of_another_config(tmp_path, trained_run, inputs):
    from diffvoc.checkpoint import resolve_checkpoint_dir

    ck = tmp_path / "ck"
    shutil.copytree(resolve_checkpoint_dir(trained_run), ck)
    cfg = yaml.safe_load((ck / "config.yaml").read_text())
    cfg["model"]["residual_channels"] = 32
    (ck / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_cli("vocode", str(inputs / "good.npy"), "-o", str(tmp_path / "o.wav"), "--checkpoint", str(ck))
    assert_clean_failure(r, "do not match")
    assert not (tmp_path / "o.wav").exists()
    (ck / "model.safetensors").write_bytes(b"garbage")
    assert_clean_failure(run_cli("vocode", str(inputs / "good.npy"), "-o", str(tmp_path / "o.wav"),
                                 "--checkpoint", str(ck)), "corrupt")
    assert_clean_failure(run_cli("vocode", str(inputs / "good.npy"), "-o", str(tmp_path / "o.wav"),
                                 "--checkpoint", str(tmp_path / "nothing")), "no such checkpoint")
    (tmp_path / "fake.pt").write_bytes(b"not a torch file")
    assert_clean_failure(run_cli("vocode", str(inputs / "good.npy"), "-o", str(tmp_path / "o.wav"),
                                 "--checkpoint", str(tmp_path / "fake.pt")), "cannot load")


def test_bad_schedule_and_config(tmp_path, trained_run, inputs, data_dir):
    r = run_cli("vocode", str(inputs / "good.npy"), "-o", str(tmp_path / "o.wav"), "--checkpoint", str(trained_run),
                "--schedule", "1e-4,0.95")
    assert_clean_failure(r, "outside the training range")
    (tmp_path / "c.yaml").write_text("model: {residual_channels: many}\n")
    assert_clean_failure(run_cli("train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "r")), "residual_channels")
    (tmp_path / "d.yaml").write_text(f"data: {{path: {data_dir}}}\n")
    assert_clean_failure(run_cli("train", str(tmp_path / "d.yaml"), "--run-dir", str(tmp_path / "r"),
                                 "--set", "train.nonsense=1"), "unknown config key")
    assert_clean_failure(run_cli("train", str(tmp_path / "d.yaml"), "--run-dir", str(tmp_path / "r2"), "--resume"),
                         "no checkpoint to resume")
    assert not (tmp_path / "r").exists()


def test_preprocess_refuses_empty_corpus(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run_cli("preprocess", str(tmp_path / "empty"), "-o", str(tmp_path / "d")), "no audio files")
