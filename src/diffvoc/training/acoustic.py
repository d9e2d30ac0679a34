"""Training the PriorGrad acoustic model (text → mel) on an LJSpeech-layout corpus.

Every step (batch, dropout, speaker dropout, crops, t and ε are pure functions of (seed, step), so
``--resume`` continues exactly):

1. encode the tokens (speaker added), compute log N(y_j; μ_enc,i, I) and align by monotonic alignment
   search (Glow-TTS, Kim et al. 2020, Alg. 1); the encoder loss ½‖y − μ_enc,A(j)‖² per bin (Grad-TTS's
   prior loss) trains the aligner, the durations d_i = Σ_j A_ij train the duration predictor on
   log(d + 1) with MSE (its input detached; FastSpeech 2, Ren et al. 2021).
2. after ``prior.warmup_steps`` of 1. only, one alignment pass over the training split with the current
   weights fixes the phone statistics μ_p, σ_p (:class:`~diffvoc.diffusion.phone_prior.PhoneStatistics`;
   for ``prior.kind: standard`` they are μ = 0, σ = 1), stored with every later checkpoint; from then on
   each step also trains the diffusion decoder on a random ``data.crop_frames`` window of every item:
   x_t = √ᾱ_t (x_0 − μ) + √(1 − ᾱ_t) σ ⊙ ε, Mahalanobis ε-loss (PriorGrad, Lee et al. 2022, eq. 5–6),
   conditioned on the length-regulated encoder output of the MAS alignment.

Total loss = encoder + duration + diffusion (weights 1). AdamW (0.9, 0.98), grad-norm clip 1, a linear
warm-up then step^−0.5 decay of the learning rate, EMA weights for validation and synthesis.
Validation (EMA, every ``train.valid_every``): mel L1 with the ground-truth (MAS) durations and MCD_mel
with predicted durations (:mod:`diffvoc.training.acoustic_metrics`) on held-out sentences of seen voices
(``valid``) and of the held-out voice (``unseen``, through the average speaker), rows in
``valid.jsonl`` against steps and training seconds, TensorBoard scalars under ``logs/``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffvoc.acoustic_checkpoint import load_acoustic_checkpoint, save_acoustic_checkpoint
from diffvoc.acoustic_config import AcousticConfig
from diffvoc.build import load_weights
from diffvoc.checkpoint import write_latest
from diffvoc.data.text import PhonemeInventory
from diffvoc.data.tts_corpus import Batch, Utterance, load_corpus, make_batch, speaker_index
from diffvoc.diffusion.noise import GeneratorNoise
from diffvoc.diffusion.phone_prior import PhonePrior, PhoneStatistics, mahalanobis_loss, q_sample_residual
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.errors import DiffvocError, TrainingError
from diffvoc.models.acoustic import AcousticModel, generate
from diffvoc.training.acoustic_metrics import mel_cepstral_distortion, mel_l1
from diffvoc.training.ema import EMA, warmup_decay
from diffvoc.training.optim import load_optimizer_state

VALID_SEED = 1234


def build_acoustic_model(cfg: AcousticConfig, n_tokens: int, n_speakers: int) -> AcousticModel:
    return AcousticModel(cfg.model, n_tokens, n_speakers, cfg.audio.n_mels, cfg.diffusion.steps)


def fast_sampler(cfg: AcousticConfig, steps: int, schedule=None) -> DiffusionSampler:
    """The aligned fast sampler for ``steps`` (a stored schedule) or an explicit β list; no clamping."""
    betas = schedule if schedule is not None else cfg.diffusion.fast_schedules.get(steps)
    if betas is None:
        raise DiffvocError(f"no stored {steps}-step schedule (have {sorted(cfg.diffusion.fast_schedules)})")
    return DiffusionSampler.fast(cfg.diffusion.schedule(), betas, clamp=False)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp(min=1)


def crop_windows(length: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """Start frame of a random ``crop``-frame window per item (0 for items shorter than ``crop``)."""
    room = (length - crop).clamp(min=0).float()
    return (torch.rand(len(length), generator=gen) * (room + 1)).floor().long().clamp(max=room.long())


def gather_window(x: torch.Tensor, start: torch.Tensor, crop: int) -> torch.Tensor:
    """``x`` ``[B, C, T]`` → ``[B, C, crop]`` windows from ``start`` (zero beyond the end)."""
    B, C, T = x.shape
    if T < crop:
        x = torch.nn.functional.pad(x, (0, crop - T))
        T = crop
    idx = (start.unsqueeze(1) + torch.arange(crop)).clamp(max=T - 1)  # [B, crop]
    return torch.gather(x, 2, idx.unsqueeze(1).expand(B, C, crop))


class AcousticTrainer:
    """Train an acoustic model described by an :class:`AcousticConfig` into ``run_dir``."""

    def __init__(self, config: AcousticConfig, run_dir: str | Path, resume: bool = False,
                 overrides: list[str] | None = None, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.progress = progress
        resumed = None
        if resume:
            if not (self.run_dir / "latest").is_file():
                raise DiffvocError(f"--resume: {self.run_dir} has no checkpoint to resume from")
            resumed = load_acoustic_checkpoint(self.run_dir, with_train_state=True)
            config = resumed.config.with_overrides(overrides or [])
        self.cfg = cfg = config
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.utts, self.splits = load_corpus(cfg, self.run_dir / "cache", log=self.log)
        self.train_ids = sorted(self.splits["train"])
        train_utts = [self.utts[i] for i in self.train_ids]
        if resumed is not None:
            self.inventory = PhonemeInventory.from_list(resumed.stats["phonemes"])
            self.speakers = list(resumed.stats["speakers"])
        else:
            self.inventory = PhonemeInventory.build(u.tokens for u in train_utts)
            self.speakers = sorted({u.speaker for u in train_utts})
        counts: dict[str, int] = {}
        for u in train_utts:
            counts[u.speaker] = counts.get(u.speaker, 0) + 1
        self.default_speaker = max(sorted(counts), key=lambda s: counts[s])
        torch.manual_seed(tc.seed)
        self.model = build_acoustic_model(cfg, len(self.inventory), len(self.speakers))
        self.schedule = cfg.diffusion.schedule()
        self.prior = PhonePrior.standard(len(self.inventory), cfg.audio.n_mels)
        self.prior_ready = False
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.learning_rate, betas=tuple(tc.adam_betas),
                                           weight_decay=tc.weight_decay)
        self.step = 0
        self.train_seconds = 0.0
        self.cpu_seconds = 0.0
        self.extra_stats: dict[str, Any] = {}
        if resumed is not None:
            load_weights(self.model, resumed.raw_weights, str(resumed.path))
            load_optimizer_state(self.optimizer, resumed.train_state["optimizer"])
            st = resumed.train_state
            self.step, self.prior_ready = int(st["step"]), bool(st["prior_ready"])
            self.train_seconds, self.cpu_seconds = float(st["train_seconds"]), float(st["cpu_seconds"])
            self.prior = PhonePrior(resumed.prior["mean"], resumed.prior["std"])
            self.ema = EMA(self.model, resumed.weights)
            self.extra_stats = {k: v for k, v in resumed.stats.items()
                                if k not in ("phonemes", "speakers", "default_speaker")}
        else:
            self.ema = EMA(self.model)
        self.valid = self._pick(self.splits.get("valid", []), cfg.data.valid_sentences)
        self.unseen = self._pick(self.splits.get(cfg.data.unseen_split, []), cfg.data.valid_unseen)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "logs"))
        n = sum(p.numel() for p in self.model.parameters())
        self.log(f"acoustic model: {n / 1e6:.2f} M parameters, {len(self.inventory)} tokens, {len(self.speakers)} "
                 f"speakers, {len(self.train_ids)} training utterances, prior {cfg.prior.kind}")

    # ---------------------------------------------------------------------------------------- helpers
    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def _pick(self, ids: list[str], count: int) -> list[Utterance]:
        return [self.utts[i] for i in sorted(ids)[:count]]

    def lr(self, step: int) -> float:
        """Linear warm-up to the peak, then ∝ step^−0.5 (the official schedule's shape)."""
        w = max(1, self.cfg.train.warmup_steps)
        s = max(1, step)
        return self.cfg.train.learning_rate * min(s / w, (w / s) ** 0.5)

    def batch(self, step: int) -> Batch:
        rng = np.random.default_rng([self.cfg.train.seed, step])
        k = min(self.cfg.train.batch_size, len(self.train_ids))
        pick = rng.choice(len(self.train_ids), size=k, replace=False)
        utts = [self.utts[self.train_ids[i]] for i in pick]
        spk = [0 if rng.random() < self.cfg.model.speaker_dropout else speaker_index(self.speakers, u.speaker)
               for u in utts]
        return make_batch(utts, self.inventory, self.speakers, spk)

    def batch_of(self, utts: list[Utterance], average_speaker: bool = False) -> Batch:
        return make_batch(utts, self.inventory, self.speakers, [0] * len(utts) if average_speaker else None)

    # ------------------------------------------------------------------------------------------- step
    def losses(self, b: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Encoder (alignment), duration and — once the prior is fixed — diffusion losses of a batch."""
        m = self.model
        enc = m.encode(b.tokens, b.speakers)
        path = m.align(enc, b.mel, b.token_lengths, b.frame_lengths)  # [B, N, T], constant
        frame_mask = (torch.arange(b.mel.shape[-1]).unsqueeze(0) < b.frame_lengths.unsqueeze(1)).unsqueeze(1)
        mu_aligned = torch.bmm(enc["mu_enc"], path)  # [B, n_mels, T]
        out = {"encoder": 0.5 * masked_mean((b.mel - mu_aligned).pow(2), frame_mask)}
        dur = path.sum(-1)
        tok_mask = ~enc["pad"]
        out["duration"] = masked_mean((enc["log_d"] - torch.log1p(dur)).pow(2), tok_mask)
        if self.prior_ready:
            crop = self.cfg.data.crop_frames
            start = crop_windows(b.frame_lengths, crop, gen)
            cond = gather_window(torch.bmm(enc["h"].transpose(1, 2), path), start, crop)
            frame_tok = gather_window(path.argmax(1).unsqueeze(1).float(), start, crop).squeeze(1).long()
            tok = torch.gather(b.tokens, 1, frame_tok)
            mask = gather_window(frame_mask.float(), start, crop)
            tok = tok.masked_fill(mask.squeeze(1) == 0, 0)
            x0 = gather_window(b.mel, start, crop)
            mu, std = self.prior.frames(tok)
            t = torch.randint(0, len(self.schedule), (x0.shape[0],), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            xt, noise = q_sample_residual(self.schedule, x0, mu, std, t, eps)
            out["diffusion"] = mahalanobis_loss(m.decoder(xt, t, cond), noise, std, mask)
        return out

    def train_step(self) -> dict[str, float]:
        tc = self.cfg.train
        self.step += 1
        torch.manual_seed(tc.seed * 1_000_003 + self.step)  # dropout: a function of (seed, step)
        gen = torch.Generator().manual_seed(tc.seed * 1_000_033 + self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr(self.step)
        self.model.train()
        parts = self.losses(self.batch(self.step), gen)
        total = sum(parts.values())
        if not torch.isfinite(total):
            raise TrainingError(f"non-finite loss at step {self.step}: {({k: float(v) for k, v in parts.items()})}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self._update_ema()
        return {"loss": float(total.detach()), "grad_norm": float(norm),
                **{k: float(v.detach()) for k, v in parts.items()}}

    def _update_ema(self) -> None:
        self.ema.update(warmup_decay(self.cfg.train.ema_decay, self.step))

    def ema_weights(self) -> contextlib.AbstractContextManager[None]:
        """Evaluate with the EMA weights (eval mode); the raw weights and train mode come back afterwards."""
        return self.ema.swapped()

    # ---------------------------------------------------------------------------------- phone prior
    @torch.no_grad()
    def align_utterances(self, utts: list[Utterance], batch_size: int = 16):
        """Yield (utterance, token ids [N], durations [N]) from MAS with the current model (eval mode)."""
        was = self.model.training
        self.model.eval()
        order = sorted(utts, key=lambda u: u.mel.shape[1])
        try:
            for i in range(0, len(order), batch_size):
                group = order[i: i + batch_size]
                b = self.batch_of(group)
                enc = self.model.encode(b.tokens, b.speakers)
                dur = self.model.align(enc, b.mel, b.token_lengths, b.frame_lengths).sum(-1).long()
                for k, u in enumerate(group):
                    n = int(b.token_lengths[k])
                    yield u, b.tokens[k, :n], dur[k, :n]
        finally:
            self.model.train(was)

    def compute_prior(self) -> None:
        """Fix the phone prior from one alignment pass over the training split (``standard``: μ = 0, σ = 1)."""
        t0 = time.perf_counter()
        n_mels = self.cfg.audio.n_mels
        if self.cfg.prior.kind == "priorgrad":
            acc = PhoneStatistics(len(self.inventory), n_mels)
            for u, tok, dur in self.align_utterances([self.utts[i] for i in self.train_ids]):
                acc.add(torch.from_numpy(u.mel), torch.repeat_interleave(tok, dur))
            mean, std = acc.finish(self.cfg.prior.sigma_min)
            self.prior = PhonePrior(mean, std)
            seen = int((acc.count > 0).sum())
            self.extra_stats["prior"] = {"computed_at_step": self.step, "tokens_seen": seen,
                                         "frames": int(acc.count.sum()), "sigma_mean": float(std[acc.count > 0].mean())}
        else:
            self.prior = PhonePrior.standard(len(self.inventory), n_mels)
            self.extra_stats["prior"] = {"computed_at_step": self.step}
        self.prior_ready = True
        self.log(f"step {self.step}: phone prior ({self.cfg.prior.kind}) fixed from the alignment "
                 f"in {time.perf_counter() - t0:.1f} s; the diffusion decoder starts training")

    # ----------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def synthesize_set(self, utts: list[Utterance], steps: int, teacher_forced: bool, average_speaker: bool = False,
                       schedule=None, seed: int = VALID_SEED) -> list[np.ndarray]:
        """Generated mels for ``utts`` (ground-truth MAS durations if ``teacher_forced``)."""
        sampler = fast_sampler(self.cfg, steps, schedule)
        out: list[np.ndarray] = []
        for i in range(0, len(utts), 8):
            group = utts[i: i + 8]
            b = self.batch_of(group, average_speaker)
            durations = None
            if teacher_forced:
                enc = self.model.encode(b.tokens, b.speakers)
                durations = self.model.align(enc, b.mel, b.token_lengths, b.frame_lengths).sum(-1).long()
            noise = GeneratorNoise(torch.Generator().manual_seed(seed + i))
            mel, dur, _ = generate(self.model, self.prior, sampler, b.tokens, b.speakers, noise, durations)
            for k in range(len(group)):
                out.append(mel[k, :, : int(dur[k].sum())].numpy())
        return out

    def evaluate_sets(self, steps: int, schedule=None) -> dict[str, float]:
        """mel L1 (teacher-forced) and MCD_mel (free-running) on the valid and unseen-voice sentences."""
        res: dict[str, float] = {}
        for name, utts, avg in (("valid", self.valid, False), ("unseen", self.unseen, True)):
            if not utts:
                continue
            tf = self.synthesize_set(utts, steps, True, avg, schedule)
            fr = self.synthesize_set(utts, steps, False, avg, schedule)
            res[f"{name}_mel_l1"] = float(np.mean([mel_l1(u.mel, g) for u, g in zip(utts, tf)]))
            res[f"{name}_mcd"] = float(np.mean([mel_cepstral_distortion(u.mel, g) for u, g in zip(utts, fr)]))
            res[f"{name}_length_error"] = float(np.mean([abs(g.shape[1] - u.mel.shape[1]) / u.mel.shape[1]
                                                          for u, g in zip(utts, fr)]))
        return res

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        with self.ema_weights():
            gen = torch.Generator().manual_seed(VALID_SEED)
            parts = self.losses(self.batch_of(self.valid), gen) if self.valid else {}
            out = {f"valid_{k}_loss": float(v) for k, v in parts.items()}
            if self.prior_ready:
                out.update(self.evaluate_sets(self.cfg.train.valid_steps))
        row = {"step": self.step, "train_seconds": round(self.train_seconds, 2),
               "cpu_seconds": round(self.cpu_seconds, 2), "mcd_cepstrum": "dct/2N", **out}
        with open(self.run_dir / "valid.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in out.items():
            self.writer.add_scalar(f"valid/{k}", v, self.step)
        return out

    # -------------------------------------------------------------------------------------- saving
    def stats(self) -> dict[str, Any]:
        return {"phonemes": self.inventory.to_list(), "speakers": self.speakers,
                "default_speaker": self.default_speaker, **self.extra_stats}

    def save(self) -> Path:
        name = f"ckpt-{self.step:08d}"
        state = {"optimizer": self.optimizer.state_dict(), "step": self.step, "prior_ready": self.prior_ready,
                 "train_seconds": self.train_seconds, "cpu_seconds": self.cpu_seconds}
        path = save_acoustic_checkpoint(self.run_dir / name, self.cfg, self.stats(),
                                        {"mean": self.prior.mean, "std": self.prior.std}, self.ema.shadow,
                                        self.model.state_dict(), state)
        write_latest(self.run_dir, name)
        old = sorted(p for p in self.run_dir.glob("ckpt-*") if p.is_dir() and p.name != name)
        for p in old[: max(0, len(old) - (self.cfg.train.keep_checkpoints - 1))]:
            shutil.rmtree(p, ignore_errors=True)
        return path

    def search_schedules(self) -> None:
        """Grid-search the fast schedules on the validation sentences; store the winners in the config."""
        from diffvoc.training.acoustic_schedule import search_fast_schedules

        with self.ema_weights():
            best, table = search_fast_schedules(self, self.valid)
        self.cfg.diffusion.fast_schedules.update(best)
        self.extra_stats["schedule_search"] = table
        self.log("schedule search: " + ", ".join(f"{k} steps {v}" for k, v in sorted(best.items())))

    # ----------------------------------------------------------------------------------------- loop
    def train(self, max_steps: int | None = None, time_limit: float | None = None) -> dict[str, Any]:
        """Train to ``max_steps`` (default ``train.max_steps``) or until ``time_limit`` CPU seconds of
        training steps (this process's CPU time, so a busy machine does not shorten the budget;
        validation and saving not counted, resumed runs included); then validate and save."""
        tc = self.cfg.train
        total = max_steps or tc.max_steps
        self.cfg.save(self.run_dir / "config.yaml")
        last: dict[str, Any] = {}
        line_t = time.perf_counter()
        while self.step < total and not (time_limit is not None and self.cpu_seconds >= time_limit):
            if not self.prior_ready and self.step >= self.cfg.prior.warmup_steps:
                self.compute_prior()
            w0, c0 = time.perf_counter(), time.process_time()
            logs = self.train_step()
            self.train_seconds += time.perf_counter() - w0
            self.cpu_seconds += time.process_time() - c0
            final = self.step >= total or (time_limit is not None and self.cpu_seconds >= time_limit)
            if self.step % tc.log_every == 0 or final:
                last = dict(logs)
                for k, v in logs.items():
                    self.writer.add_scalar(f"train/{k}", v, self.step)
                self.writer.add_scalar("train/lr", self.lr(self.step), self.step)
            if time.perf_counter() - line_t >= 30 or final:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
                self.log(f"step {self.step}/{total} ({self.train_seconds:.0f} s, {self.cpu_seconds:.0f} CPU s): "
                         f"{shown}")
                line_t = time.perf_counter()
            if tc.valid_every and (self.step % tc.valid_every == 0 or final):
                last.update({f"valid/{k}": v for k, v in self.validate().items()})
            if final and tc.schedule_search and self.prior_ready and self.valid:
                self.search_schedules()
            if self.step % tc.save_every == 0 or final:
                self.save()
        self.writer.flush()
        last["step"] = self.step
        return last

    def close(self) -> None:
        self.writer.close()
