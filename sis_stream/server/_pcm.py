"""Session audio to the engines' PCM: SIS ``audio_format`` bytes -> int16, 8 kHz -> 16 kHz.

A private helper of :mod:`.recognizer` (which re-exports :class:`PcmDecoder` and
:class:`Upsampler2x`).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from ..audio import codec
from ..engines.base import SAMPLE_RATE_HZ

__all__ = ["PcmDecoder", "Upsampler2x"]


class PcmDecoder:
    """Bytes of one SIS ``audio_format`` -> int16 PCM at the format's rate (streaming).

    A pcm16 frame of odd length keeps its last byte for the next frame (samples never split).
    """

    def __init__(self, encoding: str) -> None:
        if encoding not in ("pcm", "ulaw", "alaw"):
            raise ValueError(f"encoding must be 'pcm', 'ulaw' or 'alaw', got {encoding!r}")
        self.encoding = encoding
        self._carry = b""

    def decode(self, data: bytes) -> np.ndarray:
        """Decode one frame; returns a (possibly empty) int16 array."""
        if self.encoding == "pcm":
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                self._carry = data[-1:]
                data = data[:-1]
            return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
        codes = np.frombuffer(data, dtype=np.uint8)
        return codec.decode(codes, self.encoding)


def _halfband_taps(n_side: int = 16) -> np.ndarray:
    # Windowed-sinc low-pass at a quarter of the output rate (the input Nyquist), gain 2 to
    # make up for the zero-stuffing. 2*n_side+1 taps, Blackman window.
    n = np.arange(-n_side, n_side + 1)
    h = 0.5 * np.sinc(n / 2.0) * np.blackman(2 * n_side + 1)
    return (2.0 * h / h.sum()).astype(np.float64)


class Upsampler2x:
    """Streaming 2x upsampler (8 kHz -> 16 kHz): zero-stuff and a 33-tap half-band FIR.

    Fallback only, used when ``sis_stream.audio.resample`` cannot be imported. The filter
    delays the output by 16 output samples (1 ms), negligible next to the 10 ms VAD frames.
    """

    _TAPS: Final = _halfband_taps()

    def __init__(self) -> None:
        self._hist = np.zeros(len(self._TAPS) - 1, dtype=np.float64)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Upsample one int16 chunk; returns ``2 * len(pcm)`` int16 samples."""
        if pcm.size == 0:
            return np.zeros(0, np.int16)
        z = np.zeros(2 * pcm.size, dtype=np.float64)
        z[::2] = pcm
        buf = np.concatenate((self._hist, z))
        y = np.convolve(buf, self._TAPS, mode="valid")
        self._hist = buf[-(len(self._TAPS) - 1):]
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


class _Converter:
    """Segment PCM at the format's rate -> 16 kHz int16, streaming, flushed at the segment end.

    Uses the project's resampler kernel (:class:`sis_stream.audio.resample.StreamResampler`,
    delay-compensated: sample 0 out is sample 0 in, and the total length is exact); falls back to
    :class:`Upsampler2x` only if that module cannot be imported.
    """

    def __init__(self, rate_hz: int) -> None:
        if rate_hz * 2 != SAMPLE_RATE_HZ:
            raise ValueError(f"only 8000 and 16000 Hz audio is accepted, got {rate_hz}")
        try:
            from ..audio.resample import StreamResampler
        except ImportError:  # pragma: no cover - the resampler ships with the package
            self._rs = None
            self._up = Upsampler2x()
        else:
            self._rs = StreamResampler(rate_hz, SAMPLE_RATE_HZ, dtype=np.int16)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if self._rs is None:
            return self._up.process(pcm)
        return self._rs.process(pcm)

    def flush(self) -> np.ndarray:
        if self._rs is None:
            return np.zeros(0, np.int16)
        return self._rs.flush()


def _make_converter(rate_hz: int) -> _Converter | None:
    """A converter of `rate_hz` int16 PCM to 16 kHz, or None when no conversion is needed."""
    if rate_hz == SAMPLE_RATE_HZ:
        return None
    return _Converter(rate_hz)
