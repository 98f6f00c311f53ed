"""Real recorded speech for tests and benchmarks, taken from Debian packages at test time.

Nothing here is committed audio: the recordings come from two Debian packages that `.ci/run`
installs when they are missing, and are used for evaluation only.

- ``asterisk-core-sounds-en-wav``: Asterisk's English telephone prompts (8 kHz, 16-bit mono WAV,
  one female voice), with their transcripts in ``core-sounds-en.txt.gz``;
- ``pocketsphinx-testdata``: five LibriVox read-speech utterances (16 kHz) with transcripts.

Import it as ``from realspeech import ...`` in tests/ (pytest puts tests/ on the path) and as
``from tests.realspeech import ...`` from benchmarks/.

When a package is missing the functions call :func:`pytest.skip` with the install command,
except under ``CI=true``, where they fail: CI installs both packages and must use them.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pytest

ASTERISK_DIR: Final = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT: Final = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
LIBRIVOX_DIR: Final = Path("/usr/share/pocketsphinx/test/data/librivox")


@dataclass(frozen=True)
class Utterance:
    """One recording: `pcm` int16 mono at `rate_hz`, and what is said in it."""

    name: str
    path: Path
    rate_hz: int
    pcm: np.ndarray
    text: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate_hz


def _missing(package: str) -> None:
    msg = (f"real speech needs the Debian package {package} "
           f"(apt-get install {package}; .ci/run installs it)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono, got {w.getsampwidth() * 8}-bit "
                             f"{w.getnchannels()}-channel")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").copy(), w.getframerate()


@functools.cache
def asterisk_prompts(min_words: int = 4) -> tuple[Utterance, ...]:
    """Asterisk prompts with at least `min_words` words of transcript, sorted by name.

    Prompts whose transcript is a description (``[ascending tones]``) or has digits spelled as
    numerals are left out; ``...`` and other punctuation stay in the text (the WER
    normalisation removes them).
    """
    if not ASTERISK_DIR.is_dir() or not ASTERISK_TEXT.is_file():
        _missing("asterisk-core-sounds-en-wav")
    texts: dict[str, str] = {}
    with gzip.open(ASTERISK_TEXT, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            name, sep, text = line.partition(":")
            if not sep or line.startswith(";"):
                continue
            text = text.strip()
            if not text or "[" in text or re.search(r"\d", text):
                continue
            texts[name.strip()] = text
    out = []
    for name in sorted(texts):
        path = ASTERISK_DIR / f"{name}.wav"
        if not path.is_file() or len(texts[name].split()) < min_words:
            continue
        pcm, rate = _read_wav(path)
        out.append(Utterance(name, path, rate, pcm, texts[name]))
    if not out:
        _missing("asterisk-core-sounds-en-wav")
    return tuple(out)


@functools.cache
def librivox() -> tuple[Utterance, ...]:
    """The five LibriVox utterances of pocketsphinx-testdata (16 kHz read speech)."""
    trans = LIBRIVOX_DIR / "transcription"
    if not trans.is_file():
        _missing("pocketsphinx-testdata")
    out = []
    for line in trans.read_text(encoding="utf-8").splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((\S+)\)", line.strip())
        if not m:
            continue
        path = LIBRIVOX_DIR / f"{m.group(2)}.wav"
        pcm, rate = _read_wav(path)
        out.append(Utterance(m.group(2), path, rate, pcm, m.group(1)))
    return tuple(out)


@dataclass(frozen=True)
class Call:
    """A long recording made of real prompts with pauses between them."""

    rate_hz: int
    pcm: np.ndarray
    text: str
    #: (start_ms, end_ms, text) of every prompt in the call.
    segments: tuple[tuple[int, int, str], ...]

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate_hz


def long_call(seconds: float, *, pause_ms: int = 1200, seed: int = 0) -> Call:
    """An 8 kHz call at least `seconds` long: Asterisk prompts in a seeded random order (each used
    again once all have been), separated by `pause_ms` of low-level noise (about -70 dBFS), so
    that an endpointer cuts one segment per prompt."""
    prompts = asterisk_prompts()
    rng = np.random.default_rng(seed)
    rate = prompts[0].rate_hz
    pause = int(rate * pause_ms / 1000)
    parts: list[np.ndarray] = []
    segments = []
    pos = 0
    order: list[int] = []
    while pos < seconds * rate:
        if not order:
            order = list(rng.permutation(len(prompts)))
        u = prompts[order.pop()]
        gap = np.round(rng.normal(0, 10, pause)).astype(np.int16)
        parts += [gap, u.pcm]
        start = pos + pause
        pos = start + len(u.pcm)
        segments.append((start * 1000 // rate, pos * 1000 // rate, u.text))
    tail = np.round(rng.normal(0, 10, pause)).astype(np.int16)
    parts.append(tail)
    pcm = np.concatenate(parts)
    return Call(rate, pcm, " ".join(t for _, _, t in segments), tuple(segments))
