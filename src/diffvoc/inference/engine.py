"""A fast inference engine for a trained :class:`~diffvoc.models.diffwave.DiffWave` (issue 7).

:class:`FastDenoiser` reads a model's weights once and evaluates ε_θ(x_t, t, c) with the same
value as :meth:`DiffWave.denoise` (fp32: to float rounding; bf16: a measured quality cost), but
organised for speed on a CPU:

* **One operand buffer, one matmul per layer.** Activations are time-major rows. A buffer ``S``
  holds, per sample, ``[x(t−d) | z̃(t) | x(t+d) | cond(t) | 1]``: the middle block *is* the residual
  stream, the two outer blocks are its copies shifted by the layer's dilation, the conditioner
  columns are written once per utterance. A layer's dilated convolution (3 taps), conditioner
  projection and both biases are then one matmul ``S @ W`` (bf16: oneDNN's matmul with the tanh
  fused, on AMX), and the residual update is an in-place ``addmm_`` into the middle block.
* **Folded constants.** The stream carries the step's offset: z̃_i = z_i + e'_i, with e'_i the
  layer's diffusion-step projection (scaled) plus the residual biases folded so far; the change
  e'_{i+1} − e'_i rides on a ones column of the gate. The 1/√2 residual scaling, the skip scaling
  1/√L and the sigmoid-as-tanh rewrite (σ(a) = (1 + tanh(a/2))/2, so one tanh covers both gate
  halves) are folded into the weights at construction. Every item sits between zero rows (the
  convolutions' zero padding), so taps need no bounds checks.
* **A wavefront over time, cost linear in length.** Each network call runs in stages: layer 0
  advances ``tile`` rows, every later layer as far as its input is ready (its predecessor's
  frontier minus its dilation). The rows one stage touches stay in cache whatever the length, so
  30 s cost what 30 × 1 s cost; the input projection runs just ahead of layer 0 and the output
  projection just behind the last layer. Before a layer updates rows in place it saves the left
  taps its next advance needs.
* **No allocation in the hot loop.** ``S``, the skip sum and the gate buffer are allocated once and
  reused for every step and every later input up to the same size (oneDNN's fused matmul returns
  one tile-sized tensor per call, which the allocator recycles).

One engine call computes the same function as ``model.denoise(x, t, model.condition(mel))``; the
samplers in :mod:`diffvoc.diffusion.sampler` use it through :meth:`FastDenoiser.closure`.

GPU: there the reference network runs under bf16 autocast; ``compile=True`` wraps it in
``torch.compile(mode="reduce-overhead")``, which captures CUDA graphs. Batched vocoding
(:meth:`~diffvoc.inference.vocoder.Vocoder.vocode_batch`) fills the GPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from diffvoc.precision import LINEAR_TANH, resolve_precision  # noqa: F401  (re-used by the engines)


class FastDenoiser:
    """ε_θ(x_t, t, c) for a mel-conditioned (or unconditional / class-conditional) DiffWave.

    Args:
        model: a trained :class:`~diffvoc.models.diffwave.DiffWave` (its weights are read once; later changes
            to the module are not seen — build a new engine).
        dtype: ``torch.float32`` or ``torch.bfloat16`` for the operand buffer and the weights.
        tile: samples each layer advances per wavefront stage (the cache block; see the module's
            docstring). Any value ≥ 1 gives the same result; 32768 (1.5 s at 22.05 kHz) was the
            fastest of 8192–65536 on the project's 2-core machine (BASE, bf16, 1 / 5 / 30 s), with
            1 s of audio in one stage.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype = torch.float32, tile: int = 32768) -> None:
        self.model = model
        self.dtype = dtype
        self.tile = max(1, int(tile))
        p = next(model.parameters())
        self.device = p.device
        layers = list(model.residual_layers)
        self.L = L = len(layers)
        self.C = C = model.cfg.residual_channels
        self.dilations = [int(layer.dilated_conv.dilation[0]) for layer in layers]
        self.margin = max(self.dilations)  # zero rows around every item: the taps' zero padding
        has_cond = layers[0].conditioner_projection is not None
        self.cond_channels = Cc = layers[0].conditioner_projection.in_channels if has_cond else 0
        self.ones_col = 3 * C + Cc
        self.K = K = -(-(self.ones_col + 1) // 32) * 32  # padded for the matmul kernels (AMX tiles take K in 32s)
        f32 = dict(dtype=torch.float32, device=self.device)
        with torch.no_grad():
            w_in = model.input_projection.weight.detach().float().reshape(C)
            b_in = model.input_projection.bias.detach().float()
            Wt = torch.zeros(L, K, 2 * C, **f32)  # operand weights, transposed for S @ W
            Wres = torch.zeros(L, C + 1, C, **f32)  # gate (+ a ones column) → residual update of z̃
            Wskip = torch.zeros(L, C, C, **f32)
            proj_w, proj_b = [], []
            cum_bias = torch.zeros(C, **f32)  # Σ of folded residual biases (carried by the offsets e')
            skip_bias = torch.zeros(C, **f32)
            half = torch.ones(2 * C, **f32)
            half[:C] = 0.5  # σ(a) = (1 + tanh(a/2))/2: the gate's first half is pre-scaled by 1/2
            for i, layer in enumerate(layers):
                s = 2.0 ** (-i / 2)  # x_i = s_i · (z_i + cum_bias_i): the 1/√2 residual scaling folded out
                w = layer.dilated_conv.weight.detach().float()  # [2C, C, 3]
                b = layer.dilated_conv.bias.detach().float().clone()
                for k in range(3):
                    Wt[i, k * C:(k + 1) * C] = (w[:, :, k] * s * half[:, None]).t()
                if has_cond:
                    wc = layer.conditioner_projection.weight.detach().float()[:, :, 0]
                    Wt[i, 3 * C:3 * C + Cc] = (wc * half[:, None]).t()
                    b = b + layer.conditioner_projection.bias.detach().float()
                Wt[i, self.ones_col] = b * half
                # taps read z̃_i = z_i + e'_i with e'_i = e_i/s_i + cum_bias_i (x + e = s_i·z̃_i)
                dp = layer.diffusion_projection
                proj_w.append(dp.weight.detach().float() / s)
                proj_b.append(dp.bias.detach().float() / s + cum_bias)
                wo = layer.output_projection.weight.detach().float()[:, :, 0]  # [2C, C]
                bo = layer.output_projection.bias.detach().float()
                # the gate here is tanh(b)(1 + tanh(a/2)) = 2·σ(a)tanh(b): the 1/2 goes into the projection
                Wres[i, :C] = (0.5 * wo[:C] / s).t()  # z_{i+1} = z_i + r/s_i
                cum_bias = cum_bias + bo[:C] / s
                Wskip[i] = (0.5 * wo[C:] / math.sqrt(L)).t()
                skip_bias = skip_bias + bo[C:] / math.sqrt(L)
            sp_w = model.skip_projection.weight.detach().float()[:, :, 0]
            sp_b = model.skip_projection.bias.detach().float() + sp_w @ skip_bias
            self.w_in, self.b_in = w_in, b_in
            # bf16 on a CPU: oneDNN's linear with the tanh fused takes W as [L, 2C, K]; else S @ W, [L, K, 2C]
            self._lin = LINEAR_TANH if (dtype == torch.bfloat16 and self.device.type == "cpu") else None
            self.W = (Wt.transpose(1, 2) if self._lin is not None else Wt).to(dtype).contiguous()
            self.Wres = Wres.to(dtype).contiguous()  # row C: the per-step offset change e'_{i+1} − e'_i
            self.Wskip = Wskip.to(dtype).contiguous()
            self.proj_w = torch.cat(proj_w).contiguous()  # [L·C, 512]
            self.proj_b = torch.cat(proj_b).contiguous()
            self.sp_wt, self.sp_b = sp_w.t().contiguous(), sp_b
            self.out_w = model.output_projection.weight.detach().float()[0, :, 0].contiguous()  # [C]
            self.out_b = model.output_projection.bias.detach().float()
        self._rows = 0
        self._owner: object = None
        self.items: list[tuple[int, int]] = []  # (first row in S, samples) per item
        self.shape = (0, 0)
        self._G = torch.empty(0)

    # ---- buffers -------------------------------------------------------------------------------
    def _buffers(self, rows: int) -> None:
        """S and the skip sum for ``rows`` rows, allocated once and reused (grown only when a longer
        input comes); the per-stage gate buffer G (with its ones column) once per engine."""
        C, dev, dt = self.C, self.device, self.dtype
        if self._rows < rows:
            self.S = torch.zeros(rows, self.K, device=dev, dtype=dt)
            self.skip = torch.empty(rows, C, device=dev, dtype=dt)
            self._rows, self._owner = rows, None
        cap = self.tile + 2 * self.margin
        if self._G.shape[0] < cap:
            self._G = torch.empty(cap, C + 1, device=dev, dtype=dt)
            self._G[:, C] = 1.0
            self._Y = torch.empty(cap, 2 * C, device=dev, dtype=dt)

    def set_condition(self, cond: torch.Tensor | None, batch: int, length: int,
                      lengths: list[int] | None = None, owner: object = None) -> None:
        """Lay out ``batch`` items of ``length`` samples in S (each between zero margins) and write
        their step-independent columns (conditioner, ones) once; ``cond`` is ``[B, C_cond, length]``,
        ``[B, C_cond, 1]`` or None. ``lengths`` (samples per item, ≤ length) makes each item an
        independent sequence of its own length (zero padding after it, as if it had been run alone);
        the output after it is zero."""
        M, Cc, C = self.margin, self.cond_channels, self.C
        rows = M + batch * (length + M)
        self._buffers(rows)
        if Cc:
            if cond is None:
                raise ValueError("this model is conditioned: pass its conditioner")
            if cond.shape[-1] not in (1, length):
                raise ValueError(f"conditioner has {cond.shape[-1]} samples, audio has {length}")
        lengths = [length] * batch if lengths is None else [min(int(n), length) for n in lengths]
        S = self.S[:rows]
        S[:, C:2 * C].zero_()  # the residual stream: zero in every margin, written per call in items
        self.items = []
        for b, n in enumerate(lengths):
            r0 = M + b * (length + M)
            if Cc:
                S[r0:r0 + n, 3 * C:3 * C + Cc].copy_(cond[b, :, :n].t() if cond.shape[-1] > 1
                                                     else cond[b, :, 0].expand(n, Cc))
            S[r0:r0 + n, self.ones_col] = 1.0
            self.items.append((r0, n))
        self.shape = (batch, length)
        self._owner = owner

    # ---- one network call ------------------------------------------------------------------------
    def step_offsets(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Per item and layer, the offset e' the taps read on top of the stream: ``[B, L, C]`` (float32)."""
        t = t.reshape(-1).to(self.device)
        if bool((t == t[0]).all()):  # one step for the batch: one row (the same bits as a batch of one)
            t = t[:1]
        emb = self.model.diffusion_embedding(t).float()  # [B or 1, 512]
        return torch.addmm(self.proj_b, emb, self.proj_w.t()).view(-1, self.L, self.C)

    @torch.inference_mode()
    def __call__(self, audio: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``audio`` [B, T], ``t`` [B] or scalar, ``cond`` as for :meth:`DiffWave.denoise` → [B, 1, T]."""
        B, T = audio.shape
        self.set_condition(cond, B, T)
        return self.run(audio, self.step_offsets(t, B))

    def run(self, audio: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """One network call on ``audio`` [B, T] with step offsets ``e`` [B or 1, L, C] (see
        :meth:`step_offsets`); :meth:`set_condition` must have been called for this shape."""
        B, T = audio.shape
        if (B, T) != self.shape:
            raise ValueError(f"the conditioner was set for {self.shape}, audio is {(B, T)}")
        out = torch.zeros(B, 1, T, device=self.device)
        e = e.float()
        last_e = None
        for b, (r0, n) in enumerate(self.items):
            eb = e[b if e.shape[0] > 1 else 0]
            if last_e is None or not torch.equal(eb, last_e):
                self._set_offsets(eb)
                last_e = eb
            self._wavefront(r0, r0 + n, audio[b, :n], eb[0], out[b, 0])
        return out

    def _set_offsets(self, e: torch.Tensor) -> None:
        """The residual projections' bias rows: z̃_{i+1} = z̃_i + r_i + (e'_{i+1} − e'_i), with the
        rounding of earlier rows compensated so that the stream's offset stays e' to one rounding."""
        acc = e[0].clone()
        rows = torch.empty(self.L, self.C, device=self.device)
        rows[-1] = 0.0
        for i in range(self.L - 1):
            rows[i] = (e[i + 1] - acc).to(self.dtype).float()
            acc += rows[i]
        self.Wres[:, self.C].copy_(rows)

    def _wavefront(self, start: int, end: int, audio: torch.Tensor, e0: torch.Tensor, out: torch.Tensor) -> None:
        """All layers over rows [start, end) of S, in stages: each stage advances layer 0 by ``tile``
        rows and every later layer as far as its input is ready (its predecessor's frontier minus
        its dilation), so the rows a stage touches stay in cache (the input projection and the
        skip sum's zeroing run just ahead of layer 0, the output projection just behind the last
        layer). The residual update is in place; a layer's left tap for the first ``d`` rows of its
        next advance is saved before the update."""
        S, skip, C, L = self.S, self.skip, self.C, self.L
        G, Ybuf, lin = self._G, self._Y, self._lin
        cap = G.shape[0]
        f = [start] * L
        lim = zf = start
        while f[-1] < end:
            lim = min(end, lim + self.tile)
            zt = min(end, lim + self.dilations[0])
            if zt > zf:  # z̃_0 = relu(w·x + b) + e'_0 for the rows layer 0 reads next
                z = S[zf:zt, C:2 * C]
                torch.addcmul(self.b_in, audio[zf - start:zt - start, None].float(), self.w_in, out=z)
                z.relu_().add_(e0)
                skip[zf:zt].zero_()
                zf = zt
            ready = lim  # layer 0's input (z̃_0) is there for every row
            for i, d in enumerate(self.dilations):
                u = f[i]
                v = end if ready >= end else ready - d
                v = min(v, u + cap)
                if v <= u or (v < end and v - u < d):
                    ready = u
                    continue
                n = v - u
                # taps: left (rows [u, u+d) saved at this layer's previous advance, except for the
                # first advance and the last layer, which leaves the stream as it is), right
                last = i == L - 1
                if u == start or last:
                    S[u:v, :C].copy_(S[u - d:v - d, C:2 * C])
                elif n > d:
                    S[u + d:v, :C].copy_(S[u:v - d, C:2 * C])
                S[u:v, 2 * C:3 * C].copy_(S[u + d:v + d, C:2 * C])
                if not last and v < end:  # the next advance's left taps, before rows [v−d, v) change
                    w = min(v + d, end)
                    S[v:w, :C].copy_(S[v - d:w - d, C:2 * C])
                if lin is not None:  # oneDNN matmul with the tanh fused (computed before rounding)
                    Y = lin(S[u:v], self.W[i], None, "tanh", [], "")
                else:
                    Y = torch.mm(S[u:v], self.W[i], out=Ybuf[:n]).tanh_()
                g = G[:n]
                torch.addcmul(Y[:, C:], Y[:, :C], Y[:, C:], out=g[:, :C])  # tanh(b)·(1 + tanh(a/2))
                if not last:
                    S[u:v, C:2 * C].addmm_(g, self.Wres[i])  # z̃_{i+1} = z̃_i + r_i + Δe'_i, in place
                skip[u:v].addmm_(g[:, :C], self.Wskip[i])
                if last:  # output rows [u, v): relu(skip projection) → 1 channel
                    h = torch.addmm(self.sp_b, skip[u:v].float(), self.sp_wt).relu_()
                    torch.addmv(self.out_b, h, self.out_w, out=out[u - start:v - start])
                f[i] = v
                ready = v

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


def _try_compile(fn: Callable, probe: Callable[[Callable], Any], what: str, mode: str | None = None) -> Callable:
    """``torch.compile(fn)`` if it compiles and runs ``probe`` here; else ``fn`` with one warning line."""
    try:
        compiled = torch.compile(fn, dynamic=mode is None, mode=mode)
        probe(compiled)
        return compiled
    except Exception as e:  # no C++ compiler, inductor error, unsupported op...
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        warnings.warn(f"torch.compile of the {what} failed ({type(e).__name__}: {msg}); running eagerly",
                      RuntimeWarning, stacklevel=3)
        return fn


class DenoiserFactory:
    """What :class:`~diffvoc.inference.vocoder.Vocoder` uses to turn a conditioner into ``denoise(x, t)``.

    Args:
        model: the DiffWave network (on its device).
        precision: ``fp32`` | ``bf16`` | ``auto`` (see :func:`resolve_precision`).
        engine: ``fast`` (:class:`FastDenoiser` on CPU; on CUDA the network under autocast) or
            ``reference`` (``model.denoise`` as trained, fp32 unless bf16 is asked for).
        compile: wrap the per-step function in :func:`torch.compile` (eager fallback on failure).
    """

    def __init__(self, model: torch.nn.Module, precision: str = "fp32", engine: str = "fast",
                 compile: bool = False) -> None:
        from diffvoc.errors import DiffvocError

        if engine not in ENGINES:
            raise DiffvocError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = resolve_precision(precision, self.device, engine)
        self.engine = engine
        self.compile = bool(compile)
        self.fast: FastDenoiser | None = None
        self._denoise: Callable = model.denoise
        if engine == "fast" and self.device.type == "cpu":
            self.fast = FastDenoiser(model, self.dtype)
            if self.compile:
                self.fast.run = _try_compile(self.fast.run, self._probe_fast, "fast engine")
        elif self.compile:  # on CUDA: CUDA graphs through inductor's reduce-overhead mode
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._denoise = _try_compile(model.denoise, self._probe_reference, "network", mode)

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
