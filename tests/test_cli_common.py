"""CLI plumbing: the exit-code policy, secret scrubbing, audio input from files and streams."""

from __future__ import annotations

import asyncio
import io
import struct

import numpy as np
import pytest

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.cli import _common as c
from sis_stream.errors import (
    AudioFormatError,
    AuthRejected,
    EngineUnavailableError,
    RemoteProtocolError,
    RequestRejected,
    SisAuthError,
    SisConnectionError,
    SisServerError,
)
from sis_stream.engines.espeak import EspeakUnavailableError


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (c.CliError("x", 2), 2),
        (c.InputError("x"), 3),
        (AudioFormatError("bad tag"), 3),
        (FileNotFoundError(2, "No such file", "a.wav"), 3),
        (SisAuthError("APIG.0301", "bad signature"), 4),
        (AuthRejected("no", reason="missing"), 4),
        (SisServerError("SIS.0304", "timeout"), 5),
        (RemoteProtocolError("garbage"), 5),
        (SisConnectionError("refused"), 5),
        (EngineUnavailableError("no model"), 5),
        (EspeakUnavailableError("no espeak"), 5),
        (RequestRejected("SIS.0032", "'vad_tail' is invalid"), 2),
        (KeyboardInterrupt(), 130),
        (asyncio.CancelledError(), 130),
        (ZeroDivisionError("bug"), 1),
    ],
)
def test_exit_code_policy(exc: BaseException, code: int) -> None:
    assert c.exit_code_for(exc) == code


