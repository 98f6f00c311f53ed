"""Flow control of the RASR websocket: a stream's own backlog slows its client down (TCP
backpressure) instead of ending the session with ERROR SIS.0312; plus the audio cap before the
START answer and late audio behind END (issue 18, items 6 and 7)."""

from __future__ import annotations

import asyncio
import json
import threading
import wave

import numpy as np
import pytest
from aiohttp import ClientSession as HttpClient
from aiohttp import WSMsgType
from helpers import FakeClock
from realspeech import long_call
from server_helpers import (
    SENTENCES,
    config_for,
    encode,
    none_settings,
    run_ws_session,
    running_server,
    silence,
    speech_pcm,
)

from sis_stream.engines.base import Hypothesis
from sis_stream.engines.null import NullEngine, NullStream
from sis_stream.engines.registry import ENGINE_FACTORIES, EngineRegistry
from sis_stream.protocol import AudioFrame, ClientSession, Mode, StartStream
from sis_stream.server import METRICS, POOL, ServerSettings
from sis_stream.server.rasr import LATE_AUDIO_GRACE_S
from sis_stream.server.recognizer import DEFAULT_FLOW_HIGH
from sis_stream.text import wer

PID = "p0123"
START = json.dumps({"command": "START", "config": {"audio_format": "pcm16k16bit", "property": "english_16k_common"}})
END = '{"command": "END", "cancel": "false"}'


