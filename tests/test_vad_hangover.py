"""EnergyVad's adaptive hangover pinned to its definition (issue 23).

On a steady background (a 2 kHz tone holding whole periods in every frame: every background
frame has the same band energy, so the floor settles on it) a 1 kHz tone burst is speech on its
own frames, and then the hangover is

- ``hangover_quiet_ms`` when the floor is at or below ``quiet_floor_dbfs[0]`` and the burst is
  more than ``low_snr_margin_db[1]`` above it (a quiet line, high SNR);
- ``hangover_ms + hangover_low_snr_ms`` when the burst's band energy is at most
  ``low_snr_margin_db[0]`` above the floor (low SNR), whatever the floor;

each rounded to whole frames. The default preset's 150 ms on a louder background is pinned by
tests/test_pinned_vad.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from sis_stream.audio.vad import FEATURE_BAND, EnergyVad, VadTuning, frame_features

LEAD_MS, BURST_MS, TAIL_MS = 1000, 600, 900
_PRESET = VadTuning.from_sensitivity(0.5)


def _low_snr_burst(rate: int, frame_ms: int) -> float:
    """Amplitude of the 1 kHz burst whose band energy, added to the 2 kHz background of amplitude
    1000, is (on_db + low_snr_margin_db[0]) / 2 dB above the background's (powers add; each
    tone's band gain is measured, the pair mean at 16 kHz treats them differently)."""
    n = rate  # one second of each tone alone
    t = np.arange(n) / rate
    bg, tone = (frame_features(np.round(1000.0 * np.sin(2 * np.pi * f * t)).astype(np.int16),
                               rate, frame_ms)[10:, FEATURE_BAND].mean() for f in (2000, 1000))
    margin_db = (_PRESET.on_db + _PRESET.low_snr_margin_db[0]) / 2
    return 1000.0 * np.sqrt((10 ** (margin_db / 10) - 1.0) / 10 ** ((tone - bg) / 10))


def _signal(rate: int, frame_ms: int, background: float, burst: float):
    fl = rate * frame_ms // 1000
    a, b, c = LEAD_MS // frame_ms, BURST_MS // frame_ms, TAIL_MS // frame_ms
    n = (a + b + c) * fl
    x = background * np.sin(2 * np.pi * 2000 * np.arange(n) / rate)
    env = np.ones(b * fl)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fl) / fl)
    env[:fl], env[-fl:] = ramp, ramp[::-1]
    t = np.arange(b * fl) / rate
    x[a * fl : (a + b) * fl] += burst * env * np.sin(2 * np.pi * 1000 * t)
    return np.round(x).astype(np.int16), a, b


def _runs(d: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], d.astype(np.int8), [0]))))
    return [(int(p), int(q)) for p, q in zip(edges[::2], edges[1::2])]


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_quiet_line_gets_the_quiet_hangover(backend, rate, frame_ms):
    tuning = VadTuning.from_sensitivity(0.5)
    x, a, b = _signal(rate, frame_ms, background=4.0, burst=8000.0)
    band = frame_features(x, rate, frame_ms)[:, FEATURE_BAND]
    # Premise: the floor is a quiet line, the burst far above it.
    assert band[a - 1] <= tuning.quiet_floor_dbfs[0]
    assert band[a + 2] - band[a - 1] > tuning.low_snr_margin_db[1] + 10
    got = EnergyVad(rate, frame_ms, tuning=tuning).process(x)
    assert _runs(got) == [(a, a + b + round(tuning.hangover_quiet_ms / frame_ms))]


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_low_snr_gets_the_extended_hangover(backend, rate, frame_ms):
    tuning = VadTuning.from_sensitivity(0.5)
    # Premise: the burst's band energy is over the entry threshold of a steady background
    # (on_db, with room for the floor's capped rise during the burst) and under the margin
    # below which the whole extension applies.
    x, a, b = _signal(rate, frame_ms, background=1000.0, burst=_low_snr_burst(rate, frame_ms))
    band = frame_features(x, rate, frame_ms)[:, FEATURE_BAND]
    margin = band[a + 2 : a + b - 1] - band[a - 1]
    assert np.all((margin > tuning.on_db + 0.2) & (margin < tuning.low_snr_margin_db[0]))
    # The faded-in first frame stays under the 3.5 dB entry threshold (speech starts one frame
    # later); the faded-out last one over the 0.5 dB it needs to stay in speech.
    assert band[a] - band[a - 1] < tuning.on_db < band[a + 1] - band[a - 1]
    assert band[a + b - 1] - band[a - 1] > tuning.off_db
    got = EnergyVad(rate, frame_ms, tuning=tuning).process(x)
    hang = round(tuning.hangover_ms / frame_ms) + round(tuning.hangover_low_snr_ms / frame_ms)
    assert _runs(got) == [(a + 1, a + b + hang)]


def test_explicit_tuning_without_the_new_fields_keeps_a_fixed_hangover(backend):
    # VadTuning(...) built by hand (no hangover_quiet_ms / hangover_low_snr_ms): the hangover
    # is hangover_ms on a quiet line and at low SNR alike.
    base = VadTuning.from_sensitivity(0.5)
    fixed = VadTuning(**{**base.__dict__, "hangover_quiet_ms": None, "hangover_low_snr_ms": 0})
    for background, burst, late in ((4.0, 8000.0, 0), (1000.0, _low_snr_burst(8000, 20), 1)):
        x, a, b = _signal(8000, 20, background, burst)
        assert _runs(EnergyVad(8000, 20, tuning=fixed).process(x)) == [(a + late, a + b + 8)]
