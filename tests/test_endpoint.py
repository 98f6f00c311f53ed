"""Endpointer: SIS endpoint semantics per mode, parameter edges, chunking independence."""

from __future__ import annotations

import numpy as np
import pytest

from sis_stream.audio.endpoint import (
    AUDIO_CAP_MS,
    CloseReason,
    Endpointer,
    ExceededAudio,
    ExceededSilence,
    Mode,
    SegmentAudio,
    SegmentClosed,
    SegmentOpened,
    SilenceCut,
    State,
    VoiceEnd,
    VoiceStart,
)
from sis_stream.errors import AudioFormatError, StreamClosedError


class ExactVad:
    """Frame VAD for exact timing tests: a frame is speech when any sample in it is non-zero."""

    def __init__(self, rate_hz: int = 8000, frame_ms: int = 10) -> None:
        self.rate_hz = rate_hz
        self.frame_len = rate_hz * frame_ms // 1000
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.int16)

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.concatenate((self._pending, x))
        n = len(x) // self.frame_len
        self._pending = x[n * self.frame_len :]
        return (x[: n * self.frame_len].reshape(n, self.frame_len) != 0).any(axis=1)


def script(*parts: tuple[str, int], rate: int = 8000) -> np.ndarray:
    """Concatenate ("s", ms) silence (zeros) and ("v", ms) voice (1000s) parts."""
    return np.concatenate(
        [np.full(rate * ms // 1000, 0 if kind == "s" else 1000, np.int16) for kind, ms in parts]
    )


def exact(mode: str, rate: int = 8000, frame_ms: int = 10, **kw) -> Endpointer:
    return Endpointer(mode, rate, vad=ExactVad(rate, frame_ms), **kw)


def run(ep: Endpointer, x: np.ndarray, chunk: int | None = None, flush: bool = True) -> list:
    chunk = chunk or max(1, len(x))
    ev = []
    for i in range(0, len(x), chunk):
        ev += ep.process(x[i : i + chunk])
    return ev + (ep.flush() if flush else [])


def control(events: list) -> list:
    """Everything but the audio payload events."""
    return [e for e in events if not isinstance(e, SegmentAudio)]


def audio_of(events: list) -> dict[int, np.ndarray]:
    out: dict[int, list] = {}
    for e in events:
        if isinstance(e, SegmentAudio):
            out.setdefault(e.index, []).append(e.pcm)
    return {k: np.concatenate(v) for k, v in out.items()}


# --- sentence mode ------------------------------------------------------------------------------


def test_sentence_voice_start_then_voice_end_at_tail():
    # Onset at 1000 ms, speech ends 2500 ms, tail 500 ms -> close detected at 3000; later speech ignored.
    ep = exact("sentence")
    ev = control(run(ep, script(("s", 1000), ("v", 1500), ("s", 800), ("v", 500), ("s", 200))))
    assert ev == [
        SegmentOpened(1000, 1010, 0, 700),
        VoiceStart(1000, 1010),
        SegmentClosed(2500, 3000, 0, 1000, CloseReason.VAD_TAIL, 700, 3000),
        VoiceEnd(2500, 3000),
    ]
    assert ep.state is State.CLOSED


def test_sentence_pause_shorter_than_tail_keeps_sentence_open():
    # A 490 ms pause does not end a 500 ms tail sentence.
    ev = control(run(exact("sentence"), script(("v", 300), ("s", 490), ("v", 300), ("s", 600))))
    closed = [e for e in ev if isinstance(e, SegmentClosed)]
    assert [(c.start_ms, c.end_ms) for c in closed] == [(0, 1090)]


def test_sentence_audio_after_end_is_ignored():
    ep = exact("sentence", vad_tail=200)
    run(ep, script(("v", 300), ("s", 300)), flush=False)
    assert ep.state is State.ENDED
    assert ep.process(script(("v", 5000))) == []
    assert ep.position_ms == 5600
    assert ep.flush() == []


def test_sentence_exceeded_silence_at_vad_head():
    ev = run(exact("sentence", vad_head=2000), script(("s", 2500), ("v", 500)))
    assert ev == [ExceededSilence(2000, 2000)]


def test_sentence_vad_head_zero_means_60000_ms():
    # Current SIS docs: vad_head=0 is treated as 60000 ms (not "disabled").
    ep = exact("sentence", vad_head=0)
    assert run(ep, script(("s", 59990)), flush=False) == []
    assert ep.process(script(("s", 20))) == [ExceededSilence(60000, 60000)]


def test_sentence_vad_tail_zero_ends_at_first_silent_frame():
    ev = control(run(exact("sentence", vad_tail=0), script(("v", 400), ("s", 10), ("v", 400))))
    assert ev[2] == SegmentClosed(400, 410, 0, 0, CloseReason.VAD_TAIL, 0, 410)
    assert ev[3] == VoiceEnd(400, 410)


def test_sentence_vad_tail_3000():
    x = script(("v", 400), ("s", 2990), ("v", 400), ("s", 3000), ("v", 100))
    ev = control(run(exact("sentence", vad_tail=3000), x))
    assert ev[2] == SegmentClosed(3790, 6790, 0, 0, CloseReason.VAD_TAIL, 0, 6790)


def test_sentence_max_seconds_1():
    ev = control(run(exact("sentence", max_seconds=1), script(("s", 200), ("v", 3000))))
    assert ev[2:] == [
        SegmentClosed(1200, 1200, 0, 200, CloseReason.MAX_SECONDS, 0, 1200),
        VoiceEnd(1200, 1200),
    ]


def test_sentence_max_seconds_counts_pauses_and_ends_at_pause_start():
    # Speech 0-800, pause 300 (< tail), speech to 1200: at 1000 ms max_seconds=1 fires mid-speech.
    ev = control(run(exact("sentence", max_seconds=1), script(("v", 800), ("s", 300), ("v", 400))))
    assert ev[2] == SegmentClosed(800, 1000, 0, 0, CloseReason.MAX_SECONDS, 0, 1000)


def test_sentence_max_seconds_60_loses_to_audio_cap():
    # Onset at 500 ms: 60 s of sentence would need 60.5 s of audio; the 60 s cap comes first.
    ep = exact("sentence", max_seconds=60, rate=8000)
    ev = control(run(ep, script(("s", 500), ("v", 61000))))
    assert ev[2:] == [
        SegmentClosed(60000, 60000, 0, 500, CloseReason.EXCEEDED_AUDIO, 200, 60000),
        ExceededAudio(60000, 60000),
    ]


def test_sentence_max_seconds_60_reached_before_cap():
    ev = control(run(exact("sentence", max_seconds=60), script(("v", 60000))))
    assert ev[2:] == [
        SegmentClosed(60000, 60000, 0, 0, CloseReason.MAX_SECONDS, 0, 60000),
        VoiceEnd(60000, 60000),
    ]


def test_sentence_flush_closes_open_sentence_without_voice_end():
    ev = control(run(exact("sentence"), script(("v", 700), ("s", 205))))
    assert ev[2:] == [SegmentClosed(700, 905, 0, 0, CloseReason.END_OF_STREAM, 0, 905)]


# --- continuous mode ----------------------------------------------------------------------------


def test_continuous_segments_and_no_voice_events():
    x = script(("s", 300), ("v", 1000), ("s", 600), ("v", 700), ("s", 100), ("v", 300), ("s", 700))
    ev = control(run(exact("continuous"), x))
    assert ev == [
        SegmentOpened(300, 310, 0, 0),
        SegmentClosed(1300, 1800, 0, 300, CloseReason.VAD_TAIL, 0, 1800),
        SegmentOpened(1900, 1910, 1, 1800),  # pre-roll stops at the previous segment's audio
        SegmentClosed(3000, 3500, 1, 1900, CloseReason.VAD_TAIL, 1800, 3500),
    ]


def test_continuous_vad_head_cuts_and_continues():
    x = script(("s", 2500), ("v", 500), ("s", 3000))
    ev = control(run(exact("continuous", vad_head=1000, vad_tail=500), x))
    assert ev == [
        SilenceCut(1000, 1000, 0),
        SilenceCut(2000, 2000, 1000),
        SegmentOpened(2500, 2510, 0, 2200),
        SegmentClosed(3000, 3500, 0, 2500, CloseReason.VAD_TAIL, 2200, 3500),
        SilenceCut(4500, 4500, 3500),
        SilenceCut(5500, 5500, 4500),
    ]


def test_continuous_max_seconds_splits_long_speech():
    ev = control(run(exact("continuous", max_seconds=1), script(("v", 2500), ("s", 600))))
    assert [(type(e).__name__, e.timestamp_ms) for e in ev] == [
        ("SegmentOpened", 0), ("SegmentClosed", 1000),
        ("SegmentOpened", 1000), ("SegmentClosed", 2000),
        ("SegmentOpened", 2000), ("SegmentClosed", 2500),
    ]
    assert [e.reason for e in ev if isinstance(e, SegmentClosed)] == [
        CloseReason.MAX_SECONDS, CloseReason.MAX_SECONDS, CloseReason.VAD_TAIL
    ]


def test_continuous_exceeded_audio_at_5_hours():
    # 5 h of audio in 10-minute chunks (the exact VAD keeps this fast); one sample more is over.
    ep = exact("continuous", vad_head=60000, include_audio=False)
    chunk = np.zeros(8000 * 600, np.int16)
    ev = []
    for _ in range(30):
        ev += ep.process(chunk)
    assert ep.position_ms == AUDIO_CAP_MS[Mode.CONTINUOUS] == 18_000_000
    assert not [e for e in ev if not isinstance(e, SilenceCut)]
    assert len(ev) == 300  # one cut per minute
    assert ep.process(np.zeros(1, np.int16)) == [ExceededAudio(18_000_000, 18_000_000)]
    assert ep.process(np.ones(100, np.int16)) == []


# --- short mode ---------------------------------------------------------------------------------


def test_short_whole_stream_is_one_segment_and_vad_params_ignored():
    ep = exact("short", vad_head=100, vad_tail=0, max_seconds=1)
    x = script(("s", 3000), ("v", 2000), ("s", 3000))
    ev = run(ep, x, chunk=777)
    assert control(ev) == [
        SegmentOpened(0, 0, 0, 0),
        SegmentClosed(8000, 8000, 0, 0, CloseReason.END_OF_STREAM, 0, 8000),
    ]
    np.testing.assert_array_equal(audio_of(ev)[0], x)


def test_short_exceeded_audio_at_60_s():
    ep = exact("short")
    ev = run(ep, script(("v", 61000)), chunk=8000 * 7)
    assert control(ev) == [
        SegmentOpened(0, 0, 0, 0),
        SegmentClosed(60000, 60000, 0, 0, CloseReason.EXCEEDED_AUDIO, 0, 60000),
        ExceededAudio(60000, 60000),
    ]
    assert len(audio_of(ev)[0]) == 60 * 8000


# --- stamps, audio, chunking --------------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_boundaries_round_up_to_frames(frame_ms):
    # vad_tail=500 at 30 ms frames needs 17 frames = 510 ms of silence.
    ev = control(run(exact("sentence", frame_ms=frame_ms), script(("v", 600), ("s", 900))))
    tail_frames = -(-500 // frame_ms)
    assert ev[2].detected_ms == 600 + tail_frames * frame_ms
    assert ev[2].end_ms == 600


def test_segment_audio_includes_pre_roll_and_runs_to_detection():
    # Onset 1000 ms, 250 ms pre-roll, close detected at 1500 + 500 ms.
    x = script(("s", 1000), ("v", 500), ("s", 700))
    ev = run(exact("continuous", pre_roll_ms=250), x, chunk=33)
    opened = next(e for e in ev if isinstance(e, SegmentOpened))
    closed = next(e for e in ev if isinstance(e, SegmentClosed))
    pcm = audio_of(ev)[0]
    assert opened.audio_start_ms == 750
    assert (closed.audio_start_ms, closed.audio_end_ms) == (750, 2000)
    np.testing.assert_array_equal(pcm, x[6000:16000])
    first = next(e for e in ev if isinstance(e, SegmentAudio))
    assert first.start_sample == 6000 and not first.pcm.flags.writeable


def test_pre_roll_clipped_at_session_start():
    ev = control(run(exact("sentence", pre_roll_ms=2000), script(("s", 100), ("v", 300), ("s", 600))))
    assert ev[0] == SegmentOpened(100, 110, 0, 0)


@pytest.mark.parametrize("mode", ["sentence", "continuous", "short"])
def test_chunk_size_independence_exact_vad(mode):
    # Same events whether fed 1 ms (8 samples), 7 samples, 1 s or all at once.
    x = script(("s", 700), ("v", 900), ("s", 520), ("v", 60), ("s", 450), ("v", 1300), ("s", 900))
    ref = run(exact(mode, vad_tail=500, max_seconds=1), x)
    for chunk in (8, 7, 8000, 12345):
        ev = run(exact(mode, vad_tail=500, max_seconds=1), x, chunk=chunk)
        assert control(ev) == control(ref), chunk
        for k, pcm in audio_of(ref).items():
            np.testing.assert_array_equal(audio_of(ev)[k], pcm)


def _speechlike(rate: int, seed: int = 5) -> np.ndarray:
    # Seeded noise floor with three harmonic "utterances" (AM, 120 Hz pitch) between silences.
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 60, rate * 9)
    t = np.arange(rate * 9) / rate
    for a, b in ((1.0, 2.2), (2.6, 3.1), (5.0, 7.2)):
        m = (t >= a) & (t < b)
        tone = sum(np.sin(2 * np.pi * 120 * k * t[m]) / k for k in range(1, 12))
        x[m] += 3000 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t[m]))
    return np.round(x).astype(np.int16)


