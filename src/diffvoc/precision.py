"""Numeric precision: which dtype ``auto`` means on this machine, and oneDNN's fused linear + tanh.

Shared by the inference engine (:mod:`diffvoc.inference.engine`) and the training engine
(:mod:`diffvoc.training.engine`), so neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

PRECISIONS = ("fp32", "bf16", "auto")


def _linear_tanh_op() -> Callable | None:
    """oneDNN's linear with a fused tanh (``mkldnn::_linear_pointwise``), where this torch has it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return None
        x = torch.randn(4, 32, dtype=torch.bfloat16)
        w = torch.randn(8, 32, dtype=torch.bfloat16)
        y = op(x, w, None, "tanh", [], "")
        if not torch.allclose(y.float(), torch.tanh(x.float() @ w.float().t()), atol=0.05):
            return None
        return op
    except Exception:
        return None


LINEAR_TANH = _linear_tanh_op()
"""oneDNN's fused linear + tanh, or None where this torch/CPU lacks it (read once at import)."""


def cpu_supports_bf16() -> bool:
    """True where bf16 matmuls are fast on this CPU (AMX tiles or AVX512-BF16 instructions)."""
    try:
        amx = bool(torch.cpu._is_amx_tile_supported())
    except Exception:  # older torch
        amx = False
    try:
        avx = bool(torch.cpu._is_avx512_bf16_supported())
    except Exception:
        avx = False
    return amx or avx


def resolve_precision(precision: str, device: torch.device | str = "cpu", engine: str = "fast") -> torch.dtype:
    """``fp32`` | ``bf16`` | ``auto`` → a dtype. ``auto`` (the inference default) is bf16 where bf16 is
    fast — a CPU with AMX or AVX512-BF16 (:func:`cpu_supports_bf16`), a CUDA device that supports it —
    and fp32 elsewhere; the ``reference`` engine (the network as trained) stays fp32 under ``auto``.
    ``fp32`` is the exact path (equal to the trained network and to lmnt-com/diffwave to float rounding).
    bf16 asked for on a CPU without bf16 support raises a DiffvocError."""
    from diffvoc.errors import DiffvocError

    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise DiffvocError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "auto":
        if engine == "reference":
            return torch.float32
        fast = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_supports_bf16()
        return torch.bfloat16 if fast else torch.float32
    if dev.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise DiffvocError("bf16 asked for, but this GPU does not support it")
        return torch.bfloat16
    if not cpu_supports_bf16() and not os.environ.get("DIFFVOC_FORCE_BF16"):
        raise DiffvocError("bf16 asked for, but this CPU has neither AMX nor AVX512-BF16 (bf16 would be slower "
                           "than fp32 here); use precision fp32")
    return torch.bfloat16
