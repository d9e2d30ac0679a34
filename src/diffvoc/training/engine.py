"""A fast training path for :class:`~diffvoc.models.diffwave.DiffWave` on a CPU (issue 14).

The reference network runs its dilated convolutions channel-major through PyTorch's generic
convolution kernels and lets autograd keep every intermediate; on a 2-core CPU that spends most
of a step on memory traffic and allocation. :class:`FastTrainNetwork` computes the *same function*
ε_θ(x_t, t, c) (Kong et al., 2021, eq. 1 and Fig. 2) with the same parameters, organised like the
inference engine (:mod:`diffvoc.inference.engine`):

* **Time-major stacked taps.** Per layer ℓ with dilation d the operand row of sample t is
  ``S(t) = [z(t−d) | z(t) | z(t+d) | c(t) | 1]`` with ``z = x + W_ℓ·emb`` (the residual stream plus
  the step projection) and ``c`` the upsampled conditioner; the dilated convolution, the
  conditioner projection and both biases are then one matmul ``Y = S @ W_ℓ``. Every item sits
  between zero rows, which are the convolution's zero padding.
* **One tanh for the gate.** σ(a)·tanh(b) = ½·tanh(b)·(1 + tanh(a/2)): the 1/2 on ``a`` is folded
  into W_ℓ and the outer ½ into the output projection, so the forward pass keeps one tensor
  ``Y = tanh(S @ W'_ℓ)`` per layer and the backward pass differentiates from it
  (d tanh(u)/du = 1 − tanh²u).
* **A hand-written backward for the residual stack** (:class:`_ResidualStack`, a
  ``torch.autograd.Function``): it saves only ``z_ℓ``, ``Y_ℓ`` and the gate per layer, rebuilds ``S``
  in one reused buffer, and computes every weight gradient of a layer as one matmul ``S^T @ dY`` —
  taps, conditioner weights and the bias in one go; the conditioner's gradient is one matmul over
  all layers, Σ_ℓ dY_ℓ W_c,ℓ^T; the taps' gradients are read back shifted by ±d from a buffer with
  zero margins. The residual scaling 1/√2 per layer is folded into the weights (the stream is
  carried as x̃_ℓ = 2^{ℓ/2}·x_ℓ).
* **bf16 operands, fp32 master state.** With ``dtype=torch.bfloat16`` the operands ``S``, ``Y``
  and the gradient operands are bf16 (oneDNN's matmul, fp32 accumulation inside, tanh fused);
  the residual stream, the gradient of the stream, every weight gradient handed
  to the optimiser and the weights themselves stay fp32 (the skip sum over all layers is one matmul
  with fp32 accumulation inside, rounded once). With ``torch.float32`` every tensor is
  fp32 and loss and gradients equal the reference network's to float rounding (tested).
* **One item at a time, one batch-wide prelude.** :meth:`FastTrainNetwork.accumulate` runs forward
  and backward item by item (the activations of one 62-frame item, ≈ 250 MB for BASE, live only
  between the two), accumulating into detached leaves; then one backward pass goes through the
  batch-wide :meth:`FastTrainNetwork.prelude` — mel upsampler, step MLP, input projection, weight
  stacking — which is also where DDP synchronises. The optimiser still sees the whole batch.

Scratch buffers are allocated once per item length and reused; saved-activation sets are pooled.
Measured (``benchmarks/train_speed.py``): a BASE step of 16 × 62 frames in 6.3 s on 2 cores (bf16),
7.4× the reference network and 9.2× lmnt-com/diffwave 0.1.7, at 1.8 GB peak; about 2.7 s of it is
matmul, most of the rest memory traffic of elementwise work on activations that do not fit in cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffvoc.precision import LINEAR_TANH


class _Saved:
    """What one item's forward pass keeps for its backward pass (pooled: see :class:`FastTrainNetwork`)."""

    def __init__(self, L: int, T: int, C: int, margin: int, dtype: torch.dtype, device: torch.device) -> None:
        z = dict(dtype=dtype, device=device)
        self.Z = torch.zeros(L, T + 2 * margin, C, **z)  # z_ℓ between zero margins (never written)
        self.G = torch.empty(T, L, C, **z)  # the gates 2σ(a)tanh(b), layer-interleaved: the skip sum is one matmul
        self.Y: list[torch.Tensor | None] = [None] * L  # tanh(S @ W'_ℓ)


