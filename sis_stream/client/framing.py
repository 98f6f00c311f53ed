"""Framer: arbitrary byte chunks of a SIS audio format -> fixed N-ms frames, in a bounded buffer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ..audio.formats import AudioFormat
from ..errors import AudioFormatError, BufferFullError, StreamClosedError

__all__ = [
    "DEFAULT_FRAME_MS",
    "DEFAULT_MAX_BUFFER_MS",
    "OVERFLOW_POLICIES",
    "SILENCE_BYTE",
    "Framer",
    "FramerStats",
]

_log = logging.getLogger(__name__)

#: Overflow policies of :class:`Framer` (see its docstring).
OVERFLOW_POLICIES: Final = ("block", "drop_oldest", "error")
#: Default frame duration: SIS recommends about 100 ms when real-time feedback matters.
DEFAULT_FRAME_MS: Final = 100
#: Default buffer bound (the framer uses ``max(DEFAULT_MAX_BUFFER_MS, 2 * frame_ms)``).
DEFAULT_MAX_BUFFER_MS: Final = 2000
#: Byte value of digital silence per encoding (G.711: u-law 0xFF, A-law 0xD5; PCM: 0).
SILENCE_BYTE: Final = {"pcm": 0x00, "ulaw": 0xFF, "alaw": 0xD5}


@dataclass(frozen=True)
class FramerStats:
    """Counters of a :class:`Framer` (a snapshot).

    Every byte accepted is accounted for:
    ``bytes_in == bytes_out + bytes_dropped + bytes_discarded + buffered_bytes``.

    Attributes
    ----------
    frames_out : int
        Frames handed out (by :meth:`Framer.pop`, :meth:`Framer.frames`,
        :meth:`Framer.process` and :meth:`Framer.flush`).
    bytes_in : int
        Bytes accepted by :meth:`Framer.feed` (refused bytes are not counted).
    bytes_out : int
        Audio bytes handed out in frames (silence padding not included).
    bytes_dropped : int
        Bytes discarded by the ``drop_oldest`` policy (always whole frames).
    dropped_ms : float
        `bytes_dropped` as milliseconds of audio.
    overruns : int
        Calls to :meth:`Framer.feed` that found too little room (any policy).
    bytes_refused : int
        Bytes not accepted: returned to the caller under ``block``, or rejected with
        :class:`~sis_stream.errors.BufferFullError` under ``error``.
    bytes_padded : int
        Silence bytes appended to the last frame (``pad_last=True``).
    bytes_discarded : int
        Bytes of an incomplete trailing sample dropped by :meth:`Framer.flush` (the
        total input was not a whole number of samples; logged as a warning).
    buffered_bytes : int
        Bytes held at the time of the snapshot.
    """

    frames_out: int
    bytes_in: int
    bytes_out: int
    bytes_dropped: int
    dropped_ms: float
    overruns: int
    bytes_refused: int
    bytes_padded: int
    bytes_discarded: int
    buffered_bytes: int


def _coerce_format(audio_format: AudioFormat | str) -> AudioFormat:
    if isinstance(audio_format, AudioFormat):
        return audio_format
    if isinstance(audio_format, str):
        return AudioFormat.from_sis(audio_format)
    raise TypeError(
        f"audio_format must be an AudioFormat or a SIS format name such as 'ulaw8k8bit', "
        f"got {type(audio_format).__name__}"
    )


def _check_ms(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of milliseconds, got {type(value).__name__}")
    return value


class Framer:
    """Cut a stream of arbitrary byte chunks into fixed frames of `frame_ms` of audio.

    Sans-IO: it never waits. Bytes go in with :meth:`feed`; whole frames come out with
    :meth:`pop` / :meth:`frames`; :meth:`flush` ends the stream and returns the rest.
    Frames lie on a fixed grid from the start of the stream (frame ``k`` is bytes
    ``[k*F, (k+1)*F)``), so with a sample-aligned frame size ``F`` no frame ever starts or
    ends inside a sample, whatever the chunk sizes (odd-sized PCM chunks included).

    The buffer holds at most `max_buffer_ms` of audio. When a chunk does not fit:

    ``"block"``
        :meth:`feed` takes what fits and returns how many bytes it took; the caller
        keeps the rest and offers it again after frames were taken (an async layer
        awaits "frame taken" in between). Nothing is lost unless the caller drops the
        remainder itself.
    ``"drop_oldest"``
        The oldest *whole frames* are discarded to make room (the grid is kept); the
        drop is counted in ``bytes_dropped`` / ``dropped_ms``.
    ``"error"``
        :class:`~sis_stream.errors.BufferFullError` is raised and nothing is taken.

    Every overflow increments ``overruns``.

    Parameters
    ----------
    audio_format : AudioFormat or str
        The session's SIS audio format, or its name (``"ulaw8k8bit"``, ``"pcm16k16bit"``...).
    frame_ms : int, default 100
        Frame duration. The frame size must lie inside the SIS shard limits
        (``audio_format.shard_limits``: 160-32768 bytes at 8 kHz, 320-65536 at 16 kHz).
    max_buffer_ms : int, optional
        Buffer bound, at least `frame_ms`; default ``max(2000, 2 * frame_ms)``.
    overflow : {"block", "drop_oldest", "error"}, default "block"
        Overflow policy, see above.
    pad_last : bool, default False
        Pad the last (short) frame returned by :meth:`flush` to a full frame with silence
        of the format's encoding. Without padding it is emitted as it is, even if shorter
        than the shard minimum, as the official SDK does.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    AudioFormatError
        If the format is not a SIS session format (mono, 8 or 16 kHz), an unknown
        format name is given, `frame_ms` gives a frame outside the shard limits, or
        `max_buffer_ms` is smaller than `frame_ms`.
    ValueError
        If `overflow` is not one of :data:`OVERFLOW_POLICIES`.

    Examples
    --------
    >>> fr = Framer("ulaw8k8bit", frame_ms=20)
    >>> fr.feed(b"\\xff" * 300)
    300
    >>> [len(f) for f in fr.frames()]
    [160]
    >>> [len(f) for f in fr.flush()]
    [140]
    """

    __slots__ = (
        "_bytes_discarded",
        "_bytes_dropped",
        "_bytes_in",
        "_bytes_out",
        "_bytes_padded",
        "_bytes_refused",
        "_capacity",
        "_closed",
        "_data",
        "_format",
        "_frame_bytes",
        "_frame_ms",
        "_frames_out",
        "_max_buffer_ms",
        "_overflow",
        "_overruns",
        "_pad_last",
        "_pos",
        "_sample_bytes",
        "_silence",
    )

    def __init__(
        self,
        audio_format: AudioFormat | str,
        frame_ms: int = DEFAULT_FRAME_MS,
        *,
        max_buffer_ms: int | None = None,
        overflow: str = "block",
        pad_last: bool = False,
    ) -> None:
        fmt = _coerce_format(audio_format)
        frame_ms = _check_ms("frame_ms", frame_ms)
        if frame_ms <= 0:
            raise AudioFormatError(f"frame_ms must be > 0, got {frame_ms}")
        name = fmt.sis_name  # raises AudioFormatError unless mono at 8 or 16 kHz
        lo, hi = fmt.shard_limits
        sample_bytes = fmt.bytes_per_frame
        # AudioFormat.frame_bytes returns whole sample frames (it raises otherwise), so every
        # frame of the grid below starts and ends on a sample boundary.
        frame_bytes = fmt.frame_bytes(frame_ms)
        if not lo <= frame_bytes <= hi:
            per_ms = fmt.frame_bytes(1)
            raise AudioFormatError(
                f"frame_ms={frame_ms} gives {frame_bytes}-byte frames of {name}, outside the SIS "
                f"shard limits of {lo}-{hi} bytes per frame at {fmt.rate_hz} Hz "
                f"(expected {-(-lo // per_ms)}-{hi // per_ms} ms for this format)"
            )
        if max_buffer_ms is None:
            max_buffer_ms = max(DEFAULT_MAX_BUFFER_MS, 2 * frame_ms)
        max_buffer_ms = _check_ms("max_buffer_ms", max_buffer_ms)
        if max_buffer_ms < frame_ms:
            raise AudioFormatError(
                f"max_buffer_ms must be >= frame_ms={frame_ms} (the buffer must hold a whole "
                f"frame), got {max_buffer_ms}"
            )
        if not isinstance(overflow, str):
            raise TypeError(f"overflow must be a str, got {type(overflow).__name__}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if not isinstance(pad_last, bool):
            raise TypeError(f"pad_last must be a bool, got {type(pad_last).__name__}")
        self._format = fmt
        self._frame_ms = frame_ms
        self._frame_bytes = frame_bytes
        self._sample_bytes = sample_bytes
        self._max_buffer_ms = max_buffer_ms
        self._capacity = fmt.frame_bytes(max_buffer_ms)
        self._overflow = overflow
        self._pad_last = pad_last
        self._silence = bytes([SILENCE_BYTE[fmt.encoding]])
        # The buffer is the immutable bytes ``_data[_pos:]``: taking a frame is one slice
        # and a bump of ``_pos``; feeding joins the unread rest with the new chunk (at most
        # `capacity` bytes copied, usually less than a frame when frames are taken promptly).
        self._data = b""
        self._pos = 0
        self.reset()

    # -- configuration -------------------------------------------------------------------
    @property
    def audio_format(self) -> AudioFormat:
        """The audio format being framed."""
        return self._format

    @property
    def frame_ms(self) -> int:
        """Duration of a full frame, milliseconds."""
        return self._frame_ms

    @property
    def frame_bytes(self) -> int:
        """Size of a full frame, bytes."""
        return self._frame_bytes

    @property
    def capacity(self) -> int:
        """Buffer bound, bytes (`max_buffer_ms` of audio)."""
        return self._capacity

    @property
    def overflow(self) -> str:
        """The overflow policy."""
        return self._overflow

    # -- state ---------------------------------------------------------------------------
    @property
    def buffered_bytes(self) -> int:
        """Bytes held (whole frames waiting plus the partial frame being filled)."""
        return len(self._data) - self._pos

    @property
    def room(self) -> int:
        """Bytes :meth:`feed` can take right now without overflowing."""
        return self._capacity - (len(self._data) - self._pos)

    @property
    def frames_ready(self) -> int:
        """Whole frames waiting to be taken."""
        return (len(self._data) - self._pos) // self._frame_bytes

    @property
    def closed(self) -> bool:
        """True after :meth:`flush` until :meth:`reset`."""
        return self._closed

    @property
    def stats(self) -> FramerStats:
        """A snapshot of the counters (see :class:`FramerStats`)."""
        return FramerStats(
            frames_out=self._frames_out,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            bytes_dropped=self._bytes_dropped,
            dropped_ms=self._bytes_dropped / self._format.bytes_per_ms,
            overruns=self._overruns,
            bytes_refused=self._bytes_refused,
            bytes_padded=self._bytes_padded,
            bytes_discarded=self._bytes_discarded,
            buffered_bytes=len(self._data) - self._pos,
        )

    # -- input -----------------------------------------------------------------------------
    def feed(self, chunk: bytes | bytearray | memoryview) -> int:
        """Append audio bytes; return how many were taken.

        Parameters
        ----------
        chunk : bytes, bytearray or memoryview
            Raw audio in the framer's format, any length (it may end inside a sample).
            A memoryview must be C-contiguous; it is read as raw bytes.

        Returns
        -------
        int
            Bytes of `chunk` taken: always ``len(chunk)`` (in bytes) except under the
            ``block`` policy when the buffer is full, where it is what fitted. The caller
            must then keep ``chunk[taken:]`` and offer it again once frames were taken
            (``room`` tells how much fits).

        Raises
        ------
        TypeError
            If `chunk` is not bytes-like (``str``, numpy arrays etc. are refused: wrap an
            array in ``memoryview`` or use ``.tobytes()`` deliberately).
        ValueError
            If a memoryview is not C-contiguous.
        BufferFullError
            Under the ``error`` policy when `chunk` does not fit; nothing is taken.
        StreamClosedError
            After :meth:`flush` (call :meth:`reset` to start a new stream).
        """
        if self._closed:
            raise StreamClosedError(
                "Framer.feed() after flush(); call reset() to start a new stream"
            )
        cls = type(chunk)
        if cls is not bytes and cls is not bytearray:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"chunk must be bytes, bytearray or memoryview, got {type(chunk).__name__}"
                )
            if isinstance(chunk, memoryview):
                if not chunk.c_contiguous:
                    raise ValueError("chunk memoryview must be C-contiguous")
                chunk = chunk.cast("B") if chunk.format != "B" or chunk.ndim != 1 else chunk
        n = len(chunk)
        data = self._data
        held = len(data) - self._pos
        free = self._capacity - held
        if n <= free:  # the common case, inlined: it runs once per chunk
            if held:
                self._data = data[self._pos :] + chunk  # bytes + buffer -> new bytes
                self._pos = 0
            elif n:
                self._data = chunk if cls is bytes else bytes(chunk)  # never keep a mutable view
                self._pos = 0
            self._bytes_in += n
            return n
        self._overruns += 1
        policy = self._overflow
        if policy == "block":
            # free >= 0 always: nothing ever fills the buffer past capacity.
            if free:
                self._append(chunk[:free], held)
            self._bytes_in += free
            self._bytes_refused += n - free
            return free
        if policy == "error":
            self._bytes_refused += n
            raise BufferFullError(
                f"Framer buffer full: chunk of {n} bytes offered, {free} bytes free of "
                f"{self._capacity} ({self._max_buffer_ms} ms); {held} bytes buffered, "
                f"{held // self._frame_bytes} whole frames not taken"
            )
        # drop_oldest: drop the fewest whole frames of the stream grid so the rest fits.
        # drop <= excess + F - 1 <= held + n - 1 because capacity >= F, so at least one
        # byte of the chunk survives and the buffer start stays on the frame grid.
        fb = self._frame_bytes
        drop = -(-(held + n - self._capacity) // fb) * fb
        self._data = (data[self._pos :] + chunk)[drop:]
        self._pos = 0
        self._bytes_in += n
        self._bytes_dropped += drop
        _log.debug("Framer dropped %d bytes (%d frames) of the oldest audio", drop, drop // fb)
        return n

    def _append(self, chunk: bytes | bytearray | memoryview, held: int) -> None:
        if held:
            self._data = self._data[self._pos :] + chunk  # bytes + buffer -> new bytes
        else:
            self._data = (
                chunk if type(chunk) is bytes else bytes(chunk)
            )  # never keep a mutable view
        self._pos = 0

    def process(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Feed `chunk` and return every whole frame now available (never refuses input).

        The convenience form for synchronous use: frames are taken while feeding, so
        nothing overflows whatever the policy or chunk size.

        Raises
        ------
        TypeError, ValueError, StreamClosedError
            As :meth:`feed`.
        """
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"chunk must be bytes, bytearray or memoryview, got {type(chunk).__name__}"
            )
        n = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
        if n <= self.room:  # fits: one feed, no overflow possible
            self.feed(chunk)
            return list(self.frames())
        view = memoryview(chunk)
        if not view.c_contiguous:
            raise ValueError("chunk memoryview must be C-contiguous")
        view = view.cast("B")
        out: list[bytes] = []
        pos = 0
        while pos < n:  # feed what fits, take the frames, repeat: room >= 1 after taking
            take = min(self.room, n - pos)
            self.feed(view[pos : pos + take])
            pos += take
            out.extend(self.frames())
        return out

    # -- output ----------------------------------------------------------------------------
    def pop(self) -> bytes | None:
        """Take the oldest whole frame, or None when no whole frame is buffered."""
        pos = self._pos
        end = pos + self._frame_bytes
        data = self._data
        if end > len(data):
            return None
        self._pos = end
        self._frames_out += 1
        self._bytes_out += self._frame_bytes
        return data[pos:end]

    def frames(self) -> Iterator[bytes]:
        """Iterate over (and take) the whole frames buffered; feeding in between is allowed."""
        pop = self.pop
        while (frame := pop()) is not None:
            yield frame

    def flush(self) -> list[bytes]:
        """End the stream: return the remaining whole frames and the last, shorter frame.

        The last frame holds whatever whole samples are left (emitted as-is, even below
        the shard minimum, or padded with silence to a full frame when `pad_last`). A
        trailing incomplete sample (odd total byte count of 16-bit PCM) cannot be sent;
        it is discarded, counted in ``bytes_discarded`` and logged as a warning.

        Returns
        -------
        list of bytes
            Possibly empty.

        Raises
        ------
        StreamClosedError
            If the stream was already flushed (call :meth:`reset`).
        """
        if self._closed:
            raise StreamClosedError("Framer.flush() twice; call reset() to start a new stream")
        out = list(self.frames())
        tail = len(self._data) - self._pos
        if tail:
            whole = tail - tail % self._sample_bytes
            if whole != tail:
                self._bytes_discarded += tail - whole
                _log.warning(
                    "Framer.flush(): discarded %d byte(s) of an incomplete %d-byte sample at the "
                    "end of the stream (%d bytes fed in total)",
                    tail - whole,
                    self._sample_bytes,
                    self._bytes_in,
                )
            if whole:
                frame = self._data[self._pos : self._pos + whole]
                if self._pad_last and whole < self._frame_bytes:
                    pad = self._frame_bytes - whole
                    frame += self._silence * pad
                    self._bytes_padded += pad
                out.append(frame)
                self._frames_out += 1
                self._bytes_out += whole
            self._data = b""
            self._pos = 0
        self._closed = True
        return out

    def reset(self) -> None:
        """Empty the buffer, zero the counters and reopen a flushed stream (same config)."""
        self._data = b""
        self._pos = 0
        self._closed = False
        self._frames_out = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._bytes_dropped = 0
        self._overruns = 0
        self._bytes_refused = 0
        self._bytes_padded = 0
        self._bytes_discarded = 0

    def __repr__(self) -> str:
        return (
            f"Framer({self._format.sis_name!r}, frame_ms={self._frame_ms}, "
            f"max_buffer_ms={self._max_buffer_ms}, "
            f"overflow={self._overflow!r}, buffered_bytes={len(self._data) - self._pos})"
        )
