"""Request audio: decoding to int16 channels and conversion to the engines' 16 kHz mono.

Shared by the REST recognition routes (short audio, the transcriber, flash ASR) and the TTS
resampling. Decoding (:func:`decode_audio`):

* raw SIS formats (``pcm16k16bit``, ``pcm8k16bit``, ``ulaw*``, ``alaw*``) with our G.711 codec;
* ``wav`` with our strict WAV reader (PCM16 / u-law / A-law);
* compressed formats (``mp3``, ``aac``, ``amr``, ``amrwb``, ``m4a``, ``wma``, ``ogg``, ``opus``,
  ``ac3``, and ``auto`` detection) only through PyAV (``pip install av``: the PyPI wheels bundle
  FFmpeg's decoders; PyAV also comes with the ``engines`` extra as a faster-whisper dependency).
  Without it these formats are answered ``SIS.0602`` ("... needs the optional PyAV package").
  ``vox8k4bit`` / ``v3_8k4bit`` (Dialogic ADPCM) are not supported: ``SIS.0602``/``SIS.0535``.

Every decoded signal is resampled by :mod:`sis_stream.audio.resample` (our polyphase resampler) to the
engines' 16 kHz (:func:`to_engine_pcm`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..audio.codec import decode as g711_decode
from ..audio.formats import SIS_FORMATS, AudioFormat, read_wav
from ..engines.base import SAMPLE_RATE_HZ
from ..errors import AudioFormatError, RequestRejected
from ..protocol.errors import reject

__all__ = [
    "COMPRESSED_FORMATS",
    "RAW_FORMATS",
    "UNSUPPORTED_FORMATS",
    "DecodedAudio",
    "check_rate",
    "decode_audio",
    "pyav_available",
    "resample_pcm",
    "to_engine_pcm",
]

logger = logging.getLogger(__name__)

#: Raw formats (no container), decoded by our codec.
RAW_FORMATS: Final = tuple(SIS_FORMATS)
#: Container/compressed formats and the PyAV demuxer hint for each (None = probe).
COMPRESSED_FORMATS: Final[dict[str, str | None]] = {
    "mp3": "mp3", "aac": None, "amr": "amr", "amrwb": "amr", "m4a": None, "wma": "asf",
    "ogg": "ogg", "opus": "ogg", "ac3": "ac3", "auto": None,
}
#: Formats the cloud lists that no decoder here handles.
UNSUPPORTED_FORMATS: Final = ("vox8k4bit", "v3_8k4bit")


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded audio.

    Attributes
    ----------
    channels : numpy.ndarray
        int16, shape ``(n_channels, n_samples)``.
    rate_hz : int
        Sample rate of `channels`.
    container : str
        ``"raw"``, ``"wav"`` or the PyAV container name.
    """

    channels: np.ndarray
    rate_hz: int
    container: str

    @property
    def duration_ms(self) -> int:
        """Duration in ms (rounded down)."""
        return int(self.channels.shape[1] * 1000 // self.rate_hz)

    @property
    def n_channels(self) -> int:
        return int(self.channels.shape[0])


def pyav_available() -> bool:
    """True if PyAV (compressed-format decoding, mp3 encoding) can be imported."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True



def _decode_raw(data: bytes, fmt: AudioFormat) -> DecodedAudio:
    if fmt.encoding == "pcm":
        if len(data) % 2:
            data = data[:-1]  # a trailing odd byte is not a sample
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    else:
        pcm = np.frombuffer(g711_decode(bytes(data), fmt.encoding), dtype="<i2").astype(np.int16)
    return DecodedAudio(pcm.reshape(1, -1), fmt.rate_hz, "raw")


def _decode_wav(data: bytes, unsupported_code: str) -> DecodedAudio:
    try:
        wav = read_wav(data)
    except AudioFormatError as exc:
        raise reject(unsupported_code, f"the WAV audio cannot be read: {exc}") from None
    fmt = wav.format
    raw = wav.data
    if fmt.encoding == "pcm":
        inter = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    else:
        inter = np.frombuffer(g711_decode(raw, fmt.encoding), dtype="<i2").astype(np.int16)
    chans = inter.reshape(-1, fmt.channels).T.copy()
    return DecodedAudio(chans, fmt.rate_hz, "wav")


def _decode_av(data: bytes, audio_format: str, unsupported_code: str, max_ms: int | None) -> DecodedAudio:
    try:
        import av
    except ImportError:
        raise reject(unsupported_code, f"audio format '{audio_format}' needs the optional PyAV package "
                                       "(`pip install av`), which is not installed") from None
    hint = COMPRESSED_FORMATS.get(audio_format)
    try:
        with av.open(io.BytesIO(data), mode="r", format=hint) as container:
            if not container.streams.audio:
                raise reject(unsupported_code, f"no audio stream found in the '{audio_format}' data")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16p")
            planes: list[np.ndarray] = []
            rate = 0
            n = 0
            cap = None
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    rate = out.sample_rate
                    arr = out.to_ndarray()
                    planes.append(arr.reshape(len(out.layout.channels), -1).astype(np.int16, copy=False))
                    n += planes[-1].shape[1]
                if max_ms is not None and rate:
                    cap = rate * (max_ms + 1000) // 1000
                    if n > cap:  # decompression bound: stop reading far past the limit
                        break
            for out in resampler.resample(None) if cap is None or n <= cap else ():
                planes.append(out.to_ndarray().reshape(len(out.layout.channels), -1).astype(np.int16))
            name = container.format.name
    except RequestRejected:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise reject("SIS.30006" if unsupported_code != "SIS.0602" else unsupported_code,
                     f"Invalid data found when processing input ('{audio_format}'): {exc}") from None
    if not planes or rate <= 0:
        raise reject(unsupported_code, f"the '{audio_format}' data holds no audio")
    chans = np.concatenate(planes, axis=1)
    return DecodedAudio(np.ascontiguousarray(chans), int(rate), name)


def decode_audio(data: bytes, audio_format: str, *, unsupported_code: str = "SIS.0602",
                 max_ms: int | None = None) -> DecodedAudio:
    """Decode request audio.

    Parameters
    ----------
    data : bytes
        The file or raw samples.
    audio_format : str
        A SIS ``audio_format`` (raw names, ``wav``, a compressed name or ``auto``).
    unsupported_code : str
        Code for undecodable/unsupported audio: ``SIS.0602`` (short audio), ``SIS.0535``
        (transcriber, flash).
    max_ms : int, optional
        Stop decoding compressed audio about a second past this (the caller rejects it).

    Returns
    -------
    DecodedAudio

    Raises
    ------
    RequestRejected
        `unsupported_code` for formats without a decoder, unreadable WAV headers, or PyAV
        decoding failures.
    """
    if audio_format in RAW_FORMATS:
        return _decode_raw(data, AudioFormat.from_sis(audio_format))
    if audio_format in UNSUPPORTED_FORMATS:
        raise reject(unsupported_code, f"audio format '{audio_format}' (Dialogic ADPCM) is not supported "
                                       "by this server")
    if audio_format == "wav" or (audio_format == "auto" and data[:4] == b"RIFF"):
        try:
            return _decode_wav(data, unsupported_code)
        except RequestRejected:
            if audio_format == "wav" or not pyav_available():
                raise  # 'auto': other RIFF/WAVE codecs (ADPCM...) may still decode with PyAV
    if audio_format in COMPRESSED_FORMATS:
        return _decode_av(data, audio_format, unsupported_code, max_ms)
    raise reject("SIS.0032", "'audio_format' is invalid")


def resample_pcm(pcm: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    """int16 mono `pcm` from `src_hz` to `dst_hz` with our resampler (:mod:`sis_stream.audio.resample`).

    Rates our resampler does not support fall back to PyAV's (libswresample) when installed.

    Raises
    ------
    RequestRejected
        ``SIS.0602`` when no resampler handles the pair.
    """
    if src_hz == dst_hz:
        return pcm
    if pcm.size == 0:
        return np.zeros(0, np.int16)
    try:
        from ..audio.resample import resample
    except ImportError:  # pragma: no cover - the resampler ships with the package
        resample = None
    if resample is not None:
        try:
            return np.asarray(resample(np.ascontiguousarray(pcm, dtype=np.int16), src_hz, dst_hz), dtype=np.int16)
        except (ValueError, TypeError, AudioFormatError) as exc:  # a pair or dtype it does not handle
            reason = str(exc)
        else:  # pragma: no cover
            reason = ""
    else:
        reason = "sis_stream.audio.resample is not available"
    if pyav_available():
        return _resample_av(pcm, src_hz, dst_hz)
    raise reject("SIS.0602", f"audio at {src_hz} Hz cannot be converted to {dst_hz} Hz: {reason}")


def _resample_av(pcm: np.ndarray, src_hz: int, dst_hz: int) -> np.ndarray:
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = src_hz
    rs = av.AudioResampler(format="s16", layout="mono", rate=dst_hz)
    outs = [f.to_ndarray().reshape(-1) for f in (*rs.resample(frame), *rs.resample(None))]
    return np.concatenate(outs).astype(np.int16) if outs else np.zeros(0, np.int16)


def to_engine_pcm(audio: DecodedAudio, channel: int | None = None) -> np.ndarray:
    """One channel (or the mix of all, ``channel=None``) of `audio` as int16 mono 16 kHz."""
    if channel is None:
        mono = audio.channels[0] if audio.n_channels == 1 else \
            np.round(audio.channels.astype(np.int32).mean(axis=0)).astype(np.int16)
    else:
        mono = audio.channels[channel]
    return resample_pcm(np.ascontiguousarray(mono), audio.rate_hz, SAMPLE_RATE_HZ)


def check_rate(audio: DecodedAudio, rate_hz: int, audio_format: str) -> None:
    """WAV and raw audio must have the property's rate (``SIS.0301``); compressed audio is resampled."""
    if audio.container in ("raw", "wav") and audio.rate_hz != rate_hz:
        raise reject("SIS.0301", f"'audio_format' is not match model: the audio is {audio.rate_hz} Hz, "
                                 f"the property expects {rate_hz} Hz")

