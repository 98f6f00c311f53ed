"""The ``none`` engine: recognises nothing, returns empty text with the real segment timing (load tests)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .base import (
    DEFAULT_MAX_SEGMENT_S,
    Engine,
    EngineStream,
    HotWordStatus,
    Hypothesis,
    hot_word_text,
    normalize_hot_words,
)

__all__ = ["NullEngine", "NullStream"]


class NullEngine(Engine):
    """An engine that decodes nothing, for load tests of the server.

    Every hypothesis has ``text == ""``, ``score == 0.0`` and no words; its ``start_ms``/``end_ms``
    are the real span of the audio the stream accepted for that segment (on the stream clock). It
    never returns a canned transcript. Any language is accepted.

    Parameters
    ----------
    max_segment_s : float
        Cap on one open segment (``BufferFullError`` beyond it, as for the real engines).
    """

    name = "none"
    languages = ("*",)
    punctuates = False
    description = "none: no recognition, empty text with real segment timing"

    def __init__(self, *, max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> None:
        if not max_segment_s > 0:
            raise ValueError(f"max_segment_s must be > 0, got {max_segment_s!r}")
        self.max_segment_s = float(max_segment_s)

    def new_stream(self, *, language: str, hot_words: Iterable[str | tuple[str, str]] = (),
                   word_info: bool = False) -> NullStream:
        """Open a stream; see :meth:`Engine.new_stream`. Hot words are reported as not applied."""
        language = self._check_language(language)
        statuses = tuple(HotWordStatus(hot_word_text(w), False, "the none engine recognises nothing")
                         for w in normalize_hot_words(hot_words))
        return NullStream(self, language=language, word_info=word_info, hot_words=statuses,
                          max_segment_s=self.max_segment_s)


class NullStream(EngineStream):
    """Stream of the ``none`` engine: keeps only the clock (no audio is stored)."""

    def _accept(self, pcm: np.ndarray) -> None:
        pass  # the base class advances the clock; nothing else to do

    def _partial(self) -> Hypothesis:
        start, end = self._span()
        return Hypothesis("", 0.0, (), start, end, False)

    def _finalize(self) -> Hypothesis:
        start, end = self._span()
        return Hypothesis("", 0.0, (), start, end, True)
