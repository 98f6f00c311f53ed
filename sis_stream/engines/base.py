"""The recognition-engine interface: Engine (shared model holder), EngineStream (one decoder), data types.

Theory of operation
-------------------
An :class:`Engine` owns the loaded model and is shared by every session of a server: it is
thread-safe, loaded once, and hands out :class:`EngineStream` objects with :meth:`Engine.new_stream`.
An :class:`EngineStream` decodes one audio stream, cut into *segments* (sentences):

* :meth:`EngineStream.accept` feeds int16 mono PCM at 16 kHz (``SAMPLE_RATE_HZ``);
* :meth:`EngineStream.partial` returns the interim hypothesis of the open segment (``None`` while
  the segment holds no audio);
* :meth:`EngineStream.finalize` ends the open segment and returns its final hypothesis; the next
  :meth:`~EngineStream.accept` opens a new segment on the same stream;
* :meth:`EngineStream.reset` drops the open segment and restarts the stream clock at 0;
* :meth:`EngineStream.close` releases the stream's resources (a pooled decoder); later calls raise
  :class:`~sis_stream.errors.StreamClosedError`.

**Clock.** Every time (``Hypothesis.start_ms/end_ms``, ``Word.start_ms/end_ms``) is an integer number of
milliseconds on the *stream clock*: 0 is the first sample accepted after :meth:`Engine.new_stream` or
:meth:`EngineStream.reset`, and every accepted sample advances it (16 samples = 1 ms), across
segments. A server that feeds every sample of a session gets session-clock times directly; one that
skips audio shifts results with :meth:`Hypothesis.shifted`.

**Threads.** An ``Engine`` may be used from any thread. An ``EngineStream`` is *not* thread-safe: call
it from one thread at a time, in order (``sis_stream.engines.pool.Lane`` does that on a shared pool).
Calls block while the model decodes; run them off the event loop.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..errors import AudioFormatError, BufferFullError, EngineConfigError, StreamClosedError

__all__ = [
    "DEFAULT_MAX_SEGMENT_S",
    "SAMPLES_PER_MS",
    "SAMPLE_RATE_HZ",
    "Engine",
    "EngineStream",
    "HotWordStatus",
    "Hypothesis",
    "Word",
    "available_cores",
    "normalize_hot_words",
]

logger = logging.getLogger(__name__)

#: Every engine takes mono int16 PCM at this rate; the server resamples to it.
SAMPLE_RATE_HZ: Final = 16000
#: Samples per millisecond of the stream clock.
SAMPLES_PER_MS: Final = SAMPLE_RATE_HZ // 1000
#: Default cap on one open segment. SIS caps sentences at ``max_seconds`` <= 60 s after a ``vad_head``
#: of <= 60 s, so 120 s covers every legal segment; longer ones raise BufferFullError ("error" policy).
DEFAULT_MAX_SEGMENT_S: Final = 120.0
#: Hot-word entries accepted per stream (bounded; extra entries are reported as skipped).
MAX_HOT_WORDS: Final = 1024


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span on the stream clock.

    Attributes
    ----------
    word : str
        The word, without surrounding whitespace or punctuation.
    start_ms, end_ms : int
        Start and end in milliseconds on the stream clock, ``0 <= start_ms <= end_ms``.
    """

    word: str
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.word, str):
            raise TypeError(f"Word.word must be str, got {type(self.word).__name__}")
        if not (isinstance(self.start_ms, int) and isinstance(self.end_ms, int)):
            raise TypeError(
                f"Word times must be int milliseconds, got {type(self.start_ms).__name__}, "
                f"{type(self.end_ms).__name__}"
            )
        if not 0 <= self.start_ms <= self.end_ms:
            raise ValueError(f"Word times must satisfy 0 <= start_ms <= end_ms, got {self.start_ms}, {self.end_ms}")


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """A recognition result for one segment.

    Attributes
    ----------
    text : str
        The transcript. Whisper gives cased, punctuated text; pocketsphinx lower case without
        punctuation (see ``Engine.punctuates``); the ``none`` engine always ``""``.
    score : float
        Confidence in [0, 1]. 0.0 where the engine has none (pocketsphinx partials, empty text).
    words : tuple of Word
        Word timings, only when the stream was opened with ``word_info=True``; else empty.
    start_ms, end_ms : int
        The segment's span on the stream clock: its first accepted sample and the end of the audio
        it had received when this hypothesis was made.
    is_final : bool
        True for :meth:`EngineStream.finalize` results, False for partials.
    """

    text: str
    score: float
    words: tuple[Word, ...] = ()
    start_ms: int = 0
    end_ms: int = 0
    is_final: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Hypothesis.text must be str, got {type(self.text).__name__}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Hypothesis.score must be in [0, 1], got {self.score!r}")
        if not isinstance(self.words, tuple):
            raise TypeError(f"Hypothesis.words must be a tuple of Word, got {type(self.words).__name__}")
        if not 0 <= self.start_ms <= self.end_ms:
            raise ValueError(
                f"Hypothesis span must satisfy 0 <= start_ms <= end_ms, got {self.start_ms}, {self.end_ms}"
            )

    def shifted(self, offset_ms: int) -> Hypothesis:
        """Return a copy with every time moved by `offset_ms` (e.g. onto the session clock).

        Parameters
        ----------
        offset_ms : int
            Milliseconds to add; the shifted times must stay >= 0.

        Returns
        -------
        Hypothesis
            The shifted copy.

        Raises
        ------
        TypeError
            If `offset_ms` is not an int.
        ValueError
            If a shifted time would be negative.
        """
        if not isinstance(offset_ms, int) or isinstance(offset_ms, bool):
            raise TypeError(f"offset_ms must be int, got {type(offset_ms).__name__}")
        words = tuple(Word(w.word, w.start_ms + offset_ms, w.end_ms + offset_ms) for w in self.words)
        return Hypothesis(self.text, self.score, words, self.start_ms + offset_ms, self.end_ms + offset_ms,
                          self.is_final)


