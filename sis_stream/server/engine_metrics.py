"""Engine metrics: time-to-final, decode time, batch size and queue wait, for ``/metrics``.

:class:`EngineMetrics` is fed from two places and is safe to call from any thread:

* the decode batcher calls :meth:`EngineMetrics.on_batch` in its worker thread after each batched
  decode (``observer(decoder_name, jobs, decode_s)``); each job has ``.tag`` (the SIS property
  the server set), ``.final``, ``.wait_s`` (seconds it waited in the batcher's queue) and
  ``.audio`` (16 kHz samples);
* the session recognizer calls :meth:`EngineMetrics.observe_ttf` on the event loop when a final
  result is ready: the time from the end of speech (the endpointer's segment end, the VAD tail
  included) to the final.

It renders these Prometheus families (seconds; label ``property`` is the SIS property,
``decoder`` the engine model that decoded the batch, ``kind`` ``final`` or ``partial``):

==================================  =========  ======================  ==================================
name                                type       labels                  what
==================================  =========  ======================  ==================================
``sis_time_to_final_seconds``       histogram  property                end of speech -> final result ready
``sis_decode_queue_wait_seconds``   histogram  property, kind          a decode job's wait in the queue
``sis_decode_batch_seconds``        histogram  decoder                 wall time of one batched decode
``sis_decode_batch_size``           histogram  decoder                 jobs decoded together
``sis_decode_jobs_total``           counter    decoder, kind           jobs decoded
``sis_decoded_audio_seconds_total`` counter    decoder                 audio decoded (a partial's audio
                                                                       counts each time it is decoded)
``sis_decode_seconds_total``        counter    decoder                 decode wall time (sum over workers)
==================================  =========  ======================  ==================================

``sis_decode_seconds_total`` divided by the decode workers and the wall time is the decode
utilisation that admission control (:mod:`.admission`) watches; every observation is also
handed to the listeners given to the constructor (the admission controller).

Label values are bounded (``max_label_values`` properties and decoders each; further ones fold
into ``_other``, the policy of :class:`~.metrics.Metrics`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any, Final, Protocol

from .metrics import Histogram, bounded_label, format_value, render_labels

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DECODE_BUCKETS_S",
    "QUEUE_WAIT_BUCKETS_S",
    "TTF_BUCKETS_S",
    "UNTAGGED",
    "DecodeListener",
    "EngineMetrics",
]

logger = logging.getLogger(__name__)

#: Time-to-final buckets (s): dense around the default bound (vad_tail 0.5 s + 0.7 s = 1.2 s).
TTF_BUCKETS_S: Final = (0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0)
#: Batched decode wall time buckets (s).
DECODE_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Queue wait buckets (s).
QUEUE_WAIT_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Batch size buckets (jobs).
BATCH_SIZE_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
#: ``property`` label of a job the server did not tag.
UNTAGGED: Final = "_untagged"
#: Samples per second of the audio engines decode.
_RATE_HZ: Final = 16000


class DecodeListener(Protocol):
    """What :class:`EngineMetrics` hands every observation to (e.g. the admission controller)."""

    def observe_decode(self, decode_s: float) -> None:
        """One batched decode took ``decode_s`` seconds of one worker."""

    def observe_ttf(self, seconds: float) -> None:
        """One final was ready ``seconds`` after the end of speech."""


def _check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    v = float(value)
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return v


def _hist(table: dict[Any, Histogram], key: Any, buckets: tuple[float, ...]) -> Histogram:
    h = table.get(key)
    if h is None:
        h = table[key] = Histogram(buckets)
    return h


class EngineMetrics:
    """Thread-safe histograms and counters of the engine's work (see the module docstring).

    Parameters
    ----------
    listeners : sequence of DecodeListener
        Also told of every decode batch and time-to-final (outside this object's lock).
    max_label_values : int
        Distinct ``property`` and ``decoder`` values kept each; further ones fold into ``_other``.
    """

    def __init__(self, listeners: Sequence[DecodeListener] = (), *, max_label_values: int = 64) -> None:
        if isinstance(max_label_values, bool) or not isinstance(max_label_values, int) or max_label_values < 1:
            raise ValueError(f"max_label_values must be an int >= 1, got {max_label_values!r}")
        self.max_label_values = max_label_values
        self._listeners = tuple(listeners)
        self._lock = threading.Lock()
        self._ttf: dict[str, Histogram] = {}
        self._wait: dict[tuple[str, str], Histogram] = {}
        self._decode: dict[str, Histogram] = {}
        self._batch: dict[str, Histogram] = {}
        self._jobs: dict[tuple[str, str], int] = {}
        self._audio_s: dict[str, float] = {}
        self._decode_s: dict[str, float] = {}
        self._props: set[str] = set()
        self._decoders: set[str] = set()

    # -- bounded labels (under the lock) ----------------------------------------------------------
    def _prop(self, tag: Any) -> str:
        tag = UNTAGGED if tag is None or tag == "" else str(tag)
        return bounded_label(tag, self._props, self.max_label_values)

    def _decoder(self, name: str) -> str:
        return bounded_label(str(name) or UNTAGGED, self._decoders, self.max_label_values)

    # -- recording --------------------------------------------------------------------------------
    def observe_ttf(self, tag: str | None, seconds: float) -> None:
        """Record one time-to-final: end of speech -> final result ready.

        Parameters
        ----------
        tag : str or None
            The SIS property of the session (None: ``_untagged``).
        seconds : float
            >= 0.

        Raises
        ------
        TypeError, ValueError
            `seconds` not a finite number >= 0.
        """
        s = _check_seconds("seconds", seconds)
        with self._lock:
            _hist(self._ttf, self._prop(tag), TTF_BUCKETS_S).observe(s)
        for listener in self._listeners:
            listener.observe_ttf(s)

    def on_batch(self, decoder_name: str, jobs: Sequence[Any], decode_s: float) -> None:
        """The decode batcher's observer: one batched decode of `jobs` took `decode_s` seconds.

        Parameters
        ----------
        decoder_name : str
            The model that decoded the batch (``moonshine``, ``whisper``...).
        jobs : sequence
            The decode jobs: ``.tag`` (property or None), ``.final`` (bool), ``.wait_s`` (queue
            wait, s; None counts as 0), ``.audio`` (16 kHz samples).
        decode_s : float
            Wall time of the batched decode, s.

        Raises
        ------
        TypeError, ValueError
            `decode_s` or a job's ``wait_s`` not a finite number >= 0.
        """
        d = _check_seconds("decode_s", decode_s)
        rows = [(job.tag, "final" if job.final else "partial",
                 _check_seconds("wait_s", job.wait_s if job.wait_s is not None else 0.0),
                 len(job.audio) / _RATE_HZ) for job in jobs]
        with self._lock:
            dec = self._decoder(decoder_name)
            _hist(self._decode, dec, DECODE_BUCKETS_S).observe(d)
            _hist(self._batch, dec, BATCH_SIZE_BUCKETS).observe(len(rows))
            self._decode_s[dec] = self._decode_s.get(dec, 0.0) + d
            audio = 0.0
            for tag, kind, wait, audio_s in rows:
                _hist(self._wait, (self._prop(tag), kind), QUEUE_WAIT_BUCKETS_S).observe(wait)
                self._jobs[(dec, kind)] = self._jobs.get((dec, kind), 0) + 1
                audio += audio_s
            self._audio_s[dec] = self._audio_s.get(dec, 0.0) + audio
        for listener in self._listeners:
            listener.observe_decode(d)

    # -- reading ----------------------------------------------------------------------------------
    def decode_seconds(self) -> float:
        """Decode wall time summed over every decoder and worker since start, s."""
        with self._lock:
            return sum(self._decode_s.values())

    def ttf_count(self, tag: str | None = None) -> int:
        """Finals observed (of one property, or all)."""
        with self._lock:
            if tag is None:
                return sum(h.count for h in self._ttf.values())
            h = self._ttf.get(tag)
            return h.count if h is not None else 0

    def render(self) -> list[str]:
        """Every family as Prometheus text lines (``# HELP``, ``# TYPE``, samples); a collector
        for :meth:`.metrics.Metrics.add_collector`."""
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        def hists(name: str, help_: str, table: dict[Any, Histogram], keys: tuple[str, ...]) -> None:
            head(name, "histogram", help_)
            for key, h in sorted(table.items()):
                values = key if isinstance(key, tuple) else (key,)
                out.extend(h.lines(name, dict(zip(keys, values))))

        def counters(name: str, help_: str, table: dict[Any, float], keys: tuple[str, ...]) -> None:
            head(name, "counter", help_)
            for key, v in sorted(table.items()):
                values = key if isinstance(key, tuple) else (key,)
                out.append(f"{name}{render_labels(dict(zip(keys, values)))} {format_value(v)}")

        with self._lock:
            hists("sis_time_to_final_seconds", "Time from the end of speech to the final result, seconds.",
                  self._ttf, ("property",))
            hists("sis_decode_queue_wait_seconds", "Time a decode job waited in the decode queue, seconds.",
                  self._wait, ("property", "kind"))
            hists("sis_decode_batch_seconds", "Wall time of one batched decode, seconds.",
                  self._decode, ("decoder",))
            hists("sis_decode_batch_size", "Decode jobs decoded together in one batch.", self._batch, ("decoder",))
            counters("sis_decode_jobs_total", "Decode jobs decoded, by kind (final or partial).",
                     self._jobs, ("decoder", "kind"))
            counters("sis_decoded_audio_seconds_total", "Audio decoded, seconds (partials count each pass).",
                     self._audio_s, ("decoder",))
            counters("sis_decode_seconds_total", "Decode wall time summed over the decode workers, seconds.",
                     self._decode_s, ("decoder",))
        return out
