"""StreamResampler / resample / the polyphase kernel: accounting, twins, oracles, bad input."""

from __future__ import annotations

import inspect
from fractions import Fraction

import numpy as np
import pytest
import scipy.signal as signal  # the test extra
from helpers import RecordingProxy

from sis_stream import _backend
from sis_stream.audio import resample as resample_mod
from sis_stream.audio._filters import SUPPORTED_PAIRS, design, plan
from sis_stream.errors import AudioFormatError, StreamClosedError
from sis_stream.audio.resample import StreamResampler, _outputs_available, output_length, resample

# (in, out) pairs covering up-sampling (L=2, M=1), decimation (M=2, 3), and L, M > 1 (small
# and very large L: 24000->16000 is 2/3, 44100->16000 is 160/441).
PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (24000, 16000), (44100, 16000),
         (11025, 16000), (48000, 8000)]
CHUNKS = [1, 7, 159, 160, 161, 4096]
# Float tolerance native vs reference (float32 accumulation vs float64), full scale 1.0:
# 2e-6 (-114 dBFS). int16: at most 1 LSB, on at most 1 % of samples (rounding ties).
F32_ATOL = 2e-6


def _signal(n: int, rate: int, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(n)
    return (x * 32767).astype(np.int16) if dtype == np.int16 else x.astype(np.float32)


def _lengths(pair: tuple[int, int]) -> list[int]:
    k = design(*pair).taps_per_phase
    return sorted({0, 1, 2, k - 1, k, k + 1, 2 * k + 1, 255, 256, 257, 4095, 4096, 4097})


def _stream(rs: StreamResampler, x: np.ndarray, chunk: int) -> np.ndarray:
    parts = [rs.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return np.concatenate(parts + [rs.flush()])


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_stream_equals_oneshot(backend, pair, dtype):
    # Every chunking gives the one-shot samples, bit for bit, and output_length of them.
    for n in _lengths(pair):
        x = _signal(n, pair[0], dtype, seed=n)
        ref = resample(x, *pair)
        assert len(ref) == output_length(n, *pair)
        for chunk in CHUNKS:
            if backend.kind == "reference" and n // chunk > 300:
                continue  # the numpy twin costs ~50 us per call; other chunkings cover it
            y = _stream(StreamResampler(*pair, dtype=dtype), x, chunk)
            assert y.dtype == dtype
            np.testing.assert_array_equal(y, ref, err_msg=f"n={n} chunk={chunk}")


@pytest.mark.parametrize("dtype", [np.int16, np.float32], ids=["int16", "float32"])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_native_matches_reference_after_every_chunk(pair, dtype):
    # Same outputs (within tolerance), same phase, same history after each call.
    if _backend.NO_EXTENSIONS:
        pytest.skip("SIS_STREAM_NO_EXTENSIONS=1: native kernels deliberately not used")
    nat, ref = _backend.load("native").resample, _backend.load("reference").resample
    for f in {design(*pair), *plan(*pair)}:  # the direct filter and every cascade stage
        x = _signal(3000, f.in_rate, dtype, seed=1)
        _compare_kernels(nat, ref, f, x, dtype)
        # the cascade's mixed case: int16 (or float32) in, float32 between stages
        _compare_kernels(nat, ref, f, x, np.float32)


def _compare_kernels(nat, ref, f, x, dtype):
    states = {}
    for mod in (nat, ref):
        states[mod] = [np.zeros(f.taps_per_phase - 1, np.float32), f.centre]
    rng = np.random.default_rng(2)
    pos = 0
    flips = total = 0  # int16 outputs one step apart (float32 sums rounding either side of .5)
    while pos < len(x):
        chunk = x[pos : pos + int(rng.integers(0, 400))]
        pos += len(chunk)
        outs = []
        for mod in (nat, ref):
            hist, phase = states[mod]
            n_out = _outputs_available(len(chunk), phase, f.up, f.down)
            out = np.empty(n_out, dtype)  # output dtype (the chunk keeps x's)
            scratch = np.empty(mod.scratch_length(len(chunk), f.taps_per_phase, f.down, n_out),
                               np.float32)
            got, states[mod][1], clips = mod.polyphase_process(chunk, f.taps, hist, scratch,
                                                               phase, f.up, f.down, out)
            assert got == n_out and clips == 0
            outs.append(out)
        assert states[nat][1] == states[ref][1]
        np.testing.assert_array_equal(states[nat][0], states[ref][0])
        a, b = (o.astype(np.float64) for o in outs)
        if dtype == np.int16:
            assert np.max(np.abs(a - b), initial=0) <= 1
            flips += np.count_nonzero(a != b)
            total += len(a)
        else:
            full_scale = 32768.0 if x.dtype == np.int16 else 1.0
            np.testing.assert_allclose(a, b, rtol=0, atol=F32_ATOL * full_scale)
    assert flips <= max(1, total // 100), (flips, total)


@pytest.mark.parametrize("pair", PAIRS + [(11025, 8000), (48000, 8000), (44100, 8000)],
                         ids=lambda p: f"{p[0]}-{p[1]}")
def test_matches_scipy_upfirdn_with_same_taps(pair):
    # External oracle: the prototype through scipy's polyphase upfirdn, read at the aligned
    # positions m * down + centre; float32 taps and accumulation against float64.
    # A cascade (plan(): half-band stages first) is checked stage by stage the same way, each
    # stage reading its input zero-extended past the end.
    x = _signal(2000, pair[0], np.float32, seed=3)
    z = x.astype(np.float64)
    for f in plan(*pair):
        full = signal.upfirdn(f.prototype, np.r_[z, np.zeros(len(f.prototype))], up=f.up)
        m = np.arange((len(full) - f.centre) // f.down)
        z = full[m * f.down + f.centre]
    expected = z[: output_length(len(x), *pair)]
    np.testing.assert_allclose(resample(x, *pair), expected, rtol=0, atol=5e-6)


def test_output_length_long_inputs():
    # One formula, exact for any length (no float, no overflow): round half up like soxr.
    for n in [0, 1, 2, 3, 10**9 + 7, 2**31 + 1, 2**40 + 3, 2**62 + 5, 10**30 + 1]:
        for a, b in SUPPORTED_PAIRS:
            q = Fraction(n * b, a)
            assert output_length(n, a, b) == int(q + Fraction(1, 2)), (n, a, b)
    # Half-way cases round up (soxr): 101 samples 16k -> 8k give 51.
    assert output_length(101, 16000, 8000) == 51
    with pytest.raises(ValueError, match="n_in >= 0"):
        output_length(-1, 8000, 16000)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_stream_accounting_long_streams(pair):
    # The phase arithmetic of process() + flush() over ~10^13 samples in uneven chunks: never
    # more than output_length so far, and the flush remainder makes it exact.
    f = design(*pair)
    rng = np.random.default_rng(4)
    phase, n_in, n_out = f.centre, 0, 0
    for _ in range(2000):
        n = int(rng.integers(0, 10**10))
        got = _outputs_available(n, phase, f.up, f.down)
        phase += got * f.down - n * f.up
        n_in, n_out = n_in + n, n_out + got
        assert 0 <= phase and n_out <= output_length(n_in, *pair)
    remaining = output_length(n_in, *pair) - n_out
    assert 0 <= remaining <= f.centre // f.down + 2


def test_delay_and_alignment():
    # An impulse at input sample i comes out at output sample i * out/in (delay-compensated);
    # delay reports the group delay held back during streaming.
    rs = StreamResampler(8000, 16000, dtype=np.float32)
    assert rs.delay == design(8000, 16000).centre / 1
    x = np.zeros(1000, np.float32)
    x[300] = 1.0
    y = resample(x, 8000, 16000)
    assert int(np.argmax(y)) == 600
    y = resample(np.repeat(np.float32(1), 3000), 48000, 16000)
    assert int(np.argmax(np.abs(np.diff(resample(np.r_[np.zeros(1500), np.ones(1500)]
                                                          .astype(np.float32), 48000, 16000)))))\
        in (499, 500)
    # DC gain 1 within the passband ripple (<= 0.01 dB: the equiripple designs are not
    # renormalised at DC)
    assert abs(20 * np.log10(float(y[500]))) < 0.01
    assert StreamResampler(8000, 8000).delay == 0.0


def test_first_chunk_holds_back_delay():
    # The first 20 ms frame returns 20 ms minus the group delay; the rest comes with flush.
    rs = StreamResampler(8000, 16000)
    out = rs.process(np.zeros(160, np.int16))
    assert len(out) == 320 - rs.delay
    assert len(rs.flush()) == rs.delay


def test_int16_rounding_saturation_and_clip_count(backend):
    # int16 output is the float path rounded half-to-even and saturated; clips counts those.
    x = np.tile(np.r_[np.full(3, 32767), np.full(3, -32768)], 200).astype(np.int16)
    y16 = resample(x, 8000, 16000)
    # The float path with the int16 design's taps: one kernel call over the input and the
    # flush zeros, float32 out (what resample() does, minus the store to int16).
    f = design(8000, 16000, "hq", np.int16)
    n_out = output_length(len(x), 8000, 16000)
    xz = np.r_[x, np.zeros(f.taps_per_phase, np.int16)]
    yf32 = np.empty(n_out, np.float32)
    k = backend.resample
    k.polyphase_process(xz, f.taps, np.zeros(f.taps_per_phase - 1, np.float32),
                        np.empty(k.scratch_length(len(xz), f.taps_per_phase, f.down, n_out),
                                 np.float32), f.centre, f.up, f.down, yf32)
    yf = yf32.astype(np.float64)
    expected = np.clip(np.rint(yf), -32768, 32767)
    # float32 of the same input goes through the same float32 arithmetic: identical rounding
    # (reference: float64 sums, ties may land either side).
    diff = np.abs(y16 - expected)
    assert diff.max() <= (0 if backend.kind == "native" else 1)
    rs = StreamResampler(8000, 16000)
    _stream(rs, x, 160)
    n_sat = int(np.count_nonzero((np.rint(yf) > 32767) | (np.rint(yf) < -32768)))
    assert n_sat > 0 and abs(rs.clips - n_sat) <= (0 if backend.kind == "native" else 2)
    assert StreamResampler(8000, 16000, dtype=np.float32).clips == 0


def test_read_only_and_non_contiguous_input_accepted(backend):
    # np.frombuffer gives read-only arrays; a strided view is copied, not refused.
    x = _signal(800, 8000, np.int16)
    ro = np.frombuffer(x.tobytes(), dtype=np.int16)
    assert not ro.flags.writeable
    ref = resample(x, 8000, 16000)
    np.testing.assert_array_equal(_stream(StreamResampler(8000, 16000), ro, 160), ref)
    wide = np.zeros(1600, np.int16)
    wide[::2] = x
    np.testing.assert_array_equal(_stream(StreamResampler(8000, 16000), wide[::2], 160), ref)
    np.testing.assert_array_equal(resample(wide[::2], 8000, 16000), ref)


def test_passthrough_equal_rates():
    # Equal rates: exact copy, no delay, same accounting.
    x = _signal(999, 16000, np.int16)
    rs = StreamResampler(16000, 16000)
    y = _stream(rs, x, 160)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert rs.samples_out == rs.samples_in == 999


def test_reset_starts_a_fresh_stream():
    # After flush + reset the object behaves like a new one.
    x = _signal(1000, 16000, np.float32)
    rs = StreamResampler(16000, 8000, dtype=np.float32)
    first = _stream(rs, x, 160)
    assert rs.closed
    rs.reset()
    assert not rs.closed and rs.samples_in == 0
    np.testing.assert_array_equal(_stream(rs, x, 161), first)


def test_telephony_is_shorter():
    # The telephony preset trades stopband for fewer taps and less delay: under 2/3 of the
    # int16 hq design's, under 3/5 of the float32 one's.
    for dtype, share in ((np.int16, 0.66), (np.float32, 0.6)):
        hq = StreamResampler(8000, 16000, "hq", dtype=dtype)
        tel = StreamResampler(8000, 16000, "telephony", dtype=dtype)
        assert tel.taps_per_phase < share * hq.taps_per_phase and tel.delay < share * hq.delay
    x = _signal(700, 8000, np.int16)
    tel = StreamResampler(8000, 16000, "telephony")
    np.testing.assert_array_equal(_stream(tel, x, 7), resample(x, 8000, 16000, "telephony"))


# -- bad input ------------------------------------------------------------------------------


def test_process_after_flush_raises():
    rs = StreamResampler(8000, 16000)
    rs.flush()
    with pytest.raises(StreamClosedError, match=r"process\(\) after flush\(\)"):
        rs.process(np.zeros(160, np.int16))
    with pytest.raises(StreamClosedError, match=r"flush\(\) after flush\(\)"):
        rs.flush()


def test_strict_dtype_on_the_stream():
    rs = StreamResampler(8000, 16000, dtype=np.int16)
    with pytest.raises(TypeError, match="dtype int16, got dtype float32"):
        rs.process(np.zeros(160, np.float32))
    with pytest.raises(TypeError, match="got dtype >i2"):
        rs.process(np.zeros(160, ">i2"))
    with pytest.raises(TypeError, match="got list"):
        rs.process([0] * 160)
    with pytest.raises(TypeError, match="got bytes"):
        rs.process(b"\x00" * 320)
    # a non-native-endian view that compares equal is still int16: accepted
    rs.process(np.zeros(160, np.dtype("=i2")))


def test_shape_errors():
    rs = StreamResampler(8000, 16000)
    with pytest.raises(AudioFormatError, match=r"mono 1-D chunk, got shape \(80, 2\)"):
        rs.process(np.zeros((80, 2), np.int16))
    with pytest.raises(AudioFormatError, match=r"mono 1-D chunk, got shape \(\)"):
        rs.process(np.array(3, np.int16))
    with pytest.raises(AudioFormatError, match=r"mono 1-D signal, got shape \(10, 2\)"):
        resample(np.zeros((10, 2), np.int16), 8000, 16000)
    # the failed calls changed nothing
    assert rs.samples_in == 0


def test_constructor_errors():
    with pytest.raises(AudioFormatError, match=r"unsupported resampling 16000 Hz -> 44100 Hz; "
                                               r"supported: any of 8000, 11025.* to 8000 or 16000"):
        StreamResampler(16000, 44100)
    with pytest.raises(AudioFormatError, match="unsupported resampling 12000 Hz"):
        resample(np.zeros(10, np.int16), 12000, 8000)
    with pytest.raises(TypeError, match="in_rate must be an int"):
        StreamResampler(8000.0, 16000)
    with pytest.raises(TypeError, match="out_rate must be an int"):
        StreamResampler(8000, True)
    with pytest.raises(ValueError, match="unknown quality 'vhq'; expected one of hq, telephony"):
        StreamResampler(8000, 16000, "vhq")
    with pytest.raises(TypeError, match="quality must be a str"):
        StreamResampler(8000, 16000, 3)
    with pytest.raises(TypeError, match="dtype must be numpy.int16 or numpy.float32, got float64"):
        StreamResampler(8000, 16000, dtype=np.float64)
    with pytest.raises(TypeError, match="dtype must be numpy.int16 or numpy.float32"):
        StreamResampler(8000, 16000, dtype="nonsense")


def test_oneshot_dtype_policy():
    # int16 stays int16, floats become float32, other integers are refused.
    assert resample(np.zeros(80, np.int16), 8000, 16000).dtype == np.int16
    assert resample(np.zeros(80), 8000, 16000).dtype == np.float32
    assert resample([0.0] * 80, 8000, 16000).dtype == np.float32
    with pytest.raises(TypeError, match="int16 or floating-point samples, got dtype int32"):
        resample(np.zeros(80, np.int32), 8000, 16000)


def _kernel_args(dtype=np.float32, n=100):
    f = design(8000, 16000)
    k = f.taps_per_phase
    n_out = _outputs_available(n, f.centre, f.up, f.down)
    return dict(x=np.zeros(n, dtype), taps=f.taps, history=np.zeros(k - 1, np.float32),
                scratch=np.zeros(10_000, np.float32), phase=f.centre, up=f.up, down=f.down,
                out=np.zeros(n_out, dtype))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(up=0), ValueError, "up and down must be >= 1"),
        (dict(up=3), ValueError, r"taps must have shape \(up, taps_per_phase\) = \(3"),
        (dict(history=np.zeros(5, np.float32)), ValueError,
         f"taps_per_phase - 1 = {design(8000, 16000).taps_per_phase - 1}"),
        (dict(phase=-1), ValueError, "phase must be >= 0"),
        (dict(out=np.zeros(500, np.float32)), ValueError, "out asks for 500 outputs"),
        (dict(scratch=np.zeros(10, np.float32)), ValueError, "scratch must hold at least"),
        (dict(out=np.zeros(10, np.int32)), TypeError, "must each be int16 or float32"),
        (dict(x=np.zeros(100, np.float64)), TypeError, "must each be int16 or float32"),
        (dict(history=np.zeros(114)), TypeError, "must be float32"),
    ],
)
def test_kernel_rejects_bad_arguments(backend, change, error, match):
    args = _kernel_args()
    args.update(change)
    with pytest.raises(error, match=match):
        backend.resample.polyphase_process(**args)


def test_kernel_scratch_length_rejects_bad_arguments(backend):
    with pytest.raises(ValueError, match="scratch_length expects n_in >= 0"):
        backend.resample.scratch_length(-1, 10, 1, 0)
    assert backend.resample.scratch_length(10, 5, 3, 4) == 14 + 4 + 15


def test_native_kernel_buffer_errors():
    # The native entry takes raw buffers: the same checks a typed memoryview would make.
    if _backend.NO_EXTENSIONS:
        pytest.skip("SIS_STREAM_NO_EXTENSIONS=1: native kernels deliberately not used")
    k = _backend.load("native").resample
    args = _kernel_args()
    ro = np.zeros(design(8000, 16000).taps_per_phase - 1, np.float32)
    ro.flags.writeable = False
    for change, error, match in [
        (dict(history=ro), ValueError, "history must be a C-contiguous writable array"),
        (dict(x=np.zeros(200, np.float32)[::2]), ValueError, "x must be a C-contiguous array"),
        (dict(x=[0.0] * 100), TypeError, "x must be a numpy array"),
        (dict(x=np.zeros((10, 10), np.float32)), ValueError, "must be 1-D"),
    ]:
        bad = dict(args, **change)
        with pytest.raises(error, match=match):
            k.polyphase_process(**bad)


def test_kernel_int16_store_rounds_half_to_even_and_counts_clips(backend):
    # float32 in, int16 out through a one-tap identity filter: the store alone. Ties round to
    # even, values from 32767.5 up and below -32768.5 saturate and are counted; the vector
    # (8 at a time) and scalar (tail) paths both see every case.
    cases = np.array([32767.4, 32767.5, 32766.5, -32768.5, -32768.6, 1e10, -1e10, 0.5, 1.5,
                      -0.5, -1.5, 2.5, 40000.0, -32767.5, 123.49, -7.5, 32768.0], np.float32)
    x = np.tile(cases, 3)[:-1]  # 50 samples: 6 vector steps and a 2-sample tail
    out = np.empty(len(x), np.int16)
    taps = np.ones((1, 1), np.float32)
    scratch = np.empty(backend.resample.scratch_length(len(x), 1, 1, len(x)), np.float32)
    got = backend.resample.polyphase_process(x, taps, np.zeros(0, np.float32), scratch, 0, 1, 1,
                                             out)
    r = np.rint(x.astype(np.float64))
    np.testing.assert_array_equal(out, np.clip(r, -32768, 32767).astype(np.int16))
    assert got == (len(x), 0, int(np.count_nonzero((r > 32767) | (r < -32768))))


@pytest.mark.parametrize("pair", [(48000, 16000), (48000, 8000), (44100, 8000), (32000, 8000)],
                         ids=lambda p: f"{p[0]}-{p[1]}")
def test_cascade_plan_and_alignment(pair):
    # Large ratios run half-band decimators first: the stages chain, each half-band filter has
    # every second tap zero (except the centre), and the cascade stays delay-compensated: an
    # impulse at input i peaks at output i * out / in; delay sums the stages' delays.
    stages = plan(*pair)
    assert len(stages) >= 2 and stages[0].in_rate == pair[0] and stages[-1].out_rate == pair[1]
    for a, b in zip(stages, stages[1:]):
        assert a.out_rate == b.in_rate
    for f in stages[:-1]:
        assert (f.up, f.down) == (1, 2)
        h, c = f.prototype, f.centre
        assert h[c] != 0 and np.all(h[c + 2 :: 2] == 0) and np.all(h[c - 2 :: -2] == 0)
        assert np.all(h[c + 1 :: 2] != 0)
    n_in = pair[0] // 10
    x = np.zeros(n_in, np.float32)
    step = pair[0] // np.gcd(*pair)
    i = n_in // 2 - (n_in // 2) % step  # lands on a whole output sample
    x[i] = 1.0
    y = resample(x, *pair)
    assert int(np.argmax(y)) == i * pair[1] // pair[0]
    rs = StreamResampler(*pair, dtype=np.float32)  # plan() designs for float32 by default
    expected = sum(f.centre / f.down * pair[1] / f.out_rate for f in stages)
    assert rs.delay == pytest.approx(expected)
    assert rs.taps_per_phase == stages[-1].taps_per_phase + int(np.ceil(
        sum(f.taps_per_phase * f.out_rate / pair[1] for f in stages[:-1])))
    x = _signal(5000, pair[0], np.int16, seed=9)  # stream == one-shot also with 7-sample chunks
    np.testing.assert_array_equal(_stream(StreamResampler(*pair), x, 7), resample(x, *pair))


# -- compiled front-end of StreamResampler.process ----------------------------------------------



def test_process_is_compiled_front_end_iff_native_resample():
    public, py = StreamResampler.process, resample_mod._PY_PROCESS
    if _backend.NO_EXTENSIONS or "resample" in _backend.NATIVE_IMPORT_ERRORS:
        assert public is py
    else:
        assert public is _backend.load("native").resample._stream_process_front
        assert public.__name__ == "process" and public.__doc__ == py.__doc__
    assert inspect.signature(public) == inspect.signature(py)


def _process_cases():
    # (rates, dtype, chunks): the hot case and every way out of it.
    i16 = _signal(2000, 8000, np.int16, seed=4)
    f32 = i16.astype(np.float32)
    return [
        ((8000, 16000), np.int16, [i16[:160], i16[160:320], i16[:0], i16[320:327]]),
        ((16000, 8000), np.float32, [f32[:320], f32[320:640]]),
        ((8000, 16000), np.int16, [i16[:2000], i16[:160]]),  # longer than the scratch: grows
        ((8000, 16000), np.int16, [i16[::2][:160]]),  # non-contiguous: copied
        ((8000, 16000), np.int16, [f32[:160]]),  # wrong dtype
        ((8000, 16000), np.int16, [i16[:320].reshape(2, 160)]),  # 2-D
        ((8000, 16000), np.int16, [list(i16[:10])]),  # not an array
        ((8000, 16000), np.int16, [np.int16(5)]),  # 0-d scalar
        ((48000, 16000), np.int16, [np.repeat(i16[:160], 6)]),  # cascade
        ((48000, 16000), np.float32, [np.repeat(f32[:160], 6)] * 3 + [f32[:7], f32[:0]]),
        ((48000, 8000), np.int16, [np.repeat(i16[:160], 6)] * 3 + [i16[:5]]),  # 3 stages
        ((44100, 16000), np.int16, [i16[:882]] * 3 + [i16[:2000]] + [i16[:882]]),  # grows
        ((32000, 8000), np.float32, [f32[:640]] * 2 + [f32[::2][:640]]),  # non-contiguous
        ((48000, 16000), np.int16, [np.repeat(i16[:160], 6), "flush", i16[:160]]),  # closed
        ((8000, 8000), np.int16, [i16[:160]]),  # pass-through
        ((8000, 16000), np.int16, ["flush", i16[:160]]),  # closed
    ]


def _outcome(rs, process, chunk):
    try:
        if isinstance(chunk, str):
            return ("flush", rs.flush().tolist())
        out = process(rs, chunk)
        return (out.dtype.str, out.tolist(), rs.samples_in, rs.samples_out, rs.clips, rs.closed)
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return (type(exc).__name__, str(exc))


def test_front_end_matches_python_method_on_every_backend(backend):
    # Same outputs, same state afterwards, same exception types and messages, case by case.
    if StreamResampler.process is resample_mod._PY_PROCESS:
        pytest.skip("no compiled front-end in use (SIS_STREAM_NO_EXTENSIONS=1 or no native "
                    "resample): process is the Python method, comparing it with itself proves "
                    "nothing")
    for rates, dtype, chunks in _process_cases():
        a = StreamResampler(*rates, dtype=dtype)
        b = StreamResampler(*rates, dtype=dtype)
        for chunk in chunks:
            got = _outcome(a, StreamResampler.process, chunk)
            assert got == _outcome(b, resample_mod._PY_PROCESS, chunk), (rates, dtype)


def test_swapped_backend_reaches_its_kernel(backend, monkeypatch):
    # Whatever process is, it must run on the kernel _backend holds now (a recording proxy).
    calls: list[str] = []
    real = backend.resample

    rs = StreamResampler(8000, 16000)
    rs.process(np.zeros(160, np.int16))  # scratch sized
    monkeypatch.setattr(_backend, "resample", RecordingProxy(real, calls))
    assert len(rs.process(np.zeros(160, np.int16))) == 320
    assert calls == ["polyphase_process"]


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_front_end_hot_path_stays_in_c_and_delegates_the_rest(monkeypatch):
    # Re-bind the front-end to a recording method: the hot case never reaches it while the
    # native kernel is selected; every other call does, once, with the same arguments.
    native = _backend.load("native").resample
    calls: list[str] = []

    def record(self, chunk):
        calls.append(type(chunk).__name__ if not isinstance(chunk, np.ndarray) else
                     f"{chunk.dtype}{chunk.shape}")
        return resample_mod._PY_PROCESS(self, chunk)

    native._bind_front_ends(_backend.__dict__, native, record)
    try:
        monkeypatch.setattr(_backend, "resample", native)
        front = native._stream_process_front
        rs = StreamResampler(8000, 16000)
        x = _signal(800, 8000, np.int16, seed=5)
        front(rs, x[:512])  # first call: the scratch is sized by the Python method
        assert calls == ["int16(512,)"]
        calls.clear()
        hot = [front(rs, x[k : k + 160]) for k in range(0, 480, 160)]  # hot path: in C
        assert calls == [] and [len(h) for h in hot] == [320] * 3
        front(rs, x[::2][:100])  # non-contiguous
        with pytest.raises(TypeError, match="dtype int16, got dtype float32"):
            front(rs, x[:10].astype(np.float32))
        rs.flush()
        with pytest.raises(StreamClosedError):
            front(rs, x[:160])
        assert calls == ["int16(100,)", "float32(10,)", "int16(160,)"]
    finally:
        resample_mod._bind_front_end(native)


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_front_end_runs_cascades_in_c(monkeypatch):
    # 48k -> 8k (two half-band stages, then 12k -> 8k): once the stage buffers are sized, 20 ms
    # chunks stay in C and give what the Python method gives.
    native = _backend.load("native").resample
    calls: list[int] = []

    def record(self, chunk):
        calls.append(len(chunk))
        return resample_mod._PY_PROCESS(self, chunk)

    native._bind_front_ends(_backend.__dict__, native, record)
    try:
        monkeypatch.setattr(_backend, "resample", native)
        front = native._stream_process_front
        x = _signal(9600, 48000, np.int16, seed=7)
        a, b = StreamResampler(48000, 8000), StreamResampler(48000, 8000)
        got = [front(a, x[k : k + 960]) for k in range(0, len(x), 960)]
        want = [resample_mod._PY_PROCESS(b, x[k : k + 960]) for k in range(0, len(x), 960)]
        assert calls == [960]  # the first chunk sized the buffers in Python
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))
        assert (a.samples_in, a.samples_out) == (b.samples_in, b.samples_out)
        np.testing.assert_array_equal(a.flush(), b.flush())
    finally:
        resample_mod._bind_front_end(native)


