"""Truncated diffusion benchmark (TDPM, REFERENCE §4): quality at 1, 2, 3 and 6 network calls.

Systems, all fine-tuned from the same trained base model of their prior (equal training budget:
the same number of steps, data, seed and diffusion learning rate; wall time is reported too):

* ``plain``            — no truncation, diffusion loss only (the base model's extra steps);
* ``tdpm``             — truncated at T_trunc, separate small generator G, GAN from step 0
                         (the base model is the trained denoiser the GAN starts from);
* ``tdpm_shared``      — truncated, the denoiser itself at step T_trunc + 1 as G (official TDPM);
* ``tdpm_infer``       — ``tdpm`` plus InferGrad's loss through G and the 2-step truncated chain;
* ``infer``            — no truncation, InferGrad's 2-step loss;

each for the standard prior (DiffWave) and PriorGrad's (``--priors``). Evaluation on the
``test`` split with fixed noise: MR-STFT and log-mel L1 (REFERENCE §5 settings) and the real-time
factor, at K = 1, 2, 3, 6 calls of the big network (truncated, separate G: G + K reverse steps;
shared G: G + K − 1 steps; not truncated: the K-step fast schedule, 1 step: β = [0.624], the
noisiest level of the 6-step schedule).

Writes JSON (with the command) and a Markdown table, and prints the table:

    python benchmarks/truncation.py --data data/speech --preset cpu -o benchmarks/results/truncation_cpu \\
        --base standard=benchmarks/results/convergence_cpu/standard_small \\
        --base priorgrad=benchmarks/results/convergence_cpu/priorgrad_small
    python benchmarks/truncation.py --data DATA --preset gpu --device cuda -o runs/truncation_gpu   # BASE
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _runs import finished, train, wait  # noqa: E402

CALLS = (1, 2, 3, 6)
ONE_STEP = [0.624]  # a 1-step chain for the untruncated models: the 6-step schedule's noisiest level
SYSTEMS = ("plain", "tdpm", "tdpm_shared", "tdpm_infer", "infer")

PRESETS = {
    # CPU: C=16 L=10 base models (benchmarks/convergence.py --preset cpu), 600 fine-tuning steps.
    # The GAN learning rates are raised 10x / lowered 2.5x from REFERENCE §4's (2e-5 / 2.5e-3): with
    # only 600 steps, G at 2e-5 barely moves. The GPU preset keeps the reference values.
    "cpu": {"model": {"residual_channels": 16, "residual_layers": 10, "dilation_cycle": 10},
            "data": {"crop_frames": 24, "valid_clips": 2, "valid_seconds": 1.0},
            "train": {"batch_size": 4, "learning_rate": 5e-4},
            "base_steps": 1200, "steps": 600,
            "truncation": {"steps": 35, "generator_channels": 8, "generator_layers": 8, "generator_cycle": 8,
                           "discriminator_channels": 16, "discriminator_scales": 3, "generator_lr": 2e-4,
                           "discriminator_lr": 1e-3, "r1_gamma": 0.01},
            "infer": {"steps": 2, "crop_frames": 16, "batch_items": 2},
            "test": {"clips": 8, "seconds": 1.5}, "parallel": 2},
    "smoke": {"model": {"residual_channels": 8, "residual_layers": 4, "dilation_cycle": 2},
              "data": {"crop_frames": 16, "valid_clips": 1, "valid_seconds": 0.5},
              "train": {"batch_size": 2, "learning_rate": 1e-3},
              "base_steps": 10, "steps": 4,
              "truncation": {"steps": 35, "generator_channels": 8, "generator_layers": 2, "generator_cycle": 2,
                             "discriminator_channels": 8, "discriminator_scales": 2},
              "infer": {"steps": 2, "crop_frames": 10, "batch_items": 1},
              "test": {"clips": 2, "seconds": 0.5}, "parallel": 2},
    # GPU: the paper's BASE network; REFERENCE §4's optimiser constants; multi-scale + multi-period D.
    "gpu": {"model": {"residual_channels": 64, "residual_layers": 30, "dilation_cycle": 10},
            "data": {"crop_frames": 62, "valid_clips": 8, "valid_seconds": 2.0, "num_workers": 3},
            "train": {"batch_size": 16, "learning_rate": 2e-4},
            "base_steps": 20000, "steps": 10000,
            "truncation": {"steps": 35, "generator_channels": 32, "generator_layers": 10, "generator_cycle": 10,
                           "discriminator_channels": 32, "discriminator_scales": 3,
                           "discriminator_periods": [2, 3, 5, 7, 11]},
            "infer": {"steps": 2, "crop_frames": 32, "batch_items": 8},
            "test": {"clips": 51, "seconds": 3.0}, "parallel": 1},
}


def system_config(p: dict, data: str, prior: str, system: str, seed: int) -> dict:
    """``system`` is one of SYSTEMS, a truncated one optionally with ``@T_trunc``."""
    system, _, trunc = system.partition("@")
    steps = p["steps"]
    cfg = {"audio": {"preset": "hifigan"}, "model": dict(p["model"]), "diffusion": {"preset": "t50"},
           "prior": {"kind": prior}, "data": {"path": data, **p["data"]},
           "train": {**p["train"], "seed": seed, "max_steps": steps, "save_every": steps, "valid_every": steps,
                     "log_every": 25, "valid_steps": 6, "audio_log_clips": 1}}
    if system.startswith("tdpm"):
        cfg["truncation"] = {"enabled": True, **p["truncation"],
                             "generator": "shared" if system == "tdpm_shared" else "separate"}
        if trunc:
            cfg["truncation"]["steps"] = int(trunc)
    if system.endswith("infer"):
        cfg["infer"] = {"enabled": True, "mode": "step-specific", **p["infer"]}
    return cfg






def evaluate(run: str, data: str, test: dict, device: str, threads: int, seed: int, g_off: bool = False) -> dict:
    """MR-STFT, log-mel L1 (mean ± 95% CI over clips, per-clip values) and RTF at each K in CALLS.

    ``g_off`` (ablation, separate generator only): G's learned part f is zeroed, so the chain starts
    from √(1 − ᾱ_k) σ ⊙ ε — the noise part of q(x_{T_trunc} | x_0) without any signal."""
    import torch

    from diffvoc.audio import MelSpectrogram
    from diffvoc.data.dataset import load_clips
    from diffvoc.diffusion.spectral import MultiResolutionSTFTLoss, log_mel_l1
    from diffvoc.errors import DiffvocError
    from diffvoc.evaluation.metrics import mean_ci95
    from diffvoc.inference.vocoder import Vocoder

    torch.set_num_threads(threads)
    voc = Vocoder.from_pretrained(run, device=device)
    if g_off:
        with torch.no_grad():
            voc.implicit.net.output_projection.weight.zero_()
            voc.implicit.net.output_projection.bias.zero_()
    clips = load_clips(data, voc.config.audio, "test", test["clips"], test["seconds"])
    mr = MultiResolutionSTFTLoss()
    mel_fn = MelSpectrogram(voc.config.audio)
    truncated = voc.config.truncation.enabled
    out: dict = {}
    for k in CALLS:
        kw: dict = {"steps": k}
        if not truncated and k == 1:
            kw = {"schedule": ONE_STEP}
        try:
            sampler = voc.sampler(**kw)
        except DiffvocError as e:
            out[k] = {"skipped": str(e)}
            continue
        per, secs, dur = [], 0.0, 0.0
        for i, (_, audio, mel) in enumerate(clips):
            t = time.perf_counter()
            y = voc.vocode(mel, seed=seed + i, chunk_frames=0, **kw)
            secs += time.perf_counter() - t
            dur += len(audio) / voc.sample_rate
            with torch.no_grad():
                yt, at = torch.from_numpy(y[None]), torch.from_numpy(audio[None])
                sc, mag = mr(yt, at)
                per.append(((sc + mag).item(), log_mel_l1(mel_fn(yt)[0], torch.from_numpy(mel)).item()))
        m1, c1 = mean_ci95([a for a, _ in per])
        m2, c2 = mean_ci95([b for _, b in per])
        out[k] = {"mr_stft": m1, "mr_stft_ci95": c1, "log_mel_l1": m2, "log_mel_l1_ci95": c2,
                  "rtf": secs / dur, "reverse_steps": len(sampler), "per_clip": per,
                  "betas": [float(b) for b in sampler.inference.betas]}
    out["test_clips"] = len(clips)
    return out


def paired(a: list, b: list) -> dict:
    """Paired difference of (MR-STFT + log-mel L1) per clip, a − b, mean ± 95% CI."""
    from diffvoc.evaluation.metrics import mean_ci95

    m, ci = mean_ci95([x[0] + x[1] - y[0] - y[1] for x, y in zip(a, b)])
    return {"mean": m, "ci95": ci}


def table(results: dict) -> list[str]:
    head = "| prior | system | " + " | ".join(f"{k} call{'s' if k > 1 else ''}: MR-STFT / log-mel L1 / RTF"
                                             for k in CALLS) + " | train s |"
    lines = [head, "|" + "---|" * (len(CALLS) + 3)]
    for name, r in results.items():
        prior, system = name.split("/")
        cells = []
        for k in CALLS:
            e = r["eval"][k]
            cells.append("–" if "skipped" in e else f"{e['mr_stft']:.3f} / {e['log_mel_l1']:.3f} / {e['rtf']:.2f}")
        lines.append(f"| {prior} | {system} | " + " | ".join(cells) + f" | {r['train_s']:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder written by `diffvoc preprocess` (valid/test splits used)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--base", action="append", default=[], metavar="PRIOR=CKPT",
                    help="trained base model per prior (standard=..., priorgrad=...); missing ones are trained here")
    ap.add_argument("--priors", nargs="+", default=["standard", "priorgrad"], choices=["standard", "priorgrad"])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps per system (equal budget)")
    ap.add_argument("--trunc-steps", type=int, nargs="+", default=None,
                    help="T_trunc values for the `tdpm` system (the other truncated systems use the first)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training / evaluation process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="folder for the runs")
    ap.add_argument("--json", default=None, help="results file (default OUT/truncation.json; a .md is written beside it)")
    args = ap.parse_args()

    p = dict(PRESETS[args.preset])
    if args.steps:
        p["steps"] = args.steps
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.data).resolve())
    t0 = time.time()
    bases = dict(b.split("=", 1) for b in args.base)
    for prior in args.priors:  # train a missing base model (diffusion only, not truncated)
        if prior in bases:
            continue
        cfg = system_config({**p, "steps": p["base_steps"]}, data, prior, "plain", args.seed)
        run = out / f"base_{prior}"
        if not finished(run, cfg, p["base_steps"], "None"):
            print(f"training the {prior} base model ({p['base_steps']} steps) ...", flush=True)
            wait({f"base_{prior}": train(run, cfg, args.device, max(2, args.threads), None)}, out)
        bases[prior] = str(run)

    if args.trunc_steps:
        p["truncation"] = {**p["truncation"], "steps": args.trunc_steps[0]}
    # system-major order (both priors of a system, then the next system), so an interrupted run has
    # the systems named first; `tdpm` once per --trunc-steps value when several are given
    several = bool(args.trunc_steps and len(args.trunc_steps) > 1)
    jobs = [(prior, f"{system}@{k}" if several and system == "tdpm" else system)
            for system in args.systems for k in (args.trunc_steps if several and system == "tdpm" else [None])
            for prior in args.priors]
    pending, running = list(jobs), {}
    while pending or running:
        while pending and len(running) < p["parallel"]:
            prior, system = pending.pop(0)
            name = f"{prior}/{system}"
            cfg = system_config(p, data, prior, system, args.seed + 1)
            run = out / prior / system
            if finished(run, cfg, p["steps"], bases[prior]):
                print(f"reusing {name}", flush=True)
                continue
            print(f"fine-tuning {name} from {bases[prior]} ({p['steps']} steps) ...", flush=True)
            running[name] = train(run, cfg, args.device, args.threads, bases[prior])
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    sys.exit(f"training {name} failed; see {out / name / 'train.log'}")
                print(f"{name} done", flush=True)
        time.sleep(2)
    train_wall = time.time() - t0

    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    results = {}
    with ProcessPoolExecutor(p["parallel"], mp_context=get_context("spawn")) as pool:
        futures = {f"{pr}/{s}": pool.submit(evaluate, str(out / pr / s), data, p["test"], args.device, args.threads,
                                            1000 + args.seed) for pr, s in jobs}
        # ablation: each separate-generator system again with G's learned part switched off
        futures.update({f"{pr}/{s} [G off]": pool.submit(evaluate, str(out / pr / s), data, p["test"], args.device,
                                                         args.threads, 1000 + args.seed, True)
                        for pr, s in jobs if s.startswith("tdpm") and not s.startswith("tdpm_shared")})
        for name, f in futures.items():
            log = [json.loads(x) for x in (out / name.split(" [")[0] / "valid.jsonl").read_text().splitlines()]
            results[name] = {"eval": f.result(), "train_s": log[-1]["time_s"], "valid": log[-1]}
            print(f"{name} evaluated", flush=True)

    # the 6-call DiffWave baseline and the best system at 1 and 2 calls
    summary: dict = {}
    base_name = "standard/plain"
    if base_name in results and "per_clip" in results[base_name]["eval"][6]:
        ref = results[base_name]["eval"][6]
        for k in (1, 2):
            scored = [(r["eval"][k]["mr_stft"] + r["eval"][k]["log_mel_l1"], n) for n, r in results.items()
                      if "per_clip" in r["eval"][k]]
            if scored:
                best = min(scored)[1]
                summary[f"best_at_{k}"] = {"system": best, "objective": min(scored)[0],
                                           "minus_diffwave_6_paired": paired(results[best]["eval"][k]["per_clip"],
                                                                             ref["per_clip"])}
        summary["diffwave_6_objective"] = ref["mr_stft"] + ref["log_mel_l1"]

    lines = table(results)
    json_path = Path(args.json) if args.json else out / "truncation.json"
    command = " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv])
    record = {"command": command, "preset": args.preset, "settings": {**p, "bases": bases, "device": args.device,
                                                                       "threads": args.threads},
              "metrics": "MR-STFT (sc + log-mag; FFT 1024/2048/512, hop 120/240/50, win 600/1200/240) and log-mel "
                         "L1 (model mel) on the test split, EMA weights, PositionalNoise(1000 + seed + clip); "
                         "RTF = vocoding seconds / audio seconds with the given threads",
              "train_wall_s": round(train_wall, 1), "total_s": round(time.time() - t0, 1),
              "results": results, "summary": summary}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=1))
    md = ["# Truncated diffusion (TDPM) at 1, 2, 3 and 6 network calls", "", *lines, "",
          "Rows marked [G off] are the same truncated model sampled with G's learned part zeroed (the chain "
          "starts from the noise part √(1 − ᾱ_k) σ ⊙ ε of q(x_{T_trunc} | x_0) alone): the ablation that "
          "tells what the adversarially learned prior adds beyond truncation itself.", ""]
    for k in (1, 2):
        s = summary.get(f"best_at_{k}")
        if s:
            d = s["minus_diffwave_6_paired"]
            md.append(f"- Best at {k} call{'s' if k > 1 else ''}: **{s['system']}** (MR-STFT + log-mel L1 "
                      f"{s['objective']:.3f}; DiffWave 6 calls {summary['diffwave_6_objective']:.3f}; paired "
                      f"difference {d['mean']:+.3f} ± {d['ci95']:.3f}).")
    md += ["", f"Settings: preset `{args.preset}`, {p['steps']} fine-tuning steps per system from the base model of its "
           f"prior, test clips: {p['test']['clips']} × {p['test']['seconds']} s. {record['metrics']}.", "",
           f"Command: `{command}`", ""]
    json_path.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
