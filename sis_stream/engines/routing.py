"""The ``moonshine-whisper`` engine: short English segments to Moonshine, the rest to Whisper.

Moonshine's cost grows with the audio; Whisper's is nearly flat (it pads every window to 30 s).
Measured side by side (``benchmarks/bench_moonshine.py``, one thread each), they cost the same
near 8 s of speech, Moonshine being 2-5x cheaper below that, and Whisper cheaper and more
accurate on long segments. So a stream of this engine
decodes each segment (final or interim) with:

* **Whisper** when the request needs what only Whisper gives: word timings (``need_word_info``)
  or hot words (``vocabulary_id`` / ``user_words``); the whole stream then uses Whisper;
* **Whisper** when the open segment is longer than ``crossover_s`` (default 8 s);
* **Moonshine** otherwise.

Both engines are loaded once and shared; which one decoded a hypothesis is counted in
:attr:`RoutingEngine.decodes` (for ``/metrics`` and tests).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

import numpy as np

from ..errors import EngineConfigError
from .base import (
    DEFAULT_MAX_SEGMENT_S,
    SAMPLE_RATE_HZ,
    Engine,
    EngineStream,
    Hypothesis,
    normalize_hot_words,
)
from .buffered import BufferedStream, EngineBatchDecoder
from .moonshine import MoonshineEngine
from .whisper import WhisperEngine

__all__ = ["DEFAULT_CROSSOVER_S", "RoutingEngine", "RoutingStream"]

#: Segments longer than this go to Whisper.
DEFAULT_CROSSOVER_S: Final = 8.0


class RoutingEngine(Engine):
    """Moonshine for short segments, Whisper for long ones and for word timings or hot words.

    Parameters
    ----------
    moonshine : MoonshineEngine
    whisper : WhisperEngine
    crossover_s : float
        Segments longer than this (seconds of audio) are decoded by Whisper.
    """

    name = "moonshine-whisper"
    punctuates = True
    languages = ("en",)

    def __init__(self, moonshine: MoonshineEngine, whisper: WhisperEngine, *,
                 crossover_s: float = DEFAULT_CROSSOVER_S) -> None:
        if not isinstance(crossover_s, (int, float)) or not 0 < crossover_s <= DEFAULT_MAX_SEGMENT_S:
            raise EngineConfigError(f"crossover_s must be in (0, {DEFAULT_MAX_SEGMENT_S}], got {crossover_s!r}")
        if not whisper.supports_language("en"):
            raise EngineConfigError("the Whisper engine given to moonshine-whisper does not recognise English")
        self.moonshine = moonshine
        self.whisper = whisper
        self.crossover_samples = int(crossover_s * SAMPLE_RATE_HZ)
        self.max_segment_s = min(whisper.max_segment_s, moonshine.max_segment_s)
        self.description = (f"segments up to {crossover_s:g} s: {moonshine.description}; longer ones, "
                            f"word timings and hot words: {whisper.description}")
        #: Decodes made, by engine name ("moonshine", "whisper").
        self.decodes: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def count(self, engine: str) -> None:
        with self._count_lock:
            self.decodes[engine] += 1

    def new_stream(self, *, language: str, hot_words: Iterable[str | tuple[str, str]] = (),
                   word_info: bool = False) -> EngineStream:
        """A Whisper stream when `word_info` or `hot_words` ask for it, else a routing stream."""
        language = self._check_language(language)
        if word_info or normalize_hot_words(hot_words):
            self.count("whisper")  # one stream: counted once, at open
            return self.whisper.new_stream(language=language, hot_words=hot_words, word_info=word_info)
        return RoutingStream(self, language=language, word_info=False, max_segment_s=self.max_segment_s)

    def close(self) -> None:
        self.moonshine.close()
        self.whisper.close()


class RoutingStream(BufferedStream):
    """Buffers the open segment and decodes it with the engine its length calls for.

    Batchable (:attr:`BufferedStream.batchable`) when both engines have ``decode_batch``: each
    planned job goes to Moonshine's or Whisper's batch decoder by the length it decodes.
    """

    def __init__(self, engine: RoutingEngine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._engine: RoutingEngine = engine
        self._decoders: dict[str, EngineBatchDecoder | None] = {}

    def _part_decoder(self, name: str, part: Any) -> EngineBatchDecoder | None:
        if name not in self._decoders:
            ok = callable(getattr(part, "decode_batch", None))
            self._decoders[name] = EngineBatchDecoder(part, name=name) if ok else None
        return self._decoders[name]

    def batch_decoder(self, samples: int) -> EngineBatchDecoder | None:
        """Whisper's batch decoder above the crossover, Moonshine's up to it (None if it has none)."""
        if samples > self._engine.crossover_samples:
            return self._part_decoder("whisper", self._engine.whisper)
        return self._part_decoder("moonshine", self._engine.moonshine)

    def _on_decoded(self, decoder: Any, final: bool) -> None:
        self._engine.count(decoder.name)

    def decode_segment(self, audio: np.ndarray, start_ms: int, end_ms: int, final: bool) -> Hypothesis:
        if len(audio) > self._engine.crossover_samples:
            self._engine.count("whisper")
            text, score, _ = self._engine.whisper.decode(audio, language=self.language, word_timestamps=False,
                                                         hotwords=None, final=final)
        else:
            self._engine.count("moonshine")
            text, score = self._engine.moonshine.decode(audio)
        return Hypothesis(text, score if text else 0.0, (), start_ms, end_ms, final)
