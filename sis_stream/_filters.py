"""Low-pass filter design for the polyphase resampler (Kaiser-windowed sinc, numpy only), cached."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np

from .errors import AudioFormatError

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
        Kaiser design attenuation A (dB); beta follows Kaiser's formula ``0.1102 * (A - 8.7)``.
    half_length : float
        Half the prototype length, in samples at the lower of the two rates (latency).
    cutoff : float
        Sinc cut-off as a fraction of the lower Nyquist.
    passband_edge : float
        Frequency (fraction of the lower Nyquist) up to which the gain stays within
        ``passband_min_db``; what the quality tests check.
    passband_min_db : float
        Lowest gain (dB) allowed at ``passband_edge``.
    """

    name: str
    stopband_db: float
    half_length: float
    cutoff: float
    passband_edge: float
    passband_min_db: float

    @property
    def beta(self) -> float:
        """Kaiser window beta for ``stopband_db`` (Kaiser 1974; valid for A > 50 dB)."""
        return 0.1102 * (self.stopband_db - 8.7)


# Parameters found by a search over (half_length, cutoff) at the 8k <-> 16k prototype: the
# shortest filter whose stopband from 1.0 x Nyquist stays below -stopband_db while the gain at
# passband_edge stays above passband_min_db (docs/resample.md has the measured figures).
QUALITIES: Final[dict[str, QualitySpec]] = {
    # Stopband from 1.0 x Nyquist below -110 dB (no aliasing into the band), -0.05 dB at 0.9 x.
    "hq": QualitySpec("hq", stopband_db=110.0, half_length=61.0, cutoff=0.940,
                      passband_edge=0.9, passband_min_db=-0.1),
    # Half the taps and half the latency: -75 dB stopband, -0.1 dB at 0.85 x (3.4 kHz at 8 kHz).
    "telephony": QualitySpec("telephony", stopband_db=75.0, half_length=30.0, cutoff=0.912,
                             passband_edge=0.85, passband_min_db=-0.1),
}


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


@lru_cache(maxsize=64)
def design(in_rate: int, out_rate: int, quality: str = "hq") -> PolyphaseFilter:
    """Design (once per arguments; cached) the polyphase filter for `in_rate` -> `out_rate`.

    The prototype is a Kaiser-windowed sinc at ``up * in_rate`` with cut-off
    ``spec.cutoff * f_n`` (``f_n`` the lower Nyquist), odd length
    ``2 * ceil(spec.half_length * max(up, down)) + 1`` (so its centre is a whole up-sampled
    sample), normalised to gain ``up`` at DC (each phase then has unit gain).

    Parameters
    ----------
    in_rate, out_rate : int
        A supported pair with different rates.
    quality : str
        A key of :data:`QUALITIES`.

    Returns
    -------
    PolyphaseFilter

    Raises
    ------
    AudioFormatError, TypeError, ValueError
        As :func:`check_pair` and :func:`check_quality`.
    """
    in_rate, out_rate = check_pair(in_rate, out_rate)
    spec = check_quality(quality)
    if in_rate == out_rate:
        raise ValueError("equal rates need no filter (the resampler passes them through)")
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    # Up-sampled samples per lower-rate sample: F / (2 f_n) = max(up, down).
    ratio = max(up, down)
    half = math.ceil(spec.half_length * ratio)
    n = np.arange(-half, half + 1, dtype=np.float64)
    fc = spec.cutoff / (2 * ratio)  # cycles per up-sampled sample
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(2 * half + 1, spec.beta)
    h *= up / h.sum()
    k = -(-(2 * half + 1) // up)  # ceil(N / up)
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
