"""The default model's curve across sessions (issue 16): the real and synthetic test metrics of every
session's checkpoint, and what a fit of them predicts.

The sessions are listed in ``benchmarks/results/default_sessions.json`` (cumulative training steps and
crops — the batch grew from 4 to 8 in session 4, so the fits count crops of 24 frames, not steps —, CPU
hours and the ``diffvoc evaluate`` JSON of that session's checkpoint on each test split; every JSON names
the command that produced it in ``meta.command``). For each metric at 2 and 6 steps the script prints the
value per session, and fits ``metric = a + b · log10(crops)`` by least squares over the sessions (the
usual shape of a training curve far from convergence). From the PESQ-wb and DNSMOS OVRL fits at 6 steps it
predicts the cumulative crops at which the issue's targets (PESQ-wb 2.5; DNSMOS OVRL within 0.4 of
the reference) would be met, and the CPU hours that takes at the last session's crops per CPU hour. A
straight line in crops (``metric = a + b · crops``) is fitted beside it: the log fit is the pessimistic
reading (gains slow down with every doubling), the linear one the optimistic (the sessions' gain per
crop goes on); the truth of an undertrained vocoder may lie above both once it learns harmonics.

A fit through a handful of points taken with changing recipes (data, learning rate, batch) is a rough
guide, not a promise: the script prints its residuals beside the prediction.

    python benchmarks/default_curve.py -o benchmarks/results/default_curve.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("mr_stft", "log_mel_l1", "mcd", "pesq_wb", "stoi", "dnsmos_ovrl")
PESQ_TARGET = 2.5
DNSMOS_MARGIN = 0.4


def model_means(path: Path, checkpoint: str | None = None) -> tuple[dict[int, dict[str, float]], float | None]:
    """``{steps: {metric: mean}}`` of a model in an evaluation JSON, and the reference's DNSMOS OVRL.

    ``checkpoint``: the model's label in the JSON, where it compares several (None: the only one).
    """
    from diffvoc.evaluation.results import check_results
    from diffvoc.io import load_json

    data = check_results(load_json(path, "results file"), path)  # the shape `diffvoc report` also checks
    out: dict[int, dict[str, float]] = {}
    reference = None
    labels = {row["checkpoint"] for row in data["summary"] if row["kind"] == "model"}
    if checkpoint is None and len(labels) > 1:
        raise SystemExit(f"{path} compares {sorted(labels)}: name the session's one as \"checkpoint\" in the ledger")
    for row in data["summary"]:
        if row["kind"] == "model" and checkpoint in (None, row["checkpoint"]):
            out[int(row["steps"])] = {m: row["metrics"][m]["mean"] for m in METRICS if m in row["metrics"]}
        elif row["kind"] == "reference" and "dnsmos_ovrl" in row["metrics"]:
            reference = row["metrics"]["dnsmos_ovrl"]["mean"]
    return out, reference


def fit_line(crops: list[int], values: list[float], log: bool) -> dict[str, float]:
    """Least-squares ``value = a + b · x`` with x = log10(crops) (``log``) or x = crops."""
    x = np.asarray(crops, dtype=np.float64)
    x = np.log10(x) if log else x
    y = np.asarray(values, dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    out = {"form": "a + b*log10(crops)" if log else "a + b*crops", "a": float(a), "b": float(b),
           "max_abs_residual": float(np.max(np.abs(residual)))}
    if log:
        out["per_doubling"] = float(b * math.log10(2))
    else:
        out["per_100k_crops"] = float(b * 1e5)
    return out


def steps_to_reach(fit: dict[str, float], target: float) -> float | None:
    """Cumulative crops at which the fitted line rises to ``target`` (None if it is flat or falling)."""
    if fit["b"] <= 0:
        return None
    x = (target - fit["a"]) / fit["b"]
    return float(10 ** x) if fit["form"].startswith("a + b*log10") else float(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default=str(RESULTS / "default_sessions.json"))
    ap.add_argument("-o", "--output", default=str(RESULTS / "default_curve.json"))
    args = ap.parse_args(argv)
    from diffvoc.io import load_json

    sessions = load_json(args.sessions, "sessions ledger")["sessions"]
    table: list[dict] = []
    reference_ovrl = None
    for s in sessions:
        row = {"session": s["session"], "steps": s["steps"], "crops": s["crops"], "cpu_hours": s["cpu_hours"]}
        for split in ("real", "synthetic"):
            means, ref = model_means(RESULTS / s[split], s.get("checkpoint"))
            row[split] = means
            if split == "real" and ref is not None:
                reference_ovrl = ref
        table.append(row)

    print("| session | steps | crops | CPU h | split | steps@ | " + " | ".join(METRICS) + " |")
    print("|---" * (6 + len(METRICS)) + "|")
    for row in table:
        for split in ("real", "synthetic"):
            for k in sorted(row[split]):
                vals = " | ".join(f"{row[split][k].get(m, float('nan')):.3f}" for m in METRICS)
                print(f"| {row['session']} | {row['steps']:,} | {row['crops']:,} | {row['cpu_hours']:.1f} | {split} | {k} | {vals} |")

    crops = [r["crops"] for r in table]
    fits: dict[str, dict[str, dict[str, float]]] = {"log": {}, "linear": {}}
    for k in (2, 6):
        for m in METRICS:
            if all(m in r["real"].get(k, {}) for r in table):
                for form in fits:
                    fits[form][f"{m}@{k}"] = fit_line(crops, [r["real"][k][m] for r in table], log=form == "log")
    print("\nreal test, least-squares fits over the sessions:")
    print("| metric | per doubling (log fit) | max abs residual | per 100k crops (linear fit) | max abs residual |")
    print("|---|---|---|---|---|")
    for name, f in fits["log"].items():
        g = fits["linear"][name]
        print(f"| {name} | {f['per_doubling']:+.4f} | {f['max_abs_residual']:.3f} | {g['per_100k_crops']:+.4f} "
              f"| {g['max_abs_residual']:.3f} |")

    last, prev = table[-1], table[-2] if len(table) > 1 else None
    rate = ((last["crops"] - prev["crops"]) / (last["cpu_hours"] - prev["cpu_hours"])
            if prev and last["cpu_hours"] > prev["cpu_hours"] else None)
    targets = {"pesq_wb@6": PESQ_TARGET}
    if reference_ovrl is not None:
        targets["dnsmos_ovrl@6"] = reference_ovrl - DNSMOS_MARGIN
    predictions: dict[str, dict] = {}
    print()
    for name, target in targets.items():
        for form in fits:
            reach = steps_to_reach(fits[form][name], target)
            hours = (reach - last["crops"]) / rate if reach is not None and rate else None
            predictions[f"{name} ({form})"] = {"target": target, "steps": reach, "more_cpu_hours_at_last_rate": hours}
            shown = "never (flat or falling)" if reach is None else f"{reach:,.3g} cumulative crops"
            more = "" if hours is None else f", {hours:,.3g} more CPU hours at {rate:,.0f} crops per CPU hour"
            print(f"{name} reaches {target:.2f} ({form} fit) at {shown}{more}")

    out = {"command": "python benchmarks/default_curve.py -o " + str(Path(args.output)), "sessions": table,
           "fits": fits, "predictions": predictions, "reference_dnsmos_ovrl": reference_ovrl,
           "last_crops_per_cpu_hour": rate}
    from diffvoc.io import atomic_write_text

    atomic_write_text(Path(args.output), json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    from diffvoc.errors import DiffvocError

    try:
        sys.exit(main())
    except DiffvocError as e:  # a missing or malformed results file: one line, no traceback
        sys.exit(f"default_curve.py: {e}")
