"""``diffvoc demo``: speak a few sentences (or take your wavs), vocode them with the bundled model at
2 and 6 steps, score them, and write the HTML report. With the bundled acoustic model installed, the
report also has a text-to-speech section (demo sentences spoken by the acoustic model, through the
vocoder and through Griffin-Lim, with the predicted phone durations drawn on the mel).

    diffvoc demo                      # TTS engines speak 3 sentences; report in ./diffvoc-demo/report
    diffvoc demo my1.wav my2.wav -o out --steps 2,6,12 --checkpoint runs/pg
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from diffvoc.errors import DiffvocError

# Sentences written for the demo (not in the training corpus), spoken by one voice each.
DEMO_SENTENCES = [
    "The quick brown fox jumps over the lazy dog, twice before breakfast.",
    "Would you like to hear how a diffusion vocoder turns noise into speech?",
    "Seven bright lanterns lit the harbour while the old ferry slowly came home.",
    "Please remember to water the tomatoes on Thursday afternoon.",
]
# Preferred voices: the corpus's held-out voice first, then other engines.
DEMO_VOICES = ["flite:awb", "espeak-ng:en-us+f3", "festival:kal_diphone", "flite:slt", "espeak-ng:en+m3"]


def _speak_inputs(folder: Path, count: int, rate: int) -> list[Path]:
    from diffvoc.data.engines import speak
    from diffvoc.data.voices import find_voices

    voices = {v.id: v for v in find_voices()}
    order = [voices[i] for i in DEMO_VOICES if i in voices] + [v for k, v in voices.items() if k not in DEMO_VOICES]
    paths = []
    for k, text in enumerate(DEMO_SENTENCES[:count]):
        voice = order[k % len(order)]
        path = folder / f"demo{k + 1}_{voice.id.replace(':', '_').replace('+', '_')}.wav"
        speak(text, path, voice, rate)
        paths.append(path)
    return paths


def run_demo(out: str | Path = "diffvoc-demo", inputs: list[str] | None = None, checkpoint: str | None = None,
             steps: list[int] | None = None, sentences: int = 3, device: str = "cpu",
             metrics: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Run the demo; return the report's ``index.html`` and the evaluation results."""
    from diffvoc.audio import load_audio
    from diffvoc.checkpoint import load_checkpoint
    from diffvoc.evaluation.copy_synthesis import evaluate
    from diffvoc.evaluation.report import build_report
    from diffvoc.evaluation.results import write_results
    from diffvoc.inference.vocoder import DEFAULT_CHECKPOINT
    from diffvoc.io import atomic_dir

    out = Path(out)
    ckpt = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not ckpt.exists():
        raise DiffvocError("no bundled model is installed with this copy of diffvoc; pass --checkpoint")
    if not 1 <= sentences <= len(DEMO_SENTENCES):
        raise DiffvocError(f"--sentences must be 1..{len(DEMO_SENTENCES)}")
    rate = load_checkpoint(ckpt).config.audio.sample_rate
    if out.exists() and (not out.is_dir() or (not (out / "results.json").exists() and any(out.iterdir()))):
        raise DiffvocError(f"{out} exists and is not an earlier demo folder; choose another -o")
    for p in inputs or []:
        load_audio(p)  # refuse bad input before anything is written
    names = [Path(p).name for p in inputs or []]
    if len(set(names)) != len(names):
        raise DiffvocError("two inputs have the same file name; rename one")
    with atomic_dir(out) as tmp:  # the whole folder appears at once, or not at all (an earlier one stays)
        work = tmp / "inputs"
        work.mkdir()
        if inputs:
            for p in inputs:
                shutil.copy(p, work / Path(p).name)
        else:
            _speak_inputs(work, sentences, rate)
        print(f"vocoding {len(list(work.iterdir()))} utterances with {ckpt} at {steps or [2, 6]} steps ...", flush=True)
        results = evaluate([str(ckpt)], work, steps=steps or [2, 6], device=device, metrics=metrics,
                           save_audio=tmp / "audio", command="diffvoc demo", log=None)
        write_results(results, tmp / "results.json")  # the report reads the audio where it is now ...
        tts = _tts_samples(tmp / "tts", DEMO_SENTENCES[: (1 if inputs else sentences)], checkpoint)
        build_report([tmp / "results.json"], tmp / "report", tts_samples=tts)
        results["meta"] = _moved(results["meta"], tmp, out)
        write_results(results, tmp / "results.json")  # ... and results.json names where it will be
    return out / "report" / "index.html", results


def _tts_samples(folder: Path, sentences: list[str], vocoder: str | None) -> Path | None:
    """The text-to-speech section's samples (the bundled acoustic model through the demo's vocoder and
    through Griffin-Lim), or ``None`` when no acoustic model is installed."""
    from diffvoc.evaluation.tts_demo import write_tts_samples
    from diffvoc.inference.tts import DEFAULT_ACOUSTIC

    if not (DEFAULT_ACOUSTIC / "config.yaml").is_file():
        return None
    print(f"text to speech: {len(sentences)} sentence(s) with the bundled acoustic model ...", flush=True)
    write_tts_samples(folder, sentences, vocoder=vocoder)
    return folder


def _moved(meta: dict[str, Any], tmp: Path, out: Path) -> dict[str, Any]:
    """``meta`` with the paths inside the temporary folder ``tmp`` named as they will be, under ``out``."""
    def fix(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        return v.replace(str(tmp.resolve()), str(out.resolve())).replace(str(tmp), str(out))

    return {k: fix(v) for k, v in meta.items()}