def test_guarded_prints_one_scrubbed_line(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    c.register_secret("s3cr3t-value")
    c.register_secret("abc")  # too short to scrub safely: ignored

    def body(args: argparse.Namespace) -> int:
        raise SisConnectionError("connect to wss://h?X-Auth-Token=s3cr3t-value\nfailed")

    assert c.guarded("transcribe", body)(argparse.Namespace()) == 5
    err = capsys.readouterr().err
    assert err == "sis-stream transcribe: error: connect to wss://h?X-Auth-Token=*** failed\n"

    def bug(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("division by zero")

    assert c.guarded("vad", bug)(argparse.Namespace()) == 1
    assert "internal error: ZeroDivisionError: division by zero (rerun with --debug" in capsys.readouterr().err


def test_open_audio_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fmt = AudioFormat(44100, "pcm", 2, 2)
    p = tmp_path / "s.wav"
    p.write_bytes(wav_bytes(fmt, np.zeros(4410 * 2, np.int16).tobytes()))
    src = c.open_audio(str(p))  # several channels are mixed down to mono on reading
    assert src.source_format == fmt and src.format == AudioFormat(44100, "pcm", 2)
    assert src.total_ms == pytest.approx(100)
    assert src.description == "pcm 44100 Hz 16-bit x2 mixed to mono"
    assert [len(b) for b in src.chunks(40)] == [3528, 3528, 1764]
    raw = tmp_path / "r.raw"
    raw.write_bytes(b"\x01\x02\x03")  # one and a half PCM samples: the stray byte is dropped
    src = c.open_audio(str(raw), AudioFormat.from_sis("pcm8k16bit"))
    assert src.data == b"\x01\x02"
    raw.write_bytes(b"\x01")
    with pytest.raises(c.InputError, match="less than one pcm8k16bit sample"):
        c.open_audio(str(raw), AudioFormat.from_sis("pcm8k16bit"))


async def _collect(src: c.AudioSource, ms: int = 100) -> bytes:
    return b"".join([b async for b in src.achunks(ms)])


async def test_stream_wav_reads_as_it_arrives() -> None:
    # A WAV on a stream: the header is validated by read_wav, then the data is delivered in whole
    # sample frames; extra chunks before 'data' are skipped.
    fmt = AudioFormat.from_sis("pcm16k16bit")
    pcm = np.arange(3200, dtype=np.int16).tobytes()
    blob = bytearray(wav_bytes(fmt, pcm))
    blob[36:36] = b"LIST" + struct.pack("<I", 4) + b"INFO"  # an extra chunk before data
    struct.pack_into("<I", blob, 4, len(blob) - 8)
    src = c.open_audio("-", stdin=io.BytesIO(bytes(blob) + b"trailing junk"))
    assert src.format == fmt and src.total_bytes == len(pcm)
    assert await _collect(src) == pcm  # stops at the declared size
    assert src.truncated is None


async def test_stream_wav_truncated_and_placeholder_sizes() -> None:
    fmt = AudioFormat.from_sis("ulaw8k8bit")
    blob = wav_bytes(fmt, bytes(range(256)) * 4)
    src = c.open_audio("-", stdin=io.BytesIO(blob[:-100]))
    assert len(await _collect(src)) == 924
    assert src.truncated is not None and "declares 1024 bytes" in src.truncated
    # A streaming writer's 0xFFFFFFFF placeholder: read to the end of the stream.
    at = blob.index(b"data") + 4
    live = blob[:at] + struct.pack("<I", 0xFFFFFFFF) + blob[at + 4:]
    src = c.open_audio("-", stdin=io.BytesIO(live))
    assert src.total_bytes is None and len(await _collect(src)) == 1024 and src.truncated is None


@pytest.mark.parametrize(
    ("blob", "exc", "msg"),
    [
        (b"", c.InputError, "not a RIFF/WAVE stream"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00", c.InputError, "ended before the data chunk"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", c.InputError, "declares 16 bytes"),
        (b"RIFF\x00\x00\x00\x00WAVEJUNK\xff\xff\xff\x00", c.InputError, "is not accepted on a stream"),
        (b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00", AudioFormatError, "before any fmt chunk"),
    ],
)
def test_stream_wav_header_errors(blob: bytes, exc: type[Exception], msg: str) -> None:
    with pytest.raises(exc, match=msg):
        c.open_audio("-", stdin=io.BytesIO(blob))


async def test_raw_stream_stray_bytes_and_empty() -> None:
    src = c.open_audio("-", AudioFormat.from_sis("pcm8k16bit"), stdin=io.BytesIO(b"\x00" * 3201))
    assert len(await _collect(src)) == 3200
    assert src.warnings == ["stdin ended inside a sample frame (1 stray byte(s) dropped)"]
    src = c.open_audio("-", AudioFormat.from_sis("pcm8k16bit"), stdin=io.BytesIO(b""))
    with pytest.raises(c.InputError, match="holds no audio"):
        await _collect(src)


async def test_stereo_stream_is_mixed_to_mono() -> None:
    fmt = AudioFormat(8000, "ulaw", 1, 2)
    from sis_stream.audio.codec import ulaw_decode, ulaw_encode

    left = np.full(800, 1000, np.int16)
    right = np.full(800, 3000, np.int16)
    codes = ulaw_encode(np.stack([left, right], 1).ravel().tobytes())
    src = c.open_audio("-", stdin=io.BytesIO(wav_bytes(fmt, codes)))
    assert src.format == AudioFormat.from_sis("pcm8k16bit") and src.total_bytes == 1600
    mono = np.frombuffer(await _collect(src, 30), "<i2")
    expect = (np.frombuffer(ulaw_decode(codes), "<i2").reshape(-1, 2).astype(int).mean(1))
    assert len(mono) == 800 and np.array_equal(mono, np.round(expect).astype(np.int16))
    assert src.truncated is None


def test_to_mono_mixes_channels() -> None:
    x = np.array([100, 300, -5, -6], np.int16).tobytes()
    data, fmt = c.to_mono(x, AudioFormat(8000, "pcm", 2, 2))
    assert np.frombuffer(data, "<i2").tolist() == [200, -6] and fmt.channels == 1  # -5.5 -> -6 (half to even)
    same = b"\x01\x02"
    assert c.to_mono(same, AudioFormat(8000, "pcm", 2)) == (same, AudioFormat(8000, "pcm", 2))
