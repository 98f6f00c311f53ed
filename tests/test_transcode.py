"""Transcoder: G.711 / PCM between SIS formats, streaming == one-shot, no float at equal rates."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from sis_stream.audio import codec
from sis_stream.audio.formats import SIS_FORMATS, AudioFormat
from sis_stream.errors import AudioFormatError, StreamClosedError
from sis_stream.audio.resample import output_length, resample
from sis_stream.audio.transcode import Transcoder, transcode


def _pcm(n: int, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
    return (x * 32767).astype(np.int16)


def _as(fmt: str, pcm: np.ndarray) -> bytes:
    enc = AudioFormat.from_sis(fmt).encoding
    return pcm.astype("<i2").tobytes() if enc == "pcm" else codec.encode(pcm, enc).tobytes()


@pytest.mark.parametrize("dst", SIS_FORMATS)
@pytest.mark.parametrize("src", SIS_FORMATS)
def test_every_sis_pair_matches_decode_resample_encode(backend, src, dst):
    # Independent composition of the pieces, and stream (odd chunk sizes) == one-shot.
    s, d = AudioFormat.from_sis(src), AudioFormat.from_sis(dst)
    data = _as(src, _pcm(777, s.rate_hz))
    pcm = (np.frombuffer(data, "<i2").astype(np.int16) if s.encoding == "pcm"
           else codec.decode(np.frombuffer(data, np.uint8), s.encoding))
    if s.rate_hz != d.rate_hz:
        pcm = resample(pcm, s.rate_hz, d.rate_hz)
    expected = _as(dst, pcm)
    assert transcode(data, src, dst) == expected
    assert len(expected) == output_length(777, s.rate_hz, d.rate_hz) * d.sample_width
    tc = Transcoder(s, d)
    out = b"".join(tc.process(data[i : i + 161]) for i in range(0, len(data), 161)) + tc.flush()
    assert out == expected


def test_g711_same_rate_never_goes_through_float(monkeypatch):
    # u-law <-> A-law at one rate: through int16 PCM only, exactly decode-then-encode.
    # (the package exports the transcode() function under the submodule's name)
    tmod = importlib.import_module("sis_stream.audio.transcode")

    def no_resampler(*a, **k):
        raise AssertionError("a resampler was built for an equal-rate transcode")

    monkeypatch.setattr(tmod, "StreamResampler", no_resampler)
    codes = np.arange(256, dtype=np.uint8).tobytes()
    out = transcode(codes, "ulaw8k8bit", "alaw8k8bit")
    assert out == codec.alaw_encode(codec.ulaw_decode(codes))
    assert transcode(codes, "alaw16k8bit", "pcm16k16bit") == codec.alaw_decode(codes)


def test_ulaw8k_to_pcm16k_frame_sizes():
    # The telephony path: 20 ms u-law frames in, 16 kHz PCM out; 1 s in -> 1 s out.
    tc = Transcoder("ulaw8k8bit", "pcm16k16bit")
    frames = [codec.ulaw_encode(_pcm(160, 8000, seed=i)).tobytes() for i in range(50)]
    out = b"".join(tc.process(f) for f in frames) + tc.flush()
    assert len(out) == 16000 * 2
    assert tc.delay > 0 and tc.clips == 0


def test_pcm_odd_byte_split_and_wider_source_rates():
    # A sample split across chunks is carried; AudioFormat sources at 44.1 kHz work too.
    src = AudioFormat(44100, "pcm", 2)
    data = _pcm(4410, 44100).astype("<i2").tobytes()
    expected = transcode(data, src, "pcm16k16bit")
    tc = Transcoder(src, "pcm16k16bit")
    out = tc.process(data[:1001]) + tc.process(data[1001:2002]) + tc.process(data[2002:])
    assert out + tc.flush() == expected
    tc = Transcoder("pcm8k16bit", "pcm8k16bit")
    assert tc.process(b"\x01") + tc.process(b"\x02\x03") == b"\x01\x02"
    with pytest.raises(AudioFormatError, match="middle of a sample"):
        tc.flush()


def test_bad_input():
    with pytest.raises(AudioFormatError, match="unknown SIS audio_format 'mp3'"):
        Transcoder("mp3", "pcm16k16bit")
    with pytest.raises(TypeError, match="src must be an AudioFormat or a SIS audio_format name"):
        Transcoder(8000, "pcm16k16bit")
    with pytest.raises(AudioFormatError, match="mono audio only"):
        Transcoder(AudioFormat(16000, "pcm", 2, channels=2), "pcm16k16bit")
    with pytest.raises(AudioFormatError, match="unsupported resampling 8000 Hz -> 48000 Hz"):
        Transcoder("pcm8k16bit", AudioFormat(48000, "pcm", 2))
    tc = Transcoder("ulaw8k8bit", "pcm16k16bit")
    with pytest.raises(TypeError, match="data must be bytes-like, got list"):
        tc.process([1, 2, 3])
    tc.flush()
    with pytest.raises(StreamClosedError, match=r"process\(\) after flush\(\)"):
        tc.process(b"\xff")
    with pytest.raises(StreamClosedError, match=r"flush\(\) after flush\(\)"):
        tc.flush()
    tc.reset()
    assert len(tc.process(b"\xff" * 160) + tc.flush()) == 640
