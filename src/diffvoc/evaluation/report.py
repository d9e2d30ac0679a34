"""``diffvoc report``: a static HTML page of evaluation results, in the style of a paper's demo page.

The page (``DIR/index.html``) has a header saying what was evaluated and when, the metrics table of
every results file (mean ± 95% CI; arrows say which way is better; the best system in bold), one
row per utterance with the ground truth and every system (an audio player and a log-mel
spectrogram each), and the training curves (``train/loss`` and ``valid/*``) of the ``--runs``
folders' TensorBoard logs. Every asset is copied into ``DIR`` and linked relatively, so the page
opens from disk (``file://``) without a server.

Audio comes from the folder ``diffvoc evaluate`` wrote (``RESULTS_audio/`` beside the results by
default, or ``--save-audio DIR``; recorded in the results' meta, found relative to the results file
first). Nothing is re-vocoded: without that folder (``--no-audio``) the page has the tables and
curves and says how to get the samples. Spectrograms use each system's
own mel recipe (the audio config stored in the results), drawn on the colour scale of the ground
truth of the same utterance. A small inline script checks on load that every audio element reads
its metadata and every image decodes, and writes the outcome into ``<pre id="selfcheck">``.

Generated samples (class-conditional or unconditional digits, issue 8): ``--generated [NAME=]DIR``
(repeatable) shows the first ``--max-generated`` wav files of each folder written by ``diffvoc
generate`` or ``benchmarks/generation.py --save-audio`` (``<label>_<k>.wav`` is labelled with its
digit, ``uncond_<k>.wav`` as unconditional), each with a player and a log-mel spectrogram on one
colour scale per folder; ``--generation-results GEN.json`` adds the FID/IS/mIS/AM/NDB table that
``benchmarks/generation.py`` wrote. A page of generated samples alone needs no ``RESULTS.json``.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import DiffvocError
from diffvoc.evaluation.copy_synthesis import safe_name
from diffvoc.evaluation.results import DISPLAY_NAMES, LOWER_IS_BETTER, arrow, check_results, fmt_stat, table_columns
from diffvoc.io import atomic_dir, atomic_write_text, load_json

__all__ = ["GeneratedSet", "build_report", "load_generated",
           "load_generation_results", "load_results", "read_curves"]

GENERATOR = "diffvoc report"
CURVE_TAGS_PREFIX = ("valid/",)
CURVE_TAGS = ("train/loss",)
# (key in a benchmarks/generation.py row, title, arrow): the columns of the generation table.
GENERATION_COLUMNS = [("n", "n", ""), ("fid", "FID", "↓"), ("is", "IS", "↑"), ("mis", "mIS", "↑"),
                      ("mis_class", "mIS within class", "↑"), ("am", "AM", "↓"), ("ndb_k", "NDB/K", "↓"),
                      ("accuracy", "accuracy", "↑"), ("rtf", "RTF", "↓")]


@dataclass
class Results:
    """One results JSON with the folder its saved audio is in (``None`` when there is none)."""

    path: Path
    data: dict[str, Any]
    audio_dir: Path | None


@dataclass
class Column:
    """A system shown in the samples table."""

    label: str
    kind: str
    results: Results
    system: dict[str, Any]
    cells: dict[str, dict[str, str]] = field(default_factory=dict)  # utterance id -> {audio, image}


@dataclass
class GeneratedSet:
    """A folder of generated clips: ``clips`` are (wav file, caption), in file-name order."""

    name: str
    folder: Path
    clips: list[tuple[Path, str]]
    cells: list[dict[str, str]] = field(default_factory=list)  # per clip: {audio, image, caption}


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing, undecodable or unparsable one is a one-line :class:`DiffvocError`."""
    return load_json(path, what)


def load_results(path: str | Path) -> Results:
    """Read a ``diffvoc evaluate`` results JSON (its shape checked: :func:`check_results`) and locate its
    saved audio."""
    path = Path(path)
    data = check_results(_read_json(path, "results file"), path)
    meta = data["meta"]
    audio_dir = None
    for cand in (meta.get("save_audio_relative"), meta.get("save_audio")):
        if cand and isinstance(cand, str) and (path.resolve().parent / cand).is_dir():
            audio_dir = (path.resolve().parent / cand).resolve()
            break
    return Results(path, data, audio_dir)


