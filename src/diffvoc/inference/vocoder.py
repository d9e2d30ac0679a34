"""The user-facing :class:`Vocoder`: load a checkpoint, turn mels into waveforms.

Long inputs are vocoded in chunks of ``chunk_frames`` frames, each with ``context_frames`` of
real neighbouring context on both sides and a linear cross-fade of ``fade_frames`` at every join,
so that memory stays bounded (:meth:`Vocoder.default_chunk`; the fast engine's own cost is linear
in length inside a chunk). Noise is keyed by absolute sample position
(:class:`~diffvoc.diffusion.sampler.PositionalNoise`), so a chunked result equals the whole-file result up
to the context truncation (tested).

Bounded memory: a mel longer than :attr:`Vocoder.max_seconds` of audio (default
:func:`~diffvoc.audio.max_seconds`, 10 minutes, ``DIFFVOC_MAX_SECONDS``) is refused up front, because the
output buffer, the returned array and a wav write of it grow with the length; :meth:`Vocoder.stream` is
bounded whatever the length and has no limit.

No garbage: a mel is checked (shape, finite) after its cast to float32, and every waveform returned is
checked finite (a :class:`~diffvoc.errors.MelError` names the mel's value range otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffvoc.audio import MelSpectrogram, check_length, check_mel, load_audio, max_seconds, peak_normalize
from diffvoc.build import build, build_implicit_prior, build_sampler, load_weights
from diffvoc.checkpoint import Checkpoint, load_checkpoint
from diffvoc.config import Config
from diffvoc.diffusion.noise import FirstRowNoise, NoiseSource, PositionalNoise
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.errors import CheckpointError, DiffvocError, MelError

DEFAULT_CHECKPOINT = Path(__file__).parents[1] / "pretrained" / "default"


def _groups(frames: list[int], batch_size: int, max_frames: int) -> list[list[int]]:
    """Consecutive groups of indices into ``frames`` (sorted ascending) with at most ``batch_size``
    items and, when ``max_frames`` > 0, at most ``max_frames`` padded frames (items × longest)."""
    groups: list[list[int]] = []
    for j, n in enumerate(frames):
        g = groups[-1] if groups else None
        if g is None or len(g) >= batch_size or (max_frames and (len(g) + 1) * n > max_frames):
            groups.append([j])
        else:
            g.append(j)
    return groups


def _limit(seconds: float | None) -> float:
    """The length limit in seconds: ``seconds``, or :func:`~diffvoc.audio.max_seconds` for ``None``."""
    if seconds is None:
        return max_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (0 < seconds < math.inf):
        raise DiffvocError(f"max_seconds must be a positive, finite number, got {seconds!r}")
    return float(seconds)


def _check_options(**frames: Any) -> None:
    """The ``*_frames`` options of :meth:`Vocoder.vocode` and friends: ``None`` or a whole number >= 0."""
    for name, v in frames.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise DiffvocError(f"{name} must be a whole number >= 0, got {v!r}")


def _finite_output(wav: np.ndarray, mel: Any) -> np.ndarray:
    """``wav`` if every sample is finite; otherwise a :class:`MelError` naming the mel's value range."""
    if np.isfinite(wav).all():
        return wav
    m = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel).float()
    raise MelError(f"the mel (values {float(m.min()):.3g} .. {float(m.max()):.3g}) gives NaN or infinite audio "
                   "with this model: its values are far outside what the model was trained on")


