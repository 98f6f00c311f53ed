"""Ratio tables for pytest-benchmark runs: "ours vs anchor" speed-ups, printed when a module ends.

Usage in a ``benchmarks/bench_<x>.py`` (this directory is on ``sys.path`` under pytest)::

    from _ratios import Comparison, ratio_fixture

    ratios = ratio_fixture("resampler", [
        Comparison("resample 10 s", ours="sis_stream[native]", anchor="soxr", target=1.0),
    ])

    def bench_resample_10s(benchmark, ratios):
        benchmark.group = "resample 10 s"
        benchmark(fn, x)
        ratios.record(benchmark, "sis_stream[native]")

The table shows anchor_time / ours_time (above 1: ours is faster) on the minimum and on the
median round time, and whether the target (a minimum speed-up) is met on the median.

Those two sides are *separate* benchmarks, timed minutes apart on a shared machine: use them for
information only. A verdict ("target met") must come from :class:`Paired` (``paired_fixture``):
each round runs ours and the anchor back to back on the same data (the order alternating from
round to round), the speed-up is taken per round, and the verdict is on the median of those
per-round ratios::

    from _ratios import paired_fixture

    paired = paired_fixture("G.711 (8 kHz)")

    def bench_encode(benchmark, paired):
        paired.run(benchmark, "ulaw encode 60s bytes", "sis_stream[native]", ours_fn,
                   "audioop", anchor_fn, target=15.0, rounds=30)
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["Comparison", "Paired", "Ratios", "paired_fixture", "ratio_fixture"]


@dataclass(frozen=True)
class Comparison:
    """One row of a ratio table: the benchmark labelled `ours` against `anchor` in `group`."""

    group: str
    ours: str
    anchor: str
    target: float | None = None  # minimum speed-up anchor/ours asked for; None: informational


@dataclass
class Ratios:
    """Collects round times per (group, label) and renders the comparisons."""

    title: str
    comparisons: Sequence[Comparison]
    times: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    def record(self, benchmark: Any, label: str) -> None:
        """Store the min and median round time of a finished `benchmark` under its group."""
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: the function ran once, untimed
            return
        s = stats.stats
        self.times[(benchmark.group, label)] = (s.min, s.median)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per comparison whose two sides were both measured."""
        out = []
        for c in self.comparisons:
            ours, anchor = self.times.get((c.group, c.ours)), self.times.get((c.group, c.anchor))
            if ours is None or anchor is None:
                continue
            by_min, by_median = anchor[0] / ours[0], anchor[1] / ours[1]
            out.append(
                {
                    "group": c.group,
                    "ours": c.ours,
                    "anchor": c.anchor,
                    "ours_median_us": ours[1] * 1e6,
                    "anchor_median_us": anchor[1] * 1e6,
                    "speedup_min": by_min,
                    "speedup_median": by_median,
                    "target": c.target,
                    "met": None if c.target is None else by_median >= c.target,
                }
            )
        return out

    def render(self) -> str:
        """The table as aligned text."""
        header = (
            "group",
            "ours",
            "anchor",
            "ours med",
            "anchor med",
            "x (min)",
            "x (median)",
            "target",
        )
        lines = [header]
        for r in self.rows():
            target = (
                "-"
                if r["target"] is None
                else f">= {r['target']:g}x {'ok' if r['met'] else 'MISSED'}"
            )
            lines.append(
                (
                    r["group"],
                    r["ours"],
                    r["anchor"],
                    _us(r["ours_median_us"]),
                    _us(r["anchor_median_us"]),
                    f"{r['speedup_min']:.2f}",
                    f"{r['speedup_median']:.2f}",
                    target,
                )
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = [f"{self.title}: speed-up = anchor time / ours time (> 1: ours faster)"]
        text += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
        return "\n".join(text)


def _us(us: float) -> str:
    return f"{us:.2f} us" if us < 1000 else f"{us / 1000:.3f} ms"


def ratio_fixture(title: str, comparisons: Sequence[Comparison]) -> Any:
    """Return a module-scoped fixture yielding a :class:`Ratios`; the table prints at module end.

    Set ``SIS_STREAM_RATIOS_DIR`` to also write the rows as ``ratios-<title>.json`` there.
    """

    @pytest.fixture(scope="module")
    def ratios(request: pytest.FixtureRequest) -> Iterator[Ratios]:
        table = Ratios(title, comparisons)
        yield table
        if not table.rows():
            return
        capman = request.config.pluginmanager.getplugin("capturemanager")
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        text = table.render()
        if capman is not None and reporter is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line("")
                for line in text.splitlines():
                    reporter.write_line(line)
        else:  # pragma: no cover - plugins disabled
            print(text)
        out_dir = os.environ.get("SIS_STREAM_RATIOS_DIR")
        if out_dir:
            slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower())
            with open(os.path.join(out_dir, f"ratios-{slug}.json"), "w", encoding="utf-8") as f:
                json.dump(table.rows(), f, indent=1)

    return ratios


