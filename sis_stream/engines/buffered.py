""":class:`BufferedStream`: an engine stream that keeps its open segment and decodes it whole.

Engines whose models decode a whole utterance at once (Whisper, Moonshine) share this: audio is
buffered per segment (int16, bounded by the base class's ``max_segment_s``), a partial decodes what
is buffered so far (and is not decoded again until new audio arrives), a final decodes it once more
and empties the buffer.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from .base import EngineStream, Hypothesis

__all__ = ["BufferedStream"]


class BufferedStream(EngineStream):
    """Subclasses implement :meth:`decode_segment`; everything else is here."""

    def __init__(self, engine: Any, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._chunks: list[np.ndarray] = []
        self._cached: tuple[int, Hypothesis] | None = None  # (segment samples, partial) of the last partial

    @abc.abstractmethod
    def decode_segment(self, audio: np.ndarray, start_ms: int, end_ms: int, final: bool) -> Hypothesis:
        """Decode the open segment's `audio` (int16, 16 kHz), spanning `start_ms`..`end_ms` of the
        stream clock."""

    def _accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm.copy())  # the caller may reuse its buffer

    def segment_audio(self) -> np.ndarray:
        """The open segment's audio as one int16 array."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def _partial(self) -> Hypothesis:
        n = self.segment_samples
        if self._cached is not None and self._cached[0] == n:
            return self._cached[1]  # no new audio since the last partial: no new decode
        start, end = self._span()
        hyp = self.decode_segment(self.segment_audio(), start, end, False)
        self._cached = (n, hyp)
        return hyp

    def _finalize(self) -> Hypothesis:
        start, end = self._span()
        hyp = self.decode_segment(self.segment_audio(), start, end, True)
        self._reset()
        return hyp

    def _reset(self) -> None:
        self._chunks = []
        self._cached = None