@dataclass(frozen=True, slots=True)
class HotWordStatus:
    """What an engine did with one requested hot word.

    Attributes
    ----------
    word : str
        The hot word as requested.
    applied : bool
        True if the engine uses it (added to the dictionary, already known, or passed as a prompt).
    detail : str
        How it was applied, or why it was skipped.
    """

    word: str
    applied: bool
    detail: str


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def normalize_hot_words(hot_words: object) -> tuple[str | tuple[str, str], ...]:
    """Validate a hot-word list: an iterable of ``str`` or ``(word, pronunciation)`` pairs.

    Parameters
    ----------
    hot_words : iterable of str or (str, str)
        Words or phrases; a pair gives an explicit pronunciation (ARPAbet phones for pocketsphinx).

    Returns
    -------
    tuple
        The entries, stripped, at most ``MAX_HOT_WORDS`` of them.

    Raises
    ------
    TypeError
        If `hot_words` is a bare string or an entry has the wrong type.
    ValueError
        If an entry is empty or there are more than ``MAX_HOT_WORDS``.
    """
    if isinstance(hot_words, (str, bytes)) or not isinstance(hot_words, Iterable):
        raise TypeError(
            f"hot_words must be an iterable of str or (word, pronunciation) pairs, got {type(hot_words).__name__}"
        )
    out: list[str | tuple[str, str]] = []
    for entry in hot_words:
        if isinstance(entry, str):
            item: str | tuple[str, str] = entry.strip()
            if not item:
                raise ValueError("hot_words contains an empty entry")
        elif (isinstance(entry, tuple) and len(entry) == 2
              and all(isinstance(e, str) for e in entry)):
            word, pron = entry[0].strip(), entry[1].strip()
            if not word or not pron:
                raise ValueError(f"hot word pair needs a word and a pronunciation, got {entry!r}")
            item = (word, pron)
        else:
            raise TypeError(
                f"each hot word must be str or a (word, pronunciation) pair of str, got {entry!r}"
            )
        out.append(item)
        if len(out) > MAX_HOT_WORDS:
            raise ValueError(f"at most {MAX_HOT_WORDS} hot words per stream, got more")
    return tuple(out)


def hot_word_text(entry: str | tuple[str, str]) -> str:
    """The word part of a hot-word entry."""
    return entry if isinstance(entry, str) else entry[0]


