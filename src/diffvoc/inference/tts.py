"""Text to speech: the PriorGrad acoustic model (text → mel) followed by a vocoder (mel → waveform).

    from diffvoc.inference.tts import TextToSpeech
    tts = TextToSpeech.from_pretrained()                       # bundled acoustic model + bundled vocoder
    wav, sr = tts.synthesize("Hello world.", speaker="flite:slt", steps=6)

The vocoder is the bundled diffusion vocoder (:meth:`diffvoc.Vocoder.from_pretrained`), any vocoder
checkpoint, or ``"griffin-lim"``. The acoustic model's mel settings must be the vocoder's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffvoc.acoustic_checkpoint import AcousticCheckpoint, load_acoustic_checkpoint
from diffvoc.build import load_weights
from diffvoc.data.text import PhonemeInventory, phonemize
from diffvoc.diffusion.noise import GeneratorNoise
from diffvoc.diffusion.phone_prior import PhonePrior
from diffvoc.diffusion.sampler import DiffusionSampler
from diffvoc.errors import CheckpointError, DiffvocError
from diffvoc.models.acoustic import AcousticModel, generate

DEFAULT_ACOUSTIC = Path(__file__).parents[1] / "pretrained" / "acoustic"
GRIFFIN_LIM = "griffin-lim"
AVERAGE_SPEAKER = "average"


class TextToSpeech:
    """A trained acoustic model with its phoneme inventory, speakers and phone prior, plus a vocoder.

    Args:
        checkpoint: a loaded :class:`~diffvoc.acoustic_checkpoint.AcousticCheckpoint`.
        vocoder: ``None`` (the bundled vocoder, loaded on first use), ``"griffin-lim"``, a checkpoint
            path or a :class:`~diffvoc.inference.vocoder.Vocoder`.
    """

    def __init__(self, checkpoint: AcousticCheckpoint, vocoder: Any = None, device: str | torch.device = "cpu") -> None:
        self.checkpoint = checkpoint
        self.config = cfg = checkpoint.config
        self.device = torch.device(device)
        self.inventory = PhonemeInventory.from_list(checkpoint.stats["phonemes"])
        self.speakers: list[str] = list(checkpoint.stats["speakers"])
        self.default_speaker: str = checkpoint.stats.get("default_speaker") or AVERAGE_SPEAKER
        self.model = AcousticModel(cfg.model, len(self.inventory), len(self.speakers), cfg.audio.n_mels,
                                   cfg.diffusion.steps)
        load_weights(self.model, {k: v.float() for k, v in checkpoint.weights.items()}, str(checkpoint.path))
        self.model = self.model.to(self.device).eval()
        mean, std = checkpoint.prior["mean"], checkpoint.prior["std"]
        if mean.shape != (len(self.inventory), cfg.audio.n_mels):
            raise CheckpointError(f"{checkpoint.path}: the phone prior has shape {tuple(mean.shape)}, expected "
                                  f"({len(self.inventory)}, {cfg.audio.n_mels})")
        self.prior = PhonePrior(mean, std).to(self.device)
        self._vocoder_spec = vocoder
        self._vocoder = vocoder if vocoder is not None and not isinstance(vocoder, (str, Path)) else None
        if isinstance(vocoder, (str, Path)) and str(vocoder) != GRIFFIN_LIM:
            self._vocoder = self._load_vocoder(vocoder)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, vocoder: Any = None,
                        device: str | torch.device = "cpu") -> "TextToSpeech":
        """Load an acoustic checkpoint (or run directory); with no ``path``, the bundled model."""
        if path is None:
            path = DEFAULT_ACOUSTIC
            if not (path / "config.yaml").is_file():
                raise CheckpointError("no bundled acoustic model is installed with this copy of diffvoc")
        return cls(load_acoustic_checkpoint(path), vocoder, device)

    # ------------------------------------------------------------------------------------------ parts
    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def steps(self) -> list[int]:
        """The step counts with a stored (searched) fast schedule."""
        return sorted(self.config.diffusion.fast_schedules)

    def _load_vocoder(self, path: str | Path | None):
        from diffvoc.inference.vocoder import Vocoder

        voc = Vocoder.from_pretrained(path, device=self.device)
        a, b = voc.config.audio, self.config.audio
        if (a.preset, a.sample_rate, a.hop_length, a.n_mels, a.n_fft, a.fmin, a.fmax) != \
                (b.preset, b.sample_rate, b.hop_length, b.n_mels, b.n_fft, b.fmin, b.fmax):
            raise DiffvocError(f"the vocoder's mel ({a.preset}, {a.sample_rate} Hz, hop {a.hop_length}, {a.n_mels} "
                               f"bands) is not the acoustic model's ({b.preset}, {b.sample_rate} Hz, "
                               f"hop {b.hop_length}, {b.n_mels} bands)")
        return voc

    @property
    def uses_griffin_lim(self) -> bool:
        return self._vocoder is None and str(self._vocoder_spec) == GRIFFIN_LIM

    def speaker_id(self, speaker: str | None) -> int:
        """The embedding row of ``speaker`` (``None``: the default speaker; ``"average"``: row 0)."""
        name = self.default_speaker if speaker is None else speaker
        if name == AVERAGE_SPEAKER:
            return 0
        if name not in self.speakers:
            shown = ", ".join(self.speakers[:6]) + (", ..." if len(self.speakers) > 6 else "")
            raise DiffvocError(f"unknown speaker {name!r}; this model knows {len(self.speakers)} "
                               f"({shown}) and {AVERAGE_SPEAKER!r}")
        return self.speakers.index(name) + 1

    def sampler(self, steps: int) -> DiffusionSampler:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps not in self.config.diffusion.fast_schedules:
            raise DiffvocError(f"steps must be one of {self.steps} (the stored fast schedules), got {steps!r}")
        return DiffusionSampler.fast(self.config.diffusion.schedule(), self.config.diffusion.fast_schedules[steps],
                                     clamp=False)

    # ---------------------------------------------------------------------------------------- synthesis
    @torch.inference_mode()
    def mel(self, text: str, speaker: str | None = None, steps: int = 6, seed: int = 0,
            length_scale: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
        """Text → log-mel ``[n_mels, frames]`` and ``{tokens, durations}`` (predicted, frames per token)."""
        if not length_scale > 0:
            raise DiffvocError(f"length_scale must be positive, got {length_scale}")
        spk = self.speaker_id(speaker)
        sampler = self.sampler(steps)
        tokens = phonemize(text, self.config.text.language)
        ids = torch.tensor([self.inventory.encode(tokens)], device=self.device)
        noise = GeneratorNoise(torch.Generator(device=self.device).manual_seed(int(seed)))
        mel, dur, _ = generate(self.model, self.prior, sampler, ids, torch.tensor([spk], device=self.device), noise,
                               length_scale=length_scale)
        return mel[0].float().cpu().numpy(), {"tokens": tokens, "durations": dur[0].cpu().tolist()}

    def vocode(self, mel: np.ndarray, vocoder_steps: int = 6, seed: int = 0) -> np.ndarray:
        """A mel through the chosen vocoder (Griffin-Lim, or the diffusion vocoder at ``vocoder_steps``)."""
        if self.uses_griffin_lim:
            from diffvoc.inference.griffin_lim import griffin_lim

            return griffin_lim(mel, self.config.audio, seed=seed)
        if self._vocoder is None:
            self._vocoder = self._load_vocoder(None)
        return np.asarray(self._vocoder.vocode(mel, steps=vocoder_steps, seed=seed), dtype=np.float32)

    def synthesize(self, text: str, speaker: str | None = None, steps: int = 6, seed: int = 0,
                   vocoder_steps: int = 6, length_scale: float = 1.0) -> tuple[np.ndarray, int]:
        """Text → (waveform float32 in [−1, 1], sample rate)."""
        mel, _ = self.mel(text, speaker, steps, seed, length_scale)
        return self.vocode(mel, vocoder_steps, seed), self.sample_rate
