"""Framer: frame geometry in the SIS shard limits, sample alignment, overflow policies, flush."""

from __future__ import annotations

import ast
import inspect
import itertools
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sis_stream.client import framing
from sis_stream.audio.formats import AudioFormat
from sis_stream.errors import AudioFormatError, BufferFullError, StreamClosedError
from sis_stream.client.framing import Framer, FramerStats

# Bytes per millisecond and (min, max) frame_ms inside the SIS shard limits (protocol §5:
# 8 kHz 160-32768 bytes per frame, 16 kHz 320-65536), written out from the spec.
SIS_FORMATS = {
    "ulaw8k8bit": (8, 20, 4096),
    "alaw8k8bit": (8, 20, 4096),
    "pcm8k16bit": (16, 10, 2048),
    "ulaw16k8bit": (16, 20, 4096),
    "alaw16k8bit": (16, 20, 4096),
    "pcm16k16bit": (32, 10, 2048),
}
SHARD = {8: (160, 32768), 16: (320, 65536)}  # by kHz
SILENCE = {"ulaw": b"\xff", "alaw": b"\xd5", "pcm": b"\x00"}


def pattern(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def conserved(fr: Framer) -> bool:
    s = fr.stats
    return s.bytes_in == s.bytes_out + s.bytes_dropped + s.bytes_discarded + s.buffered_bytes


# -- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SIS_FORMATS)
def test_shard_limit_boundaries(name):
    # The shortest and longest legal frame of each format are accepted, one ms less/more is not.
    bpm, lo_ms, hi_ms = SIS_FORMATS[name]
    lo, hi = SHARD[8 if "8k" in name else 16]
    assert Framer(name, lo_ms).frame_bytes == lo_ms * bpm >= lo
    assert Framer(name, hi_ms).frame_bytes == hi_ms * bpm <= hi
    with pytest.raises(
        AudioFormatError,
        match=rf"frame_ms={lo_ms - 1} gives {(lo_ms - 1) * bpm}-byte frames of {name}, outside "
        rf"the SIS shard limits of {lo}-{hi} bytes .*expected {lo_ms}-{hi_ms} ms",
    ):
        Framer(name, lo_ms - 1)
    with pytest.raises(
        AudioFormatError,
        match=rf"frame_ms={hi_ms + 1} gives {(hi_ms + 1) * bpm}-byte frames .*{lo}-{hi} bytes",
    ):
        Framer(name, hi_ms + 1)


@pytest.mark.parametrize("name", SIS_FORMATS)
@pytest.mark.parametrize("frame_ms", [10, 20, 40, 100, 500, 1000, 2048])
def test_frame_sizes(name, frame_ms):
    # Whole frames are exactly frame_ms of audio; the stream is cut on a fixed grid.
    bpm, lo_ms, hi_ms = SIS_FORMATS[name]
    if not lo_ms <= frame_ms <= hi_ms:
        with pytest.raises(AudioFormatError, match="outside the SIS shard limits"):
            Framer(name, frame_ms)
        return
    fr = Framer(name, frame_ms, max_buffer_ms=3 * frame_ms)
    fb = frame_ms * bpm
    data = pattern(2 * fb + fb // 2 + 1)
    frames = fr.process(data)
    assert [len(f) for f in frames] == [fb, fb]
    assert b"".join(frames) == data[: 2 * fb]
    assert fr.buffered_bytes == fb // 2 + 1
    assert fr.stats.frames_out == 2 and fr.stats.bytes_out == 2 * fb


def test_accepts_audio_format_object_and_name():
    fmt = AudioFormat.from_sis("pcm16k16bit")
    a, b = Framer(fmt, 20), Framer("pcm16k16bit", 20)
    assert a.audio_format == b.audio_format == fmt
    assert a.frame_bytes == b.frame_bytes == 640
    assert Framer("ulaw8k8bit").frame_ms == 100  # default 100 ms


def test_default_and_explicit_buffer_bound():
    assert Framer("ulaw8k8bit", 100).capacity == 2000 * 8
    assert Framer("ulaw8k8bit", 1500).capacity == 3000 * 8  # at least two frames
    assert Framer("ulaw8k8bit", 100, max_buffer_ms=100).capacity == 800


# -- sample alignment ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pcm8k16bit", "pcm16k16bit"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 159, 161, 4095])
def test_odd_chunks_never_split_a_sample(name, chunk):
    # Odd-sized chunks of 16-bit PCM still come out as whole little-endian samples, in order.
    fr = Framer(name, 10)
    samples = (np.arange(8000, dtype=np.int16) * 7 - 20000).astype("<i2")
    data = samples.tobytes()
    out = []
    for i in range(0, len(data), chunk):
        out.extend(fr.process(data[i : i + chunk]))
    out.extend(fr.flush())
    assert all(len(f) % 2 == 0 for f in out)
    assert np.array_equal(np.frombuffer(b"".join(out), "<i2"), samples)


def test_flush_discards_an_incomplete_trailing_sample(caplog):
    fr = Framer("pcm8k16bit", 10)
    fr.feed(b"\x01\x02" * 100 + b"\x03")  # 201 bytes: 100 samples and half of one
    with caplog.at_level(logging.WARNING, logger="sis_stream.client.framing"):
        out = fr.flush()
    assert out == [b"\x01\x02" * 80, b"\x01\x02" * 20]  # a 160-byte frame and the rest
    assert fr.stats.bytes_discarded == 1 and conserved(fr)
    assert "discarded 1 byte(s) of an incomplete 2-byte sample" in caplog.text


# -- flush ---------------------------------------------------------------------------------


def test_flush_emits_short_last_frame_as_is():
    # Shorter than the 160-byte shard minimum, and still sent (the official SDK does this).
    fr = Framer("ulaw8k8bit", 20)
    out = fr.process(pattern(400))
    assert [len(f) for f in out] == [160, 160]
    last = fr.flush()
    assert last == [pattern(400)[320:]] and len(last[0]) == 80
    assert fr.stats.frames_out == 3 and fr.stats.bytes_out == 400 and fr.stats.bytes_padded == 0


@pytest.mark.parametrize("name", SIS_FORMATS)
def test_flush_pads_with_silence_of_the_encoding(name):
    fr = Framer(name, 20, pad_last=True)
    silence = SILENCE["pcm" if name.startswith("pcm") else name[:4]]
    fb = fr.frame_bytes
    fr.feed(b"\x10\x20" * 5)
    (frame,) = fr.flush()
    assert len(frame) == fb
    assert frame == b"\x10\x20" * 5 + silence * (fb - 10)
    assert fr.stats.bytes_padded == fb - 10 and fr.stats.bytes_out == 10


def test_silence_bytes_are_g711_silence():
    assert framing.SILENCE_BYTE == {"pcm": 0x00, "ulaw": 0xFF, "alaw": 0xD5}


def test_flush_returns_waiting_frames_and_nothing_when_empty():
    fr = Framer("ulaw8k8bit", 20, pad_last=True)
    fr.feed(pattern(320))
    assert fr.flush() == [pattern(320)[:160], pattern(320)[160:]]  # no padded empty frame
    fr.reset()
    assert fr.flush() == []


def test_lifecycle_after_flush_and_reset():
    fr = Framer("alaw8k8bit", 20)
    fr.feed(b"\x00" * 500)
    fr.flush()
    assert fr.closed
    with pytest.raises(StreamClosedError, match=r"feed\(\) after flush\(\); call reset\(\)"):
        fr.feed(b"\x00")
    with pytest.raises(StreamClosedError, match=r"flush\(\) twice"):
        fr.flush()
    assert fr.pop() is None and list(fr.frames()) == []
    fr.reset()
    assert not fr.closed and fr.stats == FramerStats(0, 0, 0, 0, 0.0, 0, 0, 0, 0, 0)
    assert fr.process(b"\x01" * 160) == [b"\x01" * 160]


# -- overflow policies ---------------------------------------------------------------------


def test_block_takes_what_fits_and_loses_nothing():
    fr = Framer("ulaw8k8bit", 20, max_buffer_ms=60, overflow="block")  # 480 bytes
    data = pattern(1000)
    assert fr.feed(data[:300]) == 300
    assert fr.room == 180
    taken = fr.feed(data[300:])
    assert taken == 180 and fr.room == 0 and fr.frames_ready == 3
    s = fr.stats
    assert s.overruns == 1 and s.bytes_refused == 520 and s.bytes_in == 480 and s.bytes_dropped == 0
    assert fr.feed(data[480:]) == 0  # still full: refuses again, nothing is taken
    assert fr.stats.overruns == 2
    assert fr.pop() == data[:160] and fr.room == 160
    assert fr.feed(data[480:]) == 160
    out = [data[:160]] + list(fr.frames()) + fr.flush()
    assert b"".join(out) == data[:640]


def test_block_feed_loop_delivers_everything():
    # The async layer's loop (feed, take frames while blocked, feed the rest) is lossless.
    fr = Framer("pcm8k16bit", 10, max_buffer_ms=30, overflow="block")
    data = pattern(10_001)
    out, pos = [], 0
    while pos < len(data):
        pos += fr.feed(data[pos : pos + 999])
        if fr.room == 0:
            out.append(fr.pop())
    out += list(fr.frames()) + fr.flush()
    assert b"".join(out) == data[:10_000] and fr.stats.bytes_discarded == 1


def test_error_raises_with_sizes_and_takes_nothing():
    fr = Framer("ulaw8k8bit", 20, max_buffer_ms=60, overflow="error")
    fr.feed(pattern(400))
    with pytest.raises(
        BufferFullError,
        match=r"Framer buffer full: chunk of 100 bytes offered, 80 bytes free of 480 \(60 ms\); "
        r"400 bytes buffered, 2 whole frames not taken",
    ):
        fr.feed(pattern(100))
    s = fr.stats
    assert (
        s.buffered_bytes == 400 and s.bytes_in == 400 and s.overruns == 1 and s.bytes_refused == 100
    )
    assert fr.feed(pattern(80)) == 80  # exactly full is fine


def test_drop_oldest_discards_whole_oldest_frames():
    fr = Framer("ulaw8k8bit", 20, max_buffer_ms=60, overflow="drop_oldest")  # 3 frames
    data = pattern(1000)
    assert fr.feed(data[:450]) == 450
    assert fr.feed(data[450:550]) == 100  # 550 > 480: the oldest frame (160 bytes) goes
    s = fr.stats
    assert s.bytes_dropped == 160 and s.dropped_ms == 20.0 and s.overruns == 1
    assert fr.buffered_bytes == 390
    assert list(fr.frames()) == [data[160:320], data[320:480]]  # still on the 160-byte grid
    assert conserved(fr)


def test_drop_oldest_with_a_chunk_larger_than_the_buffer():
    fr = Framer("pcm16k16bit", 10, max_buffer_ms=20, overflow="drop_oldest")  # 2 x 320 bytes
    data = pattern(2000)
    fr.feed(data[:100])
    assert fr.feed(data[100:]) == 1900  # keeps the newest audio, cut on the frame grid
    assert fr.stats.bytes_dropped == 1600 and fr.stats.dropped_ms == 50.0
    assert list(fr.frames()) == [data[1600:1920]]
    assert fr.flush() == [data[1920:]]
    assert conserved(fr)


def test_process_never_overflows_whatever_the_policy():
    for policy in framing.OVERFLOW_POLICIES:
        fr = Framer("ulaw8k8bit", 20, max_buffer_ms=20, overflow=policy)
        data = pattern(5000)
        out = fr.process(data) + fr.flush()
        assert b"".join(out) == data and fr.stats.overruns == 0, policy


def test_accepts_bytes_like_input():
    fr = Framer("pcm8k16bit", 10)
    pcm = np.arange(80, dtype="<i2")
    assert fr.feed(memoryview(pcm)) == 160  # a memoryview is taken as raw bytes
    assert fr.feed(bytearray(b"\x00\x00")) == 2
    assert fr.feed(memoryview(b"\x01\x02\x03")[1:]) == 2
    assert fr.pop() == pcm.tobytes()


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (
            (b"ulaw8k8bit",),
            {},
            TypeError,
            "audio_format must be an AudioFormat or a SIS format name .* got bytes",
        ),
        ((8000,), {}, TypeError, "got int"),
        (
            ("ulaw8k8bit", 20.0),
            {},
            TypeError,
            "frame_ms must be an int number of milliseconds, got float",
        ),
        (("ulaw8k8bit", True), {}, TypeError, "frame_ms must be an int .* got bool"),
        (("ulaw8k8bit", 0), {}, AudioFormatError, "frame_ms must be > 0, got 0"),
        (("ulaw8k8bit", -20), {}, AudioFormatError, "frame_ms must be > 0, got -20"),
        (
            ("ulaw8k8bit", 100),
            {"max_buffer_ms": 99},
            AudioFormatError,
            r"max_buffer_ms must be >= frame_ms=100 .* got 99",
        ),
        (
            ("ulaw8k8bit", 100),
            {"max_buffer_ms": 1.5},
            TypeError,
            "max_buffer_ms must be an int .* got float",
        ),
        (
            ("ulaw8k8bit",),
            {"overflow": "drop_newest"},
            ValueError,
            r"overflow must be one of \('block', 'drop_oldest', 'error'\), got 'drop_newest'",
        ),
        (("ulaw8k8bit",), {"overflow": None}, TypeError, "overflow must be a str, got NoneType"),
        (("ulaw8k8bit",), {"pad_last": 1}, TypeError, "pad_last must be a bool, got int"),
    ],
)
def test_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Framer(*args, **kwargs)