class Engine(abc.ABC):
    """A loaded recognition model, shared by all streams; thread-safe.

    Attributes
    ----------
    name : str
        Registry name (``"whisper"``, ``"pocketsphinx"``, ``"none"``).
    sample_rate_hz : int
        Always ``SAMPLE_RATE_HZ`` (16000).
    languages : tuple of str
        ISO 639-1 codes the model recognises (``("*",)`` = any, for the ``none`` engine).
    punctuates : bool
        True if hypotheses come cased and punctuated (Whisper); a server honouring
        ``add_punc=no`` then strips punctuation.
    description : str
        One line for logs and the server's root JSON (model and settings).
    """

    name: str = ""
    sample_rate_hz: int = SAMPLE_RATE_HZ
    languages: tuple[str, ...] = ()
    punctuates: bool = False
    description: str = ""

    def supports_language(self, language: str) -> bool:
        """True if :meth:`new_stream` accepts `language`."""
        return language in self.languages or "*" in self.languages

    def _check_language(self, language: object) -> str:
        if not isinstance(language, str):
            raise TypeError(f"language must be str (ISO 639-1 code), got {type(language).__name__}")
        if not self.supports_language(language):
            raise EngineConfigError(
                f"engine {self.name!r} ({self.description}) does not recognise language {language!r}; "
                f"it supports: {', '.join(self.languages[:20])}{' ...' if len(self.languages) > 20 else ''}"
            )
        return language

    @abc.abstractmethod
    def new_stream(self, *, language: str, hot_words: Iterable[str | tuple[str, str]] = (),
                   word_info: bool = False) -> EngineStream:
        """Open a decoder for one audio stream.

        Parameters
        ----------
        language : str
            ISO 639-1 code, one of ``languages`` (``"en"``, ``"zh"``, ...).
        hot_words : iterable of str or (str, str)
            Words to favour. What each engine does with them is reported per word in
            ``EngineStream.hot_words``; entries the engine cannot use are skipped, never fatal.
        word_info : bool
            If True, hypotheses carry word timings.

        Returns
        -------
        EngineStream

        Raises
        ------
        EngineConfigError
            For a language the model does not have.
        EngineOverloadedError
            If the engine has no free decoder (pocketsphinx pool exhausted).
        TypeError, ValueError
            For badly typed arguments or bad hot-word entries.
        """

    def close(self) -> None:
        """Release the model (optional; the default does nothing)."""


