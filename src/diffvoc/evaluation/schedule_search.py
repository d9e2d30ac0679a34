"""Few-step schedule search: ``diffvoc search-schedule --checkpoint CKPT --steps N [--data DATA]``.

Finds an N-step inference schedule η_1..η_N (noisiest last) for a trained model that minimises

    objective(η) = MR-STFT(x̂_0(η), x_0) + log-mel L1(x̂_0(η), x_0)

averaged over held-out clips (the ``valid`` split by default), where x̂_0(η) is the model's fast
sampling with η (:class:`~diffvoc.diffusion.sampler.DiffusionSampler`, the same as ``diffvoc vocode``) from
fixed noise (:class:`~diffvoc.diffusion.sampler.PositionalNoise` with seed ``seed + clip index``), so that
every candidate is judged on the same draws. MR-STFT is Parallel WaveGAN's MR-STFT, Yamamoto et al., ICASSP 2020 (spectral convergence +
log-magnitude, FFT 1024/2048/512, hop 120/240/50, window 600/1200/240); log-mel L1 is on the
model's own mel.

Two searches:

* ``grid`` (WaveGrad-style): every increasing combination of per-step candidates, ``points``
  log-spaced values per step inside a per-step range (``infer.general_ranges[N]`` when the config
  has one, else a factor √10 either side of the start schedule); schedules outside the training
  range are skipped; at most ``max_evals`` combinations (a fixed random subset when there are more).
* ``local`` (cheaper): coordinate descent in log η from the stored (default) schedule: try each
  η_n × e^{±δ} in turn, keep the first improvement, halve δ when a sweep finds none; δ starts at
  ln 2 and stops below ln 2 / 8 or after ``max_evals`` evaluations.
* ``both``: the grid, then the local search from the grid's best.

The searched schedule (rounded to 3 significant digits, never worse on the search clips than the
start, which is always evaluated) is written into the checkpoint's ``config.yaml`` under
``diffusion.fast_schedules[N]`` (an atomic rename), so ``diffvoc vocode --steps N`` and
``Vocoder.vocode(steps=N)`` use it. A run directory means its newest checkpoint.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffvoc.config import FAST_SCHEDULES, Config
from diffvoc.errors import DiffvocError, ScheduleError

__all__ = ["ScheduleObjective", "SearchResult", "grid_search", "initial_schedule",
           "local_search", "search_schedule", "write_schedule"]


def _round(betas: Sequence[float], digits: int = 3) -> list[float]:
    return [float(f"{b:.{digits}g}") for b in betas]


def is_valid(betas: Sequence[float], cfg: Config) -> bool:
    """Increasing, in (0, 1) and inside the training range (so that every step can be aligned:
    :meth:`NoiseSchedule.outside`)."""
    if any(not 0 < b < 1 for b in betas) or any(b2 <= b1 for b1, b2 in zip(betas, betas[1:])):
        return False
    return cfg.diffusion.schedule().outside(list(betas)) is None


def initial_schedule(cfg: Config, n: int) -> list[float]:
    """The schedule a search starts from: the stored N-step one, else :data:`FAST_SCHEDULES`, else
    η log-spaced from 1e-4 to 0.5 (shrunk until it fits the training range)."""
    if n in cfg.diffusion.fast_schedules:
        return list(cfg.diffusion.fast_schedules[n])
    if n in FAST_SCHEDULES and is_valid(FAST_SCHEDULES[n], cfg):
        return list(FAST_SCHEDULES[n])
    lo = max(1e-4, cfg.diffusion.beta_start)
    top = 0.5
    for _ in range(60):
        betas = _round(np.geomspace(lo, top, n)) if n > 1 else [top]
        if is_valid(betas, cfg):
            return betas
        top *= 0.9
    raise ScheduleError(f"cannot build a valid {n}-step start schedule for this training schedule")


@dataclass
class Evaluation:
    """One schedule's metrics on the search clips."""

    betas: list[float]
    mr_stft: float
    log_mel_l1: float

    @property
    def objective(self) -> float:
        return self.mr_stft + self.log_mel_l1


