"""Live console display of a transcription: interim text in place, finals, progress, summary."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

from .output import TranscriptSegment, format_timestamp

__all__ = ["LiveDisplay", "Summary", "progress_bar"]

#: Redraws of the status line per second at most (a TTY cannot show more, and it costs CPU).
_REDRAW_HZ: Final = 10.0
_CLEAR_LINE: Final = "\r\x1b[K"


def progress_bar(fraction: float, width: int = 24) -> str:
    """A text bar ``[#######.........]`` for `fraction` in [0, 1] (clamped)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    f = min(1.0, max(0.0, float(fraction)))
    full = int(f * width + 1e-9)
    return "[" + "#" * full + "." * (width - full) + "]"


@dataclass(frozen=True)
class Summary:
    """What a transcription did, for the closing line.

    Attributes
    ----------
    segments : int
        Final results received.
    audio_s : float
        Audio sent, seconds.
    wall_s : float
        Wall time from the first audio sent to the end of the session.
    ttfs_s : float or None
        Time to first segment: wall time from the first audio sent to the first final result
        (None when no final came).
    lost_ms : float
        Audio lost across reconnects (0 when every gap was replayed).
    reconnects : int
        Connections re-established mid-session.
    interrupted : bool
        The user stopped the session (Ctrl-C).
    """

    segments: int
    audio_s: float
    wall_s: float
    ttfs_s: float | None = None
    lost_ms: float = 0.0
    reconnects: int = 0
    interrupted: bool = False

    @property
    def rtf(self) -> float | None:
        """Real-time factor: wall time / audio time (None without audio)."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else None

    def line(self) -> str:
        """One line: segments, audio seconds, wall time and RTF, TTFS, lost ms (and reconnects)."""
        parts = [f"{self.segments} segment{'s' if self.segments != 1 else ''}",
                 f"{self.audio_s:.1f} s audio in {self.wall_s:.1f} s"
                 + (f" (RTF {self.rtf:.2f})" if self.rtf is not None else "")]
        parts.append(f"TTFS {self.ttfs_s:.2f} s" if self.ttfs_s is not None else "TTFS n/a")
        parts.append(f"lost {self.lost_ms:.0f} ms")
        if self.reconnects:
            parts.append(f"{self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}")
        if self.interrupted:
            parts.append("interrupted")
        return " | ".join(parts)


class LiveDisplay:
    """Show a transcription as it happens.

    On a terminal (`tty` True) one status line is redrawn in place (at most 10 times a second):
    a progress bar of audio sent over the total (for files), the real-time factor, and the
    latest interim text; finals are printed above it with their timestamps. Elsewhere (a pipe,
    a log file) it prints plain lines only: finals, interim results when asked for, events,
    and the summary; no progress bar and no control characters.

    Parameters
    ----------
    stream : text stream, optional
        Where to draw (default ``sys.stderr``).
    tty : bool, optional
        Force terminal or plain mode (default: ``stream.isatty()``).
    interim : bool, optional
        Show interim results (default True).
    finals : bool, optional
        Print final results (default True; the CLI turns it off when the transcript itself
        goes to the same terminal).
    total_ms : float, optional
        Length of the input, for the progress bar (None for a live stream).
    width : int, optional
        Terminal columns (default: the terminal's, else 80).
    clock : callable, optional
        Monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interim: bool = True,
        finals: bool = True,
        total_ms: float | None = None,
        width: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.show_interim = interim
        self.show_finals = finals
        if total_ms is not None and total_ms < 0:
            raise ValueError(f"total_ms must be >= 0, got {total_ms}")
        self.total_ms = total_ms
        self.width = width if width is not None else shutil.get_terminal_size((80, 24)).columns
        self._clock = clock
        self._t0: float | None = None
        self._sent_ms = 0.0
        self._interim = ""
        self._status_shown = False
        self._last_draw = -1.0
        self._done = False

    # -- input ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Mark the first audio sent (the RTF and elapsed times count from here)."""
        if self._t0 is None:
            self._t0 = self._clock()

    @property
    def elapsed_s(self) -> float:
        """Seconds since :meth:`start` (0 before)."""
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def progress(self, sent_ms: float) -> None:
        """Audio sent so far (ms); redraws the status line on a terminal (rate limited)."""
        self.start()
        self._sent_ms = float(sent_ms)
        self._redraw()

    def interim(self, text: str, start_ms: int | None = None) -> None:
        """A new interim hypothesis for the open segment."""
        if not self.show_interim:
            return
        text = " ".join(text.split())
        if self.tty:
            self._interim = text
            self._redraw(force=True)
        elif text:
            at = f"[{format_timestamp(start_ms, 'clock')}] " if start_ms is not None else ""
            self._line(f"~ {at}{text}")

    def final(self, seg: TranscriptSegment) -> None:
        """A final result: printed with its start and end time."""
        self._interim = ""
        if self.show_finals:
            start = format_timestamp(seg.start_ms, "clock")
            end = format_timestamp(seg.end_ms, "clock")
            text = " ".join(seg.text.split()) or "(no speech recognised)"
            self._line(f"[{start} -> {end}] {text}")
        else:
            self._redraw(force=True)

    def note(self, text: str) -> None:
        """An informational line (server events, reconnects, warnings)."""
        self._line(text)

    def summary(self, summary: Summary) -> None:
        """The closing line; clears the status line first and draws no status after it."""
        self._interim = ""
        self._done = True
        self._line(summary.line())

    def close(self) -> None:
        """Clear the status line (terminal); leaves the cursor at the start of an empty line."""
        if self.tty and self._status_shown:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._status_shown = False

    # -- drawing ----------------------------------------------------------------------------------

    def status_text(self) -> str:
        """The status line as it would be drawn now (no control characters)."""
        parts: list[str] = []
        sent_s = self._sent_ms / 1000.0
        if self.total_ms:
            frac = self._sent_ms / self.total_ms
            parts.append(f"{progress_bar(frac, 20)} {sent_s:5.1f}/{self.total_ms / 1000:.1f} s")
        else:
            parts.append(f"{sent_s:6.1f} s sent")
        el = self.elapsed_s
        if self._sent_ms > 0 and el > 0:
            parts.append(f"RTF {el / sent_s:4.2f}")
        line = "  ".join(parts)
        if self._interim:
            line += "  | " + self._interim
        room = max(10, self.width - 1)
        if len(line) > room:  # keep the newest words of a long interim hypothesis
            line = line[: room // 2 - 2] + "..." + line[-(room - room // 2 - 1) :]
        return line

    def _redraw(self, force: bool = False) -> None:
        if not self.tty or self._done:
            return
        now = self._clock()
        if not force and now - self._last_draw < 1.0 / _REDRAW_HZ:
            return
        self._last_draw = now
        self.stream.write(_CLEAR_LINE + self.status_text())
        self.stream.flush()
        self._status_shown = True

    def _line(self, text: str) -> None:
        if self.tty and self._status_shown:
            self.stream.write(_CLEAR_LINE)
            self._status_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty:
            self._redraw(force=True)