class EngineStream(abc.ABC):
    """One decoder: feed PCM, read partial and final hypotheses, segment by segment.

    Subclasses implement ``_accept``, ``_partial``, ``_finalize`` and optionally ``_reset`` /
    ``_close``; this base class validates input, keeps the stream clock, bounds the open segment and
    guards the lifecycle.
    """

    def __init__(self, engine: Engine, *, language: str, word_info: bool,
                 hot_words: tuple[HotWordStatus, ...] = (),
                 max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> None:
        if not isinstance(word_info, bool):
            raise TypeError(f"word_info must be bool, got {type(word_info).__name__}")
        self.engine = engine
        self.language = language
        self.word_info = word_info
        #: What the engine did with each requested hot word.
        self.hot_words: tuple[HotWordStatus, ...] = hot_words
        self.max_segment_samples = int(max_segment_s * SAMPLE_RATE_HZ)
        self._position = 0  # samples accepted since the stream (clock) started
        self._segment_start = 0  # stream position of the open segment's first sample
        self._closed = False
        self._busy = threading.Lock()  # detects concurrent use, which the contract forbids

    # -- clock ----------------------------------------------------------------------------------
    @property
    def position_ms(self) -> int:
        """Milliseconds of audio accepted since the stream clock started."""
        return self._position // SAMPLES_PER_MS

    @property
    def segment_start_ms(self) -> int:
        """Stream-clock time of the open segment's first sample."""
        return self._segment_start // SAMPLES_PER_MS

    @property
    def segment_samples(self) -> int:
        """Samples in the open segment."""
        return self._position - self._segment_start

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # -- public verbs ---------------------------------------------------------------------------
    def accept(self, pcm: np.ndarray) -> None:
        """Feed audio to the open segment (opening one if needed).

        Parameters
        ----------
        pcm : numpy.ndarray
            int16 mono samples at 16 kHz, 1-D; read-only arrays are fine; empty is a no-op.

        Raises
        ------
        TypeError
            If `pcm` is not a numpy array of dtype int16.
        AudioFormatError
            If `pcm` is not 1-D.
        BufferFullError
            If the open segment would exceed ``max_segment_samples`` ("error" overflow policy:
            call :meth:`finalize` first).
        StreamClosedError
            After :meth:`close`.
        """
        if not isinstance(pcm, np.ndarray):
            raise TypeError(f"pcm must be a numpy.ndarray of int16, got {type(pcm).__name__}")
        if pcm.dtype != np.int16:
            raise TypeError(f"pcm must have dtype int16 (16 kHz mono PCM), got {pcm.dtype}")
        if pcm.ndim != 1:
            raise AudioFormatError(f"pcm must be 1-D mono samples, got shape {pcm.shape}")
        with self._enter("accept"):
            if pcm.size == 0:
                return
            if self.segment_samples + pcm.size > self.max_segment_samples:
                raise BufferFullError(
                    f"open segment would reach {(self.segment_samples + pcm.size) / SAMPLE_RATE_HZ:.1f} s, "
                    f"over the cap of {self.max_segment_samples / SAMPLE_RATE_HZ:.0f} s; call finalize() first"
                )
            self._accept(np.ascontiguousarray(pcm))
            self._position += pcm.size

    def partial(self) -> Hypothesis | None:
        """Return the interim hypothesis of the open segment, or None if it holds no audio.

        May be expensive (Whisper re-decodes the open segment); rate-limit it.

        Raises
        ------
        StreamClosedError
            After :meth:`close`.
        """
        with self._enter("partial"):
            if self.segment_samples == 0:
                return None
            return self._partial()

    def finalize(self) -> Hypothesis:
        """End the open segment and return its final hypothesis.

        An empty segment gives ``Hypothesis("", 0.0)`` spanning no time. The next
        :meth:`accept` opens a new segment; the stream clock runs on.

        Raises
        ------
        StreamClosedError
            After :meth:`close`.
        """
        with self._enter("finalize"):
            if self.segment_samples == 0:
                hyp = Hypothesis("", 0.0, (), self.position_ms, self.position_ms, True)
            else:
                hyp = self._finalize()
            self._segment_start = self._position
            return hyp

    def reset(self) -> None:
        """Drop the open segment without a result and restart the stream clock at 0.

        Raises
        ------
        StreamClosedError
            After :meth:`close`.
        """
        with self._enter("reset"):
            self._reset()
            self._position = 0
            self._segment_start = 0

    def close(self) -> None:
        """Release the stream's resources; idempotent. Later calls raise StreamClosedError."""
        with self._busy:
            if not self._closed:
                self._closed = True
                self._close()

    def __enter__(self) -> EngineStream:  # noqa: PYI034 - py3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers for subclasses -------------------------------------------------------------------
    def _span(self) -> tuple[int, int]:
        """(start_ms, end_ms) of the open segment on the stream clock."""
        return self._segment_start // SAMPLES_PER_MS, self._position // SAMPLES_PER_MS

    def _enter(self, verb: str) -> _Guard:
        return _Guard(self, verb)

    # -- engine-specific ------------------------------------------------------------------------
    @abc.abstractmethod
    def _accept(self, pcm: np.ndarray) -> None:
        """Consume validated, contiguous int16 samples (the clock is advanced by the caller)."""

    @abc.abstractmethod
    def _partial(self) -> Hypothesis | None:
        """Interim hypothesis of a non-empty open segment."""

    @abc.abstractmethod
    def _finalize(self) -> Hypothesis:
        """Final hypothesis of a non-empty open segment; leave the decoder ready for the next."""

    def _reset(self) -> None:
        """Drop decoder state of the open segment."""

    def _close(self) -> None:
        """Release resources."""


class _Guard:
    """Raises on use after close and on concurrent use of one stream (a contract violation)."""

    __slots__ = ("stream", "verb")

    def __init__(self, stream: EngineStream, verb: str) -> None:
        self.stream = stream
        self.verb = verb

    def __enter__(self) -> None:
        if not self.stream._busy.acquire(blocking=False):
            raise RuntimeError(
                f"EngineStream.{self.verb}() called while another call on the same stream is running; "
                "an EngineStream must be used from one thread at a time (use pool.Lane)"
            )
        if self.stream._closed:
            self.stream._busy.release()
            raise StreamClosedError(f"EngineStream.{self.verb}() after close()")

    def __exit__(self, *exc: object) -> None:
        self.stream._busy.release()
