"""Audio formats: SIS ``audio_format`` names, frame geometry, and a strict WAV reader/writer."""

from __future__ import annotations

import io
import logging
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Final, Literal

from ..errors import AudioFormatError

__all__ = [
    "SIS_FORMATS",
    "shard_limits",
    "SIS_RATES_HZ",
    "AudioFormat",
    "Encoding",
    "WavAudio",
    "read_wav",
    "wav_bytes",
    "write_wav",
]

log = logging.getLogger(__name__)

Encoding = Literal["pcm", "ulaw", "alaw"]

#: Every raw ``audio_format`` the SIS real-time (WebSocket) recognition accepts.
SIS_FORMATS: Final = (
    "pcm16k16bit",
    "pcm8k16bit",
    "ulaw16k8bit",
    "ulaw8k8bit",
    "alaw16k8bit",
    "alaw8k8bit",
)
#: Sample rates SIS accepts for raw audio.
SIS_RATES_HZ: Final = (8000, 16000)
#: SIS per-frame (shard) size limits in bytes, by sample rate (any encoding).
_SHARD_LIMITS: Final = {8000: (160, 32768), 16000: (320, 65536)}
#: Bytes per sample of each encoding (16-bit PCM, 8-bit G.711 codes).
_WIDTHS: Final = {"pcm": 2, "ulaw": 1, "alaw": 1}

# WAV format tags (mmreg.h) and the KSDATAFORMAT_SUBTYPE GUID tail shared by the subformats.
_TAG_PCM: Final = 0x0001
_TAG_ALAW: Final = 0x0006
_TAG_ULAW: Final = 0x0007
_TAG_EXTENSIBLE: Final = 0xFFFE
_TAG_TO_ENCODING: Final[dict[int, Encoding]] = {
    _TAG_PCM: "pcm",
    _TAG_ALAW: "alaw",
    _TAG_ULAW: "ulaw",
}
_ENCODING_TO_TAG: Final = {v: k for k, v in _TAG_TO_ENCODING.items()}
_GUID_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
#: Data-chunk sizes that streaming writers put in the header when the length is not known.
_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)


def shard_limits(rate_hz: int) -> tuple[int, int]:
    """SIS binary-frame size limits ``(min_bytes, max_bytes)`` at `rate_hz` (§5 of the protocol notes).

    Raises
    ------
    AudioFormatError
        The rate is neither 8000 nor 16000 Hz.
    """
    try:
        return _SHARD_LIMITS[rate_hz]
    except (KeyError, TypeError):
        raise AudioFormatError(
            f"SIS shard limits exist for 8000 and 16000 Hz only, got {rate_hz!r} Hz"
        ) from None


