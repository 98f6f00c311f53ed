""":class:`BufferedStream`: an engine stream that keeps its open segment and decodes it whole.

Engines whose models decode a whole utterance at once (Whisper, Moonshine) share this: audio is
buffered per segment (int16, bounded by the base class's ``max_segment_s``), a partial decodes what
is buffered so far (and is not decoded again until new audio arrives), a final decodes it once more
and empties the buffer.

Deferred decoding (for :class:`~sis_stream.engines.batcher.DecodeBatcher`)
----------------------------------------------------------------------------
A stream is :attr:`~BufferedStream.batchable` when its engine has ``decode_batch`` and the stream
needs nothing a batch cannot give (no word timings, no hot words applied). Then, in the stream's
lane, :meth:`~BufferedStream.plan_final` takes the open segment's audio and span, ends the segment
and returns a :class:`~sis_stream.engines.batcher.DecodeJob` whose ``complete(text, score)`` builds
the final :class:`~sis_stream.engines.base.Hypothesis`; :meth:`~BufferedStream.plan_partial`
returns the cached partial when no audio arrived since the last one, or a job whose ``complete``
updates that cache. Jobs are decoded elsewhere (a batcher thread), so ``complete`` only touches
state under a lock, and a partial completing after its segment ended (the segment *generation*
moved on) changes nothing.

Which audio a partial decodes and what text it shows is the interim policy's business
(:mod:`.interim`, from ``engine.interim_settings`` when the registry set it; otherwise every
partial decodes the whole open segment). Finals always decode the whole segment.

The synchronous verbs (``partial``/``finalize``) stay: a batchable stream plans and decodes the
job itself (one-item batch for partials; finals through :meth:`BufferedStream.decode_segment`),
other streams decode with :meth:`BufferedStream.decode_segment`.
"""

from __future__ import annotations

import abc
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from .base import EngineStream, Hypothesis
from .batcher import DecodeJob
from .interim import InterimPolicy, InterimSettings

__all__ = ["FIXED_WINDOW_MAX_BATCH", "BufferedStream", "EngineBatchDecoder"]

#: Largest batch for a decoder without a length rule (``batch_compatible``): such a model pads
#: every item to a fixed window (Whisper: 30 s), so on a CPU a batch costs nearly its size times
#: one item and gains little; small batches keep each result from waiting for many others.
FIXED_WINDOW_MAX_BATCH: Final = 4


class EngineBatchDecoder:
    """An engine's ``decode_batch`` in the shape :class:`~.batcher.DecodeBatcher` calls.

    Engines take either ``decode_batch(audios)`` (Moonshine) or ``decode_batch(audios, *,
    language, final, prompts)`` (Whisper); this adapter calls whichever the engine has. Two
    adapters of the same engine object compare equal, so their jobs batch together.

    Parameters
    ----------
    engine : object
        Has ``decode_batch``; its ``batch_compatible(len_a, len_b)`` (if it has one) is used to
        group lengths, and its ``name`` names the decoder.
    name : str, optional
        Overrides the engine's name.
    max_batch : int, optional
        Largest batch of this decoder (the batcher's own bound applies too). Default: the
        engine's ``max_batch`` attribute if it has one, else :data:`FIXED_WINDOW_MAX_BATCH` for
        an engine without a length rule, else no bound of its own.
    """

    def __init__(self, engine: Any, *, name: str | None = None, max_batch: int | None = None) -> None:
        fn = getattr(engine, "decode_batch", None)
        if not callable(fn):
            raise TypeError(f"{type(engine).__name__} has no decode_batch method")
        self.engine = engine
        self.name = name or str(getattr(engine, "name", type(engine).__name__))
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            params = {}
        self._keywords = "language" in params
        compat = getattr(engine, "batch_compatible", None)
        self._compatible: Callable[[int, int], bool] | None = compat if callable(compat) else None
        if max_batch is None:
            own = getattr(engine, "max_batch", None)
            max_batch = own if isinstance(own, int) else (FIXED_WINDOW_MAX_BATCH if self._compatible is None else None)
        self.max_batch = max_batch

    def decode_batch(self, audios: Sequence[np.ndarray], *, language: str, final: bool,
                     prompts: Sequence[str | None]) -> list[tuple[str, float]]:
        """Decode `audios` with the engine; one ``(text, score)`` per item."""
        if self._keywords:
            return self.engine.decode_batch(audios, language=language, final=final, prompts=prompts)
        return self.engine.decode_batch(audios)

    def batch_compatible(self, len_a: int, len_b: int) -> bool:
        """Whether items of these lengths may share a batch (the engine's rule; any when it has none)."""
        return True if self._compatible is None else bool(self._compatible(len_a, len_b))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EngineBatchDecoder) and other.engine is self.engine

    def __hash__(self) -> int:
        return id(self.engine)

    def __repr__(self) -> str:
        return f"EngineBatchDecoder({self.name})"


