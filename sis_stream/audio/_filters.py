"""Low-pass filter design for the polyphase resampler (equiripple or Kaiser-windowed sinc), cached."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import DTypeLike

from ._remez import remez_type1
from ..errors import AudioFormatError

__all__ = [
    "INPUT_RATES",
    "OUTPUT_RATES",
    "SUPPORTED_PAIRS",
    "QUALITIES",
    "QualitySpec",
    "PolyphaseFilter",
    "check_pair",
    "check_quality",
    "design",
    "plan",
]

#: Input sample rates (Hz) the resampler accepts (each to 8000 or 16000 Hz).
INPUT_RATES: Final = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
#: Output sample rates (Hz).
OUTPUT_RATES: Final = (8000, 16000)
#: Every supported (in_rate, out_rate) pair; equal rates are an exact pass-through.
SUPPORTED_PAIRS: Final = tuple((i, o) for i in INPUT_RATES for o in OUTPUT_RATES)


@dataclass(frozen=True)
class QualitySpec:
    """Design parameters of one quality preset (all frequencies relative to the lower Nyquist).

    Attributes
    ----------
    name : str
        Preset name.
    stopband_db : float
        Stopband attenuation (dB) the designs aim at: the Kaiser design's A (beta follows
        Kaiser's formula ``0.1102 * (A - 8.7)``) and the half-band stages' base.
    half_length : float
        Kaiser design: half the prototype length, in samples at the lower of the two rates.
    cutoff : float
        Kaiser design: sinc cut-off as a fraction of the lower Nyquist.
    passband_edge : float
        Frequency (fraction of the lower Nyquist) up to which the gain stays within
        ``passband_min_db``; what the quality tests check.
    passband_min_db : float
        Lowest gain (dB) allowed at ``passband_edge``.
    eq_half_length : float
        Equiripple design: half the prototype length in lower-rate samples.
    flat_edge : float
        Equiripple design: end of the tight passband band (weight 1); from there to
        `passband_edge` the gain only has to stay above `passband_min_db` (weight
        `edge_weight`).
    edge_weight, stop_weight : float
        Equiripple band weights of ``[flat_edge, passband_edge]`` and of the stopband, which
        starts at the lower Nyquist (1.0).
    int16_eq_half_length, int16_stop_weight : float or None
        A shorter equiripple design for int16 output, whose rounding noise (about -92 dB at
        -6 dBFS) hides a stopband that a float32 output would show; None: the same design.
    """

    name: str
    stopband_db: float
    half_length: float
    cutoff: float
    passband_edge: float
    passband_min_db: float
    eq_half_length: float
    flat_edge: float
    edge_weight: float
    stop_weight: float
    int16_eq_half_length: float | None = None
    int16_stop_weight: float | None = None

    def for_dtype(self, dtype: DTypeLike) -> QualitySpec:
        """This preset as designed for output samples of `dtype` (int16 or float32)."""
        if np.dtype(dtype) == np.int16 and self.int16_eq_half_length is not None:
            return replace(
                self,
                eq_half_length=self.int16_eq_half_length,
                stop_weight=self.int16_stop_weight,
                int16_eq_half_length=None,
                int16_stop_weight=None,
            )
        return self

    @property
    def beta(self) -> float:
        """Kaiser window beta for ``stopband_db`` (Kaiser 1974; valid for A > 50 dB)."""
        return 0.1102 * (self.stopband_db - 8.7)


# Parameters found by a search at the 8k <-> 16k prototype: the shortest filter whose stopband
# from 1.0 x Nyquist stays below -stopband_db while the passband is flat to `flat_edge` and the
# gain at passband_edge stays above passband_min_db (docs/resample.md has the measured figures).
# The equiripple designs (every pair with max(up, down) <= EQUIRIPPLE_MAX_RATIO) need 27 %
# (hq) fewer taps than the Kaiser ones for the same figures; the Kaiser parameters remain for
# the 11.025 kHz family, whose prototypes (tens of thousands of taps) are beyond the exchange.
QUALITIES: Final[dict[str, QualitySpec]] = {
    # Stopband from 1.0 x Nyquist below -102 dB (no aliasing into the band), -0.1 dB at 0.9 x;
    # for int16 output the same length with the passband weighted 2.5x more against the
    # stopband (stop weight 40, not 100): passband ripple 0.008 dB peak to peak over 0.1-0.8 x
    # (0.015 dB before issue 23), aliasing and imaging with the rounding -89.5 dB or lower
    # (soxr HQ, dithered: about -87).
    "hq": QualitySpec("hq", stopband_db=102.0, half_length=57.0, cutoff=0.942,
                      passband_edge=0.9, passband_min_db=-0.1,
                      eq_half_length=41.5, flat_edge=0.8, edge_weight=0.1,
                      stop_weight=100.0, int16_eq_half_length=41.5, int16_stop_weight=40.0),
    # Half the taps and half the latency: -75 dB stopband, -0.1 dB at 0.85 x (3.4 kHz at 8 kHz).
    "telephony": QualitySpec("telephony", stopband_db=75.0, half_length=30.0, cutoff=0.912,
                             passband_edge=0.85, passband_min_db=-0.1,
                             eq_half_length=24.0, flat_edge=0.8, edge_weight=0.1,
                             stop_weight=3.0),
}

#: Pairs whose prototype ratio ``max(up, down)`` is at most this get the equiripple design.
EQUIRIPPLE_MAX_RATIO: Final = 8


@dataclass(frozen=True, eq=False)
class PolyphaseFilter:
    """A designed resampling filter in the layout the polyphase kernel wants.

    Attributes
    ----------
    in_rate, out_rate : int
        Sample rates (Hz).
    up, down : int
        ``out_rate / in_rate = up / down`` in lowest terms.
    prototype : numpy.ndarray
        float64 low-pass ``h`` at ``up * in_rate`` (odd length, gain ``up``), read-only.
    taps : numpy.ndarray
        float32 ``(up, taps_per_phase)``: ``taps[p, i] = h[p + (K - 1 - i) * up]`` (``h`` padded
        with zeros to ``up * K``), read-only.
    centre : int
        Index of the prototype's centre tap; the up-sampled position of output 0 (delay
        compensation).
    quality : str
        Preset name.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    prototype: np.ndarray
    taps: np.ndarray
    centre: int
    quality: str

    @property
    def taps_per_phase(self) -> int:
        """Taps per polyphase branch (K): multiply-adds per output sample."""
        return int(self.taps.shape[1])

    @property
    def delay(self) -> float:
        """Group delay of the filter in output samples (``centre / down``)."""
        return self.centre / self.down


