"""A fast inference engine for a trained :class:`~diffvoc.network.DiffWave` (issue 7).

:class:`FastDenoiser` reads a model's weights once and evaluates ε_θ(x_t, t, c) with the same
value as :meth:`DiffWave.denoise` (fp32: to float rounding; bf16: a measured quality cost), but
organised for speed on a CPU:

* **Channels-last, one matmul per layer.** Activations are stored time-major ``[N, C]`` (N = the
  batch's samples laid end to end). Each layer's dilated convolution (3 taps), its conditioner
  projection and both biases are one matmul ``S @ W`` over a stacked operand
  ``S = [x(t−d) + e, x(t) + e, x(t+d) + e, cond(t), 1]`` (e = the layer's diffusion-step
  projection). The conditioner columns of S are written once per utterance (the conditioner and
  therefore every layer's conditioner projection do not depend on the step); per layer and step
  only the three tap blocks are rewritten. Taps that fall outside an item read zero, exactly as
  the convolution's zero padding does.
* **Folded constants.** The residual scaling (1/√2 per layer), the skip scaling 1/√L, the
  sigmoid-as-tanh rewrite (σ(a) = (1 + tanh(a/2))/2, so one in-place tanh covers both gate
  halves), the residual biases (carried into the next layer's tap offset e) and the skip biases
  (folded into the skip projection's bias) are all folded into the weights at construction.
* **Bounded working set, no allocation in the hot loop.** All buffers (the residual stream ``z``
  twice, the skip sum, S, the per-tile matmul outputs) are allocated once and reused for every step
  and every later input up to the same size; each layer runs over time tiles of ``tile`` samples,
  which bounds the per-tile buffers. Measured on the project's shared 2-core machine: at 1 thread
  tiles of 4096 and 22016 samples cost the same, at 2 threads on a loaded machine every extra
  operation waits for the second thread, so the default tile (32768) runs 1 s of audio as one tile.
* **bf16** (``precision="bf16"``): weights cast once, matmul operands in bf16 (AMX / AVX512-BF16
  on recent x86), the tanh fused into oneDNN's matmul (computed before rounding). The residual
  stream and skip sum are bf16 too by default (``stream_dtype``): PyTorch's mixed-dtype elementwise
  operations on CPU cost more than they save (fp32 stream: relative ε error 1.3e-3 instead of
  2.1e-3 on the bundled model, and ~20 % slower).

One engine call computes the same function as ``model.denoise(x, t, model.condition(mel))``; the
samplers in :mod:`diffvoc.sampler` use it through the closure :meth:`FastDenoiser.closure`.

GPU: the same engine runs on CUDA tensors, but the simpler and usually faster choice there is the
reference network under bf16 autocast with optional CUDA-graph capture
(:func:`reference_denoiser`); :class:`~diffvoc.vocoder.Vocoder` picks that on CUDA.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any

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


_LINEAR_TANH = _linear_tanh_op()


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


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``fp32`` | ``bf16`` | ``auto`` → a dtype; ``auto`` is fp32 on CPU (the exact path) and bf16
    on CUDA devices that support it. bf16 on a CPU without bf16 support raises a ValueError."""
    from .errors import DiffvocError

    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise DiffvocError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "auto":
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dev.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise DiffvocError("bf16 asked for, but this GPU does not support it")
        return torch.bfloat16
    if not cpu_supports_bf16() and not os.environ.get("DIFFVOC_FORCE_BF16"):
        raise DiffvocError("bf16 asked for, but this CPU has neither AMX nor AVX512-BF16 (bf16 would be slower "
                           "than fp32 here); use --precision fp32")
    return torch.bfloat16


