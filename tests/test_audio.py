"""AudioFormat (SIS names, frame geometry) and the WAV reader/writer."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from sis_stream.audio.formats import SIS_FORMATS, AudioFormat, WavAudio, read_wav, wav_bytes, write_wav
from sis_stream.errors import AudioFormatError

PCM16K = AudioFormat(16000, "pcm", 2)
ULAW8K = AudioFormat(8000, "ulaw", 1)

# --- AudioFormat ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rate", "encoding", "width", "bytes_per_ms", "shard"),
    [
        ("pcm16k16bit", 16000, "pcm", 2, 32, (320, 65536)),
        ("pcm8k16bit", 8000, "pcm", 2, 16, (160, 32768)),
        ("ulaw16k8bit", 16000, "ulaw", 1, 16, (320, 65536)),
        ("ulaw8k8bit", 8000, "ulaw", 1, 8, (160, 32768)),
        ("alaw16k8bit", 16000, "alaw", 1, 16, (320, 65536)),
        ("alaw8k8bit", 8000, "alaw", 1, 8, (160, 32768)),
    ],
)
def test_from_sis_every_format(name, rate, encoding, width, bytes_per_ms, shard):
    fmt = AudioFormat.from_sis(name)
    assert fmt == AudioFormat(rate, encoding, width, 1)
    assert fmt.sis_name == name
    assert fmt.bytes_per_ms == bytes_per_ms and type(fmt.bytes_per_ms) is int
    assert fmt.shard_limits == shard
    assert fmt.frame_bytes(20) == 20 * bytes_per_ms


def test_sis_formats_tuple_is_complete():
    assert SIS_FORMATS == (
        "pcm16k16bit",
        "pcm8k16bit",
        "ulaw16k8bit",
        "ulaw8k8bit",
        "alaw16k8bit",
        "alaw8k8bit",
    )
    assert all(AudioFormat.from_sis(n).sis_name == n for n in SIS_FORMATS)


@pytest.mark.parametrize("name", ["PCM16K16BIT", "pcm16k", "wav", "pcm44k16bit", "ulaw8k16bit", ""])
def test_from_sis_rejects_other_names_listing_valid_ones(name):
    with pytest.raises(
        AudioFormatError,
        match=rf"unknown SIS audio_format '{name}'; expected one of "
        r"pcm16k16bit, pcm8k16bit, ulaw16k8bit, ulaw8k8bit, alaw16k8bit, alaw8k8bit",
    ):
        AudioFormat.from_sis(name)


def test_audio_format_is_frozen():
    with pytest.raises(AttributeError):
        PCM16K.rate_hz = 8000  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0, "pcm", 2), AudioFormatError, "rate_hz must be positive, got 0"),
        ((8000, "mp3", 1), AudioFormatError, "encoding must be 'pcm', 'ulaw' or 'alaw', got 'mp3'"),
        (
            (8000, "pcm", 1),
            AudioFormatError,
            r"pcm samples are 2 byte\(s\) wide \(16-bit\), got sample_width=1",
        ),
        (
            (8000, "ulaw", 2),
            AudioFormatError,
            r"ulaw samples are 1 byte\(s\) wide \(8-bit\), got sample_width=2",
        ),
        ((8000, "alaw", 1, 0), AudioFormatError, "channels must be >= 1, got 0"),
        ((8000.0, "pcm", 2), TypeError, "rate_hz must be an int, got float"),
        ((8000, "pcm", True), TypeError, "sample_width must be an int, got bool"),
        ((8000, "pcm", 2, "1"), TypeError, "channels must be an int, got str"),
    ],
)
def test_audio_format_validation(args, error, match):
    with pytest.raises(error, match=match):
        AudioFormat(*args)


@pytest.mark.parametrize("fmt", [AudioFormat(44100, "pcm", 2), AudioFormat(8000, "ulaw", 1, 2)])
def test_sis_name_rejects_unrepresentable(fmt):
    with pytest.raises(
        AudioFormatError, match=r"SIS accepts mono audio at 8000 or 16000 Hz only, got"
    ):
        _ = fmt.sis_name


def test_bytes_per_ms_for_other_rates():
    # Exact quotient: int when whole, float otherwise.
    assert AudioFormat(48000, "pcm", 2, 2).bytes_per_ms == 192
    assert AudioFormat(44100, "pcm", 2).bytes_per_ms == pytest.approx(88.2)
    assert AudioFormat(22050, "ulaw", 1).bytes_per_ms == pytest.approx(22.05)
    assert type(AudioFormat(22050, "ulaw", 1).bytes_per_ms) is float


def test_frame_bytes():
    assert PCM16K.frame_bytes(20) == 640
    assert ULAW8K.frame_bytes(20) == 160
    assert PCM16K.frame_bytes(0) == 0
    assert AudioFormat(8000, "pcm", 2).frame_bytes(0.5) == 8
    assert AudioFormat(44100, "pcm", 2, 2).frame_bytes(20) == 882 * 4
    with pytest.raises(
        AudioFormatError, match="10 ms at 22050 Hz is 220.5 samples, not a whole number"
    ):
        AudioFormat(22050, "pcm", 2).frame_bytes(10)
    with pytest.raises(AudioFormatError, match="duration must be >= 0 ms, got -1"):
        PCM16K.frame_bytes(-1)
    with pytest.raises(TypeError, match="ms must be a number of milliseconds, got str"):
        PCM16K.frame_bytes("20")  # type: ignore[arg-type]


def test_duration_ms():
    assert PCM16K.duration_ms(640) == 20.0
    assert ULAW8K.duration_ms(8000) == 1000.0
    assert AudioFormat(8000, "pcm", 2, 2).duration_ms(32) == 1.0
    with pytest.raises(
        AudioFormatError, match="641 bytes is not a whole number of 2-byte sample frames"
    ):
        PCM16K.duration_ms(641)
    with pytest.raises(AudioFormatError, match="byte count must be >= 0, got -2"):
        PCM16K.duration_ms(-2)


def test_shard_limits_other_rates_raise():
    with pytest.raises(AudioFormatError, match="8000 and 16000 Hz only, got 22050 Hz"):
        _ = AudioFormat(22050, "pcm", 2).shard_limits


def test_shard_minimum_is_10ms_of_16bit_pcm():
    # SIS states the limits in bytes per rate; for 16-bit PCM the minimum is exactly 10 ms.
    for name in ("pcm8k16bit", "pcm16k16bit"):
        fmt = AudioFormat.from_sis(name)
        assert fmt.shard_limits[0] == fmt.frame_bytes(10)


# --- WAV round trips --------------------------------------------------------------------------


def _payload(fmt: AudioFormat, n_frames: int) -> bytes:
    rng = np.random.default_rng(n_frames)
    return rng.integers(0, 256, n_frames * fmt.bytes_per_frame).astype(np.uint8).tobytes()


@pytest.mark.parametrize("encoding", ["pcm", "ulaw", "alaw"])
@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_wav_round_trip(tmp_path, encoding, channels, rate):
    fmt = AudioFormat(rate, encoding, 2 if encoding == "pcm" else 1, channels)
    data = _payload(fmt, 161)
    path = tmp_path / "a.wav"
    write_wav(path, fmt, data)
    assert read_wav(path) == WavAudio(fmt, data)
    assert read_wav(str(path)) == WavAudio(fmt, data)
    blob = path.read_bytes()
    assert read_wav(blob).data == data and read_wav(io.BytesIO(blob)).format == fmt
    # RIFF size covers the whole file, and the chunk sizes add up.
    assert struct.unpack_from("<I", blob, 4)[0] == len(blob) - 8


def test_odd_length_data_gets_a_pad_byte():
    blob = wav_bytes(ULAW8K, b"\x01\x02\x03")
    assert len(blob) % 2 == 0 and blob.endswith(b"\x01\x02\x03\x00")
    assert read_wav(blob).data == b"\x01\x02\x03"
    buf = io.BytesIO()
    write_wav(buf, ULAW8K, b"\x01\x02\x03")
    assert buf.getvalue() == blob


def test_g711_wav_has_fact_chunk_and_pcm_is_canonical():
    assert b"fact" in wav_bytes(ULAW8K, b"\x00" * 4)
    pcm = wav_bytes(PCM16K, bytes(640))
    assert len(pcm) == 44 + 640 and b"fact" not in pcm  # the canonical 44-byte header


def test_pcm_wav_interoperates_with_stdlib_wave():
    data = _payload(AudioFormat(22050, "pcm", 2, 2), 100)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(data)
    assert read_wav(buf.getvalue()) == WavAudio(AudioFormat(22050, "pcm", 2, 2), data)
    with wave.open(io.BytesIO(wav_bytes(PCM16K, data)), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.readframes(w.getnframes()) == data


def test_wav_duration():
    assert read_wav(wav_bytes(ULAW8K, bytes(800))).duration_ms == 100.0
    assert "data=<800 bytes>" in repr(read_wav(wav_bytes(ULAW8K, bytes(800))))


# --- hand-built WAVs: every malformed-header branch -------------------------------------------


def _fmt_body(tag=1, channels=1, rate=8000, bits=16, block_align=None, byte_rate=None, extra=b""):
    block_align = channels * bits // 8 if block_align is None else block_align
    byte_rate = rate * block_align if byte_rate is None else byte_rate
    return struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits) + extra


def _ext(
    sub_tag=7, valid_bits=8, guid_tail=b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
):
    return struct.pack("<HHIH", 22, valid_bits, 4, sub_tag) + guid_tail


def _chunk(cid: bytes, body: bytes, size: int | None = None) -> bytes:
    size = len(body) if size is None else size
    return cid + struct.pack("<I", size) + body + (b"\x00" if len(body) % 2 else b"")


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_reads_extensible_subformats():
    ext = _fmt_body(tag=0xFFFE, bits=8, extra=_ext(sub_tag=7))
    assert read_wav(_riff(_chunk(b"fmt ", ext), _chunk(b"data", b"\x01\x02"))) == WavAudio(
        ULAW8K, b"\x01\x02"
    )
    ext = _fmt_body(tag=0xFFFE, bits=16, rate=16000, extra=_ext(sub_tag=1, valid_bits=16))
    assert read_wav(_riff(_chunk(b"fmt ", ext), _chunk(b"data", b"\x01\x02"))).format == PCM16K
    ext = _fmt_body(tag=0xFFFE, bits=8, extra=_ext(sub_tag=6))
    assert read_wav(_riff(_chunk(b"fmt ", ext), _chunk(b"data", b""))).format.encoding == "alaw"


def test_skips_unknown_and_odd_sized_chunks():
    blob = _riff(
        _chunk(b"LIST", b"abc"),
        _chunk(b"fmt ", _fmt_body(tag=7, bits=8)),
        _chunk(b"junk", b"x" * 5),
        _chunk(b"data", b"\x05\x06"),
    )
    assert read_wav(blob) == WavAudio(ULAW8K, b"\x05\x06")


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_streaming_placeholder_data_size_uses_real_length(placeholder):
    fmt = _chunk(b"fmt ", _fmt_body())
    blob = _riff(fmt) + b"data" + struct.pack("<I", placeholder) + b"\x01\x00\x02\x00\x03"
    # The real remaining length, cut to whole 2-byte frames.
    assert read_wav(blob).data == b"\x01\x00\x02\x00"


def test_empty_data_chunk_at_end_is_empty():
    assert read_wav(_riff(_chunk(b"fmt ", _fmt_body()), _chunk(b"data", b""))).data == b""


FMT_PCM = _chunk(b"fmt ", _fmt_body())


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"RIFF\x00\x00", r"not a WAV file: 6 bytes, a RIFF header needs 12"),
        (
            b"RIFX" + b"\x00" * 4 + b"WAVE",
            r"expected b'RIFF' at byte 0 and b'WAVE' at byte 8, got b'RIFX'",
        ),
        (b"RIFF" + b"\x00" * 4 + b"AVI ", r"got b'RIFF' and b'AVI '"),
        (_riff(FMT_PCM) + b"dat", r"truncated chunk header at byte 36: 3 bytes left, 8 needed"),
        (
            _riff(_chunk(b"fmt ", _fmt_body(), size=40)),
            r"truncated WAV: b'fmt ' chunk at byte 12 declares 40 bytes, only 16 follow",
        ),
        (
            _riff(_chunk(b"fmt ", b"\x01\x00" * 6)),
            r"fmt chunk at byte 12 is 12 bytes, expected >= 16",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(tag=0xFFFE, bits=8, extra=b"\x00\x00"))),
            r"WAVE_FORMAT_EXTENSIBLE fmt chunk is 18 bytes, expected 40",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(tag=0xFFFE, bits=8, extra=_ext(sub_tag=3)))),
            r"unsupported WAVE_FORMAT_EXTENSIBLE subformat 0300",
        ),
        (
            _riff(
                _chunk(b"fmt ", _fmt_body(tag=0xFFFE, bits=8, extra=_ext(guid_tail=b"\x01" * 14)))
            ),
            r"unsupported WAVE_FORMAT_EXTENSIBLE subformat",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(tag=0xFFFE, bits=8, extra=_ext(valid_bits=12)))),
            r"valid bits per sample 12 exceed the container's 8",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(tag=3, bits=32))),
            r"unsupported WAV format tag 0x0003; expected 1 \(PCM\), 6 \(A-law\), 7 \(u-law\)",
        ),
        (_riff(_chunk(b"fmt ", _fmt_body(tag=0x11, bits=4))), r"unsupported WAV format tag 0x0011"),
        (
            _riff(_chunk(b"fmt ", _fmt_body(bits=8))),
            r"unsupported sample width: 8-bit pcm; expected 16-bit \(fmt chunk at byte 12\)",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(bits=24))),
            r"unsupported sample width: 24-bit pcm; expected 16-bit",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(tag=7, bits=16))),
            r"unsupported sample width: 16-bit ulaw; expected 8-bit",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(channels=0, block_align=2))),
            r"WAV header has 0 channels at 8000 Hz",
        ),
        (_riff(_chunk(b"fmt ", _fmt_body(rate=0))), r"WAV header has 1 channels at 0 Hz"),
        (
            _riff(_chunk(b"fmt ", _fmt_body(block_align=4))),
            r"inconsistent WAV header: block align 4 and byte rate 32000, expected 2 and 16000",
        ),
        (
            _riff(_chunk(b"fmt ", _fmt_body(byte_rate=8000))),
            r"inconsistent WAV header: block align 2 and byte rate 8000, expected 2 and 16000",
        ),
        (
            _riff(_chunk(b"data", b"\x00\x00"), FMT_PCM),
            r"data chunk at byte 12 comes before any fmt chunk",
        ),
        (_riff(_chunk(b"LIST", b"ab")), r"WAV file has no fmt chunk"),
        (_riff(FMT_PCM), r"WAV file has no data chunk"),
        (_riff(FMT_PCM, FMT_PCM), r"second fmt chunk at byte 36"),
        (
            _riff(FMT_PCM, _chunk(b"data", b"\x00\x00\x00")),
            r"data chunk at byte 36 holds 3 bytes, not a whole number of 2-byte sample frames",
        ),
        (
            _riff(FMT_PCM, _chunk(b"data", b"\x00" * 4, size=100)),
            r"truncated WAV: data chunk at byte 36 declares 100 bytes, only 4 follow",
        ),
    ],
)
def test_rejects_malformed(blob, match):
    with pytest.raises(AudioFormatError, match=match):
        read_wav(blob)


def test_read_wav_type_errors():
    with pytest.raises(
        TypeError, match="read_wav expects a path, bytes or a binary file object, got int"
    ):
        read_wav(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="the file object must be binary, read\\(\\) gave str"):
        read_wav(io.StringIO("RIFF"))  # type: ignore[arg-type]


def test_write_wav_errors(tmp_path):
    with pytest.raises(
        AudioFormatError, match="3 bytes is not a whole number of 2-byte sample frames"
    ):
        write_wav(tmp_path / "x.wav", PCM16K, b"abc")
    with pytest.raises(TypeError, match="fmt must be an AudioFormat, got str"):
        wav_bytes("pcm16k16bit", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be bytes-like, got list"):
        wav_bytes(PCM16K, [0, 0])  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="write_wav expects a path or a binary file object, got int"
    ):
        write_wav(5, PCM16K, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got StringIO"):
        write_wav(io.StringIO(), PCM16K, b"")  # type: ignore[arg-type]
