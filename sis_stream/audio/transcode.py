"""Transcoding between audio formats (G.711 / 16-bit PCM, any supported rate pair), bytes to bytes."""

from __future__ import annotations

import logging
import sys

import numpy as np

from . import codec
from .formats import AudioFormat
from ..errors import AudioFormatError, StreamClosedError
from .resample import StreamResampler

__all__ = ["Transcoder", "transcode"]

log = logging.getLogger(__name__)

_PCM_LE = np.dtype("<i2")


def _as_format(fmt: object, name: str) -> AudioFormat:
    if isinstance(fmt, AudioFormat):
        out = fmt
    elif isinstance(fmt, str):
        out = AudioFormat.from_sis(fmt)
    else:
        raise TypeError(
            f"{name} must be an AudioFormat or a SIS audio_format name, got {type(fmt).__name__}"
        )
    if out.channels != 1:
        raise AudioFormatError(f"{name}: the transcoder handles mono audio only, got {out.channels} "
                               "channels")
    return out


class Transcoder:
    """Stateful converter from one audio format to another: decode, resample, encode.

    Bytes in, bytes out; feed chunks of any size (a PCM chunk may even end in the middle of a
    sample: the odd byte waits for the next chunk). The resampler (when the rates differ) is a
    :class:`~sis_stream.audio.resample.StreamResampler` on int16, so the concatenated output of all
    :meth:`process` calls plus :meth:`flush` equals :func:`transcode` of the whole input. When
    the rates are equal no filter runs: G.711 <-> G.711 and G.711 <-> PCM go through int16 PCM
    only (never float), and equal formats are passed through.

    Parameters
    ----------
    src, dst : AudioFormat or str
        Formats, as :class:`~sis_stream.audio.formats.AudioFormat` or SIS names such as
        ``"ulaw8k8bit"`` / ``"pcm16k16bit"``. Mono. `src` may be at any rate the resampler
        accepts (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000 Hz); `dst` at 8000 or
        16000 Hz, or at the rate of `src`.
    quality : {"hq", "telephony"}
        Resampler preset, when the rates differ.

    Raises
    ------
    TypeError
        A format of the wrong type.
    AudioFormatError
        Unknown SIS name, not mono, or an unsupported rate pair.

    Examples
    --------
    >>> tc = Transcoder("ulaw8k8bit", "pcm16k16bit")
    >>> out = tc.process(b"\\xff" * 160) + tc.flush()   # 20 ms of u-law silence
    >>> len(out)                                          # 20 ms at 16 kHz, 2 bytes each
    640
    """

    def __init__(self, src: AudioFormat | str, dst: AudioFormat | str,
                 quality: str = "hq") -> None:
        #: Input format.
        self.src: AudioFormat = _as_format(src, "src")
        #: Output format.
        self.dst: AudioFormat = _as_format(dst, "dst")
        self._resampler: StreamResampler | None = None
        if self.src.rate_hz != self.dst.rate_hz:
            self._resampler = StreamResampler(self.src.rate_hz, self.dst.rate_hz, quality,
                                              np.int16)
        self._carry = b""  # at most one byte: half of a 16-bit PCM sample
        self._closed = False

    def process(self, data: bytes | bytearray | memoryview) -> bytes:
        """Transcode one chunk; return the output bytes it completes.

        Parameters
        ----------
        data : bytes-like
            Input in :attr:`src` format.

        Returns
        -------
        bytes
            Output in :attr:`dst` format (its length varies: the resampler holds back its
            group delay until :meth:`flush`).

        Raises
        ------
        StreamClosedError
            After :meth:`flush`.
        TypeError
            `data` is not bytes-like.
        """
        if self._closed:
            raise StreamClosedError("process() after flush(); call reset() to start a new stream")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
        if self.src == self.dst and not self._carry and (
            self.src.encoding != "pcm" or len(data) % 2 == 0
        ):
            return bytes(data)
        pcm = self._decode(bytes(data))
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encode(pcm)

    def flush(self) -> bytes:
        """End the stream: return the held-back output.

        Raises
        ------
        StreamClosedError
            If already flushed.
        AudioFormatError
            The PCM input ended in the middle of a sample (an odd number of bytes).
        """
        if self._closed:
            raise StreamClosedError("flush() after flush(); call reset() to start a new stream")
        self._closed = True
        if self._carry:
            raise AudioFormatError("16-bit PCM input ended in the middle of a sample (odd length)")
        if self._resampler is None:
            return b""
        return self._encode(self._resampler.flush())

    def reset(self) -> None:
        """Start a new stream with the same formats (also after :meth:`flush`)."""
        if self._resampler is not None:
            self._resampler.reset()
        self._carry = b""
        self._closed = False

    @property
    def delay(self) -> float:
        """Group delay of the resampler in output samples (0.0 when the rates are equal)."""
        return self._resampler.delay if self._resampler is not None else 0.0

    @property
    def clips(self) -> int:
        """Output samples the resampler saturated to int16 so far."""
        return self._resampler.clips if self._resampler is not None else 0

    def __repr__(self) -> str:
        return f"Transcoder({self.src!r}, {self.dst!r})"

    # -- internals ----------------------------------------------------------------------------

    def _decode(self, data: bytes) -> np.ndarray:
        if self.src.encoding == "pcm":
            data = self._carry + data if self._carry else data
            whole = len(data) - len(data) % 2
            self._carry = data[whole:]
            pcm = np.frombuffer(data, _PCM_LE, whole // 2)
            return pcm if sys.byteorder == "little" else pcm.astype(np.int16)
        return codec.decode(np.frombuffer(data, np.uint8), self.src.encoding)

    def _encode(self, pcm: np.ndarray) -> bytes:
        if self.dst.encoding == "pcm":
            return pcm.astype(_PCM_LE, copy=False).tobytes()
        return codec.encode(np.ascontiguousarray(pcm, np.int16), self.dst.encoding).tobytes()


def transcode(data: bytes | bytearray | memoryview, src: AudioFormat | str,
              dst: AudioFormat | str, quality: str = "hq") -> bytes:
    """Transcode a whole buffer from `src` to `dst` format (see :class:`Transcoder`).

    Parameters
    ----------
    data : bytes-like
        The complete input.
    src, dst : AudioFormat or str
        Formats or SIS names.
    quality : {"hq", "telephony"}
        Resampler preset when the rates differ.

    Returns
    -------
    bytes
        ``output_length(n_samples, src.rate_hz, dst.rate_hz)`` samples in `dst` format.

    Raises
    ------
    TypeError, AudioFormatError
        As :class:`Transcoder`, and for PCM input of odd length.
    """
    tc = Transcoder(src, dst, quality)
    return tc.process(data) + tc.flush()
