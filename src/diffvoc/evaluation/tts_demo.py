"""The text-to-speech part of the demo page: sentences spoken by the acoustic model, each mel through the
diffusion vocoder and through Griffin-Lim side by side, with the predicted phone durations drawn on the mel.

:func:`write_tts_samples` writes ``DIR/manifest.json``, the wavs and the alignment images;
:func:`tts_section` renders the section from that folder (copied into the report as ``tts/``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from diffvoc.io import atomic_write_text, atomic_write_wav

MANIFEST = "manifest.json"


def alignment_png(mel: np.ndarray, tokens: list[str], durations: list[int], path: Path, title: str = "") -> None:
    """A log-mel with a line at every phone boundary and the phone under its span."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, mel.shape[1] / 40), 3.0), dpi=90)
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-11.5, vmax=max(float(mel.max()), -5))
    edges = np.cumsum([0] + list(durations))
    for k, (tok, a, b) in enumerate(zip(tokens, edges[:-1], edges[1:])):
        ax.axvline(a - 0.5, color="white", lw=0.4, alpha=0.6)
        if b > a:
            ax.text((a + b) / 2 - 0.5, 82 + 5 * (k % 2), tok, ha="center", va="bottom", fontsize=6, clip_on=False)
    ax.set_ylim(-0.5, 79.5)
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title, fontsize=8, pad=26)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_tts_samples(out: str | Path, sentences: list[str], checkpoint: str | Path | None = None,
                      vocoder: str | Path | None = None, steps: int = 6, speaker: str | None = None,
                      seed: int = 0) -> dict[str, Any]:
    """Speak ``sentences`` with the acoustic model; write the wavs, images and ``manifest.json`` to ``out``."""
    from diffvoc.inference.griffin_lim import griffin_lim
    from diffvoc.inference.tts import TextToSpeech

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tts = TextToSpeech.from_pretrained(checkpoint, vocoder=vocoder)
    rows = []
    for k, text in enumerate(sentences, 1):
        mel, info = tts.mel(text, speaker=speaker, steps=steps, seed=seed)
        voc = tts.vocode(mel, seed=seed)
        gl = griffin_lim(mel, tts.config.audio, seed=seed)
        atomic_write_wav(out / f"tts{k}_vocoder.wav", voc, tts.sample_rate)
        atomic_write_wav(out / f"tts{k}_griffin_lim.wav", gl, tts.sample_rate)
        alignment_png(mel, info["tokens"], info["durations"], out / f"tts{k}_alignment.png", text)
        rows.append({"text": text, "vocoder": f"tts{k}_vocoder.wav", "griffin_lim": f"tts{k}_griffin_lim.wav",
                     "alignment": f"tts{k}_alignment.png", "seconds": round(len(voc) / tts.sample_rate, 2)})
    manifest = {"checkpoint": str(tts.checkpoint.path), "speaker": speaker or tts.default_speaker, "steps": steps,
                "vocoder": str(vocoder) if vocoder else "bundled diffusion vocoder, 6 steps", "samples": rows}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def tts_section(folder: Path, rel: str = "tts") -> str:
    """The HTML section for a folder written by :func:`write_tts_samples` (linked as ``rel/``)."""
    m = json.loads((folder / MANIFEST).read_text())

    def url(name: str) -> str:
        return quote(f"{rel}/{name}")

    rows = "".join(
        f"<tr><td>{html.escape(s['text'])}</td>"
        f"<td><audio controls preload=\"metadata\" src=\"{url(s['vocoder'])}\"></audio></td>"
        f"<td><audio controls preload=\"metadata\" src=\"{url(s['griffin_lim'])}\"></audio></td></tr>"
        f"<tr><td colspan=\"3\"><img src=\"{url(s['alignment'])}\" alt=\"predicted phone durations\" "
        f"style=\"max-width:100%\"></td></tr>" for s in m["samples"])
    return f"""<section id="tts">
<h2>Text to speech</h2>
<p class="note">The acoustic model ({html.escape(m['checkpoint'])}, speaker {html.escape(m['speaker'])},
{m['steps']} reverse steps) turns each sentence into a mel; the same mel is heard through the diffusion vocoder
({html.escape(m['vocoder'])}) and through Griffin-Lim (32 iterations). Below each row: the generated mel with the
predicted phone durations (a line at every phone boundary).</p>
<table><tr><th>text</th><th>diffusion vocoder</th><th>Griffin-Lim</th></tr>{rows}</table>
</section>
"""