def check_quality(quality: object) -> QualitySpec:
    """Return the preset named `quality`.

    Raises
    ------
    TypeError
        If `quality` is not a str.
    ValueError
        If there is no such preset.
    """
    if not isinstance(quality, str):
        raise TypeError(f"quality must be a str, got {type(quality).__name__}")
    spec = QUALITIES.get(quality)
    if spec is None:
        raise ValueError(f"unknown quality {quality!r}; expected one of {', '.join(QUALITIES)}")
    return spec


def check_pair(in_rate: object, out_rate: object) -> tuple[int, int]:
    """Validate a rate pair and return it as ints.

    Raises
    ------
    TypeError
        If a rate is not an int.
    AudioFormatError
        If the pair is not supported (the message lists the supported pairs).
    """
    for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
            raise TypeError(f"{name} must be an int (Hz), got {type(rate).__name__}")
    pair = (int(in_rate), int(out_rate))  # type: ignore[call-overload]
    if pair not in SUPPORTED_PAIRS:
        raise AudioFormatError(
            f"unsupported resampling {pair[0]} Hz -> {pair[1]} Hz; supported: any of "
            f"{', '.join(map(str, INPUT_RATES))} Hz to {' or '.join(map(str, OUTPUT_RATES))} Hz "
            "(equal rates pass through)"
        )
    return pair


#: Filters with at least this many phases (``up``) get K rounded up to a multiple of 16: the
#: native kernel then computes each output as a 16-lane dot product (native/resample.pyx).
DOT_MIN_UP: Final = 16


def design(in_rate: int, out_rate: int, quality: str = "hq",
           dtype: DTypeLike = np.float32) -> PolyphaseFilter:
    """Design (once per arguments; cached) the polyphase filter for `in_rate` -> `out_rate`.

    The prototype lives at ``up * in_rate``, has odd length (so its centre is a whole
    up-sampled sample) and gain ``up`` (each phase then has unit gain). With ``R = max(up,
    down) <= EQUIRIPPLE_MAX_RATIO`` it is the minimax (equiripple) design of length
    ``2 * ceil(spec.eq_half_length * R) + 1``: flat band ``[0, flat_edge]``, loose band up to
    ``passband_edge``, stopband from the lower Nyquist ``f_n``, each weighted as the spec says
    (:func:`sis_stream.audio._remez.remez_type1`). Larger ratios (the 11.025 kHz family, prototypes
    of tens of thousands of taps) get a Kaiser-windowed sinc with cut-off
    ``spec.cutoff * f_n``, length ``2 * ceil(spec.half_length * R) + 1``, normalised at DC.

    Parameters
    ----------
    in_rate, out_rate : int
        A supported pair with different rates.
    quality : str
        A key of :data:`QUALITIES`.
    dtype : numpy.int16 or numpy.float32
        Output sample type the filter is for (:meth:`QualitySpec.for_dtype`).

    Returns
    -------
    PolyphaseFilter

    Raises
    ------
    AudioFormatError, TypeError, ValueError
        As :func:`check_pair` and :func:`check_quality`.
    """
    in_rate, out_rate = check_pair(in_rate, out_rate)
    spec = check_quality(quality).for_dtype(dtype)
    if in_rate == out_rate:
        raise ValueError("equal rates need no filter (the resampler passes them through)")
    return _design(in_rate, out_rate, spec)


