"""The live console display: plain lines off a terminal, an in-place status line on one."""

from __future__ import annotations

import io

import pytest

from sis_stream.cli.console import LiveDisplay, Summary, progress_bar
from sis_stream.cli.output import TranscriptSegment


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_bar() -> None:
    assert progress_bar(0.0, 4) == "[....]"
    assert progress_bar(0.5, 4) == "[##..]"
    assert progress_bar(2.0, 4) == "[####]"  # clamped
    with pytest.raises(ValueError, match="width"):
        progress_bar(0.5, 0)


def test_summary_line() -> None:
    s = Summary(segments=2, audio_s=10.0, wall_s=2.5, ttfs_s=0.84, lost_ms=0.0)
    assert s.rtf == pytest.approx(0.25)
    assert s.line() == "2 segments | 10.0 s audio in 2.5 s (RTF 0.25) | TTFS 0.84 s | lost 0 ms"
    s = Summary(1, 0.0, 0.1, None, 120.0, reconnects=1, interrupted=True)
    assert s.rtf is None
    assert s.line() == ("1 segment | 0.0 s audio in 0.1 s | TTFS n/a | lost 120 ms | 1 reconnect "
                        "| interrupted")


def test_plain_mode_prints_lines_without_control_characters() -> None:
    buf = io.StringIO()
    d = LiveDisplay(buf, tty=False, interim=True, total_ms=5000)
    d.progress(1000)  # no progress bar off a terminal
    d.interim("hello th", 120)
    d.final(TranscriptSegment(0, 120, 2340, "hello there"))
    d.final(TranscriptSegment(1, 3000, 3100, ""))
    d.summary(Summary(2, 5.0, 1.0, 0.5))
    d.close()
    assert buf.getvalue().splitlines() == [
        "~ [00:00.120] hello th",
        "[00:00.120 -> 00:02.340] hello there",
        "[00:03.000 -> 00:03.100] (no speech recognised)",
        "2 segments | 5.0 s audio in 1.0 s (RTF 0.20) | TTFS 0.50 s | lost 0 ms",
    ]
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()


def test_interim_and_finals_can_be_switched_off() -> None:
    buf = io.StringIO()
    d = LiveDisplay(buf, tty=False, interim=False, finals=False)
    d.interim("partial", 0)
    d.final(TranscriptSegment(0, 0, 10, "final"))
    assert buf.getvalue() == ""


def test_tty_mode_redraws_one_status_line() -> None:
    # Progress bar with audio sent / total and RTF; interim text updated in place; a final is
    # printed above the status line, which is then redrawn; redraws are rate limited.
    clock = FakeClock()
    buf = io.StringIO()
    d = LiveDisplay(buf, tty=True, interim=True, total_ms=10_000, width=100, clock=clock)
    d.start()
    clock.t += 1.0
    d.progress(2500)
    assert d.status_text().startswith("[#####...............]   2.5/10.0 s  RTF 0.40")
    before = buf.getvalue()
    d.progress(2600)  # same instant: not redrawn
    assert buf.getvalue() == before
    d.interim("hello wor", 0)
    assert buf.getvalue().endswith("\r\x1b[K" + d.status_text())
    assert "| hello wor" in d.status_text()
    d.final(TranscriptSegment(0, 0, 2400, "hello world"))
    out = buf.getvalue()
    assert "\r\x1b[K[00:00.000 -> 00:02.400] hello world\n" in out
    assert "hello wor" not in d.status_text()  # interim cleared by the final
    d.summary(Summary(1, 10.0, 2.0, 1.0))
    d.close()
    assert buf.getvalue().endswith("1 segment | 10.0 s audio in 2.0 s (RTF 0.20) | TTFS 1.00 s | lost 0 ms\n")


def test_tty_status_line_fits_the_width() -> None:
    d = LiveDisplay(io.StringIO(), tty=True, width=40, clock=FakeClock())
    d.interim("word " * 50, 0)
    line = d.status_text()
    assert len(line) <= 39 and "..." in line and line.endswith("word")


def test_live_stream_without_total() -> None:
    clock = FakeClock()
    d = LiveDisplay(io.StringIO(), tty=True, clock=clock)
    d.start()
    clock.t += 2.0
    d.progress(4000)
    assert d.status_text() == "   4.0 s sent  RTF 0.50"
    with pytest.raises(ValueError, match="total_ms"):
        LiveDisplay(io.StringIO(), total_ms=-1)
