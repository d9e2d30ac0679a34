"""``diffvoc evaluate``: copy-synthesis of a test set, scored with objective metrics.

For every checkpoint × step count, each test utterance is analysed into the model's own mel
(read, resampled and peak-normalised exactly as :meth:`Vocoder.analyse_file` does), vocoded, timed
and scored against the reference with :func:`diffvoc.evaluation.metrics.evaluate_pair` (log-mel L1 on the
model's mel). Two context systems use the same utterances: ``reference`` (only its DNSMOS, as the
intrusive metrics of a signal against itself are trivial) and ``griffin-lim`` (32 iterations from the
same mel). The results JSON holds the run's metadata, one row per system × utterance and a summary
per system (mean and 95% CI half width of every metric, real-time factor and peak memory); a
Markdown table is written beside it and printed.

Timing: each utterance is vocoded alone (batch 1) after one untimed warm-up call per system; the
real-time factor is compute seconds / audio seconds (CUDA is synchronised around the call).
Peak memory, the largest over a system's utterances, measured around synthesis only (not scoring):
on CUDA ``torch.cuda.max_memory_allocated`` reset before each call (tensors only, model weights
included); on CPU the process's peak RSS, reset on Linux through ``/proc/self/clear_refs`` and
read from ``VmHWM``, else ``resource.getrusage`` ``ru_maxrss`` (the peak since the process started,
which includes everything done before). Which one was used is recorded with the value.
"""

from __future__ import annotations

import math
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import diffvoc.evaluation.metrics as M
from diffvoc.audio import compute_mel, load_audio, mel_to_linear, peak_normalize
from diffvoc.checkpoint import LATEST, Checkpoint, load_checkpoint
from diffvoc.config import AudioConfig
from diffvoc.data.dataset import DATASET, discover, feature_dir, load_record, split_ids
from diffvoc.errors import AudioError, DiffvocError, ScheduleError
from diffvoc.evaluation.metric_inputs import require
from diffvoc.evaluation.results import FORMAT, FORMAT_VERSION, summarise
from diffvoc.io import atomic_dir, atomic_write_wav, cpu_name, load_json

__all__ = [
    "Utterance",
    "evaluate",
    "griffin_lim",
    "load_utterances",
    "parse_steps",
]

GRIFFIN_LIM_ITERS = 32
# Optional packages each metric group needs (checked before any work is done).
_NEEDS: dict[str, tuple[str, ...]] = {"mcd": ("pyworld", "pysptk"), "f0": ("pyworld",), "pesq": ("pesq",),
                                      "stoi": ("pystoi",), "estoi": ("pystoi",), "dnsmos": ("speechmos.dnsmos",)}


def metric_keys(groups: list[str]) -> list[str]:
    """The result keys the metric groups produce, in report order."""
    return [k for g in M.ALL_METRICS if g in groups for k in M.METRIC_SETTINGS[g]["keys"]]


# ---------------------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------------------


def parse_steps(text: str) -> list[int]:
    """``"2,6,50"`` → ``[2, 6, 50]`` (positive integers, duplicates removed, order kept)."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise DiffvocError(f"--steps must be positive integers separated by commas, got {text!r}")
        if int(part) not in out:
            out.append(int(part))
    return out


def parse_metrics(text: str) -> list[str]:
    """``"mr_stft,pesq"`` → metric groups in report order; unknown names are an error."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in M.ALL_METRICS]
    if unknown or not names:
        raise DiffvocError(f"unknown metric {unknown[0] if unknown else repr(text)}; "
                           f"choose from {','.join(M.ALL_METRICS)}")
    return [g for g in M.ALL_METRICS if g in names]


def _check_metric_packages(groups: list[str]) -> None:
    for g in groups:
        for module in _NEEDS.get(g, ()):
            require(module)  # raises a DiffvocError naming the pip install


def step_mode(ck: Checkpoint, steps: int, label: str) -> bool:
    """Whether ``steps`` means the full ancestral sampler (the training T) or a stored fast schedule."""
    d = ck.config.diffusion
    if steps == d.steps:
        return True
    if steps in d.fast_schedules:
        return False
    avail = ", ".join([str(s) for s in sorted(d.fast_schedules)] + [f"{d.steps} (full)"])
    raise ScheduleError(f"{label}: no {steps}-step schedule is stored with this checkpoint "
                        f"(available step counts: {avail})")


