"""Pacer: drift-free send scheduling by absolute deadlines on an injected clock (sans-IO)."""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable
from fractions import Fraction
from numbers import Real
from typing import Final

import numpy as np

from ..errors import LocalProtocolError

__all__ = [
    "DEFAULT_BURST_S",
    "DEFAULT_MAX_CATCHUP_S",
    "MAX_BURST_S",
    "MAX_SPEED",
    "POLICIES",
    "Pacer",
    "PacingStats",
]

_log = logging.getLogger(__name__)

#: Pacing policies understood by :class:`Pacer` (``"x4"`` etc. are shorthands for ``"xN"``).
POLICIES: Final = ("realtime", "xN", "burst-then-realtime")
#: Highest ``speed`` accepted by the ``xN`` policy. SIS documents no rate limit, and the
#: official SDK already sends 3-12x real time; beyond 100x a "paced" stream is a bulk upload.
MAX_SPEED: Final = 100.0
#: Highest ``burst_s`` accepted by ``burst-then-realtime`` (the pre-roll sent at once).
MAX_BURST_S: Final = 10.0
#: ``burst_s`` used by ``burst-then-realtime`` when none is given.
DEFAULT_BURST_S: Final = 1.0
#: How late (seconds) the next frame may be before the schedule is re-anchored after a stall.
DEFAULT_MAX_CATCHUP_S: Final = 1.0

_NS_PER_S: Final = 1_000_000_000
_log10 = math.log10
# Lateness this small is float rounding of the caller's clock arithmetic, never a stall.
_STALL_TOLERANCE_S: Final = 1e-9
# Speeds are held as exact fractions num/den with a bounded denominator (1.5 -> 3/2).
_SPEED_MAX_DENOMINATOR: Final = 1000


def _check_real(name: str, value: object) -> float:
    # bool is an int subclass; a True frame duration is a bug, not 1 second.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return f


