"""Corpus layouts, the feature cache, splits and random training crops.

``diffvoc preprocess SOURCE -o DATA`` reads one of three layouts:

* an LJSpeech-style folder (``metadata.csv`` + ``wavs/``; a 4th column, if present, is the speaker, a 5th
  the source kind, ``real`` for recorded speech or ``tts`` for synthetic; a ``splits/{train,valid,test}.txt``
  folder beside it, if present, gives the split),
* a folder of audio files (searched recursively: wav, flac, ogg),
* a file list (one path per line, relative to the list's folder; ``path|anything`` is accepted).

and writes ``DATA/dataset.yaml`` (items, split, skipped files with the reason) and
``DATA/features/<key>/`` with ``<id>.mel.npy`` (float32 [n_mels, frames]), ``<id>.wav.npy`` (int16
PCM, frames·hop samples) and ``stats.yaml`` (PriorGrad's energy range over the training split).
``<key>`` hashes the whole :class:`AudioConfig`, so a changed feature config never reuses stale
features. Training asks :func:`ensure_features` for its key and computes what is missing.

Each item's features are also keyed by its source file's content: ``features/<key>/sources.json`` holds
the size, ``mtime_ns`` and SHA-1 of the bytes each item was extracted from. A file whose size or
modification time changed is hashed again and re-extracted when its bytes differ (one that was only
touched is not), so a clip replaced under the same name never keeps its old mel. A cache written before
this index existed is adopted item by item when its features are newer than the source file.

Files longer than :func:`diffvoc.audio.max_seconds` (10 minutes by default) are skipped with that
reason, before their samples are read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffvoc.audio import compute_mel, frame_energy, load_audio, peak_normalize
from diffvoc.config import AudioConfig
from diffvoc.data.digits import DIGIT_WORDS
from diffvoc.errors import AudioError, DiffvocError
from diffvoc.io import atomic_save_npy, atomic_write_text, dump_yaml, load_json, load_yaml, read_text, remove_debris

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
DATASET = "dataset.yaml"
SOURCES = "sources.json"
SPLITS = ("train", "valid", "test")
RECORD_MAX_BYTES = 256 << 20  # dataset.yaml of a large corpus (LJSpeech: about 2 MB)


def discover(source: str | Path) -> tuple[list[dict[str, str]], dict[str, list[str]] | None]:
    """List the items of a corpus: ``[{id, path, speaker?}]`` and a given split (or ``None``)."""
    src = Path(source)
    if not src.exists():
        raise DiffvocError(f"no such corpus: {src}")
    items: list[dict[str, str]] = []
    split = None
    if src.is_file():
        base = src.parent
        for n, line in enumerate(read_text(src, "file list").splitlines()):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line.split("|")[0].strip())
            p = p if p.is_absolute() else base / p
            items.append({"id": _item_id(p, base), "path": str(p.resolve())})
    elif (src / "metadata.csv").is_file() and (src / "wavs").is_dir():
        with io.StringIO(read_text(src / "metadata.csv", "metadata file"), newline="") as f:
            for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
                if not row or not row[0].strip():
                    continue
                rid = row[0].strip()
                path = next((src / "wavs" / f"{rid}{ext}" for ext in AUDIO_EXTENSIONS
                             if (src / "wavs" / f"{rid}{ext}").exists()), src / "wavs" / f"{rid}.wav")
                item = {"id": rid, "path": str(path.resolve())}
                if len(row) >= 4 and row[3].strip():
                    item["speaker"] = row[3].strip()
                if len(row) >= 5 and row[4].strip():
                    item["kind"] = row[4].strip()  # "real" (recorded speech) or "tts" (diffvoc corpus real/mixed)
                items.append(item)
        if (src / "splits").is_dir():  # train/valid/test and any extra held-out lists (e.g. an unseen voice)
            split = {name: [] for name in SPLITS}
            for f in sorted((src / "splits").glob("*.txt")):
                split[f.stem] = read_text(f, "split list").split()
    elif _is_class_layout(src):  # SC09-like: SPLIT/CLASS/*.wav; labels are the sorted class names' indices
        classes = class_names(src)
        split = {name: [] for name in SPLITS}
        for sub in sorted(p for p in src.iterdir() if p.is_dir()):
            for label, cls in enumerate(classes):
                for p in sorted((sub / cls).glob("*")) if (sub / cls).is_dir() else []:
                    if p.suffix.lower() in AUDIO_EXTENSIONS:
                        rid = _item_id(p, src)
                        items.append({"id": rid, "path": str(p.resolve()), "label": label, "class": cls})
                        split.setdefault(sub.name, []).append(rid)
    else:
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        items = [{"id": _item_id(p, src), "path": str(p.resolve())} for p in files]
    if not items:
        raise DiffvocError(f"{src}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})")
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise DiffvocError(f"{src}: duplicate item ids")
    return items, split




def _is_class_layout(src: Path) -> bool:
    return (src / "train").is_dir() and any(p.is_dir() for p in (src / "train").iterdir())


def class_names(src: Path) -> list[str]:
    """Class folder names of an SC09-like corpus, in label order (zero..nine for digits, else sorted)."""
    found = sorted({p.name for sub in src.iterdir() if sub.is_dir() for p in sub.iterdir() if p.is_dir()})
    if set(found) <= set(DIGIT_WORDS):
        return [c for c in DIGIT_WORDS if c in found]
    return found


def _item_id(path: Path, base: Path) -> str:
    try:
        rel = path.resolve().relative_to(base.resolve())
    except ValueError:
        rel = Path(path.name)
    return str(rel.with_suffix("")).replace(os.sep, "__")


def make_split(ids: list[str], valid_fraction: float = 0.02, test_fraction: float = 0.02) -> dict[str, list[str]]:
    """A deterministic split by the hash of each id (stable when files are added)."""
    order = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    n = len(order)
    n_valid = max(1, round(n * valid_fraction)) if n >= 3 else 0
    n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
    return {"valid": sorted(order[:n_valid]), "test": sorted(order[n_valid:n_valid + n_test]),
            "train": sorted(order[n_valid + n_test:])}


def feature_dir(data_dir: str | Path, cfg: AudioConfig) -> Path:
    return Path(data_dir) / "features" / cfg.feature_key()


def source_key(path: str | Path) -> dict[str, Any]:
    """What an item's features are keyed by, besides the audio config: its file's size, ``mtime_ns`` and
    the SHA-1 of its bytes (read in blocks)."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha1": h.hexdigest()}