@pytest.mark.parametrize("mode", ["sentence", "continuous"])
def test_chunk_size_independence_energy_vad(backend, mode):
    # The real EnergyVad path (both backends): 1 ms, odd, 1 s and one-shot chunking agree.
    x = _speechlike(16000)
    ref = run(Endpointer(mode, 16000, vad_tail=300), x)
    assert any(isinstance(e, SegmentClosed) for e in ref)  # the signal does make segments
    for chunk in (16, 333, 16000):
        ev = run(Endpointer(mode, 16000, vad_tail=300), x, chunk=chunk)
        assert control(ev) == control(ref), chunk
        for k, pcm in audio_of(ref).items():
            np.testing.assert_array_equal(audio_of(ev)[k], pcm)


def test_energy_vad_finds_the_utterances(backend):
    # Default EnergyVad endpoints land within 30 ms of the synthetic utterances.
    ev = control(run(Endpointer("continuous", 16000, vad_tail=300), _speechlike(16000)))
    segs = [(e.start_ms, e.end_ms) for e in ev if isinstance(e, SegmentClosed)]
    assert len(segs) == 3
    for (s, e), (a, b) in zip(segs, ((1000, 2200), (2600, 3100), (5000, 7200))):
        assert abs(s - a) <= 30 and abs(e - b) <= 30, segs


