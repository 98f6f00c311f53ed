"""Admission control from measured engine capacity: refuse a new session (SIS.0312) only when
accepting it would push time-to-final over the configured bound.

Model
-----
The decode budget is ``workers`` decode threads x wall time: ``workers`` decode-seconds per second.
:class:`AdmissionController` measures, over a sliding window (default 10 s, in 1 s buckets):

* the decode seconds spent (every batched decode reports its wall time,
  :meth:`~AdmissionController.observe_decode`), hence the decode **utilisation** = decode seconds /
  (workers x window);
* the session-seconds of the active sessions (the session count sampled at every observation and
  every START, integrated over time);
* the **cost of one session** = decode seconds per session-second, an exponentially weighted
  moving average over the 1 s buckets (``alpha`` per bucket: the ratio of the averaged decode
  seconds to the averaged session-seconds, so silent seconds and bursts of finals average out);
* the recent **p95 time-to-final** (end of speech -> final result,
  :meth:`~AdmissionController.observe_ttf`).

:meth:`~AdmissionController.admit` refuses a new session when

1. the predicted utilisation with one more session, ``(active + 1) x cost / workers``, reaches
   ``headroom`` (default 0.9) of the budget: decode queues then grow without bound and every
   final waits longer; or
2. the recent p95 time-to-final is already over the bound while the measured utilisation is at
   least ``busy`` (default 0.6): the engine, not something else, is the bottleneck.

It admits when nothing has been measured yet (cold start: no cost until ``min_session_s``
session-seconds and one decode were seen; no p95 before ``min_ttf_samples`` finals in the
window), and always when no session is active. ``--max-sessions`` stays a hard cap, checked
before this model.

Engines whose decodes do not go through the decode batcher (pocketsphinx, the ``none`` engine,
Whisper streams with word timings or hot words) report no decode seconds. While no decode was
ever reported the controller works on time-to-final alone: rule 2 without the utilisation
condition (refuse while the recent p95 is over the bound). Decodes outside the batcher in a
mixed deployment are not in the utilisation: they make the cost look lower than it is, and
rule 2 catches what rule 1 misses.

Every method is thread-safe: decode observations come from the decode worker threads, the rest
from the event loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_BUSY",
    "DEFAULT_HEADROOM",
    "DEFAULT_TTF_BOUND_MS",
    "DEFAULT_WINDOW_S",
    "Admission",
    "AdmissionController",
    "AdmissionFigures",
]

logger = logging.getLogger(__name__)

#: Default time-to-final bound: the default ``vad_tail`` (500 ms) + 700 ms.
DEFAULT_TTF_BOUND_MS: Final = 1200
#: Default sliding window, seconds.
DEFAULT_WINDOW_S: Final = 10.0
#: Default share of the decode budget a new session may bring the predicted utilisation to.
DEFAULT_HEADROOM: Final = 0.9
#: Default utilisation above which a p95 time-to-final over the bound refuses new sessions.
DEFAULT_BUSY: Final = 0.6
#: Bucket length of the sliding window, seconds.
_BUCKET_S: Final = 1.0
#: Time-to-final observations kept (overflow policy: drop_oldest; the window prunes them sooner).
_MAX_TTF_SAMPLES: Final = 4096


class Admission(NamedTuple):
    """The answer of :meth:`AdmissionController.admit`: ``ok, reason = controller.admit(n)``.

    Attributes
    ----------
    ok : bool
        True: accept the session.
    reason : str
        Why (for a refusal: the measured figures, for the ERROR message and the log).
    """

    ok: bool
    reason: str


@dataclass(frozen=True)
class AdmissionFigures:
    """What the controller measured (``/metrics``, ``/healthz``).

    Attributes
    ----------
    mode : str
        ``"cold"`` (nothing measured yet), ``"budget"`` (decode seconds measured: both rules) or
        ``"ttf"`` (time-to-final only: no decode was ever reported).
    workers : int
        Decode workers (the budget is this many decode-seconds per second).
    ttf_bound_s, headroom, busy, window_s : float
        The configuration.
    utilisation : float or None
        Decode seconds / (workers x wall time) over the window.
    session_cost : float or None
        Decode seconds per session-second (EWMA).
    sessions_mean : float or None
        Mean active sessions over the window.
    capacity : int or None
        Sessions the budget allows at the headroom (``floor(headroom x workers / cost)``).
    ttf_p95_s : float or None
        p95 time-to-final over the window (None below ``min_ttf_samples`` finals).
    ttf_samples : int
        Finals in the window.
    admitted, refused_budget, refused_ttf : int
        Decisions since start.
    """

    mode: str
    workers: int
    ttf_bound_s: float
    headroom: float
    busy: float
    window_s: float
    utilisation: float | None
    session_cost: float | None
    sessions_mean: float | None
    capacity: int | None
    ttf_p95_s: float | None
    ttf_samples: int
    admitted: int
    refused_budget: int
    refused_ttf: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (``/healthz``): times in ms, ratios rounded."""
        def r(v: float | None, nd: int = 3) -> float | None:
            return None if v is None else round(v, nd)
        return {
            "mode": self.mode, "workers": self.workers, "utilisation": r(self.utilisation),
            "session_cost": r(self.session_cost, 4), "capacity": self.capacity,
            "ttf_p95_ms": None if self.ttf_p95_s is None else round(self.ttf_p95_s * 1000),
            "ttf_bound_ms": round(self.ttf_bound_s * 1000), "ttf_samples": self.ttf_samples,
            "admitted": self.admitted, "refused": self.refused_budget + self.refused_ttf,
        }


