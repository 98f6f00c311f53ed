"""VAD kernels (native == reference), band filter, EnergyVad streaming, golden decisions, validation."""

from __future__ import annotations

import numpy as np
import pytest

from sis_stream import _backend, codec
from sis_stream._reference import vad as ref_vad
from sis_stream.errors import AudioFormatError, StreamClosedError
from sis_stream.vad import (
    FEATURE_BAND,
    FEATURE_ENERGY,
    FEATURE_ZCR,
    EnergyVad,
    band_sos,
    frame_features,
    valid_rate_and_frame_ms,
)

#: native vs reference feature tolerance: the native band energy is computed in float32 lanes
#: with a float64 state correction; energies agree within this many dB.
FEATURE_TOL_DB = 1e-3

needs_native = pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="native kernels not used")


def _speechlike(rate: int, seed: int = 7) -> np.ndarray:
    # 3 s: noise floor, three harmonic bursts (150 Hz pitch) of different levels, 50 Hz hum.
    rng = np.random.default_rng(seed)
    n = rate * 3
    t = np.arange(n) / rate
    x = rng.normal(0, 100, n)
    for a, b, amp in ((0.5, 1.0, 3000), (1.3, 1.5, 800), (2.0, 2.6, 6000)):
        m = (t >= a) & (t < b)
        x[m] += amp * sum(np.sin(2 * np.pi * 150 * k * t[m]) / k for k in range(1, 8))
    x += 300 * np.sin(2 * np.pi * 50 * t)
    return np.round(x).astype(np.int16)


def _bits(d: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in d)


@needs_native
def test_layout_constants_match():
    # The two kernels share the feature/param/state layouts by number.
    nat = _backend.load("native").vad
    for name in ref_vad.__all__:
        if name.isupper():
            assert getattr(nat, name) == getattr(ref_vad, name), name