def checkpoint_label(given: str | Path) -> str:
    """A short name: a run folder's name, ``<run>-ckpt-N`` inside a run, else the folder's (or file's) name."""
    p = Path(given).resolve()
    if p.is_file():
        return p.parent.name if p.stem in ("weights", "model") and p.parent.name else p.stem
    if (p / LATEST).is_file():
        return p.name
    if re.fullmatch(r"ckpt-\d+", p.name) and (p.parent / LATEST).is_file():
        return f"{p.parent.name}-{p.name}"
    return p.name


def safe_name(label: str) -> str:
    """A label made safe as a folder name and a relative URL."""
    return re.sub(r"[^\w.@+=-]", "_", label) or "_"


def _unique(labels: list[str]) -> list[str]:
    out: list[str] = []
    for lab in labels:
        new, k = lab, 2
        while new in out:
            new, k = f"{lab}-{k}", k + 1
        out.append(new)
    return out


def config_summary(ck: Checkpoint) -> dict[str, Any]:
    """What a reader of the results needs to know about a checkpoint."""
    c = ck.config
    step = None
    if ck.path is not None and (Path(ck.path) / "train_state.json").is_file():
        try:
            step = load_json(Path(ck.path) / "train_state.json", "training state").get("step")
        except (DiffvocError, AttributeError):
            step = None
    return {
        "audio": asdict(c.audio), "audio_key": c.audio.feature_key(),
        "model": asdict(c.model), "parameters": int(sum(v.numel() for v in ck.weights.values())),
        "prior": c.prior.kind, "diffusion_steps": c.diffusion.steps,
        "beta": [c.diffusion.beta_start, c.diffusion.beta_end], "loss": c.diffusion.loss,
        "stored_schedules": sorted(c.diffusion.fast_schedules), "train_step": step,
        "format": ck.extras.get("format", "diffvoc"),
    }


# ---------------------------------------------------------------------------------------------------
# Test set
# ---------------------------------------------------------------------------------------------------


@dataclass
class Utterance:
    """A test utterance at the model's rate: the reference waveform and its mel (whole frames)."""

    id: str
    path: str
    audio: np.ndarray
    mel: np.ndarray

    def seconds(self, sample_rate: int) -> float:
        return len(self.audio) / sample_rate


def list_test_items(source: str | Path, split: str | None) -> tuple[list[dict[str, str]], str | None, str]:
    """Items ``[{id, path}]`` of a test set in a deterministic order, the split used and a description.

    A ``diffvoc preprocess`` folder gives its ``split`` (default ``test``) minus skipped files; an
    audio folder, LJSpeech folder or file list gives every file (or its ``splits/<split>.txt``).
    """
    src = Path(source)
    if not src.exists():
        raise DiffvocError(f"no such test set: {src}")
    if src.is_dir() and (src / DATASET).is_file():
        record = load_record(src)
        name = split or "test"
        splits = record.get("split") or {}
        if name not in splits:
            raise DiffvocError(f"{src}: no {name!r} split (have {', '.join(sorted(splits)) or 'none'})")
        by_id = {it["id"]: it for it in record["items"]}
        items = [by_id[i] for i in split_ids(record, name) if i in by_id]
        if not items:
            raise DiffvocError(f"{src}: the {name} split is empty")
        return items, name, f"{src.resolve()} ({name} split of a preprocessed folder)"
    items, given = discover(src)
    if split is None:
        return items, None, f"{src.resolve()} (all {len(items)} files)"
    if given is None:
        raise DiffvocError(f"{src} has no split lists (splits/<name>.txt); omit --split to use every file")
    ids = set(given.get(split, []))
    items = [it for it in items if it["id"] in ids]
    if not items:
        raise DiffvocError(f"{src}: the {split} split is empty")
    return items, split, f"{src.resolve()} ({split} split)"


def load_utterances(items: list[dict[str, str]], cfg: AudioConfig,
                    data_dir: str | Path | None = None) -> list[Utterance]:
    """Read each item as :meth:`Vocoder.analyse_file` does: resample, peak-normalise, pad to whole
    frames, mel. A file that is gone is read from the feature cache of ``data_dir`` when present."""
    out = []
    cache = feature_dir(data_dir, cfg) if data_dir is not None else None
    for it in items:
        path = Path(it["path"])
        if path.exists() or cache is None or not (cache / f"{it['id']}.wav.npy").is_file():
            audio = peak_normalize(load_audio(path, cfg.sample_rate), cfg.peak_normalize)
        else:
            audio = np.load(cache / f"{it['id']}.wav.npy").astype(np.float32) / 32767
        padded = np.pad(audio, (0, -len(audio) % cfg.hop_length))
        try:
            mel = compute_mel(padded, cfg)
        except AudioError as e:
            raise AudioError(f"{path}: {e}") from None
        out.append(Utterance(it["id"], str(path), audio, mel))
    return out