@dataclass(frozen=True)
class AudioFormat:
    """An audio sample format: rate, encoding, bytes per sample and channel count.

    Parameters
    ----------
    rate_hz : int
        Sample rate in Hz (> 0). SIS itself accepts 8000 and 16000.
    encoding : {"pcm", "ulaw", "alaw"}
        16-bit little-endian linear PCM, or 8-bit G.711 u-law / A-law codes.
    sample_width : int
        Bytes per sample of one channel: 2 for ``"pcm"``, 1 for ``"ulaw"`` / ``"alaw"``.
    channels : int, optional
        Interleaved channels (default 1). SIS accepts mono only.

    Raises
    ------
    AudioFormatError
        Invalid rate, encoding, width or channel count.
    TypeError
        A field of the wrong type.

    Examples
    --------
    >>> fmt = AudioFormat.from_sis("pcm16k16bit")
    >>> fmt.bytes_per_ms, fmt.frame_bytes(20), fmt.shard_limits
    (32, 640, (320, 65536))
    """

    rate_hz: int
    encoding: Encoding
    sample_width: int
    channels: int = 1

    def __post_init__(self) -> None:
        for name in ("rate_hz", "sample_width", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"AudioFormat.{name} must be an int, got {type(value).__name__}")
        if self.rate_hz <= 0:
            raise AudioFormatError(f"rate_hz must be positive, got {self.rate_hz}")
        if self.encoding not in _WIDTHS:
            raise AudioFormatError(
                f"encoding must be 'pcm', 'ulaw' or 'alaw', got {self.encoding!r}"
            )
        if self.sample_width != _WIDTHS[self.encoding]:
            raise AudioFormatError(
                f"{self.encoding} samples are {_WIDTHS[self.encoding]} byte(s) wide "
                f"({8 * _WIDTHS[self.encoding]}-bit), got sample_width={self.sample_width}"
            )
        if self.channels < 1:
            raise AudioFormatError(f"channels must be >= 1, got {self.channels}")

    @classmethod
    def from_sis(cls, name: str) -> AudioFormat:
        """Parse a SIS ``audio_format`` string such as ``"pcm16k16bit"`` or ``"ulaw8k8bit"``.

        Parameters
        ----------
        name : str
            One of :data:`SIS_FORMATS` (exact, lower case).

        Returns
        -------
        AudioFormat
            Mono format at 8000 or 16000 Hz.

        Raises
        ------
        AudioFormatError
            `name` is not a SIS raw audio format; the message lists the valid names.
        """
        if name not in SIS_FORMATS:
            raise AudioFormatError(
                f"unknown SIS audio_format {name!r}; expected one of {', '.join(SIS_FORMATS)}"
            )
        encoding: Encoding = (
            "ulaw" if name.startswith("ulaw") else "alaw" if name.startswith("alaw") else "pcm"
        )
        rate_hz = 16000 if "16k" in name else 8000
        return cls(rate_hz, encoding, _WIDTHS[encoding])

    @property
    def sis_name(self) -> str:
        """The SIS ``audio_format`` string of this format, e.g. ``"alaw8k8bit"``.

        Raises
        ------
        AudioFormatError
            SIS has no name for this format (rate not 8/16 kHz, or not mono).
        """
        if self.rate_hz not in SIS_RATES_HZ or self.channels != 1:
            raise AudioFormatError(
                f"SIS accepts mono audio at 8000 or 16000 Hz only, got {self.channels} channel(s) "
                f"at {self.rate_hz} Hz"
            )
        return f"{self.encoding}{self.rate_hz // 1000}k{8 * self.sample_width}bit"

    @property
    def bytes_per_frame(self) -> int:
        """Bytes per sample frame: one sample of every channel (the WAV block align)."""
        return self.sample_width * self.channels

    @property
    def bytes_per_second(self) -> int:
        """Bytes per second of audio."""
        return self.rate_hz * self.bytes_per_frame

    @property
    def bytes_per_ms(self) -> int | float:
        """Bytes per millisecond: ``rate_hz * bytes_per_frame / 1000``.

        An ``int`` whenever that is a whole number (every SIS format: 8, 16 or 32), otherwise the
        exact quotient as a ``float`` (e.g. 88.2 for 16-bit mono at 44100 Hz). Use
        :meth:`frame_bytes` for byte counts of a duration: it never rounds.
        """
        q, r = divmod(self.bytes_per_second, 1000)
        return q if r == 0 else self.bytes_per_second / 1000

    def frame_bytes(self, ms: float) -> int:
        """Bytes in `ms` milliseconds of audio: a whole number of sample frames.

        Parameters
        ----------
        ms : int or float
            Duration in milliseconds (>= 0), e.g. 20 for a 20 ms frame.

        Returns
        -------
        int
            ``rate_hz * ms / 1000`` sample frames times :attr:`bytes_per_frame`.

        Raises
        ------
        AudioFormatError
            Negative duration, or `ms` is not a whole number of samples at this rate (for
            example 10 ms at 22050 Hz is 220.5 samples).
        """
        if isinstance(ms, bool) or not isinstance(ms, (int, float)):
            raise TypeError(f"ms must be a number of milliseconds, got {type(ms).__name__}")
        if ms < 0:
            raise AudioFormatError(f"duration must be >= 0 ms, got {ms}")
        samples = Fraction(ms) * self.rate_hz / 1000
        if samples.denominator != 1:
            raise AudioFormatError(
                f"{ms} ms at {self.rate_hz} Hz is {float(samples)} samples, not a whole number"
            )
        return int(samples) * self.bytes_per_frame

    def duration_ms(self, n_bytes: int) -> float:
        """Duration in milliseconds of `n_bytes` bytes of audio in this format.

        Parameters
        ----------
        n_bytes : int
            A byte count (>= 0) holding whole sample frames.

        Returns
        -------
        float
            ``n_bytes / bytes_per_frame / rate_hz * 1000``.

        Raises
        ------
        AudioFormatError
            Negative count, or a partial sample frame.
        """
        if n_bytes < 0:
            raise AudioFormatError(f"byte count must be >= 0, got {n_bytes}")
        if n_bytes % self.bytes_per_frame:
            raise AudioFormatError(
                f"{n_bytes} bytes is not a whole number of {self.bytes_per_frame}-byte sample "
                f"frames ({self.encoding}, {self.channels} channel(s))"
            )
        return n_bytes * 1000 / self.bytes_per_second

    @property
    def shard_limits(self) -> tuple[int, int]:
        """SIS frame size limits ``(min_bytes, max_bytes)``: 160-32768 (8 kHz), 320-65536 (16 kHz).

        Raises
        ------
        AudioFormatError
            The rate is neither 8000 nor 16000 Hz.
        """
        return shard_limits(self.rate_hz)