class Vocoder:
    """A trained diffusion vocoder, ready to sample.

    Attributes:
        model: the DiffWave :class:`torch.nn.Module` (``forward(audio, diffusion_step, mel)``).
        config: the full :class:`~diffvoc.config.Config` it was trained with.
        prior: the prior (standard or PriorGrad) with its data statistics.
    """

    def __init__(self, config: Config, weights: dict[str, torch.Tensor], stats: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", where: str = "checkpoint",
                 extras: dict[str, Any] | None = None, precision: str = "auto", engine: str = "fast",
                 compile: bool = False, threads: int | None = None, max_seconds: float | None = None) -> None:
        self.config = config
        self._max_seconds = None if max_seconds is None else _limit(max_seconds)
        self.stats = dict(stats or {})
        self.device = torch.device(device)
        model, self.schedule, self.prior = build(config, self.stats)
        load_weights(model, weights, where)
        self.model = model.to(self.device).eval()
        # truncated diffusion (TDPM): x_{T_trunc} comes from the implicit prior
        self.implicit = build_implicit_prior(config, self.schedule, self.prior)
        if self.implicit is not None:
            if self.implicit.net is not None:
                if "generator" not in (extras or {}):
                    raise CheckpointError(f"{where}: this truncated model's generator weights are missing")
                load_weights(self.implicit, {f"net.{k}" if not k.startswith("net.") else k: v
                                             for k, v in extras["generator"].items()}, where + " (generator)")
            self.implicit = self.implicit.to(self.device).eval()
        self._mel = MelSpectrogram(config.audio)
        self.set_speed(precision, engine, compile, threads)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str | torch.device = "cpu",
                        **speed: Any) -> "Vocoder":
        """Load a checkpoint directory, a run directory (newest checkpoint) or an
        lmnt-com/diffwave ``weights.pt``; with no argument, the bundled model.
        ``speed``: ``precision``, ``engine``, ``compile``, ``threads`` (see :meth:`set_speed`) and
        ``max_seconds`` (the longest mel accepted, in seconds of audio)."""
        if path is None:
            path = DEFAULT_CHECKPOINT
            if not path.exists():
                raise CheckpointError("no bundled model is installed with this copy of diffvoc")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise DiffvocError(f"unknown device {device!r} (use cpu or cuda)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise DiffvocError("--device cuda asked for, but CUDA is not available")
        ck = load_checkpoint(path)
        return cls.from_checkpoint(ck, dev, **speed)

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, device: str | torch.device = "cpu", **speed: Any) -> "Vocoder":
        return cls(ck.config, ck.weights, ck.stats, device, where=str(ck.path), extras=ck.extras, **speed)

    @property
    def max_seconds(self) -> float:
        """The longest mel (in seconds of audio) :meth:`vocode` accepts: the ``max_seconds`` given, else
        :func:`~diffvoc.audio.max_seconds` (``DIFFVOC_MAX_SECONDS`` or 600 s), read at each call."""
        return _limit(self._max_seconds)

    @max_seconds.setter
    def max_seconds(self, seconds: float | None) -> None:
        self._max_seconds = None if seconds is None else _limit(seconds)

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def hop(self) -> int:
        return self.config.audio.hop_length

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """The model's own mel of a waveform at its sample rate: ``[n_mels, frames]``."""
        with torch.no_grad():
            return self._mel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).numpy()

    def analyse_file(self, path: str | Path) -> tuple[np.ndarray, int]:
        """Read, resample and peak-normalise a file as in training; return its mel and length.

        The audio is zero-padded to whole frames first, so vocoding the mel covers every sample.
        """
        audio = peak_normalize(load_audio(path, self.sample_rate, self.max_seconds), self.config.audio.peak_normalize)
        padded = np.pad(audio, (0, -len(audio) % self.hop))
        return self.mel(padded), len(audio)

    def sampler(self, steps: int | None = 6, schedule: list[float] | None = None, full: bool = False) -> DiffusionSampler:
        return build_sampler(self.config, steps, schedule, full, train=self.schedule)

    @torch.inference_mode()
    def vocode(self, mel: np.ndarray | torch.Tensor, steps: int | None = 6, schedule: list[float] | None = None,
               full: bool = False, seed: int = 0, noise: NoiseSource | None = None, chunk_frames: int | None = None,
               context_frames: int | None = None, fade_frames: int = 8) -> np.ndarray:
        """Mel ``[n_mels, frames]`` or ``[B, n_mels, frames]`` → waveform ``[T]`` or ``[B, T]``.

        ``steps`` picks a stored fast schedule (6 by default), ``schedule`` gives explicit β values,
        ``full`` runs all T training steps. ``seed`` fixes the noise (same seed, same output).
        ``chunk_frames`` (default :meth:`default_chunk`; 0: never chunk) bounds the memory.
        """
        if self.config.model.conditioning != "mel":
            raise DiffvocError("this model is not mel-conditioned; use `diffvoc generate`")
        _check_options(chunk_frames=chunk_frames, context_frames=context_frames, fade_frames=fade_frames)
        m = self._as_mel(mel)
        single = m.dim() == 2
        m = (m.unsqueeze(0) if single else m).to(self.device)
        sampler = self.sampler(steps, schedule, full)
        noise = noise or PositionalNoise(seed)
        if context_frames is None:
            context_frames = self.default_context(len(sampler))
        chunk_frames = self.default_chunk() if chunk_frames is None else chunk_frames
        out = self._vocode_chunked(m, sampler, noise, chunk_frames, context_frames, fade_frames)
        out = _finite_output(out.float().cpu().numpy(), m)
        return out[0] if single else out

    def _as_mel(self, mel: Any, what: str = "mel") -> torch.Tensor:
        """``mel`` as a float32 tensor, checked after the cast (shape, bands, finite) and against
        :attr:`max_seconds`."""
        check_mel(mel, self.config.audio.n_mels, what, frames=False)
        try:
            m = torch.as_tensor(np.asarray(mel) if not isinstance(mel, torch.Tensor) else mel, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as e:
            raise MelError(f"{what}: not an array of numbers ({str(e)[:80]})") from None
        check_mel(m, self.config.audio.n_mels, what)
        check_length(m.shape[-1] * self.hop / self.sample_rate, f"{what} ({m.shape[-1]} frames)", self.max_seconds,
                     MelError)
        return m

    def default_chunk(self) -> int:
        """Frames per chunk when none is given: 2048 (~24 s at 22.05 kHz; the context adds ~2.5 %)
        for the bf16 engine, 1024 otherwise (fp32 buffers take twice the bytes per sample), so that
        60 s of audio stays under 2 GB (``benchmarks/speed.py --memory-seconds 60``)."""
        return 2048 if self.precision == "bf16" else 1024

    def default_context(self, n_steps: int) -> int:
        """Frames of context per side: the network's receptive field times min(steps, 2), rounded up."""
        field = self.model.receptive_field() * min(n_steps, 2)
        if self.implicit is not None and self.implicit.net is not None:
            field += self.implicit.net.receptive_field()
        return int(math.ceil(field / self.hop)) + 2

    def _segment(self, mel: torch.Tensor, sampler: DiffusionSampler, noise: NoiseSource, start: int) -> torch.Tensor:
        B, _, frames = mel.shape
        length = frames * self.hop
        cond_input = self.prior.conditioner(mel)
        cond = self.model.condition(cond_input)
        std = self.prior.std(mel, length)

        denoise = self.denoiser(cond)  # the fast engine (diffvoc.inference.engine) or the reference network

        generate = None
        if self.implicit is not None:  # TDPM: x_{T_trunc} = G(z, mel)
            generate = self.implicit.start_fn(self.model, cond, cond_input, std)
        return sampler.sample(denoise, std, B, length, noise, start=start, device=self.device, generate=generate)

    def _weighted_chunk(self, mel: torch.Tensor, lo: int, a: int, b: int, last: bool, sampler: DiffusionSampler,
                        noise: NoiseSource, fade: int) -> torch.Tensor:
        """Vocode the frames ``mel`` (absolute frames ``lo``…) and weight them for the core ``[a, b)``:
        linear cross-fade ramps of ``fade`` frames centred on ``a`` (unless a = 0) and ``b`` (unless last)."""
        hop = self.hop
        seg = self._segment(mel, sampler, noise, lo * hop)
        n = torch.arange(lo * hop, lo * hop + seg.shape[-1], device=self.device, dtype=torch.float32)
        half = fade * hop // 2
        w = torch.ones_like(n)
        if a > 0:
            w = w * (((n - (a * hop - half)) / (2 * half)).clamp(0, 1) if half else (n >= a * hop).float())
        if not last:
            w = w * ((((b * hop + half) - n) / (2 * half)).clamp(0, 1) if half else (n < b * hop).float())
        return seg * w

    def _vocode_chunked(self, mel: torch.Tensor, sampler: DiffusionSampler, noise: NoiseSource,
                        chunk: int, context: int, fade: int) -> torch.Tensor:
        B, _, frames = mel.shape
        hop = self.hop
        if chunk <= 0 or frames <= chunk + 2 * fade:
            return self._segment(mel, sampler, noise, 0)
        fade = max(0, min(fade, chunk // 2))
        out = torch.zeros(B, frames * hop, device=self.device)
        for a in range(0, frames, chunk):
            b = min(a + chunk, frames)
            lo, hi = max(0, a - context - fade), min(frames, b + context + fade)
            out[:, lo * hop:hi * hop] += self._weighted_chunk(mel[..., lo:hi], lo, a, b, b >= frames, sampler, noise, fade)
        return out

    @torch.inference_mode()
    def stream(self, blocks: Iterable[np.ndarray], steps: int | None = 6, schedule: list[float] | None = None,
               full: bool = False, seed: int = 0, chunk_frames: int = 64, context_frames: int | None = None,
               fade_frames: int = 8) -> Iterator[np.ndarray]:
        """Vocode mel frames as they arrive (e.g. from a TTS model) and yield audio as soon as it is final.

        ``blocks`` yields mels ``[n_mels, k]`` of any k. A chunk of ``chunk_frames`` is vocoded once
        ``context_frames + fade_frames`` frames beyond it have arrived (the receptive-field look-ahead);
        the rest is flushed when the input ends. The concatenated output equals
        ``vocode(all_frames, chunk_frames=..., context_frames=..., fade_frames=...)`` for inputs longer
        than ``chunk_frames + 2 * fade_frames``.
        """
        if self.config.model.conditioning != "mel":
            raise DiffvocError("this model is not mel-conditioned")
        _check_options(chunk_frames=chunk_frames, context_frames=context_frames, fade_frames=fade_frames)
        if chunk_frames < 1:
            raise DiffvocError(f"chunk_frames must be >= 1 for streaming, got {chunk_frames!r}")
        sampler = self.sampler(steps, schedule, full)
        noise = PositionalNoise(seed)
        ctx = self.default_context(len(sampler)) if context_frames is None else context_frames
        chunk, hop = max(1, chunk_frames), self.hop
        fade = max(0, min(fade_frames, chunk // 2))
        buf = torch.zeros(1, self.config.audio.n_mels, 0, device=self.device)
        base = 0  # absolute frame index of buf[..., 0]
        acc = torch.zeros(1, 0, device=self.device)  # pending output from sample `emitted` on
        emitted, a = 0, 0

        def run(b: int, total: int | None) -> torch.Tensor:
            lo = max(0, a - ctx - fade)
            hi = b + ctx + fade if total is None else min(total, b + ctx + fade)
            return self._weighted_chunk(buf[..., lo - base:hi - base], lo, a, b, total is not None and b >= total,
                                        sampler, noise, fade), lo

        def add(seg: torch.Tensor, lo: int) -> None:
            nonlocal acc
            end = lo * hop + seg.shape[-1]
            if end - emitted > acc.shape[-1]:
                acc = torch.cat([acc, acc.new_zeros(1, end - emitted - acc.shape[-1])], dim=-1)
            start = max(lo * hop, emitted)  # earlier samples are final already (their weight here is 0)
            acc[:, start - emitted:end - emitted] += seg[:, start - lo * hop:]

        for block in blocks:
            check_mel(block, self.config.audio.n_mels, "streamed mel block", frames=False)
            if np.asarray(block).ndim != 2:
                raise MelError("streamed mel block: expected [n_mels, frames]")
            block = torch.as_tensor(np.asarray(block, np.float32))
            check_mel(block, self.config.audio.n_mels, "streamed mel block")
            buf = torch.cat([buf, block.to(self.device)[None]], dim=-1)
            while base + buf.shape[-1] >= a + chunk + ctx + fade:
                add(*run(a + chunk, None))
                a += chunk
                ready = a * hop - fade * hop // 2 - emitted
                if ready > 0:
                    yield _finite_output(acc[0, :ready].float().cpu().numpy(), buf)
                    acc, emitted = acc[:, ready:], emitted + ready
                keep = max(0, a - ctx - fade) - base  # drop frames no later chunk needs
                buf, base = buf[..., keep:], base + keep
        total = base + buf.shape[-1]
        if total == 0:
            return
        if a == 0 and total <= chunk + 2 * fade:  # short input: one pass, as vocode() does
            yield _finite_output(self._segment(buf, sampler, noise, 0)[0].float().cpu().numpy(), buf)
            return
        while a < total:
            b = min(a + chunk, total)
            add(*run(b, total))
            a = b
        yield _finite_output(acc[0, : total * hop - emitted].float().cpu().numpy(), buf)

    # ---- speed (issue 7; diffvoc.inference.engine) --------------------------------------------------------
    def set_speed(self, precision: str = "auto", engine: str = "fast", compile: bool = False,
                  threads: int | None = None) -> None:
        """Choose how the network runs: ``precision`` auto (the default: bf16 on a CPU with AMX /
        AVX512-BF16 and on CUDA, fp32 elsewhere) | fp32 (exact: equal to the trained network, and to
        lmnt-com/diffwave for its checkpoints, to float rounding) | bf16 (refused on a CPU without bf16
        support), ``engine`` fast (:class:`~diffvoc.inference.engine.FastDenoiser`) | reference (the network as
        trained; fp32 under auto), ``compile`` (torch.compile, eager fallback) and ``threads``
        (``torch.set_num_threads``, process-wide). :attr:`precision` is what ``auto`` resolved to."""
        from diffvoc.inference.engine import ENGINES, resolve_precision

        if engine not in ENGINES:
            raise DiffvocError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        dtype = resolve_precision(precision, self.device, engine)  # fails early on an unsupported choice
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
            raise DiffvocError(f"threads must be a whole number >= 1, got {threads!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.precision = "bf16" if dtype == torch.bfloat16 else "fp32"
        self.speed = {"precision": self.precision, "engine": engine, "compile": bool(compile)}
        self._factory, self._factory_key = None, None

    def denoiser(self, cond: torch.Tensor | None, lengths: list[int] | None = None):
        """``denoise(x, t) -> eps`` for the sampler, with the conditioner ``cond`` fixed. The engine is
        rebuilt when the model's weights change (it reads them once)."""
        from diffvoc.inference.engine import DenoiserFactory

        params = list(self.model.parameters())
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._factory is None or key != self._factory_key:
            self._factory = DenoiserFactory(self.model, **self.speed)
            self._factory_key = key
        return self._factory(cond, lengths)

    @torch.inference_mode()
    def vocode_batch(self, mels: list[np.ndarray], steps: int | None = 6, schedule: list[float] | None = None,
                     full: bool = False, seed: int = 0, batch_size: int = 8, chunk_frames: int | None = None,
                     **kw: Any) -> list[np.ndarray]:
        """Vocode many mels ``[n_mels, frames_i]`` of different lengths; returns one waveform each
        (``frames_i · hop`` samples), equal to ``vocode(mel_i, seed=seed)`` one by one.

        Short mels are grouped (``batch_size``, similar lengths together) and run as one batch: each
        item keeps its own conditioner, prior, noise and length (the fast engine treats every item as
        a sequence of its own; the reference network sees zero padding after a shorter item, which
        changes its last receptive field's worth of samples slightly). A batch holds at most two chunks'
        worth of padded frames (so memory stays what vocoding two chunks takes); mels longer than a
        chunk are vocoded alone, in chunks."""
        if self.config.model.conditioning != "mel":
            raise DiffvocError("this model is not mel-conditioned; use `diffvoc generate`")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DiffvocError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        _check_options(chunk_frames=chunk_frames, **{k: v for k, v in kw.items() if k.endswith("_frames")})
        if isinstance(mels, (np.ndarray, torch.Tensor)) or not all(hasattr(m, "shape") for m in mels):
            raise DiffvocError("vocode_batch takes a list of 2-D mels [n_mels, frames]")
        mels = list(mels)
        for m in mels:
            check_mel(m, self.config.audio.n_mels, frames=False)
            if np.asarray(m).ndim != 2:
                raise DiffvocError("vocode_batch takes a list of 2-D mels [n_mels, frames]")
        mels = [self._as_mel(m).numpy() for m in mels]  # checked after the cast to float32
        sampler = self.sampler(steps, schedule, full)
        if self.implicit is not None:  # truncated models: x_{T_trunc} per item from the implicit prior
            return [self.vocode(m, steps=steps, schedule=schedule, full=full, seed=seed,
                                chunk_frames=chunk_frames, **kw) for m in mels]
        out: list[np.ndarray | None] = [None] * len(mels)
        fade = kw.get("fade_frames", 8)
        chunk_frames = self.default_chunk() if chunk_frames is None else chunk_frames
        short = [i for i, m in enumerate(mels) if not (chunk_frames > 0 and m.shape[-1] > chunk_frames + 2 * fade)]
        for i in sorted(set(range(len(mels))) - set(short)):
            out[i] = self.vocode(mels[i], steps=steps, schedule=schedule, full=full, seed=seed,
                                 chunk_frames=chunk_frames, **kw)
        short.sort(key=lambda i: mels[i].shape[-1])
        hop = self.hop
        for idx in _groups([mels[i].shape[-1] for i in short], max(1, batch_size),
                           2 * chunk_frames if chunk_frames > 0 else 0):
            idx = [short[j] for j in idx]
            frames = [mels[i].shape[-1] for i in idx]
            width = max(frames)
            length = width * hop
            conds, stds = [], []
            for i in idx:  # per item, unpadded: its own conditioner and prior σ, then zero padding
                m = torch.as_tensor(np.asarray(mels[i], np.float32), device=self.device)[None]
                c = self.model.condition(self.prior.conditioner(m))
                conds.append(torch.nn.functional.pad(c, (0, length - c.shape[-1])))
                sd = self.prior.std(m, m.shape[-1] * hop).expand(1, m.shape[-1] * hop)
                stds.append(torch.nn.functional.pad(sd, (0, length - sd.shape[-1]), value=1.0))
            cond, std = torch.cat(conds), torch.cat(stds)
            lengths = [f * hop for f in frames]
            denoise = self.denoiser(cond, lengths)
            noise = FirstRowNoise(PositionalNoise(seed))
            wav = sampler.sample(denoise, std, len(idx), length, noise, start=0, device=self.device)
            for j, i in enumerate(idx):
                out[i] = _finite_output(wav[j, :lengths[j]].float().cpu().numpy(), mels[i])
        return out  # type: ignore[return-value]

    def vocode_file(self, path: str | Path, **kw: Any) -> np.ndarray:
        """Analysis–synthesis of an audio file (its mel, vocoded), trimmed to the input's length."""
        mel, length = self.analyse_file(path)
        return self.vocode(mel, **kw)[:length]