# ---------------------------------------------------------------------------------------------------
# Systems: Griffin-Lim, timing, memory
# ---------------------------------------------------------------------------------------------------


def griffin_lim(mel: np.ndarray, cfg: AudioConfig, length: int, seed: int = 0,
                n_iter: int = GRIFFIN_LIM_ITERS) -> np.ndarray:
    """Griffin-Lim from a model mel (librosa's ``mel_to_audio`` in its two stages, seeded).

    The log is inverted (``exp`` for ``hifigan``; the dB mapping and the window normalisation for
    ``lmnt``), the mel filterbank is inverted by NNLS (``mel_to_stft``, power 1.0), then ``n_iter``
    Griffin-Lim iterations with a centred STFT. For ``hifigan`` mels (uncentred, padded by
    (n_fft − hop)/2) the result is shifted by n_fft/2 − (n_fft − hop)//2 samples to line up in time.
    The output is clipped to [-1, 1].
    """
    import librosa

    lin = mel_to_linear(torch.from_numpy(np.asarray(mel, np.float32)), cfg).numpy().astype(np.float64)
    htk = cfg.preset == "lmnt"
    if htk:
        lin = lin * float(np.sqrt(np.sum(np.hanning(cfg.win_length + 1)[:-1] ** 2)))
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2
    spec = librosa.feature.inverse.mel_to_stft(lin, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0,
                                               fmin=cfg.fmin, fmax=fmax, htk=htk, norm=None if htk else "slaney")
    y = librosa.griffinlim(spec, n_iter=n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
                           n_fft=cfg.n_fft, window="hann", center=True, random_state=seed)
    shift = 0 if htk else cfg.n_fft // 2 - (cfg.n_fft - cfg.hop_length) // 2
    out = np.zeros(length, np.float32)
    seg = y[: max(0, length - shift)]
    out[shift:shift + len(seg)] = seg
    return np.clip(out, -1.0, 1.0)  # scored as it is heard from a 16-bit file