class _Workspace:
    """Scratch buffers for one (samples, dtype) shape, used inside one forward or one backward call."""

    def __init__(self, L: int, T: int, C: int, K: int, cond_cols: int, margin: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.key = (T, dtype)
        self.args = (L, T, C, margin, dtype, device)
        self.pool: list[_Saved] = []
        z = dict(dtype=dtype, device=device)
        self.S = torch.zeros(T, K, **z)  # operand rows; the cond and ones columns are written once per item
        self.S[:, 3 * C + cond_cols] = 1.0
        self.R = torch.empty(T, C, **z)  # a layer's residual output
        self.dO = torch.empty(T, 2 * C, **z)
        self.dY = torch.empty(T, L * 2 * C, **z)  # every layer's ∂L/∂(pre-activation): dcond is one matmul
        self.w = torch.empty(T, C, **z)
        # ∂L/∂S between zero margins (only rows [margin, margin + T) are ever written): the taps'
        # gradients are read back shifted by ±d without bounds checks
        self.P = torch.zeros(T + 2 * margin, 3 * C, **z)
        f32 = dict(dtype=torch.float32, device=device)
        self.dz = torch.empty(T, C, **f32)
        self.x = torch.empty(T, C, **f32)
        self.dx = torch.empty(T, C, **f32)


class _ResidualStack(torch.autograd.Function):
    """The L gated residual layers of DiffWave for ONE item, time-major, with a hand-written backward.

    The stream is carried scaled, x̃_ℓ = 2^{ℓ/2}·x_ℓ, so that x_{ℓ+1} = (x_ℓ + r_ℓ)/√2 becomes
    x̃_{ℓ+1} = x̃_ℓ + 2^{ℓ/2}·r_ℓ (the factor is folded into the residual half of the output
    projection by :meth:`FastTrainNetwork.stacked_weights`); the taps read ẑ_ℓ = z_ℓ/s_ℓ = x̃_ℓ + e_ℓ/s_ℓ
    with s_ℓ = 2^{−ℓ/2} folded into W's tap rows (and 1/s_ℓ into ``e`` by :meth:`FastTrainNetwork.prelude`).

    Inputs: ``x0`` [T, C] (input projection output, fp32), ``cond`` [T, Cc] (time-major conditioner;
    [T, 0] without one), ``e`` [L, C] (step projections), ``W`` [L, K, 2C] (stacked tap / conditioner /
    bias weights, the gate's a-half pre-scaled by 1/2), ``Wo`` [L, C, 2C] and ``bo`` [L, 2C] (output
    projections, residual half scaled by 2^{ℓ/2}/2 and 2^{ℓ/2}, skip half by 1/2 and 1). Output: the
    skip sum [T, C].
    """

    @staticmethod
    def forward(ctx: Any, x0: torch.Tensor, cond: torch.Tensor, e: torch.Tensor, W: torch.Tensor,
                Wo: torch.Tensor, bo: torch.Tensor, engine: "FastTrainNetwork") -> torch.Tensor:
        T = x0.shape[0]
        ws = engine.workspace(T)
        dt, C, M, Cc, L = engine.dtype, engine.C, engine.margin, engine.cond_cols, engine.L
        Wd, Wod, bod = W.to(dt), Wo.to(dt), bo.to(dt)
        lin = engine.lin
        Wlin = Wd.transpose(1, 2).contiguous() if lin is not None else None
        S = ws.S
        if Cc:
            S[:, 3 * C:3 * C + Cc].copy_(cond)
        sv = ws.pool.pop() if ws.pool else _Saved(*ws.args)
        x = ws.x
        x.copy_(x0)
        for i, d in enumerate(engine.dilations):
            Z = sv.Z[i]
            mid = Z[M:M + T]
            torch.add(x, e[i], out=mid)  # ẑ = x̃ + e/s = z/s (the 2^{−ℓ/2} rides in W's tap rows)
            S[:, :C].copy_(Z[M - d:M - d + T])  # three copies: a [T, 3, C] overlapping view copies slowly
            S[:, C:2 * C].copy_(mid)
            S[:, 2 * C:3 * C].copy_(Z[M + d:M + d + T])
            if lin is not None:  # oneDNN's matmul with the tanh fused
                Y = lin(S, Wlin[i], None, "tanh", [], "")
            else:
                Y = torch.mm(S, Wd[i]).tanh_()
            sv.Y[i] = Y
            g = sv.G[:, i]
            torch.addcmul(Y[:, C:], Y[:, :C], Y[:, C:], out=g)  # tanh(b)·(1 + tanh(a/2)) = 2σ(a)tanh(b)
            if i + 1 < L:  # the last layer's residual half is never used
                x.add_(torch.addmm(bod[i, :C], g, Wod[i, :, :C], out=ws.R))
        # Σ_ℓ skip_ℓ = [G_0 | … | G_{L−1}] @ [Wo_skip,0; …; Wo_skip,L−1] + Σ_ℓ b_skip,ℓ: one matmul
        Wskip = Wod[:, :, C:].reshape(L * C, C)
        skip = torch.addmm(bo[:, C:].sum(0).to(dt), sv.G.view(T, L * C), Wskip).float()
        ctx.engine, ctx.saved = engine, sv
        ctx.save_for_backward(W, Wo, cond)
        if not any(ctx.needs_input_grad):
            ws.pool.append(sv)
            ctx.saved = None
        return skip

    @staticmethod
    def backward(ctx: Any, dskip: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        engine: FastTrainNetwork = ctx.engine
        W, Wo, cond = ctx.saved_tensors
        T = dskip.shape[0]
        ws, sv = engine.workspace(T), ctx.saved
        dt, C, M, Cc, L = engine.dtype, engine.C, engine.margin, engine.cond_cols, engine.L
        Wd, Wod = W.to(dt), Wo.to(dt)
        WdT = Wd[:, :3 * C].transpose(1, 2).contiguous()  # [L, 2C, 3C]
        WoT = Wod.transpose(1, 2).contiguous()  # [L, 2C, C]
        S, dO, dY_all, w, dx, dz, P = ws.S, ws.dO, ws.dY, ws.w, ws.dx, ws.dz, ws.P
        if Cc:  # another item's forward may have run since this item's
            S[:, 3 * C:3 * C + Cc].copy_(cond)
        dO[:, C:].copy_(dskip)
        dev = dskip.device
        dW = torch.empty_like(W)
        dWo = torch.empty_like(Wo)
        dbo = torch.empty(L, 2 * C, dtype=torch.float32, device=dev)
        dbo[:, C:] = dskip.sum(0)
        de = torch.empty(L, C, dtype=torch.float32, device=dev)
        dx_sum = torch.zeros(C, dtype=torch.float32, device=dev)  # Σ_t ∂L/∂x̃_{ℓ+1}, kept by recursion
        dx.zero_()
        for i in range(L - 1, -1, -1):
            d = engine.dilations[i]
            Z, Y, g = sv.Z[i], sv.Y[i], sv.G[:, i]
            Ya, Yb = Y[:, :C], Y[:, C:]
            last = i == L - 1
            if last:
                dWo[i, :, :C] = 0.0
                dbo[i, :C] = 0.0
                dWo[i, :, C:] = torch.mm(g.t(), dO[:, C:]).float()
                dg = torch.mm(dO[:, C:], WoT[i, C:])
            else:
                dO[:, :C].copy_(dx)  # x̃_{ℓ+1} = x̃_ℓ + r'_ℓ
                dbo[i, :C] = dx_sum
                dWo[i] = torch.mm(g.t(), dO).float()
                dg = torch.mm(dO, WoT[i])  # [T, C]
            # gate 2σ(a)tanh(b) = Yb(1 + Ya) =: G, Ya = tanh(a/2), Yb = tanh(b); w = dg·G:
            # ∂/∂(a/2) = dg·Yb·(1 − Ya²) = w·(1 − Ya);  ∂/∂b = dg·(1 + Ya)(1 − Yb²) = dg·(1 + Ya) − w·Yb
            dY = dY_all[:, 2 * C * i:2 * C * (i + 1)]
            torch.mul(dg, g, out=w)
            torch.addcmul(w, w, Ya, value=-1, out=dY[:, :C])
            dYb = dY[:, C:]
            torch.addcmul(dg, dg, Ya, out=dYb)
            dYb.addcmul_(w, Yb, value=-1)
            S[:, :C].copy_(Z[M - d:M - d + T])
            S[:, C:2 * C].copy_(Z[M:M + T])
            S[:, 2 * C:3 * C].copy_(Z[M + d:M + d + T])
            dW[i] = torch.mm(S.t(), dY).float()  # taps, conditioner, bias (ones column) and padding rows
            torch.mm(dY, WdT[i], out=P[M:M + T])  # ∂L/∂(taps), [T, 3C]
            # z = 2^{−ℓ/2}x̃ + e, and z(t) feeds rows t + d (tap 0), t (tap 1) and t − d (tap 2)
            torch.add(P[M:M + T, C:2 * C], P[M + d:M + d + T, :C], out=dz)  # P's margins are zero
            dz.add_(P[M - d:M - d + T, 2 * C:3 * C])
            dx.add_(dz)
            torch.sum(dz, 0, out=de[i])
            dx_sum.add_(de[i])
        dcond = None
        if Cc:  # Σ_ℓ dY_ℓ W_c,ℓ^T as one matmul over all layers (fp32 accumulation inside)
            Wc = Wd[:, 3 * C:3 * C + Cc].transpose(1, 2).reshape(L * 2 * C, Cc)
            dcond = torch.mm(dY_all, Wc).float()
        sv.Y = [None] * L
        ws.pool.append(sv)
        ctx.saved = None
        return dx.clone(), dcond, de, dW, dWo, dbo, None


def micro_batches(batch: int, size: int | None) -> list[slice]:
    """Slices that cut a batch of ``batch`` items into pieces of at most ``size`` (None/0: one)."""
    if not size or size >= batch:
        return [slice(0, batch)]
    return [slice(i, min(i + size, batch)) for i in range(0, batch, size)]


class FastTrainNetwork(nn.Module):
    """The same ε_θ as ``model`` (same parameters, trained in place), for training on a CPU.

    ``forward(audio, diffusion_step, mel=None, label=None)`` has :class:`DiffWave`'s signature and
    value; gradients flow into ``model``'s parameters. ``dtype`` is the operand precision
    (``torch.float32``: equal to the reference to float rounding; ``torch.bfloat16``: fast).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        layers = list(model.residual_layers)
        self.L = len(layers)
        self.C = model.cfg.residual_channels
        self.dilations = [int(layer.dilated_conv.dilation[0]) for layer in layers]
        self.margin = max(self.dilations)
        cp = layers[0].conditioner_projection
        self.cond_cols = cp.in_channels if cp is not None else 0
        used = 3 * self.C + self.cond_cols + 1
        self.K = -(-used // 4) * 4  # padded to a multiple of 4 (measured fastest for oneDNN's bf16 matmul)
        dev = next(model.parameters()).device
        self.lin = LINEAR_TANH if (dtype == torch.bfloat16 and dev.type == "cpu") else None
        self._ws: _Workspace | None = None
        half = torch.ones(2 * self.C)
        half[: self.C] = 0.5  # σ(a) = (1 + tanh(a/2))/2: the a-half of the gate sees W/2
        self.register_buffer("_half", half, persistent=False)
        res = torch.ones(self.L, 2 * self.C)
        for i in range(self.L):
            res[i, : self.C] = 2.0 ** (i / 2)
        self.register_buffer("_res_scale", res, persistent=False)

    def workspace(self, T: int) -> _Workspace:
        """The scratch buffers (and the pool of saved-activation sets) for items of ``T`` samples."""
        if self._ws is None or self._ws.key != (T, self.dtype):
            self._ws = None  # free the old buffers first
            self._ws = _Workspace(self.L, T, self.C, self.K, self.cond_cols, self.margin, self.dtype,
                                  next(self.model.parameters()).device)
        return self._ws

    def stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """W [L, K, 2C], Wo [L, C, 2C], bo [L, 2C] built from the parameters (differentiably)."""
        K = self.K
        Ws, Wos, bos = [], [], []
        half = self._half
        for i, layer in enumerate(self.model.residual_layers):
            w = layer.dilated_conv.weight * 2.0 ** (-i / 2)  # [2C, C, 3]; the taps read ẑ = z·2^{ℓ/2}
            parts = [w[:, :, 0].t(), w[:, :, 1].t(), w[:, :, 2].t()]
            b = layer.dilated_conv.bias
            if layer.conditioner_projection is not None:
                parts.append(layer.conditioner_projection.weight[:, :, 0].t())
                b = b + layer.conditioner_projection.bias
            parts.append(b.unsqueeze(0))
            Wl = torch.cat(parts, 0) * half
            Ws.append(F.pad(Wl, (0, 0, 0, K - Wl.shape[0])))
            # the stream is carried as x̃_ℓ = 2^{ℓ/2}·x_ℓ: the residual half is scaled by 2^{ℓ/2}
            scale = self._res_scale[i]
            wo = layer.output_projection.weight[:, :, 0]  # [2C, C]
            Wos.append(0.5 * wo.t() * scale)
            bos.append(layer.output_projection.bias * scale)
        return torch.stack(Ws), torch.stack(Wos), torch.stack(bos)

    def prelude(self, audio: torch.Tensor, diffusion_step: torch.Tensor, mel: torch.Tensor | None = None,
                label: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The batch-wide, parameter-dependent inputs of the residual stack and the output head:
        ``x0`` [B, T, C] (input projection), ``cond`` [B, T, Cc] (upsampled conditioner, time-major),
        ``e`` [B, L, C] (step projections), the stacked layer weights ``W, Wo, bo`` and the head's
        ``sp_w, sp_b, out_w, out_b`` — every parameter of the model reaches the loss through these."""
        model = self.model
        B, T = audio.shape
        cond = model.condition(mel, label)  # [B, Cc, T] or [B, Cc, 1] or None
        if cond is not None:
            if cond.shape[-1] == 1:
                cond = cond.expand(-1, -1, T)
            elif cond.shape[-1] != T:
                raise ValueError(f"conditioner has {cond.shape[-1]} samples, audio has {T}")
            cond_tm = cond.transpose(1, 2)
        else:
            cond_tm = audio.new_zeros(B, T, 0)
        if diffusion_step.dim() == 0:
            diffusion_step = diffusion_step.expand(B)
        emb = model.diffusion_embedding(diffusion_step)  # [B, 512]
        e = torch.stack([layer.diffusion_projection(emb) * 2.0 ** (i / 2)  # e/s_ℓ: see _ResidualStack
                         for i, layer in enumerate(model.residual_layers)], 1)  # [B, L, C]
        w_in = model.input_projection.weight.reshape(-1)
        x0 = F.relu(audio.unsqueeze(-1) * w_in + model.input_projection.bias)  # [B, T, C]
        W, Wo, bo = self.stacked_weights()
        head = (model.skip_projection.weight[:, :, 0], model.skip_projection.bias,
                model.output_projection.weight[:, :, 0], model.output_projection.bias)
        return (x0, cond_tm, e, W, Wo, bo, *head)

    def _item(self, x0: torch.Tensor, cond: torch.Tensor, e: torch.Tensor, W: torch.Tensor, Wo: torch.Tensor,
              bo: torch.Tensor, sp_w: torch.Tensor, sp_b: torch.Tensor, out_w: torch.Tensor,
              out_b: torch.Tensor) -> torch.Tensor:
        """ε_θ of one item, [T]: the residual stack, then skip/√L → ReLU(1×1) → 1×1."""
        skip = _ResidualStack.apply(x0, cond, e, W, Wo, bo, self)
        h = F.relu(F.linear(skip * (1 / math.sqrt(self.L)), sp_w, sp_b))
        return F.linear(h, out_w, out_b)[:, 0]

    def forward(self, audio: torch.Tensor, diffusion_step: torch.Tensor, mel: torch.Tensor | None = None,
                label: torch.Tensor | None = None, prelude_only: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """ε_θ(x_t, t, c) as ``[B, 1, T]`` (differentiable end to end), or with ``prelude_only`` the
        outputs of :meth:`prelude` (for :meth:`accumulate`; DDP wraps this module and sees all its
        gradients in the one backward pass through the prelude)."""
        pre = self.prelude(audio, diffusion_step, mel, label)
        if prelude_only:
            return pre
        x0, cond, e, *shared = pre
        return torch.stack([self._item(x0[b], cond[b], e[b], *shared) for b in range(audio.shape[0])]).unsqueeze(1)

    def accumulate(self, pre: tuple[torch.Tensor, ...], item_loss: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Forward and backward one item at a time, then one backward pass through the batch-wide
        prelude; returns Σ_b ``item_loss(b, ε_θ(item b))`` (detached).

        Each item's activations live only between its forward and its backward (cache-sized); the
        upsampler, the step MLP and the weight stacking run once per batch, forward and backward."""
        x0, cond, e, *shared_t = pre
        B = x0.shape[0]
        shared = [t.detach().requires_grad_(t.requires_grad) for t in shared_t]
        per_item = [(x0[b].detach().requires_grad_(x0.requires_grad), cond[b].detach().requires_grad_(cond.requires_grad),
                     e[b].detach().requires_grad_(e.requires_grad)) for b in range(B)]
        total = torch.zeros((), device=x0.device)
        for b, leaves in enumerate(per_item):
            loss = item_loss(b, self._item(*leaves, *shared))
            loss.backward()
            total = total + loss.detach()
        outs, grads = [], []
        for t, g in zip(shared_t, (t.grad for t in shared)):
            if g is not None:
                outs.append(t)
                grads.append(g)
        for k, t in enumerate((x0, cond, e)):
            gs = [leaves[k].grad for leaves in per_item]
            if t.requires_grad and all(g is not None for g in gs):
                outs.append(t)
                grads.append(torch.stack(gs))
        if outs:
            torch.autograd.backward(outs, grads)
        return total
