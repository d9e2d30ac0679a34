"""Results of ``diffvoc evaluate``: the per-system summary, its tables and the files they go to.

A results JSON (``format: diffvoc-evaluation``) holds ``meta`` (how it was measured), ``rows`` (one
per system × utterance) and ``summary`` (per system: mean and 95 % CI half width of every metric,
Student t, :func:`diffvoc.evaluation.metrics.mean_ci95`). ``diffvoc report`` reads the same files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

import diffvoc.evaluation.metrics as M
from diffvoc.errors import DiffvocError
from diffvoc.io import atomic_files, plain

FORMAT = "diffvoc-evaluation"
FORMAT_VERSION = 1

#: Short column titles for reports, in report order.
DISPLAY_NAMES: dict[str, str] = {
    "mr_stft": "MR-STFT", "mr_stft_sc": "MR-STFT SC", "mr_stft_mag": "MR-STFT mag",
    "log_mel_l1": "log-mel L1", "mcd": "MCD (dB)", "f0_rmse_cents": "F0 RMSE (cents)",
    "f0_rmse_hz": "F0 RMSE (Hz)", "vuv_error": "V/UV error", "pesq_wb": "PESQ-WB", "stoi": "STOI",
    "estoi": "ESTOI", "dnsmos_sig": "DNSMOS SIG", "dnsmos_bak": "DNSMOS BAK", "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_p808": "DNSMOS P.808", "rtf": "RTF", "peak_memory_mb": "peak memory (MiB)",
}

#: Metrics where smaller is better; every other metric is better when larger.
LOWER_IS_BETTER: frozenset[str] = frozenset({
    "mr_stft", "mr_stft_sc", "mr_stft_mag", "log_mel_l1", "mcd", "f0_rmse_cents", "f0_rmse_hz",
    "vuv_error", "rtf", "peak_memory_mb"})


def summarise(systems: list[dict[str, Any]], rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Per system: mean and 95% CI half width of every metric and of the RTF, plus peak memory."""
    out = []
    for s in systems:
        mine = [r for r in rows if r["system"] == s["system"]]
        entry = {k: v for k, v in s.items() if k != "folder"}
        entry["n"] = len(mine)
        entry["metrics"] = {}
        for k in keys:
            vals = [r["metrics"][k] for r in mine if k in r["metrics"]]
            if vals:
                entry["metrics"][k] = _stat(vals)
        rtfs = [r["rtf"] for r in mine if r["rtf"] is not None]
        entry["rtf"] = _stat(rtfs) if rtfs else None
        out.append(entry)
    return out


def _stat(values: list[float]) -> dict[str, Any]:
    mean, ci = M.mean_ci95(values)
    return {"mean": mean, "ci95": ci, "n": int(np.isfinite(np.asarray(values, np.float64)).sum())}


def fmt_stat(stat: dict[str, Any] | None) -> str:
    """``mean ± ci`` with four significant digits, ``–`` when there is no value."""
    if not stat or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "–"
    ci = stat.get("ci95")
    if ci is None or not math.isfinite(ci):
        return f"{stat['mean']:.4g}"
    return f"{stat['mean']:.4g} ± {ci:.2g}"


def arrow(key: str) -> str:
    """``↓`` when a smaller value is better, else ``↑``."""
    return "↓" if key in LOWER_IS_BETTER else "↑"


def table_columns(results: dict[str, Any]) -> list[str]:
    """Metric keys that have a value for at least one system, in report order."""
    present = {k for s in results["summary"] for k in s["metrics"]}
    return [k for k in DISPLAY_NAMES if k in present]


