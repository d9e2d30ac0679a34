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

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from diffvoc.errors import DiffvocError
from diffvoc.evaluation.copy_synthesis import safe_name
from diffvoc.evaluation.report_data import (
    CURVE_TAGS,
    CURVE_TAGS_PREFIX,
    Column,
    GeneratedSet,
    Results,
    load_generated,
    load_generation_results,
    load_results,
    read_curves,
)
from diffvoc.evaluation.report_html import GENERATOR, render_page
from diffvoc.io import atomic_dir, atomic_write_text

__all__ = ["GeneratedSet", "build_report", "load_generated",
           "load_generation_results", "load_results", "read_curves"]


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
