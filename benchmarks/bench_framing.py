"""Framer throughput vs a naive bytes-concatenation framer, side by side in one run.

No external anchor exists for framing, so the anchors are hand-written loops an application
would write without a Framer: the *linear* one (a ``bytearray``, every whole frame sliced at
its offset, one ``del buf[:n*F]`` per chunk) is the fair anchor; the *naive* one
(``buf += chunk; while len(buf) >= F: out.append(buf[:F]); buf = buf[F:]``) is shown beside
it and is quadratic when a whole file arrives as one chunk (every frame copies the rest of the
buffer), so its "blob10s" ratios flatter the Framer and are labelled so in the table. Each case
frames 10 s of audio, either in 1024-byte chunks (a typical capture block, deliberately not a
multiple of a frame) or as one 10 s blob (a file read at once). Rounds are paired
(``_ratios.Paired``: Framer and anchor back to back, ratio per round, median of the ratios);
the table (anchor time / Framer time, > 1 means the Framer is faster) prints at the end.

Run: ``python -m pytest benchmarks/bench_framing.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")  # the bench extra

from _ratios import paired_fixture

from sis_stream.client.framing import Framer

AUDIO_S = 10
CASES = [  # (format, frame_ms, chunk_bytes or None for the whole 10 s at once)
    (fmt, ms, chunk)
    for fmt in ("ulaw8k8bit", "pcm16k16bit")
    for ms in (20, 100)
    for chunk in (1024, None)
]
BYTES_PER_S = {"ulaw8k8bit": 8000, "pcm16k16bit": 32000}

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


def linear_frames(chunks: list[bytes], frame_bytes: int) -> list[bytes]:
    """The fair anchor: a bytearray, every whole frame sliced at its offset, one trim per chunk.

    Linear in the input (the naive loop's ``buf = buf[F:]`` copies the rest of the buffer for
    every frame, which is quadratic when a whole file arrives as one chunk).
    """
    buf = bytearray()
    out = []
    for c in chunks:
        buf += c
        n = len(buf) // frame_bytes
        with memoryview(buf) as mv:  # one copy per frame (a bytearray slice would make two)
            out.extend(mv[i * frame_bytes : (i + 1) * frame_bytes].tobytes() for i in range(n))
        del buf[: n * frame_bytes]
    if buf:
        out.append(bytes(buf))
    return out


ANCHORS = {
    "linear": (linear_frames, "bytearray + offsets, linear (the fair anchor)"),
    "naive": (naive_frames, "buf = buf[F:] per frame: quadratic on one whole-file chunk"),
}

paired = paired_fixture(f"Framer vs hand-written framers ({AUDIO_S} s of audio a round)")


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def bench_framer(benchmark, paired, case, anchor):
    fmt, ms, chunk = case
    chunks = _chunks(fmt, chunk)
    fb = BYTES_PER_S[fmt] * ms // 1000
    fn, note = ANCHORS[anchor]
    want = naive_frames(chunks, fb)
    assert fn(chunks, fb) == want and framer_frames(chunks, fmt, ms) == want
    paired.run(benchmark, _case_id(case), "Framer", lambda: framer_frames(chunks, fmt, ms),
               f"{anchor} framer", lambda: fn(chunks, fb), rounds=15, warmup_rounds=2, note=note)