def _caption(stem: str) -> str:
    """``3_0007`` -> ``"three" (label 3) #7``; ``uncond_0002`` -> ``unconditional #2``; else the stem."""
    head, _, tail = stem.rpartition("_")
    if head and tail.isdigit():
        if head == "uncond":
            return f"unconditional #{int(tail)}"
        if head.isdigit() and int(head) < len(DIGIT_WORDS):
            return f"“{DIGIT_WORDS[int(head)]}” (label {int(head)}) #{int(tail)}"
    return stem


def load_generated(spec: str | Path, limit: int = 10) -> GeneratedSet:
    """``[NAME=]DIR``: the first ``limit`` wav files of DIR (named after the folder without NAME)."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, folder = (part.strip() for part in text.split("=", 1))
    else:
        name, folder = Path(text).resolve().name, text
    path = Path(folder)
    where = f"--generated {text}" + (f" ({path})" if str(path) != text else "")
    if not path.is_dir():
        raise DiffvocError(f"{where}: no such folder")
    wavs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise DiffvocError(f"{where}: no .wav files in that folder")
    return GeneratedSet(name or path.resolve().name, path, [(w, _caption(w.stem)) for w in wavs[:max(limit, 0)]])


def load_generation_results(path: str | Path) -> dict[str, Any]:
    """A results JSON of ``benchmarks/generation.py`` (``{"meta", "rows", ...}``)."""
    path = Path(path)
    data = _read_json(path, "generation results file")
    if not (isinstance(data, dict) and isinstance(data.get("rows"), list) and isinstance(data.get("meta"), dict)
            and all(isinstance(r, dict) and "system" in r for r in data["rows"])):
        raise DiffvocError(f"{path} is not a results file of benchmarks/generation.py")
    return data


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``train/loss`` and ``valid/*`` scalars of a run's TensorBoard logs: tag -> [(step, value)].

    Several event files (a resumed run) are read together; a step logged twice keeps its last value.
    """
    run = Path(run_dir)
    logs = run / "logs"
    if not logs.is_dir() or not any(p.name.startswith("events.out.tfevents") for p in logs.iterdir()):
        raise DiffvocError(f"{run}: no TensorBoard logs (expected event files in {logs})")
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(logs), size_guidance={SCALARS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get(SCALARS, []):
        if tag in CURVE_TAGS or tag.startswith(CURVE_TAGS_PREFIX):
            by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
            out[tag] = sorted(by_step.items())
    return out


def _check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report (``atomic_dir`` replaces it whole)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DiffvocError(f"{out} exists and is not a folder")
    index = out / "index.html"
    if any(out.iterdir()) and not (index.is_file() and f'content="{GENERATOR}"' in index.read_text(errors="replace")):
        raise DiffvocError(f"{out} exists and is not a diffvoc report; give a new or empty folder")


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        raise DiffvocError("the report needs matplotlib for its images: pip install matplotlib") from None
    return Figure


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------


def _log_mel(audio: np.ndarray, sr: int, audio_cfg: dict[str, Any] | None) -> np.ndarray:
    if audio_cfg:
        from diffvoc.audio import compute_mel
        from diffvoc.config import AudioConfig

        return compute_mel(audio, AudioConfig(**audio_cfg))
    from diffvoc.evaluation.metrics import default_log_mel

    return np.asarray(default_log_mel(sr)(audio))


def _spectrogram_png(mel: np.ndarray, path: Path, vmin: float, vmax: float, sr: int, hop: int) -> None:
    Figure = _matplotlib()
    fig = Figure(figsize=(3.2, 1.6), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest",
              extent=(0, mel.shape[-1] * hop / sr, 0, mel.shape[0]))
    ax.set_axis_off()
    fig.savefig(path, format="png")


def _curve_png(tag: str, series: dict[str, list[tuple[int, float]]], path: Path) -> None:
    Figure = _matplotlib()
    fig = Figure(figsize=(5.0, 3.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for run, points in series.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=run)
    ax.set_title(tag)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, format="png")


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------


def _columns(results: list[Results]) -> list[Column]:
    """Ground truth first, then every system of every results file (repeated context rows once)."""
    cols: list[Column] = []
    seen: set[str] = set()
    for res in results:
        for s in res.data.get("systems", []):
            label = s["system"]
            if label in seen and s["kind"] in ("reference", "griffin-lim"):
                continue
            k = 2
            while label in seen:
                label, k = f"{s['system']} ({res.path.stem} {k})", k + 1
            seen.add(label)
            cols.append(Column(label, s["kind"], res, s))
    cols.sort(key=lambda c: c.kind != "reference")  # stable: ground truth first
    return cols


def _utterances(results: list[Results], limit: int) -> list[tuple[str, float]]:
    ids: dict[str, float] = {}
    for res in results:
        for row in res.data["rows"]:
            ids.setdefault(row["id"], row.get("seconds") or 0.0)
    return list(ids.items())[:limit]


def _assets(cols: list[Column], utts: list[tuple[str, float]], out: Path) -> None:
    """Copy each system's wavs into ``out/audio`` and draw their spectrograms into ``out/spec``."""
    import soundfile as sf

    for uid, _ in utts:
        scale: tuple[float, float] | None = None
        for col in cols:  # the reference comes first and sets the colour scale of the row
            res = col.results
            if res.audio_dir is None:
                continue
            folder = col.system.get("folder") or safe_name(col.system["system"])
            src = res.audio_dir / folder / f"{safe_name(uid)}.wav"
            if not src.is_file():
                continue
            name = safe_name(col.label)
            (out / "audio" / name).mkdir(parents=True, exist_ok=True)
            (out / "spec" / name).mkdir(parents=True, exist_ok=True)
            wav_rel = f"audio/{name}/{safe_name(uid)}.wav"
            png_rel = f"spec/{name}/{safe_name(uid)}.png"
            shutil.copyfile(src, out / wav_rel)
            audio, sr = sf.read(src, dtype="float32", always_2d=True)
            cfg = res.data["meta"].get("audio_configs", {}).get(col.system.get("audio_key"))
            mel = _log_mel(audio.mean(axis=1), sr, cfg)
            if scale is None:
                scale = (float(mel.min()), float(mel.max()))
            hop = int(cfg["hop_length"]) if cfg else 256
            _spectrogram_png(mel, out / png_rel, scale[0], scale[1], sr, hop)
            col.cells[uid] = {"audio": wav_rel, "image": png_rel}


def _generated_assets(sets: list[GeneratedSet], out: Path) -> None:
    """Copy each set's clips into ``out/generated/NAME`` and draw their spectrograms beside them, on one
    colour scale per set (its clips' overall range)."""
    import soundfile as sf

    used: set[str] = set()
    for gs in sets:
        name, k = safe_name(gs.name), 2
        while name in used:
            name, k = f"{safe_name(gs.name)}-{k}", k + 1
        used.add(name)
        (out / "generated" / name).mkdir(parents=True)
        mels = []
        for wav, _ in gs.clips:
            try:
                audio, sr = sf.read(wav, dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError) as e:
                raise DiffvocError(f"{wav}: not a readable audio file ({e})") from None
            mels.append((_log_mel(audio.mean(axis=1), sr, None), sr))
        lo = min(float(m.min()) for m, _ in mels)
        hi = max(float(m.max()) for m, _ in mels)
        for (wav, caption), (mel, sr) in zip(gs.clips, mels):
            wav_rel = f"generated/{name}/{safe_name(wav.name)}"
            png_rel = f"generated/{name}/{safe_name(wav.stem)}.png"
            shutil.copyfile(wav, out / wav_rel)
            _spectrogram_png(mel, out / png_rel, lo, hi, sr, 256)
            gs.cells.append({"audio": wav_rel, "image": png_rel, "caption": caption})


def _url(rel: str) -> str:
    return "/".join(quote(part) for part in rel.split("/"))


def _metrics_table(res: Results) -> str:
    cols = table_columns(res.data)
    keys = ["rtf", "peak_memory_mb", *cols]
    best: dict[str, float] = {}
    for k in keys:
        vals = [_value(s, k) for s in res.data["summary"] if s["kind"] != "reference"]
        vals = [v for v in vals if v is not None]
        if vals:
            best[k] = min(vals) if k in LOWER_IS_BETTER else max(vals)
    head = "".join(f'<th title="{"lower" if k in LOWER_IS_BETTER else "higher"} is better">'
                   f"{html.escape(DISPLAY_NAMES[k])} {arrow(k)}</th>" for k in keys)
    body = []
    for s in res.data["summary"]:
        cells = []
        for k in keys:
            if k == "peak_memory_mb":
                text = "–" if s.get(k) is None else f"{s[k]:.0f}"
            else:
                text = fmt_stat(s.get("rtf") if k == "rtf" else s["metrics"].get(k))
            strong = s["kind"] != "reference" and _value(s, k) is not None and _value(s, k) == best.get(k)
            cells.append(f"<td>{'<strong>' if strong else ''}{html.escape(text)}{'</strong>' if strong else ''}</td>")
        body.append(f'<tr class="{html.escape(s["kind"])}"><th>{html.escape(s["system"])}</th>'
                    f'<td>{s["n"]}</td>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="metrics"><thead><tr><th>system</th><th>n</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _value(summary: dict[str, Any], key: str) -> float | None:
    if key == "peak_memory_mb":
        return summary.get(key)
    stat = summary.get("rtf") if key == "rtf" else summary["metrics"].get(key)
    return stat.get("mean") if stat else None


def _describe(res: Results) -> str:
    m = res.data["meta"]
    cks = []
    for c in m["checkpoints"]:
        cfg = c["config"]
        a, mo = cfg["audio"], cfg["model"]
        cks.append(f"<li><b>{html.escape(c['label'])}</b> — {html.escape(c.get('resolved') or c['path'])}: "
                   f"{mo['residual_channels']}×{mo['residual_layers']} DiffWave, {html.escape(cfg['prior'])} prior, "
                   f"T={cfg['diffusion_steps']}, {html.escape(a['preset'])} mel at {a['sample_rate']} Hz "
                   f"(hop {a['hop_length']}), {cfg['parameters']:,} parameters"
                   + (f", trained {cfg['train_step']} steps" if cfg.get("train_step") is not None else "") + "</li>")
    return (f"<p>Evaluated {html.escape(m['created'])}; "
            f"{len(m['utterances'])} utterances of {html.escape(m['data'])}; steps "
            f"{', '.join(map(str, m['steps']))}; seed {m['seed']}; device {html.escape(m['device'])} "
            f"({html.escape(str(m.get('device_name', '')))}), {m['threads']} threads, torch "
            f"{html.escape(m['torch_version'])}, diffvoc {html.escape(m['diffvoc_version'])}.</p>"
            f"<ul>{''.join(cks)}</ul>"
            + (f"<p class=\"note\">Command: <code>{html.escape(m['command'])}</code></p>" if m.get("command") else "")
            + f"<p class=\"note\">{html.escape(m['timing'])}. Peak memory: {html.escape(m['peak_memory'])}.</p>")


def _samples(cols: list[Column], utts: list[tuple[str, float]], have_audio: bool) -> str:
    if not have_audio:
        return ('<p class="note">No audio: the results do not point to a saved-audio folder (evaluated with '
                "<code>--no-audio</code>, or the folder was moved). Run <code>diffvoc evaluate ... -o "
                "results.json</code> (it keeps the audio in <code>results_audio/</code>, or where <code>--save-audio "
                "DIR</code> says) and build the report again.</p>")
    head = "".join(f'<th class="{html.escape(c.kind)}">{html.escape("ground truth" if c.kind == "reference" else c.label)}</th>'
                   for c in cols)
    rows = []
    for uid, secs in utts:
        cells = []
        for c in cols:
            cell = c.cells.get(uid)
            if cell is None:
                cells.append('<td class="missing">–</td>')
                continue
            alt = f"log-mel spectrogram of {uid}, {c.label}"
            cells.append(f'<td><img src="{_url(cell["image"])}" alt="{html.escape(alt)}" width="320" height="160">'
                         f'<audio controls preload="auto" src="{_url(cell["audio"])}"></audio></td>')
        rows.append(f'<tr><th>{html.escape(uid)}<br><span class="note">{secs:.2f} s</span></th>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="samples"><thead><tr><th>utterance</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _generation_table(data: dict[str, Any], path: Path) -> str:
    m = data["meta"]
    head = "".join(f"<th>{html.escape(f'{t} {a}'.strip())}</th>" for _, t, a in GENERATION_COLUMNS)
    body = []
    for r in data["rows"]:
        cells = []
        for key, _, _ in GENERATION_COLUMNS:
            v = r.get(key)
            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                text = "–"
            elif key == "n":
                text = str(v)
            elif key == "accuracy":
                text = f"{100 * v:.1f}%"
            elif key in ("mis", "mis_class") and v >= 100:
                text = f"{v:.1f}"
            else:
                text = f"{v:.3f}"
            cells.append(f"<td>{html.escape(text)}</td>")
        kind = "reference" if r.get("kind") == "real" else "model"
        body.append(f'<tr class="{kind}"><th>{html.escape(str(r["system"]))}</th>{"".join(cells)}</tr>')
    clf = m.get("classifier") or {}
    acc = clf.get("test_accuracy")
    note = (f"{html.escape(str(m.get('created', '')))} · {html.escape(str(m.get('n', '?')))} generated clips "
            f"per model · {html.escape(str(m.get('sampler', '')))} · "
            f"classifier {html.escape(str(clf.get('path', '?')))}"
            + (f" ({100 * acc:.1f}% on held-out voices)" if isinstance(acc, (int, float)) else "")
            + ". FID and NDB/K against the real train split; the real rows are references.")
    return (f"<h3>{html.escape(str(path))}</h3><p class=\"note\">{note}</p>"
            f'<div class="scroll"><table class="metrics generation"><thead><tr><th>system</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
            + (f"<p class=\"note\">Command: <code>{html.escape(m['command'])}</code></p>" if m.get("command") else ""))


def _generated(sets: list[GeneratedSet], tables: list[tuple[Path, dict[str, Any]]]) -> str:
    parts = [_generation_table(data, path) for path, data in tables]
    for gs in sets:
        alt = [html.escape(f"log-mel spectrogram, {gs.name}, {c['caption']}") for c in gs.cells]
        cells = "".join(
            f'<figure class="gen"><img src="{_url(c["image"])}" alt="{a}"'
            f' width="320" height="160"><audio controls preload="auto" src="{_url(c["audio"])}"></audio>'
            f"<figcaption>{html.escape(c['caption'])}</figcaption></figure>" for c, a in zip(gs.cells, alt))
        parts.append(f"<h3>{html.escape(gs.name)}</h3><p class=\"note\">{len(gs.cells)} clips from "
                     f"{html.escape(str(gs.folder))}; log-mel spectrograms on one colour scale per folder.</p>"
                     f'<div class="generated">{cells}</div>')
    return "".join(parts)


def _training(curves: list[tuple[str, str]], runs: list[str]) -> str:
    if not runs:
        return '<p class="note">No training runs given (<code>--runs RUN_DIR ...</code>).</p>'
    if not curves:
        return f'<p class="note">The logs of {html.escape(", ".join(runs))} hold no train/loss or valid/* scalars.</p>'
    figs = "".join(f'<figure><img src="{_url(rel)}" alt="{html.escape(tag)}" width="500" height="300">'
                   f"<figcaption>{html.escape(tag)}</figcaption></figure>" for tag, rel in curves)
    return f'<p>Runs: {html.escape(", ".join(runs))}.</p><div class="curves">{figs}</div>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .note { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } .scroll { overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: center; vertical-align: top; }
table.metrics td { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.reference th, th.reference { background: #f3f7ee; } tr.griffin-lim th, th.griffin-lim { background: #f7f3ee; }
table.samples img { display: block; width: 320px; height: 160px; }
table.samples audio { width: 320px; margin-top: 4px; } td.missing { color: #999; }
.curves { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; }
.generated { display: flex; flex-wrap: wrap; gap: 1em; } figure.gen img { display: block; width: 320px; height: 160px; }
figure.gen audio { width: 320px; margin-top: 4px; } figure.gen figcaption { font-size: 0.9em; text-align: center; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
"""

# Checks, once the page has loaded, that every <audio> reads its metadata and every <img> decodes.
SELFCHECK = """
(function () {
  function report() {
    var audios = Array.prototype.slice.call(document.querySelectorAll('audio'));
    var images = Array.prototype.slice.call(document.querySelectorAll('img'));
    var left = audios.length, done = false;
    function finish() {
      if (done) { return; }
      done = true;
      var aok = audios.filter(function (a) { return a.readyState >= 1 && !a.error; });
      var iok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
      var bad = audios.filter(function (a) { return aok.indexOf(a) < 0; }).map(function (a) { return a.getAttribute('src'); })
        .concat(images.filter(function (i) { return iok.indexOf(i) < 0; }).map(function (i) { return i.getAttribute('src'); }));
      var pre = document.getElementById('selfcheck');
      var ok = bad.length === 0;
      pre.setAttribute('data-status', ok ? 'ok' : 'fail');
      pre.textContent = 'selfcheck ' + (ok ? 'ok' : 'fail') + ': audio ' + aok.length + '/' + audios.length +
        ', images ' + iok.length + '/' + images.length + (bad.length ? '\\nnot loaded: ' + bad.join(' ') : '');
    }
    function settle() { left -= 1; if (left <= 0) { finish(); } }
    if (!audios.length) { finish(); return; }
    audios.forEach(function (a) {
      if (a.readyState >= 1 || a.error) { settle(); return; }
      var once = false;
      function h() { if (!once) { once = true; settle(); } }
      a.addEventListener('loadedmetadata', h);
      a.addEventListener('error', h);
      a.load();
    });
    setTimeout(finish, 4000);
  }
  if (document.readyState === 'complete') { report(); } else { window.addEventListener('load', report); }
})();
"""


def render_page(results: list[Results], cols: list[Column], utts: list[tuple[str, float]],
                curves: list[tuple[str, str]], runs: list[str], generated: str,
                gen_sets: list[GeneratedSet] | None = None,
                gen_tables: list[tuple[Path, dict[str, Any]]] | None = None, tts_html: str = "") -> str:
    """The whole ``index.html`` as a string (``generated`` is the build time)."""
    from diffvoc import __version__

    gen_sets, gen_tables = gen_sets or [], gen_tables or []
    labels = [c.label for c in cols if c.kind == "model"] + [g.name for g in gen_sets]
    what = ""
    if results:
        models = ", ".join(c.label for c in cols if c.kind == "model") or "no model"
        what += (f"Copy-synthesis by {html.escape(models)}: each system vocodes the mel of the ground-truth "
                 "recording. Griffin-Lim inverts the same mel (32 iterations). ")
    if gen_sets or gen_tables:
        what += "Generated samples: class-conditional or unconditional generation from noise (no mel input)."
    tables = "".join(f"<h3>Results {i}: {html.escape(str(r.path))}</h3>{_describe(r)}{_metrics_table(r)}"
                     for i, r in enumerate(results, 1))
    settings = json.dumps(results[0].data["meta"].get("metric_settings", {}), indent=1) if results else ""
    copy_synthesis = f"""<section id="metrics">
<h2>Objective metrics</h2>
<p class="note">Mean ± 95% confidence half width over utterances; ↑ higher is better, ↓ lower is better; the best
system per column is in bold (ground truth excluded). The ground-truth row has DNSMOS only.</p>
{tables}
</section>
<section id="samples">
<h2>Samples</h2>
<p class="note">Log-mel spectrograms on the ground truth's colour scale; first {len(utts)} utterances.</p>
{_samples(cols, utts, any(c.cells for c in cols))}
</section>
""" if results else ""
    generation = f"""<section id="generated">
<h2>Generated samples</h2>
{_generated(gen_sets, gen_tables)}
</section>
""" if (gen_sets or gen_tables) else ""
    details = (f"<details><summary>Metric settings</summary><pre>{html.escape(settings)}</pre></details>"
               if results else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffvoc samples — {html.escape(', '.join(labels))}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>diffvoc — audio samples and metrics</h1>
<p>{what}</p>
<p class="note">Report generated {html.escape(generated)} by diffvoc {html.escape(__version__)}.</p>
</header>
{copy_synthesis}{tts_html}{generation}<section id="training">
<h2>Training curves</h2>
{_training(curves, runs)}
</section>
{details}
<pre id="selfcheck" data-status="pending">selfcheck pending</pre>
<script>{SELFCHECK}</script>
</body>
</html>
"""


def build_report(results_paths: list[str | Path], out_dir: str | Path, runs: list[str | Path] | None = None,
                 max_utterances: int = 8, generated: list[str | Path] | None = None,
                 generation_results: list[str | Path] | None = None, max_generated: int = 10,
                 tts_samples: str | Path | None = None) -> Path:
    """Write the report folder (replaced as a whole, atomically) and return its ``index.html``.

    ``generated``: ``[NAME=]DIR`` folders of generated wav files (the first ``max_generated`` of each
    are shown); ``generation_results``: JSON files of ``benchmarks/generation.py``; ``tts_samples``: a
    folder written by :func:`diffvoc.evaluation.tts_demo.write_tts_samples` (the text-to-speech section,
    shown only next to results). At least one of
    ``results_paths``, ``generated`` and ``generation_results`` must be given.
    """
    if max_utterances < 0:
        raise DiffvocError(f"--max-utterances must be >= 0, got {max_utterances}")
    if max_generated < 1:
        raise DiffvocError(f"--max-generated must be >= 1, got {max_generated}")
    if not (results_paths or generated or generation_results):
        raise DiffvocError("nothing to report: give RESULTS.json files, --generated DIR or --generation-results")
    out = Path(out_dir)
    _check_out_dir(out)
    results = [load_results(p) for p in results_paths]
    gen_sets = [load_generated(g, max_generated) for g in generated or []]
    gen_tables = [(Path(p), load_generation_results(p)) for p in generation_results or []]
    curves_by_run: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run in runs or []:
        name, k = Path(run).resolve().name, 2
        while name in curves_by_run:
            name, k = f"{Path(run).resolve().name}-{k}", k + 1
        curves_by_run[name] = read_curves(run)
    _matplotlib()
    cols = _columns(results)
    utts = _utterances(results, max_utterances)
    with atomic_dir(out) as tmp:
        _assets(cols, utts, tmp)
        _generated_assets(gen_sets, tmp)
        tags = [t for t in CURVE_TAGS if any(t in c for c in curves_by_run.values())]
        tags += sorted({t for c in curves_by_run.values() for t in c if t.startswith(CURVE_TAGS_PREFIX)})
        curves = []
        if tags:
            (tmp / "curves").mkdir()
        for tag in tags:
            rel = f"curves/{safe_name(tag.replace('/', '_'))}.png"
            _curve_png(tag, {run: c.get(tag, []) for run, c in curves_by_run.items()}, tmp / rel)
            curves.append((tag, rel))
        stamp = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
        tts_html = ""
        if tts_samples is not None:
            from diffvoc.evaluation.tts_demo import tts_section

            shutil.copytree(tts_samples, tmp / "tts")
            tts_html = tts_section(tmp / "tts")
        page = render_page(results, cols, utts, curves, list(curves_by_run), stamp, gen_sets, gen_tables, tts_html)
        atomic_write_text(tmp / "index.html", page)
    return out / "index.html"


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
