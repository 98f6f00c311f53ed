"""Compiled front-ends of EnergyVad.process and Endpointer.process: bound iff native, same
results, state and exceptions as the Python methods, hot case in C, everything else delegated."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from sis_stream import _backend
from sis_stream.audio import endpoint as endpoint_mod
from sis_stream.audio import vad as vad_mod
from sis_stream.audio.endpoint import Endpointer, SegmentAudio
from sis_stream.audio.vad import EnergyVad

needs_native = pytest.mark.skipif(_backend.NO_EXTENSIONS,
                                  reason="SIS_STREAM_NO_EXTENSIONS=1: native not used")


def _speechlike(rate: int, seconds: float = 4.0, seed: int = 3) -> np.ndarray:
    # Noise floor, then harmonic bursts of different levels separated by pauses (> vad_tail).
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = rng.normal(0, 80, n)
    for a, b, amp in ((0.6, 1.2, 3000), (2.0, 2.3, 700), (3.0, 3.7, 5000)):
        m = (t >= a) & (t < b)
        x[m] += amp * sum(np.sin(2 * np.pi * 140 * k * t[m]) / k for k in range(1, 8))
    return np.round(x).astype(np.int16)


def test_process_is_compiled_front_end_iff_native_vad():
    for cls, mod in ((EnergyVad, vad_mod), (Endpointer, endpoint_mod)):
        public, py = cls.process, mod._PY_PROCESS
        if _backend.NO_EXTENSIONS or "vad" in _backend.NATIVE_IMPORT_ERRORS:
            assert public is py
        else:
            native = _backend.load("native").vad
            front = (native._vad_process_front if cls is EnergyVad
                     else native._endpoint_process_front)
            assert public is front
            assert public.__name__ == "process" and public.__doc__ == py.__doc__
        assert inspect.signature(public) == inspect.signature(py)


def _vad_cases(rate: int) -> list[tuple[dict, list]]:
    L = rate // 50
    x = _speechlike(rate)
    f = [x[k * L : (k + 1) * L] for k in range(len(x) // L)]
    swapped = f[3].astype(">i2")
    return [
        ({}, f[:60]),  # one frame a call: the hot case
        ({}, [x[: 3 * L], x[3 * L : 20 * L], x[20 * L : 37 * L]]),  # 3 and 17 frames
        ({}, [f[0].tobytes(), bytearray(f[1].tobytes()), memoryview(f[2].tobytes())]),
        ({}, [x[:7], f[1], x[: L - 7], f[2], x[:0], f[3]]),  # partial frames pending
        ({}, [f[0], f[1][::-1], x[: 2 * L : 2], swapped, f[2]]),  # non-contiguous, swapped
        ({}, [f[0], f[1].astype(np.float32), f[1].reshape(2, -1), b"\x00" * 3, "pcm", f[2]]),
        ({}, [f[0], f[1], "flush", f[2], "reset", f[3]]),
        ({"encoding": "ulaw"}, [np.full(L, 0xFF, np.uint8), bytes(L), f[0]]),
        ({"frame_ms": 10}, [x[: L // 2], x[L // 2 : L]] + f[5:30]),
    ]


def _vad_outcome(vad: EnergyVad, process, chunk) -> tuple:
    try:
        if isinstance(chunk, str) and chunk == "flush":
            out = ("flush", vad.flush().tolist())
        elif isinstance(chunk, str) and chunk == "reset":
            vad.reset()
            out = ("reset",)
        else:
            d = process(vad, chunk)
            out = (d.dtype.str, d.tolist())
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        out = (type(exc).__name__, str(exc))
    return out + (vad.frames_done, vad.pending_samples, vad._zi.tolist(), vad._state.tolist())


@pytest.mark.parametrize("rate", [8000, 16000])
def test_vad_front_end_matches_python_method_on_every_backend(backend, rate):
    if EnergyVad.process is vad_mod._PY_PROCESS:
        pytest.skip("no compiled front-end in use: process is the Python method, comparing it "
                    "with itself proves nothing")
    for kw, chunks in _vad_cases(rate):
        a = EnergyVad(rate, **{"frame_ms": 20, **kw})
        b = EnergyVad(rate, **{"frame_ms": 20, **kw})
        for i, chunk in enumerate(chunks):
            got = _vad_outcome(a, EnergyVad.process, chunk)
            assert got == _vad_outcome(b, vad_mod._PY_PROCESS, chunk), (kw, i)


@needs_native
def test_vad_front_end_hot_path_stays_in_c_and_delegates_the_rest(monkeypatch):
    native = _backend.load("native").vad
    calls: list[str] = []

    def record(self, chunk):
        calls.append(f"{chunk.dtype}{chunk.shape}" if isinstance(chunk, np.ndarray)
                     else type(chunk).__name__)
        return vad_mod._PY_PROCESS(self, chunk)

    native._bind_vad_front_end(_backend.__dict__, native, record)
    try:
        monkeypatch.setattr(_backend, "vad", native)
        front = native._vad_process_front
        x = _speechlike(8000)
        vad = EnergyVad(8000, 20)
        hot = [front(vad, x[k : k + 160]) for k in range(0, 3200, 160)]
        hot.append(front(vad, x[3200 : 3200 + 16 * 160]))  # 16 frames: the most in C
        hot.append(front(vad, x[:320].tobytes()))
        assert calls == [] and [len(h) for h in hot] == [1] * 20 + [16, 2]
        front(vad, x[: 17 * 160])  # 17 frames: the Python method (frame-parallel kernel)
        front(vad, x[:100])  # a partial frame: Python; it is pending now ...
        front(vad, x[:160])  # ... so the next one goes to Python too
        front(vad, x[:60])  # and completes the frame: nothing pending any more
        front(vad, x[:160])  # in C again
        with pytest.raises(TypeError, match="must be int16, got float32"):
            front(vad, x[:160].astype(np.float32))
        assert calls == ["int16(2720,)", "int16(100,)", "int16(160,)", "int16(60,)",
                         "float32(160,)"]
        # A swapped backend (the reference twin) is reached through the Python method.
        monkeypatch.setattr(_backend, "vad", _backend.load("reference").vad)
        front(vad, x[:160])
        assert calls[-1] == "int16(160,)"
    finally:
        vad_mod._bind_front_end(native)


@needs_native
def test_unbound_front_end_says_so():
    native = _backend.load("native").vad
    native._bind_vad_front_end(None, None, None)
    try:
        with pytest.raises(RuntimeError, match="before sis_stream.audio.vad bound it"):
            native._vad_process_front(EnergyVad(8000, 20), np.zeros(160, np.int16))
    finally:
        vad_mod._bind_front_end(native)


@needs_native
def test_segment_audio_built_as_its_dataclass_init_would_or_by_calling_it(monkeypatch):
    # The C path fills a new SegmentAudio's __dict__ only while the class is the plain frozen
    # dataclass it expects; a subclass with __post_init__ is called instead.
    native = _backend.load("native").vad
    seen: list[int] = []

    @dataclasses.dataclass(frozen=True)
    class Checked(SegmentAudio):
        def __post_init__(self) -> None:
            seen.append(self.n_samples)

    x = _speechlike(8000)
    try:
        for cls in (SegmentAudio, Checked):
            native._bind_endpoint_front_end(endpoint_mod._PY_PROCESS, cls, endpoint_mod._COUNTERS)
            ep = Endpointer("continuous", 8000, frame_ms=20)
            events = [e for k in range(0, len(x) - 159, 160)
                      for e in Endpointer.process(ep, x[k : k + 160])]
            audio = [e for e in events if type(e) is cls]  # the ones the C path built
            assert len(audio) > 50
            names = [f.name for f in dataclasses.fields(SegmentAudio)]
            assert all(list(vars(e)) == names for e in audio)
        assert len(seen) == len(audio)  # every C-built event went through Checked.__init__
    finally:
        endpoint_mod._bind_front_end(native)


@needs_native
def test_endpoint_counters_layout_is_checked():
    native = _backend.load("native").vad
    assert native.EP_COUNTERS == endpoint_mod._COUNTERS
    with pytest.raises(ValueError, match="rebuild the extension"):
        native._bind_endpoint_front_end(endpoint_mod._PY_PROCESS, SegmentAudio, ("_received",))


def _ep_events(ep: Endpointer, process, chunks) -> list:
    out = []
    for chunk in chunks:
        try:
            ev = ep.flush() if isinstance(chunk, str) else process(ep, chunk)
            for e in ev:
                out.append((e, type(e), vars(e).keys()))
                if isinstance(e, SegmentAudio):
                    assert not e.pcm.flags.writeable
                    out.append(e.pcm.tolist())
        except Exception as exc:  # noqa: BLE001 - the comparison is the point
            out.append((type(exc).__name__, str(exc)))
        out.append((ep.state, ep.position_ms, list(ep._c), ep._buf.tolist()))
    return out


def _ep_cases(rate: int) -> list[tuple[dict, list]]:
    L = rate // 50
    x = _speechlike(rate)
    frames = [x[k : k + L] for k in range(0, len(x) - L + 1, L)]
    odd = [x[k : k + 333] for k in range(0, len(x), 333)]
    return [
        ({"mode": "continuous"}, frames + ["flush"]),
        ({"mode": "continuous", "include_audio": False}, frames),
        ({"mode": "sentence"}, frames),
        ({"mode": "sentence", "vad_head": 300}, frames),  # ExceededSilence from the C path
        ({"mode": "continuous", "vad_head": 200, "max_seconds": 1}, frames),
        ({"mode": "continuous", "vad_tail": 0, "pre_roll_ms": 0}, [f.tobytes() for f in frames]),
        ({"mode": "continuous"}, odd + ["flush"]),  # partial frames pending
        ({"mode": "continuous"}, [x[k : k + 2 * L] for k in range(0, len(x), 2 * L)]),
        ({"mode": "short"}, frames[:20] + ["flush"]),
        ({"mode": "continuous"}, frames[:5] + [frames[5].astype(np.float32), "flush", frames[6]]),
    ]


@pytest.mark.parametrize("rate", [8000, 16000])
def test_endpoint_front_end_matches_python_method_on_every_backend(backend, rate):
    if Endpointer.process is endpoint_mod._PY_PROCESS:
        pytest.skip("no compiled front-end in use: process is the Python method")
    for kw, chunks in _ep_cases(rate):
        kw = {"frame_ms": 20, **kw}
        a, b = Endpointer(rate_hz=rate, **kw), Endpointer(rate_hz=rate, **kw)
        got = _ep_events(a, Endpointer.process, chunks)
        want = _ep_events(b, endpoint_mod._PY_PROCESS, chunks)
        assert got == want, kw


def test_endpoint_audio_cap_through_the_front_end():
    # The cap is checked before the C path commits anything: the chunk that crosses it goes to
    # the Python method, which drops the excess and reports ExceededAudio.
    ep = Endpointer("sentence", 8000, frame_ms=20, vad_head=60000)
    cap = ep._cap_samples
    ep._accepted = ep._received = cap - 100  # as if 60 s minus 100 samples had gone by
    events = ep.process(np.zeros(160, np.int16))
    assert [type(e).__name__ for e in events] == ["ExceededAudio"]
    assert ep.position_ms == (cap + 60) * 1000 // 8000


@needs_native
def test_endpoint_front_end_hot_path_stays_in_c(monkeypatch):
    native = _backend.load("native").vad
    calls: list[int] = []
    decided: list[int] = []

    def record(self, chunk):
        calls.append(len(chunk))
        return endpoint_mod._PY_PROCESS(self, chunk)

    real_decided = Endpointer._decided

    def record_decided(self, d, back, over):
        decided.append(len(d) if d is not None else -1)
        return real_decided(self, d, back, over)

    native._bind_endpoint_front_end(record, SegmentAudio, endpoint_mod._COUNTERS)
    monkeypatch.setattr(Endpointer, "_decided", record_decided)
    try:
        monkeypatch.setattr(_backend, "vad", native)
        front = native._endpoint_process_front
        x = _speechlike(8000)
        ep = Endpointer("continuous", 8000, frame_ms=20)
        events = [e for k in range(0, len(x) - 159, 160) for e in front(ep, x[k : k + 160])]
        kinds = [type(e).__name__ for e in events]
        assert calls == []  # every frame went through C ...
        # ... and only the frames that opened or closed a segment reached the state machine.
        assert decided == [1] * (kinds.count("SegmentOpened") + kinds.count("SegmentClosed"))
        assert kinds.count("SegmentOpened") == 3 and kinds.count("SegmentAudio") > 50
        front(ep, x[:100])  # a partial frame: the Python method
        assert calls == [100]
    finally:
        endpoint_mod._bind_front_end(native)
