"""EnergyVad hangover pinned to its definition: a burst is speech, then exactly ``hangover`` frames.

The expected decisions are written from the documented rules, not from the detector's own
output: on a steady background (a 2 kHz tone holding whole periods in every frame, so every
background frame has the same band energy and the noise floor settles exactly) a tone burst
with raised-cosine ends is speech on exactly its own frames (checked with ``hangover_ms=0``),
and with a hangover of ``H`` ms the detector keeps reporting speech for
``round(H / frame_ms)`` more frames after it falls silent, then nothing. 150 ms at 20 ms
frames is 7.5 frames: every rounding to nearest gives 8 (only truncation gives 7).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sis_stream.audio.vad import FEATURE_BAND, EnergyVad, VadTuning, frame_features

LEAD_MS = 1000  # background before the burst: the noise floor settles on it
BURST_MS = 600
TAIL_MS = 900  # longer than any hangover below


def _burst_signal(rate: int, frame_ms: int) -> tuple[np.ndarray, int, int, int]:
    """(int16 signal, lead frames, burst frames, tail frames)."""
    fl = rate * frame_ms // 1000
    n_lead, n_burst, n_tail = LEAD_MS // frame_ms, BURST_MS // frame_ms, TAIL_MS // frame_ms
    n = (n_lead + n_burst + n_tail) * fl
    x = 100.0 * np.sin(2 * np.pi * 2000 * np.arange(n) / rate)  # -50 dBFS steady background
    env = np.ones(n_burst * fl)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fl) / fl)  # one frame fade in / fade out
    env[:fl], env[-fl:] = ramp, ramp[::-1]
    t = np.arange(n_burst * fl) / rate
    x[n_lead * fl : (n_lead + n_burst) * fl] += 8000.0 * env * np.sin(2 * np.pi * 1000 * t)
    return np.round(x).astype(np.int16), n_lead, n_burst, n_tail


def _expected(n_lead: int, n_burst: int, n_tail: int, hang_frames: int) -> np.ndarray:
    want = np.zeros(n_lead + n_burst + n_tail, bool)
    want[n_lead : n_lead + n_burst + hang_frames] = True
    return want


def _tuning(hangover_ms: int) -> VadTuning:
    return dataclasses.replace(VadTuning.from_sensitivity(0.5), hangover_ms=hangover_ms)


def _runs(d: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], d.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_signal_premise_burst_frames_stand_out(rate, frame_ms):
    # The premise of the tests below: the first frame after the burst is back at the
    # background's band energy (no filter ringing left), the burst is > 30 dB above it.
    x, a, b, _c = _burst_signal(rate, frame_ms)
    band = frame_features(x, rate, frame_ms)[:, FEATURE_BAND]
    background = band[a - 1]
    assert np.all(np.abs(band[a + b :] - background) < 0.05)
    assert np.all(band[a : a + b] > background + 30.0)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_without_hangover_speech_is_exactly_the_burst(backend, rate, frame_ms):
    x, a, b, c = _burst_signal(rate, frame_ms)
    got = EnergyVad(rate, frame_ms, tuning=_tuning(0)).process(x)
    assert _runs(got) == _runs(_expected(a, b, c, 0)) == [(a, a + b)]


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    ("frame_ms", "hang_frames"),
    [(10, 15), (20, 8), (30, 5)],  # 150 ms: 15 frames, 7.5 -> 8 frames, 5 frames
)
def test_default_hangover_is_150_ms_rounded_to_frames(backend, rate, frame_ms, hang_frames):
    x, a, b, c = _burst_signal(rate, frame_ms)
    vad = EnergyVad(rate, frame_ms)
    assert vad.tuning.hangover_ms == 150
    got = vad.process(x)
    assert _runs(got) == [(a, a + b + hang_frames)]
    np.testing.assert_array_equal(got, _expected(a, b, c, hang_frames))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    ("frame_ms", "hangover_ms", "hang_frames"),
    [
        (10, 148, 15),  # 14.8 frames
        (10, 10, 1),
        (20, 135, 7),  # 6.75
        (20, 190, 10),  # 9.5: half-up and half-even both give 10
        (20, 20, 1),
        (30, 50, 2),  # 1.67
        (30, 200, 7),  # 6.67
        (30, 100, 3),  # 3.33
    ],
)
def test_custom_hangover_rounds_to_the_nearest_frame(backend, rate, frame_ms, hangover_ms,
                                                     hang_frames):
    x, a, b, c = _burst_signal(rate, frame_ms)
    got = EnergyVad(rate, frame_ms, tuning=_tuning(hangover_ms)).process(x)
    np.testing.assert_array_equal(got, _expected(a, b, c, hang_frames))


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_hangover_survives_any_chunking(frame_ms):
    # Streamed in odd-sized chunks (frames split across calls): the same burst + hangover.
    rate = 16000
    x, a, b, c = _burst_signal(rate, frame_ms)
    vad = EnergyVad(rate, frame_ms)
    got = np.concatenate([vad.process(x[i : i + 333]) for i in range(0, len(x), 333)])
    np.testing.assert_array_equal(got, _expected(a, b, c, round(150 / frame_ms)))