@pytest.mark.parametrize("pair", [(8000, 16000), (48000, 8000)], ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_stream_continues_on_its_own_state(pair, how):
    # A deep copy / unpickled copy mid-stream carries the compiled front-end's view of the
    # stream with it, bound to its own arrays: both continue independently and exactly.
    import copy
    import pickle

    x = _signal(pair[0] // 5, pair[0], np.int16, seed=13)
    n = pair[0] // 50
    rs = StreamResampler(*pair)
    head = [rs.process(x[:n]), rs.process(x[n : 3 * n])]
    twin = copy.deepcopy(rs) if how == "deepcopy" else pickle.loads(pickle.dumps(rs))
    tail_twin = _stream(twin, x[3 * n :], n)
    tail = _stream(rs, x[3 * n :], n)
    np.testing.assert_array_equal(tail_twin, tail)
    np.testing.assert_array_equal(np.concatenate([*head, tail]), resample(x, *pair))


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_unbound_front_end_says_so():
    native = _backend.load("native").resample
    native._bind_front_ends(None, None, None)
    try:
        with pytest.raises(RuntimeError, match="before sis_stream.audio.resample bound it"):
            native._stream_process_front(StreamResampler(8000, 16000), np.zeros(160, np.int16))
    finally:
        resample_mod._bind_front_end(native)


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_native_kernel_takes_any_buffer_not_only_ndarray():
    # ndarrays take the kernel's C-API path, other buffers (memoryview, array.array) the
    # buffer protocol: same results. (The numpy twin takes ndarrays only.)
    import array

    backend = _backend.load("native")
    f = design(8000, 16000, "hq", np.int16)
    x = _signal(400, 8000, np.int16, seed=6)
    results = []
    for wrap in (lambda a: a, memoryview, lambda a: array.array("h", a.tobytes())):
        n_out = _outputs_available(len(x), f.centre, f.up, f.down)
        out = np.empty(n_out, np.int16)
        hist = np.zeros(f.taps_per_phase - 1, np.float32)
        scratch = np.empty(backend.resample.scratch_length(len(x), f.taps_per_phase, f.down,
                                                           n_out), np.float32)
        res = backend.resample.polyphase_process(wrap(x), f.taps, hist, scratch, f.centre, f.up,
                                                 f.down, memoryview(out))
        results.append((res, out.tolist(), hist.tolist()))
    assert results[0] == results[1] == results[2]


def test_int16_and_float32_designs():
    # int16 output gets its own hq design (issue 23: the float32 length, the passband weighted
    # more against a stopband the rounding hides); float32 the -102 dB one; telephony has one
    # design for both.
    i16, f32 = design(8000, 16000, "hq", np.int16), design(8000, 16000)
    assert i16.taps_per_phase == f32.taps_per_phase
    assert not np.array_equal(i16.prototype, f32.prototype)
    assert StreamResampler(8000, 16000).taps_per_phase == design(8000, 16000, "hq",
                                                                 np.int16).taps_per_phase
    assert design(8000, 16000, "telephony", np.int16) is design(8000, 16000, "telephony")


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
@pytest.mark.parametrize("pair", [(8000, 16000), (16000, 8000), (32000, 16000)],
                         ids=lambda p: f"{p[0]}-{p[1]}")
def test_shared_load_blocks_equal_the_scalar_loop(pair):
    # The kernel's shared-load blocks (both classes of 8k -> 16k at once; groups of five and
    # pairs of vectors of a long M = 2 filter with AVX-512) against 7-sample chunks, which
    # never fill a vector and run the scalar loop: bit for bit at every ISA level, for chunks
    # whose outputs split unevenly between the classes, leave vectors after the groups, or
    # span several blocks.
    native = _backend.load("native").resample
    top = native._set_isa_for_test(0)
    native._set_isa_for_test(top)
    try:
        for level in range(top + 1):
            native._set_isa_for_test(level)
            for quality in ("hq", "telephony"):
                for dtype in (np.int16, np.float32):
                    x = _signal(3 * pair[0] // 5, pair[0], dtype, seed=11)
                    scalar = _stream(StreamResampler(*pair, quality, dtype), x, 7)
                    for chunk in (161, 333, 1000, 4097):
                        got = _stream(StreamResampler(*pair, quality, dtype), x, chunk)
                        np.testing.assert_array_equal(got, scalar, err_msg=f"{level} {chunk}")
    finally:
        native._set_isa_for_test(top)


def _kernel_stream(kern, x: np.ndarray, taps: np.ndarray, up: int, down: int,
                   chunk: int) -> np.ndarray:
    # x through polyphase_process in chunks of `chunk`, every available output of each call.
    k = taps.shape[1]
    hist, phase, parts = np.zeros(k - 1, np.float32), 0, []
    for lo in range(0, len(x), chunk):
        c = x[lo : lo + chunk]
        out = np.empty(_outputs_available(len(c), phase, up, down), np.float32)
        scratch = np.empty(kern.scratch_length(len(c), k, down, len(out)), np.float32)
        _, phase, _ = kern.polyphase_process(c, taps, hist, scratch, phase, up, down, out)
        parts.append(out)
    return np.concatenate(parts)


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
@pytest.mark.parametrize("zeros", [False, True], ids=["no-zero-taps", "zero-taps"])
def test_long_decimator_blocks_equal_the_scalar_loop(zeros):
    # A long M = 2 filter (the five-set and two-set blocks with AVX-512; the five-set block
    # takes only tap rows without zeros and hands the others to the pairs): one long call and
    # 64-sample calls equal 7-sample calls (the scalar loop) bit for bit, at every ISA level.
    native = _backend.load("native").resample
    rng = np.random.default_rng(12)
    taps = rng.uniform(0.001, 0.01, (1, 176)).astype(np.float32)
    if zeros:
        taps[0, ::9] = 0.0
    x = rng.standard_normal(6000).astype(np.float32)
    top = native._set_isa_for_test(0)
    native._set_isa_for_test(top)
    try:
        for level in range(top + 1):
            native._set_isa_for_test(level)
            scalar = _kernel_stream(native, x, taps, 1, 2, 7)
            for chunk in (len(x), 64, 333):
                np.testing.assert_array_equal(_kernel_stream(native, x, taps, 1, 2, chunk),
                                              scalar, err_msg=f"{level} {chunk}")
    finally:
        native._set_isa_for_test(top)


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")
def test_every_isa_variant_streams_exactly():
    # Each compiled inner-loop variant this CPU can run: stream == one-shot bit for bit (20 ms
    # and odd chunks), AVX2+FMA == AVX-512 bit for bit (both fuse every multiply-add), the
    # baseline (separate multiply and add) within one int16 step / float rounding.
    native = _backend.load("native").resample
    top = native._set_isa_for_test(0)
    native._set_isa_for_test(top)
    with pytest.raises(ValueError, match="ISA level must be 0"):
        native._set_isa_for_test(top + 1)
    results = {}
    try:
        for level in range(top + 1):
            native._set_isa_for_test(level)
            for pair in [(8000, 16000), (16000, 8000), (48000, 16000), (11025, 8000)]:
                for dtype in (np.int16, np.float32):
                    x = _signal(pair[0] // 5, pair[0], dtype, seed=8)
                    one = resample(x, *pair)
                    for chunk in (pair[0] // 50, 7):
                        np.testing.assert_array_equal(
                            _stream(StreamResampler(*pair, dtype=dtype), x, chunk), one)
                    results[level, pair, np.dtype(dtype).name] = one
    finally:
        native._set_isa_for_test(top)
    for (level, pair, dt), y in results.items():
        ref = results[top, pair, dt].astype(np.float64)
        if level >= 1:
            np.testing.assert_array_equal(y, results[top, pair, dt])
        elif dt == "int16":
            assert np.max(np.abs(y - ref)) <= 1
        else:
            np.testing.assert_allclose(y, ref, rtol=0, atol=F32_ATOL)  # full scale 1.0
