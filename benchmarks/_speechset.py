"""Labelled speech/noise set for the VAD benchmark, built in code (espeak-ng speech + synthetic noise).

Every track is deterministic (seeded) and cached per process:

- speech: espeak-ng utterances (English ``en-us+m3``, Mandarin ``cmn``), each normalised to an
  active speech level of -26 dBFS, placed between 0.8-1.6 s silences, resampled from 22050 Hz to
  8 or 16 kHz with ``scipy.signal.resample_poly``;
- frame labels from the clean signal: a frame is speech when its clean energy is within
  ``LABEL_RANGE_DB`` of the loudest clean frame (silence between words is non-speech);
- noise: white, pink (1/f), babble-like (six other espeak-ng talkers, summed) and mains hum
  (50 Hz with harmonics for English, 60 Hz for Mandarin), scaled to an SNR measured as
  (mean clean power over speech frames) / (mean noise power);
- mixtures are rounded and clipped to int16; :func:`g711_roundtrip` gives the u-law copy.

Real recorded speech (:func:`real_track`): Asterisk's 8 kHz telephone prompts and the LibriVox
16 kHz read speech of ``tests/realspeech.py`` (Debian packages, nothing committed), each
utterance normalised to the same -26 dBFS active level and placed between 0.8-1.6 s pauses of
-70 dBFS hiss (a quiet line, not digital silence); labels and noises as above. The prompts are
split in two halves by name order: ``"tune"`` (what the detector was tuned on) and ``"test"``
(held out); the five LibriVox files are too few to split and serve both.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np

LANGUAGES: Final = {"en": "en-us+m3", "zh": "cmn"}
NOISES: Final = ("white", "pink", "babble", "hum")
SNRS_DB: Final = (20, 10, 5, 0)
RATES: Final = (8000, 16000)
#: Speech-active level of every utterance, dBFS.
SPEECH_LEVEL_DBFS: Final = -26.0
#: A clean frame is labelled speech when within this many dB of the loudest clean frame.
LABEL_RANGE_DB: Final = 40.0
#: Frame length used for labels (10 ms; 20/30 ms labels are derived by OR-ing, see labels()).
LABEL_FRAME_MS: Final = 10

_TEXTS: Final = {
    "en": (
        "Please call me back at five thirty this afternoon.",
        "The quick brown fox jumps over the lazy dog.",
        "Speech recognition works best with clean audio.",
        "Turn left at the next intersection and continue straight ahead.",
        "My account number is four seven two nine one.",
        "Thank you for calling, how can I help you today?",
    ),
    "zh": (
        "我想预订两张去上海的火车票",
        "欢迎大家使用华为云语音交互服务",
        "请在听到提示音后说出您的问题",
        "明天上午十点在三号会议室开会",
        "您的快递已经送到楼下的服务台",
        "今天的天气非常适合出去散步",
    ),
}
_BABBLE: Final = (
    ("en-us+f3", "The meeting has been moved to Thursday morning at nine o'clock sharp."),
    ("en-us+m1", "I would like to order a large pizza with mushrooms and extra cheese."),
    ("en+f2", "Could you tell me where the nearest train station is, please?"),
    ("cmn", "我们下午去图书馆看书然后一起吃晚饭好不好"),
    ("en-us+m7", "Remember to bring your passport and the printed boarding pass."),
    ("cmn", "这个周末的音乐会门票已经全部卖完了"),
)


@dataclass(frozen=True)
class Utterance:
    """One utterance's placement in a track (samples at the track's rate, and its true endpoints)."""

    start: int  #: first sample of the placed utterance audio
    stop: int  #: one past its last sample
    speech_start_ms: int  #: start of its first labelled speech frame
    speech_end_ms: int  #: end of its last labelled speech frame


@dataclass(frozen=True)
class Track:
    """A clean speech track with labels, at one rate."""

    language: str
    rate_hz: int
    clean: np.ndarray  #: float64 clean speech (int16 scale)
    labels: np.ndarray  #: bool per LABEL_FRAME_MS frame
    utterances: tuple[Utterance, ...]


@functools.cache
def _synth(text: str, voice: str) -> np.ndarray:
    from sis_stream.engines.espeak import synthesize

    return synthesize(text, voice=voice).samples.astype(np.float64)


def _resample(x: np.ndarray, rate_hz: int) -> np.ndarray:
    from scipy.signal import resample_poly

    g = np.gcd(rate_hz, 22050)
    return resample_poly(x, rate_hz // g, 22050 // g)


def _frame_db(x: np.ndarray, frame_len: int) -> np.ndarray:
    n = len(x) // frame_len
    ms = np.mean(x[: n * frame_len].reshape(n, frame_len) ** 2, axis=1)
    return 10 * np.log10(np.maximum(ms, 1e-10 * 32768.0**2) / 32768.0**2)


@functools.cache
def track(language: str, rate_hz: int) -> Track:
    """The clean track of one language at one rate (about 30 s, six utterances)."""
    rng = np.random.default_rng(1234 + rate_hz + (7 if language == "zh" else 0))
    frame_len = rate_hz * LABEL_FRAME_MS // 1000
    parts: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    target = 32768.0 * 10 ** (SPEECH_LEVEL_DBFS / 20)
    for text in _TEXTS[language]:
        gap = frame_len * int(rng.integers(80, 160))  # 0.8-1.6 s, whole label frames
        parts.append(np.zeros(gap))
        pos += gap
        u = _resample(_synth(text, LANGUAGES[language]), rate_hz)
        db = _frame_db(u, frame_len)
        active = db > db.max() - LABEL_RANGE_DB
        level = np.sqrt(np.mean(u[: len(db) * frame_len].reshape(len(db), -1)[active] ** 2))
        u = u * (target / level)
        u = np.concatenate((u, np.zeros(-len(u) % frame_len)))
        parts.append(u)
        spans.append((pos, pos + len(u)))
        pos += len(u)
    parts.append(np.zeros(frame_len * 150))
    clean = np.concatenate(parts)
    db = _frame_db(clean, frame_len)
    labels = db > db.max() - LABEL_RANGE_DB
    utts = []
    for a, b in spans:
        idx = np.flatnonzero(labels[a // frame_len : b // frame_len]) + a // frame_len
        utts.append(Utterance(a, b, int(idx[0]) * LABEL_FRAME_MS, int(idx[-1] + 1) * LABEL_FRAME_MS))
    return Track(language, rate_hz, clean, labels, tuple(utts))


#: SNRs of the real-speech tables; None is the clean recording (only the -70 dBFS pause hiss).
REAL_SNRS_DB: Final = (None, 20, 10, 5, 0)
#: Level of the hiss in the pauses between real utterances, dBFS.
PAUSE_HISS_DBFS: Final = -70.0


def _real_utterances(rate_hz: int, split: str) -> list[np.ndarray]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.realspeech import asterisk_prompts, librivox

    if rate_hz == 16000:
        return [u.pcm.astype(np.float64) for u in librivox()]
    prompts = sorted(asterisk_prompts(), key=lambda u: u.name)
    half = prompts[0::2] if split == "tune" else prompts[1::2]
    # 24 prompts of the half (about a minute and a half of speech), spread over it.
    pick = np.linspace(0, len(half) - 1, 24).round().astype(int)
    return [half[i].pcm.astype(np.float64) for i in pick]


@functools.cache
def real_track(rate_hz: int, split: str = "test") -> Track:
    """Real recorded speech with pauses, at 8 kHz (Asterisk prompts) or 16 kHz (LibriVox)."""
    if split not in ("tune", "test"):
        raise ValueError(f"split must be 'tune' or 'test', got {split!r}")
    rng = np.random.default_rng(4321 + rate_hz + (1 if split == "test" else 0))
    frame_len = rate_hz * LABEL_FRAME_MS // 1000
    target = 32768.0 * 10 ** (SPEECH_LEVEL_DBFS / 20)
    parts: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for u in _real_utterances(rate_hz, split):
        gap = frame_len * int(rng.integers(80, 160))
        parts.append(np.zeros(gap))
        pos += gap
        db = _frame_db(u, frame_len)
        active = db > db.max() - LABEL_RANGE_DB
        level = np.sqrt(np.mean(u[: len(db) * frame_len].reshape(len(db), -1)[active] ** 2))
        u = u * (target / level)
        u = np.concatenate((u, np.zeros(-len(u) % frame_len)))
        parts.append(u)
        spans.append((pos, pos + len(u)))
        pos += len(u)
    parts.append(np.zeros(frame_len * 150))
    clean = np.concatenate(parts)
    hiss = rng.standard_normal(len(clean)) * 32768.0 * 10 ** (PAUSE_HISS_DBFS / 20)
    is_gap = np.ones(len(clean), bool)
    for a, b in spans:
        is_gap[a:b] = False
    clean = clean + hiss * is_gap
    db = _frame_db(clean, frame_len)
    labels_ = db > db.max() - LABEL_RANGE_DB
    utts = []
    for a, b in spans:
        idx = np.flatnonzero(labels_[a // frame_len : b // frame_len]) + a // frame_len
        utts.append(Utterance(a, b, int(idx[0]) * LABEL_FRAME_MS, int(idx[-1] + 1) * LABEL_FRAME_MS))
    return Track("en", rate_hz, clean, labels_, tuple(utts))


def labels(tr: Track, frame_ms: int) -> np.ndarray:
    """Labels for `frame_ms` frames: speech when any 10 ms label frame inside is speech."""
    k = frame_ms // LABEL_FRAME_MS
    n = len(tr.labels) // k
    return tr.labels[: n * k].reshape(n, k).any(axis=1)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


@functools.cache
def _babble(n: int, rate_hz: int) -> np.ndarray:
    rng = np.random.default_rng(99 + rate_hz)
    out = np.zeros(n)
    for voice, text in _BABBLE:
        s = _resample(_synth(text, voice), rate_hz)
        s = s / np.sqrt(np.mean(s**2))
        reps = np.tile(np.concatenate((s, np.zeros(rate_hz // 5))), n // len(s) + 2)
        off = int(rng.integers(0, len(s)))
        out += reps[off : off + n]
    return out


def noise(kind: str, n: int, rate_hz: int, language: str) -> np.ndarray:
    """Unit-power noise of one kind, `n` samples, seeded."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{rate_hz}/{language}/{n}".encode()))
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _pink(n, rng)
    elif kind == "babble":
        x = _babble(n, rate_hz)
    elif kind == "hum":
        f0 = 50.0 if language == "en" else 60.0
        t = np.arange(n) / rate_hz
        x = sum(
            a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
            for k, a in ((1, 1.0), (2, 0.5), (3, 0.35), (5, 0.2), (7, 0.1))
        )
        x = x + 0.01 * rng.standard_normal(n)  # a little hiss, as real hum has
    else:
        raise ValueError(f"noise kind must be one of {NOISES}, got {kind!r}")
    return x / np.sqrt(np.mean(x**2))


def mix(tr: Track, kind: str, snr_db: float | None) -> np.ndarray:
    """Clean track plus noise at `snr_db` (speech-active power over noise power), int16.

    ``snr_db=None``: the clean track alone, rounded."""
    if snr_db is None:
        return np.clip(np.round(tr.clean), -32768, 32767).astype(np.int16)
    frame_len = tr.rate_hz * LABEL_FRAME_MS // 1000
    n = len(tr.labels) * frame_len
    p_speech = np.mean(tr.clean[:n].reshape(-1, frame_len)[tr.labels] ** 2)
    nz = noise(kind, len(tr.clean), tr.rate_hz, tr.language) * np.sqrt(p_speech / 10 ** (snr_db / 10))
    return np.clip(np.round(tr.clean + nz), -32768, 32767).astype(np.int16)


def g711_roundtrip(pcm: np.ndarray) -> np.ndarray:
    """u-law codes of `pcm` (uint8); decode them to get the round-tripped PCM."""
    from sis_stream.audio import codec

    return codec.ulaw_encode(pcm)
