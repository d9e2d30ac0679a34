"""diffvoc — diffusion vocoders: DiffWave, PriorGrad, InferGrad and truncated diffusion in one toolkit."""

from diffvoc.config import Config
from diffvoc.errors import DiffvocError

__version__ = "0.1.0"

__all__ = ["Config", "DiffvocError", "Vocoder", "__version__"]


def __getattr__(name: str):  # lazy: `import diffvoc` stays light
    if name == "Vocoder":
        from diffvoc.inference.vocoder import Vocoder

        return Vocoder
    raise AttributeError(name)
