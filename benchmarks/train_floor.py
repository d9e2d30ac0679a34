"""The matmul floor of one fast-engine training step: the same GEMMs, nothing else (issue 14).

The fast CPU training engine (:mod:`diffvoc.training.engine`) spends one BASE step (C=64, L=30,
PriorGrad, batch 16 × 62 frames × hop 256) in these matrix products per item (T = 15,872 samples,
K = 3C + 80 conditioner columns + 1 bias column):

* forward, per layer: ``S[T,K] @ W[K,2C]`` (taps + conditioner + bias, tanh fused where oneDNN has it)
  and ``g[T,C] @ Wo_res[C,C]`` (all but the last layer); once: the skip sum ``G[T,LC] @ W_skip[LC,C]``;
* backward, per layer: ``gᵀ dO`` ``[C,T]×[T,2C]``, ``dO @ Woᵀ`` ``[T,2C]×[2C,C]``, ``Sᵀ dY``
  ``[K,T]×[T,2C]``, ``dY @ W_tapsᵀ`` ``[T,2C]×[2C,3C]``; once: ``dY_all @ W_c`` ``[T,2LC]×[2LC,80]``.

This script times exactly those products on preallocated bf16 tensors (fp32 where the engine keeps
fp32), 16 items, and compares with the measured step of ``benchmarks/results/train_speed_cpu.json``.
The difference is what the rest of the step (elementwise work, copies, the optimiser, the prelude)
costs. Usage::

    python benchmarks/train_floor.py --reps 5 -o benchmarks/results/train_floor_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _gemms(T: int, C: int, L: int, Cc: int, dtype: torch.dtype) -> list[tuple[str, int, callable]]:
    """(name, flops, fn) for every product of one item's forward and backward."""
    K = 3 * C + Cc + 1
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    S, W, G, Wo, Wskip = r(T, K), r(K, 2 * C), r(T, L * C), r(C, 2 * C), r(L * C, C)
    dO, dY, WdT, dY_all, Wc = r(T, 2 * C), r(T, 2 * C), r(2 * C, 3 * C), r(T, L * 2 * C), r(L * 2 * C, Cc)
    P = torch.empty(T, 3 * C, dtype=dtype)
    gi = G[:, :C]
    out = []
    for i in range(L):
        out.append(("fwd S@W", 2 * T * K * 2 * C, lambda: torch.mm(S, W).tanh_()))
        if i + 1 < L:
            out.append(("fwd g@Wo_res", 2 * T * C * C, lambda: torch.mm(gi, Wo[:, :C])))
        out.append(("bwd g^T dO", 2 * C * T * 2 * C, lambda: torch.mm(gi.t(), dO).float()))
        out.append(("bwd dO@Wo^T", 2 * T * 2 * C * C, lambda: torch.mm(dO, Wo.t())))
        out.append(("bwd S^T dY", 2 * K * T * 2 * C, lambda: torch.mm(S.t(), dY).float()))
        out.append(("bwd dY@W^T", 2 * T * 2 * C * 3 * C, lambda: torch.mm(dY, WdT, out=P)))
    out.append(("fwd skip sum", 2 * T * L * C * C, lambda: torch.mm(G, Wskip).float()))
    out.append(("bwd d cond", 2 * T * L * 2 * C * Cc, lambda: torch.mm(dY_all, Wc).float()))
    return out


def measure(items: int, T: int, C: int, L: int, Cc: int, dtype: torch.dtype, reps: int) -> dict:
    gemms = _gemms(T, C, L, Cc, dtype)
    for _, _, fn in gemms:  # warm-up
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(items):
            for _, _, fn in gemms:
                fn()
        times.append(time.perf_counter() - t0)
    flops = items * sum(f for _, f, _ in gemms)
    med = statistics.median(times)
    by_name: dict[str, list[float]] = {}
    for name, f, fn in gemms:  # each kind of product alone: where the time goes
        t0 = time.perf_counter()
        for _ in range(3):
            fn()
        entry = by_name.setdefault(name, [0.0, 0.0])
        entry[0] += (time.perf_counter() - t0) / 3 * items
        entry[1] += f * items
    kinds = {n: {"seconds": t, "gflop_per_s": f / t / 1e9} for n, (t, f) in by_name.items()}
    return {"seconds": med, "min_seconds": min(times), "gflop": flops / 1e9, "gflop_per_s": flops / med / 1e9,
            "by_product": kinds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "train_floor_cpu.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    T, C, L, Cc, items = 62 * 256, 64, 30, 80, 16
    rows = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rows[name] = measure(items, T, C, L, Cc, dtype, args.reps)
    step = {}
    speed = ROOT / "benchmarks" / "results" / "train_speed_cpu.json"
    if speed.exists():
        data = json.loads(speed.read_text())
        for r in data.get("rows", data.get("results", [])):
            if r.get("preset") == "base" and r.get("impl") in ("fast", "fast_fp32"):
                step["bf16" if r["impl"] == "fast" else "fp32"] = r.get("s_per_step", r.get("seconds_per_step"))
    print(f"BASE step (C={C}, L={L}, batch {items} × 62 frames): the matmuls alone, {torch.get_num_threads()} threads")
    print("| precision | GFLOP | matmul floor (s) | GFLOP/s | measured step (s) | floor / step |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        s = step.get(name)
        ratio = f"{r['seconds'] / s:.2f}" if s else "–"
        print(f"| {name} | {r['gflop']:.0f} | {r['seconds']:.2f} | {r['gflop_per_s']:.0f} | "
              f"{f'{s:.2f}' if s else '–'} | {ratio} |")
    print("\nbf16, each kind of product (s per step, GFLOP/s):")
    for n, k in rows["bf16"]["by_product"].items():
        print(f"  {n:14s} {k['seconds']:.2f} s  {k['gflop_per_s']:.0f} GFLOP/s")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python benchmarks/train_floor.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "output"),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "shape": {"T": T, "C": C, "L": L, "cond": Cc, "items": items}, "floor": rows, "measured_step": step},
        indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