class _Gate:
    """Engine operations block while the gate is closed (bounded wait)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.accepts = 0
        self.new_streams = 0


def _gated_registry(gate: _Gate, *, gate_accept: bool = True, gate_new_stream: bool = False) -> EngineRegistry:
    class _Stream(NullStream):
        def _accept(self, pcm):
            gate.accepts += 1
            if gate_accept:
                assert gate.open.wait(30), "gate never opened"

        def _finalize(self):
            start, end = self._span()
            return Hypothesis("segment", 0.5, (), start, end, True)

    class _Engine(NullEngine):
        name = "gated"  # not "none": the recognizer batches accepts as for a real engine
        languages = ("en", "zh")  # 8 kHz RASR properties are Chinese (as in the cloud)

        def new_stream(self, *, language, hot_words=(), word_info=False):
            gate.new_streams += 1
            if gate_new_stream:
                assert gate.open.wait(30), "gate never opened"
            return _Stream(self, language=language, word_info=word_info)

    factories = {name: (lambda **kw: NullEngine()) for name in ENGINE_FACTORIES}
    factories["none"] = lambda **kw: _Engine()  # routed like the none engine, named "gated"
    return EngineRegistry(["chinese_8k_common=none", "english_16k_common=none"], factories=factories)


async def _wait_for(pred, what: str, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_own_backlog_blocks_the_client_instead_of_sis0312() -> None:
    """10 min of real 8 kHz speech sent as fast as possible into an engine that is stuck: the
    server stops reading (the client's sends block on TCP) with a bounded engine backlog, and
    once the engine moves every prompt gets its final and END NORMAL (today: SIS.0312)."""
    call = long_call(600)
    audio = call.pcm.astype("<i2").tobytes()
    gate = _Gate()
    settings = ServerSettings(no_auth=True, registry=_gated_registry(gate), rest_routes=False, engine_workers=2)
    async with running_server(settings) as srv, HttpClient() as http:
        pool = srv.app[POOL]
        async with http.ws_connect(srv.ws(Mode.CONTINUE_STREAM.path(PID))) as ws:
            client = ClientSession(Mode.CONTINUE_STREAM, early_audio=True)
            sent = [0]

            async def sender() -> None:
                for f in client.send(StartStream(config_for(Mode.CONTINUE_STREAM, "pcm8k16bit"))):
                    await ws.send_str(f)
                for i in range(0, len(audio), 6400):
                    for f in client.send(AudioFrame(audio[i:i + 6400])):
                        await ws.send_bytes(f)  # drains: blocks while the socket is full
                    sent[0] = i + 6400

            task = asyncio.create_task(sender())
            await _wait_for(lambda: gate.accepts > 0 and pool.stats().queued >= DEFAULT_FLOW_HIGH // 2,
                            "the engine backlog")
            before = sent[0]
            await asyncio.sleep(1.0)  # the sender cannot get far: nobody reads its socket
            assert not task.done() and sent[0] < len(audio)
            assert sent[0] - before < len(audio) // 2
            # bounded backlog: the high watermark plus what one websocket message can add
            assert pool.stats().queued <= DEFAULT_FLOW_HIGH + 32
            gate.open.set()
            await asyncio.wait_for(task, 60)
            await ws.send_str(END)  # raw: the START answer is read below
            frames = []
            while True:
                msg = await ws.receive(timeout=60)
                assert msg.type == WSMsgType.TEXT, msg
                frames.append(json.loads(msg.data))
                if frames[-1]["resp_type"] in ("END", "ERROR", "FATAL_ERROR"):
                    break
    kinds = {f["resp_type"] for f in frames}
    assert "ERROR" not in kinds and frames[-1] == {**frames[-1], "resp_type": "END", "reason": "NORMAL"}
    finals = [s for f in frames if f["resp_type"] == "RESULT" for s in f["segments"] if s["is_final"]]
    assert len(finals) == len(call.segments)
    for seg, (start, end, _text) in zip(finals, call.segments):
        assert abs(seg["start_time"] - start) < 400 and abs(seg["end_time"] - end) < 600


async def test_client_heartbeat_survives_a_long_pause(monkeypatch) -> None:
    """An aiohttp client with a heartbeat (ping, then a pong deadline) stays connected while the
    server does not read for many heartbeat periods: the server pings it meanwhile."""
    from sis_stream.server import rasr

    monkeypatch.setattr(rasr, "PAUSE_PING_S", 0.1)
    call = long_call(120)
    audio = call.pcm.astype("<i2").tobytes()
    gate = _Gate()
    settings = ServerSettings(no_auth=True, registry=_gated_registry(gate), rest_routes=False, engine_workers=2)
    async with running_server(settings) as srv, HttpClient() as http:
        pool = srv.app[POOL]
        ws = await http.ws_connect(srv.ws(Mode.CONTINUE_STREAM.path(PID)), heartbeat=0.5)
        session = asyncio.create_task(run_ws_session(http, "", config_for(Mode.CONTINUE_STREAM, "pcm8k16bit"),
                                                     audio, frame_bytes=6400, timeout=60, ws=ws))
        await _wait_for(lambda: pool.stats().queued >= DEFAULT_FLOW_HIGH // 2, "the engine backlog")
        await asyncio.sleep(3.0)  # six heartbeat periods without the server reading
        gate.open.set()
        res = await asyncio.wait_for(session, 60)
        await ws.close()
    assert res.close_code is None and res.frames[-1]["reason"] == "NORMAL"
    assert len(res.finals()) == len(call.segments)


async def test_pause_does_not_count_for_the_idle_rule() -> None:
    """The reader is paused by flow control for longer than 20 s (fake clock): no FATAL_ERROR."""
    clock = FakeClock()
    call = long_call(120)
    audio = call.pcm.astype("<i2").tobytes()
    gate = _Gate()
    settings = ServerSettings(no_auth=True, registry=_gated_registry(gate), rest_routes=False, engine_workers=2,
                              clock=clock, idle_check_s=0.02)
    async with running_server(settings) as srv, HttpClient() as http:
        pool = srv.app[POOL]
        url = srv.ws(Mode.CONTINUE_STREAM.path(PID))
        session = asyncio.create_task(run_ws_session(http, url, config_for(Mode.CONTINUE_STREAM, "pcm8k16bit"),
                                                     audio, frame_bytes=6400, timeout=60))
        await _wait_for(lambda: pool.stats().queued >= DEFAULT_FLOW_HIGH // 2, "the engine backlog")
        for _ in range(5):
            clock.advance(10.0)
            await asyncio.sleep(0.1)
        gate.open.set()
        res = await asyncio.wait_for(session, 60)
    assert not res.of("FATAL_ERROR") and not res.of("ERROR")
    assert res.frames[-1]["reason"] == "NORMAL" and len(res.finals()) == len(call.segments)


async def test_audio_before_the_start_answer_counts_against_the_cap() -> None:
    """Issue 18 item 6: 5 s sent while the engine prepares, cap 1 s: EXCEEDED_AUDIO after the
    START answer, the final ends at the cap, and 1 s is billed (today: 5 s)."""
    gate = _Gate()
    settings = ServerSettings(no_auth=True, registry=_gated_registry(gate, gate_accept=False, gate_new_stream=True),
                              rest_routes=False, max_audio_ms={"short-stream": 1000})
    pcm = np.concatenate([speech_pcm(SENTENCES[0]), speech_pcm(SENTENCES[1])])[:5 * 16000]
    async with running_server(settings) as srv, HttpClient() as http:
        async with http.ws_connect(srv.ws(Mode.SHORT_STREAM.path(PID))) as ws:
            await ws.send_str(START)
            audio = encode(pcm, "pcm16k16bit")
            for i in range(0, len(audio), 3200):
                await ws.send_bytes(audio[i:i + 3200])
            await _wait_for(lambda: gate.new_streams == 1, "the engine setup")
            gate.open.set()
            first = json.loads((await ws.receive(timeout=10)).data)
            assert first["resp_type"] == "START"
            await ws.send_str(END)
            frames = [first]
            while frames[-1]["resp_type"] != "END":
                frames.append(json.loads((await ws.receive(timeout=10)).data))
        usage = srv.app[METRICS].usage(PID)
    events = [f["event"] for f in frames if f["resp_type"] == "EVENT"]
    assert events == ["EXCEEDED_AUDIO"]
    finals = [s for f in frames if f["resp_type"] == "RESULT" for s in f["segments"] if s["is_final"]]
    assert len(finals) == 1 and finals[0]["end_time"] <= 1000
    assert frames[-1]["reason"] == "NORMAL"
    billed = sum(u.audio_ms for u in usage) / 1000
    assert 0.9 <= billed <= 1.0, billed


async def test_audio_in_flight_behind_end_is_dropped_silently() -> None:
    """Issue 18 item 7: frames arriving after END NORMAL, within the grace period, get no ERROR;
    the next START works; after the grace period, audio outside a session is an error again."""
    clock = FakeClock()
    async with running_server(none_settings(clock=clock)) as srv, HttpClient() as http, \
            http.ws_connect(srv.ws(Mode.CONTINUE_STREAM.path(PID))) as ws:
        await ws.send_str(START)
        assert json.loads((await ws.receive(timeout=5)).data)["resp_type"] == "START"
        await ws.send_bytes(encode(silence(500), "pcm16k16bit"))
        await ws.send_str(END)
        assert json.loads((await ws.receive(timeout=5)).data)["resp_type"] == "END"
        for _ in range(3):  # in flight when END was sent
            await ws.send_bytes(b"\x00" * 3200)
        await ws.send_str(START)
        nxt = json.loads((await ws.receive(timeout=5)).data)
        assert nxt["resp_type"] == "START", nxt
        await ws.send_str(END)
        assert json.loads((await ws.receive(timeout=5)).data)["resp_type"] == "END"
        clock.advance(LATE_AUDIO_GRACE_S + 1)
        await ws.send_bytes(b"\x00" * 3200)
        late = json.loads((await ws.receive(timeout=5)).data)
        assert late["resp_type"] == "ERROR" and late["error_code"] == "SIS.0032"


@pytest.mark.engine
def test_cli_transcribes_90s_at_max_speed_with_whisper(tmp_path) -> None:
    """Issue 15 §1: `sis-stream transcribe call.wav` (default --speed max) of a 90 s recording
    exits 0 with every prompt transcribed (today: SIS.0312, exit 5, 0 segments)."""
    pytest.importorskip("faster_whisper")
    from sis_stream.cli.main import main

    call = long_call(90)
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(call.rate_hz)
        w.writeframes(call.pcm.astype("<i2").tobytes())
    out = tmp_path / "call.json"
    assert main(["transcribe", str(path), "--format", "json", "-o", str(out), "-q",
                 "--engine", "english_16k_common=whisper"]) == 0
    doc = json.loads(out.read_text())
    segs = doc["segments"]
    assert len(segs) == len(call.segments)
    for seg, (start, end, _text) in zip(segs, call.segments):
        assert abs(seg["start_ms"] - start) < 400 and abs(seg["end_ms"] - end) < 600
    hyp = " ".join(s["text"] for s in segs)
    assert wer(call.text, hyp) < 0.15