class BufferedStream(EngineStream):
    """Subclasses implement :meth:`decode_segment`; everything else is here."""

    def __init__(self, engine: Any, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._chunks: list[np.ndarray] = []
        self._cached: tuple[int, Hypothesis] | None = None  # (segment samples, partial) of the last partial
        self._state = threading.Lock()  # _cached, _generation, _policy: complete() runs on other threads
        self._generation = 0  # bumped when a segment ends: late partials change nothing
        self._decoder: EngineBatchDecoder | None | bool = False  # False: not looked up yet
        settings = getattr(engine, "interim_settings", None)
        self._policy = InterimPolicy(settings) if isinstance(settings, InterimSettings) else None

    @abc.abstractmethod
    def decode_segment(self, audio: np.ndarray, start_ms: int, end_ms: int, final: bool) -> Hypothesis:
        """Decode the open segment's `audio` (int16, 16 kHz), spanning `start_ms`..`end_ms` of the
        stream clock."""

    # -- deferred decoding ------------------------------------------------------------------------
    def batch_decoder(self, samples: int) -> Any | None:
        """The decoder (with ``decode_batch``) for a segment of `samples`, or None (decode here).

        Default: the engine's own ``decode_batch`` when the stream needs no word timings and
        uses no hot word (a batch gives neither).
        """
        if self._decoder is False:
            ok = (not self.word_info and not any(h.applied for h in self.hot_words)
                  and callable(getattr(self.engine, "decode_batch", None)))
            self._decoder = EngineBatchDecoder(self.engine) if ok else None
        return self._decoder or None

    @property
    def batchable(self) -> bool:
        """Whether :meth:`plan_final` / :meth:`plan_partial` can be used (every segment length has
        a batch decoder)."""
        return self.batch_decoder(1) is not None and self.batch_decoder(self.max_segment_samples) is not None

    def _on_decoded(self, decoder: Any, final: bool) -> None:
        """Called (in any thread) when a planned job of this stream was decoded by `decoder`."""

    def _check_batchable(self, samples: int) -> Any:
        decoder = self.batch_decoder(samples)
        if decoder is None:
            raise RuntimeError(f"{type(self).__name__} is not batchable (word timings or hot words, or an "
                               "engine without decode_batch): use partial()/finalize()")
        return decoder

    def plan_final(self) -> DecodeJob | Hypothesis:
        """End the open segment and return the job that decodes it (run it in the stream's lane).

        Returns
        -------
        DecodeJob or Hypothesis
            The job (its ``complete`` gives the final Hypothesis); for an empty segment directly
            the empty final ``finalize`` would give.

        Raises
        ------
        RuntimeError
            If the stream is not :attr:`batchable`.
        StreamClosedError
            After :meth:`close`.
        """
        with self._enter("plan_final"):
            n = self.segment_samples
            if n == 0:
                return Hypothesis("", 0.0, (), self.position_ms, self.position_ms, True)
            return self._plan_final(n)

    def _plan_final(self, n: int) -> DecodeJob:
        decoder = self._check_batchable(n)
        start_ms, end_ms = self._span()
        audio = self.segment_audio()
        self._reset()
        self._segment_start = self._position

        def complete(text: str, score: float) -> Hypothesis:
            self._on_decoded(decoder, True)
            return _hypothesis(text, score, start_ms, end_ms, True)

        return DecodeJob(audio, True, decoder, complete, language=self.language)

    def plan_partial(self) -> DecodeJob | Hypothesis | None:
        """The next partial of the open segment, as a job to decode (run it in the stream's lane).

        Returns
        -------
        DecodeJob, Hypothesis or None
            None for an empty segment; the cached partial when no audio arrived since the last
            one (or nothing needs decoding); else a job whose ``complete`` gives the partial
            Hypothesis (and caches it, unless the segment ended meanwhile).

        Raises
        ------
        RuntimeError
            If the stream is not :attr:`batchable`.
        StreamClosedError
            After :meth:`close`.
        """
        with self._enter("plan_partial"):
            if self.segment_samples == 0:
                return None
            return self._plan_partial()

    def _plan_partial(self) -> DecodeJob | Hypothesis:
        n = self.segment_samples
        self._check_batchable(n)
        start_ms, end_ms = self._span()
        audio = self.segment_audio()
        with self._state:
            if self._cached is not None and self._cached[0] == n:
                return self._cached[1]  # no new audio since the last partial: no new decode
            gen = self._generation
            policy = self._policy
            if policy is None:
                s, e, prompt, commit = 0, n, None, False
            else:
                s, e, prompt, commit = policy.plan(audio)
        decoder = self._check_batchable(max(1, e - s))  # by the length decoded (routing)

        def complete(text: str, score: float) -> Hypothesis:
            with self._state:
                current = gen == self._generation
                if current and policy is not None:
                    text = policy.complete(s, e, text, commit)
                hyp = _hypothesis(text, score, start_ms, end_ms, False)
                if current and (self._cached is None or self._cached[0] <= n):
                    self._cached = (n, hyp)
            if e > s:
                self._on_decoded(decoder, False)
            return hyp

        if e <= s:  # nothing to decode (only silence since the last commit)
            return complete("", 0.0)
        return DecodeJob(audio[s:e], False, decoder, complete, language=self.language, prompt=prompt)

    # -- the synchronous verbs ---------------------------------------------------------------------
    def _accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm.copy())  # the caller may reuse its buffer

    def segment_audio(self) -> np.ndarray:
        """The open segment's audio as one int16 array."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def _partial(self) -> Hypothesis:
        n = self.segment_samples
        if self.batch_decoder(n) is not None:
            planned = self._plan_partial()
            if isinstance(planned, Hypothesis):
                return planned
            return _decode_now(planned)
        with self._state:
            if self._cached is not None and self._cached[0] == n:
                return self._cached[1]  # no new audio since the last partial: no new decode
        start, end = self._span()
        hyp = self.decode_segment(self.segment_audio(), start, end, False)
        with self._state:
            self._cached = (n, hyp)
        return hyp

    def _finalize(self) -> Hypothesis:
        start, end = self._span()
        hyp = self.decode_segment(self.segment_audio(), start, end, True)
        self._reset()
        return hyp

    def _reset(self) -> None:
        self._chunks = []
        with self._state:
            self._cached = None
            self._generation += 1
            if self._policy is not None:
                self._policy.reset()


def _hypothesis(text: str, score: float, start_ms: int, end_ms: int, final: bool) -> Hypothesis:
    text = text.strip()
    score = min(1.0, max(0.0, float(score))) if text else 0.0
    return Hypothesis(text, score, (), start_ms, end_ms, final)


def _decode_now(job: DecodeJob) -> Hypothesis:
    """Decode one job in this thread (a batch of one)."""
    (text, score), = job.decoder.decode_batch([job.audio], language=job.language, final=job.final,
                                              prompts=[job.prompt])
    return job.complete(text, score)