def test_band_sos_matches_scipy_butter():
    signal = pytest.importorskip("scipy.signal")
    for rate in (8000, 16000):
        want = np.vstack([signal.butter(2, 300, "high", fs=rate, output="sos"),
                          signal.butter(2, 3400, "low", fs=rate, output="sos")])
        np.testing.assert_allclose(band_sos(rate), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_band_energy_equals_sosfilt(backend, rate, frame_ms):
    # Band feature == energy of scipy.signal.sosfilt output, from a random initial state.
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(rate + frame_ms)
    x = np.round(rng.normal(0, 2000, rate)).astype(np.int16)
    x[rate // 4 : rate // 2] = 0  # digital silence after loud audio: the state decays
    sos = band_sos(rate)
    zi0 = rng.normal(0, 50, 4)
    L = rate * frame_ms // 1000
    out = np.empty((len(x) // L, 3))
    zi = zi0.copy()
    n = backend.vad.frame_features(x, L, sos.ravel(), zi, out)
    y, zf = signal.sosfilt(sos, x[: n * L].astype(float), zi=zi0.reshape(2, 2))
    ms = np.maximum(np.mean(y.reshape(n, L) ** 2, axis=1), 1e-10 * 32768.0**2)
    np.testing.assert_allclose(out[:, FEATURE_BAND], 10 * np.log10(ms / 32768.0**2),
                               atol=FEATURE_TOL_DB)
    np.testing.assert_allclose(zi, zf.ravel(), rtol=1e-4, atol=1e-3)


@needs_native
@pytest.mark.parametrize("n_frames", [1, 5, 23, 24, 25, 97])
def test_native_features_equal_reference(n_frames):
    # Both kernel paths (sequential below 24 frames, frame-parallel above) against the twin.
    nat = _backend.load("native").vad
    rng = np.random.default_rng(n_frames)
    for rate, L in ((8000, 80), (16000, 320), (16000, 480)):
        x = np.round(rng.normal(0, 3000, n_frames * L + 7)).astype(np.int16)
        outs = []
        for mod in (nat, ref_vad):
            zi = np.array([3.0, -1.0, 20.0, 5.0])
            out = np.empty((n_frames, 3))
            assert mod.frame_features(x, L, band_sos(rate).ravel(), zi, out) == n_frames
            outs.append((out, zi))
        np.testing.assert_allclose(outs[0][0][:, :2], outs[1][0][:, :2], atol=FEATURE_TOL_DB)
        np.testing.assert_array_equal(outs[0][0][:, 2], outs[1][0][:, 2])
        np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-2)


@needs_native
def test_native_decisions_equal_reference():
    # Same features in -> identical decisions and state (float64 arithmetic in the same order).
    nat = _backend.load("native").vad
    rng = np.random.default_rng(3)
    feat = np.zeros((500, 3))
    feat[:, FEATURE_BAND] = -60 + 15 * (rng.random(500) > 0.7) + rng.normal(0, 2, 500)
    params = EnergyVad(16000).tuning.params(10)
    res = []
    for mod in (nat, ref_vad):
        state = np.zeros(ref_vad.N_STATE)
        out = np.empty(500, np.uint8)
        mod.energy_decide(feat[:200], params, state, out[:200])
        mod.energy_decide(feat[200:], params, state, out[200:])
        res.append((out, state))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])


def test_dbfs_calibration_and_zcr(backend):
    L = 160
    square = np.tile(np.array([32767] * 4 + [-32768] * 4, np.int16), L // 8)
    sine = np.round(1000 * np.sin(2 * np.pi * 1000 * np.arange(L) / 8000)).astype(np.int16)
    x = np.concatenate([square, np.zeros(L, np.int16), sine])
    f = frame_features(x, 8000, 20)
    assert f[0, FEATURE_ENERGY] == pytest.approx(0.0, abs=1e-3)  # full-scale square = 0 dBFS
    assert f[1, FEATURE_ENERGY] == -100.0  # digital silence is clamped
    assert f[2, FEATURE_ENERGY] == pytest.approx(20 * np.log10(1000 / 32768) - 3.0103, abs=0.02)
    assert f[0, FEATURE_ZCR] == pytest.approx(39 / 159)
    assert f[1, FEATURE_ZCR] == 0.0


def test_band_filter_rejects_hum(backend):
    # 50 Hz hum loses >= 25 dB in the band feature; a 1 kHz tone keeps its level.
    t = np.arange(16000) / 16000
    hum = np.round(8000 * np.sin(2 * np.pi * 50 * t)).astype(np.int16)
    tone = np.round(8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    fh = frame_features(hum, 16000, 20)[10:]
    ft = frame_features(tone, 16000, 20)[10:]
    assert (fh[:, FEATURE_ENERGY] - fh[:, FEATURE_BAND]).min() > 25
    assert np.abs(ft[:, FEATURE_ENERGY] - ft[:, FEATURE_BAND]).max() < 0.5


# Golden decisions (30 ms frames) over _speechlike(): bursts at 0.5-1.0, 1.3-1.5 and 2.0-2.6 s
# with a 150 ms hangover. One string per sensitivity preset (webrtcvad test_process_file style).
GOLDEN = {
    0.0: "0000000000000000111111111111111111111110000111111111111000000000001111111111111111111111111100000000",
    0.5: "0000000000000000111111111111111111111110000111111111111100000000001111111111111111111111111100000000",
    1.0: "0000000000000000111111111111111111111110000111111111111100000000001111111111111111111111111100000000",
}


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("sensitivity", sorted(GOLDEN))
def test_golden_decisions(backend, rate, sensitivity):
    assert _bits(EnergyVad(rate, 30, sensitivity).process(_speechlike(rate))) == GOLDEN[sensitivity]


@pytest.mark.parametrize("chunk", [1, 7, 159, 160, 161, 4096])
def test_stream_equals_one_shot(backend, chunk):
    x = _speechlike(16000)
    want = EnergyVad(16000, 10).process(x)
    vad = EnergyVad(16000, 10)
    got = np.concatenate([vad.process(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    np.testing.assert_array_equal(got, want)
    assert vad.pending_samples == len(x) % 160


def test_partial_frame_buffered_and_flushed():
    vad = EnergyVad(8000, 10)
    assert len(vad.process(np.zeros(100, np.int16))) == 1
    assert vad.pending_samples == 20
    assert len(vad.flush()) == 1  # the 20 samples, zero-padded
    with pytest.raises(StreamClosedError, match="after flush"):
        vad.process(np.zeros(10, np.int16))
    assert len(vad.flush()) == 0
    vad.reset()
    assert vad.frames_done == 0 and len(vad.process(np.zeros(80, np.int16))) == 1


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_input_equals_decoded_pcm(backend, law):
    x = _speechlike(8000)
    codes = codec.ulaw_encode(x) if law == "ulaw" else codec.alaw_encode(x)
    decoded = codec.ulaw_decode(codes) if law == "ulaw" else codec.alaw_decode(codes)
    want = EnergyVad(8000, 20).process(decoded)
    np.testing.assert_array_equal(EnergyVad(8000, 20, encoding=law).process(codes), want)
    np.testing.assert_array_equal(
        EnergyVad(8000, 20, encoding=law).process(codes.tobytes()), want)


def test_bytes_and_readonly_input_accepted():
    x = _speechlike(8000)
    ro = x.copy()
    ro.flags.writeable = False
    want = EnergyVad(8000).process(x)
    np.testing.assert_array_equal(EnergyVad(8000).process(x.tobytes()), want)
    np.testing.assert_array_equal(EnergyVad(8000).process(ro), want)
    np.testing.assert_array_equal(EnergyVad(8000).process(x[::2].copy()[: len(x) // 2]),
                                  EnergyVad(8000).process(np.ascontiguousarray(x[::2])[: len(x) // 2]))


def test_noise_floor_adapts_to_stationary_noise():
    rng = np.random.default_rng(11)
    vad = EnergyVad(16000, 10)
    d = vad.process(np.round(rng.normal(0, 1500, 16000 * 3)).astype(np.int16))
    assert not d[50:].any()  # loud but stationary noise is not speech after 0.5 s
    assert -50 < vad.noise_floor_dbfs < -20


def test_valid_rate_and_frame_ms():
    assert valid_rate_and_frame_ms(8000, 30) and not valid_rate_and_frame_ms(44100, 10)
    assert not valid_rate_and_frame_ms(16000, 25)


@pytest.mark.parametrize(
    ("args", "kw", "exc", "match"),
    [
        ((44100,), {}, AudioFormatError, r"rate_hz must be one of \(8000, 16000\), got 44100"),
        ((8000, 15), {}, AudioFormatError, r"frame_ms must be one of \(10, 20, 30\), got 15"),
        ((8000, 10, 1.5), {}, ValueError, r"sensitivity must be in \[0, 1\], got 1.5"),
        ((8000, 10, "high"), {}, TypeError, "sensitivity must be a real number"),
        ((8000.0,), {}, TypeError, "rate_hz must be an int"),
        ((8000,), {"encoding": "opus"}, AudioFormatError, "encoding must be one of"),
    ],
)
def test_bad_construction(args, kw, exc, match):
    with pytest.raises(exc, match=match):
        EnergyVad(*args, **kw)


def test_bad_chunks():
    vad = EnergyVad(8000)
    with pytest.raises(TypeError, match="PCM arrays must be int16, got float64"):
        vad.process(np.zeros(10))
    with pytest.raises(AudioFormatError, match=r"1-D \(mono\)"):
        vad.process(np.zeros((2, 80), np.int16))
    with pytest.raises(AudioFormatError, match="even length, got 5 bytes"):
        vad.process(b"12345")
    with pytest.raises(TypeError, match="expected an int16 numpy array or bytes-like PCM, got list"):
        vad.process([1, 2])
    with pytest.raises(TypeError, match="ulaw code arrays must be uint8, got int16"):
        EnergyVad(8000, encoding="ulaw").process(np.zeros(10, np.int16))


def test_kernel_argument_errors(backend):
    x = np.zeros(320, np.int16)
    sos = band_sos(8000).ravel()
    with pytest.raises(ValueError, match=r"frame_len must be in 2\.\.480, got 481"):
        backend.vad.frame_features(x, 481, sos, np.zeros(4), np.empty((1, 3)))
    with pytest.raises(ValueError, match="sos must hold 6 \\* n"):
        backend.vad.frame_features(x, 80, sos[:5], np.zeros(4), np.empty((4, 3)))
    with pytest.raises(ValueError, match=r"out must have shape \(>= 4, 3\)"):
        backend.vad.frame_features(x, 80, sos, np.zeros(4), np.empty((3, 3)))
    with pytest.raises(ValueError, match="params must hold 8 values"):
        backend.vad.energy_decide(np.zeros((2, 3)), np.zeros(3), np.zeros(5), np.zeros(2, np.uint8))