def _is_fresh(item: dict[str, Any], entry: dict[str, Any] | None, mel: Path) -> tuple[bool, dict[str, Any] | None]:
    """Whether ``item``'s cached features (``mel``) still match its source file, and the index entry to keep.

    Same size and ``mtime_ns`` as recorded: fresh. Otherwise the bytes are hashed: the same SHA-1 is fresh
    (the file was only touched). No entry (a cache older than the index): fresh if the features are newer
    than the file. A source file that is gone keeps its features (the corpus may have moved)."""
    if not mel.exists():
        return False, None
    try:
        st = Path(item["path"]).stat()
    except OSError:
        return True, entry
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return True, entry
    try:
        now = source_key(item["path"])
    except OSError:
        return True, entry
    if entry:
        return entry.get("sha1") == now["sha1"], now
    return mel.stat().st_mtime_ns >= st.st_mtime_ns, now


def _load_sources(out: Path) -> dict[str, dict[str, Any]]:
    """The content index of a feature folder (``{}`` when missing or not a mapping of mappings)."""
    if not (out / SOURCES).is_file():
        return {}
    try:
        index = load_json(out / SOURCES, "feature index")
    except DiffvocError:
        return {}
    if not isinstance(index, dict):
        return {}
    return {k: v for k, v in index.items() if isinstance(v, dict)}