class PeakMemory:
    """Peak memory of one system: CUDA allocator peak, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.resettable = False
        if not self.cuda and sys.platform.startswith("linux"):
            self.resettable = self._clear_refs() and self._hwm_kib() is not None

    @property
    def kind(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated during synthesis (tensors, model included)"
        if self.resettable:
            return "peak RSS of the process during synthesis (VmHWM, reset via /proc/self/clear_refs)"
        return "peak RSS of the process since it started (resource.getrusage ru_maxrss; cannot be reset)"

    @staticmethod
    def _clear_refs() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _hwm_kib() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            self._clear_refs()

    def peak_mib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.resettable:
            kib = self._hwm_kib()
            if kib is not None:
                return kib / 1024
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


def _timed(fn: Callable[[], np.ndarray], device: torch.device) -> tuple[np.ndarray, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def score(ref: np.ndarray, deg: np.ndarray, sr: int, mel_fn: Callable[[np.ndarray], Any],
          groups: list[str]) -> tuple[dict[str, float], list[str]]:
    """All metric groups for one pair; a group that fails on this audio gives NaN and a note."""
    try:
        return M.evaluate_pair(ref, deg, sr, mel_fn, set(groups)), []
    except AudioError:
        pass
    out: dict[str, float] = {}
    notes: list[str] = []
    for g in groups:
        try:
            out.update(M.evaluate_pair(ref, deg, sr, mel_fn, {g}))
        except AudioError as e:
            out.update({k: math.nan for k in M.METRIC_SETTINGS[g]["keys"]})
            notes.append(f"{g}: {e}")
    return out, notes


@contextmanager
def _audio_sink(root: Path | None, name: str) -> Iterator[Path | None]:
    """A temporary folder that becomes ``root/name`` when the system is done (or nothing)."""
    if root is None:
        yield None
        return
    with atomic_dir(root / name) as tmp:
        yield tmp


# ---------------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------------


def evaluate(checkpoints: list[str], data: str | Path, *, split: str | None = None, steps: list[int] | None = None,
             limit: int | None = None, seed: int = 0, device: str = "cpu", metrics: list[str] | None = None,
             with_griffin_lim: bool = True, save_audio: str | Path | None = None, command: str | None = None,
             log: Callable[[str], None] | None = print, precision: str = "auto") -> dict[str, Any]:
    """Run the evaluation and return the results (``meta``, ``rows``, ``summary``) as plain data.

    Everything that can be checked (metric names and packages, checkpoints, step counts, the test
    set) is checked before the first utterance is vocoded.
    """
    log = log or (lambda s: None)
    steps = steps or [6]
    groups = list(metrics) if metrics is not None else list(M.ALL_METRICS)
    _check_metric_packages(groups)
    if limit is not None and limit < 1:
        raise DiffvocError(f"--limit must be at least 1, got {limit}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffvocError("--device cuda asked for, but CUDA is not available")
    cks = [load_checkpoint(c) for c in checkpoints]
    labels = _unique([checkpoint_label(c) for c in checkpoints])
    modes = {(i, s): step_mode(ck, s, labels[i]) for i, ck in enumerate(cks) for s in steps}
    for ck, lab in zip(cks, labels):
        if ck.config.model.conditioning != "mel":
            raise DiffvocError(f"{lab}: this model is not mel-conditioned; it cannot do copy-synthesis")
    items, split, described = list_test_items(data, split)
    items = items[:limit] if limit else items
    data_dir = Path(data) if (Path(data) / DATASET).is_file() else None
    save_root = Path(save_audio).resolve() if save_audio is not None else None
    if save_root is not None:
        try:
            save_root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DiffvocError(f"cannot create the audio folder {save_root}: {e.strerror}") from None
        if not os.access(save_root, os.W_OK):
            raise DiffvocError(f"cannot write into the audio folder {save_root}")

    # Checkpoints that share an audio config share the references and the context systems.
    by_audio: dict[str, list[int]] = {}
    for i, ck in enumerate(cks):
        by_audio.setdefault(ck.config.audio.feature_key(), []).append(i)
    several = len(by_audio) > 1
    rows: list[dict[str, Any]] = []
    systems: list[dict[str, Any]] = []
    memory = PeakMemory(dev)

    def add_system(label: str, kind: str, key: str, **extra: Any) -> dict[str, Any]:
        sysinfo = {"system": label, "kind": kind, "audio_key": key, "folder": safe_name(label), **extra}
        systems.append(sysinfo)
        return sysinfo

    for key, members in by_audio.items():
        cfg = cks[members[0]].config.audio
        sr = cfg.sample_rate
        utts = load_utterances(items, cfg, data_dir)
        mel_fn = _mel_fn(cfg)
        suffix = f"-{key}" if several else ""
        u0 = utts[0]
        warm = Utterance(u0.id, u0.path, u0.audio[: 32 * cfg.hop_length], u0.mel[:, :32])

        ref = add_system(f"reference{suffix}", "reference", key)
        with _audio_sink(save_root, ref["folder"]) as sink:
            for u in utts:
                vals = {f"dnsmos_{k}": v for k, v in M.dnsmos(u.audio, sr).items()} if "dnsmos" in groups else {}
                rows.append(_row(ref, u, sr, vals, [], None))
                if sink is not None:
                    atomic_write_wav(sink / f"{safe_name(u.id)}.wav", u.audio, sr)
        log(f"{ref['system']}: {len(utts)} utterances from {described}")

        if with_griffin_lim:
            gl = add_system(f"griffin-lim{suffix}", "griffin-lim", key, iterations=GRIFFIN_LIM_ITERS)
            _run_system(gl, utts, sr, lambda u: griffin_lim(u.mel, cfg, len(u.audio), seed),
                        torch.device("cpu"), PeakMemory(torch.device("cpu")), mel_fn, groups, rows, save_root, log,
                        warm)

        for i in members:
            from diffvoc.inference.vocoder import Vocoder

            vocoder = Vocoder.from_checkpoint(cks[i], dev, precision=precision)
            for s in steps:
                full = modes[(i, s)]
                model = add_system(f"{labels[i]}@{s}", "model", key, checkpoint=labels[i], steps=s, full=full,
                                   precision=vocoder.precision)

                def synth(u: Utterance, s: int = s, full: bool = full) -> np.ndarray:
                    return vocoder.vocode(u.mel, steps=None if full else s, full=full, seed=seed)[: len(u.audio)]

                _run_system(model, utts, sr, synth, dev, memory, mel_fn, groups, rows, save_root, log, warm)

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "meta": _meta(cks, checkpoints, labels, steps, dev, groups, described, split, items, seed,
                      save_root, command, memory, with_griffin_lim),
        "systems": systems,
        "rows": rows,
        "summary": summarise(systems, rows, metric_keys(groups)),
    }


def _mel_fn(cfg: AudioConfig) -> Callable[[np.ndarray], np.ndarray]:
    def mel(audio: np.ndarray) -> np.ndarray:
        return compute_mel(audio, cfg)

    return mel


def _row(sysinfo: dict[str, Any], u: Utterance, sr: int, values: dict[str, float], notes: list[str],
         rtf: float | None) -> dict[str, Any]:
    row = {"system": sysinfo["system"], "id": u.id, "seconds": round(u.seconds(sr), 4), "rtf": rtf,
           "metrics": values}
    if notes:
        row["notes"] = notes
    return row


def _run_system(sysinfo: dict[str, Any], utts: list[Utterance], sr: int, synth: Callable[[Utterance], np.ndarray],
                dev: torch.device, memory: PeakMemory, mel_fn: Callable[[np.ndarray], Any], groups: list[str],
                rows: list[dict[str, Any]], save_root: Path | None, log: Callable[[str], None],
                warmup: Utterance | None) -> None:
    """Synthesise, time and score every utterance with one system; store its wavs if asked."""
    if warmup is not None:  # first-call costs (imports, allocations, kernel selection) are not timed
        synth(warmup)
    rtfs, peak = [], 0.0
    with _audio_sink(save_root, sysinfo["folder"]) as sink:
        for u in utts:
            memory.start()  # the peak is taken over synthesis only, not over the scoring
            wav, secs = _timed(lambda: synth(u), dev)
            peak = max(peak, memory.peak_mib())
            if not np.all(np.isfinite(wav)):
                raise DiffvocError(f"{sysinfo['system']}: non-finite samples in the output for {u.id}")
            rtf = secs / max(u.seconds(sr), 1e-9)
            rtfs.append(rtf)
            values, notes = score(u.audio, wav, sr, mel_fn, groups)
            rows.append(_row(sysinfo, u, sr, values, notes, rtf))
            if sink is not None:
                atomic_write_wav(sink / f"{safe_name(u.id)}.wav", wav, sr)
    sysinfo["peak_memory_mb"] = round(peak, 1)
    sysinfo["peak_memory_kind"] = memory.kind
    sysinfo["device"] = str(dev)
    log(f"{sysinfo['system']}: {len(utts)} utterances, mean RTF {np.mean(rtfs) if rtfs else math.nan:.4f}, "
        f"peak memory {sysinfo['peak_memory_mb']:.0f} MiB")


def _meta(cks: list[Checkpoint], given: list[str], labels: list[str], steps: list[int], dev: torch.device,
          groups: list[str], described: str, split: str | None, items: list[dict[str, str]], seed: int,
          save_root: Path | None, command: str | None, memory: PeakMemory, with_gl: bool) -> dict[str, Any]:
    from diffvoc import __version__

    audio_configs = {ck.config.audio.feature_key(): asdict(ck.config.audio) for ck in cks}
    srs = sorted({ck.config.audio.sample_rate for ck in cks})
    return {
        "created": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "command": command,
        "diffvoc_version": __version__, "torch_version": torch.__version__, "python": sys.version.split()[0],
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "checkpoints": [{"label": lab, "path": str(Path(g).resolve()),
                         "resolved": str(Path(ck.path).resolve()) if ck.path is not None else None,
                         "config": config_summary(ck)}
                        for g, lab, ck in zip(given, labels, cks)],
        "audio_configs": audio_configs,
        "steps": steps, "seed": seed, "metrics": groups, "griffin_lim": with_gl,
        "data": described, "split": split, "utterances": [it["id"] for it in items],
        "save_audio": str(save_root) if save_root is not None else None,
        "timing": "each utterance vocoded alone (batch 1) after one untimed warm-up per system; "
                  "RTF = compute seconds / audio seconds",
        "peak_memory": memory.kind,
        "metric_settings": {str(sr): M.metric_settings(sr, mel_fn_given=True) for sr in srs},
    }