@dataclass
class Paired:
    """Paired rounds: ours and the anchor back to back in every round, ratios taken per round.

    Each row reports the median of the per-round ratios anchor/ours on wall time (robust to
    load that drifts between rounds; the verdict against a target uses it), the ratio of the
    best rounds of each side (each side's least disturbed run) and the median per-round ratio
    on process CPU time (blind to time spent descheduled). ``notes`` adds free-text columns
    (e.g. the quality of each side, or what the two sides do differently).
    """

    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def pair(
        self,
        group: str,
        ours_name: str,
        ours: Callable[[], object],
        anchor_name: str,
        anchor: Callable[[], object],
        *,
        target: float | None = None,
        iterations: int = 1,
        warmup_rounds: int = 1,
        note: str = "",
    ) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
        """``(one_round, finish)``: call ``one_round`` per round, then ``finish`` for the row.

        Each side of a round calls its function `iterations` times (sub-microsecond calls need
        many per timing); the first `warmup_rounds` rounds are not counted.
        """
        times: dict[str, list[tuple[float, float]]] = {"ours": [], "anchor": []}
        count = [0]

        def timed(side: str, fn: Callable[[], object]) -> None:
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(iterations):
                fn()
            t1, c1 = time.perf_counter(), time.process_time()
            times[side].append(((t1 - t0) / iterations, (c1 - c0) / iterations))

        def one_round() -> None:
            first = count[0] % 2 == 0
            count[0] += 1
            order = (("ours", ours), ("anchor", anchor))
            for side, fn in order if first else order[::-1]:
                timed(side, fn)

        def finish() -> dict[str, Any]:
            o, a = times["ours"][warmup_rounds:], times["anchor"][warmup_rounds:]
            wall = [ta[0] / to[0] for to, ta in zip(o, a)]
            cpu = [ta[1] / to[1] for to, ta in zip(o, a) if to[1] > 0 and ta[1] > 0]
            row = {
                "group": group, "ours": ours_name, "anchor": anchor_name, "rounds": len(o),
                "iterations": iterations,
                "ours_best_us": min(t[0] for t in o) * 1e6,
                "anchor_best_us": min(t[0] for t in a) * 1e6,
                "ratio_median": statistics.median(wall),
                "ratio_best": min(t[0] for t in a) / min(t[0] for t in o),
                "ratio_cpu_median": statistics.median(cpu) if cpu else float("nan"),
                "target": target,
                "met": None if target is None else statistics.median(wall) >= target,
                "note": note,
            }
            self.rows.append(row)
            return row

        return one_round, finish

    def run(self, benchmark: Any, group: str, ours_name: str, ours: Callable[[], object],
            anchor_name: str, anchor: Callable[[], object], *, rounds: int,
            target: float | None = None, iterations: int = 1, warmup_rounds: int = 1,
            note: str = "") -> dict[str, Any] | None:
        """Time one paired comparison under pytest-benchmark (its table shows the pair time)."""
        one_round, finish = self.pair(group, ours_name, ours, anchor_name, anchor, target=target,
                                      iterations=iterations, warmup_rounds=warmup_rounds,
                                      note=note)
        benchmark.group = group
        benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup_rounds)
        if getattr(benchmark, "disabled", False):  # --benchmark-disable: ran once, untimed
            return None
        return finish()

    def render(self) -> str:
        """The table as aligned text."""
        header = ("group", "ours", "anchor", "n", "ours best", "anchor best", "x median",
                  "x best", "x cpu", "target", "note")
        lines = [header]
        for r in self.rows:
            target = ("-" if r["target"] is None
                      else f">= {r['target']:g}x {'ok' if r['met'] else 'MISSED'}")
            lines.append((r["group"], r["ours"], r["anchor"], str(r["rounds"]),
                          _us(r["ours_best_us"]), _us(r["anchor_best_us"]),
                          f"{r['ratio_median']:.2f}", f"{r['ratio_best']:.2f}",
                          f"{r['ratio_cpu_median']:.2f}", target, r["note"]))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = [f"{self.title}: speed-up = anchor time / ours time per paired round "
                f"(> 1: ours faster); verdicts on the median of the per-round ratios"]
        text += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
        return "\n".join(text)


def _print_at_end(request: pytest.FixtureRequest, text: str) -> None:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capman is not None and reporter is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line("")
            for line in text.splitlines():
                reporter.write_line(line)
    else:  # pragma: no cover - plugins disabled
        print(text)


def paired_fixture(title: str) -> Any:
    """Return a module-scoped fixture yielding a :class:`Paired`; the table prints at module end.

    Set ``SIS_STREAM_RATIOS_DIR`` to also write the rows as ``paired-<title>.json`` there.
    """

    @pytest.fixture(scope="module")
    def paired(request: pytest.FixtureRequest) -> Iterator[Paired]:
        table = Paired(title)
        yield table
        if not table.rows:
            return
        _print_at_end(request, table.render())
        out_dir = os.environ.get("SIS_STREAM_RATIOS_DIR")
        if out_dir:
            slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower())
            with open(os.path.join(out_dir, f"paired-{slug}.json"), "w", encoding="utf-8") as f:
                json.dump(table.rows, f, indent=1)

    return paired
