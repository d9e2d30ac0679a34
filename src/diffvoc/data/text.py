"""The text front end: text → espeak-ng phonemes with word boundaries and punctuation as tokens.

espeak-ng (``espeak-ng -q --ipa --sep=_``, run locally; nothing is downloaded) turns each stretch of
text between punctuation marks into IPA phonemes, ``_`` between the phonemes of a word and a space
between words. Stress and length marks stay on their phoneme (``ˈoʊ``, ``uː``), so a token is one
phone with its stress, as the official code's ARPAbet-with-stress tokens are (the official PriorGrad-acoustic code).

A sentence becomes ``# h ə l ˈoʊ # w ˈɜː l d , # h ˈaʊ … ? <eos>``: ``#`` opens the sentence and
separates words, punctuation marks are tokens of their own, ``<eos>`` ends it. ``<pad>`` (id 0),
``<eos>`` and ``<unk>`` (an unseen phone at inference) are always in the :class:`PhonemeInventory`,
which is stored as a plain YAML list in the checkpoint.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from diffvoc.errors import DiffvocError

PAD, EOS, UNK, WORD = "<pad>", "<eos>", "<unk>", "#"
SPECIAL = (PAD, EOS, UNK, WORD)
PUNCTUATION = ",.;:!?"
_SPLIT = re.compile(r"([,.;:!?]+|\s[-–—]+\s)")  # a run of marks (or a dash between words) closes a stretch


class TextError(DiffvocError):
    """The text cannot be turned into phonemes (empty, or espeak-ng missing or failing)."""


@functools.lru_cache(maxsize=1)
def _espeak() -> str:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise TextError("espeak-ng is not installed; install it (e.g. apt-get install espeak-ng) to phonemise text")
    return exe


@functools.lru_cache(maxsize=4096)
def _phonemize_stretch(text: str, language: str) -> tuple[tuple[str, ...], ...]:
    """One stretch of text (no punctuation) → words, each a tuple of phone tokens."""
    try:
        r = subprocess.run([_espeak(), "-q", "--ipa", "--sep=_", "-v", language, text], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TextError(f"espeak-ng failed on {text!r} ({type(e).__name__})") from None
    if r.returncode != 0:
        raise TextError(f"espeak-ng failed (language {language!r}): {r.stderr.strip().splitlines()[:1]}")
    words = []
    for word in r.stdout.split():
        phones = tuple(p for p in word.split("_") if p)
        if phones:
            words.append(phones)
    return tuple(words)


def phonemize(text: str, language: str = "en-us") -> list[str]:
    """``text`` → tokens: ``#``, phones, ``#`` between words, punctuation marks, ``<eos>`` last.

    Raises :class:`TextError` when the text holds nothing to speak.
    """
    if not isinstance(text, str) or not text.strip():
        raise TextError("the text is empty")
    tokens: list[str] = [WORD]
    for part in _SPLIT.split(" " + text.replace("\n", " ") + " "):
        if not part or not part.strip():
            continue
        marks = part.strip()
        if all(c in PUNCTUATION + "-–—" for c in marks):
            mark = next((c for c in marks if c in PUNCTUATION), ",")  # a dash reads as a comma
            if tokens[-1] == WORD and len(tokens) > 1:
                tokens.pop()
            if tokens[-1] not in PUNCTUATION:
                tokens.append(mark)
            continue
        for phones in _phonemize_stretch(part.strip(), language):
            if tokens[-1] != WORD:
                tokens.append(WORD)
            tokens.extend(phones)
    if not any(t not in SPECIAL and t not in PUNCTUATION for t in tokens):
        raise TextError(f"the text has nothing to speak: {text!r}")
    tokens.append(EOS)
    return tokens


@dataclass(frozen=True)
class PhonemeInventory:
    """The token ↔ id table; ``symbols[0]`` is ``<pad>``. Stored in the checkpoint as a YAML list."""

    symbols: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.symbols[: len(SPECIAL)]) != SPECIAL:
            raise TextError(f"a phoneme inventory must start with {list(SPECIAL)}")
        if len(set(self.symbols)) != len(self.symbols):
            raise TextError("a phoneme inventory holds a symbol twice")

    @classmethod
    def build(cls, sequences: Iterable[list[str]]) -> "PhonemeInventory":
        """All tokens of ``sequences`` (sorted, after the special tokens and the punctuation marks)."""
        seen = {t for seq in sequences for t in seq} - set(SPECIAL) - set(PUNCTUATION)
        return cls(SPECIAL + tuple(PUNCTUATION) + tuple(sorted(seen)))

    @classmethod
    def from_list(cls, symbols: list[str]) -> "PhonemeInventory":
        return cls(tuple(str(s) for s in symbols))

    def to_list(self) -> list[str]:
        return list(self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    def encode(self, tokens: list[str]) -> list[int]:
        """Token ids; a token outside the inventory becomes ``<unk>``."""
        unk = self._index[UNK]
        return [self._index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.symbols[int(i)] for i in ids]