def _extract(args: tuple[dict[str, str], dict[str, Any], str]) -> tuple[str, str | None, int, dict[str, Any] | None]:
    """Worker: compute and store one item's features; returns (id, error or None, frames, source key)."""
    item, cfg_dict, out = args
    torch.set_num_threads(1)
    cfg = AudioConfig(**cfg_dict)
    try:
        key = source_key(item["path"]) if Path(item["path"]).is_file() else None
        audio = peak_normalize(load_audio(item["path"], cfg.sample_rate), cfg.peak_normalize)
        pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
        audio = pcm.astype(np.float32) / 32767
        if len(audio) < cfg.n_fft:
            return item["id"], f"too short ({len(audio)} samples, need at least n_fft={cfg.n_fft})", 0, None
        mel = compute_mel(audio, cfg)
    except AudioError as e:
        return item["id"], str(e), 0, None
    except OSError as e:
        return item["id"], f"cannot read {item['path']}: {e.strerror or e}", 0, None
    frames = mel.shape[-1]
    need = frames * cfg.hop_length
    pcm = np.pad(pcm, (0, max(0, need - len(pcm))))[:need]
    atomic_save_npy(Path(out) / f"{item['id']}.wav.npy", pcm)
    atomic_save_npy(Path(out) / f"{item['id']}.mel.npy", mel)
    return item["id"], None, frames, key


def preprocess(source: str | Path, data_dir: str | Path, cfg: AudioConfig, jobs: int | None = None,
               valid_fraction: float = 0.02, test_fraction: float = 0.02, progress: bool = False) -> dict[str, Any]:
    """Discover a corpus, split it, and compute its features for ``cfg``. Returns the dataset record."""
    items, split = discover(source)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if split is not None:
        known = {it["id"] for it in items}
        split = {k: [i for i in v if i in known] for k, v in split.items()}
        listed = set().union(*map(set, split.values()))
        split["train"] = sorted(set(split["train"]) | (known - listed))
    record = {"source": str(Path(source).resolve()), "items": items, "split": split, "skipped": [],
              "split_fractions": {"valid": valid_fraction, "test": test_fraction}}
    atomic_write_text(data_dir / DATASET, dump_yaml(record, sort_keys=False))
    return ensure_features(data_dir, cfg, jobs=jobs, progress=progress)


def load_record(data_dir: str | Path) -> dict[str, Any]:
    """``DATA/dataset.yaml``, checked: items (each with a string ``id`` and ``path``), split, skipped files."""
    p = Path(data_dir) / DATASET
    if not p.is_file():
        raise DiffvocError(f"{data_dir} is not a preprocessed data folder (no {DATASET}); run `diffvoc preprocess`")
    return _check_record(load_yaml(p, "data set record", max_bytes=RECORD_MAX_BYTES), p)