def test_bytes_input_equals_array_input():
    x = script(("s", 300), ("v", 500), ("s", 600))
    assert control(run(exact("sentence"), x)) == control(run(exact("sentence"), x.tobytes()))


def test_buffer_stays_bounded_during_long_silence():
    ep = exact("continuous", pre_roll_ms=300)
    for _ in range(20):
        ep.process(np.zeros(8000, np.int16))
    assert len(ep._buf) <= 300 * 8 + ep.frame_len


# --- lifecycle and validation -------------------------------------------------------------------


def test_process_after_flush_raises_and_reset_reopens():
    ep = exact("sentence")
    ep.flush()
    with pytest.raises(StreamClosedError, match="after flush"):
        ep.process(np.zeros(10, np.int16))
    ep.reset()
    assert ep.state is State.WAITING and ep.position_ms == 0
    assert ep.process(np.zeros(80, np.int16)) == []


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"vad_head": -1}, r"vad_head must be in 0\.\.60000 ms, got -1"),
        ({"vad_head": 60001}, r"vad_head must be in 0\.\.60000 ms"),
        ({"vad_tail": 3001}, r"vad_tail must be in 0\.\.3000 ms, got 3001"),
        ({"vad_tail": -5}, r"vad_tail must be in 0\.\.3000 ms"),
        ({"max_seconds": 0}, r"max_seconds must be in 1\.\.60 s, got 0"),
        ({"max_seconds": 61}, r"max_seconds must be in 1\.\.60 s"),
        ({"pre_roll_ms": 2001}, r"pre_roll_ms must be in 0\.\.2000 ms"),
        ({"mode": "stream"}, r"mode must be one of \['short', 'sentence', 'continuous'\]"),
    ],
)
def test_bad_parameters_raise_with_range(kw, match):
    args = {"mode": "sentence", **kw}
    with pytest.raises(ValueError, match=match):
        Endpointer(args.pop("mode"), 16000, **args)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"vad_head": 1.5}, "vad_head must be an int"),
        ({"vad_tail": True}, "vad_tail must be an int"),
        ({"max_seconds": "30"}, "max_seconds must be an int"),
        ({"vad": object()}, "vad must provide"),
    ],
)
def test_bad_parameter_types(kw, match):
    with pytest.raises(TypeError, match=match):
        Endpointer("sentence", 16000, **kw)