def _check(name: str, value: object, *, low: float = 0.0, strict: bool = True, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = (v > low if strict else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        rng = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return v


def _p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(0.95 * len(s)) - 1))]  # nearest rank


class AdmissionController:
    """Admits or refuses new sessions from the measured decode budget (module docstring).

    Parameters
    ----------
    workers : int
        Decode workers (threads of the decode batcher).
    ttf_bound_ms : float
        The time-to-final bound (default 1200 = the default vad_tail 500 + 700).
    window_s : float
        Sliding window of the measurements (>= 2 s).
    headroom : float
        Refuse when the predicted utilisation with one more session reaches this (0 < x <= 1).
    busy : float
        Utilisation above which a p95 time-to-final over the bound refuses (0 <= x <= 1).
    alpha : float
        EWMA weight of each 1 s bucket in the session cost (0 < x <= 1).
    min_session_s : float
        Session-seconds to observe before the cost is trusted (cold start admits).
    min_ttf_samples : int
        Finals in the window before their p95 is trusted.
    sessions : callable, optional
        Returns the number of active sessions (sampled at every observation; without it only
        :meth:`admit` samples the count it is given).
    clock : callable
        Monotonic seconds (inject a fake one in tests).
    """

    def __init__(self, workers: int, *, ttf_bound_ms: float = DEFAULT_TTF_BOUND_MS,
                 window_s: float = DEFAULT_WINDOW_S, headroom: float = DEFAULT_HEADROOM,
                 busy: float = DEFAULT_BUSY, alpha: float = 0.1, min_session_s: float = 5.0,
                 min_ttf_samples: int = 5, sessions: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if isinstance(min_ttf_samples, bool) or not isinstance(min_ttf_samples, int) or min_ttf_samples < 1:
            raise ValueError(f"min_ttf_samples must be an int >= 1, got {min_ttf_samples!r}")
        self.workers = workers
        self.ttf_bound_s = _check("ttf_bound_ms", ttf_bound_ms) / 1000.0
        self.window_s = _check("window_s", window_s, low=2.0, strict=False)
        self.headroom = _check("headroom", headroom, high=1.0)
        self.busy = _check("busy", busy, strict=False, high=1.0)
        self.alpha = _check("alpha", alpha, high=1.0)
        self.min_session_s = _check("min_session_s", min_session_s, strict=False)
        self.min_ttf_samples = min_ttf_samples
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self._clock = clock
        self._sessions = sessions
        self._nwin = max(1, round(self.window_s / _BUCKET_S))  # closed buckets in the window
        self._lock = threading.Lock()
        self._t_first: float | None = None
        self._t_last = 0.0
        self._active = 0
        self._cur = [0, 0.0, 0.0]  # bucket index, decode s, session s
        self._closed: deque[tuple[int, float, float]] = deque(maxlen=self._nwin)
        self._num = 0.0  # EWMA of decode s per bucket
        self._den = 0.0  # EWMA of session s per bucket
        self._session_s_seen = 0.0
        self._decode_seen = False
        self._ttf: deque[tuple[float, float]] = deque(maxlen=_MAX_TTF_SAMPLES)
        self._admitted = 0
        self._refused_budget = 0
        self._refused_ttf = 0

    # -- time keeping (under the lock) ------------------------------------------------------------
    def _close_bucket(self, decode_s: float, session_s: float, repeat: int = 1) -> None:
        """EWMA update for `repeat` closed buckets alike."""
        keep = (1.0 - self.alpha) ** repeat
        self._num = keep * self._num + (1.0 - keep) * decode_s
        self._den = keep * self._den + (1.0 - keep) * session_s

    def _advance(self, now: float) -> None:
        if self._sessions is not None:
            active = max(0, int(self._sessions()))
        else:
            active = self._active
        if self._t_first is None:
            self._t_first = self._t_last = now
            self._cur = [math.floor(now / _BUCKET_S), 0.0, 0.0]
            self._active = active
            return
        if now > self._t_last:
            n = self._cur[0]
            m = math.floor(now / _BUCKET_S)
            a = self._active  # the count held since the last sample
            if m == n:
                self._cur[2] += a * (now - self._t_last)
            else:
                self._cur[2] += a * ((n + 1) * _BUCKET_S - self._t_last)
                self._closed.append((n, self._cur[1], self._cur[2]))
                self._close_bucket(self._cur[1], self._cur[2])
                gap = m - n - 1  # whole buckets without an observation
                if gap > 0:
                    for k in range(max(n + 1, m - self._nwin), m):
                        self._closed.append((k, 0.0, a * _BUCKET_S))
                    self._close_bucket(0.0, a * _BUCKET_S, repeat=gap)
                self._cur = [m, 0.0, a * (now - m * _BUCKET_S)]
            self._session_s_seen += a * (now - self._t_last)
            self._t_last = now
        self._active = active

    def _window(self, now: float) -> tuple[float, float, float]:
        """(decode s, session s, wall s) over the window ending now."""
        m = self._cur[0]
        first = m - self._nwin
        decode = self._cur[1] + sum(d for k, d, _ in self._closed if k >= first)
        sess = self._cur[2] + sum(s for k, _, s in self._closed if k >= first)
        start = max(first * _BUCKET_S, self._t_first if self._t_first is not None else now)
        return decode, sess, max(0.0, now - start)

    def _figures(self, now: float) -> AdmissionFigures:
        decode, sess, wall = self._window(now)
        util = decode / (self.workers * wall) if wall >= _BUCKET_S else None
        cost = None
        if self._decode_seen and self._session_s_seen >= self.min_session_s and self._den > 0:
            cost = self._num / self._den
        capacity = None
        if cost is not None:
            capacity = math.floor(self.headroom * self.workers / cost) if cost > 0 else None
        while self._ttf and self._ttf[0][0] < now - self.window_s:
            self._ttf.popleft()
        n = len(self._ttf)
        p95 = _p95([s for _, s in self._ttf]) if n >= self.min_ttf_samples else None
        if self._decode_seen:
            mode = "budget"
        elif n or self._session_s_seen >= self.min_session_s:
            mode = "ttf"
        else:
            mode = "cold"
        return AdmissionFigures(
            mode=mode, workers=self.workers, ttf_bound_s=self.ttf_bound_s, headroom=self.headroom,
            busy=self.busy, window_s=self.window_s, utilisation=util, session_cost=cost,
            sessions_mean=sess / wall if wall >= _BUCKET_S else None, capacity=capacity, ttf_p95_s=p95,
            ttf_samples=n, admitted=self._admitted, refused_budget=self._refused_budget,
            refused_ttf=self._refused_ttf)

    # -- observations -----------------------------------------------------------------------------
    def observe_decode(self, decode_s: float) -> None:
        """One batched decode took `decode_s` seconds of one decode worker (any thread)."""
        d = _check("decode_s", decode_s, strict=False)
        with self._lock:
            self._advance(self._clock())
            self._cur[1] += d
            self._decode_seen = True

    def observe_ttf(self, seconds: float) -> None:
        """One final was ready `seconds` after the end of speech (any thread)."""
        s = _check("seconds", seconds, strict=False)
        with self._lock:
            now = self._clock()
            self._advance(now)
            self._ttf.append((now, s))

    # -- decisions --------------------------------------------------------------------------------
    def figures(self) -> AdmissionFigures:
        """The current measurements."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            return self._figures(now)

    def admit(self, active_sessions: int) -> Admission:
        """Decide on one new session.

        Parameters
        ----------
        active_sessions : int
            Sessions active now, the new one not included.

        Returns
        -------
        Admission
            ``(ok, reason)``; a refusal's reason names the measured utilisation and the p95
            time-to-final against the bound.
        """
        if isinstance(active_sessions, bool) or not isinstance(active_sessions, int) or active_sessions < 0:
            raise ValueError(f"active_sessions must be an int >= 0, got {active_sessions!r}")
        with self._lock:
            now = self._clock()
            self._advance(now)
            if self._sessions is None:
                self._active = active_sessions
            f = self._figures(now)
            rule, verdict = self._decide(active_sessions, f)
            if verdict.ok:
                self._admitted += 1
            elif rule == "budget":
                self._refused_budget += 1
            else:
                self._refused_ttf += 1
        if not verdict.ok:
            logger.info("admission refused: %s", verdict.reason)
        return verdict

    def _decide(self, active: int, f: AdmissionFigures) -> tuple[str, Admission]:
        bound_ms = round(self.ttf_bound_s * 1000)
        p95 = ("no p95 time-to-final yet" if f.ttf_p95_s is None else
               f"p95 time-to-final {f.ttf_p95_s * 1000:.0f} ms vs bound {bound_ms} ms")
        util = "unmeasured" if f.utilisation is None else f"{f.utilisation:.0%}"
        if active == 0:
            return "idle", Admission(True, "no session is active")
        if f.session_cost is not None:
            predicted = (active + 1) * f.session_cost / self.workers
            if predicted >= self.headroom:
                return "budget", Admission(False, (
                    f"the decode budget is used up: {active} sessions use {util} of {self.workers} decode "
                    f"worker(s), one more would need {predicted:.0%} (limit {self.headroom:.0%}) and push "
                    f"time-to-final over {bound_ms} ms; {p95}"))
        if f.ttf_p95_s is not None and f.ttf_p95_s > self.ttf_bound_s:
            if f.mode == "ttf":
                return "ttf", Admission(False, (
                    f"time-to-final is over its bound: {p95} over the last {self.window_s:g} s "
                    f"(decode utilisation not measured for this engine)"))
            if f.utilisation is not None and f.utilisation >= self.busy:
                return "ttf", Admission(False, (
                    f"time-to-final is over its bound: {p95} over the last {self.window_s:g} s "
                    f"with {util} of {self.workers} decode worker(s) in use"))
        if f.mode == "cold":
            return "cold", Admission(True, "nothing measured yet")
        return "ok", Admission(True, f"decode utilisation {util}; {p95}")
