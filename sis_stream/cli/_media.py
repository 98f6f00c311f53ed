"""Compressed audio for the CLI through PyAV (the ``codecs`` extra): container sniffing, decoding
anything FFmpeg reads to 16-bit PCM, and encoding ``.flac`` / ``.ogg`` / ``.mp3`` outputs.

PyAV is imported only when a file needs it; without it the caller gets one line naming the
extra to install.
"""

from __future__ import annotations

import os
from typing import Any, Final

import numpy as np

from ..audio.formats import AudioFormat
from ..audio.resample import INPUT_RATES
from ..errors import AudioFormatError

__all__ = [
    "CODECS_HINT",
    "ENCODED_EXTENSIONS",
    "CodecsMissingError",
    "decode_file",
    "encode_file",
    "sniff_container",
]

#: What to install for compressed audio.
CODECS_HINT: Final = "pip install 'sis-stream[codecs]' (PyAV)"

#: Output extensions written through PyAV: extension -> (container, encoder).
ENCODED_EXTENSIONS: Final[dict[str, tuple[str, str]]] = {
    ".flac": ("flac", "flac"),
    ".ogg": ("ogg", "libopus"),
    ".opus": ("ogg", "libopus"),
    ".mp3": ("mp3", "libmp3lame"),
}

#: Bit rates at 8 kHz (doubled at 16 kHz): telephone speech stays intelligible to a recogniser.
_BIT_RATES: Final = {"libmp3lame": 32000, "libopus": 24000}

#: Leading bytes of containers and compressed streams: (offset, magic, name).
_MAGIC: Final = (
    (0, b"RIFF", "a RIFF/WAV file"),
    (0, b"RIFX", "a RIFF/WAV file"),
    (0, b"RF64", "an RF64 WAV file"),
    (0, b"ID3", "an MP3 file (ID3 tag)"),
    (0, b"OggS", "an Ogg file (Vorbis/Opus)"),
    (0, b"fLaC", "a FLAC file"),
    (4, b"ftyp", "an MP4/M4A file"),
    (0, b"#!AMR", "an AMR file"),
    (0, b"FORM", "an AIFF file"),
    (0, b".snd", "an AU file"),
    (0, b"caff", "a CAF file"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM file"),
    (0, b"MAC ", "a Monkey's Audio file"),
    (0, b"wvpk", "a WavPack file"),
)


class CodecsMissingError(AudioFormatError):
    """Compressed audio needs PyAV, which is not installed (the message names the extra)."""


def sniff_container(head: bytes) -> str | None:
    """What a file's first bytes say it is (``"an MP3 file (ID3 tag)"``), or None for bytes
    that look like headerless samples.

    Parameters
    ----------
    head : bytes
        At least the first 12 bytes of the input (fewer is fine; nothing is then found).
    """
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def _av(name: str, what: str) -> Any:
    try:
        import av
    except ImportError:
        raise CodecsMissingError(f"{name}: {what} needs PyAV, which is not installed: "
                                 f"{CODECS_HINT}") from None
    return av


def _target_rate(rate: int) -> int:
    # Rates our resampler takes stay as they are (it resamples on the way to the session); any
    # other rate is brought to 16 kHz (8 kHz for narrow-band sources) by FFmpeg while decoding.
    if rate in INPUT_RATES:
        return rate
    return 8000 if rate <= 8000 else 16000


def decode_file(path: str | os.PathLike[str], what: str = "compressed audio") -> tuple[bytes, AudioFormat]:
    """Decode the first audio stream of `path` to interleaved 16-bit PCM.

    Mono and stereo keep their channels; more channels are mixed to mono by FFmpeg. A rate the
    streaming resampler does not take (e.g. 12 or 96 kHz) is resampled to 16 kHz (8 kHz for
    rates up to 8 kHz).

    Parameters
    ----------
    path : str or PathLike
    what : str
        What the file is, for the "PyAV is missing" message (e.g. ``"an MP3 file"``).

    Returns
    -------
    (bytes, AudioFormat)
        The samples and their format (``pcm``, 2 bytes, 1 or 2 channels).

    Raises
    ------
    CodecsMissingError
        PyAV is not installed.
    AudioFormatError
        FFmpeg cannot read the file, or it has no audio stream or no audio.
    """
    name = os.fspath(path)
    av = _av(name, what)
    try:
        container = av.open(name)
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise AudioFormatError(f"{name}: not an audio file FFmpeg can read ({exc})") from None
    with container:
        if not container.streams.audio:
            raise AudioFormatError(f"{name}: the file has no audio stream")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if ctx is None:
            raise AudioFormatError(f"{name}: FFmpeg has no decoder for its audio stream")
        rate = int(ctx.sample_rate or stream.rate or 0)
        channels = int(ctx.layout.nb_channels) if ctx.layout is not None else 1
        if rate <= 0:
            raise AudioFormatError(f"{name}: the audio stream declares no sample rate")
        out_channels = channels if channels in (1, 2) else 1
        out_rate = _target_rate(rate)
        resampler = av.AudioResampler(format="s16", layout="stereo" if out_channels == 2 else "mono",
                                      rate=out_rate)
        parts: list[bytes] = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().tobytes())
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().tobytes())
        except av.FFmpegError as exc:
            raise AudioFormatError(f"{name}: decoding failed after {sum(map(len, parts))} bytes "
                                   f"of audio ({exc})") from None
    data = b"".join(parts)
    if not data:
        raise AudioFormatError(f"{name} holds no audio (FFmpeg decoded 0 samples)")
    return data, AudioFormat(out_rate, "pcm", 2, out_channels)


def encode_file(path: str, pcm: bytes, rate_hz: int) -> str:
    """Write mono 16-bit PCM at `rate_hz` to `path`, the container and codec chosen by its
    extension (:data:`ENCODED_EXTENSIONS`).

    Returns
    -------
    str
        A description such as ``"FLAC"`` or ``"Ogg Opus"``.

    Raises
    ------
    CodecsMissingError
        PyAV is not installed.
    ValueError
        The extension is not one of :data:`ENCODED_EXTENSIONS`.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in ENCODED_EXTENSIONS:
        raise ValueError(f"no encoder for {ext!r}; expected one of {', '.join(ENCODED_EXTENSIONS)}")
    fmt, codec = ENCODED_EXTENSIONS[ext]
    av = _av(path, f"writing {ext}")
    samples = np.frombuffer(pcm, "<i2")
    out = av.open(path, "w", format=fmt)
    try:
        stream = out.add_stream(codec, rate=rate_hz, layout="mono")
        if codec != "flac":
            # The encoders' defaults at 8/16 kHz are 8 kbit/s and worse: speech needs more.
            stream.bit_rate = _BIT_RATES[codec] * (2 if rate_hz > 8000 else 1)
        step = rate_hz  # one second per frame; PyAV re-frames to the encoder's frame size
        for i in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[i : i + step].reshape(1, -1).copy(),
                                               format="s16", layout="mono")
            frame.rate = rate_hz
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()
    return {".flac": "FLAC", ".ogg": "Ogg Opus", ".opus": "Ogg Opus", ".mp3": "MP3"}[ext]
