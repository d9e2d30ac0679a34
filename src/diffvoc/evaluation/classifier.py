"""The spoken-digit classifier behind the generation metrics (:mod:`diffvoc.evaluation.generative`).

**The classifier** (:class:`DigitClassifier`): log-mel (40 bands, 25 ms window, 10 ms hop,
20–8000 Hz, at 16 kHz) of a 1 s clip, normalised per band with training-set statistics, then four
conv blocks (3×3 conv, batch norm, ReLU, 2×2 max pool), global mean+max pooling, a linear layer to
the **feature** vector (the penultimate layer, taken before its ReLU) and a linear layer to 10
logits. It trains on the ``train`` split of a digits corpus in a few CPU minutes with time shift,
gain, white noise at 5–40 dB SNR on half of the clips (generated audio often has a noise floor
that clean synthetic speech never has), SpecAugment-style masking and a little label smoothing
(0.02, so that no softmax output saturates at 0 or 1: mIS is the exponential of a mean log-ratio
of probabilities and explodes for an over-confident classifier); ``valid`` picks the epoch;
``test`` (voices never seen in training) gives the reported accuracy, clean and with white noise
at 30/20/10 dB SNR. It is saved as ``classifier.safetensors`` +
``classifier.yaml`` (nothing pickled): :meth:`DigitClassifier.save` / :meth:`DigitClassifier.load`.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffvoc.config import AudioConfig
from diffvoc.errors import DiffvocError
from diffvoc.io import plain

__all__ = ["AUGMENT", "ClassifierConfig", "ClassifierOutput", "DigitCNN", "DigitClassifier", "add_noise",
           "evaluate_classifier", "train_classifier"]

WEIGHTS_NAME = "classifier.safetensors"
META_NAME = "classifier.yaml"
FORMAT = "diffvoc-digit-classifier"
FORMAT_VERSION = 1



@dataclass
class ClassifierConfig:
    """Features and network sizes of the digit classifier (saved in ``classifier.yaml``)."""

    sample_rate: int = 16000
    seconds: float = 1.0
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 8000.0
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    feature_dim: int = 128
    n_classes: int = 10
    dropout: float = 0.2

    def audio(self) -> AudioConfig:
        """The mel recipe as a diffvoc :class:`AudioConfig` (HiFi-GAN-style log-mel, no peak scaling)."""
        return AudioConfig(preset="hifigan", sample_rate=self.sample_rate, n_fft=self.n_fft,
                           hop_length=self.hop_length, win_length=self.win_length, n_mels=self.n_mels,
                           fmin=self.fmin, fmax=self.fmax, peak_normalize=None)

    @property
    def samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))


class DigitCNN(nn.Module):
    """Log-mel ``[B, n_mels, frames]`` (normalised) → (logits ``[B, C]``, features ``[B, D]``)."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for c in cfg.channels:
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            cin = c
        self.body = nn.Sequential(*layers)
        self.embed = nn.Linear(2 * cin, cfg.feature_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.n_classes)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(mel.unsqueeze(1))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        feat = self.embed(self.drop(pooled))
        return self.head(self.drop(F.relu(feat))), feat