@dataclass(frozen=True, repr=False)
class WavAudio:
    """The audio of a WAV file: its format and the raw interleaved sample bytes.

    Attributes
    ----------
    format : AudioFormat
        Rate, encoding, width and channels from the ``fmt `` chunk.
    data : bytes
        The ``data`` chunk (little-endian PCM, or G.711 codes), whole sample frames.
    """

    format: AudioFormat
    data: bytes

    def __repr__(self) -> str:
        return f"WavAudio(format={self.format!r}, data=<{len(self.data)} bytes>)"

    @property
    def duration_ms(self) -> float:
        """Duration of `data` in milliseconds."""
        return self.format.duration_ms(len(self.data))


def _read_source(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO,
) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"read_wav: the file object must be binary, read() gave {type(data).__name__}"
            )
        return bytes(data)
    raise TypeError(
        f"read_wav expects a path, bytes or a binary file object, got {type(source).__name__}"
    )


def _parse_fmt(body: bytes, offset: int) -> AudioFormat:
    if len(body) < 16:
        raise AudioFormatError(
            f"WAV fmt chunk at byte {offset} is {len(body)} bytes, expected >= 16"
        )
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    where = f"(fmt chunk at byte {offset})"
    if tag == _TAG_EXTENSIBLE:
        if len(body) < 40:
            raise AudioFormatError(
                f"WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(body)} bytes, expected 40 {where}"
            )
        valid_bits, _mask, sub_tag = struct.unpack_from("<HIH", body, 18)
        if body[26:40] != _GUID_TAIL or sub_tag not in _TAG_TO_ENCODING:
            raise AudioFormatError(
                f"unsupported WAVE_FORMAT_EXTENSIBLE subformat {body[24:40].hex()}; expected the "
                f"PCM (1), A-law (6) or u-law (7) KSDATAFORMAT subtype {where}"
            )
        if valid_bits > bits:
            raise AudioFormatError(
                f"valid bits per sample {valid_bits} exceed the container's {bits} {where}"
            )
        tag = sub_tag
    if tag not in _TAG_TO_ENCODING:
        raise AudioFormatError(
            f"unsupported WAV format tag {tag:#06x}; expected 1 (PCM), 6 (A-law), 7 (u-law) "
            f"or 0xfffe (extensible) {where}"
        )
    encoding = _TAG_TO_ENCODING[tag]
    width = _WIDTHS[encoding]
    if bits != 8 * width:
        raise AudioFormatError(
            f"unsupported sample width: {bits}-bit {encoding}; expected {8 * width}-bit {where}"
        )
    if channels < 1 or rate < 1:
        raise AudioFormatError(f"WAV header has {channels} channels at {rate} Hz {where}")
    fmt = AudioFormat(rate, encoding, width, channels)
    if block_align != fmt.bytes_per_frame or byte_rate != fmt.bytes_per_second:
        raise AudioFormatError(
            f"inconsistent WAV header: block align {block_align} and byte rate {byte_rate}, "
            f"expected {fmt.bytes_per_frame} and {fmt.bytes_per_second} for {channels} channel(s) "
            f"of {bits}-bit {encoding} at {rate} Hz {where}"
        )
    return fmt


