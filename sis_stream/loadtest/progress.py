"""The live one-line progress display of a run (stderr).

On a terminal the line is redrawn in place about once a second; otherwise (a log file, CI) a
line is written every ``every_s`` seconds.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from .runner import LoadTest

__all__ = ["Progress"]


class Progress:
    """``on_tick`` callback of a :class:`~sis_stream.loadtest.runner.LoadTest`.

    Parameters
    ----------
    out : text stream
        Usually ``sys.stderr``.
    every_s : float
        Period of the lines when `out` is not a terminal.
    """

    def __init__(self, out: TextIO, *, every_s: float = 5.0) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.every_s = every_s
        self._last_line = -1e9
        self._last_finals = 0
        self._last_t = 0.0
        self._drawn = False

    def line(self, run: LoadTest) -> str:
        """The progress line for the state of `run`."""
        st, agg = run.state, run.agg
        t = (st.timeline[-1]["t"] if st.timeline else 0.0)
        dt = max(1e-6, t - self._last_t)
        finals = run.live.finals
        fps = (finals - self._last_finals) / dt
        self._last_finals, self._last_t = finals, t
        p95 = run.recent_p95_ms()
        cpu = st.timeline[-1].get("cpu_pct") if st.timeline else None
        wait = st.timeline[-1].get("wait_pct") if st.timeline else None
        p = agg.pacing
        pacing = f"{p.quantile(0.99) * 1000:.1f}" if p.count else "-"
        return (f"[{t:6.1f} s {st.phase}] active {st.active}/{st.target} calls {st.finished} "
                f"finals/s {fps:5.1f} p95 final {('-' if p95 is None else f'{p95:.0f}')} ms "
                f"errors {run.live.errors} pacing p99 {pacing} ms cpu "
                f"{('-' if cpu is None else f'{cpu:.0f}')}%"
                + ("" if wait is None else f" (waiting {wait:.0f}%)"))

    def __call__(self, run: LoadTest) -> None:
        text = self.line(run)
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            now = time.monotonic()
            if now - self._last_line < self.every_s and run.state.phase != "done":
                return
            self._last_line = now
            self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the in-place line (terminal)."""
        if self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

    def note(self, message: Any) -> None:
        """A message on its own line."""
        self.close()
        self.out.write(f"{message}\n")
        self.out.flush()