@dataclass
class ClassifierOutput:
    """What the classifier says about a set of clips: logits, softmax (float64) and features."""

    logits: np.ndarray
    probs: np.ndarray
    features: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class DigitClassifier:
    """The digit classifier with its feature normalisation and training record.

    Args:
        cfg: features and sizes.
        mean, std: per-band log-mel statistics of the training set (``[n_mels]``).
        info: what :func:`train_classifier` recorded (accuracies, label distribution, ...).
    """

    def __init__(self, cfg: ClassifierConfig, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 info: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> None:
        from diffvoc.audio import MelSpectrogram

        self.cfg = cfg
        self.device = torch.device(device)
        self.net = DigitCNN(cfg).to(self.device)
        self.mel = MelSpectrogram(cfg.audio()).to(self.device)
        m = np.zeros(cfg.n_mels) if mean is None else np.asarray(mean, np.float64)
        s = np.ones(cfg.n_mels) if std is None else np.asarray(std, np.float64)
        if m.shape != (cfg.n_mels,) or s.shape != (cfg.n_mels,) or np.any(s <= 0):
            raise DiffvocError(f"classifier normalisation must be {cfg.n_mels} means and positive stds")
        self.mean = torch.tensor(m, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(s, dtype=torch.float32, device=self.device)
        self.info: dict[str, Any] = dict(info or {})
        self.path: Path | None = None

    # ----------------------------------------------------------------------------------- features
    def log_mel(self, wavs: torch.Tensor) -> torch.Tensor:
        """Raw log-mel ``[B, n_mels, frames]`` of waveforms ``[B, T]`` at the classifier's rate."""
        return self.mel(wavs.to(self.device).float())

    def normalise(self, logmel: torch.Tensor) -> torch.Tensor:
        return (logmel - self.mean[:, None]) / self.std[:, None]

    def prepare(self, wavs: np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Clips ``[n, T]`` (or one ``[T]``) at ``sample_rate`` → ``[n, samples]`` at the classifier's
        rate: resampled (soxr) when the rate differs, zero-padded or centre-cropped to 1 s."""
        from diffvoc.data.digits import fit_length

        x = np.asarray(wavs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] == 0:
            raise DiffvocError(f"the classifier takes clips [n, samples], got shape {tuple(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise DiffvocError("clips hold NaN or infinite samples")
        sr = self.cfg.sample_rate if sample_rate is None else int(sample_rate)
        if sr != self.cfg.sample_rate:
            import librosa

            x = librosa.resample(x, orig_sr=sr, target_sr=self.cfg.sample_rate, res_type="soxr_hq", axis=-1)
        return np.stack([fit_length(row, self.cfg.samples) for row in x]).astype(np.float32)

    @torch.inference_mode()
    def classify(self, wavs: np.ndarray, sample_rate: int | None = None, batch_size: int = 128) -> ClassifierOutput:
        """Logits, probabilities and penultimate features of clips ``[n, T]`` at ``sample_rate``."""
        x = self.prepare(wavs, sample_rate)
        self.net.eval()
        logits, feats = [], []
        for a in range(0, len(x), batch_size):
            lg, ft = self.net(self.normalise(self.log_mel(torch.from_numpy(x[a:a + batch_size]))))
            logits.append(lg.double().cpu().numpy())
            feats.append(ft.double().cpu().numpy())
        lg = np.concatenate(logits) if logits else np.zeros((0, self.cfg.n_classes))
        ft = np.concatenate(feats) if feats else np.zeros((0, self.cfg.feature_dim))
        return ClassifierOutput(lg, _softmax64(lg), ft)

    # ------------------------------------------------------------------------------ saving/loading
    def save(self, out: str | Path) -> Path:
        """Write ``out/classifier.safetensors`` and ``out/classifier.yaml`` atomically."""
        from safetensors.torch import save_file

        from diffvoc.io import atomic_dir, dump_yaml

        out = Path(out)
        _check_classifier_out(out)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.cfg),
            "normalisation": {"mean": [float(v) for v in self.mean.cpu()], "std": [float(v) for v in self.std.cpu()]},
            "info": plain(self.info),
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_dir(out) as tmp:
            save_file(state, str(tmp / WEIGHTS_NAME))
            (tmp / META_NAME).write_text(dump_yaml(meta, sort_keys=False))
        return out

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "DigitClassifier":
        """Read a classifier folder; a clear :class:`DiffvocError` when anything is missing or wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        p = Path(path)
        if not (p / META_NAME).is_file():
            raise DiffvocError(f"{p} is not a digit classifier (no {META_NAME}); "
                               "train one with `diffvoc classifier train --data DIGITS -o DIR`")
        from diffvoc.io import load_yaml

        meta = load_yaml(p / META_NAME, "classifier description") or {}
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DiffvocError(f"{p / META_NAME} is not a {FORMAT} file")
        if not isinstance(meta.get("format_version", 0), int) or isinstance(meta.get("format_version"), bool):
            raise DiffvocError(f"{p / META_NAME}: format_version must be a whole number")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise DiffvocError(f"{p / META_NAME} is format version {meta['format_version']}; "
                               f"this diffvoc reads up to {FORMAT_VERSION}")
        try:
            cfg = ClassifierConfig(**meta["config"])
            norm = meta["normalisation"]
            clf = cls(cfg, norm["mean"], norm["std"], meta.get("info") or {}, device)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise DiffvocError(f"{p / META_NAME}: bad classifier description ({type(e).__name__}: "
                               f"{str(e)[:120]})") from None
        if not (p / WEIGHTS_NAME).is_file():
            raise DiffvocError(f"missing {p / WEIGHTS_NAME}")
        try:
            state = load_file(str(p / WEIGHTS_NAME))
        except (SafetensorError, OSError, ValueError) as e:
            raise DiffvocError(f"{p / WEIGHTS_NAME} is corrupt ({str(e).splitlines()[0]})") from None
        own = clf.net.state_dict()
        if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            raise DiffvocError(f"{p / WEIGHTS_NAME} does not match {META_NAME}")
        clf.net.load_state_dict(state)
        clf.net.eval()
        clf.path = p
        return clf

    @property
    def train_label_distribution(self) -> np.ndarray | None:
        """p*(y): the label distribution of the real training set (for the AM score)."""
        p = self.info.get("train_label_distribution")
        return None if p is None else np.asarray(p, np.float64)


def _check_classifier_out(out: Path) -> None:
    """Refuse to replace a folder that is neither empty nor a classifier."""
    if out.exists() and not out.is_dir():
        raise DiffvocError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / META_NAME).is_file():
        raise DiffvocError(f"{out} is not empty and holds no classifier; give a new or empty folder")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise DiffvocError(f"cannot write {out}: folder {parent} is not writable")


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


AUGMENT = {"gain_db": 6.0, "noise_prob": 0.5, "noise_snr_db": [5.0, 40.0], "max_shift_frames": 15,
           "freq_mask": 6, "time_mask": 12, "mask_prob": 0.5}


def add_noise(wavs: torch.Tensor, snr_db: torch.Tensor | float, gen: torch.Generator | None = None) -> torch.Tensor:
    """``wavs`` ``[B, T]`` plus white Gaussian noise at ``snr_db`` (per clip) relative to each clip's
    mean power."""
    power = wavs.pow(2).mean(dim=-1, keepdim=True).clamp(min=1e-10)
    snr = torch.as_tensor(snr_db, dtype=wavs.dtype).reshape(-1, 1)
    noise = torch.randn(wavs.shape, generator=gen, dtype=wavs.dtype)
    return wavs + noise * torch.sqrt(power / 10 ** (snr / 10))


def _augment_wave(wavs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random gain (±6 dB) and, for half of the clips, white noise at 5–40 dB SNR: generated audio
    often carries a noise floor that clean synthetic training speech never has."""
    B = wavs.shape[0]
    a = AUGMENT
    gains = 10 ** ((torch.rand(B, 1, generator=gen) * 2 - 1) * a["gain_db"] / 20)
    lo, hi = a["noise_snr_db"]
    snr = lo + torch.rand(B, generator=gen) * (hi - lo)
    noisy = add_noise(wavs, snr, gen)
    pick = (torch.rand(B, 1, generator=gen) < a["noise_prob"]).to(wavs.dtype)
    return gains * (pick * noisy + (1 - pick) * wavs)


def _augment(logmel: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random circular time shift and, each with probability ½, one frequency and one time mask
    (set to the clip's minimum), on raw log-mels ``[B, M, F]``."""
    B, M, Fr = logmel.shape
    a = AUGMENT
    max_shift, freq_mask, time_mask = a["max_shift_frames"], a["freq_mask"], a["time_mask"]
    out = logmel.clone()
    shifts = torch.randint(-max_shift, max_shift + 1, (B,), generator=gen)
    for b in range(B):
        x = torch.roll(out[b], int(shifts[b]), dims=-1)
        floor = x.min()
        if torch.rand(1, generator=gen).item() < a["mask_prob"]:
            w = int(torch.randint(0, freq_mask + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, M - w + 1, (1,), generator=gen))
            x[f0:f0 + w] = floor
        if torch.rand(1, generator=gen).item() < a["mask_prob"]:
            w = int(torch.randint(0, time_mask + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, Fr - w + 1, (1,), generator=gen))
            x[:, t0:t0 + w] = floor
        out[b] = x
    return out


@torch.no_grad()
def _log_mels(clf: DigitClassifier, wavs: np.ndarray, batch: int = 256) -> torch.Tensor:
    return torch.cat([clf.log_mel(torch.from_numpy(wavs[a:a + batch])).cpu() for a in range(0, len(wavs), batch)])


@torch.no_grad()
def _accuracy(clf: DigitClassifier, mels: torch.Tensor, labels: torch.Tensor,
              batch: int = 256) -> tuple[float, np.ndarray]:
    clf.net.eval()
    preds = []
    for a in range(0, len(mels), batch):
        logits, _ = clf.net(clf.normalise(mels[a:a + batch].to(clf.device)))
        preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds)
    n = clf.cfg.n_classes
    conf = np.zeros((n, n), np.int64)
    np.add.at(conf, (labels.numpy(), pred.numpy()), 1)
    return float((pred == labels).float().mean()), conf


def train_classifier(data: str | Path, out: str | Path | None = None, *, epochs: int = 12, batch_size: int = 64,
                     learning_rate: float = 3e-3, weight_decay: float = 1e-4, label_smoothing: float = 0.02,
                     seed: int = 0,
                     cfg: ClassifierConfig | None = None, device: str | torch.device = "cpu",
                     progress: bool = True, log: Any = None) -> DigitClassifier:
    """Train the digit classifier on ``data/train``, keep the epoch with the best ``valid`` accuracy
    (the last one when there is no valid split) and report accuracy on ``test`` (held-out voices).

    AdamW with a one-cycle learning-rate schedule; cross-entropy with a little label smoothing, which
    bounds the classifier's confidence (the IS family reads it: with none, off-class probabilities
    fall to ~1e-8 on training voices and mIS of real data runs into the millions). Writes ``out``
    when given.
    """
    from diffvoc.data.digits import list_digit_clips, load_digit_clips

    cfg = cfg or ClassifierConfig()
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise DiffvocError("epochs and batch size must be at least 1, the learning rate positive")
    if not 0 <= label_smoothing < 1:
        raise DiffvocError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    if out is not None:
        _check_classifier_out(Path(out))
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    waves: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    probe = DigitClassifier(cfg, device=device)
    for split in ("train", "valid", "test"):
        try:
            clips = list_digit_clips(data, split)
        except DiffvocError:
            if split == "train":
                raise
            continue
        wavs, labels = load_digit_clips(clips, cfg.sample_rate, cfg.seconds)
        splits[split] = (_log_mels(probe, wavs), torch.from_numpy(labels))
        if split in ("train", "test"):
            waves[split] = torch.from_numpy(wavs)
        counts[split] = len(clips)
    mels, labels = splits["train"]
    if len(torch.unique(labels)) < 2:
        raise DiffvocError(f"{data}/train has clips of only one digit; the classifier needs several")
    mean = mels.mean(dim=(0, 2)).double().numpy()
    std = mels.std(dim=(0, 2)).clamp(min=1e-3).double().numpy()
    p_star = np.bincount(labels.numpy(), minlength=cfg.n_classes) / len(labels)
    clf = DigitClassifier(cfg, mean, std, device=device)
    say(f"classifier: {counts} clips; log-mel {tuple(mels.shape[1:])}; "
        f"{sum(p.numel() for p in clf.net.parameters())} parameters; {torch.get_num_threads()} thread(s)")

    steps_per_epoch = math.ceil(len(mels) / batch_size)
    opt = torch.optim.AdamW(clf.net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.2)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history = []
    for epoch in range(1, epochs + 1):
        clf.net.train()
        order = torch.randperm(len(mels), generator=gen)
        total, seen = 0.0, 0
        for a in range(0, len(order), batch_size):
            idx = order[a:a + batch_size]
            with torch.no_grad():
                x = clf.normalise(_augment(clf.log_mel(_augment_wave(waves["train"][idx], gen)).cpu(), gen)
                                  .to(clf.device))
            logits, _ = clf.net(x)
            loss = F.cross_entropy(logits, labels[idx].to(clf.device), label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": total / seen}
        for split in ("valid", "test"):
            if split in splits:
                row[f"{split}_accuracy"] = _accuracy(clf, *splits[split])[0]
        history.append(row)
        score = row.get("valid_accuracy", float(epoch))
        if best is None or score >= best[0]:
            best = (score, epoch, {k: v.detach().clone() for k, v in clf.net.state_dict().items()})
        if progress:
            say(f"epoch {epoch:3d}/{epochs}: loss {row['train_loss']:.4f}"
                + "".join(f", {s} acc {row[f'{s}_accuracy']:.4f}" for s in ("valid", "test") if f"{s}_accuracy" in row)
                + f" ({time.perf_counter() - t_start:.0f} s)")
    assert best is not None
    clf.net.load_state_dict(best[2])
    acc: dict[str, float] = {}
    confusion = None
    for split, (m, lab) in splits.items():
        acc[split], conf = _accuracy(clf, m, lab)
        if split == "test":
            confusion = conf
    noisy_acc: dict[str, float] = {}
    if "test" in waves:  # how much a noise floor in generated audio would cost
        g = torch.Generator().manual_seed(seed + 1)
        for snr in (30, 20, 10):
            m = _log_mels(clf, add_noise(waves["test"], float(snr), g).numpy())
            noisy_acc[str(snr)] = _accuracy(clf, m, splits["test"][1])[0]
    clf.info = {
        "data": str(Path(data).resolve()),
        "clips": counts,
        "classes": list(_class_names(cfg.n_classes)),
        "train_label_distribution": p_star.tolist(),
        "accuracy": acc,
        "test_is_held_out_voices": True,
        "test_accuracy_with_white_noise_at_snr_db": noisy_acc,
        "test_confusion": None if confusion is None else confusion.tolist(),
        "selected_epoch": best[1],
        "history": history,
        "training": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                     "weight_decay": weight_decay, "label_smoothing": label_smoothing, "augment": dict(AUGMENT),
                     "seed": seed, "threads": torch.get_num_threads(),
                     "device": str(clf.device), "seconds": round(time.perf_counter() - t_start, 1),
                     "torch": str(torch.__version__)},
    }
    clf.net.eval()
    if out is not None:
        clf.save(out)
    return clf


def _class_names(n: int) -> list[str]:
    from diffvoc.data.digits import DIGIT_WORDS

    return [DIGIT_WORDS[i] if i < len(DIGIT_WORDS) else str(i) for i in range(n)]


def evaluate_classifier(clf: DigitClassifier, data: str | Path, split: str = "test") -> dict[str, Any]:
    """Accuracy and confusion matrix of ``clf`` on a split of a digits corpus."""
    from diffvoc.data.digits import list_digit_clips, load_digit_clips

    clips = list_digit_clips(data, split)
    wavs, labels = load_digit_clips(clips, clf.cfg.sample_rate, clf.cfg.seconds)
    acc, conf = _accuracy(clf, _log_mels(clf, wavs), torch.from_numpy(labels))
    return {"split": split, "clips": len(clips), "accuracy": acc, "confusion": conf.tolist()}