def test_bad_geometry_and_vad_rate():
    with pytest.raises(AudioFormatError, match=r"rate_hz must be one of \(8000, 16000\), got 44100"):
        Endpointer("sentence", 44100)
    with pytest.raises(AudioFormatError, match=r"frame_ms must be one of \(10, 20, 30\), got 15"):
        Endpointer("sentence", 16000, frame_ms=15)
    with pytest.raises(ValueError, match="vad.rate_hz must equal rate_hz=16000, got 8000"):
        Endpointer("sentence", 16000, vad=ExactVad(8000))


def test_bad_chunks():
    ep = exact("sentence")
    with pytest.raises(TypeError, match="must be int16, got float32"):
        ep.process(np.zeros(8, np.float32))
    with pytest.raises(AudioFormatError, match=r"1-D \(mono\), got shape \(2, 4\)"):
        ep.process(np.zeros((2, 4), np.int16))
    with pytest.raises(AudioFormatError, match="even length, got 3"):
        ep.process(b"abc")
    with pytest.raises(TypeError, match="got list"):
        ep.process([0, 1])


def test_events_are_frozen_and_name_their_sis_event():
    e = VoiceStart(10, 20)
    with pytest.raises(AttributeError):
        e.timestamp_ms = 5  # type: ignore[misc]
    assert (VoiceStart.sis_event, VoiceEnd.sis_event, ExceededSilence.sis_event,
            ExceededAudio.sis_event, SegmentClosed.sis_event) == (
        "VOICE_START", "VOICE_END", "EXCEEDED_SILENCE", "EXCEEDED_AUDIO", None)


