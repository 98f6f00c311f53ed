"""Sample-rate conversion: a streaming polyphase resampler and a one-shot function."""

from __future__ import annotations

import logging
import math
from array import array
from collections.abc import Callable
from types import ModuleType
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _backend
from ._filters import (
    INPUT_RATES,
    OUTPUT_RATES,
    QUALITIES,
    SUPPORTED_PAIRS,
    PolyphaseFilter,
    check_pair,
    check_quality,
    plan,
)
from ..errors import AudioFormatError, StreamClosedError

__all__ = [
    "INPUT_RATES",
    "OUTPUT_RATES",
    "QUALITIES",
    "SUPPORTED_PAIRS",
    "StreamResampler",
    "output_length",
    "resample",
]

log = logging.getLogger(__name__)

_INT16: Final = np.dtype(np.int16)
_FLOAT32: Final = np.dtype(np.float32)
_DTYPE_ERR: Final = "StreamResampler({}) expects a 1-D numpy.ndarray of dtype {}, got {}"
# The stream's counters, one int64 array (StreamResampler._state) so that the compiled
# front-end of process() reads and updates them in place: the next output's up-sampled
# position relative to the next chunk, input samples, output samples, saturated samples.
_PHASE, _N_IN, _N_OUT, _CLIPS = range(4)
#: Input samples per kernel call in the one-shot path (keeps the working set in cache).
_ONESHOT_BLOCK: Final = 32768


def output_length(n_in: int, in_rate: int, out_rate: int) -> int:
    """Number of output samples for `n_in` input samples: ``round(n_in * out_rate / in_rate)``.

    Halves round up, as soxr does. This is the one length formula: ``resample`` returns this
    many samples, and so do ``StreamResampler.process`` calls plus ``flush`` together, however
    the input was chunked. Exact integer arithmetic for any length.

    Parameters
    ----------
    n_in : int
        Input samples (>= 0).
    in_rate, out_rate : int
        Sample rates (Hz, > 0).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If `n_in` is negative or a rate is not positive.
    """
    if n_in < 0 or in_rate <= 0 or out_rate <= 0:
        raise ValueError(
            f"output_length expects n_in >= 0 and rates > 0, got {n_in}, {in_rate}, {out_rate}"
        )
    return (2 * n_in * out_rate + in_rate) // (2 * in_rate)


