"""Quality targets of the resampler presets (deterministic DSP measurements, no timing)."""

from __future__ import annotations

import numpy as np
import pytest

from sis_stream.audio._filters import SUPPORTED_PAIRS, measure
from sis_stream.audio.resample import resample

PAIRS = [p for p in SUPPORTED_PAIRS if p[0] != p[1]]

# Targets of the issue for "hq": ripple <= 0.01 dB to 0.8 x f_n, >= -0.1 dB at 0.9 x f_n,
# aliasing / imaging (and the 1 kHz residual) <= -88 dB for int16 (issue 23; the rounding alone
# is about -92 dB at -6 dBFS), <= -100 dB for float32; for int16 also a peak-to-peak ripple
# <= 0.01 dB over 0.1-0.8 x f_n (issue 23).
HQ_LIMIT_DB = {np.int16: -88.0, np.float32: -100.0}
# Stated figures of "telephony": ripple <= 0.01 dB to 0.8 x, -75 dB design stopband measured
# <= -72 dB, same int16 floor.
TEL_LIMIT_DB = {np.int16: -72.0, np.float32: -72.0}


def _ours(quality):
    return lambda x, a, b: resample(x, a, b, quality)


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_hq_meets_targets(backend, pair, dtype):
    # Multitone passband fit, single-tone aliasing / imaging residual, 1 kHz residual.
    if backend.kind == "reference" and pair not in [(8000, 16000), (16000, 8000), (48000, 16000)]:
        pytest.skip("the numpy twin is checked on the three benchmark pairs")
    r = measure(_ours("hq"), *pair, dtype, seconds=0.5)
    limit = HQ_LIMIT_DB[dtype]
    assert r["ripple_db"] <= 0.01
    if dtype is np.int16:
        assert r["ripple_pp_db"] <= 0.01, r
    assert r["gain_09_db"] >= -0.1
    for key in ("alias_db", "image_db"):
        if r[key] is not None:
            assert r[key] <= limit, (key, r)
    assert r["snr_1k_db"] <= limit


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
@pytest.mark.parametrize("pair", [(8000, 16000), (16000, 8000), (48000, 8000), (44100, 16000)],
                         ids=lambda p: f"{p[0]}-{p[1]}")
def test_telephony_figures(pair, dtype):
    # The shorter preset keeps a flat passband to 0.8 x and -0.1 dB at 0.85 x f_n.
    r = measure(_ours("telephony"), *pair, dtype, seconds=0.5)
    assert r["ripple_db"] <= 0.01
    for key in ("alias_db", "image_db"):
        if r[key] is not None:
            assert r[key] <= TEL_LIMIT_DB[dtype], (key, r)


def test_measurement_detects_a_bad_resampler():
    # The measurement can fail: plain decimation (no filter) aliases, linear interpolation
    # images, and a 1 % gain error shows in the ripple.
    naive_down = measure(lambda x, a, b: x[:: a // b], 16000, 8000, np.float32, seconds=0.5)
    assert naive_down["alias_db"] > -10
    def linear_up(x, a, b):
        t = np.arange(len(x) * b // a) * a / b
        return np.interp(t, np.arange(len(x)), x).astype(x.dtype)
    assert measure(linear_up, 8000, 16000, np.float32, seconds=0.5)["image_db"] > -40
    gain = measure(lambda x, a, b: resample(x * np.float32(0.99), a, b), 8000, 16000,
                   np.float32, seconds=0.5)
    assert 0.08 < gain["ripple_db"] < 0.1


@pytest.mark.parametrize("pair", [(8000, 16000), (16000, 8000), (48000, 16000)],
                         ids=lambda p: f"{p[0]}-{p[1]}")
def test_hq_int16_at_least_soxr_hq(pair):
    # soxr HQ measured the same way in the same run: our int16 residuals are no worse
    # (soxr dithers its int16 output, which sets its floor near -87 dB at -6 dBFS).
    soxr = pytest.importorskip("soxr")
    theirs = measure(lambda x, a, b: soxr.resample(x, a, b, "HQ"), *pair, np.int16, seconds=0.5)
    ours = measure(_ours("hq"), *pair, np.int16, seconds=0.5)
    for key in ("alias_db", "image_db", "snr_1k_db"):
        if ours[key] is not None:
            assert ours[key] <= theirs[key] + 0.5, (key, ours, theirs)
    assert ours["ripple_db"] <= 0.01 and theirs["ripple_db"] <= 0.01
