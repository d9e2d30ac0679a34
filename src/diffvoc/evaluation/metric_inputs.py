"""What every metric of :mod:`diffvoc.evaluation.metrics` checks first: the waveforms, the sample rate,
the optional package it needs (imported lazily, with the ``pip install`` to run when it is missing),
and the resampling to a metric's native rate."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import numpy as np

from diffvoc.errors import AudioError, ConfigError, DiffvocError

_PIP_HINT: dict[str, str] = {
    "pesq": "pesq",
    "pystoi": "pystoi",
    "pysptk": 'pysptk "setuptools<81"',
    "pyworld": 'pyworld "setuptools<81"',
    "speechmos": "speechmos onnxruntime requests",
}


def require(module: str) -> ModuleType:
    """Import an optional metric dependency or raise a :class:`DiffvocError` naming the pip install."""
    top = module.split(".")[0]
    hint = _PIP_HINT.get(top, top)
    try:
        with warnings.catch_warnings():
            # pysptk / pyworld import the deprecated pkg_resources at import time.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or top
        what = f"'{top}'" if missing in (top, module) else f"'{top}' and its dependency '{missing}'"
        if missing == "pkg_resources":
            what += " (pkg_resources was removed in setuptools 81: install \"setuptools<81\")"
        raise DiffvocError(
            f"this metric needs the optional package {what}: pip install {hint} "
            f"(or pip install 'diffvoc[metrics]'); import failed: {exc}"
        ) from exc


def as_mono(x: np.ndarray, name: str) -> np.ndarray:
    """Validate a mono waveform and return it as contiguous float64."""
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioError(f"{name}: expected a mono waveform [T], got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(f"{name}: empty waveform")
    if not np.issubdtype(arr.dtype, np.number):
        raise AudioError(f"{name}: waveform must be numeric, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise AudioError(f"{name}: waveform contains NaN or Inf")
    return arr


def match(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate both signals and trim them to the shorter length."""
    r = as_mono(ref, "reference")
    d = as_mono(deg, "degraded")
    n = min(r.size, d.size)
    return r[:n], d[:n]


def check_sr(sr: int) -> int:
    """A positive integer sample rate, or a :class:`~diffvoc.errors.ConfigError`."""
    if not isinstance(sr, (int, np.integer)) or isinstance(sr, bool) or sr <= 0:
        raise ConfigError(f"sample rate must be a positive integer, got {sr!r}")
    return int(sr)


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """``x`` at ``target`` Hz (:func:`librosa.resample`, soxr_hq); unchanged when the rates agree."""
    if sr == target:
        return x
    import librosa

    return librosa.resample(x, orig_sr=sr, target_sr=target, res_type="soxr_hq")