class FastDenoiser:
    """ε_θ(x_t, t, c) for a mel-conditioned (or unconditional / class-conditional) DiffWave.

    Args:
        model: a trained :class:`~diffvoc.network.DiffWave` (its weights are read once; later changes
            to the module are not seen — build a new engine).
        dtype: ``torch.float32`` or ``torch.bfloat16`` for the matmul operands.
        tile: samples per time tile of each layer (cache blocking).
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.float32, tile: int = 32768,
                 stream_dtype: torch.dtype = torch.float32) -> None:
        self.model = model
        self.dtype = dtype
        self.stream_dtype = stream_dtype if dtype != torch.float32 else torch.float32
        self.tile = int(tile)
        p = next(model.parameters())
        self.device = p.device
        layers = list(model.residual_layers)
        self.L = L = len(layers)
        self.C = C = model.cfg.residual_channels
        self.dilations = [int(layer.dilated_conv.dilation[0]) for layer in layers]
        has_cond = layers[0].conditioner_projection is not None
        self.cond_channels = layers[0].conditioner_projection.in_channels if has_cond else 0
        k_used = 3 * C + self.cond_channels + 1  # taps, conditioner, ones (bias)
        self.K = K = -(-k_used // 32) * 32  # padded for the matmul kernels (AMX tiles take K in 32s)
        f32 = dict(dtype=torch.float32, device=self.device)
        with torch.no_grad():
            w_in = model.input_projection.weight.detach().float().reshape(C)
            b_in = model.input_projection.bias.detach().float()
            Wt = torch.zeros(L, K, 2 * C, **f32)  # stacked operand weights, transposed for S @ W
            Wo = torch.zeros(L, C, 2 * C, **f32)  # gate → [residual | skip], transposed
            proj_w, proj_b = [], []
            cum_bias = torch.zeros(C, **f32)  # Σ of folded residual biases carried by the stream z
            skip_bias = torch.zeros(C, **f32)
            half = torch.ones(2 * C, **f32)
            half[:C] = 0.5  # σ(a) = (1 + tanh(a/2))/2: the gate's first half is pre-scaled by 1/2
            for i, layer in enumerate(layers):
                s = 2.0 ** (-i / 2)  # x_i = s_i · z_i (the 1/√2 residual scaling folded out)
                w = layer.dilated_conv.weight.detach().float()  # [2C, C, 3]
                b = layer.dilated_conv.bias.detach().float().clone()
                for k in range(3):
                    Wt[i, k * C:(k + 1) * C] = (w[:, :, k] * s * half[:, None]).t()
                if has_cond:
                    wc = layer.conditioner_projection.weight.detach().float()[:, :, 0]
                    Wt[i, 3 * C:3 * C + self.cond_channels] = (wc * half[:, None]).t()
                    b = b + layer.conditioner_projection.bias.detach().float()
                Wt[i, 3 * C + self.cond_channels] = b * half
                # taps see x + e = s·(z + e/s): the step projection and the carried residual biases
                dp = layer.diffusion_projection
                proj_w.append(dp.weight.detach().float() / s)
                proj_b.append(dp.bias.detach().float() / s + cum_bias)
                wo = layer.output_projection.weight.detach().float()[:, :, 0]  # [2C, C]
                bo = layer.output_projection.bias.detach().float()
                # gate here is tanh(b)(1 + tanh(a/2)) = 2·σ(a)tanh(b): the 1/2 goes into the projection
                Wo[i, :, :C] = (0.5 * wo[:C] / s).t()  # residual → z_{i+1} = z_i + r/s_i
                cum_bias = cum_bias + bo[:C] / s
                Wo[i, :, C:] = (0.5 * wo[C:] / math.sqrt(L)).t()
                skip_bias = skip_bias + bo[C:] / math.sqrt(L)
            sp_w = model.skip_projection.weight.detach().float()[:, :, 0]
            sp_b = model.skip_projection.bias.detach().float() + sp_w @ skip_bias
            self.w_in, self.b_in = w_in, b_in
            self.Wt = Wt.to(dtype).contiguous()
            self.Wo = Wo.to(dtype).contiguous()
            self.Wlin = Wt.transpose(1, 2).to(dtype).contiguous()  # [L, 2C, K] for oneDNN's linear
            self.proj_w = torch.cat(proj_w).contiguous()  # [L·C, 512]
            self.proj_b = torch.cat(proj_b).contiguous()
            self.sp_wt, self.sp_b = sp_w.t().contiguous(), sp_b
            self.out_w = model.output_projection.weight.detach().float()[0, :, 0].contiguous()  # [C]
            self.out_b = model.output_projection.bias.detach().float()
        self._cap = 0
        self._owner: object = None
        self.items: list[tuple[int, int]] = []
        self.shape = (0, 0)

    # ---- buffers -------------------------------------------------------------------------------
    def _buffers(self, N: int) -> None:
        """Buffers for N rows, allocated once and reused (grown only when a longer input comes)."""
        if self._cap >= N:
            return
        C, K, dev, sd = self.C, self.K, self.device, self.stream_dtype
        tile = self.tile
        self.z = [torch.empty(N, C, device=dev, dtype=sd), torch.empty(N, C, device=dev, dtype=sd)]
        self.skip = torch.empty(N, C, device=dev, dtype=sd)
        self.S = torch.zeros(N, K, device=dev, dtype=self.dtype)
        self.Y = torch.empty(tile, 2 * C, device=dev, dtype=self.dtype)
        self.G = torch.empty(tile, C, device=dev, dtype=self.dtype)
        self.R = torch.empty(tile, 2 * C, device=dev, dtype=self.dtype)
        self.X = torch.empty(tile + 2 * max(self.dilations), C, device=dev, dtype=self.dtype)
        self._cap, self._owner = N, None

    def set_condition(self, cond: torch.Tensor | None, batch: int, length: int,
                      lengths: list[int] | None = None, owner: object = None) -> None:
        """Write the step-independent columns of S (conditioner and ones) for ``batch`` items of
        ``length`` samples; ``cond`` is ``[B, C_cond, length]``, ``[B, C_cond, 1]`` or None.
        ``lengths`` (samples per item, ≤ length) makes each item an independent sequence of its own
        length (zero padding after it, as if it had been run alone); the rows after it are don't-care."""
        N = batch * length
        self._buffers(N)
        C3, Cc = 3 * self.C, self.cond_channels
        S = self.S[:N].view(batch, length, self.K)
        if Cc:
            if cond is None:
                raise ValueError("this model is conditioned: pass its conditioner")
            if cond.shape[-1] not in (1, length):
                raise ValueError(f"conditioner has {cond.shape[-1]} samples, audio has {length}")
            S[:, :, C3:C3 + Cc].copy_(cond.transpose(1, 2).expand(batch, length, Cc))
        S[:, :, C3 + Cc].fill_(1.0)
        lengths = [length] * batch if lengths is None else [min(int(n), length) for n in lengths]
        self.items = [(i * length, i * length + n) for i, n in enumerate(lengths)]
        self.shape = (batch, length)
        self._owner = owner

    # ---- one network call ------------------------------------------------------------------------
    def step_offsets(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Per item and layer, the vector added to every tap input: ``[B, L, C]`` (float32)."""
        if t.dim() == 0:
            t = t.expand(batch)
        emb = self.model.diffusion_embedding(t.to(self.device)).float()  # [B, 512]
        return torch.addmm(self.proj_b, emb, self.proj_w.t()).view(-1, self.L, self.C)

    @torch.inference_mode()
    def __call__(self, audio: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``audio`` [B, T], ``t`` [B] or scalar, ``cond`` as for :meth:`DiffWave.denoise` → [B, 1, T]."""
        B, T = audio.shape
        self.set_condition(cond, B, T)
        return self.run(audio, self.step_offsets(t, B))

    def run(self, audio: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """One network call on ``audio`` [B, T] with step offsets ``e`` [B or 1, L, C] (see
        :meth:`step_offsets`); the conditioner columns must have been set for this shape."""
        B, T = audio.shape
        N, C = B * T, self.C
        if (B, T) != self.shape:
            raise ValueError(f"the conditioner was set for {self.shape}, audio is {(B, T)}")
        z_in, z_out = self.z[0][:N], self.z[1][:N]
        S, skip = self.S[:N], self.skip[:N]
        bf16 = self.dtype == torch.bfloat16
        mixed = self.dtype != self.stream_dtype
        lin = _LINEAR_TANH if (bf16 and _LINEAR_TANH is not None and self.device.type == "cpu") else None
        # input projection + ReLU: z_0 = relu(w·x + b)
        torch.addcmul(self.b_in, audio.reshape(N, 1).float(), self.w_in, out=z_in)  # (cast on write)
        z_in.relu_()
        skip.zero_()
        tile = min(self.tile, N)
        items = self.items
        e_rows = e.to(self.stream_dtype)
        per_item = e_rows.shape[0] > 1
        for li, d in enumerate(self.dilations):
            Wt, Wo = self.Wt[li], self.Wo[li]
            last = li == self.L - 1
            for a in range(0, N, tile):
                b = min(a + tile, N)
                # the three tap blocks of S for rows [a, b), item by item: x + e over the rows
                # [u − d, v + d) in one contiguous pass (rows outside the item are the zero padding),
                # then three shifted copies
                for item, (s0, s1) in enumerate(items):
                    u, v = max(a, s0), min(b, s1)
                    if u >= v:
                        continue
                    ev = e_rows[item if per_item else 0, li]
                    lo, hi = max(s0, u - d), min(s1, v + d)
                    base = u - d
                    X = self.X[:v - u + 2 * d]
                    if lo > base:
                        X[:lo - base].zero_()
                    if v + d > hi:
                        X[hi - base:].zero_()
                    torch.add(z_in[lo:hi], ev, out=X[lo - base:hi - base])
                    S[u:v, :C].copy_(X[:v - u])
                    S[u:v, C:2 * C].copy_(X[d:d + v - u])
                    S[u:v, 2 * C:3 * C].copy_(X[2 * d:2 * d + v - u])
                n = b - a
                G = self.G[:n]
                if lin is not None:  # oneDNN matmul with the tanh fused (computed before rounding to bf16)
                    Y = lin(S[a:b], self.Wlin[li], None, "tanh", [], "")
                else:
                    Y = torch.mm(S[a:b], Wt, out=self.Y[:n]).tanh_()
                ya, yb = Y[:, :C], Y[:, C:]
                torch.addcmul(yb, ya, yb, out=G)  # tanh(b)·(1 + tanh(a/2)) = 2σ(a)tanh(b)
                if not mixed:  # accumulate straight into the residual stream and the skip sum
                    if not last:
                        torch.addmm(z_in[a:b], G, Wo[:, :C], out=z_out[a:b])
                    skip[a:b].addmm_(G, Wo[:, C:])
                    continue
                R = self.R[:n]
                if last:
                    torch.mm(G, Wo[:, C:], out=R[:, C:])
                else:
                    torch.mm(G, Wo, out=R)
                    torch.add(z_in[a:b], R[:, :C], out=z_out[a:b])
                skip[a:b] += R[:, C:]
            z_in, z_out = z_out, z_in
        h = torch.addmm(self.sp_b, skip.float(), self.sp_wt).relu_()
        out = torch.mv(h, self.out_w).add_(self.out_b)
        return out.view(B, 1, T)

    def closure(self, cond: torch.Tensor | None, lengths: list[int] | None = None
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``denoise(x, t) -> eps`` for :meth:`DiffusionSampler.sample` with a fixed conditioner:
        the conditioner columns are written once, not at every step."""
        token = object()

        @torch.inference_mode()
        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            B, T = x.shape
            if self._owner is not token or self.shape != (B, T):
                self.set_condition(cond, B, T, lengths, owner=token)
            return self.run(x, self.step_offsets(t, B))

        return denoise


ENGINES = ("fast", "reference")


def _try_compile(fn: Callable, probe: Callable[[Callable], Any], what: str) -> Callable:
    """``torch.compile(fn)`` if it compiles and runs ``probe`` here; else ``fn`` with one warning line."""
    try:
        compiled = torch.compile(fn, dynamic=True)
        probe(compiled)
        return compiled
    except Exception as e:  # no C++ compiler, inductor error, unsupported op...
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        warnings.warn(f"torch.compile of the {what} failed ({type(e).__name__}: {msg}); running eagerly",
                      RuntimeWarning, stacklevel=3)
        return fn


class DenoiserFactory:
    """What :class:`~diffvoc.vocoder.Vocoder` uses to turn a conditioner into ``denoise(x, t)``.

    Args:
        model: the DiffWave network (on its device).
        precision: ``fp32`` | ``bf16`` | ``auto`` (see :func:`resolve_precision`).
        engine: ``fast`` (:class:`FastDenoiser` on CPU; on CUDA the network under autocast) or
            ``reference`` (``model.denoise`` as trained, fp32 unless bf16 is asked for).
        compile: wrap the per-step function in :func:`torch.compile` (eager fallback on failure).
    """

    def __init__(self, model: torch.nn.Module, precision: str = "fp32", engine: str = "fast",
                 compile: bool = False) -> None:
        from .errors import DiffvocError

        if engine not in ENGINES:
            raise DiffvocError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = resolve_precision(precision, self.device)
        self.engine = engine
        self.compile = bool(compile)
        self.fast: FastDenoiser | None = None
        self._denoise: Callable = model.denoise
        if engine == "fast" and self.device.type == "cpu":
            self.fast = FastDenoiser(model, self.dtype, stream_dtype=self.dtype)
            if self.compile:
                self.fast.run = _try_compile(self.fast.run, self._probe_fast, "fast engine")
        elif self.compile:
            self._denoise = _try_compile(model.denoise, self._probe_reference, "network")

    def _probe_fast(self, fn: Callable) -> None:
        fast = self.fast
        x = torch.zeros(1, 512, device=self.device)
        cond = torch.zeros(1, fast.cond_channels, 512, device=self.device) if fast.cond_channels else None
        with torch.inference_mode():
            fast.set_condition(cond, 1, 512)
            fn(x, fast.step_offsets(torch.tensor([1.0]), 1))

    def _probe_reference(self, fn: Callable) -> None:
        m = self.model
        x = torch.zeros(1, 512, device=self.device)
        cond = None
        if m.conditioning == "mel":
            cond = torch.zeros(1, m.cond_channels, 512, device=self.device)
        elif m.conditioning == "class":
            cond = torch.zeros(1, 128, 1, device=self.device)
        with torch.inference_mode():
            fn(x, torch.tensor([1.0], device=self.device), cond)

    def __call__(self, cond: torch.Tensor | None, lengths: list[int] | None = None
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``denoise(x, t) -> eps [B, 1, T]`` for this conditioner."""
        if self.fast is not None:
            return self.fast.closure(cond, lengths)
        fn, dev, dtype = self._denoise, self.device, self.dtype

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if dtype == torch.float32:
                return fn(x, t, cond)
            with torch.autocast(dev.type, dtype=dtype):
                return fn(x, t, cond).float()

        return denoise