@lru_cache(maxsize=64)
def _design(in_rate: int, out_rate: int, spec: QualitySpec) -> PolyphaseFilter:
    # design() without the supported-pair check: plan() also needs inner stages such as
    # 12000 -> 8000 Hz.
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    # Up-sampled samples per lower-rate sample: F / (2 f_n) = max(up, down).
    ratio = max(up, down)
    if ratio <= EQUIRIPPLE_MAX_RATIO:
        # Equiripple: bands in fractions of the prototype's Nyquist (ratio x the lower one).
        h = _equiripple(ratio, spec) * up  # unit gain per phase within the design ripple (a
        # DC renormalisation would move the whole passband off centre by up to the ripple)
        half = len(h) // 2
    else:
        half = math.ceil(spec.half_length * ratio)
        n = np.arange(-half, half + 1, dtype=np.float64)
        fc = spec.cutoff / (2 * ratio)  # cycles per up-sampled sample
        h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(2 * half + 1, spec.beta)
        h *= up / h.sum()
    k = -(-(2 * half + 1) // up)  # ceil(N / up)
    if up >= DOT_MIN_UP:
        # Many phase classes (the 11.025 kHz family): the kernel computes each output as a
        # 16-lane dot product over its K taps, so K is rounded up to a multiple of 16 with
        # zero taps at the oldest end of each window (the prototype is unchanged).
        k = -(-k // 16) * 16
    padded = np.zeros(up * k)
    padded[: len(h)] = h
    # taps[p, i] = padded[p + (k - 1 - i) * up]: row p is phase p, reversed, so that the kernel
    # multiplies taps[p, i] with the i-th sample of a window in natural time order.
    taps = np.ascontiguousarray(padded.reshape(k, up).T[:, ::-1], dtype=np.float32)
    # Stream accounting (resample.output_length) needs the centre at least 1.5 output periods
    # in: then process() never emits more than the one-shot length.
    if 2 * half < 3 * down:  # pragma: no cover - holds for every preset and supported pair
        raise RuntimeError(f"{spec.name} filter too short for {in_rate} -> {out_rate} Hz")
    h.flags.writeable = False
    taps.flags.writeable = False
    return PolyphaseFilter(in_rate, out_rate, up, down, h, taps, half, spec.name)


@lru_cache(maxsize=16)
def _equiripple(ratio: int, spec: QualitySpec) -> np.ndarray:
    # The unit-gain equiripple prototype depends on the rates only through ratio = max(up,
    # down) (frequencies relative to the lower Nyquist), so 24k -> 16k and 12k -> 8k share one.
    half = math.ceil(spec.eq_half_length * ratio)
    h = remez_type1(
        2 * half + 1,
        [(0.0, spec.flat_edge / ratio), (spec.flat_edge / ratio, spec.passband_edge / ratio),
         (1.0 / ratio, 1.0)],
        [1.0, 1.0, 0.0],
        [1.0, spec.edge_weight, spec.stop_weight],
    )
    h.flags.writeable = False
    return h


#: A half-band decimate-by-2 stage runs first while ``rate >= HALFBAND_MIN_RATIO * out_rate``.
HALFBAND_MIN_RATIO: Final = 2.5
#: Extra stopband (dB) of a half-band stage over its preset's, so that its aliases stay well
#: under the final stage's.
HALFBAND_EXTRA_DB: Final = 18.0


@lru_cache(maxsize=64)
def _halfband(rate: int, out_rate: int, spec: QualitySpec) -> PolyphaseFilter:
    # Decimate by 2 from `rate` ahead of a final stage to `out_rate`. Only [0, f_n] (f_n the
    # final Nyquist) must survive, and only input in [rate/2 - f_n, rate/2] aliases into it;
    # aliases landing in (f_n, rate/4] are removed by the final stage. The transition band
    # [f_n, rate/2 - f_n] is symmetric about rate/4, so the windowed sinc is a half-band
    # filter (cut-off rate/4: every second tap is zero) and short, since the band is wide.
    f_n = out_rate / 2
    width = (rate / 2 - 2 * f_n) / rate  # transition width, cycles per input sample
    a = spec.stopband_db + HALFBAND_EXTRA_DB
    # Kaiser's length estimate N - 1 = (A - 7.95) / (2.285 * 2 pi width), half-length odd so
    # that the outermost taps are non-zero.
    half = math.ceil((a - 7.95) / (2.285 * 2 * math.pi * width) / 2)
    half += 1 - half % 2
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = 0.5 * np.sinc(0.5 * n) * np.kaiser(2 * half + 1, 0.1102 * (a - 8.7))
    h[half + 2 :: 2] = 0.0  # exact zeros (sinc(k) for integer k != 0)
    h[half - 2 :: -2] = 0.0
    h /= h.sum()
    taps = np.ascontiguousarray(h[::-1].reshape(1, -1), dtype=np.float32)
    h.flags.writeable = False
    taps.flags.writeable = False
    return PolyphaseFilter(rate, rate // 2, 1, 2, h, taps, half, spec.name)


def plan(in_rate: int, out_rate: int, quality: str = "hq",
         dtype: DTypeLike = np.float32) -> tuple[PolyphaseFilter, ...]:
    """The cascade of filters the resampler runs for `in_rate` -> `out_rate` (cached designs).

    Large down-sampling ratios (``in_rate >= 2.5 * out_rate``: 24k/32k/48k/44.1k/22.05k to 8k,
    44.1k/48k to 16k) first halve the rate with short half-band stages, then convert with one
    :func:`design`-style stage at the lower rate; each stage is delay-compensated, so the
    cascade is too. Other pairs are the single :func:`design` filter.

    Parameters
    ----------
    in_rate, out_rate : int
        A supported pair with different rates.
    quality : str
        A key of :data:`QUALITIES`.
    dtype : numpy.int16 or numpy.float32
        Output sample type (the last stage's design follows it; the half-band stages feed
        float32 to the next stage whatever the output type).

    Returns
    -------
    tuple of PolyphaseFilter
        Stages in processing order; each stage's ``out_rate`` is the next one's ``in_rate``.

    Raises
    ------
    AudioFormatError, TypeError, ValueError
        As :func:`design`.
    """
    in_rate, out_rate = check_pair(in_rate, out_rate)
    spec = check_quality(quality)
    if in_rate == out_rate:
        raise ValueError("equal rates need no filter (the resampler passes them through)")
    stages = []
    rate = in_rate
    while 2 * rate >= 5 * out_rate and rate % 2 == 0:
        stages.append(_halfband(rate, out_rate, spec))
        rate //= 2
    stages.append(_design(rate, out_rate, spec.for_dtype(dtype)))
    return tuple(stages)


# -- quality measurement ----------------------------------------------------------------------
# Shared by tests/test_resample_quality.py, benchmarks/bench_resample.py and docs/resample.md,
# and applied unchanged to any resampler (ours, soxr) given as fn(x, in_rate, out_rate) -> y.

#: Test-tone level: -6 dBFS (amplitude 0.5 of full scale).
TONE_LEVEL: Final = 0.5
#: Floor (dB) reported when a residual is exactly zero (an int16 output that rounds to silence).
DB_FLOOR: Final = -150.0


def _db(ratio: float) -> float:
    return max(20.0 * math.log10(ratio), DB_FLOOR) if ratio > 0 else DB_FLOOR


def _tones(freqs: np.ndarray, amps: np.ndarray, phases: np.ndarray, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return (amps[:, None] * np.cos(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(axis=0)


def _fit(y: np.ndarray, freqs: np.ndarray, rate: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    # Least-squares fit of DC + cos/sin at each frequency (the IEEE 1057 sine fit, several
    # tones at once); returns (complex amplitude per tone, residual).
    t = (start + np.arange(len(y))) / rate
    cols = [np.ones_like(t)]
    for f in freqs:
        cols += [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
    a = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    amp = coef[1::2] - 1j * coef[2::2]  # a*cos - b*sin convention: A*cos(wt + phi) -> A e^{i phi}
    return amp, y - a @ coef


def measure(fn, in_rate: int, out_rate: int, dtype: DTypeLike, seconds: float = 1.0) -> dict:
    """Quality figures of a resampler, measured like soxr's published HQ figures.

    All tones are at -6 dBFS (:data:`TONE_LEVEL`; the multitone shares that amplitude among
    its tones), int16 signals are rounded to int16 before resampling, and the analysis skips
    the first and last 10 % of the output (start-up and flush transients).

    Parameters
    ----------
    fn : callable
        ``fn(x, in_rate, out_rate) -> y`` with ``y`` aligned to ``x`` (delay-compensated) and
        the same dtype.
    in_rate, out_rate : int
        Rates (Hz), different.
    dtype : numpy.int16 or numpy.float32
        Sample type fed to and expected from `fn` (full scale 32768 or 1.0).
    seconds : float
        Length of each test signal.

    Returns
    -------
    dict
        ``ripple_db``: largest |gain| (dB) of a 24-tone multitone up to 0.8 x the lower Nyquist
        ``f_n`` (fitted amplitudes); ``ripple_pp_db``: peak-to-peak gain (dB) of those tones
        from 0.1 to 0.8 x ``f_n``; ``gain_09_db``: gain at 0.9 x ``f_n`` (same fit);
        ``alias_db``: for down-sampling, the worst output RMS relative to the input tone RMS
        for single tones between 1.02 x ``f_n`` and 0.98 x the input Nyquist (the tone should
        vanish), else None; ``image_db``: for up-sampling, the worst residual RMS after a sine
        fit of the tone relative to the input tone RMS, for single tones from 0.1 to 0.95 x
        ``f_n`` (images and noise), else None; ``snr_1k_db``: residual of a 1 kHz tone after the sine
        fit, relative to the tone (negative; -SNR). Exact zeros are reported as
        :data:`DB_FLOOR`.
    """
    dt = np.dtype(dtype)
    scale = 32768.0 if dt == np.int16 else 1.0
    n = int(in_rate * seconds)
    fn_lo = min(in_rate, out_rate) / 2
    rng = np.random.default_rng(20240601)

    def run(x: np.ndarray) -> tuple[np.ndarray, int]:
        xin = np.rint(x * scale).astype(np.int16) if dt == np.int16 else x.astype(np.float32)
        y = np.asarray(fn(xin, in_rate, out_rate)).astype(np.float64) / scale
        lo, hi = len(y) // 10, len(y) - len(y) // 10
        return y[lo:hi], lo

    # Passband: 24 tones with random phases, 22 up to 0.8 f_n plus 0.85 and 0.9 x f_n.
    freqs = np.concatenate([np.linspace(0.02, 0.8, 22), [0.85, 0.9]]) * fn_lo
    amps = np.full(len(freqs), TONE_LEVEL / len(freqs))
    phases = rng.uniform(0, 2 * np.pi, len(freqs))
    y, start = run(_tones(freqs, amps, phases, n, in_rate))
    fitted, _ = _fit(y, freqs, out_rate, start)
    gains = 20 * np.log10(np.abs(fitted) / amps)
    report: dict = {
        "ripple_db": float(np.max(np.abs(gains[:22]))),
        "ripple_pp_db": float(np.ptp(gains[:22][freqs[:22] >= 0.1 * fn_lo])),
        "gain_09_db": float(gains[-1]),
        "alias_db": None,
        "image_db": None,
    }
    one = np.ones(1)
    if in_rate > out_rate:
        worst = DB_FLOOR
        for f in np.linspace(1.02 * fn_lo, 0.98 * in_rate / 2, 12):
            y, _ = run(_tones(np.array([f]), one * TONE_LEVEL, np.zeros(1), n, in_rate))
            worst = max(worst, _db(np.sqrt(np.mean(y**2)) / (TONE_LEVEL / np.sqrt(2))))
        report["alias_db"] = worst
    if out_rate > in_rate:
        worst = DB_FLOOR
        for f in np.array([0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95]) * fn_lo:
            y, start = run(_tones(np.array([f]), one * TONE_LEVEL, np.zeros(1), n, in_rate))
            _, res = _fit(y, np.array([f]), out_rate, start)
            worst = max(worst, _db(np.sqrt(np.mean(res**2)) / (TONE_LEVEL / np.sqrt(2))))
        report["image_db"] = worst
    y, start = run(_tones(np.array([1000.0]), one * TONE_LEVEL, np.zeros(1), n, in_rate))
    amp, res = _fit(y, np.array([1000.0]), out_rate, start)
    report["snr_1k_db"] = _db(np.sqrt(np.mean(res**2)) / (abs(amp[0]) / np.sqrt(2)))
    return report
