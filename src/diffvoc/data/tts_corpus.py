"""Text + mel corpora for the acoustic model: an LJSpeech-layout folder, phonemised and analysed once.

The folder holds ``metadata.csv`` (``id|text|normalised text|speaker``; the speaker column is
optional), ``wavs/<id>.wav`` and optionally ``splits/<name>.txt`` (one id per line; without it,
2 % valid / 2 % test). Each utterance is read as in vocoder training (peak-normalised, the
config's mel) and phonemised with :func:`diffvoc.data.text.phonemize`; the results are cached under
``<cache>/<audio key>-<language>/`` (``<id>.mel.npy``, ``phonemes.yaml``) so later runs skip the work.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from diffvoc.acoustic_config import AcousticConfig
from diffvoc.audio import LOG_CLAMP, compute_mel, load_audio, peak_normalize
from diffvoc.data.dataset import make_split
from diffvoc.data.text import PhonemeInventory, phonemize
from diffvoc.errors import DiffvocError
from diffvoc.io import atomic_save_npy, atomic_write_text, load_yaml

PAD_LOG_MEL = float(np.log(LOG_CLAMP))  # silence in the hifigan log-mel


@dataclass
class Utterance:
    id: str
    text: str
    speaker: str
    tokens: list[str]
    mel: np.ndarray  # [n_mels, frames] float32


def read_metadata(root: Path) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """Rows ``{id, text, speaker}`` of ``metadata.csv`` and the splits (given or made)."""
    meta = root / "metadata.csv"
    if not meta.is_file() or not (root / "wavs").is_dir():
        raise DiffvocError(f"{root} is not an LJSpeech-style corpus (needs metadata.csv and wavs/)")
    rows = []
    with open(meta, newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            if not row or not row[0].strip():
                continue
            text = (row[2] if len(row) > 2 and row[2].strip() else row[1] if len(row) > 1 else "").strip()
            rows.append({"id": row[0].strip(), "text": text,
                         "speaker": row[3].strip() if len(row) > 3 and row[3].strip() else "speaker"})
    if (root / "splits").is_dir():
        splits = {p.stem: p.read_text().split() for p in sorted((root / "splits").glob("*.txt"))}
    else:
        splits = make_split([r["id"] for r in rows])
    return rows, splits


def _cache_dir(cfg: AcousticConfig, fallback: Path | None) -> Path:
    key = f"{cfg.audio.feature_key()}-{cfg.text.language}"
    root = Path(cfg.data.cache) if cfg.data.cache else Path(cfg.data.path) / "features-acoustic"
    try:
        (root / key).mkdir(parents=True, exist_ok=True)
        if os.access(root / key, os.W_OK):
            return root / key
    except OSError:
        pass
    if fallback is None:
        raise DiffvocError(f"cannot write the feature cache under {root}; set data.cache")
    (fallback / key).mkdir(parents=True, exist_ok=True)
    return fallback / key


def load_corpus(cfg: AcousticConfig, fallback_cache: Path | None = None,
                log=print) -> tuple[dict[str, Utterance], dict[str, list[str]]]:
    """All usable utterances by id and the splits (ids without audio, text or enough frames are dropped)."""
    root = Path(cfg.data.path)
    rows, splits = read_metadata(root)
    cache = _cache_dir(cfg, fallback_cache)
    phon_file = cache / "phonemes.yaml"
    phonemes: dict[str, list[str]] = {}
    if phon_file.is_file():
        phonemes = {k: v.split(" ") for k, v in (load_yaml(phon_file) or {}).items()}
    todo = [r for r in rows if r["id"] not in phonemes or not (cache / f"{r['id']}.mel.npy").is_file()]
    if todo:
        log(f"acoustic features: phonemising and analysing {len(todo)} utterances into {cache} ...")
    skipped = 0
    for n, r in enumerate(todo):
        wav = root / "wavs" / f"{r['id']}.wav"
        if not wav.is_file() or not r["text"]:
            skipped += 1
            continue
        if r["id"] not in phonemes:
            phonemes[r["id"]] = phonemize(r["text"], cfg.text.language)
        mel_path = cache / f"{r['id']}.mel.npy"
        if not mel_path.is_file():
            audio = peak_normalize(load_audio(wav, cfg.audio.sample_rate), cfg.audio.peak_normalize)
            atomic_save_npy(mel_path, compute_mel(audio, cfg.audio))
        if (n + 1) % 200 == 0:
            atomic_write_text(phon_file, yaml.safe_dump({k: " ".join(v) for k, v in phonemes.items()},
                                                        allow_unicode=True))
    if todo:
        atomic_write_text(phon_file, yaml.safe_dump({k: " ".join(v) for k, v in phonemes.items()}, allow_unicode=True))
    utts = {}
    for r in rows:
        mel_path = cache / f"{r['id']}.mel.npy"
        if r["id"] not in phonemes or not mel_path.is_file():
            continue
        mel = np.load(mel_path, allow_pickle=False)
        if mel.shape[-1] < len(phonemes[r["id"]]):
            skipped += 1
            continue
        utts[r["id"]] = Utterance(r["id"], r["text"], r["speaker"], phonemes[r["id"]], mel)
    if skipped:
        log(f"acoustic features: skipped {skipped} utterances (no audio, no text, or fewer frames than phonemes)")
    splits = {k: [i for i in v if i in utts] for k, v in splits.items()}
    if not splits.get("train"):
        raise DiffvocError(f"{root}: no usable training utterances")
    return utts, splits


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, N] long, 0 = pad
    token_lengths: torch.Tensor  # [B]
    mel: torch.Tensor  # [B, n_mels, T], padded with silence
    frame_lengths: torch.Tensor  # [B]
    speakers: torch.Tensor  # [B] long, 0 = the average speaker

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.tokens, self.token_lengths, self.mel, self.frame_lengths,
                                              self.speakers)))


def speaker_index(speakers: list[str], name: str) -> int:
    """The embedding row of a speaker name (row 0, the average speaker, for a voice not trained on)."""
    try:
        return speakers.index(name) + 1
    except ValueError:
        return 0


def make_batch(utts: list[Utterance], inventory: PhonemeInventory, speakers: list[str],
               speaker_ids: list[int] | None = None) -> Batch:
    """Pad a list of utterances into tensors."""
    ids = [inventory.encode(u.tokens) for u in utts]
    N, T = max(len(i) for i in ids), max(u.mel.shape[1] for u in utts)
    n_mels = utts[0].mel.shape[0]
    tokens = torch.zeros(len(utts), N, dtype=torch.long)
    mel = torch.full((len(utts), n_mels, T), PAD_LOG_MEL)
    for b, (i, u) in enumerate(zip(ids, utts)):
        tokens[b, : len(i)] = torch.tensor(i)
        mel[b, :, : u.mel.shape[1]] = torch.from_numpy(u.mel)
    spk = speaker_ids if speaker_ids is not None else [speaker_index(speakers, u.speaker) for u in utts]
    return Batch(tokens, torch.tensor([len(i) for i in ids]), mel, torch.tensor([u.mel.shape[1] for u in utts]),
                 torch.tensor(spk, dtype=torch.long))
