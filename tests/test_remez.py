"""The equiripple (Parks-McClellan) design against scipy.signal.remez, and its argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from sis_stream.audio._remez import remez_type1


def _peak_db(h, lo, hi):
    w = np.linspace(lo, hi, 4000) * np.pi
    resp = np.abs(np.cos(np.outer(w, np.arange(len(h)) - len(h) // 2)) @ h)
    return 20 * np.log10(resp.max())


@pytest.mark.parametrize(
    "numtaps, bands, desired, weight",
    [
        (61, [(0, 0.4), (0.5, 1.0)], [1, 0], [1, 10]),
        # scipy fails to converge with the two pass bands touching (ours does): a 1e-3 gap
        (167, [(0, 0.4), (0.401, 0.45), (0.5, 1.0)], [1, 1, 0], [1, 0.1, 100]),
        (251, [(0, 0.8 / 3), (0.801 / 3, 0.3), (1 / 3, 1.0)], [1, 1, 0], [1, 0.1, 100]),
        (45, [(0, 0.2), (0.3, 0.6), (0.7, 1.0)], [0, 1, 0], [1, 1, 1]),  # band-pass
    ],
)
def test_matches_scipy_remez(numtaps, bands, desired, weight):
    # Same minimax problem, same answer (both on a discrete grid of 16 points per extremum):
    # taps within 3e-5 and the same stopband peak (0.3 dB).
    from scipy import signal
    ours = remez_type1(numtaps, bands, desired, weight)
    theirs = signal.remez(numtaps, np.ravel(bands) / 2, desired, weight=weight, fs=1.0)
    assert len(ours) == numtaps and np.allclose(ours, ours[::-1])  # symmetric: linear phase
    assert np.max(np.abs(ours - theirs)) < 3e-5
    for (lo, hi), d in zip(bands, desired):
        if d == 0:
            assert _peak_db(ours, lo, hi) == pytest.approx(_peak_db(theirs, lo, hi), abs=0.3)


def test_error_is_equiripple():
    # The weighted error reaches the same peak in every band (what minimax means), to the
    # 5 % the design grid allows (peaks between its points, seen on this 20,000-point grid).
    h = remez_type1(101, [(0, 0.3), (0.4, 1.0)], [1, 0], [1, 20])
    w = np.linspace(0, 1, 20000) * np.pi
    a = np.cos(np.outer(w, np.arange(101) - 50)) @ h
    f = w / np.pi
    pass_err = np.max(np.abs(a[f <= 0.3] - 1))
    stop_err = 20 * np.max(np.abs(a[f >= 0.4]))
    assert pass_err == pytest.approx(stop_err, rel=0.05)


def test_touching_bands_converge():
    # Two pass bands sharing an edge (what the resampler's presets use).
    h = remez_type1(167, [(0, 0.4), (0.4, 0.45), (0.5, 1.0)], [1, 1, 0], [1, 0.1, 100])
    assert _peak_db(h, 0.5, 1.0) < -102


@pytest.mark.parametrize(
    "args, match",
    [
        ((60, [(0, 0.4), (0.5, 1)], [1, 0], [1, 1]), "numtaps must be odd"),
        ((1, [(0, 0.4), (0.5, 1)], [1, 0], [1, 1]), "numtaps must be odd and >= 3"),
        ((61, [(0, 0.4), (0.5, 1)], [1], [1, 1]), "same non-zero length"),
        ((61, [], [], []), "same non-zero length"),
        ((61, [(0, 0.4), (0.3, 1)], [1, 0], [1, 1]), "band edges must increase"),
        ((61, [(0, 0.4), (0.5, 1.2)], [1, 0], [1, 1]), "band edges must increase"),
        ((61, [(0, 0.4), (0.5, 1)], [1, 0], [1, 0]), "weights must be > 0"),
        ((61, [(0, 0.4, 0.5)], [1], [1]), r"must be \(lo, hi\) pairs"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        remez_type1(*args)