def _check_record(record: Any, where: Path) -> dict[str, Any]:
    """The schema of ``dataset.yaml`` (a one-line error naming ``where`` otherwise)."""
    def bad(why: str) -> DiffvocError:
        return DiffvocError(f"{where}: not a data set record of `diffvoc preprocess` ({why}); run it again")

    if not isinstance(record, dict) or not isinstance(record.get("items"), list):
        raise bad("no list of items")
    if not all(isinstance(it, dict) and isinstance(it.get("id"), str) and isinstance(it.get("path"), str)
               for it in record["items"]):
        raise bad("every item needs a string id and path")
    split = record.get("split")
    if split is not None and not (isinstance(split, dict) and all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in split.values())):
        raise bad("split must map split names to lists of ids")
    skipped = record.setdefault("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(x, dict) and isinstance(x.get("id"), str) for x in skipped):
        raise bad("skipped must be a list of {id, path, reason}")
    if not isinstance(record.get("split_fractions", {}), dict):
        raise bad("split_fractions must be a mapping")
    return record


def ensure_features(data_dir: str | Path, cfg: AudioConfig, jobs: int | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Compute the features for ``cfg`` that are not cached yet, then the energy statistics."""
    data_dir = Path(data_dir)
    record = load_record(data_dir)
    out = feature_dir(data_dir, cfg)
    out.mkdir(parents=True, exist_ok=True)
    remove_debris(out)  # temporaries of an extraction that was killed
    atomic_write_text(out / "audio.yaml", dump_yaml(asdict(cfg), sort_keys=True))
    index = _load_sources(out)
    todo, fresh = [], {}
    for it in record["items"]:
        ok, entry = _is_fresh(it, index.get(it["id"]), out / f"{it['id']}.mel.npy")
        if ok:
            if entry is not None:
                fresh[it["id"]] = entry
        else:
            todo.append(it)
    skipped = {s["id"]: s["reason"] for s in record.get("skipped", [])}
    if todo:
        args = [(it, asdict(cfg), str(out)) for it in todo]
        jobs = jobs or min(len(todo), os.cpu_count() or 1)
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(jobs) as pool:
                results = pool.map(_extract, args, chunksize=8)
                results = list(_progress(results, len(todo), progress))
        else:
            results = [_extract(a) for a in _progress(args, len(todo), progress)]
        for rid, err, _, key in results:
            if err is not None:
                skipped[rid] = err
                for suffix in (".mel.npy", ".wav.npy"):  # features of an earlier version of the file
                    (out / f"{rid}{suffix}").unlink(missing_ok=True)
            else:
                skipped.pop(rid, None)
                if key is not None:
                    fresh[rid] = key
        by_id = {it["id"]: it["path"] for it in record["items"]}
        record["skipped"] = [{"id": k, "path": by_id.get(k, ""), "reason": v} for k, v in sorted(skipped.items())]
        atomic_write_text(data_dir / DATASET, dump_yaml(record, sort_keys=False))
    if record.get("split") is None:  # split the usable files only, once, by the hash of their ids
        fr = record.get("split_fractions", {})
        usable = [it["id"] for it in record["items"] if it["id"] not in skipped]
        record["split"] = make_split(usable, fr.get("valid", 0.02), fr.get("test", 0.02))
        atomic_write_text(data_dir / DATASET, dump_yaml(record, sort_keys=False))
    if todo or fresh != index:
        atomic_write_text(out / SOURCES, json.dumps(fresh, indent=0, sort_keys=True))
    train = [i for i in record["split"].get("train", []) if i not in skipped]
    if not train:
        raise DiffvocError(f"{data_dir}: no usable training files ({len(skipped)} skipped)")
    if not (out / "stats.yaml").exists() or todo:
        e_min, e_max = np.inf, -np.inf
        for rid in train:
            mel = torch.from_numpy(np.load(out / f"{rid}.mel.npy"))
            e = frame_energy(mel, cfg)
            e_min, e_max = min(e_min, float(e.min())), max(e_max, float(e.max()))
        stats = {"energy_min": e_min, "energy_max": e_max, "train_items": len(train)}
        atomic_write_text(out / "stats.yaml", dump_yaml(stats, sort_keys=True))
    return record


def load_stats(data_dir: str | Path, cfg: AudioConfig) -> dict[str, Any]:
    """The energy statistics of a data folder's features for ``cfg`` (checked like a checkpoint's)."""
    from diffvoc.checkpoint import check_stats

    p = feature_dir(data_dir, cfg) / "stats.yaml"
    return check_stats(load_yaml(p, "statistics file"), p)


def _progress(it, total, enabled):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="features", unit="file")


class CropDataset(torch.utils.data.Dataset):
    """Random training crops; item ``k`` of this dataset is the whole batch of training step ``k``.

    Every batch is a pure function of (seed, step, rank), so resuming at step N continues exactly.
    Files are drawn in proportion to their length; clips shorter than a crop are zero-padded
    (audio) and padded with the mel of silence, never dropped.
    """

    def __init__(self, data_dir: str | Path, cfg: AudioConfig, crop_frames: int, batch_size: int,
                 seed: int = 0, rank: int = 0, split: str = "train") -> None:
        record = load_record(data_dir)
        self.dir = feature_dir(data_dir, cfg)
        self.ids = split_ids(record, split)
        if not self.ids:
            raise DiffvocError(f"{data_dir}: the {split} split is empty")
        self.cfg, self.crop, self.batch_size, self.seed, self.rank = cfg, crop_frames, batch_size, seed, rank
        self.frames = np.array([np.load(self.dir / f"{i}.mel.npy", mmap_mode="r").shape[-1] for i in self.ids])
        w = np.maximum(self.frames, crop_frames).astype(np.float64)
        self.p = w / w.sum()
        self.pad_value = 0.0 if cfg.preset == "lmnt" else float(np.log(1e-5))
        by_id = {it["id"]: it for it in record["items"]}
        self.labels = np.array([int(by_id[i].get("label", -1)) for i in self.ids], np.int64)

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(audio [B, crop·hop], mel [B, n_mels, crop], label [B]: −1 where the corpus has no classes)."""
        rng = np.random.default_rng([self.seed, step, self.rank])
        hop, crop = self.cfg.hop_length, self.crop
        audio = np.zeros((self.batch_size, crop * hop), np.float32)
        mel = np.full((self.batch_size, self.cfg.n_mels, crop), self.pad_value, np.float32)
        picks = rng.choice(len(self.ids), size=self.batch_size, p=self.p)
        for b, k in enumerate(picks):
            rid, n = self.ids[k], int(self.frames[k])
            start = int(rng.integers(0, max(n - crop, 0) + 1))
            m = np.load(self.dir / f"{rid}.mel.npy", mmap_mode="r")[:, start:start + crop]
            a = np.load(self.dir / f"{rid}.wav.npy", mmap_mode="r")[start * hop:(start + crop) * hop]
            mel[b, :, :m.shape[-1]] = m
            audio[b, :len(a)] = a.astype(np.float32) / 32767
        return torch.from_numpy(audio), torch.from_numpy(mel), torch.from_numpy(self.labels[picks])


def split_ids(record: dict[str, Any], split: str) -> list[str]:
    """The ids of a split, without the files preprocessing skipped."""
    skipped = {s["id"] for s in record.get("skipped", [])}
    return [i for i in record["split"].get(split, []) if i not in skipped]


def item_labels(data_dir: str | Path, ids: list[str]) -> list[int]:
    """Class labels of items (−1 for a corpus without classes)."""
    by_id = {it["id"]: int(it.get("label", -1)) for it in load_record(data_dir)["items"]}
    return [by_id.get(i, -1) for i in ids]


def real_first(record: dict[str, Any], ids: list[str]) -> list[str]:
    """``ids`` with the real recordings (items of kind ``real``) first, each group in its given order.

    The trainer validates on the first clips of the ``valid`` split (:func:`load_clips`), so a corpus
    with real held-out speech (``diffvoc corpus real`` or ``mixed``) gives real-speech validation curves.
    """
    real = {it["id"] for it in record["items"] if it.get("kind") == "real"}
    return [i for i in ids if i in real] + [i for i in ids if i not in real]


def load_clips(data_dir: str | Path, cfg: AudioConfig, split: str, count: int,
               seconds: float | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``count`` items of a split as (id, audio float32, mel), cut to ``seconds``.

    Real recordings come first (:func:`real_first`): when the split holds at least ``count`` of them,
    every clip is real speech.
    """
    d = feature_dir(data_dir, cfg)
    out = []
    record = load_record(data_dir)
    for rid in real_first(record, split_ids(record, split))[:count]:
        mel = np.load(d / f"{rid}.mel.npy")
        if seconds:
            mel = mel[:, : max(1, int(seconds * cfg.sample_rate / cfg.hop_length))]
        audio = np.load(d / f"{rid}.wav.npy")[: mel.shape[-1] * cfg.hop_length].astype(np.float32) / 32767
        out.append((rid, audio, mel))
    return out
