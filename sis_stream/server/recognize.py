"""Whole-file recognition on the shared engine executor, for the REST routes (short audio, the
transcriber, flash ASR).

* :func:`engine_for` / :func:`check_property`: the engine of a property (``SIS.0032``/``SIS.0303``)
  and the properties an interface accepts (its documented list, plus any property the engine
  registry routes).
* :func:`on_pool`: run blocking engine work on ``app[POOL]``, waiting for room when the bounded
  queue is full (long jobs); :func:`recognize_pcm` rejects at once instead (``SIS.0312``).
* :func:`recognize_pcm`: one utterance as one hypothesis; :func:`transcribe_pcm`: long audio cut
  into sentences by the SIS Endpointer (continuous mode), each recognised.

Text post-processing is the RASR server's (``recognizer.postprocess_text``), so REST and websocket
answers agree: ``add_punc=no`` strips the punctuation of engines that punctuate (Whisper);
``add_punc=yes`` on an engine without punctuation capitalises and ends the sentence with a full
stop; for English, ``digit_norm=yes`` writes spelled numbers as digits and ``no`` spells digits
out (Mandarin text is left as the engine gives it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from ..audio.endpoint import Endpointer, SegmentAudio, SegmentClosed
from ..engines.base import SAMPLE_RATE_HZ, Hypothesis
from ..engines.registry import property_rate_hz
from ..errors import (
    EngineOverloadedError,
    EngineUnavailableError,
    PropertyNotSupportedError,
    RequestRejected,
)
from ..protocol.errors import reject
from ..protocol.properties import Interface, lookup_property
from .recognizer import postprocess_text as _rasr_postprocess
from .state import ENGINES, POOL

__all__ = [
    "OVERLOAD_RETRIES",
    "check_property",
    "engine_for",
    "on_pool",
    "postprocess_text",
    "recognize_pcm",
    "transcribe_pcm",
    "word_info_json",
]

logger = logging.getLogger(__name__)

#: How long (x 1 s) :func:`on_pool` waits for room on the engine executor.
OVERLOAD_RETRIES: Final = 600


def postprocess_text(text: str, *, punctuates: bool, add_punc: bool, digit_norm: bool = True,
                     language: str = "en") -> str:
    """Apply ``add_punc`` / ``digit_norm`` exactly as the RASR websocket does."""
    return _rasr_postprocess(text, add_punc=add_punc, digit_norm=digit_norm, punctuated=punctuates,
                             language=language)


def word_info_json(hyp: Hypothesis) -> list[dict[str, Any]]:
    """``word_info`` items ``{"start_time", "end_time", "word"}`` of a hypothesis (ms)."""
    return [{"start_time": w.start_ms, "end_time": w.end_ms, "word": w.word} for w in hyp.words]


def engine_for(app: Any, prop: str) -> tuple[Any, Any]:
    """The shared engine and the route of `prop` (blocking: it may load a model).

    Returns
    -------
    tuple
        ``(engine, route)``; ``route.language`` is the language to decode.

    Raises
    ------
    RequestRejected
        ``SIS.0032`` (or the error's own code) property not served, ``SIS.0303`` engine unavailable.
    """
    try:
        return app[ENGINES].engine_for(prop)
    except PropertyNotSupportedError as exc:
        raise reject(exc.sis_error_code, str(exc)) from None
    except EngineUnavailableError as exc:
        raise reject("SIS.0303", f"engine connection failed: {exc}") from None


def _decode_one(engine: Any, language: str, pcm: np.ndarray, hot_words: Sequence[str],
                word_info: bool) -> Hypothesis:
    stream = engine.new_stream(language=language, hot_words=list(hot_words), word_info=word_info)
    try:
        if pcm.size:
            stream.accept(pcm)
        return stream.finalize()
    finally:
        stream.close()


async def _run(app: Any, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await app[POOL].run(fn, *args)
    except EngineOverloadedError as exc:
        raise reject("SIS.0312", f"max concurrency exceeded: the recognition queue is full ({exc})") from None


async def recognize_pcm(app: Any, pcm16k: np.ndarray, *, prop: str, hot_words: Sequence[str] = (),
                        word_info: bool = False, add_punc: bool = False, digit_norm: bool = True) -> Hypothesis:
    """Recognise a whole utterance (int16 mono 16 kHz) as one segment.

    Raises
    ------
    RequestRejected
        ``SIS.0032`` property not served, ``SIS.0303`` engine unavailable, ``SIS.0312`` queue
        full, ``SIS.0306`` recognition failure.
    """
    # engine_for may load a model (seconds): off the event loop, on the executor's threads.
    try:
        engine, route = await app[POOL].run(engine_for, app, prop)
    except EngineOverloadedError as exc:
        raise reject("SIS.0312", f"max concurrency exceeded: the recognition queue is full ({exc})") from None
    try:
        hyp = await _run(app, _decode_one, engine, route.language, pcm16k, hot_words, word_info)
    except RequestRejected:
        raise
    except Exception as exc:
        logger.exception("recognition failed")
        raise reject("SIS.0306", f"recognition error: {type(exc).__name__}") from exc
    text = postprocess_text(hyp.text, punctuates=engine.punctuates, add_punc=add_punc, digit_norm=digit_norm,
                            language=route.language)
    return Hypothesis(text,
                      hyp.score, hyp.words, hyp.start_ms, hyp.end_ms, True)


def transcribe_pcm(engine: Any, language: str, pcm16k: np.ndarray, *, hot_words: Sequence[str] = (),
                   word_info: bool = False, add_punc: bool = False, digit_norm: bool = True, vad_tail_ms: int = 500,
                   max_seconds: int = 30, should_stop: Callable[[], bool] | None = None) -> list[Hypothesis]:
    """Cut long audio into sentences with the SIS Endpointer (continuous mode) and recognise each.

    Blocking: run it on a worker thread. Times are ms from the start of `pcm16k`; each hypothesis
    spans its sentence (speech onset to end of speech), word times on the same clock.

    Parameters
    ----------
    engine : Engine
    language : str
    pcm16k : numpy.ndarray
        int16 mono 16 kHz.
    should_stop : callable, optional
        Polled between sentences; True aborts with ``RuntimeError("stopped")``.

    Returns
    -------
    list of Hypothesis
        Non-empty sentences in order.
    """
    ep = Endpointer("continuous", SAMPLE_RATE_HZ, vad_head=60000, vad_tail=vad_tail_ms,
                    max_seconds=max_seconds)
    out: list[Hypothesis] = []
    stream = engine.new_stream(language=language, hot_words=list(hot_words), word_info=word_info)
    pending: dict[int, list[np.ndarray]] = {}
    starts: dict[int, int] = {}
    step = SAMPLE_RATE_HZ * 10  # feed 10 s at a time: bounded event lists

    def handle(events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, SegmentAudio):
                pending.setdefault(ev.index, []).append(ev.pcm)
                starts.setdefault(ev.index, ev.start_sample)
            elif isinstance(ev, SegmentClosed):
                if should_stop is not None and should_stop():
                    raise RuntimeError("stopped")
                chunks = pending.pop(ev.index, [])
                first = starts.pop(ev.index, 0)
                audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
                stream.reset()
                if audio.size:
                    stream.accept(audio)
                hyp = stream.finalize()
                offset_ms = first * 1000 // SAMPLE_RATE_HZ
                words = tuple(w for w in hyp.shifted(offset_ms).words)
                text = postprocess_text(hyp.text, punctuates=engine.punctuates, add_punc=add_punc,
                                        digit_norm=digit_norm, language=language).strip()
                if text:
                    out.append(Hypothesis(text, hyp.score, words, ev.start_ms, max(ev.start_ms, ev.end_ms), True))

    try:
        for i in range(0, len(pcm16k), step):
            handle(ep.process(pcm16k[i:i + step]))
        handle(ep.flush())
    finally:
        stream.close()
    return out



def _invalid_property(why: str) -> RequestRejected:
    return reject("SIS.0533", f"'property' is invalid: {why}")


def check_property(app: Any, prop: object, interface: Interface) -> tuple[str, int]:
    """A documented property of `interface` or one the engine registry routes; returns (name, rate).

    Raises
    ------
    RequestRejected
        ``SIS.0533 'property' is invalid``.
    """
    info = lookup_property(interface, prop)
    if info is not None:
        return info.name, info.rate_hz
    if isinstance(prop, str):
        try:
            app[ENGINES].route(prop)
            return prop, property_rate_hz(prop)
        except PropertyNotSupportedError:
            pass
    raise _invalid_property(f"{prop!r} is neither a {interface.value} property nor routed to an engine")


async def on_pool(app: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on the engine executor, waiting for room when its queue is full.

    For long jobs (transcriber, flash ASR): retried once a second, at most
    :data:`OVERLOAD_RETRIES` times.

    Raises
    ------
    RequestRejected
        ``SIS.0538`` when the queue stayed full that long.
    """
    for _ in range(OVERLOAD_RETRIES):
        try:
            return await app[POOL].run(functools.partial(fn, *args, **kwargs))
        except EngineOverloadedError:
            await asyncio.sleep(1.0)  # a job waits for room instead of failing
    raise reject("SIS.0538", "the transcriber task timed out waiting for the recognition queue")
