"""ONNX export of a mel vocoder, and an onnxruntime inference path that reuses diffvoc's sampler.

``diffvoc export --checkpoint CKPT -o model.onnx`` writes two graphs:

* ``model.onnx`` — the denoiser ε_θ(x_t, t, c): inputs ``audio`` [B, T] float32, ``diffusion_step``
  [B] float32 (fractional steps allowed), ``conditioner`` [B, C_cond, T] (the upsampled mel);
  output ``eps`` [B, 1, T];
* ``model.conditioner.onnx`` — the conditioner: ``mel`` [B, n_mels(+1), frames] → ``conditioner``.

Beside them, ``model.yaml`` (the full config) and ``model.stats.yaml`` (the prior's statistics),
so that :class:`OnnxVocoder` samples exactly as :class:`~diffvoc.inference.vocoder.Vocoder` does; the
prior, the schedules and the sampler stay in Python (they are a few elementwise operations).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from diffvoc.build import build, build_sampler
from diffvoc.config import Config
from diffvoc.diffusion.noise import NoiseSource, PositionalNoise
from diffvoc.errors import DiffvocError
from diffvoc.inference.vocoder import Vocoder
from diffvoc.io import atomic_files, check_writable, load_yaml

OPSET = 17


class _Denoiser(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, diffusion_step: torch.Tensor, conditioner: torch.Tensor) -> torch.Tensor:
        return self.model.denoise(audio, diffusion_step, conditioner)


class _Conditioner(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.condition(mel)


def _paths(output: str | Path) -> dict[str, Path]:
    """The four files of an export to ``output`` (``model.onnx``)."""
    out = Path(output)
    if out.suffix != ".onnx":
        raise DiffvocError(f"the output must end in .onnx, got {out}")
    stem = out.with_suffix("")
    return {"denoiser": out, "conditioner": Path(f"{stem}.conditioner.onnx"), "config": Path(f"{stem}.yaml"),
            "stats": Path(f"{stem}.stats.yaml")}


def export_paths(output: str | Path) -> dict[str, Path]:
    """The files an export to ``output`` writes, each checked writable (call before any work)."""
    paths = _paths(output)
    for p in paths.values():
        check_writable(p)
    return paths


def export_onnx(vocoder: Vocoder, output: str | Path) -> dict[str, Path]:
    """Export ``vocoder``'s denoiser and conditioner to ONNX; the four files are written as one set
    (all of them or none, :func:`diffvoc.io.atomic_files`)."""
    if vocoder.config.model.conditioning != "mel":
        raise DiffvocError("ONNX export supports mel-conditioned models")
    if vocoder.config.truncation.enabled:
        raise DiffvocError("ONNX export does not cover truncated (TDPM) models yet: their implicit prior is not exported")
    paths = export_paths(output)
    model = vocoder.model.float().cpu().eval()
    cfg = vocoder.config
    frames, hop = 8, cfg.audio.hop_length
    mel = torch.randn(1, model.cond_channels, frames)
    with torch.no_grad():
        cond = model.condition(mel)
    x = torch.randn(1, frames * hop)
    t = torch.tensor([1.5])
    with atomic_files() as files, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter handles these graphs fully
        # the shape check in DiffWave.forward is constant for the traced graph (its axes are declared dynamic)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_Denoiser(model), (x, t, cond), str(files.stage(paths["denoiser"])), dynamo=False,
                          opset_version=OPSET, input_names=["audio", "diffusion_step", "conditioner"],
                          output_names=["eps"],
                          dynamic_axes={"audio": {0: "batch", 1: "samples"}, "diffusion_step": {0: "batch"},
                                        "conditioner": {0: "batch", 2: "samples"}, "eps": {0: "batch", 2: "samples"}})
        torch.onnx.export(_Conditioner(model), (mel,), str(files.stage(paths["conditioner"])), dynamo=False,
                          opset_version=OPSET, input_names=["mel"], output_names=["conditioner"],
                          dynamic_axes={"mel": {0: "batch", 2: "frames"}, "conditioner": {0: "batch", 2: "samples"}})
        files.write_text(paths["config"], cfg.to_yaml())
        files.write_text(paths["stats"], yaml.safe_dump(vocoder.stats, sort_keys=True))
    return paths


class OnnxVocoder:
    """Sampling with onnxruntime sessions for the network; same prior, schedules and noise as
    :class:`~diffvoc.inference.vocoder.Vocoder` (so outputs agree with PyTorch to float tolerance)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DiffvocError("onnxruntime is not installed: pip install 'diffvoc[onnx]'") from None
        paths = _paths(path)
        for p in paths.values():
            if not p.is_file():
                raise DiffvocError(f"missing {p} (written by `diffvoc export`)")
        self.config = Config.load(paths["config"])
        from diffvoc.checkpoint import check_stats

        self.stats = check_stats(load_yaml(paths["stats"], "statistics file"), paths["stats"])
        _, self.schedule, self.prior = build(self.config, self.stats)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.denoiser = ort.InferenceSession(str(paths["denoiser"]), opts, providers=["CPUExecutionProvider"])
        self.conditioner = ort.InferenceSession(str(paths["conditioner"]), opts, providers=["CPUExecutionProvider"])

    def vocode(self, mel: np.ndarray, steps: int | None = 6, schedule: list[float] | None = None, full: bool = False,
               seed: int = 0, noise: NoiseSource | None = None) -> np.ndarray:
        """Mel ``[n_mels, frames]`` or ``[B, n_mels, frames]`` → waveform (one pass, no chunking)."""
        from diffvoc.audio import check_mel

        check_mel(mel, self.config.audio.n_mels)
        m = torch.as_tensor(np.asarray(mel, dtype=np.float32))
        single = m.dim() == 2
        m = m.unsqueeze(0) if single else m
        sampler = build_sampler(self.config, steps, schedule, full, train=self.schedule)
        mel_in = self.prior.conditioner(m).numpy()
        cond = self.conditioner.run(None, {"mel": mel_in})[0]
        B, length = m.shape[0], m.shape[-1] * self.config.audio.hop_length
        std = self.prior.std(m, length)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            feeds = {"audio": x.numpy().astype(np.float32), "diffusion_step": t.float().numpy().reshape(-1),
                     "conditioner": cond}
            if feeds["diffusion_step"].shape[0] != B:
                feeds["diffusion_step"] = np.broadcast_to(feeds["diffusion_step"], (B,)).copy()
            return torch.from_numpy(self.denoiser.run(None, feeds)[0])

        out = sampler.sample(denoise, std, B, length, noise or PositionalNoise(seed))
        out = out.numpy()
        return out[0] if single else out
