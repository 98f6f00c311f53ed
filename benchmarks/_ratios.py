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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["Comparison", "Ratios", "ratio_fixture"]


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
