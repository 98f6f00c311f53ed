"""Energy voice-activity detector over int16 PCM, u-law or A-law: features native, state in Python."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import numpy as np

from .. import _backend
from .._reference import vad as _layout
from ..errors import AudioFormatError, StreamClosedError

__all__ = [
    "BAND_FILTER_RATE_HZ",
    "BAND_HZ",
    "DEFAULT_SENSITIVITY",
    "ENCODINGS",
    "FEATURE_BAND",
    "FEATURE_ENERGY",
    "FEATURE_ZCR",
    "SUPPORTED_FRAME_MS",
    "SUPPORTED_RATES",
    "EnergyVad",
    "VadTuning",
    "band_decimation",
    "band_sos",
    "frame_features",
    "valid_rate_and_frame_ms",
]

_log = logging.getLogger(__name__)



_EMPTY_PCM: Final = np.zeros(0, np.int16)
_EMPTY_PCM.flags.writeable = False


def _speech(code: np.ndarray) -> np.ndarray:
    # Bit 0 of the kernel's uint8 decision code is speech; the bits above (onset look-back) are
    # only ever set on speech frames, so "non-zero" is "speech" (a test pins this).
    return code.astype(bool)

#: Sample rates the VAD accepts (the SIS audio formats).
SUPPORTED_RATES: Final = (8000, 16000)
#: Frame durations the VAD accepts (as webrtcvad).
SUPPORTED_FRAME_MS: Final = (10, 20, 30)
#: Input encodings: little-endian int16 PCM, G.711 u-law or A-law codes.
ENCODINGS: Final = ("pcm", "ulaw", "alaw")
#: Pass band of the band-energy feature: a 300 Hz high-pass, and the 4 kHz top of the 8 kHz
#: band (at 16 kHz the filter runs on means of sample pairs, see :func:`band_sos`).
BAND_HZ: Final = (300.0, 4000.0)
#: Rate the band filter runs at: 16 kHz input is decimated by 2 (two-tap mean) before it.
BAND_FILTER_RATE_HZ: Final = 8000
#: Default of ``EnergyVad(sensitivity=...)``.
DEFAULT_SENSITIVITY: Final = 0.5

#: Column of :func:`frame_features` output: frame energy, dBFS (0 dBFS = full-scale square).
FEATURE_ENERGY: Final = _layout.FEATURE_ENERGY
#: Column of :func:`frame_features` output: band-limited (300 Hz high-pass, see :func:`band_sos`)
#: energy, dBFS.
FEATURE_BAND: Final = _layout.FEATURE_BAND
#: Column of :func:`frame_features` output: zero-crossing rate (0..1).
FEATURE_ZCR: Final = _layout.FEATURE_ZCR


def valid_rate_and_frame_ms(rate_hz: int, frame_ms: int) -> bool:
    """Return True when the VAD accepts this rate and frame duration (cheap geometry check).

    Parameters
    ----------
    rate_hz : int
        Sample rate in Hz.
    frame_ms : int
        Frame duration in milliseconds.

    Returns
    -------
    bool
        ``rate_hz in SUPPORTED_RATES and frame_ms in SUPPORTED_FRAME_MS``.
    """
    return rate_hz in SUPPORTED_RATES and frame_ms in SUPPORTED_FRAME_MS


def _check_geometry(rate_hz: Any, frame_ms: Any) -> None:
    for name, value in (("rate_hz", rate_hz), ("frame_ms", frame_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if rate_hz not in SUPPORTED_RATES:
        raise AudioFormatError(f"rate_hz must be one of {SUPPORTED_RATES}, got {rate_hz}")
    if frame_ms not in SUPPORTED_FRAME_MS:
        raise AudioFormatError(f"frame_ms must be one of {SUPPORTED_FRAME_MS}, got {frame_ms}")


def _highpass(fc_hz: float, rate_hz: int) -> list[float]:
    # Second-order Butterworth high-pass by the bilinear transform with frequency pre-warping
    # (K = tan(pi fc / fs), Q = 1/sqrt(2)); identical to scipy.signal.butter(2, fc, "high", fs).
    k = math.tan(math.pi * fc_hz / rate_hz)
    q = 1.0 / math.sqrt(2.0)
    norm = 1.0 / (1.0 + k / q + k * k)
    a1 = 2.0 * (k * k - 1.0) * norm
    a2 = (1.0 - k / q + k * k) * norm
    return [norm, -2.0 * norm, norm, 1.0, a1, a2]


def band_decimation(rate_hz: int) -> int:
    """Decimation factor in front of the band filter: ``rate_hz // BAND_FILTER_RATE_HZ``.

    Parameters
    ----------
    rate_hz : int
        8000 or 16000.

    Returns
    -------
    int
        1 at 8 kHz, 2 at 16 kHz (the filter then sees ``(x[2m] + x[2m + 1]) / 2``).

    Raises
    ------
    AudioFormatError
        If `rate_hz` is not supported.
    """
    _check_geometry(rate_hz, 10)
    return rate_hz // BAND_FILTER_RATE_HZ


def band_sos(rate_hz: int) -> np.ndarray:
    """Second-order section of the band filter behind the band-energy feature.

    A 2nd-order Butterworth high-pass at 300 Hz designed for :data:`BAND_FILTER_RATE_HZ`
    (8 kHz): it rejects mains hum and its first harmonics (about -31 dB at 50 Hz). The top of
    the band is the 4 kHz Nyquist limit of that rate; at 16 kHz the input is first decimated by 2
    with a two-tap mean (:func:`band_decimation`: a zero at 8 kHz, -2 dB at 3.4 kHz), which
    halves the filter's work. The same coefficients serve both rates.

    Parameters
    ----------
    rate_hz : int
        8000 or 16000 (checked; the result does not depend on it).

    Returns
    -------
    numpy.ndarray
        float64 ``(1, 6)``, row ``[b0, b1, b2, 1, a1, a2]`` (scipy ``sos`` layout).

    Raises
    ------
    AudioFormatError
        If `rate_hz` is not supported.
    """
    _check_geometry(rate_hz, 10)
    return np.array([_highpass(BAND_HZ[0], BAND_FILTER_RATE_HZ)])


@dataclass(frozen=True)
class VadTuning:
    """Detector constants derived from ``sensitivity`` (see :meth:`from_sensitivity`).

    Attributes
    ----------
    on_db : float
        Entry threshold: band energy must exceed the noise floor by this much to enter speech.
        With `dev_factor` > 0 this is the threshold's lower bound (see below).
    off_db : float
        ... and stay above floor + `off_db` to remain in speech (hysteresis, ``off_db <= on_db``);
        when the threshold adapts, `off_db` moves with it (the gap ``on_db - off_db`` is kept).
    min_dbfs : float
        Absolute gate: frames whose band energy is below this are never speech.
    fall : float
        Floor smoothing factor (0..1] per 20 ms when a frame is below the floor.
    rise : float
        Floor smoothing factor (0..1] per 20 ms when a frame is above the floor and not speech.
        With `fall` of the same order the floor tracks the noise's *typical* level (not its
        minima).
    rise_max_db_per_s : float
        Cap on the floor's rise while in speech, dB per second (slow: speech must not become
        the floor).
    hangover_ms : int
        Speech is extended by this long after the detector falls silent.
    onset_ms : int
        Energy must stay above the entry threshold this long before speech is declared; the
        frames of that run are then reported as non-speech (the detector is causal).
    lookback_db : float
        Onset look-back: the frames just before an onset whose band energy was already
        `lookback_db` above the floor are counted (the onset of speech usually rises through
        the noise before it clears the threshold); :class:`sis_stream.audio.endpoint.Endpointer`
        moves a segment's start back over them.
    lookback_ms : int
        Longest onset look-back (at most 127 frames).
    on_max_db : float or None
        Upper bound of the adaptive entry threshold (None: `on_db`, a fixed threshold).
    dev_factor : float
        Adaptive entry threshold: `dev_factor` times the noise deviation (the smoothed
        ``|band - floor|`` of non-speech frames), clamped to [`on_db`, `on_max_db`]. Steady
        noise (white, hum) gets the low threshold, fluctuating noise (babble) the high one.
        0 disables it.
    dev_smoothing : float
        Smoothing factor (0..1] per 20 ms of the noise deviation.
    dev_init_db : float
        Noise deviation assumed at the first frame.
    hangover_quiet_ms : int or None
        Hangover on a quiet line: when the noise floor is at or below ``quiet_floor_dbfs[0]``
        the hangover is this, at or above ``quiet_floor_dbfs[1]`` it is `hangover_ms`, linear
        between (on a quiet line the detector itself follows speech down to the gate; a long
        hangover only adds the pauses between words). None: `hangover_ms` everywhere.
    quiet_floor_dbfs : tuple of float
        ``(lo, hi)`` noise floors of that interpolation, dBFS.
    hangover_low_snr_ms : int
        Added to the hangover when the speech level (the smoothed band energy of speech frames)
        is at most ``low_snr_margin_db[0]`` above the noise floor, none from
        ``low_snr_margin_db[1]`` up, linear between: at a low SNR the weak ends of words are
        lost in the noise. 0 disables it.
    low_snr_margin_db : tuple of float
        ``(lo, hi)`` speech-to-floor margins of that interpolation, dB.
    level_smoothing : float
        Smoothing factor (0..1] per 20 ms of the speech level.

    The smoothing factors are given per 20 ms and converted to the frame duration in use
    (``1 - (1 - a) ** (frame_ms / 20)``), so the time constants do not depend on it.
    """

    on_db: float
    off_db: float
    min_dbfs: float
    fall: float
    rise: float
    rise_max_db_per_s: float
    hangover_ms: int
    onset_ms: int
    lookback_db: float = 2.0
    lookback_ms: int = 200
    on_max_db: float | None = None
    dev_factor: float = 0.0
    dev_smoothing: float = 0.05
    dev_init_db: float = 2.0
    hangover_quiet_ms: int | None = None
    quiet_floor_dbfs: tuple[float, float] = (-68.0, -58.0)
    hangover_low_snr_ms: int = 0
    low_snr_margin_db: tuple[float, float] = (4.0, 10.0)
    level_smoothing: float = 0.1

    @classmethod
    def from_sensitivity(cls, sensitivity: float) -> VadTuning:
        """Map ``sensitivity`` in [0, 1] (1 = most speech) to the detector constants.

        Parameters
        ----------
        sensitivity : float
            0 is the most conservative detector (high thresholds), 1 the most eager.

        Returns
        -------
        VadTuning
        """
        # Tuned on benchmarks/bench_vad.py (espeak-ng speech in white/pink/babble/hum noise).
        # The floor follows the noise's typical level (fall 0.05, rise 0.03 per 20 ms: time
        # constants of 0.4 and 0.65 s); a minimum tracker (fast fall) sat under babble's dips.
        # The entry threshold is 3x the noise deviation within [on, on_max]: sensitivity 0.5
        # gives 3.5..7 dB (steady noise gets 3.5 dB, babble about 7), hysteresis 3 dB, gate
        # -65 dBFS, 150 ms hangover. Tuned on the "tune" half of the real-speech set (Asterisk
        # prompts, LibriVox): the hangover is 20 ms on a quiet line (floor <= -68 dBFS; 150 ms
        # from -58 dBFS up: clean recordings have short pauses between words) and up to 160 ms
        # longer when speech is less than 4-10 dB above the floor (low SNR).
        s = float(sensitivity)
        on = 4.5 - 2.0 * s
        return cls(
            on_db=on,
            off_db=on - 3.0,
            min_dbfs=-60.0 - 10.0 * s,
            fall=0.05,
            rise=0.03,
            rise_max_db_per_s=1.0,
            hangover_ms=150,
            onset_ms=0,
            lookback_db=2.0,
            lookback_ms=200,
            on_max_db=9.0 - 4.0 * s,
            dev_factor=3.0,
            dev_smoothing=0.05,
            dev_init_db=2.0,
            hangover_quiet_ms=20,
            quiet_floor_dbfs=(-68.0, -58.0),
            hangover_low_snr_ms=160,
            low_snr_margin_db=(4.0, 10.0),
            level_smoothing=0.1,
        )

    def params(self, frame_ms: int) -> np.ndarray:
        """The kernel's float64 parameter vector for frames of `frame_ms` milliseconds."""
        p = np.zeros(_layout.N_PARAMS)
        per_frame = frame_ms / 20.0
        p[_layout.P_ON_DB] = self.on_db
        p[_layout.P_OFF_DB] = self.off_db
        p[_layout.P_MIN_DBFS] = self.min_dbfs
        p[_layout.P_FALL] = 1.0 - (1.0 - self.fall) ** per_frame
        p[_layout.P_RISE] = 1.0 - (1.0 - self.rise) ** per_frame
        p[_layout.P_RISE_MAX_DB] = self.rise_max_db_per_s * frame_ms / 1000.0
        p[_layout.P_HANGOVER] = round(self.hangover_ms / frame_ms)
        p[_layout.P_ONSET] = max(1, round(self.onset_ms / frame_ms) + 1)
        p[_layout.P_LOOKBACK_DB] = self.lookback_db
        p[_layout.P_LOOKBACK_MAX] = min(_layout.MAX_LOOKBACK, round(self.lookback_ms / frame_ms))
        on_max = self.on_db if self.on_max_db is None else self.on_max_db
        p[_layout.P_ON_MAX_DB] = max(on_max, self.on_db)
        p[_layout.P_DEV_FACTOR] = self.dev_factor
        p[_layout.P_DEV_BETA] = 1.0 - (1.0 - self.dev_smoothing) ** per_frame
        p[_layout.P_DEV_INIT] = self.dev_init_db
        quiet = self.hangover_ms if self.hangover_quiet_ms is None else self.hangover_quiet_ms
        p[_layout.P_HANG_QUIET] = round(quiet / frame_ms)
        p[_layout.P_QUIET_LO_DBFS], p[_layout.P_QUIET_HI_DBFS] = self.quiet_floor_dbfs
        p[_layout.P_HANG_EXTRA] = round(self.hangover_low_snr_ms / frame_ms)
        p[_layout.P_MARGIN_LO_DB], p[_layout.P_MARGIN_HI_DB] = self.low_snr_margin_db
        p[_layout.P_LEVEL_BETA] = 1.0 - (1.0 - self.level_smoothing) ** per_frame
        return p