class ScheduleObjective:
    """MR-STFT + log-mel L1 of a model's fast sampling on fixed clips and fixed noise (cached).

    Args:
        vocoder: a loaded :class:`~diffvoc.inference.vocoder.Vocoder`.
        clips: ``(id, audio float32 [T], mel [n_mels, frames])`` as from :func:`diffvoc.data.dataset.load_clips`.
        seed: clip i uses ``PositionalNoise(seed + i)``.
    """

    def __init__(self, vocoder: Any, clips: list[tuple[str, np.ndarray, np.ndarray]], seed: int = 0) -> None:
        from diffvoc.audio import MelSpectrogram
        from diffvoc.diffusion.spectral import MultiResolutionSTFTLoss

        if not clips:
            raise DiffvocError("no clips to search the schedule on")
        self.vocoder, self.seed = vocoder, int(seed)
        self.cfg: Config = vocoder.config
        self.mr = MultiResolutionSTFTLoss().to(vocoder.device)
        self.mel_fn = MelSpectrogram(self.cfg.audio).to(vocoder.device)
        self.items = []
        with torch.inference_mode():
            for i, (_, audio, mel) in enumerate(clips):
                if len(audio) < self.mr.min_length:
                    raise DiffvocError(f"clip {i} has {len(audio)} samples; MR-STFT needs >= {self.mr.min_length}")
                a = torch.from_numpy(audio).unsqueeze(0).to(vocoder.device)
                m = torch.from_numpy(mel).unsqueeze(0).to(vocoder.device)
                cond = vocoder.model.condition(vocoder.prior.conditioner(m))
                self.items.append((a, m, cond, vocoder.prior.std(m, a.shape[-1])))
        self.cache: dict[tuple[float, ...], Evaluation] = {}
        self.evaluations = 0

    def __call__(self, betas: Sequence[float]) -> Evaluation:
        """Metrics of one schedule (``inf`` when it is invalid for this model)."""
        from diffvoc.diffusion.noise import PositionalNoise
        from diffvoc.diffusion.sampler import DiffusionSampler
        from diffvoc.diffusion.spectral import log_mel_l1

        key = tuple(float(b) for b in betas)
        if key in self.cache:
            return self.cache[key]
        if not is_valid(key, self.cfg):
            ev = Evaluation(list(key), math.inf, math.inf)
            self.cache[key] = ev
            return ev
        sampler = DiffusionSampler.fast(self.vocoder.schedule, list(key), self.cfg.diffusion.clamp)
        model = self.vocoder.model
        mrs, l1s = [], []
        with torch.inference_mode():
            for i, (a, m, cond, std) in enumerate(self.items):
                x = sampler.sample(lambda x, t: model.denoise(x, t, cond), std, 1, a.shape[-1],
                                   PositionalNoise(self.seed + i), device=self.vocoder.device)
                sc, mag = self.mr(x.float(), a.float())
                mrs.append(float(sc + mag))
                l1s.append(float(log_mel_l1(self.mel_fn(x.float()), m)))
        self.evaluations += 1
        ev = Evaluation(list(key), float(np.mean(mrs)), float(np.mean(l1s)))
        self.cache[key] = ev
        return ev


def _step_ranges(cfg: Config, start: list[float]) -> list[list[float]]:
    n = len(start)
    if n in cfg.infer.general_ranges:
        return [list(r) for r in cfg.infer.general_ranges[n]]
    f = math.sqrt(10.0)
    return [[b / f, min(b * f, 0.95)] for b in start]