# --- onset look-back (EnergyVad.process_onsets) ---------------------------------------------------


class LookbackVad(ExactVad):
    """ExactVad that reports a fixed onset look-back, as EnergyVad.process_onsets does."""

    max_lookback_frames = 5

    def process_onsets(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prev = getattr(self, "_last", False)
        d = self.process(x)
        onset = d & ~np.concatenate(([prev], d[:-1])) if len(d) else d
        if len(d):
            self._last = bool(d[-1])
        return d, np.where(onset, self.max_lookback_frames, 0)

    def reset(self) -> None:
        super().reset()
        self._last = False


def test_onset_lookback_moves_start_and_audio():
    # The start moves 5 frames (50 ms) before the first speech frame; detection time does not;
    # the segment audio starts there even without pre-roll.
    x = script(("s", 500), ("v", 300), ("s", 600))
    ep = Endpointer("sentence", 8000, vad=LookbackVad(8000, 10), vad_tail=500, pre_roll_ms=0)
    ev = run(ep, x)
    vs = next(e for e in ev if isinstance(e, VoiceStart))
    assert (vs.timestamp_ms, vs.detected_ms) == (450, 510)
    opened = next(e for e in ev if isinstance(e, SegmentOpened))
    closed = next(e for e in ev if isinstance(e, SegmentClosed))
    assert opened.start_ms == closed.start_ms == 450 and opened.audio_start_ms == 450
    assert closed.end_ms == 800
    pcm = audio_of(ev)[0]
    assert len(pcm) == (closed.audio_end_ms - 450) * 8
    np.testing.assert_array_equal(pcm[: 50 * 8], 0)  # the looked-back frames are included


def test_onset_lookback_never_crosses_the_last_boundary():
    # Continuous: a segment closes at 800 ms (300 ms voice + 500 ms tail); speech again at
    # 820 ms may look back only to that boundary, not 50 ms.
    x = script(("v", 300), ("s", 520), ("v", 200), ("s", 600))
    ev = control(run(Endpointer("continuous", 8000, vad=LookbackVad(8000, 10), vad_tail=500), x))
    segs = [(e.start_ms, e.end_ms, e.detected_ms) for e in ev if isinstance(e, SegmentClosed)]
    assert segs == [(0, 300, 800), (800, 1020, 1520)]


@pytest.mark.parametrize("chunk", [8, 333])
def test_onset_lookback_chunking_independent(chunk):
    x = script(("s", 500), ("v", 300), ("s", 600), ("v", 120), ("s", 700))
    ref = run(Endpointer("continuous", 8000, vad=LookbackVad(8000, 10)), x)
    ev = run(Endpointer("continuous", 8000, vad=LookbackVad(8000, 10)), x, chunk=chunk)
    assert control(ev) == control(ref)
    for k, pcm in audio_of(ref).items():
        np.testing.assert_array_equal(audio_of(ev)[k], pcm)