def test_only_sis_session_formats_are_framed():
    with pytest.raises(AudioFormatError, match="unknown SIS audio_format 'pcm44k16bit'"):
        Framer("pcm44k16bit")
    with pytest.raises(AudioFormatError, match="SIS accepts mono audio at 8000 or 16000 Hz only"):
        Framer(AudioFormat(22050, "pcm", 2))
    with pytest.raises(AudioFormatError, match=r"2 channel\(s\) at 16000 Hz"):
        Framer(AudioFormat(16000, "pcm", 2, channels=2))


@pytest.mark.parametrize(
    ("chunk", "exc", "match"),
    [
        ("abc", TypeError, "chunk must be bytes, bytearray or memoryview, got str"),
        (np.zeros(4, np.int16), TypeError, "got ndarray"),
        ([1, 2], TypeError, "got list"),
        (None, TypeError, "got NoneType"),
        (memoryview(bytes(8))[::2], ValueError, "chunk memoryview must be C-contiguous"),
    ],
)
@pytest.mark.parametrize("method", ["feed", "process"])
def test_bad_chunks(chunk, exc, match, method):
    fr = Framer("ulaw8k8bit", 20)
    with pytest.raises(exc, match=match):
        getattr(fr, method)(chunk)
    assert fr.stats.bytes_in == 0