def as_pcm(chunk: Any, encoding: str, what: str) -> np.ndarray:
    """Validate one input chunk and return it as a contiguous int16 array (read-only is fine)."""
    if encoding == "pcm":
        if isinstance(chunk, np.ndarray):
            if chunk.dtype != np.int16:
                raise TypeError(f"{what}: PCM arrays must be int16, got {chunk.dtype}")
            if chunk.ndim != 1:
                raise AudioFormatError(f"{what}: PCM must be 1-D (mono), got shape {chunk.shape}")
            return np.ascontiguousarray(chunk)
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            n_bytes = memoryview(chunk).nbytes
            if n_bytes % 2:
                raise AudioFormatError(
                    f"{what}: int16 PCM bytes must have an even length, got {n_bytes} bytes"
                )
            return np.frombuffer(chunk, dtype="<i2").astype(np.int16, copy=False)
        raise TypeError(
            f"{what}: expected an int16 numpy array or bytes-like PCM, got {type(chunk).__name__}"
        )
    from . import codec  # G.711 lives in the codec module (validation + backend kernels)

    if isinstance(chunk, np.ndarray):
        if chunk.dtype != np.uint8:
            raise TypeError(f"{what}: {encoding} code arrays must be uint8, got {chunk.dtype}")
        if chunk.ndim != 1:
            raise AudioFormatError(f"{what}: codes must be 1-D (mono), got shape {chunk.shape}")
        codes = np.ascontiguousarray(chunk)
    elif isinstance(chunk, (bytes, bytearray, memoryview)):
        codes = np.frombuffer(chunk, dtype=np.uint8)
    else:
        raise TypeError(
            f"{what}: expected a uint8 numpy array or bytes-like {encoding} codes, "
            f"got {type(chunk).__name__}"
        )
    decode = codec.ulaw_decode if encoding == "ulaw" else codec.alaw_decode
    return decode(codes)


