"""PriorGrad's claim for the acoustic model, measured: the same text → mel model with the standard prior
N(0, I) and with the phone-level prior N(μ_p, Σ_p), same data, seed and CPU time (REFERENCE §7).

    python benchmarks/acoustic_prior.py                       # trains both (12 CPU-minutes each), then evaluates
    python benchmarks/acoustic_prior.py --cpu-seconds 120     # a quick look

Both runs train ``recipes/acoustic_cpu.yaml`` (``--set prior.kind=...``) side by side, one thread each,
for the same CPU time (``diffvoc train --time-limit`` counts the training process's CPU seconds, so a
busy machine does not bias either run); a run dir that already reached the budget is reused. Reported:

* curves: validation mel L1 (teacher-forced durations) and MCD_mel (predicted durations) on 8 valid
  sentences of seen voices and 4 of the held-out voice, against steps and CPU seconds;
* convergence: the CPU seconds each run needs to first reach the standard run's final validation value;
* quality at 2, 6 and 12 reverse steps (each model with its own searched schedules, searched on the valid
  split) on the test split and on the held-out voice (test_unseen_voice, through the average speaker);
* the alignment check: with each model's MAS alignment of the training split, the share of log-mel frame
  variance explained by phone identity and the cross-voice consistency of per-phone mean log-mels
  (correlation between voices), against a uniform-duration alignment of the same frames.

Writes ``benchmarks/results/acoustic_prior.json`` (and a curves PNG) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("standard", "priorgrad")
METRICS = ("valid_mel_l1", "valid_mcd", "unseen_mel_l1", "unseen_mcd")


def train_both(config: Path, root: Path, cpu_seconds: float, threads: int) -> None:
    procs = {}
    for kind in KINDS:
        run = root / kind
        cmd = [sys.executable, "-m", "diffvoc.cli", "train", str(config), "--run-dir", str(run), "--quiet",
               "--set", f"prior.kind={kind}", "--set", f"train.threads={threads}", "--time-limit", str(cpu_seconds)]
        if (run / "latest").is_file():
            cmd.append("--resume")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(threads))
        root.mkdir(parents=True, exist_ok=True)
        procs[kind] = subprocess.Popen(["nice", "-n", "10", *cmd], env=env, stdout=open(root / f"{kind}.log", "a"),
                                       stderr=subprocess.STDOUT)
    for kind, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"training {kind} failed; see {root / f'{kind}.log'}")


ORTHO_TO_CEPSTRUM = float(np.sqrt(2 * 80))


def curves(run: Path) -> list[dict]:
    """The validation rows of a run, one per step. Rows written before MCD_mel used the cepstral
    normalisation (no ``mcd_cepstrum`` key) took an orthonormal DCT, exactly √(2·80) times larger
    (DTW pairs the same frames at any scale): they are divided by that factor here."""
    rows = [json.loads(x) for x in (run / "valid.jsonl").read_text().splitlines() if x.strip()]
    best: dict[int, dict] = {}
    for r in rows:  # a resumed run may repeat a step: keep the last row of each
        if "mcd_cepstrum" not in r:
            r = {k: (v / ORTHO_TO_CEPSTRUM if k.endswith("_mcd") else v) for k, v in r.items()}
            r["mcd_cepstrum"] = "dct/2N (converted from an orthonormal DCT)"
        best[r["step"]] = r
    return [best[s] for s in sorted(best)]


def reach(rows: list[dict], key: str, target: float) -> dict | None:
    """The first validation row whose ``key`` is at or below ``target``."""
    for r in rows:
        if key in r and r[key] <= target:
            return {"step": r["step"], "cpu_seconds": r["cpu_seconds"]}
    return None


def trainer_for(run: Path):
    from diffvoc.training.acoustic import AcousticTrainer

    tr = AcousticTrainer(None, run, resume=True, progress=False)
    return tr


def quality(tr, test: list, unseen: list, steps=(2, 6, 12)) -> dict[str, dict[str, float]]:
    out = {}
    tr.valid, tr.unseen = test, unseen
    with tr.ema_weights():
        for k in steps:
            res = tr.evaluate_sets(k)
            out[str(k)] = {"test_mel_l1": res["valid_mel_l1"], "test_mcd": res["valid_mcd"],
                           "unseen_mel_l1": res.get("unseen_mel_l1"), "unseen_mcd": res.get("unseen_mcd"),
                           "test_length_error": res["valid_length_error"]}
    return out


def prior_mean_baseline(tr, utts: list) -> dict[str, float]:
    """mel L1 of the phone means μ alone, expanded by the ground-truth (MAS) durations: what the decoder
    has to beat (meaningful for the PriorGrad prior; the standard prior's μ is 0)."""
    from diffvoc.models.acoustic import frame_index
    from diffvoc.training.acoustic_metrics import mel_l1

    vals = []
    with tr.ema_weights():
        for u, tok, dur in tr.align_utterances(utts):
            idx, _ = frame_index(dur.unsqueeze(0))
            mu, _ = tr.prior.frames(tok[idx])
            vals.append(mel_l1(u.mel, mu[0].numpy()))
    return {"prior_mean_mel_l1": float(np.mean(vals))}


def alignment_check(tr, max_utts: int = 400) -> dict[str, float]:
    """Phone-identity R² and cross-voice correlation of per-phone mean log-mels, MAS vs uniform durations."""
    import torch

    utts = [tr.utts[i] for i in tr.train_ids[:max_utts]]
    by = {"mas": [], "uniform": []}
    with tr.ema_weights():
        for u, tok, dur in tr.align_utterances(utts):
            n, T = len(tok), u.mel.shape[1]
            uni = torch.full((n,), T // n)
            uni[: T - int(uni.sum())] += 1
            for name, d in (("mas", dur), ("uniform", uni)):
                by[name].append((u.speaker, torch.repeat_interleave(tok, d).numpy(), u.mel))
    out = {}
    for name, items in by.items():
        frames = np.concatenate([m.T for _, _, m in items])
        labels = np.concatenate([t for _, t, _ in items])
        total = ((frames - frames.mean(0)) ** 2).sum()
        within = sum(((frames[labels == p] - frames[labels == p].mean(0)) ** 2).sum() for p in np.unique(labels))
        out[f"{name}_phone_r2"] = float(1 - within / total)
        means: dict[str, dict[int, np.ndarray]] = {}
        for spk in sorted({s for s, _, _ in items}):
            f = np.concatenate([m.T for s, _, m in items if s == spk])
            lab = np.concatenate([t for s, t, _ in items if s == spk])
            f = f - f.mean(0)
            means[spk] = {int(p): f[lab == p].mean(0) for p in np.unique(lab) if (lab == p).sum() >= 20}
        corr = []
        spks = sorted(means)
        for i, a in enumerate(spks):
            for b in spks[i + 1:]:
                common = sorted(set(means[a]) & set(means[b]))
                if len(common) >= 5:
                    x = np.concatenate([means[a][p] for p in common])
                    y = np.concatenate([means[b][p] for p in common])
                    corr.append(np.corrcoef(x, y)[0, 1])
        out[f"{name}_cross_voice_corr"] = float(np.mean(corr)) if corr else float("nan")
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, key in zip(axes.flat, METRICS):
        for kind in KINDS:
            rows = [r for r in data["curves"][kind] if key in r]
            ax.plot([r["cpu_seconds"] for r in rows], [r[key] for r in rows], marker="o", ms=3, label=kind)
        ax.set_title(key)
        ax.set_xlabel("training CPU seconds")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sample_figure(root: Path, path: Path, text: str = "The quick brown fox jumps over the lazy dog.",
                  speaker: str = "flite:slt") -> None:
    """One sentence from each model (6 steps, its searched schedule, predicted durations) as log-mels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffvoc.inference.tts import TextToSpeech

    fig, axes = plt.subplots(len(KINDS), 1, figsize=(8, 2.6 * len(KINDS)))
    for ax, kind in zip(axes, KINDS):
        tts = TextToSpeech.from_pretrained(root / kind, vocoder="griffin-lim")
        mel, _ = tts.mel(text, speaker=speaker, steps=6)
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-11.5, vmax=2)
        ax.set_title(f"{kind} prior, 6 steps: {text!r} ({speaker})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "recipes" / "acoustic_cpu.yaml"))
    ap.add_argument("--root", default=str(ROOT / "runs" / "acoustic_prior"))
    ap.add_argument("--cpu-seconds", type=float, default=720.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test-sentences", type=int, default=24)
    ap.add_argument("--unseen-sentences", type=int, default=12)
    ap.add_argument("--skip-train", action="store_true", help="evaluate the runs as they are")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "acoustic_prior.json"))
    ap.add_argument("--only", metavar="RUN", help="evaluate this one run (quality and alignment) and stop")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.only:
        return evaluate_one(Path(args.only), args)
    root = Path(args.root)
    t0 = time.time()
    if not args.skip_train:
        train_both(Path(args.config), root, args.cpu_seconds, args.threads)
    data: dict = {"command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
                  "cpu_seconds_budget": args.cpu_seconds, "curves": {}, "final": {}, "quality": {}, "alignment": {},
                  "convergence": {}}
    for kind in KINDS:
        data["curves"][kind] = curves(root / kind)
        data["final"][kind] = data["curves"][kind][-1]
    for key in METRICS:
        target = data["final"]["standard"].get(key)
        if target is not None:
            data["convergence"][key] = {"standard_final": target,
                                        **{k: reach(data["curves"][k], key, target) for k in KINDS}}
    for kind in KINDS:
        tr = trainer_for(root / kind)
        test = [tr.utts[i] for i in sorted(tr.splits.get("test", []))[: args.test_sentences]]
        unseen = [tr.utts[i] for i in sorted(tr.splits.get(tr.cfg.data.unseen_split, []))[: args.unseen_sentences]]
        data["quality"][kind] = quality(tr, test, unseen)
        data["quality"][kind]["prior_mean_only"] = {"test": prior_mean_baseline(tr, test),
                                                    "unseen": prior_mean_baseline(tr, unseen)}
        data["alignment"][kind] = alignment_check(tr)
        data["schedules"] = data.get("schedules", {})
        data["schedules"][kind] = {str(k): v for k, v in tr.cfg.diffusion.fast_schedules.items()}
        tr.close()
    data["eval_wall_seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    plot(data, out.with_name(out.stem + "_curves.png"))
    sample_figure(root, out.with_name(out.stem + "_mels.png"))
    print(format_table(data))
    print(f"wrote {out}")
    return 0


def evaluate_one(run: Path, args: argparse.Namespace) -> int:
    """Quality at 2/6/12 steps and the alignment check of one run (the bundled model's card)."""
    tr = trainer_for(run)
    test = [tr.utts[i] for i in sorted(tr.splits.get("test", []))[: args.test_sentences]]
    unseen = [tr.utts[i] for i in sorted(tr.splits.get(tr.cfg.data.unseen_split, []))[: args.unseen_sentences]]
    data = {"command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]), "run": str(run),
            "step": tr.step, "cpu_seconds": round(tr.cpu_seconds, 1), "train_seconds": round(tr.train_seconds, 1),
            "quality": quality(tr, test, unseen), "alignment": alignment_check(tr),
            "prior_mean_only": {"test": prior_mean_baseline(tr, test), "unseen": prior_mean_baseline(tr, unseen)},
            "schedules": {str(k): v for k, v in tr.cfg.diffusion.fast_schedules.items()},
            "last_valid": curves(run)[-1]}
    tr.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps({k: data[k] for k in ("step", "cpu_seconds", "quality", "alignment")}, indent=1))
    print(f"wrote {out}")
    return 0


def format_table(data: dict) -> str:
    f = data["final"]
    lines = ["| | standard N(0, I) | PriorGrad N(μ_p, Σ_p) |", "|---|---|---|"]
    lines.append(f"| training steps (CPU s) | {f['standard']['step']} ({f['standard']['cpu_seconds']:.0f}) | "
                 f"{f['priorgrad']['step']} ({f['priorgrad']['cpu_seconds']:.0f}) |")
    for key in METRICS:
        lines.append(f"| final valid {key} (6 steps) | {f['standard'].get(key, float('nan')):.3f} | "
                     f"{f['priorgrad'].get(key, float('nan')):.3f} |")
    for key, c in data["convergence"].items():
        def at(k):
            r = c.get(k)
            return f"{r['cpu_seconds']:.0f} s (step {r['step']})" if r else "not reached"
        lines.append(f"| CPU s to reach standard's final {key} ({c['standard_final']:.3f}) | {at('standard')} | "
                     f"{at('priorgrad')} |")
    for k in ("2", "6", "12"):
        for m in ("test_mel_l1", "test_mcd", "unseen_mel_l1", "unseen_mcd"):
            a, b = data["quality"]["standard"][k][m], data["quality"]["priorgrad"][k][m]
            lines.append(f"| {m} @ {k} steps | {a:.3f} | {b:.3f} |")
    pm = data["quality"]["priorgrad"]["prior_mean_only"]
    lines.append(f"| reference: mel L1 of the phone means μ alone (test / unseen) | – | "
                 f"{pm['test']['prior_mean_mel_l1']:.3f} / {pm['unseen']['prior_mean_mel_l1']:.3f} |")
    for m in ("mas_phone_r2", "uniform_phone_r2", "mas_cross_voice_corr", "uniform_cross_voice_corr"):
        lines.append(f"| alignment {m} | {data['alignment']['standard'][m]:.3f} | "
                     f"{data['alignment']['priorgrad'][m]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
