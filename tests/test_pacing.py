"""Pacer and PacingStats: deadline arithmetic, policies, stalls, statistics (fake clock only)."""

from __future__ import annotations

import ast
import inspect
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from sis_stream.client import pacing
from sis_stream.errors import LocalProtocolError
from sis_stream.client.pacing import MAX_BURST_S, MAX_SPEED, Pacer, PacingStats

T0 = 1000.0  # a monotonic-clock-like origin (not 0, so float rounding is realistic)


class FakeClock:
    """A clock that only moves when told to; ``sleep`` is the only way time passes."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, d: float) -> None:
        assert d >= 0.0
        self.t += d


def run(pacer: Pacer, clock: FakeClock, n_frames: int, jitter=None) -> list[float]:
    """The transport loop: wait delay(), maybe wake late, send, record; returns send times."""
    times = []
    for _ in range(n_frames):
        clock.sleep(pacer.delay())
        if jitter is not None:
            clock.sleep(jitter())
        times.append(clock.t)
        pacer.sent()
    return times


# -- drift-free arithmetic -----------------------------------------------------------------


def test_realtime_no_drift_over_a_million_frames():
    # 1e6 frames of 100 ms (27.8 h of audio): every send exactly on its deadline, and the
    # last one exactly 100000 s after the first, although 0.1 is not a binary fraction.
    clock = FakeClock()
    p = Pacer(0.1, clock=clock)
    for _ in range(1_000_000):
        clock.sleep(p.delay())
        p.sent()
    assert p.frames_sent == 1_000_000
    assert clock.t == T0 + 99_999.9
    assert p.deadline(1_000_000) == T0 + 100_000.0
    assert p.stats.count == 1_000_000
    assert p.stats.min == 0.0 and p.stats.max == 0.0
    assert p.stalls == 0


def test_summing_sleeps_would_drift_where_deadlines_do_not():
    # Proves the test above can fail: the naive "sleep(frame) per frame" clock drifts.
    t = T0
    for _ in range(1_000_000):
        t += 0.1
    assert abs(t - (T0 + 100_000.0)) > 1e-7
    p = Pacer(0.1)
    p.start(T0)
    assert p.deadline(1_000_000) - T0 == 100_000.0


@pytest.mark.parametrize("fd", [0.01, 0.02, 0.1, 0.25, 2.048, 1 / 3])
@pytest.mark.parametrize("speed", [1.0, 1.5, 3.0, 7.0, 100.0])
def test_deadline_matches_exact_rational_formula(fd, speed):
    # deadline(n) = t0 + n * fd / speed with fd in whole ns and speed an exact fraction,
    # off by less than one float rounding at n up to 1e9.
    policy = "realtime" if speed == 1.0 else "xN"
    p = Pacer(fd, policy=policy, speed=speed)
    p.start(T0)
    fd_exact = Fraction(round(fd * 1e9), 10**9)
    for n in (0, 1, 2, 999, 10**6, 10**9 + 7):
        exact = T0 + n * fd_exact / Fraction(speed)
        got = p.deadline(n)
        assert abs(Fraction(got) - exact) <= Fraction(1, 10**9) + Fraction(abs(got)) * Fraction(
            2, 2**52
        )


def test_jittery_wakeups_never_accumulate():
    # The loop wakes up 0-5 ms late every time; each error is just that frame's jitter.
    rng = random.Random(1)
    jit = []

    def jitter():
        j = rng.uniform(0.0, 0.005)
        jit.append(j)
        return j

    clock = FakeClock()
    p = Pacer(0.02, clock=clock)
    times = run(p, clock, 100_000, jitter)
    errs = np.array(times) - np.array([p.deadline(n) for n in range(100_000)])
    assert np.allclose(errs, jit, atol=1e-9)
    assert p.stats.max <= 0.005 + 1e-9
    assert times[-1] - T0 == pytest.approx(99_999 * 0.02 + jit[-1], abs=1e-9)


# -- policies ------------------------------------------------------------------------------


def test_xn_runs_n_times_faster_without_drift():
    clock = FakeClock()
    p = Pacer(0.1, policy="xN", speed=4.0, clock=clock)
    times = run(p, clock, 50_000)
    assert times[-1] - T0 == pytest.approx(49_999 * 0.1 / 4, abs=1e-9)
    assert np.diff(times[:1000]) == pytest.approx(0.025, abs=1e-9)
    assert p.stats.max == pytest.approx(0.0, abs=1e-9)


def test_x_shorthand_sets_speed():
    p = Pacer(0.1, policy="x12.5")
    assert p.policy == "xN" and p.speed == 12.5
    assert Pacer(0.1, policy="x3", speed=3).speed == 3.0


def test_fractional_speed_is_exact():
    # 1.5x: 1e6 frames of 30 ms take exactly 20000 s (minus the last frame).
    p = Pacer(0.03, policy="xN", speed=1.5)
    p.start(0.0)
    assert p.deadline(1_000_000) == 20_000.0


def test_speed_cap_is_enforced():
    Pacer(0.1, policy="xN", speed=MAX_SPEED)
    with pytest.raises(ValueError, match=r"speed for policy 'xN' must lie in \[1, 100\], got 101"):
        Pacer(0.1, policy="xN", speed=101)
    with pytest.raises(ValueError, match=r"must lie in \[1, 100\], got 1000"):
        Pacer(0.1, policy="x1000")
    with pytest.raises(ValueError, match=r"must lie in \[1, 100\], got 0.5"):
        Pacer(0.1, policy="xN", speed=0.5)


def test_burst_then_realtime_preroll():
    # 1 s of 100 ms frames is due at once (plus the frame due "now"), then one frame per 100 ms,
    # keeping the server exactly 1 s ahead for ever.
    clock = FakeClock()
    p = Pacer(0.1, policy="burst-then-realtime", burst_s=1.0, clock=clock)
    times = run(p, clock, 30_000)
    assert times[:11] == [T0] * 11
    assert times[11] == pytest.approx(T0 + 0.1, abs=1e-12)
    assert np.diff(times[11:]) == pytest.approx(0.1, abs=1e-9)
    assert times[-1] == pytest.approx(T0 + 29_999 * 0.1 - 1.0, abs=1e-9)  # lead stays 1.0 s
    assert p.stats.max == pytest.approx(0.0, abs=1e-9) and p.stalls == 0


def test_burst_default_and_cap():
    assert Pacer(0.1, policy="burst-then-realtime").burst_s == pacing.DEFAULT_BURST_S
    Pacer(0.1, policy="burst-then-realtime", burst_s=MAX_BURST_S)
    with pytest.raises(ValueError, match=r"burst_s must lie in \[0, 10\] s, got 10.5"):
        Pacer(0.1, policy="burst-then-realtime", burst_s=10.5)
    with pytest.raises(ValueError, match=r"burst_s must lie in \[0, 10\] s, got -1"):
        Pacer(0.1, policy="burst-then-realtime", burst_s=-1)
    with pytest.raises(ValueError, match="burst_s only applies to policy 'burst-then-realtime'"):
        Pacer(0.1, burst_s=1.0)


def test_burst_with_zero_is_realtime():
    a = Pacer(0.1, policy="burst-then-realtime", burst_s=0.0)
    b = Pacer(0.1)
    a.start(T0)
    b.start(T0)
    assert [a.deadline(n) for n in range(50)] == [b.deadline(n) for n in range(50)]


# -- stalls and re-anchoring ---------------------------------------------------------------


def test_stall_reanchors_with_bounded_catchup():
    # After a 60 s stall only max_catchup_s (1 s = 10 frames) is made up at once, then real time.
    clock = FakeClock()
    p = Pacer(0.1, max_catchup_s=1.0, clock=clock)
    run(p, clock, 10)
    clock.sleep(60.0)
    burst = 0
    while p.delay() == 0.0:
        p.sent()
        burst += 1
    assert burst == 11  # the frame 1 s late, then 0.9 s ... 0.0 s late
    assert p.stalls == 1
    assert p.stalled_s == pytest.approx(60.0 - 0.1 - 1.0, abs=1e-9)
    assert p.delay() == pytest.approx(0.1, abs=1e-9)
    assert p.stats.max == pytest.approx(1.0, abs=1e-9)
    # from then on it is plain real time again, and drift-free
    times = run(p, clock, 1000)
    assert np.diff(times) == pytest.approx(0.1, abs=1e-9)
    assert p.stalls == 1


def test_lateness_within_catchup_is_made_up_not_reanchored():
    clock = FakeClock()
    p = Pacer(0.1, max_catchup_s=1.0, clock=clock)
    run(p, clock, 10)
    clock.sleep(0.5)  # a 0.5 s hiccup: 0.4 s late (< 1.0 s) -> catch up, keep the anchor
    burst = 0
    while p.delay() == 0.0:
        p.sent()
        burst += 1
    assert burst == 5 and p.stalls == 0
    assert p.deadline(p.frames_sent) == pytest.approx(T0 + p.frames_sent * 0.1, abs=1e-9)


def test_stall_under_xn_bounds_catchup_in_wall_time():
    clock = FakeClock()
    p = Pacer(0.1, policy="xN", speed=10.0, max_catchup_s=0.5, clock=clock)
    run(p, clock, 5)
    clock.sleep(30.0)
    burst = 0
    while p.delay() == 0.0:
        p.sent()
        burst += 1
    assert burst == 51  # 0.5 s of schedule at 10x = 5 s of audio = 50 frames, plus the due one
    assert p.stalls == 1


def test_zero_catchup_never_makes_up_lateness():
    rng = random.Random(2)
    clock = FakeClock()
    p = Pacer(0.1, max_catchup_s=0.0, clock=clock)
    times = run(p, clock, 1000, lambda: rng.uniform(0.0, 0.01))
    gaps = np.diff(times)
    assert (gaps >= 0.1 - 1e-9).all()  # no frame ever follows faster than real time
    assert p.stats.max <= 1e-9  # every late send was re-anchored before being recorded
    assert p.stalls > 900


def test_explicit_reanchor_for_intentional_gaps():
    clock = FakeClock()
    p = Pacer(0.1, clock=clock)
    p.reanchor()  # before start: just starts
    assert p.started and p.stalls == 0
    run(p, clock, 3)
    clock.sleep(5.0)  # e.g. local VAD withheld 5 s of silence
    p.reanchor()
    assert p.delay() == 0.0
    assert p.sent() == 0.0
    assert p.delay() == pytest.approx(0.1, abs=1e-9)
    assert p.stalls == 1 and p.stalled_s == pytest.approx(4.9, abs=1e-9)  # frame 3 was due at +0.3
    # when ahead of schedule, reanchor must not pull the schedule earlier
    before = p.deadline(p.frames_sent)
    p.reanchor()
    assert p.deadline(p.frames_sent) == before and p.stalls == 1


# -- recorded pacing errors ----------------------------------------------------------------


def test_sent_returns_signed_error_and_records_it():
    clock = FakeClock()
    p = Pacer(0.1, clock=clock)
    assert p.sent() == 0.0  # frame 0 anchors the schedule
    clock.sleep(0.05)
    assert p.sent() == pytest.approx(-0.05)  # sent 50 ms early
    clock.sleep(0.2)
    assert p.sent() == pytest.approx(0.05)  # frame 2 due at +0.2, sent at +0.25
    assert p.stats.count == 3
    assert p.stats.min == pytest.approx(-0.05) and p.stats.max == pytest.approx(0.05)


def test_explicit_now_overrides_clock():
    p = Pacer(0.1, clock=lambda: pytest.fail("clock must not be called when now is given"))
    p.start(5.0)
    assert p.delay(5.03) == pytest.approx(0.0)
    p.sent(5.0)
    assert p.delay(5.03) == pytest.approx(0.07)


def test_stats_quantiles_within_bucket_resolution():
    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.exponential(0.002, 5000), -rng.exponential(0.0005, 1000)])
    s = PacingStats()
    for v in vals:
        s.record(float(v))
    assert s.count == len(vals)
    assert s.min == vals.min() and s.max == vals.max()
    assert s.mean == pytest.approx(vals.mean(), rel=1e-12)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 0.999):
        exact = np.quantile(vals, q, method="inverted_cdf")
        assert s.quantile(q) == pytest.approx(exact, rel=0.07), q
    assert s.p50 == s.quantile(0.5) and s.p99 == s.quantile(0.99)
    assert s.quantile(0.0) == s.min and s.quantile(1.0) == s.max
    assert set(s.as_dict()) == {"count", "mean", "min", "p50", "p99", "max"}


def test_stats_memory_is_bounded():
    s = PacingStats()
    size = len(s._counts)
    for i in range(100_000):
        s.record((i % 977) * 1e-4 - 0.01)
    s.record(1e9)  # far beyond the top bucket: clamped there, max still exact
    s.record(1e-12)  # below 1 us: the zero bucket
    assert len(s._counts) == size and s.count == 100_002
    assert s.max == 1e9 and s.quantile(1.0) == 1e9


def test_stats_merge_is_exact():
    rng = random.Random(4)
    a, b, both = PacingStats(), PacingStats(), PacingStats()
    for i in range(3000):
        v = rng.gauss(0.003, 0.002)
        (a if i % 3 else b).record(v)
        both.record(v)
    a.merge(b)
    assert a.count == both.count and a.min == both.min and a.max == both.max
    assert list(a._counts) == list(both._counts)
    assert a.p99 == both.p99 and a.mean == pytest.approx(both.mean)
    with pytest.raises(TypeError, match="expected PacingStats, got dict"):
        a.merge({})


def test_stats_empty_and_bad_values():
    s = PacingStats()
    assert math.isnan(s.p50) and math.isnan(s.max) and math.isnan(s.min) and math.isnan(s.mean)
    with pytest.raises(ValueError, match="pacing error must be finite, got nan"):
        s.record(math.nan)
    with pytest.raises(ValueError, match=r"q must lie in \[0, 1\], got 1.5"):
        s.quantile(1.5)
    with pytest.raises(TypeError, match="q must be a real number, got str"):
        s.quantile("0.5")
    s.record(0.01)
    s.reset()
    assert s.count == 0 and math.isnan(s.p99)


# -- lifecycle and validation --------------------------------------------------------------


def test_reset_forgets_everything():
    clock = FakeClock()
    p = Pacer(0.1, max_catchup_s=0.0, clock=clock)
    run(p, clock, 5)
    clock.sleep(3.0)
    p.sent()
    assert p.stalls == 1
    p.reset()
    assert not p.started and p.frames_sent == 0 and p.stalls == 0 and p.stalled_s == 0.0
    assert p.stats.count == 0
    p.start(7.0)
    assert p.deadline(3) == pytest.approx(7.3)


def test_lifecycle_errors():
    p = Pacer(0.1)
    with pytest.raises(LocalProtocolError, match=r"deadline\(\) before start\(\)"):
        p.deadline(0)
    p.start(0.0)
    with pytest.raises(LocalProtocolError, match=r"start\(\) on a started pacer"):
        p.start(1.0)
    with pytest.raises(TypeError, match="frame index n must be an int, got float"):
        p.deadline(1.0)
    with pytest.raises(TypeError, match="frame index n must be an int, got bool"):
        p.deadline(True)
    with pytest.raises(ValueError, match="frame index n must be >= 0, got -1"):
        p.deadline(-1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"frame_duration_s": "0.1"}, TypeError, "frame_duration_s must be a real number, got str"),
        ({"frame_duration_s": True}, TypeError, "frame_duration_s must be a real number, got bool"),
        (
            {"frame_duration_s": 0.0},
            ValueError,
            r"frame_duration_s must lie in \[1 ns, 3600 s\], got 0.0",
        ),
        ({"frame_duration_s": -0.1}, ValueError, r"must lie in \[1 ns, 3600 s\], got -0.1"),
        ({"frame_duration_s": 7200}, ValueError, r"must lie in \[1 ns, 3600 s\], got 7200"),
        ({"frame_duration_s": math.inf}, ValueError, "frame_duration_s must be finite, got inf"),
        (
            {"policy": "fast"},
            ValueError,
            r"policy must be one of .* or 'x<speed>' such as 'x4', got 'fast'",
        ),
        ({"policy": "xfast"}, ValueError, r"got 'xfast'"),
        ({"policy": "xinf"}, ValueError, r"got 'xinf'"),
        ({"policy": 4}, TypeError, "policy must be a str, got int"),
        ({"policy": "x4", "speed": 5}, ValueError, r"policy='x4' contradicts speed=5"),
        ({"speed": 2.0}, ValueError, r"speed=2 needs policy 'xN'; policy 'realtime' runs at 1.0"),
        ({"policy": "burst-then-realtime", "speed": 2.0}, ValueError, "speed=2 needs policy 'xN'"),
        ({"speed": math.nan}, ValueError, "speed must be finite, got nan"),
        ({"speed": None}, TypeError, "speed must be a real number, got NoneType"),
        ({"max_catchup_s": -1}, ValueError, "max_catchup_s must be >= 0, got -1"),
        ({"max_catchup_s": "1"}, TypeError, "max_catchup_s must be a real number, got str"),
        ({"clock": 3.0}, TypeError, "clock must be callable returning seconds, got float"),
        (
            {"policy": "burst-then-realtime", "burst_s": "1"},
            TypeError,
            "burst_s must be a real number",
        ),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    kwargs = {"frame_duration_s": 0.1, **kwargs}
    with pytest.raises(exc, match=match):
        Pacer(**kwargs)


def test_properties_and_repr():
    p = Pacer(0.02, policy="x2.5", max_catchup_s=0.3)
    assert p.frame_duration_s == 0.02 and p.speed == 2.5 and p.burst_s == 0.0
    assert p.max_catchup_s == 0.3 and p.policy == "xN" and not p.started
    assert "policy='xN'" in repr(p) and "speed=2.5" in repr(p)
    assert "count=0" in repr(PacingStats())


def test_pacing_is_sans_io():
    # House style A/J6: pacing never imports an event loop or a transport.
    src = inspect.getsource(pacing)
    names = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"asyncio", "aiohttp", "threading", "trio"}
