"""The bundled model loads with no argument, and `diffvoc demo` (the README's main job) runs end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli, voiced


def test_bundled_model_loads_and_vocodes():
    from diffvoc.inference.vocoder import DEFAULT_CHECKPOINT, Vocoder

    v = Vocoder.from_pretrained()
    assert v.config.prior.kind == "priorgrad" and "energy_min" in v.stats
    assert (DEFAULT_CHECKPOINT / "model.safetensors").stat().st_size < 15e6
    y = v.vocode(v.mel(voiced(0.5, v.sample_rate)), steps=2, seed=0)
    assert y.shape == (int(0.5 * v.sample_rate) // v.hop * v.hop,) and np.all(np.isfinite(y))


@pytest.mark.slow
def test_demo_with_user_wavs(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", voiced(0.8, 22050), 22050)
    r = run_cli("demo", str(tmp_path / "a.wav"), "-o", str(tmp_path / "demo"), "--metrics", "mr_stft,log_mel_l1")
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and (tmp_path / "demo" / "report" / "index.html").is_file()
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    systems = {s["system"] for s in res["summary"]} if isinstance(res["summary"], list) else set(res["summary"])
    assert any("@2" in s for s in systems) and any("@6" in s for s in systems)
    # the page plays the vocoded samples (the report is built before the folder moves into place)
    page = (tmp_path / "demo" / "report" / "index.html").read_text()
    assert "No audio" not in page and list((tmp_path / "demo" / "report" / "audio").rglob("*.wav"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None and shutil.which("flite") is None,
                    reason="no TTS engine (apt-get install espeak-ng flite)")
def test_demo_speaks_sentences(tmp_path):
    r = run_cli("demo", "-o", str(tmp_path / "demo"), "--sentences", "1", "--metrics", "mr_stft,log_mel_l1")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "demo" / "inputs").glob("*.wav"))) == 1


def test_demo_refuses_bad_input(tmp_path):
    (tmp_path / "bad.wav").write_text("not audio")
    r = run_cli("demo", str(tmp_path / "bad.wav"), "-o", str(tmp_path / "demo"))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "cannot read" in r.stderr
    assert not (tmp_path / "demo").exists()