class PacingStats:
    """Bounded-memory statistics of pacing errors (seconds, ``actual - scheduled``).

    Errors are counted in a fixed log-spaced histogram: 20 buckets per decade from 1 us
    to 1000 s, separately for early (negative) and late (positive) sends, plus one bucket
    for ``|error| < 1 us``. Memory is constant (about 3 KB) however long the stream runs,
    and histograms of many streams merge exactly (:meth:`merge`). ``count``, ``min``,
    ``max`` and ``mean`` are exact; quantiles are the geometric centre of the bucket
    holding the requested rank, clamped to ``[min, max]``, so their relative error is at
    most about 6 % (values below 1 us are reported as 0.0).
    """

    #: log10 of the smallest and largest bucket edges (1 us .. 1000 s).
    LOG10_LO: Final = -6
    LOG10_HI: Final = 3
    #: Buckets per decade; the relative width of a bucket is 10**(1/20) - 1, about 12 %.
    PER_DECADE: Final = 20
    _N_SIDE: Final = (LOG10_HI - LOG10_LO) * PER_DECADE
    _ZERO: Final = _N_SIDE  # index of the |x| < 1 us bucket; negatives below, positives above

    __slots__ = ("_count", "_counts", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._counts = array("q", bytes(8 * (2 * self._N_SIDE + 1)))
        self.reset()

    def reset(self) -> None:
        """Forget every recorded value."""
        for i in range(len(self._counts)):
            self._counts[i] = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def _centre(self, i: int) -> float:
        if i == self._ZERO:
            return 0.0
        k = i - self._ZERO - 1 if i > self._ZERO else self._ZERO - 1 - i
        v = 10.0 ** (self.LOG10_LO + (k + 0.5) / self.PER_DECADE)
        return v if i > self._ZERO else -v

    def record(self, error_s: float) -> None:
        """Add one pacing error (seconds; positive means the send was late).

        Raises
        ------
        ValueError
            If `error_s` is NaN or infinite.
        """
        # One call per frame of every paced stream: no helper and no min()/max() calls.
        # Bucket index: |x| < 1 us -> _ZERO; else k = floor((log10|x| - LOG10_LO) * PER_DECADE)
        # (bucket k covers [10**(LO + k/PER), 10**(LO + (k+1)/PER)), values >= 1000 s share the
        # top one), _ZERO + 1 + k for late sends, _ZERO - 1 - k for early ones.
        if error_s > 0.0:
            if error_s < 1e-6:
                i = self._ZERO
            elif error_s == math.inf:
                raise ValueError(f"pacing error must be finite, got {error_s!r}")
            else:
                k = int((_log10(error_s) + 6.0) * 20.0)  # -LOG10_LO, PER_DECADE
                i = self._ZERO + 1 + (k if k < self._N_SIDE else self._N_SIDE - 1)
        elif error_s > -1e-6:
            i = self._ZERO
        elif error_s > -math.inf:
            k = int((_log10(-error_s) + 6.0) * 20.0)
            i = self._ZERO - 1 - (k if k < self._N_SIDE else self._N_SIDE - 1)
        else:  # -inf or NaN (NaN fails every comparison above)
            raise ValueError(f"pacing error must be finite, got {error_s!r}")
        self._counts[i] += 1
        self._count += 1
        self._sum += error_s
        if error_s < self._min:  # noqa: PLR1730 - no min()/max() call per frame
            self._min = error_s
        if error_s > self._max:  # noqa: PLR1730
            self._max = error_s

    def merge(self, other: PacingStats) -> None:
        """Add every value recorded by `other` to these statistics (exact, for aggregation).

        Raises
        ------
        TypeError
            If `other` is not a :class:`PacingStats`.
        """
        if not isinstance(other, PacingStats):
            raise TypeError(f"expected PacingStats, got {type(other).__name__}")
        # In place through numpy views of the two arrays: ~5 us, where a Python loop over the
        # 361 buckets took ~60 us (merging 1000 streams for a metrics snapshot blocked the
        # event loop of their pump for 60 ms).
        dst = np.frombuffer(self._counts, dtype=np.int64)
        dst += np.frombuffer(other._counts, dtype=np.int64)
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @property
    def count(self) -> int:
        """Number of recorded values."""
        return self._count

    @property
    def min(self) -> float:
        """Smallest recorded value (exact), NaN when empty."""
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        """Largest recorded value (exact), NaN when empty."""
        return self._max if self._count else math.nan

    @property
    def mean(self) -> float:
        """Arithmetic mean of the recorded values, NaN when empty."""
        return self._sum / self._count if self._count else math.nan

    def quantile(self, q: float) -> float:
        """Approximate `q`-quantile (nearest rank, bucket resolution; see the class notes).

        Parameters
        ----------
        q : float
            Quantile in ``[0, 1]``.

        Returns
        -------
        float
            The quantile in seconds, NaN when nothing was recorded.

        Raises
        ------
        ValueError
            If `q` is outside ``[0, 1]``.
        """
        q = _check_real("q", q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must lie in [0, 1], got {q}")
        if not self._count:
            return math.nan
        if q == 0.0:
            return self._min
        if q == 1.0:
            return self._max
        rank = max(1, math.ceil(q * self._count))  # 1-based nearest rank
        seen = 0
        for i, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                return min(max(self._centre(i), self._min), self._max)
        return self._max  # unreachable: the counts sum to count

    @property
    def p50(self) -> float:
        """Approximate median pacing error (seconds)."""
        return self.quantile(0.5)

    @property
    def p99(self) -> float:
        """Approximate 99th-percentile pacing error (seconds)."""
        return self.quantile(0.99)

    def as_dict(self) -> dict[str, float]:
        """Summary for metrics: ``count, mean, min, p50, p99, max`` (seconds)."""
        return {
            "count": self._count,
            "mean": self.mean,
            "min": self.min,
            "p50": self.p50,
            "p99": self.p99,
            "max": self.max,
        }

    def __repr__(self) -> str:
        d = self.as_dict()
        return "PacingStats(" + ", ".join(f"{k}={v:.6g}" for k, v in d.items()) + ")"


class Pacer:
    """Send schedule for fixed-duration audio frames: pure arithmetic on an injected clock.

    Frame ``n`` (0-based, counted since :meth:`start`) is due at::

        deadline(n) = t0 + max(0, n * frame_duration - burst) / speed

    where ``t0`` is the anchor (the time of the first frame), ``burst`` is 0 except for the
    ``burst-then-realtime`` policy and ``speed`` is 1 except for ``xN``. Every deadline is
    computed afresh from ``n`` in integer nanoseconds, never by adding up waits, so no
    drift can accumulate however long the stream runs; the only rounding is one float
    conversion per deadline.

    When the next frame is more than `max_catchup_s` late (the producer had no audio, the
    event loop was blocked, the link stalled), the anchor moves forward so that the frame
    is exactly `max_catchup_s` late: at most `max_catchup_s * speed` seconds of backlog are
    then sent at once, instead of the whole backlog.

    The pacer performs no I/O and never sleeps. A transport loop looks like::

        await asyncio.sleep(pacer.delay(loop.time()))
        await ws.send_bytes(frame)
        pacer.sent(loop.time())

    Parameters
    ----------
    frame_duration_s : float
        Audio duration of one frame, seconds (resolution 1 ns), e.g. ``0.1`` for 100 ms.
    policy : str, default "realtime"
        ``"realtime"`` (speed 1), ``"xN"`` (faster than real time by `speed`, capped at
        :data:`MAX_SPEED`; ``"x4"`` is shorthand for ``policy="xN", speed=4``) or
        ``"burst-then-realtime"`` (the first `burst_s` seconds of audio are due at once,
        then real time, which keeps the server `burst_s` ahead).
    speed : float, default 1.0
        Playback speed for ``xN``, in ``[1, MAX_SPEED]``; must stay 1.0 for the others.
        Held as an exact fraction with denominator <= 1000.
    burst_s : float, optional
        Pre-roll for ``burst-then-realtime``, in ``[0, MAX_BURST_S]`` (default
        :data:`DEFAULT_BURST_S`). Not allowed with the other policies.
    max_catchup_s : float, default DEFAULT_MAX_CATCHUP_S
        Lateness beyond which the schedule is re-anchored (>= 0). With 0 every late frame
        re-anchors, i.e. lateness is never made up.
    clock : callable, default time.monotonic
        Returns the current time in seconds; used when `now` is omitted.

    Raises
    ------
    TypeError
        If a number argument is not a real number, or `clock` is not callable.
    ValueError
        If an argument is out of range or does not fit the policy.
    """

    __slots__ = (
        "_burst_ns",
        "_clock",
        "_fd_ns",
        "_frame_duration_s",
        "_max_catchup_s",
        "_n",
        "_policy",
        "_speed_den",
        "_speed_num",
        "_stalled_s",
        "_stalls",
        "_t0",
        "stats",
    )

    def __init__(
        self,
        frame_duration_s: float,
        *,
        policy: str = "realtime",
        speed: float = 1.0,
        burst_s: float | None = None,
        max_catchup_s: float = DEFAULT_MAX_CATCHUP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        fd = _check_real("frame_duration_s", frame_duration_s)
        fd_ns = round(fd * _NS_PER_S)
        if fd_ns < 1 or fd > 3600.0:
            raise ValueError(
                f"frame_duration_s must lie in [1 ns, 3600 s], got {frame_duration_s!r}"
            )
        speed_f = _check_real("speed", speed)
        if not isinstance(policy, str):
            raise TypeError(f"policy must be a str, got {type(policy).__name__}")
        if policy not in POLICIES:
            short = policy[1:] if policy[:1] in ("x", "X") else ""
            try:
                short_speed = float(short)
            except ValueError:
                short_speed = math.nan
            if not math.isfinite(short_speed):
                raise ValueError(
                    f"policy must be one of {POLICIES} or 'x<speed>' such as 'x4', got {policy!r}"
                )
            if speed_f != 1.0 and speed_f != short_speed:
                raise ValueError(f"policy={policy!r} contradicts speed={speed!r}")
            policy, speed_f = "xN", short_speed
        if policy == "xN":
            if not 1.0 <= speed_f <= MAX_SPEED:
                raise ValueError(
                    f"speed for policy 'xN' must lie in [1, {MAX_SPEED:g}], got {speed_f:g}"
                )
        elif speed_f != 1.0:
            raise ValueError(f"speed={speed_f:g} needs policy 'xN'; policy {policy!r} runs at 1.0")
        if burst_s is None:
            burst = DEFAULT_BURST_S if policy == "burst-then-realtime" else 0.0
        else:
            burst = _check_real("burst_s", burst_s)
            if policy != "burst-then-realtime":
                raise ValueError(
                    f"burst_s only applies to policy 'burst-then-realtime', got policy {policy!r}"
                )
            if not 0.0 <= burst <= MAX_BURST_S:
                raise ValueError(f"burst_s must lie in [0, {MAX_BURST_S:g}] s, got {burst:g}")
        catchup = _check_real("max_catchup_s", max_catchup_s)
        if catchup < 0.0:
            raise ValueError(f"max_catchup_s must be >= 0, got {catchup:g}")
        if not callable(clock):
            raise TypeError(f"clock must be callable returning seconds, got {type(clock).__name__}")
        frac = Fraction(speed_f).limit_denominator(_SPEED_MAX_DENOMINATOR)
        self._fd_ns = fd_ns
        self._frame_duration_s = fd_ns / _NS_PER_S
        self._policy = policy
        self._speed_num = frac.numerator
        self._speed_den = frac.denominator
        self._burst_ns = round(burst * _NS_PER_S)
        self._max_catchup_s = catchup
        self._clock = clock
        #: Pacing errors (``actual - scheduled`` send time, seconds) of every :meth:`sent`.
        self.stats = PacingStats()
        self._t0: float | None = None
        self._n = 0
        self._stalls = 0
        self._stalled_s = 0.0

    # -- configuration -------------------------------------------------------------------
    @property
    def frame_duration_s(self) -> float:
        """Frame duration in seconds (rounded to whole nanoseconds)."""
        return self._frame_duration_s

    @property
    def policy(self) -> str:
        """``"realtime"``, ``"xN"`` or ``"burst-then-realtime"``."""
        return self._policy

    @property
    def speed(self) -> float:
        """Speed factor actually used (the exact fraction, as a float)."""
        return self._speed_num / self._speed_den

    @property
    def burst_s(self) -> float:
        """Pre-roll sent at once (0 outside ``burst-then-realtime``)."""
        return self._burst_ns / _NS_PER_S

    @property
    def max_catchup_s(self) -> float:
        """Lateness beyond which the schedule is re-anchored."""
        return self._max_catchup_s

    # -- state ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether the schedule is anchored (by :meth:`start`, :meth:`delay` or :meth:`sent`)."""
        return self._t0 is not None

    @property
    def frames_sent(self) -> int:
        """Frames recorded by :meth:`sent`; also the index of the next frame."""
        return self._n

    @property
    def stalls(self) -> int:
        """How many times the schedule was re-anchored (stalls plus :meth:`reanchor` calls)."""
        return self._stalls

    @property
    def stalled_s(self) -> float:
        """Total time (seconds) the anchor was moved forward by re-anchoring."""
        return self._stalled_s

    def _offset_ns(self, n: int) -> int:
        # Integer ns from the anchor: max(0, n*fd - burst) / speed, floored (< 1 ns error,
        # recomputed from n every time, so it never accumulates).
        a = n * self._fd_ns - self._burst_ns
        if a <= 0:
            return 0
        return a * self._speed_den // self._speed_num

    def start(self, now: float | None = None) -> None:
        """Anchor the schedule: frame 0 is due at `now` (default: the clock).

        Raises
        ------
        LocalProtocolError
            If the pacer was already started (call :meth:`reset` first).
        """
        if self._t0 is not None:
            raise LocalProtocolError("Pacer.start() on a started pacer; call reset() first")
        self._t0 = self._clock() if now is None else float(now)

    def deadline(self, n: int) -> float:
        """Absolute time (clock seconds) at which frame `n` is due.

        Raises
        ------
        TypeError
            If `n` is not an int.
        ValueError
            If `n` is negative.
        LocalProtocolError
            If the pacer has not been started yet.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"frame index n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"frame index n must be >= 0, got {n}")
        if self._t0 is None:
            raise LocalProtocolError("Pacer.deadline() before start(), delay() or sent()")
        return self._t0 + self._offset_ns(n) / _NS_PER_S

    def _due(self, now: float) -> float:
        # Deadline of the next frame, anchoring on first use and re-anchoring after a stall.
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._offset_ns(self._n) / _NS_PER_S
        late = now - due
        if late > self._max_catchup_s + _STALL_TOLERANCE_S:
            shift = late - self._max_catchup_s
            self._t0 += shift
            self._stalls += 1
            self._stalled_s += shift
            _log.debug(
                "pacer re-anchored at frame %d: %.3f s late, shifted %.3f s", self._n, late, shift
            )
            due = self._t0 + self._offset_ns(self._n) / _NS_PER_S
        return due

    def delay(self, now: float | None = None) -> float:
        """Seconds to wait before sending the next frame (0.0 when it is already due).

        Anchors the schedule on first use, and re-anchors it when the next frame is more
        than `max_catchup_s` late.

        Parameters
        ----------
        now : float, optional
            Current time; default: the clock.
        """
        if now is None:
            now = self._clock()
        due = self._due(now)
        return due - now if due > now else 0.0

    def sent(self, now: float | None = None) -> float:
        """Record that the next frame was sent at `now`; return its pacing error.

        Parameters
        ----------
        now : float, optional
            Send time; default: the clock.

        Returns
        -------
        float
            ``now - deadline`` in seconds (positive: late, negative: early), also added
            to :attr:`stats`.
        """
        if now is None:
            now = self._clock()
        err = now - self._due(now)
        self.stats.record(err)
        self._n += 1
        return err

    def reanchor(self, now: float | None = None) -> None:
        """Make the next frame due at `now` without any catch-up (counts as a stall).

        Use it when the gap is known to be intentional (e.g. audio withheld by local VAD),
        so that nothing of it is made up. Does nothing when the next frame is not yet due;
        before the pacer is started it just starts it.
        """
        if now is None:
            now = self._clock()
        if self._t0 is None:
            self._t0 = now
            return
        due = self._t0 + self._offset_ns(self._n) / _NS_PER_S
        shift = now - due
        if shift > 0:  # never moves the schedule earlier (that would break the pacing)
            self._stalls += 1
            self._stalled_s += shift
            self._t0 += shift

    def reset(self) -> None:
        """Forget the anchor, the frame count, the stall counters and the statistics."""
        self._t0 = None
        self._n = 0
        self._stalls = 0
        self._stalled_s = 0.0
        self.stats.reset()

    def __repr__(self) -> str:
        return (
            f"Pacer(frame_duration_s={self._frame_duration_s:g}, policy={self._policy!r}, "
            f"speed={self.speed:g}, burst_s={self.burst_s:g}, "
            f"max_catchup_s={self._max_catchup_s:g}, "
            f"frames_sent={self._n}, stalls={self._stalls})"
        )