def grid_search(objective: Callable[[Sequence[float]], Evaluation], cfg: Config, start: list[float],
                points: int = 4, max_evals: int = 64, seed: int = 0,
                ranges: list[list[float]] | None = None) -> Evaluation:
    """WaveGrad-style grid: every increasing, valid combination of ``points`` log-spaced candidates
    per step (within ``ranges``); a fixed random subset of ``max_evals`` if there are more. The
    start schedule is always evaluated too; returns the best."""
    ranges = ranges or _step_ranges(cfg, start)
    cands = [_round(np.geomspace(lo, hi, points)) if hi > lo else [lo] for lo, hi in ranges]
    combos = [list(c) for c in itertools.product(*cands) if is_valid(c, cfg)]
    if len(combos) > max_evals:
        rng = np.random.default_rng(seed)
        combos = [combos[i] for i in sorted(rng.choice(len(combos), size=max_evals, replace=False))]
    best = objective(start)
    for c in combos:
        ev = objective(c)
        if ev.objective < best.objective:
            best = ev
    return best


def local_search(objective: Callable[[Sequence[float]], Evaluation], cfg: Config, start: list[float],
                 max_evals: int = 40, delta: float = math.log(2.0), min_delta: float = math.log(2.0) / 8,
                 counter: Callable[[], int] | None = None) -> Evaluation:
    """Coordinate descent in log η from ``start``: first improvement per coordinate, δ halved when a
    sweep finds none; stops when δ < ``min_delta`` or after ``max_evals`` new evaluations."""
    done = 0
    best = objective(_round(start))
    while delta >= min_delta and done < max_evals:
        improved = False
        for n in range(len(start)):
            for sign in (-1.0, 1.0):
                cand = list(best.betas)
                cand[n] = float(f"{cand[n] * math.exp(sign * delta):.3g}")
                if not is_valid(cand, cfg):
                    continue
                ev = objective(cand)
                done += 1
                if ev.objective < best.objective - 1e-6:
                    best, improved = ev, True
                    break
                if done >= max_evals:
                    break
            if done >= max_evals:
                break
        if not improved:
            delta /= 2
    return best


def write_schedule(checkpoint: str | Path, steps: int, betas: Sequence[float], files: Any = None) -> Path:
    """Store ``betas`` as ``diffusion.fast_schedules[steps]`` in the checkpoint's ``config.yaml``
    (atomically; with ``files``, a :class:`~diffvoc.io.FileSet`, as part of that transaction);
    returns the checkpoint directory written."""
    from diffvoc.checkpoint import CONFIG, resolve_checkpoint_dir

    p = Path(checkpoint)
    if p.is_file():
        raise DiffvocError(f"{p}: search-schedule writes into a diffvoc checkpoint directory, not a file "
                           f"(use --no-write, or train/convert into a diffvoc checkpoint)")
    d = resolve_checkpoint_dir(p)
    cfg = Config.load(d / CONFIG)
    cfg.diffusion.fast_schedules[int(steps)] = [float(b) for b in betas]
    cfg.diffusion.fast_schedules = dict(sorted(cfg.diffusion.fast_schedules.items()))
    cfg.validate()
    if files is not None:
        files.write_text(d / CONFIG, cfg.to_yaml())
    else:
        cfg.save(d / CONFIG)
    return d


@dataclass
class SearchResult:
    """What :func:`search_schedule` found."""

    checkpoint: str
    steps: int
    method: str
    default: Evaluation
    searched: Evaluation
    evaluations: int
    seconds: float
    clips: int
    clip_seconds: float | None
    split: str
    data: str
    written: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("default", "searched"):
            d[k]["objective"] = getattr(self, k).objective
        return d

    def table(self) -> str:
        rows = [f"{'':10} {'schedule':44} {'mr_stft':>8} {'log_mel_l1':>10} {'objective':>9}"]
        for name, ev in (("default", self.default), ("searched", self.searched)):
            sched = ",".join(f"{b:.3g}" for b in ev.betas)
            rows.append(f"{name:10} {sched:44} {ev.mr_stft:8.4f} {ev.log_mel_l1:10.4f} {ev.objective:9.4f}")
        return "\n".join(rows)


