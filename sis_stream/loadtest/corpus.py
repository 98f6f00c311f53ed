"""The workload of a load test: audio files in the wire format, their references and speech times.

A corpus is a folder of audio files (WAV: PCM, u-law, A-law; raw audio of one SIS format), each
with an optional reference transcript: ``NAME.txt`` beside ``NAME.wav``, or one ``refs.tsv`` in
the folder (``NAME<TAB>text`` per line, NAME with or without its extension; ``#`` starts a
comment). Every file is converted once, when the corpus is loaded, to the format sent on the
wire, so that no stream transcodes while the load runs.

The end-of-speech times that final latencies are measured from come from the corpus itself:
:class:`~sis_stream.audio.endpoint.Endpointer` (continuous mode, the run's ``vad_tail`` and
``max_seconds``) is run over the wire audio of every file, and each closed segment gives one
``(start_ms, end_ms)`` speech span.

:func:`synthetic_corpus` builds a corpus without files: speech-like harmonic bursts (no words,
so no references and no WER) for timing and load alone.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from ..audio import codec
from ..audio.endpoint import Endpointer, SegmentClosed
from ..audio.formats import SIS_FORMATS, AudioFormat, read_wav
from ..audio.transcode import transcode
from ..errors import AudioFormatError

__all__ = [
    "AUDIO_SUFFIXES",
    "MAX_CORPUS_BYTES",
    "MAX_CORPUS_FILES",
    "Corpus",
    "CorpusItem",
    "load_corpus",
    "read_refs_tsv",
    "speech_spans",
    "synthetic_corpus",
    "wire_format_for",
]

logger = logging.getLogger(__name__)

#: File name endings read as audio (raw endings only with an explicit ``audio_format``).
AUDIO_SUFFIXES: Final = (".wav",)
RAW_SUFFIXES: Final = (".raw", ".pcm", ".ulaw", ".alaw", ".ul", ".al", ".g711")
#: Bounds of a corpus held in memory ("error" policy: loading fails with a clear message).
MAX_CORPUS_FILES: Final = 10_000
MAX_CORPUS_BYTES: Final = 512 * 1024 * 1024
_RATE_RE: Final = re.compile(r"_(8|16)k_")
#: Property name prefixes scored by characters (scripts written without spaces).
CHAR_LANGUAGES: Final = ("chinese", "cantonese", "sichuan", "shanghai", "japanese")


@dataclass(frozen=True)
class CorpusItem:
    """One file of the workload.

    Attributes
    ----------
    name : str
        File name (relative to the corpus folder).
    audio : bytes
        The whole file in the wire format.
    audio_format : AudioFormat
        The wire format (a SIS ``audio_format``).
    reference : str or None
        What is said (None: not scored).
    speech : tuple of (int, int)
        ``(start_ms, end_ms)`` speech spans found by the endpointer on this audio.
    """

    name: str
    audio: bytes = field(repr=False)
    audio_format: AudioFormat
    reference: str | None
    speech: tuple[tuple[int, int], ...]

    @property
    def duration_ms(self) -> float:
        """Length of the audio, ms."""
        return self.audio_format.duration_ms(len(self.audio))


@dataclass(frozen=True)
class Corpus:
    """The files of a load test, all in one wire format."""

    items: tuple[CorpusItem, ...]
    audio_format: AudioFormat
    source: str

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError(f"corpus {self.source} holds no audio")

    @property
    def scored(self) -> int:
        """Files with a reference transcript."""
        return sum(1 for i in self.items if i.reference is not None)

    @property
    def audio_s(self) -> float:
        """Total audio, seconds."""
        return sum(i.duration_ms for i in self.items) / 1000.0


def property_rate_hz(prop: str) -> int:
    """The sample rate a SIS property carries (``english_8k_common`` -> 8000; default 16000)."""
    m = _RATE_RE.search(prop)
    return int(m.group(1)) * 1000 if m else 16000


def wire_format_for(file_format: AudioFormat, prop: str) -> AudioFormat:
    """The ``audio_format`` sent for a file: its own when SIS accepts it at the property's rate,
    else 16-bit PCM at that rate."""
    rate = property_rate_hz(prop)
    if file_format.channels == 1 and file_format.rate_hz == rate:
        try:
            return AudioFormat.from_sis(file_format.sis_name)
        except AudioFormatError:
            pass
    return AudioFormat.from_sis(f"pcm{rate // 1000}k16bit")


def scores_by_characters(prop: str) -> bool:
    """Whether accuracy for `prop` is a character error rate (Chinese and other unspaced scripts)."""
    return prop.split("_", 1)[0].lower() in CHAR_LANGUAGES


def _pcm(audio: bytes, fmt: AudioFormat) -> np.ndarray:
    if fmt.encoding == "pcm":
        return np.frombuffer(audio[: len(audio) - len(audio) % 2], "<i2")
    return np.frombuffer(codec.decode(audio, fmt.encoding), "<i2")


def speech_spans(audio: bytes, audio_format: AudioFormat, *, vad_tail: int = 500,
                 max_seconds: int = 30) -> tuple[tuple[int, int], ...]:
    """Speech spans ``(start_ms, end_ms)`` of `audio` by the project's endpointer.

    Parameters
    ----------
    audio : bytes
        Audio in `audio_format` (8 or 16 kHz).
    audio_format : AudioFormat
    vad_tail, max_seconds : int
        As the START config's (the silence that ends a sentence, the longest sentence).
    """
    ep = Endpointer("continuous", audio_format.rate_hz, vad_tail=vad_tail, max_seconds=max_seconds,
                    include_audio=False)
    pcm = _pcm(audio, audio_format)
    events = ep.process(pcm) + ep.flush()
    return tuple((int(e.start_ms), int(e.end_ms)) for e in events if isinstance(e, SegmentClosed))


def read_refs_tsv(path: Path) -> dict[str, str]:
    """``refs.tsv``: ``NAME<TAB>text`` per line (blank lines and ``#`` comments skipped).

    Raises
    ------
    ValueError
        A line without a tab, or a name given twice (line numbers in the message).
    """
    refs: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, tab, text = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{n}: expected NAME<TAB>reference text, got {line[:60]!r}")
        name = name.strip()
        if name in refs:
            raise ValueError(f"{path}:{n}: {name!r} has a reference already")
        refs[name] = text.strip()
    return refs


Reader = Callable[[Path, "AudioFormat | None"], "tuple[bytes, AudioFormat]"]


def _default_reader(path: Path, audio_format: AudioFormat | None) -> tuple[bytes, AudioFormat]:
    raw = path.read_bytes()
    if audio_format is not None:
        return raw[: len(raw) - len(raw) % audio_format.bytes_per_frame], audio_format
    wav = read_wav(raw)
    if wav.format.channels != 1:
        raise AudioFormatError(f"{path.name}: {wav.format.channels} channels; the corpus needs mono "
                               "audio (the command line mixes it down)")
    return bytes(wav.data), wav.format


def load_corpus(folder: str | Path, *, prop: str, session_format: AudioFormat | None = None,
                audio_format: AudioFormat | None = None, reader: Reader | None = None,
                vad_tail: int = 500, max_seconds: int = 30, max_files: int = MAX_CORPUS_FILES,
                max_bytes: int = MAX_CORPUS_BYTES) -> Corpus:
    """Load every audio file of `folder` (not recursive), converted to the wire format.

    Parameters
    ----------
    folder : str or Path
        The corpus folder.
    prop : str
        The SIS property (its rate decides the default wire format).
    session_format : AudioFormat, optional
        The wire ``audio_format`` (default: :func:`wire_format_for` the first file).
    audio_format : AudioFormat, optional
        The files are raw audio in this format (then ``.raw``/``.pcm``/``.ulaw``... are read too).
    reader : callable, optional
        ``reader(path, audio_format) -> (mono bytes, AudioFormat)``; the command line passes its
        own (every input it reads, multi-channel WAV mixed down).
    vad_tail, max_seconds : int
        Endpointer settings for the speech spans.
    max_files, max_bytes : int
        Bounds: more files, or more wire audio in memory, raise ``ValueError``.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        `folder` is missing or not a folder.
    ValueError
        No audio in the folder, a bound passed, a malformed ``refs.tsv``, or a reference in
        ``refs.tsv`` for a file that is not there.
    AudioFormatError
        A file that cannot be read or converted (its name in the message).
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"corpus folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"corpus {root} is not a folder (give a folder of audio files)")
    suffixes = AUDIO_SUFFIXES + (RAW_SUFFIXES if audio_format is not None else ())
    paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not paths:
        raise ValueError(f"corpus folder {root} holds no audio files (expected {', '.join(suffixes)})")
    if len(paths) > max_files:
        raise ValueError(f"corpus folder {root} holds {len(paths)} audio files, more than the "
                         f"{max_files} a load test keeps in memory")
    tsv = root / "refs.tsv"
    refs = read_refs_tsv(tsv) if tsv.is_file() else {}
    names = {p.name for p in paths} | {p.stem for p in paths}
    unknown = sorted(set(refs) - names)
    if unknown:
        raise ValueError(f"{tsv} names files that are not in the corpus: {', '.join(unknown[:5])}")
    read = reader or _default_reader
    items: list[CorpusItem] = []
    total = 0
    wire = session_format
    for p in paths:
        try:
            data, fmt = read(p, audio_format)
        except AudioFormatError as exc:
            raise AudioFormatError(f"{p.name}: {exc}") from exc
        if not data:
            raise ValueError(f"{p} holds no audio")
        if wire is None:
            wire = wire_format_for(fmt, prop)
        audio = data if fmt == wire else transcode(data, fmt, wire)
        total += len(audio)
        if total > max_bytes:
            raise ValueError(f"corpus {root} needs more than {max_bytes // (1024 * 1024)} MiB of audio "
                             "in memory; use fewer or shorter files")
        txt = p.with_suffix(".txt")
        ref = refs.get(p.name, refs.get(p.stem))
        if txt.is_file():
            if ref is not None:
                raise ValueError(f"{p.name} has a reference both in {txt.name} and in refs.tsv")
            ref = txt.read_text(encoding="utf-8").strip()
        spans = speech_spans(audio, wire, vad_tail=vad_tail, max_seconds=max_seconds)
        items.append(CorpusItem(p.name, audio, wire, ref, spans))
    assert wire is not None
    logger.debug("corpus %s: %d files, %d with references", root, len(items),
                 sum(1 for i in items if i.reference is not None))
    return Corpus(tuple(items), wire, str(root))


def _burst(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    # A voiced sound: harmonics of a gliding f0 under formant-like weights, syllable-rate
    # amplitude modulation (about 4 Hz), so the energy VAD hears speech.
    t = np.arange(n) / rate
    f0 = rng.uniform(110, 190) * (1 + 0.08 * np.sin(2 * math.pi * rng.uniform(0.5, 1.5) * t))
    phase = 2 * math.pi * np.cumsum(f0) / rate
    x = np.zeros(n)
    formants = (rng.uniform(500, 800), rng.uniform(1100, 1800), rng.uniform(2300, 3000))
    for h in range(1, int(3400 / 190)):
        fh = h * f0.mean()
        if fh > rate / 2 - 200:
            break
        w = sum(math.exp(-((fh - f) / 250.0) ** 2) for f in formants) + 0.05
        x += w * np.sin(h * phase)
    env = 0.35 + 0.65 * np.abs(np.sin(2 * math.pi * rng.uniform(3.5, 5.0) * t))
    ramp = min(n // 2, rate // 50)
    env[:ramp] *= np.linspace(0, 1, ramp)
    env[n - ramp:] *= np.linspace(1, 0, ramp)
    x *= env
    return x / (np.max(np.abs(x)) + 1e-9) * 9000


def synthetic_corpus(audio_format: AudioFormat | str = "pcm16k16bit", *, files: int = 4, seed: int = 0,
                     seconds: float | None = None, vad_tail: int = 500, max_seconds: int = 30) -> Corpus:
    """A built-in corpus without files: `files` clips, each speech-like bursts of 0.8-2 s between
    0.8-1.2 s pauses of quiet noise. No references (no WER).

    Parameters
    ----------
    audio_format : AudioFormat or str
        The wire format (any SIS ``audio_format``).
    files : int
        Number of clips (1..100).
    seed : int
        The clips are the same for the same seed.
    seconds : float, optional
        Length of each clip, at least (1..600 s). Default: two or three bursts (4-8 s).
    """
    fmt = AudioFormat.from_sis(audio_format) if isinstance(audio_format, str) else audio_format
    if fmt.sis_name not in SIS_FORMATS:  # pragma: no cover - from_sis guarantees it
        raise AudioFormatError(f"unknown wire format {fmt!r}")
    if not 1 <= files <= 100:
        raise ValueError(f"files must be in [1, 100], got {files}")
    if seconds is not None and not 1 <= seconds <= 600:
        raise ValueError(f"seconds must be in [1, 600], got {seconds}")
    rate = fmt.rate_hz
    rng = np.random.default_rng(seed)
    items = []
    for i in range(files):
        parts: list[np.ndarray] = []
        bursts = int(rng.integers(2, 4))
        n = 0
        while len(parts) < 2 * bursts or (seconds is not None and n < (seconds - 1.2) * rate):
            parts.append(rng.normal(0, 12, int(rate * rng.uniform(0.8, 1.2))))
            parts.append(_burst(rng, int(rate * rng.uniform(0.8, 2.0)), rate))
            n += len(parts[-1]) + len(parts[-2])
        parts.append(rng.normal(0, 12, int(rate * rng.uniform(0.8, 1.2))))
        pcm = np.clip(np.rint(np.concatenate(parts)), -32768, 32767).astype("<i2")
        pcm_fmt = AudioFormat(rate, "pcm", 2, 1)
        audio = pcm.tobytes() if fmt == pcm_fmt else transcode(pcm.tobytes(), pcm_fmt, fmt)
        spans = speech_spans(audio, fmt, vad_tail=vad_tail, max_seconds=max_seconds)
        items.append(CorpusItem(f"synthetic-{i:02d}", audio, fmt, None, spans))
    return Corpus(tuple(items), fmt, "synthetic")