def test_repr_and_properties():
    fr = Framer("alaw16k8bit", 40, overflow="error")
    assert fr.overflow == "error" and fr.frame_ms == 40 and fr.frame_bytes == 640
    assert repr(fr).startswith("Framer('alaw16k8bit', frame_ms=40")
    assert "overflow='error'" in repr(fr)


def test_framing_is_sans_io():
    # House style A/J6: the framer never imports an event loop or a transport.
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(framing))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"asyncio", "aiohttp", "threading", "trio"}


# -- properties (hypothesis) ---------------------------------------------------------------

FORMAT_NAMES = st.sampled_from(sorted(SIS_FORMATS))


@st.composite
def chunkings(draw, data_len_max=6000):
    data = draw(st.binary(min_size=0, max_size=data_len_max))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=40)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=FORMAT_NAMES,
    frame_ms=st.sampled_from([10, 20, 30, 100]),
    dc=chunkings(),
    pad=st.booleans(),
)
def test_any_chunking_gives_the_same_frames(name, frame_ms, dc, pad):
    data, chunks = dc
    frame_ms = max(frame_ms, SIS_FORMATS[name][1])
    one = Framer(name, frame_ms, pad_last=pad)
    ref = one.process(data) + one.flush()
    fr = Framer(name, frame_ms, pad_last=pad, max_buffer_ms=frame_ms)
    out = []
    for c in chunks:
        out += fr.process(c)
    out += fr.flush()
    assert out == ref
    fb = fr.frame_bytes
    sample = 2 if name.startswith("pcm") else 1
    whole = len(data) - len(data) % sample
    assert b"".join(out)[:whole] == data[:whole]  # the stream itself, in order
    assert all(len(f) == fb for f in out[:-1])
    assert fr.stats.bytes_out == whole and conserved(fr)