def frame_features(pcm: np.ndarray, rate_hz: int, frame_ms: int = 10) -> np.ndarray:
    """Per-frame features of a whole int16 signal (one-shot; the filter starts from rest).

    Parameters
    ----------
    pcm : numpy.ndarray
        int16 mono PCM; a trailing partial frame is ignored.
    rate_hz : int
        8000 or 16000.
    frame_ms : int, optional
        10, 20 or 30.

    Returns
    -------
    numpy.ndarray
        float64 ``(n_frames, 3)``: columns :data:`FEATURE_ENERGY` (dBFS),
        :data:`FEATURE_BAND` (dBFS, 300 Hz high-pass, see :func:`band_sos`) and
        :data:`FEATURE_ZCR`.

    Raises
    ------
    TypeError
        If `pcm` is not an int16 array.
    AudioFormatError
        If the rate or frame duration is not supported, or `pcm` is not 1-D.
    """
    _check_geometry(rate_hz, frame_ms)
    x = as_pcm(pcm, "pcm", "frame_features")
    frame_len = rate_hz * frame_ms // 1000
    out = np.empty((len(x) // frame_len, _layout.N_FEATURES))
    sos = band_sos(rate_hz).ravel()
    zi = np.zeros(len(sos) // 3)
    _backend.vad.frame_features(x, frame_len, band_decimation(rate_hz), sos, zi, out)
    return out


class EnergyVad:
    """Streaming energy VAD: adaptive noise floor, hysteresis, onset run and hangover.

    Every complete frame gets one decision. A frame is speech when its band-limited
    (:func:`band_sos`) energy rises above a tracked noise floor by a threshold that adapts to
    how much the noise fluctuates (and above an absolute gate); it stays speech while the
    energy is above a lower, hysteresis threshold; after it falls silent the
    decision stays True for the hangover. The noise floor follows the noise's typical level
    (time constants of about half a second, see :class:`VadTuning`) and its rise is capped while
    in speech, so it adapts to stationary noise (hum, fan, line noise) and to babble within a
    second and does not climb into long utterances. :meth:`process_onsets` also reports, per
    onset, how many frames before it the energy had already started rising (the Endpointer
    moves segment starts back by that much).

    The feature kernel and the decision loop run natively (``sis_stream._native.vad``) or on
    their numpy twins; all state (filter state, floor, hysteresis, hangover, the buffered
    partial frame) lives in this object, so a stream split into any chunks gives the same
    decisions as one call.

    Parameters
    ----------
    rate_hz : int
        8000 or 16000.
    frame_ms : int, optional
        10 (default), 20 or 30.
    sensitivity : float, optional
        0..1 (default 0.5): higher finds more speech (lower thresholds). Ignored when `tuning`
        is given.
    encoding : {"pcm", "ulaw", "alaw"}, optional
        Input encoding of :meth:`process`: little-endian int16 PCM (an int16 array or bytes),
        or G.711 codes (a uint8 array or bytes), decoded with :mod:`sis_stream.audio.codec`.
    tuning : VadTuning, optional
        Explicit detector constants (overrides `sensitivity`).

    Raises
    ------
    TypeError
        If `rate_hz`/`frame_ms` are not ints or `sensitivity` is not a real number.
    AudioFormatError
        If the rate, frame duration or encoding is not supported.
    ValueError
        If `sensitivity` is outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> vad = EnergyVad(16000, frame_ms=10)
    >>> vad.process(np.zeros(480, np.int16)).tolist()
    [False, False, False]
    """

    def __init__(
        self,
        rate_hz: int,
        frame_ms: int = 10,
        sensitivity: float = DEFAULT_SENSITIVITY,
        *,
        encoding: str = "pcm",
        tuning: VadTuning | None = None,
    ) -> None:
        _check_geometry(rate_hz, frame_ms)
        if isinstance(sensitivity, bool) or not isinstance(sensitivity, (int, float, np.floating)):
            raise TypeError(f"sensitivity must be a real number, got {type(sensitivity).__name__}")
        if not 0.0 <= float(sensitivity) <= 1.0:
            raise ValueError(f"sensitivity must be in [0, 1], got {sensitivity}")
        if encoding not in ENCODINGS:
            raise AudioFormatError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.rate_hz: Final = int(rate_hz)
        self.frame_ms: Final = int(frame_ms)
        #: Samples per frame.
        self.frame_len: Final = self.rate_hz * self.frame_ms // 1000
        self.encoding: Final = encoding
        self.sensitivity: Final = float(sensitivity)
        self.tuning: Final = tuning if tuning is not None else VadTuning.from_sensitivity(sensitivity)
        self._sos = band_sos(self.rate_hz).ravel()
        self._decim = band_decimation(self.rate_hz)
        self._params = self.tuning.params(self.frame_ms)
        self.reset()

    def reset(self) -> None:
        """Forget all state (filter, noise floor, pending samples): ready for a new stream."""
        self._zi = np.zeros(len(self._sos) // 3)
        self._state = np.zeros(_layout.N_STATE)
        self._pending = _EMPTY_PCM
        self._band = np.empty(0)
        self._code = np.empty(0, np.uint8)
        self._closed = False
        # What the compiled front-end of process() reads (sis_stream._native.vad): the kernel's
        # fixed arguments and the arrays it updates in place. _fast is _kargs while a PCM
        # stream is open with no partial frame buffered, else None (then every call runs here).
        self._kargs = (self.frame_len, self._decim, self._sos, self._zi, self._params,
                       self._state)
        self._fast = self._kargs if self.encoding == "pcm" else None

    @property
    def frames_done(self) -> int:
        """Frames decided since the last :meth:`reset`."""
        return int(self._state[_layout.S_NFRAMES])  # the detector counts them

    @property
    def pending_samples(self) -> int:
        """Samples buffered in the incomplete last frame (always < ``frame_len``)."""
        return len(self._pending)

    @property
    def max_lookback_frames(self) -> int:
        """Largest onset look-back :meth:`process_onsets` reports, frames."""
        return int(self._params[_layout.P_LOOKBACK_MAX])

    @property
    def noise_floor_dbfs(self) -> float:
        """Current noise-floor estimate of the band energy, dBFS (NaN before the first frame)."""
        return float(self._state[_layout.S_FLOOR]) if self.frames_done else math.nan

    def process(self, chunk: Any) -> np.ndarray:
        """Decide every frame completed by `chunk`; buffer the rest.

        Parameters
        ----------
        chunk : numpy.ndarray or bytes-like
            Audio in the VAD's `encoding` (int16 array / PCM bytes, or uint8 array / G.711
            bytes), any length, including empty.

        Returns
        -------
        numpy.ndarray
            bool, one decision per frame completed by this call (True = speech).

        Raises
        ------
        StreamClosedError
            After :meth:`flush` (call :meth:`reset` to start again).
        TypeError
            Wrong type or dtype.
        AudioFormatError
            Not 1-D, or PCM bytes of odd length.
        """
        if self._closed:
            raise StreamClosedError("EnergyVad.process() after flush(); call reset() first")
        x = as_pcm(chunk, self.encoding, "EnergyVad.process")
        return _speech(self._decide(x)[0])

    def process_features(self, chunk: Any) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`process`, also returning the frames' features (for analysis and tuning).

        Returns
        -------
        decisions : numpy.ndarray
            bool, one per completed frame.
        features : numpy.ndarray
            float64 ``(n_frames, 3)``, columns as :func:`frame_features`.
        """
        if self._closed:
            raise StreamClosedError("EnergyVad.process() after flush(); call reset() first")
        code, feat = self._decide(as_pcm(chunk, self.encoding, "EnergyVad.process"), True)
        assert feat is not None  # features=True always returns them
        return _speech(code), feat

    def process_onsets(self, chunk: Any) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`process`, also returning each onset's look-back (for endpointing).

        Returns
        -------
        decisions : numpy.ndarray
            bool, one per completed frame.
        lookback : numpy.ndarray
            int, one per completed frame: on a frame where the detector enters speech, how many
            frames just before it already had band energy `lookback_db` above the noise floor
            (at most ``lookback_ms``); 0 elsewhere. Speech started that many frames earlier.
        """
        if self._closed:
            raise StreamClosedError("EnergyVad.process() after flush(); call reset() first")
        code = self._decide(as_pcm(chunk, self.encoding, "EnergyVad.process"))[0]
        return _speech(code), (code >> _layout.DECISION_LOOKBACK_SHIFT).astype(np.intp)

    def flush(self) -> np.ndarray:
        """End the stream: decide the buffered partial frame, zero-padded, if there is one.

        Returns
        -------
        numpy.ndarray
            bool, zero or one decision.
        """
        if self._closed:
            return np.zeros(0, bool)
        out = np.zeros(0, bool)
        if len(self._pending):
            pad = np.zeros(self.frame_len - len(self._pending), np.int16)
            out = _speech(self._decide(pad)[0])
        self._closed = True
        self._fast = None
        return out

    def _decide(self, x: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        if len(self._pending):
            x = np.concatenate((self._pending, x))
        n = len(x) // self.frame_len
        feat = None
        if n > len(self._code):  # internal scratch, grown on demand (callers get copies)
            self._band = np.empty(n)
            self._code = np.empty(n, np.uint8)
        band, code = self._band, self._code
        kernels = _backend.vad  # looked up at call time (the backend fixture swaps it)
        if features:
            feat = np.empty((n, _layout.N_FEATURES))
            if n:
                kernels.frame_features(x, self.frame_len, self._decim, self._sos, self._zi, feat)
                band[:n] = feat[:, _layout.FEATURE_BAND]
                kernels.energy_decide(band[:n], self._params, self._state, code)
        elif n:
            kernels.band_decide(x, self.frame_len, self._decim, self._sos, self._zi,
                                self._params, self._state, band, code)
        # Copy the tail so the caller's buffer is not kept alive (and can be reused).
        rest = len(x) - n * self.frame_len
        self._pending = np.array(x[n * self.frame_len :], np.int16) if rest else _EMPTY_PCM
        self._fast = None if rest or self.encoding != "pcm" else self._kargs
        # A view of the scratch buffer: every caller turns it into a new array at once.
        return code[:n], feat


#: The Python EnergyVad.process (what the compiled front-end hands every other call to).
_PY_PROCESS: Final = EnergyVad.process


def native_vad() -> ModuleType | None:
    """The compiled VAD kernel module if ``_backend`` selected it at import, else None."""
    if _backend.NO_EXTENSIONS or "vad" in _backend.NATIVE_IMPORT_ERRORS:
        return None
    return _backend.vad


def _bind_front_end(native: ModuleType) -> Callable[..., np.ndarray]:
    """Give the native module the Python method and return its front-end, dressed as the method.

    A Python frame around one 20 ms frame's arithmetic costs several times that arithmetic, so
    when ``_backend`` selected the compiled kernel at import, ``EnergyVad.process`` is the
    kernel module's compiled front-end: it runs the hot case (a PCM stream with no partial frame
    pending, an int16 ndarray or PCM bytes of 1 to 16 whole frames, ``_backend.vad`` still
    native) in C and hands every other call to the Python method above, so semantics are the
    method's.
    """
    native._bind_vad_front_end(_backend.__dict__, native, _PY_PROCESS)
    front = native._vad_process_front
    front.__name__ = "process"
    front.__qualname__ = "EnergyVad.process"
    front.__module__ = __name__
    front.__doc__ = _PY_PROCESS.__doc__
    front.__wrapped__ = _PY_PROCESS  # inspect.signature() and help() show the method's
    return front


if (_native := native_vad()) is not None:
    EnergyVad.process = _bind_front_end(_native)  # type: ignore[method-assign]
del _native
