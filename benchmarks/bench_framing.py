"""Framer throughput vs a naive bytes-concatenation framer, side by side in one run.

No external anchor exists for framing, so the anchor is the obvious hand-written loop
(``buf += chunk; while len(buf) >= F: out.append(buf[:F]); buf = buf[F:]``), which is
what an application would write without a Framer. Each case frames 10 s of audio, either
in 1024-byte chunks (a typical capture block, deliberately not a multiple of a frame) or
as one 10 s blob (a file read at once). The ratio table (naive time / Framer time, medians;
> 1 means the Framer is faster) is printed in the terminal summary.

Run: ``/work/venv/bin/python -m pytest benchmarks/bench_framing.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

from sis_stream.client.framing import Framer

AUDIO_S = 10
CASES = [  # (format, frame_ms, chunk_bytes or None for the whole 10 s at once)
    (fmt, ms, chunk)
    for fmt in ("ulaw8k8bit", "pcm16k16bit")
    for ms in (20, 100)
    for chunk in (1024, None)
]
BYTES_PER_S = {"ulaw8k8bit": 8000, "pcm16k16bit": 32000}

_results: dict[tuple[str, int, str], dict[str, float]] = {}


def _case_id(case):
    fmt, ms, chunk = case
    return f"{fmt}-{ms}ms-{'chunk' + str(chunk) if chunk else 'blob10s'}"


def _chunks(fmt: str, chunk: int | None) -> list[bytes]:
    data = (
        np.random.default_rng(0)
        .integers(0, 256, AUDIO_S * BYTES_PER_S[fmt], dtype=np.uint8)
        .tobytes()
    )
    if chunk is None:
        return [data]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def naive_frames(chunks: list[bytes], frame_bytes: int) -> list[bytes]:
    """The anchor: bytes concatenation and re-slicing, no bounds, no counters."""
    buf = b""
    out = []
    for c in chunks:
        buf += c
        while len(buf) >= frame_bytes:
            out.append(buf[:frame_bytes])
            buf = buf[frame_bytes:]
    if buf:
        out.append(buf)
    return out


def framer_frames(chunks: list[bytes], fmt: str, frame_ms: int) -> list[bytes]:
    """The Framer the way the async layer drives it: feed, take every whole frame, flush."""
    fr = Framer(fmt, frame_ms, max_buffer_ms=AUDIO_S * 1000 + frame_ms)
    out = []
    feed, pop = fr.feed, fr.pop
    for c in chunks:
        feed(c)
        while (f := pop()) is not None:
            out.append(f)
    out.extend(fr.flush())
    return out


def ratio_lines() -> list[str]:
    """The ratio table of everything measured so far in this run."""
    lines = [
        f"Framer vs naive bytes-concatenation framer ({AUDIO_S} s of audio per round; medians)",
        (
            f"{'case':34s} {'naive':>10s} {'Framer':>10s} {'naive/Framer':>13s} "
            f"{'Framer x realtime':>18s}"
        ),
    ]
    for key in sorted(_results):
        r = _results[key]
        if "naive" in r and "framer" in r:
            lines.append(
                f"{key[2]:34s} {r['naive'] * 1e6:8.0f}us {r['framer'] * 1e6:8.0f}us "
                f"{r['naive'] / r['framer']:13.2f} {AUDIO_S / r['framer']:17.0f}x"
            )
    return lines


class _RatioReport:
    """Prints the ratio table in the terminal summary (output of fixtures is captured)."""

    def pytest_terminal_summary(self, terminalreporter):
        if _results:
            terminalreporter.write_sep("-", "bench_framing ratios")
            for line in ratio_lines():
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("bench_framing_ratios"):
        pm.register(_RatioReport(), "bench_framing_ratios")
    yield


def _record(benchmark, case, impl):
    fmt, ms, _chunk = case
    # The median: the box is shared and noisy, and outliers hit the mean hard.
    _results.setdefault((fmt, ms, _case_id(case)), {})[impl] = benchmark.stats.stats.median
    benchmark.extra_info["audio_s"] = AUDIO_S


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bench_naive(benchmark, case):
    fmt, ms, chunk = case
    chunks = _chunks(fmt, chunk)
    fb = BYTES_PER_S[fmt] * ms // 1000
    benchmark.group = _case_id(case)
    out = benchmark.pedantic(naive_frames, args=(chunks, fb), rounds=15, warmup_rounds=2)
    assert b"".join(out) == b"".join(chunks)
    _record(benchmark, case, "naive")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bench_framer(benchmark, case):
    fmt, ms, chunk = case
    chunks = _chunks(fmt, chunk)
    benchmark.group = _case_id(case)
    out = benchmark.pedantic(framer_frames, args=(chunks, fmt, ms), rounds=15, warmup_rounds=2)
    assert out == naive_frames(chunks, BYTES_PER_S[fmt] * ms // 1000)
    _record(benchmark, case, "framer")
