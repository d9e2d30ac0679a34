"""ONNX export: the onnxruntime path matches PyTorch on the same noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from conftest import run_cli  # noqa: E402

from diffvoc.inference.vocoder import Vocoder  # noqa: E402


def test_onnx_matches_pytorch(tmp_path, trained_run):
    from diffvoc.inference.onnx import OnnxVocoder, export_onnx

    v = Vocoder.from_pretrained(trained_run, precision="fp32")  # ONNX runs in fp32
    torch.nn.init.normal_(v.model.output_projection.weight, std=0.3)  # non-trivial output
    paths = export_onnx(v, tmp_path / "m.onnx")
    assert all(p.is_file() for p in paths.values())
    ov = OnnxVocoder(tmp_path / "m.onnx")
    mel = np.random.default_rng(0).normal(-4, 1, (2, 80, 37)).astype(np.float32)
    for kw in ({"steps": 6}, {"full": True}):
        ref = v.vocode(mel, seed=3, chunk_frames=0, **kw)
        out = ov.vocode(mel, seed=3, **kw)
        assert out.shape == ref.shape == (2, 37 * 256)
        assert np.abs(out - ref).max() < 1e-4  # stated tolerance: float32 kernels differ in summation order


def test_export_cli(tmp_path, trained_run):
    r = run_cli("export", "--checkpoint", str(trained_run), "-o", str(tmp_path / "x.onnx"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.onnx").is_file() and (tmp_path / "x.conditioner.onnx").is_file()
    r = run_cli("export", "--checkpoint", str(trained_run), "-o", str(tmp_path / "x.bin"))
    assert r.returncode == 1 and "must end in .onnx" in r.stderr