def read_wav(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO,
) -> WavAudio:
    """Read a PCM 16-bit, u-law or A-law WAV file (any rate, any channel count).

    Accepts format tags 1 (PCM), 7 (u-law), 6 (A-law) and WAVE_FORMAT_EXTENSIBLE with one of
    those subformats. Chunks other than ``fmt `` and ``data`` are skipped.

    A ``data`` chunk whose declared size is 0 or 0xFFFFFFFF (the placeholders streaming writers
    leave when they cannot seek back) while bytes follow it is read to the end of the file, cut
    to whole sample frames. Any other declared size running past the end of the file means a
    truncated file and raises. (So a genuinely empty ``data`` chunk followed by other chunks
    would be read as audio; writers put ``data`` last in practice.)

    Parameters
    ----------
    source : str, os.PathLike, bytes-like or binary file object
        A path, the file's bytes, or an open binary file (read to its end).

    Returns
    -------
    WavAudio
        The format and the sample bytes.

    Raises
    ------
    AudioFormatError
        Not RIFF/WAVE, malformed or truncated headers or chunks, an unsupported format tag or
        sample width, inconsistent block align / byte rate, or a missing chunk. Messages name
        what was expected, what came, and the byte offset.
    TypeError
        `source` is of an unsupported type.
    """
    raw = _read_source(source)
    if len(raw) < 12:
        raise AudioFormatError(f"not a WAV file: {len(raw)} bytes, a RIFF header needs 12")
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise AudioFormatError(
            f"not a RIFF/WAVE file: expected b'RIFF' at byte 0 and b'WAVE' at byte 8, got "
            f"{raw[:4]!r} and {raw[8:12]!r}"
        )
    fmt: AudioFormat | None = None
    pos = 12
    while pos < len(raw):
        if len(raw) - pos < 8:
            raise AudioFormatError(
                f"truncated chunk header at byte {pos}: {len(raw) - pos} bytes left, 8 needed"
            )
        chunk_id, size = struct.unpack_from("<4sI", raw, pos)
        body_at = pos + 8
        remaining = len(raw) - body_at
        if chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError(f"data chunk at byte {pos} comes before any fmt chunk")
            # A 0 size with bytes after it is a streaming placeholder too (0 or 0xFFFFFFFF).
            if size > remaining or (size == 0 and remaining):
                if size not in _UNKNOWN_SIZES:
                    raise AudioFormatError(
                        f"truncated WAV: data chunk at byte {pos} declares {size} bytes, only "
                        f"{remaining} follow"
                    )
                log.debug(
                    "data chunk size %#x is a placeholder; using the %d bytes that follow",
                    size,
                    remaining,
                )
                size = remaining - remaining % fmt.bytes_per_frame
            elif size % fmt.bytes_per_frame:
                raise AudioFormatError(
                    f"data chunk at byte {pos} holds {size} bytes, not a whole number of "
                    f"{fmt.bytes_per_frame}-byte sample frames"
                )
            return WavAudio(fmt, raw[body_at : body_at + size])
        if size > remaining:
            raise AudioFormatError(
                f"truncated WAV: {chunk_id!r} chunk at byte {pos} declares {size} bytes, only "
                f"{remaining} follow"
            )
        if chunk_id == b"fmt ":
            if fmt is not None:
                raise AudioFormatError(f"second fmt chunk at byte {pos}")
            fmt = _parse_fmt(raw[body_at : body_at + size], pos)
        pos = body_at + size + (size & 1)  # chunks are padded to an even length
    if fmt is None:
        raise AudioFormatError("WAV file has no fmt chunk")
    raise AudioFormatError("WAV file has no data chunk")


