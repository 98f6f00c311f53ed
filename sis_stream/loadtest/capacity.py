"""``--find-capacity``: raise the concurrency step by step until the SLO breaks, report the knee.

Each level is held ``step_s`` seconds (longer, up to three times, while it has fewer than
``min_samples`` final latencies). Its figures come from what happened after the first
``settle`` part of the step (calls that began at the previous level ending meanwhile): the p95
time from end of speech to final (pass: ``<= slo_ms``) and the errors (pass: none). Levels grow
by ``growth`` from ``start`` up to ``max_streams`` (or follow an explicit list); after the first
failing level the gap to the last passing one is bisected ``refine`` times. The knee is the
largest level that passed (0 when even the first failed). ``warmup_s`` seconds of one stream
come first and are not judged (an engine loading its model would otherwise fail level 1).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from ..client.pacing import PacingStats
from .metrics import quantiles
from .results import HARNESS_PACING_LIMIT_MS, HARNESS_WAIT_LIMIT_PCT
from .runner import LoadTest, thread_run_wait_s

__all__ = ["CapacityOptions", "CapacitySearch"]


@dataclass(frozen=True)
class CapacityOptions:
    """Parameters of the knee search (see the module docstring)."""

    slo_ms: float
    max_streams: int
    start: int = 1
    growth: float = 2.0
    step_s: float = 20.0
    refine: int = 2
    min_samples: int = 5
    levels: tuple[int, ...] = ()
    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.slo_ms > 0:
            raise ValueError(f"--slo-ms must be > 0, got {self.slo_ms}")
        if not 1 <= self.start <= self.max_streams:
            raise ValueError(f"the first level must be in [1, {self.max_streams}], got {self.start}")
        if not self.growth > 1.0:
            raise ValueError(f"growth must be > 1, got {self.growth}")
        if not self.step_s > 0:
            raise ValueError(f"--step-s must be > 0, got {self.step_s}")
        if not 0 <= self.warmup_s <= 600:
            raise ValueError(f"--warmup-s must be in [0, 600], got {self.warmup_s}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if not 0 <= self.refine <= 10:
            raise ValueError(f"refine must be in [0, 10], got {self.refine}")


class CapacitySearch:
    """The controller of a :class:`LoadTest` (``await test.run(controller=search)``)."""

    def __init__(self, options: CapacityOptions) -> None:
        self.options = options
        self.levels: list[dict[str, Any]] = []
        self.knee = 0
        self.stopped_by = "not run"

    def _next_levels(self) -> list[int]:
        o = self.options
        if o.levels:
            return [lv for lv in o.levels if lv <= o.max_streams]
        out, lv = [], o.start
        while lv <= o.max_streams:
            out.append(lv)
            if lv == o.max_streams:
                break
            lv = min(o.max_streams, max(lv + 1, math.ceil(lv * o.growth)))
        return out

    async def _hold(self, run: LoadTest, level: int) -> dict[str, Any]:
        o = self.options
        loop = asyncio.get_running_loop()
        run.target_override = level
        run.state.phase = f"level {level}"
        origin = run.state.origin
        t_start = loop.time() - origin
        settle = min(o.step_s / 2.0, max(1.0, max(i.duration_ms for i in run.corpus.items) / 1000.0))
        run.state.window_pacing = PacingStats()
        cpu0, w0, rw0 = time.process_time(), loop.time(), thread_run_wait_s()
        held = 0.0
        lat: dict[str, Any] = {}
        for _ in range(3):
            await asyncio.sleep(o.step_s)
            held += o.step_s
            vals, errors = run.live.window(t_start + settle, loop.time() - origin)
            if len(vals) >= o.min_samples:
                break
        lat = quantiles(vals)
        p = run.state.window_pacing
        pacing = {"p50": None, "p99": None, "max": None} if p.count == 0 else {
            "p50": round(p.quantile(0.5) * 1000, 3), "p99": round(p.quantile(0.99) * 1000, 3),
            "max": round(p.max * 1000, 3)}
        wall = loop.time() - w0
        rw1 = thread_run_wait_s()
        wait_pct = None if rw0 is None or rw1 is None or wall <= 0 else round(100.0 * (rw1[1] - rw0[1]) / wall, 1)
        harness_limited = bool((pacing["p99"] is not None and pacing["p99"] > HARNESS_PACING_LIMIT_MS)
                               or (wait_pct is not None and wait_pct > HARNESS_WAIT_LIMIT_PCT))
        p95 = lat.get("p95")
        if errors:
            verdict = "errors"
        elif lat.get("count", 0) < o.min_samples:
            verdict = "too_few_finals"
        elif p95 is not None and p95 > o.slo_ms:
            verdict = "slo"
        else:
            verdict = "pass"
        row = {"streams": level, "held_s": round(held, 1), "final_latency_ms": lat, "errors": errors,
               "harness_pacing_ms": pacing,
               "harness_cpu_pct": round(100.0 * (time.process_time() - cpu0) / wall, 1) if wall > 0 else None,
               "harness_wait_pct": wait_pct, "harness_limited": harness_limited, "verdict": verdict}
        self.levels.append(row)
        return row

    async def __call__(self, run: LoadTest) -> None:
        """Run the search on `run` (returns when the knee is known)."""
        good, bad = 0, None
        self.stopped_by = "max_streams"
        if self.options.warmup_s > 0:
            # One stream first, not judged: engines load models, caches fill.
            run.target_override = 1
            run.state.phase = "warm-up"
            await asyncio.sleep(self.options.warmup_s)
        for level in self._next_levels():
            row = await self._hold(run, level)
            if row["verdict"] != "pass":
                bad = level
                self.stopped_by = row["verdict"]
                break
            good = level
        if bad is not None:
            for _ in range(self.options.refine):
                mid = (good + bad) // 2
                if mid <= good or mid >= bad:
                    break
                row = await self._hold(run, mid)
                if row["verdict"] == "pass":
                    good = mid
                else:
                    bad = mid
        self.knee = good

    def result(self) -> dict[str, Any]:
        """The ``capacity`` block of the JSON result."""
        o = self.options
        return {"knee_streams": self.knee, "slo_ms": o.slo_ms, "stopped_by": self.stopped_by,
                "step_s": o.step_s, "warmup_s": o.warmup_s, "max_streams": o.max_streams,
                "levels": self.levels}
