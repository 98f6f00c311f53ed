"""Per-call measurements of a load test and their aggregation (bounded memory).

:class:`CallResult` is what one call measured; :class:`Aggregate` pools any number of them:
latency samples with their arrival time (for the plots over time), error counts by code,
word/character error counts per file, and the harness's pacing histogram. Samples are kept up to
:data:`MAX_SAMPLES` per series; beyond that a uniform reservoir sample is kept (overflow policy
``reservoir``: counts, sums and maxima stay exact, quantiles come from the reservoir).
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ..client.pacing import PacingStats
from ..text import ErrorCounts

__all__ = ["MAX_CALL_RECORDS", "MAX_SAMPLES", "Aggregate", "CallResult", "LiveCounters", "Samples", "quantiles"]

#: Samples kept per latency series before reservoir sampling starts.
MAX_SAMPLES: Final = 1_000_000
#: Call records kept for the JSON's ``call_records`` (the first ones; later calls are counted).
MAX_CALL_RECORDS: Final = 20_000


def quantiles(values: Iterable[float] | np.ndarray, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, Any]:
    """``{"count", "p50", "p95", "p99", "max", "mean"}`` of `values` (ms); None when empty."""
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    out: dict[str, Any] = {"count": int(a.size)}
    for q in qs:
        out[f"p{round(q * 100):d}"] = None if a.size == 0 else round(float(np.quantile(a, q)), 3)
    out["max"] = None if a.size == 0 else round(float(a.max()), 3)
    out["mean"] = None if a.size == 0 else round(float(a.mean()), 3)
    return out


class Samples:
    """A bounded series of ``(t_s, value)`` samples (reservoir beyond `cap`)."""

    __slots__ = ("_rng", "cap", "count", "max", "t", "v")

    def __init__(self, cap: int = MAX_SAMPLES, seed: int = 0) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = cap
        self.t: list[float] = []
        self.v: list[float] = []
        self.count = 0
        self.max = -math.inf
        self._rng = random.Random(seed)

    def add(self, t_s: float, value: float) -> None:
        """Record `value` observed at `t_s` (seconds since the run started)."""
        self.count += 1
        if value > self.max:  # noqa: PLR1730 - no max() call per sample
            self.max = value
        if len(self.v) < self.cap:
            self.t.append(t_s)
            self.v.append(value)
            return
        j = self._rng.randrange(self.count)
        if j < self.cap:
            self.t[j] = t_s
            self.v[j] = value

    def summary(self, t_from: float = -math.inf, t_to: float = math.inf) -> dict[str, Any]:
        """Quantiles of the samples observed in ``[t_from, t_to)`` (all by default)."""
        if t_from == -math.inf and t_to == math.inf:
            out = quantiles(np.asarray(self.v))
            out["count"] = self.count
            if self.count:
                out["max"] = round(self.max, 3)
            return out
        t = np.asarray(self.t)
        v = np.asarray(self.v)
        return quantiles(v[(t >= t_from) & (t < t_to)])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t_s, values)`` as arrays (sorted by time)."""
        t = np.asarray(self.t, dtype=np.float64)
        v = np.asarray(self.v, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        return t[order], v[order]


class LiveCounters:
    """Counters the calls update as events arrive (the progress line; calls in flight included).

    ``recent`` keeps the last :data:`LIVE_RECENT` ``(arrival_s, final latency ms)`` pairs and
    ``error_times`` the times of the last errors (both ``drop_oldest``).
    """

    __slots__ = ("error_times", "errors", "finals", "recent")

    def __init__(self) -> None:
        self.finals = 0
        self.errors = 0
        self.recent: deque[tuple[float, float]] = deque(maxlen=LIVE_RECENT)
        self.error_times: deque[float] = deque(maxlen=LIVE_RECENT)

    def window(self, t_from: float, t_to: float) -> tuple[list[float], int]:
        """Final latencies that arrived in ``[t_from, t_to)`` and the errors counted there."""
        lat = [v for t, v in self.recent if t_from <= t < t_to]
        return lat, sum(1 for t in self.error_times if t_from <= t < t_to)


#: Final latencies kept for the progress line's sliding p95.
LIVE_RECENT: Final = 50_000


@dataclass
class CallResult:
    """What one call measured (times in ms unless said otherwise).

    Attributes
    ----------
    index, slot : int
        Call number (in start order) and the stream slot that ran it.
    file : str
        Corpus file name.
    started_s, ended_s : float
        Seconds since the run started.
    connect_ms : float or None
        Connect + START answered (None: the connection failed).
    ttfs_ms : float or None
        First speech onset (corpus VAD) due on the wire -> first result (interim or final).
    final_latency_ms : list of (float, float)
        ``(arrival_s, ms)`` per reference end of speech: that end due on the wire -> the
        first final covering it.
    missed_ends : int
        Reference ends of speech no final covered.
    finals, partials : int
    audio_s : float
        Audio sent (seconds).
    hypothesis : str
        The finals' text, joined.
    errors : list of str
        Error codes (``SIS.0312``, ``connect:SisConnectionError``, ``timeout``...).
    outcome : {"ok", "error", "cut"}
        ``cut``: ended early by the end of the run (Ctrl-C, drain time-out); not scored.
    words, chars : ErrorCounts or None
        Edit counts against the reference (complete calls with a reference only).
    pacing : PacingStats or None
        The stream's pacing errors (merged into the harness figures).
    """

    index: int
    slot: int
    file: str
    started_s: float
    ended_s: float = 0.0
    connect_ms: float | None = None
    ttfs_ms: float | None = None
    final_latency_ms: list[tuple[float, float]] = field(default_factory=list)
    missed_ends: int = 0
    finals: int = 0
    partials: int = 0
    audio_s: float = 0.0
    hypothesis: str = ""
    errors: list[str] = field(default_factory=list)
    outcome: str = "ok"
    words: ErrorCounts | None = None
    chars: ErrorCounts | None = None
    pacing: PacingStats | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary of this call."""
        lat = [round(v, 1) for _, v in self.final_latency_ms]
        return {
            "index": self.index, "slot": self.slot, "file": self.file,
            "started_s": round(self.started_s, 3), "ended_s": round(self.ended_s, 3),
            "outcome": self.outcome, "errors": list(self.errors),
            "connect_ms": None if self.connect_ms is None else round(self.connect_ms, 1),
            "ttfs_ms": None if self.ttfs_ms is None else round(self.ttfs_ms, 1),
            "final_latency_ms": lat, "missed_ends": self.missed_ends,
            "finals": self.finals, "partials": self.partials, "audio_s": round(self.audio_s, 3),
            "hypothesis": self.hypothesis,
            "wer": None if self.words is None else round(self.words.rate, 4),
            "cer": None if self.chars is None else round(self.chars.rate, 4),
        }


@dataclass
class _FileScore:
    words: ErrorCounts = field(default_factory=lambda: ErrorCounts(0, 0, 0, 0))
    chars: ErrorCounts = field(default_factory=lambda: ErrorCounts(0, 0, 0, 0))
    calls: int = 0


class Aggregate:
    """Everything a run measured, pooled over its calls (bounded)."""

    def __init__(self, *, max_samples: int = MAX_SAMPLES, max_records: int = MAX_CALL_RECORDS) -> None:
        self.connect = Samples(max_samples, 1)
        self.ttfs = Samples(max_samples, 2)
        self.final_latency = Samples(max_samples, 3)
        self.interim_rate = Samples(max_samples, 4)
        self.errors: Counter[str] = Counter()
        self.error_times: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.calls_started = 0
        self.finals = 0
        self.partials = 0
        self.missed_ends = 0
        self.audio_s = 0.0
        self.pacing = PacingStats()
        self.files: dict[str, _FileScore] = {}
        self.records: list[dict[str, Any]] = []
        self.max_records = max_records
        self.records_dropped = 0

    def add(self, call: CallResult) -> None:
        """Pool one finished call."""
        self.outcomes[call.outcome] += 1
        if call.connect_ms is not None:
            self.connect.add(call.started_s, call.connect_ms)
        if call.ttfs_ms is not None:
            self.ttfs.add(call.ended_s, call.ttfs_ms)
        for t, v in call.final_latency_ms:
            self.final_latency.add(t, v)
        if call.audio_s > 0 and call.outcome != "error":
            self.interim_rate.add(call.ended_s, call.partials / call.audio_s)
        for e in call.errors:
            self.errors[e] += 1
            if len(self.error_times) < MAX_SAMPLES:
                self.error_times.append(call.ended_s)
        self.finals += call.finals
        self.partials += call.partials
        self.missed_ends += call.missed_ends
        self.audio_s += call.audio_s
        if call.pacing is not None:
            self.pacing.merge(call.pacing)
        if call.words is not None and call.chars is not None:
            fs = self.files.setdefault(call.file, _FileScore())
            fs.words = fs.words + call.words
            fs.chars = fs.chars + call.chars
            fs.calls += 1
        if len(self.records) < self.max_records:
            self.records.append(call.record())
        else:
            self.records_dropped += 1

    def accuracy(self, by_chars: bool) -> dict[str, Any]:
        """Pooled WER/CER (``wer`` is the CER when `by_chars`) and the rates per file."""
        words = sum((f.words for f in self.files.values()), ErrorCounts(0, 0, 0, 0))
        chars = sum((f.chars for f in self.files.values()), ErrorCounts(0, 0, 0, 0))
        scored = sum(f.calls for f in self.files.values())
        w = None if scored == 0 else round(words.rate, 4)
        c = None if scored == 0 else round(chars.rate, 4)
        per_file = {name: {"calls": f.calls, "wer": round(f.words.rate, 4), "cer": round(f.chars.rate, 4),
                           "substitutions": f.words.substitutions, "deletions": f.words.deletions,
                           "insertions": f.words.insertions, "reference_words": f.words.reference_length}
                    for name, f in sorted(self.files.items())}
        return {"wer": c if by_chars else w, "cer": c, "word_wer": w, "unit": "char" if by_chars else "word",
                "scored_calls": scored, "by_file": per_file}

    def pacing_ms(self) -> dict[str, Any]:
        """The harness's pacing lateness over every frame sent (ms)."""
        p = self.pacing
        if p.count == 0:
            return {"frames": 0, "p50": None, "p99": None, "max": None}
        return {"frames": p.count, "p50": round(p.quantile(0.5) * 1000, 3),
                "p99": round(p.quantile(0.99) * 1000, 3), "max": round(p.max * 1000, 3)}