def _check_budget(clips: int, max_evals: int | None, points: int | None, seconds: float | None) -> None:
    """The search's budget: ``clips`` >= 1, ``max_evals`` >= 1, ``points`` >= 2, ``seconds`` > 0 (or None)."""
    for name, v, low in (("clips", clips, 1), ("max_evals", max_evals, 1), ("points", points, 2)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise DiffvocError(f"{name} must be a whole number >= {low}, got {v!r}")
    if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
        raise DiffvocError(f"seconds must be a positive, finite number (or None: whole clips), got {seconds!r}")


def search_schedule(checkpoint: str | Path, steps: int, data: str | Path | None = None, split: str = "valid",
                    clips: int = 4, seconds: float | None = 1.0, method: str = "local", seed: int = 0,
                    max_evals: int | None = None, points: int | None = None, start: Sequence[float] | None = None,
                    write: bool = True, device: str = "cpu", precision: str = "auto") -> SearchResult:
    """Search an N-step schedule for a checkpoint (see the module docstring) and, with ``write``,
    store it in the checkpoint. ``start`` overrides the start schedule (the stored one); ``precision``
    is the vocoder's (auto, fp32, bf16; see :meth:`~diffvoc.inference.vocoder.Vocoder.set_speed`)."""
    from diffvoc.checkpoint import load_checkpoint
    from diffvoc.data.dataset import load_clips
    from diffvoc.inference.vocoder import Vocoder

    if steps < 1:
        raise DiffvocError("--steps must be >= 1")
    _check_budget(clips=clips, max_evals=max_evals, points=points, seconds=seconds)
    if method not in ("grid", "local", "both"):
        raise DiffvocError(f"method must be grid, local or both, got {method!r}")
    if write and Path(checkpoint).is_file():
        raise DiffvocError(f"{checkpoint}: search-schedule writes into a diffvoc checkpoint directory, not a "
                           f"file; pass --no-write to only print the result")
    t0 = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    cfg = ck.config
    if ck.config.truncation.enabled:
        raise DiffvocError("search-schedule does not search truncated (TDPM) chains yet; set truncation.schedules")
    vocoder = Vocoder.from_checkpoint(ck, device, precision=precision)
    data = str(data or cfg.data.path)
    items = load_clips(data, cfg.audio, split, clips, seconds)
    if not items:
        raise DiffvocError(f"{data}: the {split} split has no clips")
    objective = ScheduleObjective(vocoder, items, seed)
    start = list(start) if start is not None else initial_schedule(cfg, steps)
    if len(start) != steps:
        raise DiffvocError(f"the start schedule has {len(start)} steps, not {steps}")
    default = objective(start)
    best = default
    if method in ("grid", "both"):
        pts = points or (5 if steps <= 2 else 4 if steps <= 3 else 3)
        best = grid_search(objective, cfg, start, points=pts, max_evals=max_evals or (64 if method == "grid" else 32),
                           seed=seed)
    if method in ("local", "both"):
        g = local_search(objective, cfg, best.betas, max_evals=max_evals or 40)
        best = g if g.objective < best.objective else best
    if best.objective >= default.objective:
        best = default
    written = None
    if write:
        written = str(write_schedule(ck.path if ck.path is not None else checkpoint, steps, best.betas))
    return SearchResult(checkpoint=str(ck.path), steps=steps, method=method, default=default, searched=best,
                        evaluations=objective.evaluations, seconds=time.perf_counter() - t0, clips=len(items),
                        clip_seconds=seconds, split=split, data=data, written=written,
                        settings={"objective": "MR-STFT (sc + log-mag; FFT 1024/2048/512, hop 120/240/50, "
                                               "win 600/1200/240) + log-mel L1 (model mel)",
                                  "noise": f"PositionalNoise(seed + clip index), seed {seed}",
                                  "weights": "EMA", "device": device, "precision": vocoder.precision})
