"""The training loop: Adam, mixed precision, EMA, validation, TensorBoard, checkpoints, DDP.

Multi-GPU (or multi-process CPU) training is PyTorch DDP under ``torchrun``: every process reads
RANK/WORLD_SIZE/LOCAL_RANK from the environment; ``train.batch_size`` is the global batch.
Each step's batch and diffusion noise are pure functions of (seed, step, rank), so ``--resume``
continues exactly where the run stopped.

InferGrad (``infer.enabled``, :mod:`diffvoc.diffusion.infergrad`): each step also runs the K-step reverse
process from the prior's noise with gradients and adds ``infer.weight`` · L_infer(x̂_0, x_0) to
the diffusion loss; its schedule (general mode) and noise are pure functions of (seed, step, rank)
too. Fine-tuning from a trained model (``--init-from``) is the intended use.

Engines (``train.engine``): ``fast`` (the default on CPU) runs the diffusion loss through
:class:`~diffvoc.training.engine.FastTrainNetwork` — the same function and parameters, time-major
stacked-tap matmuls with a hand-written backward, bf16 operands with fp32 master weights where the
CPU has AVX512-BF16/AMX — one item per forward/backward pass with the gradients accumulated, so the
optimiser still sees the whole batch (the reference engine can accumulate too: ``train.micro_batch``). The infer loss, the TDPM GAN
phases and validation use the reference network (the log says so). ``reference`` (the default on
CUDA) is the plain module under autocast. On CUDA the loop never waits on the GPU between logging
steps: loss, gradient norm and finiteness are read every ``train.log_every`` steps.

Truncated diffusion (``truncation.enabled``, :mod:`diffvoc.diffusion.truncation`): the diffusion loss is drawn
only from t ≤ T_trunc, and from ``truncation.gan_start_step`` on every step also runs one
discriminator phase and one generator phase of :class:`~diffvoc.training.truncation_gan.TruncatedGAN` (their
own Adam optimisers); the infer loss, if on, then runs through G and the truncated chain.

After a kill: every start of training removes the temporaries (half-written checkpoint folders, files)
a killed process left in the run directory (:func:`diffvoc.io.remove_debris`), and ``--resume`` drops
the ``valid.jsonl`` rows of the steps it will replay (step > the resumed step) and any torn last line.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from diffvoc.audio import MelSpectrogram
from diffvoc.build import build, build_implicit_prior, check_finite_weights, load_weights
from diffvoc.checkpoint import load_checkpoint, save_checkpoint, write_latest
from diffvoc.config import Config
from diffvoc.data.dataset import CropDataset, ensure_features, load_clips, load_stats
from diffvoc.diffusion.infergrad import (
    InferLoss,
    InferLossTerms,
    infer_noise_generator,
    infer_schedule,
    unrolled_sample,
)
from diffvoc.diffusion.loss import DiffusionLoss
from diffvoc.diffusion.spectral import MultiResolutionSTFTLoss
from diffvoc.diffusion.truncation import truncated_betas
from diffvoc.errors import CheckpointError, DiffvocError, TrainingError
from diffvoc.io import atomic_write_text, remove_debris
from diffvoc.training.ema import EMA, warmup_decay
from diffvoc.training.engine import FastTrainNetwork, micro_batches
from diffvoc.training.optim import load_optimizer_state
from diffvoc.training.truncation_gan import TruncatedGAN
from diffvoc.training.validation import validate_generative, validate_mel


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def resolve_engine(engine: str, precision: str, device: torch.device) -> tuple[str, str]:
    """``train.engine`` and ``train.precision`` → (engine, precision) for this device.

    auto engine: ``fast`` on CPU, ``reference`` on CUDA. auto precision: bf16 on CUDA (where
    supported) and on CPUs with AVX512-BF16 or AMX, fp32 elsewhere.
    """
    from diffvoc.precision import cpu_supports_bf16

    if engine == "auto":
        engine = "fast" if device.type == "cpu" else "reference"
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            precision = "bf16" if cpu_supports_bf16() else "fp32"
    if engine == "fast" and precision == "fp16":
        raise DiffvocError("train.precision fp16 needs train.engine reference (the fast engine runs fp32 or bf16)")
    return engine, precision


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Train a diffusion vocoder described by a :class:`Config` into ``run_dir``.

    Args:
        config: the full configuration (ignored on ``resume``: the run's saved config is used,
            with ``overrides`` applied to it).
        run_dir: where checkpoints (``ckpt-<step>/``), ``latest`` and TensorBoard logs go.
        resume: continue from ``run_dir/latest``.
        init_from: start from another checkpoint's EMA weights (fine-tuning) with a fresh optimizer.
        device: ``cpu`` / ``cuda`` / ``None`` (CUDA when available).
    """

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, init_from: str | Path | None = None,
                 device: str | None = None, overrides: list[str] | None = None, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.rank, self.world, self.local_rank = _dist_env()
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise DiffvocError(f"--run-dir {self.run_dir} exists and is not a folder")
        if self.rank == 0:
            remove_debris(self.run_dir)
        resumed = None
        if resume:
            if not (self.run_dir / "latest").is_file():
                raise DiffvocError(f"--resume: {self.run_dir} has no checkpoint to resume from")
            resumed = load_checkpoint(self.run_dir, with_train_state=True)
            if resumed.train_state is None or resumed.raw_weights is None:
                raise DiffvocError(f"{resumed.path} holds no training state to resume from")
            config = resumed.config.with_overrides(overrides or [])
        self.cfg = config
        tc = config.train
        if tc.batch_size % self.world:
            raise DiffvocError(f"train.batch_size {tc.batch_size} is not divisible by the {self.world} processes")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            if not torch.cuda.is_available():
                raise DiffvocError("--device cuda asked for, but CUDA is not available")
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.progress = progress and self.rank == 0

        data_dir = config.data.path
        if self.rank == 0:
            ensure_features(data_dir, config.audio)
        self._barrier()
        self.stats = resumed.stats if resumed else load_stats(data_dir, config.audio)
        torch.manual_seed(tc.seed)
        model, self.schedule, self.prior = build(config, self.stats)
        self.model = model.to(self.device)
        self.loss_fn = DiffusionLoss(self.schedule, config.diffusion.loss)
        implicit = build_implicit_prior(config, self.schedule, self.prior)  # T_trunc is computed there, once
        self.truncation_gan = (TruncatedGAN(config, self.model, self.schedule, implicit, self.device, self.world)
                     if implicit is not None else None)
        self.max_t = self.truncation_gan.k if self.truncation_gan is not None else None  # diffusion loss on t <= T_trunc only
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters())}]
        if self.truncation_gan is not None and config.infer.enabled and not self.truncation_gan.generator.shared:
            # the infer loss also trains the separate generator (through x_{T_trunc} = G(z, mel))
            groups.append({"params": list(self.truncation_gan.generator.parameters()), "lr": config.truncation.generator_lr})
        fused = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.Adam(groups, lr=tc.learning_rate, betas=tuple(tc.adam_betas), **fused)
        self.engine, self.precision = resolve_engine(tc.engine, tc.precision, self.device)
        self.micro_batch = 1 if self.engine == "fast" else tc.micro_batch  # the fast engine: always one item
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.net: torch.nn.Module = (FastTrainNetwork(self.model, torch.bfloat16 if self.precision == "bf16" else torch.float32)
                                     if self.engine == "fast" else self.model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        if resumed is not None:
            load_weights(self.model, resumed.raw_weights, str(resumed.path))
            check_finite_weights(resumed.weights, str(resumed.path))
            try:  # the moments from the checkpoint; lr and betas from the config (with --set overrides)
                load_optimizer_state(self.optimizer, resumed.train_state["optimizer"])
            except (ValueError, KeyError, TypeError, RuntimeError) as e:
                raise CheckpointError(f"{resumed.path}: the optimizer state does not fit this model "
                                      f"({str(e).splitlines()[0][:120]})") from None
            self.step = int(resumed.train_state["step"])
            if self.rank == 0:
                _trim_valid_log(self.run_dir / "valid.jsonl", self.step)
            if resumed.train_state.get("scaler"):
                self.scaler.load_state_dict(resumed.train_state["scaler"])
            self.ema = EMA(self.model, resumed.weights)
            if self.truncation_gan is not None:
                self.truncation_gan.load(resumed.extras, resumed.train_state)
        else:
            if init_from is not None:
                src = load_checkpoint(init_from)
                load_weights(self.model, src.weights, str(src.path))
            self.ema = EMA(self.model)
        self.ddp = (DistributedDataParallel(self.net, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
                    if self.world > 1 else self.net)
        self._compiled = False
        if tc.compile:
            self._compile_network()
        self.data = CropDataset(data_dir, config.audio, config.data.crop_frames, tc.batch_size // self.world,
                                seed=tc.seed, rank=self.rank)
        self.valid = load_clips(data_dir, config.audio, "valid", config.data.valid_clips, config.data.valid_seconds) \
            if self.rank == 0 else []
        self.mel_fn = MelSpectrogram(config.audio).to(self.device)
        self.mr_stft = MultiResolutionSTFTLoss().to(self.device)
        self.infer_loss = InferLoss(config.infer).to(self.device) if config.infer.enabled else None
        self._t0 = time.perf_counter()
        self.writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "logs"))
            self.log(f"engine {self.engine}, precision {self.precision}, {self.micro_batch or tc.batch_size // self.world} "
                     f"item(s) per forward/backward pass, device {self.device}")
            if self.engine == "fast":
                parts = [n for n, on in (("the infer loss", config.infer.enabled),
                                         ("the TDPM GAN phases", config.truncation.enabled)) if on]
                self.log("fast engine: the diffusion loss runs on diffvoc.training.engine; "
                         + (" and ".join(parts) + " and " if parts else "") + "validation run on the reference network")

    def log(self, msg: str) -> None:
        """One line to stderr (rank 0), next to the progress bar if there is one."""
        if self.rank != 0:
            return
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def _compile_network(self) -> None:
        """``train.compile``: torch.compile the network; any failure falls back to eager, logged."""
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(self.ddp)
        except Exception as e:  # noqa: BLE001 - any backend failure means eager
            self.log(f"train.compile: torch.compile failed ({type(e).__name__}: {e}); running eager")
            return
        self._eager, self.ddp, self._compiled = self.ddp, compiled, True
        self.log(f"train.compile: wrapped in {time.perf_counter() - t0:.1f} s (compiles on the first step)")

    def _forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self._compiled:
            return self.ddp(x_t, t, **cond)
        t0 = time.perf_counter()
        try:
            out = self.ddp(x_t, t, **cond)
        except Exception as e:  # noqa: BLE001 - compilation errors surface on the first call
            self.log(f"train.compile: compilation failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); running eager")
            self.ddp, self._compiled = self._eager, False
            return self.ddp(x_t, t, **cond)
        if not getattr(self, "_compile_logged", False):
            self._compile_logged = True
            self.log(f"train.compile: first compiled forward took {time.perf_counter() - t0:.1f} s")
        return out

    def _agree(self, flag: bool) -> bool:
        """All processes stop together: true if any rank says so."""
        if self.world > 1 and dist.is_initialized():
            t = torch.tensor([float(flag)], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return bool(t.item())
        return flag

    def _barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _conditioning(self, mel: torch.Tensor, label: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The network's conditioning inputs: the mel (through the prior), a class label, or nothing."""
        kind = self.cfg.model.conditioning
        if kind == "mel":
            return {"mel": self.prior.conditioner(mel)}
        if kind == "class":
            if label is None or bool((label < 0).any()):
                raise TrainingError("a class-conditional model needs labelled data (an SPLIT/CLASS/*.wav corpus)")
            return {"label": label}
        return {}

    def train_step(self, audio: torch.Tensor, mel: torch.Tensor, label: torch.Tensor | None = None) -> dict[str, Any]:
        """One optimisation step on a batch; returns the logged scalars (floats; 0-dim tensors on CUDA,
        read them only when logging so the host never waits on the GPU)."""
        audio, mel = audio.to(self.device, non_blocking=True), mel.to(self.device, non_blocking=True)
        label = label.to(self.device) if label is not None else None
        g = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed * 1_000_003 + self.step * 97 + self.rank)
        std = self.prior.std(mel, audio.shape[-1])
        batch = self.loss_fn.q_sample(audio, std, generator=g, max_step=self.max_t)
        cond = self._conditioning(mel, label)
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, Any] = {}
        infer_total = None
        if self._infer_now():
            # the raw module, not the DDP wrapper; its gradients join the diffusion loss's before DDP's sync
            with self._no_sync():
                terms, k = self._infer_terms(audio, mel)
                infer_total = self.cfg.infer.weight * terms.total  # L = L_diffusion + λ · L_infer
                self.scaler.scale(infer_total).backward()
            logs = {**terms.scalars(), "infer_steps": float(k)}
        B = audio.shape[0]
        if self.engine == "fast":  # one item at a time, then one backward (and DDP sync) through the prelude
            pre = self._forward(batch.x_t, batch.t, {**cond, "prelude_only": True})
            loss = self.net.accumulate(pre, lambda b, eps: self.loss_fn(eps.view(1, 1, -1), batch.items(slice(b, b + 1))) / B)
            parts = []
        else:
            parts = micro_batches(B, self.micro_batch)
            loss = torch.zeros((), device=self.device)
        for j, sl in enumerate(parts):
            with self._no_sync() if j + 1 < len(parts) else contextlib.nullcontext():
                with self._autocast():
                    eps = self._forward(batch.x_t[sl], batch.t[sl], {k: v[sl] for k, v in cond.items()})
                part = self.loss_fn(eps, batch.items(sl)) * ((sl.stop - sl.start) / B)  # the batch mean, in pieces
                self.scaler.scale(part).backward()
            loss = loss + part.detach()
        total = loss if infer_total is None else loss + infer_total.detach()
        if infer_total is not None:
            logs["diffusion_loss"] = loss
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else float("inf"))
        if self.device.type != "cuda" or (self.step + 1) % self.cfg.train.log_every == 0:
            self._check_finite(total, norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.truncation_gan is not None and self.truncation_gan.active(self.step):
            logs.update(self.truncation_gan.step(self.model, audio, self.prior.conditioner(mel), std, g))
        self.step += 1
        self._update_ema()
        out = {"loss": total, "grad_norm": norm, **logs}
        if self.device.type != "cuda":
            out = _floats(out)
        return out

    def _check_finite(self, total: torch.Tensor, norm: torch.Tensor) -> None:
        if not torch.isfinite(total):
            raise TrainingError(f"non-finite loss at step {self.step + 1} (precision {self.precision}, "
                                f"lr {self.cfg.train.learning_rate}); lower the learning rate or use fp32")
        if not torch.isfinite(norm) and self.precision != "fp16":
            raise TrainingError(f"non-finite gradient norm at step {self.step + 1}; lower the learning rate or use fp32")

    def _no_sync(self):
        """DDP: accumulate this backward pass's gradients locally (the last micro-batch syncs)."""
        ddp = self._eager if self._compiled else self.ddp
        return ddp.no_sync() if isinstance(ddp, DistributedDataParallel) else contextlib.nullcontext()

    def _infer_now(self) -> bool:
        ic = self.cfg.infer
        return (self.infer_loss is not None and self.step >= ic.start_step
                and (self.step - ic.start_step) % ic.every == 0)

    def _infer_terms(self, audio: torch.Tensor, mel: torch.Tensor) -> tuple[InferLossTerms, int]:
        """InferGrad's term on the first ``infer.batch_items`` crops cut to ``infer.crop_frames``:
        x̂_0 by the unrolled K-step reverse process (with gradients), then L_infer(x̂_0, x_0)."""
        ic, hop = self.cfg.infer, self.cfg.audio.hop_length
        frames = min(ic.crop_frames, mel.shape[-1])
        items = min(ic.batch_items or audio.shape[0], audio.shape[0])
        x0, m = audio[:items, : frames * hop], mel[:items, :, :frames]
        betas = self.infer_betas()
        g = infer_noise_generator(self.cfg.train.seed, self.step, self.rank, self.device)
        # the raw module, not the DDP wrapper: its parameters' gradients are summed with the diffusion
        # forward's in the same backward pass, so DDP's reducer still sees one gradient per parameter
        with self._autocast():
            x0_hat = unrolled_sample(self.model, self.prior, self.schedule, betas, m, x0.shape[-1], g,
                                     checkpoint=ic.checkpoint, clamp=ic.clamp,
                                     implicit=self.truncation_gan.generator if self.truncation_gan is not None else None)
        return self.infer_loss(x0_hat.float(), x0.float()), len(betas)

    def infer_betas(self) -> list[float]:
        """The infer loss's schedule: InferGrad's, or the truncated chain's K-step one."""
        if self.truncation_gan is not None:
            return truncated_betas(self.cfg, self.schedule, self.truncation_gan.k, self.cfg.infer.steps)
        return infer_schedule(self.cfg, self.step)

    def _update_ema(self) -> None:
        """EMA ← decay·EMA + (1 − decay)·θ (:mod:`diffvoc.training.ema`), also for TDPM's generator."""
        decay = warmup_decay(self.cfg.train.ema_decay, self.step)
        self.ema.update(decay)
        if self.truncation_gan is not None:
            self.truncation_gan.update_ema(decay)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Diffusion loss at fixed steps and noise, and the log-mel L1 of fast sampling (EMA weights)."""
        if not self.valid:
            return {}
        with self._ema_weights():
            out = validate_mel(self) if self.cfg.model.conditioning == "mel" else validate_generative(self)
        if getattr(self, "_timing_only", False):
            return out
        with open(self.run_dir / "valid.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "time_s": round(time.perf_counter() - self._t0, 2), **out}) + "\n")
        return out

    @contextlib.contextmanager
    def _ema_weights(self):
        """Evaluate with the EMA weights; the raw weights and train mode come back afterwards."""
        with self.ema.swapped():
            with self.truncation_gan.ema_weights() if self.truncation_gan is not None else contextlib.nullcontext():
                yield

    def save(self) -> Path:
        """Write ``ckpt-<step>`` atomically, point ``latest`` at it and prune old checkpoints."""
        name = f"ckpt-{self.step:08d}"
        state = {"optimizer": self.optimizer.state_dict(), "step": self.step,
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}}
        extra = None
        if self.truncation_gan is not None:
            extra, gan_state = self.truncation_gan.state()
            state.update(gan_state)
        path = save_checkpoint(self.run_dir / name, self.cfg, self.stats, self.ema.shadow, self.model.state_dict(), state,
                               extra_weights=extra)
        write_latest(self.run_dir, name)
        keep = self.cfg.train.keep_checkpoints
        old = sorted(p for p in self.run_dir.glob("ckpt-*") if p.is_dir() and p.name != name)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
        return path

    def train(self, max_steps: int | None = None, time_limit: float | None = None,
              deadline: float | None = None) -> dict[str, Any]:
        """Train until ``max_steps`` (default ``train.max_steps``), until ``time_limit`` seconds of
        training have passed, or until the wall-clock ``deadline`` (``time.time()`` seconds) comes
        near: then validate and save at once, so a fixed budget ends with a checkpoint. With a
        deadline the loop stops early enough for the final validation and save to finish before it
        (their cost is measured: a timed validation first, the save from the model's size).
        Returns the last logged values."""
        tc = self.cfg.train
        total = max_steps or tc.max_steps
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            self.cfg.save(self.run_dir / "config.yaml")
        reserve = self._final_cost() if deadline is not None else 0.0
        if deadline is not None and time.time() + reserve > deadline:
            raise TrainingError(f"the deadline leaves {deadline - time.time():.0f} s, less than the "
                                f"{reserve:.0f} s the final validation and save take")
        loader = torch.utils.data.DataLoader(self.data, batch_size=None, sampler=range(self.step, total),
                                             num_workers=self.cfg.data.num_workers,
                                             pin_memory=self.device.type == "cuda",
                                             persistent_workers=False)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self._bar = bar
        self.model.train()
        last: dict[str, Any] = {}
        t0 = time.perf_counter()
        first_step, line_t, line_step = self.step, t0, self.step
        step_cost = 0.0
        batch = tc.batch_size
        for audio, mel, label in loader:
            ts = time.perf_counter()
            logs = self.train_step(audio, mel, label)
            now = time.perf_counter()
            step_cost = now - ts if step_cost == 0.0 else 0.9 * step_cost + 0.1 * (now - ts)
            # several processes agree on stopping every `every` steps (one all-reduce), one process every step
            every = 1 if self.world == 1 else 10
            out_of_time = time_limit is not None and now - t0 > time_limit
            if deadline is not None:
                out_of_time = out_of_time or time.time() + (every + 0.5) * step_cost + reserve > deadline
            out_of_time = self._agree(out_of_time) if self.step % every == 0 else False
            final = self.step == total or out_of_time
            log_now = self.step % tc.log_every == 0 or final
            if log_now:
                logs = _floats(logs)
                last = dict(logs)
            if self.rank == 0:
                if log_now:
                    sps = (self.step - first_step) / max(now - t0, 1e-9)
                    for k, v in logs.items():
                        self.writer.add_scalar(f"train/{k}", v, self.step)
                    self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
                    self.writer.add_scalar("train/steps_per_s", sps, self.step)
                    self.writer.add_scalar("train/samples_per_s", sps * batch, self.step)
                if now - line_t >= 30.0 or final:
                    rate = (self.step - line_step) / max(now - line_t, 1e-9)
                    loss = f", loss {logs['loss']:.4f}" if log_now else ""
                    self.log(f"step {self.step}/{total}: {rate:.3g} steps/s, {rate * batch:.3g} samples/s, "
                             f"peak {_peak_memory_mb(self.device):.0f} MB{loss}")
                    line_t, line_step = now, self.step
                if tc.valid_every and (self.step % tc.valid_every == 0 or final):
                    tv = time.perf_counter()
                    val = self.validate()
                    self._valid_cost = time.perf_counter() - tv
                    for k, v in val.items():
                        self.writer.add_scalar(f"valid/{k}", v, self.step)
                    last.update({f"valid_{k}": v for k, v in val.items()})
                if self.step % tc.save_every == 0 or final:
                    tv = time.perf_counter()
                    self.save()
                    self._save_cost = time.perf_counter() - tv
                if bar is not None:
                    if log_now:
                        bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    bar.update(1)
            if deadline is not None:
                reserve = self._final_cost(measure=False)
            if self.step % tc.save_every == 0 or final:
                self._barrier()
            if out_of_time:
                break
        if bar is not None:
            bar.close()
        self._bar = None
        if self.writer is not None:
            self.writer.flush()
        last["step"] = self.step
        return last

    def _final_cost(self, measure: bool = True) -> float:
        """Seconds the final validation and save take (measured once; 25 % and 2 s of margin)."""
        if getattr(self, "_valid_cost", None) is None:
            self._valid_cost = 0.0
            if measure and self.cfg.train.valid_every and self.rank == 0 and self.valid:
                tv = time.perf_counter()
                with _no_rows(self):
                    self.validate()
                self._valid_cost = time.perf_counter() - tv
        if getattr(self, "_save_cost", None) is None:
            n = sum(p.numel() for p in self.model.parameters())
            self._save_cost = 1.0 + 4 * 4 * n / 50e6  # EMA, raw, two Adam moments at ≥ 50 MB/s
        return 1.25 * (self._valid_cost + self._save_cost) + 2.0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _trim_valid_log(path: Path, step: int) -> None:
    """Keep the rows of ``valid.jsonl`` up to ``step`` (a resumed run replays the later steps and logs them
    again); a torn or unreadable line, as a kill mid-write leaves, is dropped too."""
    if not path.is_file():
        return
    keep, changed = [], False
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step
        except ValueError:
            ok = False
        if ok:
            keep.append(line)
        else:
            changed = True
    if changed:
        atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def _floats(logs: dict[str, Any]) -> dict[str, Any]:
    """Logged scalars as Python floats (reads 0-dim tensors: a host sync on CUDA)."""
    return {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in logs.items()}


@contextlib.contextmanager
def _no_rows(trainer: "Trainer"):
    """Run a validation for timing only: no ``valid.jsonl`` row, no TensorBoard scalars."""
    writer, trainer.writer = trainer.writer, None
    trainer._timing_only = True
    try:
        yield
    finally:
        trainer.writer, trainer._timing_only = writer, False