@settings(max_examples=200, deadline=None)
@given(
    name=FORMAT_NAMES,
    policy=st.sampled_from(framing.OVERFLOW_POLICIES),
    max_frames=st.integers(1, 4),
    ops=st.lists(st.one_of(st.integers(0, 2500), st.just("pop"), st.just("frames")), max_size=60),
)
def test_bytes_are_conserved_and_frames_stay_on_the_grid(name, policy, max_frames, ops):
    frame_ms = SIS_FORMATS[name][1]
    fr = Framer(name, frame_ms, max_buffer_ms=max_frames * frame_ms, overflow=policy)
    fb = fr.frame_bytes
    stream = pattern(60 * 2500, seed=5)
    fed = 0  # bytes of `stream` accepted so far (the caller re-offers refused bytes)
    out: list[bytes] = []
    for op in ops:
        if op == "pop":
            f = fr.pop()
            if f is not None:
                out.append(f)
        elif op == "frames":
            out.extend(fr.frames())
        else:
            try:
                fed += fr.feed(stream[fed : fed + op])
            except BufferFullError:
                assert policy == "error"
        assert fr.buffered_bytes <= fr.capacity
        assert conserved(fr)
        assert fr.stats.bytes_in == fed
    out.extend(fr.flush())
    s = fr.stats
    assert conserved(fr) and s.buffered_bytes == 0
    assert s.bytes_dropped % fb == 0 and s.dropped_ms == s.bytes_dropped / fb * frame_ms
    if policy != "drop_oldest":
        # Nothing accepted is ever lost: the frames are exactly the accepted stream.
        assert s.bytes_dropped == 0
        assert b"".join(out) == stream[: fed - s.bytes_discarded]
    # Every frame is a slice of the stream on the fixed grid, in increasing order.
    grid = [stream[i : i + fb] for i in range(0, fed, fb)]
    k = 0
    for f in out:
        while k < len(grid) and grid[k][: len(f)] != f:
            k += 1
        assert k < len(grid), "frame is not a grid slice of the stream"
        k += 1