def wav_bytes(fmt: AudioFormat, data: bytes | bytearray | memoryview) -> bytes:
    """Return a complete WAV file holding `data` in format `fmt`.

    PCM uses format tag 1 with a 16-byte ``fmt `` chunk; u-law / A-law use tags 7 / 6 with an
    18-byte ``fmt `` chunk and a ``fact`` chunk, as the WAVE specification asks of non-PCM
    data. More than two channels use WAVE_FORMAT_EXTENSIBLE (channel mask 0). An odd-length
    ``data`` chunk gets its pad byte.

    Parameters
    ----------
    fmt : AudioFormat
        Format of `data`.
    data : bytes-like
        Interleaved little-endian PCM or G.711 codes: whole sample frames.

    Returns
    -------
    bytes
        The file.

    Raises
    ------
    AudioFormatError
        `data` is not a whole number of sample frames, or too long for a RIFF file.
    TypeError
        `fmt` is not an AudioFormat or `data` is not bytes-like.
    """
    if not isinstance(fmt, AudioFormat):
        raise TypeError(f"fmt must be an AudioFormat, got {type(fmt).__name__}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
    payload = memoryview(data).cast("B")
    n = payload.nbytes
    if n % fmt.bytes_per_frame:
        raise AudioFormatError(
            f"{n} bytes is not a whole number of {fmt.bytes_per_frame}-byte sample frames"
        )
    tag = _ENCODING_TO_TAG[fmt.encoding]
    bits = 8 * fmt.sample_width
    common = struct.pack(
        "<HIIHH", fmt.channels, fmt.rate_hz, fmt.bytes_per_second, fmt.bytes_per_frame, bits
    )
    if fmt.channels > 2:
        fmt_body = (
            struct.pack("<H", _TAG_EXTENSIBLE)
            + common
            + struct.pack("<HHIH", 22, bits, 0, tag)
            + _GUID_TAIL
        )
    elif tag == _TAG_PCM:
        fmt_body = struct.pack("<H", tag) + common
    else:
        fmt_body = struct.pack("<H", tag) + common + struct.pack("<H", 0)
    chunks = [b"fmt ", struct.pack("<I", len(fmt_body)), fmt_body]
    if tag != _TAG_PCM:
        chunks += [b"fact", struct.pack("<II", 4, n // fmt.bytes_per_frame)]
    chunks += [b"data", struct.pack("<I", n), payload, b"\x00" * (n & 1)]
    body = b"".join(chunks)
    if len(body) + 4 > 0xFFFFFFFF:
        raise AudioFormatError(f"{n} bytes of audio do not fit in a RIFF file (4 GiB limit)")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WAVE" + body


def write_wav(
    dest: str | os.PathLike[str] | BinaryIO, fmt: AudioFormat, data: bytes | bytearray | memoryview
) -> None:
    """Write `data` in format `fmt` as a WAV file (see :func:`wav_bytes` for the layout).

    Parameters
    ----------
    dest : str, os.PathLike or binary file object
        A path (created or overwritten) or an open binary file (written at its position).
    fmt : AudioFormat
        Format of `data`.
    data : bytes-like
        Interleaved little-endian PCM or G.711 codes: whole sample frames.

    Raises
    ------
    AudioFormatError
        As :func:`wav_bytes`.
    TypeError
        Unsupported `dest`, `fmt` or `data` type.
    """
    blob = wav_bytes(fmt, data)
    if isinstance(dest, (str, os.PathLike)):
        with open(dest, "wb") as f:
            f.write(blob)
    elif hasattr(dest, "write") and not isinstance(dest, io.TextIOBase):
        dest.write(blob)
    else:
        raise TypeError(
            f"write_wav expects a path or a binary file object, got {type(dest).__name__}"
        )
