"""HTML of ``diffvoc report``: the metrics, samples, generated-samples and training sections of ``index.html``.

Turns the loaded inputs (:mod:`diffvoc.evaluation.report_data`) and the relative paths of the copied
assets into one self-contained page, with its style sheet and the on-load self-check script.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from diffvoc.evaluation.report_data import Column, GeneratedSet, Results
from diffvoc.evaluation.results import DISPLAY_NAMES, LOWER_IS_BETTER, arrow, fmt_stat, table_columns

GENERATOR = "diffvoc report"
# (key in a benchmarks/generation.py row, title, arrow): the columns of the generation table.
GENERATION_COLUMNS = [("n", "n", ""), ("fid", "FID", "↓"), ("is", "IS", "↑"), ("mis", "mIS", "↑"),
                      ("mis_class", "mIS within class", "↑"), ("am", "AM", "↓"), ("ndb_k", "NDB/K", "↓"),
                      ("accuracy", "accuracy", "↑"), ("rtf", "RTF", "↓")]


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
    head = "".join(f'<th class="{html.escape(c.kind)}">'
                   f'{html.escape("ground truth" if c.kind == "reference" else c.label)}</th>' for c in cols)
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
      var bad = audios.filter(function (a) { return aok.indexOf(a) < 0; })
        .map(function (a) { return a.getAttribute('src'); })
        .concat(images.filter(function (i) { return iok.indexOf(i) < 0; })
          .map(function (i) { return i.getAttribute('src'); }));
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
