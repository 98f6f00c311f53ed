"""Pacer deadlines pinned to the exact integer nanosecond.

Definition (sis_stream.client.pacing.Pacer): the frame duration and the burst are held in
whole nanoseconds, each the *nearest* nanosecond to the value given; frame ``n`` is due
``max(0, n * frame_ns - burst_ns) / speed`` nanoseconds after the anchor, with ``speed`` the
exact fraction of denominator <= 1000 and the division floored (less than 1 ns); the only
float step is the final ``ns / 1e9``. The expectations below are computed here with exact
integers and :class:`fractions.Fraction`, and compared with ``==``: a 1 ns error (e.g. a
truncated frame duration, which tolerance-based checks accept) fails.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from sis_stream.client.pacing import Pacer

NS = 10**9
T0 = 1000.0


def _nearest_ns(seconds: float) -> int:
    exact = Fraction(seconds) * NS  # the float's exact value, in ns
    assert abs(exact - int(exact) - Fraction(1, 2)) > Fraction(1, 1000), "not near a rounding tie"
    return round(exact)


def _expected_ns(n: int, fd: float, burst: float = 0.0, speed: float = 1.0) -> int:
    a = n * _nearest_ns(fd) - _nearest_ns(burst)
    if a <= 0:
        return 0
    s = Fraction(speed).limit_denominator(1000)
    return a * s.denominator // s.numerator


# Frame durations and bursts whose ns value is not an integer: truncation and rounding differ.
FDS = [2 / 3, 1 / 6, 0.0466666666667, 0.0199999999999]
NS_VALUES = [0, 1, 2, 3, 7, 1000, 10**6, 10**9 + 7]


def test_the_chosen_values_tell_truncation_from_rounding():
    # The premise: for every value below int() and round() of the ns product differ.
    for v in [*FDS, 2.01, 4.0999999999]:
        assert int(v * NS) != _nearest_ns(v), v


@pytest.mark.parametrize("fd", FDS)
def test_frame_duration_is_the_nearest_ns(fd):
    p = Pacer(fd)
    assert p.frame_duration_s == _nearest_ns(fd) / NS


@pytest.mark.parametrize("t0", [0.0, T0])
@pytest.mark.parametrize("fd", FDS)
def test_realtime_deadlines_exact_ns(fd, t0):
    p = Pacer(fd)
    p.start(t0)
    for n in NS_VALUES:
        assert p.deadline(n) == t0 + _expected_ns(n, fd) / NS, n


@pytest.mark.parametrize("speed", [1.5, 2.0, 3.0, 7.0, 2.5])
@pytest.mark.parametrize("fd", [2 / 3, 0.1 / 3, 0.1])
def test_xn_deadlines_exact_ns(fd, speed):
    p = Pacer(fd, policy="xN", speed=speed)
    p.start(0.0)
    for n in NS_VALUES:
        assert p.deadline(n) == _expected_ns(n, fd, speed=speed) / NS, (n, speed)


@pytest.mark.parametrize("burst", [2.01, 4.0999999999])
@pytest.mark.parametrize("fd", [0.1, 0.02, 2 / 3])
def test_burst_deadlines_exact_ns(fd, burst):
    p = Pacer(fd, policy="burst-then-realtime", burst_s=burst)
    assert p.burst_s == _nearest_ns(burst) / NS
    p.start(0.0)
    first_paced = next(n for n in range(10**6) if n * _nearest_ns(fd) > _nearest_ns(burst))
    for n in [0, first_paced - 1, first_paced, first_paced + 1, first_paced + 1000, 10**6]:
        assert p.deadline(n) == _expected_ns(n, fd, burst) / NS, n


def test_burst_2_01_s_of_100_ms_frames():
    # Written out: 2.01 s = 2_010_000_000 ns; frame 21 is due 2.1 s - 2.01 s = 90 ms after the
    # anchor, frame 20 and all before it at once.
    p = Pacer(0.1, policy="burst-then-realtime", burst_s=2.01)
    p.start(0.0)
    assert [p.deadline(n) for n in (0, 20, 21, 22)] == [0.0, 0.0, 0.09, 0.19]


def test_send_times_of_a_paced_loop_are_exact():
    # The transport loop with a fake clock: every frame goes out exactly on its ns deadline.
    fd = 2 / 3
    clock = [T0]
    p = Pacer(fd, clock=lambda: clock[0])
    for n in range(2000):
        clock[0] += p.delay()
        assert clock[0] == T0 + _expected_ns(n, fd) / NS, n
        p.sent()
    assert p.stats.max == 0.0 and p.stalls == 0