def format_table(results: dict[str, Any]) -> str:
    """The summary as a Markdown table (mean ± 95% CI half width; arrows say which way is better)."""
    cols = table_columns(results)
    head = ["system", "n", f"RTF {arrow('rtf')}", f"peak MiB {arrow('peak_memory_mb')}"]
    head += [f"{DISPLAY_NAMES[k]} {arrow(k)}" for k in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in results["summary"]:
        mem = s.get("peak_memory_mb")
        cells = [s["system"], str(s["n"]), fmt_stat(s.get("rtf")), "–" if mem is None else f"{mem:.0f}"]
        cells += [fmt_stat(s["metrics"].get(k)) for k in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(results: dict[str, Any]) -> str:
    """The whole ``results.md``: a heading, the table and how it was measured."""
    m = results["meta"]
    ck = ", ".join(f"{c['label']} ({c['resolved'] or c['path']})" for c in m["checkpoints"])
    return "\n".join([
        "# diffvoc evaluation", "",
        f"{m['created']} · {len(m['utterances'])} utterances of {m['data']} · steps {','.join(map(str, m['steps']))}"
        f" · seed {m['seed']}", "",
        format_table(results), "",
        f"Mean ± 95% CI half width over utterances (Student t). Checkpoints: {ck}.",
        f"Device {m['device']} ({m['device_name']}), {m['threads']} threads, torch {m['torch_version']}, "
        f"diffvoc {m['diffvoc_version']}. {m['timing']}.",
        f"Peak memory: {m['peak_memory']}. Log-mel L1 is on each model's own mel. The reference row "
        "has DNSMOS only; griffin-lim inverts the same mel (32 iterations).",
        "", f"Command: `{m['command']}`" if m.get("command") else "", "",
    ])


def write_results(results: dict[str, Any], output: str | Path) -> Path:
    """Write ``output`` (JSON) and the Markdown table beside it (same name, ``.md``); return the .md path."""
    output = Path(output)
    md = output.with_suffix(".md")
    results = dict(results, meta=dict(results["meta"]))
    if results["meta"].get("save_audio"):  # lets a report find the audio when both folders move together
        parent = output.resolve().parent
        results["meta"]["save_audio_relative"] = os.path.relpath(results["meta"]["save_audio"], parent)
    with atomic_files() as files:  # the JSON and its table together, or neither
        files.write_text(output, json.dumps(plain(results, nan_as_none=True), indent=1, allow_nan=False) + "\n")
        files.write_text(md, format_markdown(results))
    return md


NUMBER = (int, float)
_STAT = (dict, type(None))
# The shape `diffvoc report` relies on, checked when a results file is read (:func:`check_results`):
# a dict gives the required keys and the shape of each value, ``[spec]`` a list of such, a type a leaf.
RESULTS_SCHEMA: dict[str, Any] = {
    "format": str,
    "meta": {"created": str, "data": str, "steps": [int], "seed": int, "device": str, "threads": int,
             "torch_version": str, "diffvoc_version": str, "timing": str, "peak_memory": str, "utterances": [str],
             "checkpoints": [{"label": str, "path": str,
                              "config": {"audio": {"preset": str, "sample_rate": int, "hop_length": int},
                                         "model": {"residual_channels": int, "residual_layers": int},
                                         "prior": str, "diffusion_steps": int, "parameters": int}}]},
    "systems": [{"system": str, "kind": str}],
    "rows": [{"system": str, "id": str, "metrics": dict}],
    "summary": [{"system": str, "kind": str, "n": int, "metrics": dict}],
}


def _shape_error(value: Any, spec: Any, where: str) -> str | None:
    """Where ``value`` departs from ``spec`` (``None`` if it does not)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where or 'the file'} must be a mapping"
        for key, sub in spec.items():
            if key not in value:
                return f"{where + '.' if where else ''}{key} is missing"
            err = _shape_error(value[key], sub, f"{where + '.' if where else ''}{key}")
            if err:
                return err
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where} must be a list"
        for i, v in enumerate(value):
            err = _shape_error(v, spec[0], f"{where}[{i}]")
            if err:
                return err
        return None
    ok = isinstance(value, spec) and not (spec in (int, NUMBER) and isinstance(value, bool))
    return None if ok else f"{where} must be {getattr(spec, '__name__', spec)}, got {type(value).__name__}"


def check_results(data: Any, path: Path) -> dict[str, Any]:
    """A results JSON of ``diffvoc evaluate``, checked against :data:`RESULTS_SCHEMA` (and each summary's
    statistics: ``None`` or ``{mean, ci95}`` numbers) at the read boundary; raises a one-line
    :class:`DiffvocError` naming the file and the first departure."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DiffvocError(f"{path} is not a results file of `diffvoc evaluate`")
    err = _shape_error(data, RESULTS_SCHEMA, "")
    for i, s in enumerate(data["summary"] if err is None else []):
        for key, stat in [("rtf", s.get("rtf")), *s["metrics"].items()]:
            if not (stat is None or (isinstance(stat, dict) and all(
                    stat.get(k) is None or (isinstance(stat.get(k), NUMBER) and not isinstance(stat.get(k), bool))
                    for k in ("mean", "ci95")))):
                err = err or f"summary[{i}].{key} must be null or {{mean, ci95}} numbers"
        if s.get("peak_memory_mb") is not None and not isinstance(s["peak_memory_mb"], NUMBER):
            err = err or f"summary[{i}].peak_memory_mb must be a number"
    if err:
        raise DiffvocError(f"{path}: results of an unexpected shape ({err})")
    return data


def check_output(output: Path) -> None:
    if output.suffix.lower() == ".md":
        raise DiffvocError(f"{output}: give the JSON name (the Markdown table is written beside it as .md)")
    if output.is_dir():
        raise DiffvocError(f"{output} is a folder; give a file name such as results.json")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise DiffvocError(f"cannot write {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DiffvocError(f"cannot write {output}: folder {parent} is not writable")