class _Stage:
    # One stage of a multi-stage cascade ahead of the last one (a half-band decimator): its
    # filter, explicit kernel state (history, phase) and scratch; float32 output.
    __slots__ = ("filter", "up", "down", "taps", "k", "history", "phase", "scratch", "cap", "z")

    def __init__(self, f: PolyphaseFilter) -> None:
        self.filter = f
        self.up, self.down, self.taps, self.k = f.up, f.down, f.taps, f.taps_per_phase
        self.history = np.zeros(self.k - 1, np.float32)
        self.scratch = np.empty(0, np.float32)
        self.z = np.empty(0, np.float32)  # output buffer, reused (never leaves the resampler)
        self.cap = -1
        self.phase = f.centre

    def reset(self) -> None:
        self.history.fill(0.0)
        self.phase = self.filter.centre

    def needed(self, n_out: int) -> int:
        # Input samples this stage needs to produce n_out (> 0) more outputs.
        return (self.phase + (n_out - 1) * self.down) // self.up + 1

    def run(self, x: np.ndarray, n_out: int = -1) -> np.ndarray:
        # All available outputs of chunk x (or exactly n_out of them) as float32: a view of
        # this stage's buffer, valid until its next run.
        n = len(x)
        if n_out < 0:
            span = n * self.up - self.phase
            n_out = (span + self.down - 1) // self.down if span > 0 else 0
        if n > self.cap or n_out > len(self.z):
            self.cap = max(n, 2 * self.cap, 512)
            n_out_max = -(-(self.cap * self.up) // self.down) + 1
            self.scratch = np.empty(
                _backend.resample.scratch_length(self.cap, self.k, self.down, n_out_max),
                np.float32,
            )
            self.z = np.empty(max(n_out_max, n_out), np.float32)
        z = self.z[:n_out]
        _, self.phase, _ = _backend.resample.polyphase_process(
            x, self.taps, self.history, self.scratch, self.phase, self.up, self.down, z
        )
        return z


def _outputs_available(n_in: int, phase: int, up: int, down: int) -> int:
    # Outputs the kernel can produce from a chunk of n_in samples when the next output sits at
    # up-sampled position `phase` (relative to the chunk): count of j >= 0 with
    # phase + j * down < n_in * up, i.e. those whose window ends inside the chunk.
    span = n_in * up - phase
    return (span + down - 1) // down if span > 0 else 0


class StreamResampler:
    """Streaming sample-rate converter (rational polyphase FIR), mono.

    Feed chunks of any length to :meth:`process`; each call returns the output samples that
    are complete so far. :meth:`flush` ends the stream and returns the rest. The output is
    delay-compensated (sample 0 of the output is aligned with sample 0 of the input, as with
    soxr), and over a whole stream the total number of output samples equals
    :func:`output_length` of the total input, so the concatenated output is bit-identical to
    :func:`resample` of the concatenated input for every chunking.

    Parameters
    ----------
    in_rate : int
        Input rate (Hz): one of 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000.
    out_rate : int
        Output rate (Hz): 8000 or 16000. Equal rates pass samples through unchanged.
    quality : {"hq", "telephony"}
        ``"hq"``: passband flat to 0.01 dB up to 0.8 x the lower Nyquist, above -0.1 dB at
        0.9 x, stopband from the Nyquist up (no aliasing) below -102 dB for float32 output
        and -90 dB for int16 (whose rounding noise is about -92 dB; measured at or below soxr
        HQ's int16 figures); group delay at 8k <-> 16k 5.2 ms (float32) / 4.7 ms (int16).
        ``"telephony"``: -0.1 dB at 0.85 x, -75 dB stopband, 3.0 ms at 8k <-> 16k, under 2/3
        of the hq taps. Equiripple designs, except the 11.025 kHz family (Kaiser). Large
        down-sampling ratios (``in_rate >= 2.5 * out_rate``) run as a cascade of half-band
        decimators and one rational stage (:func:`sis_stream.audio._filters.plan`).
        ``docs/resample.md`` has the measured figures next to soxr's.
    dtype : numpy.int16 or numpy.float32
        Sample type of both the input chunks and the output. int16 output is rounded to the
        nearest integer (halves to even) and saturated; saturated samples are counted in
        :attr:`clips`. float32 is never clipped.

    Raises
    ------
    TypeError
        A rate is not an int, `quality` is not a str, or `dtype` is not int16/float32.
    AudioFormatError
        The rate pair is not supported (the message lists the supported pairs).
    ValueError
        Unknown `quality`.

    Examples
    --------
    >>> rs = StreamResampler(8000, 16000, dtype=np.int16)
    >>> frames = [np.zeros(160, np.int16)] * 50            # one second in 20 ms frames
    >>> out = [rs.process(f) for f in frames] + [rs.flush()]
    >>> sum(map(len, out))
    16000
    """

    __slots__ = (
        "in_rate",
        "out_rate",
        "quality",
        "dtype",
        "_filter",
        "_pre",
        "_passthrough",
        "_up",
        "_down",
        "_taps",
        "_k",
        "_history",
        "_scratch",
        "_cap",
        "_state",
        "_closed",
        "_plan",
    )

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        quality: str = "hq",
        dtype: DTypeLike = np.int16,
    ) -> None:
        self.in_rate, self.out_rate = check_pair(in_rate, out_rate)
        self.quality: str = check_quality(quality).name
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be numpy.int16 or numpy.float32, got {dtype!r}") from None
        if dt not in (_INT16, _FLOAT32):
            raise TypeError(f"dtype must be numpy.int16 or numpy.float32, got {dt}")
        #: Sample type of input chunks and output (``numpy.dtype``).
        self.dtype: np.dtype = _INT16 if dt == _INT16 else _FLOAT32
        self._passthrough = self.in_rate == self.out_rate
        self._filter: PolyphaseFilter | None = None
        # Half-band stages ahead of the last one (large down-sampling ratios; plan()).
        self._pre: tuple[_Stage, ...] = ()
        if self._passthrough:
            self._up = self._down = 1
            self._taps = np.ones((1, 1), np.float32)
            self._k = 1
        else:
            *pre, self._filter = plan(self.in_rate, self.out_rate, self.quality, self.dtype)
            self._pre = tuple(_Stage(f) for f in pre)
            self._up, self._down = self._filter.up, self._filter.down
            self._taps = self._filter.taps
            self._k = self._filter.taps_per_phase
        self._history = np.zeros(self._k - 1, np.float32)
        self._scratch = np.empty(0, np.float32)
        self._cap = -1  # longest chunk the scratch buffer is sized for
        self._plan: object = None
        self.reset()

    # -- stream verbs -------------------------------------------------------------------------

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample one chunk; return the output samples completed by it.

        Parameters
        ----------
        chunk : numpy.ndarray
            1-D array of :attr:`dtype` (exactly; no implicit conversion), any length including
            0. Read-only arrays (``numpy.frombuffer``) are fine; non-contiguous ones are copied.

        Returns
        -------
        numpy.ndarray
            New array of :attr:`dtype`. Its length varies from call to call (the filter holds
            back about :attr:`delay` samples until :meth:`flush`).

        Raises
        ------
        StreamClosedError
            After :meth:`flush` (call :meth:`reset` to start a new stream).
        TypeError
            `chunk` is not a numpy array of :attr:`dtype`.
        AudioFormatError
            `chunk` is not 1-D.
        """
        # Every check, any configuration. With the native kernel, the hot case (an open stream,
        # a 1-D contiguous chunk of the right dtype, buffers big enough) never gets here: the
        # compiled front-end bound at the end of this module runs it in C.
        if self._closed:
            raise StreamClosedError("process() after flush(); call reset() to start a new stream")
        dt = self.dtype
        if type(chunk) is not np.ndarray or chunk.dtype is not dt:
            self._check_slow(chunk)
        if self._passthrough:
            return self._process_odd(chunk)
        try:
            n = len(chunk)
        except TypeError:  # 0-d array
            raise AudioFormatError(f"expected a mono 1-D chunk, got shape {chunk.shape}") from None
        x = chunk
        try:
            # The kernel validates before it touches any state: a chunk the first stage
            # refuses (non-contiguous) changes nothing and goes to _process_odd.
            for stage in self._pre:
                x = stage.run(x)
            state = self._state
            phase, up, down = state[_PHASE], self._up, self._down
            span = len(x) * up - phase
            n_out = (span + down - 1) // down if span > 0 else 0  # _outputs_available, inlined
            out = np.empty(n_out, dt)
            if len(x) > self._cap:
                self._grow(len(x))
            _, state[_PHASE], clips = _backend.resample.polyphase_process(
                x, self._taps, self._history, self._scratch, phase, up, down, out
            )
        except ValueError:
            return self._process_odd(chunk)
        state[_N_IN] += n
        state[_N_OUT] += n_out
        if clips:
            state[_CLIPS] += clips
        return out

    def flush(self) -> np.ndarray:
        """End the stream: return the held-back output samples.

        Afterwards the total output equals :func:`output_length` of the total input.

        Returns
        -------
        numpy.ndarray
            The remaining samples (:attr:`dtype`).

        Raises
        ------
        StreamClosedError
            If the stream was already flushed.
        """
        if self._closed:
            raise StreamClosedError("flush() after flush(); call reset() to start a new stream")
        self._closed = True
        self._plan = None
        state = self._state
        remaining = output_length(state[_N_IN], self.in_rate, self.out_rate) - state[_N_OUT]
        if remaining <= 0 or self._passthrough:
            return np.empty(0, self.dtype)
        # Zeros after the end: just enough for the last output's window, then `out` takes the
        # exact remainder (the kernel computes len(out) outputs). With a cascade, each earlier
        # stage makes exactly the samples the next one needs, from just enough zeros.
        need = (state[_PHASE] + (remaining - 1) * self._down) // self._up + 1
        wants: list[int] = []  # outputs each earlier stage must make
        for st in reversed(self._pre):
            wants.insert(0, need)
            need = st.needed(need)
        x = np.zeros(need, self.dtype)
        for st, want in zip(self._pre, wants):
            x = st.run(x, want)
        out = np.empty(remaining, self.dtype)
        self._run(x, out)
        state[_N_OUT] += remaining
        return out

    def reset(self) -> None:
        """Forget all input and start a new stream with the same configuration (also after flush)."""
        self._history.fill(0.0)
        for st in self._pre:
            st.reset()
        # Output 0 sits at the prototype's centre: the up-sampled position `centre` (relative
        # to input sample 0) is what aligns output and input (delay compensation).
        self._state = array("q", (self._filter.centre if self._filter is not None else 0, 0, 0, 0))
        self._closed = False
        self._bind_plan()

    # -- properties ---------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        """Group delay of the filter (cascade) in output samples (0.0 for a pass-through).

        A chunk's input shows up in the output this many samples later; :meth:`flush`
        returns the held-back tail. The output itself is delay-compensated.
        """
        if self._filter is None:
            return 0.0
        return self._filter.delay + sum(
            st.filter.delay * self.out_rate / st.filter.out_rate for st in self._pre
        )

    @property
    def clips(self) -> int:
        """Output samples saturated to the int16 range so far (always 0 for float32)."""
        return self._state[_CLIPS]

    @property
    def closed(self) -> bool:
        """True after :meth:`flush` until :meth:`reset`."""
        return self._closed

    @property
    def samples_in(self) -> int:
        """Input samples consumed since the last reset."""
        return self._state[_N_IN]

    @property
    def samples_out(self) -> int:
        """Output samples returned since the last reset."""
        return self._state[_N_OUT]

    @property
    def taps_per_phase(self) -> int:
        """Taps per output sample (a cascade's stages together, rounded up).

        The multiply-adds per output, except that the kernel skips the zero taps (every second
        one) of a cascade's half-band stages.
        """
        return self._k + math.ceil(
            sum(st.k * st.filter.out_rate / self.out_rate for st in self._pre)
        )

    def __repr__(self) -> str:
        return (
            f"StreamResampler({self.in_rate}, {self.out_rate}, quality={self.quality!r}, "
            f"dtype=numpy.{self.dtype.name})"
        )

    # -- internals ----------------------------------------------------------------------------

    def _check_slow(self, chunk: object) -> None:
        # The fast path compares dtype identity; equal-but-distinct dtype objects land here.
        if not isinstance(chunk, np.ndarray):
            raise TypeError(
                _DTYPE_ERR.format(self.dtype.name, self.dtype.name, type(chunk).__name__)
            )
        if chunk.dtype != self.dtype:
            raise TypeError(
                _DTYPE_ERR.format(self.dtype.name, self.dtype.name, f"dtype {chunk.dtype}")
            )

    def _process_odd(self, chunk: np.ndarray) -> np.ndarray:
        # Off the hot path: pass-through, wrong shape, non-contiguous input.
        if chunk.ndim != 1:
            raise AudioFormatError(f"expected a mono 1-D chunk, got shape {chunk.shape}")
        if self._passthrough:
            self._state[_N_IN] += len(chunk)
            self._state[_N_OUT] += len(chunk)
            return np.array(chunk, copy=True)
        if not chunk.flags.c_contiguous:
            return self.process(np.ascontiguousarray(chunk))
        raise RuntimeError("resampling kernel rejected a valid chunk")  # pragma: no cover

    def _grow(self, n: int) -> None:
        # Scratch for chunks of up to `cap` samples (and the outputs they can produce).
        cap = max(n, 2 * self._cap, 512)
        n_out_max = -(-(cap * self._up) // self._down) + 1
        need = _backend.resample.scratch_length(cap, self._k, self._down, n_out_max)
        self._scratch = np.empty(need, np.float32)
        self._cap = cap
        if self._plan is not None:
            self._bind_plan()

    def _bind_plan(self) -> None:
        # What the compiled front-end of process() runs in C (native/resample.pyx _StreamPlan):
        # this open stream's dtype, stages, arrays and counters, read in one attribute; None
        # (every call to the Python method) for a pass-through, after flush, or when the
        # compiled kernel was not selected at import. Rebuilt whenever one of its arrays is
        # replaced (reset: the counters, _grow: the scratch).
        if _STREAM_PLAN is None or self._passthrough or self._closed:
            self._plan = None
        else:
            self._plan = _STREAM_PLAN(self.dtype, self._pre, self._taps, self._history,
                                      self._scratch, self._up, self._down, self._state)

    def _run(self, chunk: np.ndarray, out: np.ndarray) -> None:
        # One kernel call producing exactly len(out) outputs (<= available).
        if len(chunk) > self._cap:
            self._grow(len(chunk))
        state = self._state
        _, state[_PHASE], clips = _backend.resample.polyphase_process(
            chunk, self._taps, self._history, self._scratch, state[_PHASE], self._up,
            self._down, out,
        )
        state[_CLIPS] += clips

    def _oneshot(self, x: np.ndarray) -> np.ndarray:
        # Whole signal into one preallocated output, block by block, then the flush tail.
        total = output_length(len(x), self.in_rate, self.out_rate)
        y = np.empty(total, self.dtype)
        if self._passthrough:
            y[:] = x
            self._closed = True
            return y
        if self._pre:
            parts = [self.process(x[lo : lo + _ONESHOT_BLOCK])
                     for lo in range(0, len(x), _ONESHOT_BLOCK)]
            y[:] = np.concatenate(parts + [self.flush()])
            return y
        pos = 0
        for lo in range(0, len(x), _ONESHOT_BLOCK):
            block = x[lo : lo + _ONESHOT_BLOCK]
            n_out = _outputs_available(len(block), self._state[_PHASE], self._up, self._down)
            self._state[_N_IN] += len(block)
            self._run(block, y[pos : pos + n_out])
            pos += n_out
        self._state[_N_OUT] = pos
        y[pos:] = self.flush()
        return y


def resample(x: ArrayLike, in_rate: int, out_rate: int, quality: str = "hq") -> np.ndarray:
    """Resample a whole mono signal at once.

    Same filter and the same samples as a :class:`StreamResampler` fed the signal in any
    chunking and flushed.

    Parameters
    ----------
    x : array_like
        1-D signal. int16 input gives int16 output (rounded, saturated); any floating-point
        input is **converted to float32** and gives float32 output. Other dtypes are refused.
    in_rate, out_rate : int
        A supported pair (see :class:`StreamResampler`).
    quality : {"hq", "telephony"}
        Filter preset.

    Returns
    -------
    numpy.ndarray
        ``output_length(len(x), in_rate, out_rate)`` samples, delay-compensated.

    Raises
    ------
    TypeError
        `x` has an integer dtype other than int16, or a non-numeric dtype.
    AudioFormatError
        `x` is not 1-D, or the rate pair is not supported.
    ValueError
        Unknown `quality`.

    Examples
    --------
    >>> t = np.arange(48000) / 48000
    >>> y = resample(np.sin(2 * np.pi * 1000 * t), 48000, 16000)
    >>> y.dtype, len(y)
    (dtype('float32'), 16000)
    """
    arr = np.asarray(x)
    if arr.dtype == _INT16:
        dt = _INT16
    elif arr.dtype.kind == "f":
        dt = _FLOAT32
    else:
        raise TypeError(
            f"resample expects int16 or floating-point samples, got dtype {arr.dtype} "
            "(convert explicitly: the scale of other integer types is ambiguous)"
        )
    if arr.ndim != 1:
        raise AudioFormatError(f"expected a mono 1-D signal, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dt)
    return StreamResampler(in_rate, out_rate, quality, dt)._oneshot(arr)


#: The Python StreamResampler.process (what the compiled front-end hands every other call to).
_PY_PROCESS: Final = StreamResampler.process


def _native_resample() -> ModuleType | None:
    """The compiled resample kernel module if ``_backend`` selected it at import, else None."""
    if _backend.NO_EXTENSIONS or "resample" in _backend.NATIVE_IMPORT_ERRORS:
        return None
    return _backend.resample


def _bind_front_end(native: ModuleType) -> Callable[..., np.ndarray]:
    """Give the native module the Python method and return its front-end, dressed as the method.

    A Python frame around the native call costs about as much as a 20 ms chunk's arithmetic,
    so when ``_backend`` selected the compiled kernel at import, ``StreamResampler.process`` is
    the kernel module's compiled front-end: it runs the hot case (open stream, single-stage or
    cascade, 1-D ndarray of the stream's dtype, buffers big enough, ``_backend.resample``
    still native) in C
    and hands every other call to the Python method above, so semantics are the method's.
    """
    native._bind_front_ends(_backend.__dict__, native, _PY_PROCESS)
    front = native._stream_process_front
    front.__name__ = "process"
    front.__qualname__ = "StreamResampler.process"
    front.__module__ = __name__
    front.__doc__ = _PY_PROCESS.__doc__
    front.__wrapped__ = _PY_PROCESS  # inspect.signature() and help() show the method's
    return front


#: The compiled front-end's per-stream plan type (native/resample.pyx), or None without it.
_STREAM_PLAN: Callable[..., object] | None = None
if (_native := _native_resample()) is not None:
    StreamResampler.process = _bind_front_end(_native)  # type: ignore[method-assign]
    _STREAM_PLAN = _native._StreamPlan
del _native
