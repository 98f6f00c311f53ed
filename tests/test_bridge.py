"""The telephony bridge against fake peers (tests/bridge_peers.py) and the embedded server with the
``none`` engine: wire formats, events, gateway semantics, malformed peers, sinks, metrics, drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from bridge_peers import FakeAsterisk, FakeFreeSwitch, FakeTwilio, as_frame, raw_audiosocket

from sis_stream.audio.formats import AudioFormat
from sis_stream.bridges import (
    Bridge,
    CallbackSink,
    EventHub,
    JsonLinesSink,
    LegOptions,
    SessionSettings,
    WebhookSink,
    parse_address,
)
from sis_stream.bridges.audio_fork import parse_layout
from sis_stream.bridges.metrics import BridgeMetrics
from sis_stream.bridges.session import BridgeContext, Call, session_format
from sis_stream.server.embedded import embedded_server

NONE = ("english_16k_common=none", "chinese_8k_common=none")


def tone(seconds: float, rate: int = 8000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate))
    return (3000 * np.sin(2 * np.pi * freq * t / rate)).astype(np.int16)


@pytest.fixture
async def sis():
    async with embedded_server(engine_overrides=NONE) as srv, srv.client() as client:
        yield srv, client


@pytest.fixture
async def bridge(sis):
    _, client = sis
    events: list[dict] = []
    b = Bridge(client, audiosocket=":0", audio_fork=":0", twilio=":0", metrics=":0",
               sinks=[CallbackSink(events.append)], options=LegOptions(final_timeout_s=5.0))
    await b.start()
    b.events = events  # type: ignore[attr-defined]
    try:
        yield b
    finally:
        await b.drain(0)


def url(b: Bridge, kind: str, path: str = "/") -> str:
    h, p = b.addresses[kind]
    return f"ws://{h}:{p}{path}"


async def settle(events: list[dict], pred, timeout_s: float = 10.0) -> None:
    """Wait (bounded) until `pred(events)` holds."""
    async with asyncio.timeout(timeout_s):
        while not pred(events):
            await asyncio.sleep(0.02)


def of(events: list[dict], type_: str, **match) -> list[dict]:
    return [e for e in events if e["type"] == type_ and all(e.get(k) == v for k, v in match.items())]


# -- pure helpers -----------------------------------------------------------------------------------


def test_parse_address() -> None:
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("9092") == ("127.0.0.1", 9092)
    assert parse_address("0.0.0.0:9092") == ("0.0.0.0", 9092)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad in ("host:", "x", "1:2:3", "70000"):
        with pytest.raises(ValueError, match=r"\[HOST:\]PORT|port must"):
            parse_address(bad)


def test_parse_layout_path_and_metadata() -> None:
    assert parse_layout("/", {}) == (8000, "mono")
    assert parse_layout("/asr/16k/stereo", {}) == (16000, "stereo")
    assert parse_layout("/8000", {"sampleRate": 16000, "mixType": "mixed"}) == (16000, "mixed")
    with pytest.raises(ValueError, match="multiple of 8000"):
        parse_layout("/", {"sampleRate": 11025})
    with pytest.raises(ValueError, match="mix type"):
        parse_layout("/", {"mixType": "quad"})


def test_settings_overrides_and_formats() -> None:
    s = SessionSettings()
    t = s.with_overrides({"property": "chinese_8k_common", "interim_results": "yes", "vad_tail": "800",
                          "FirstName": "Jane"})
    assert (t.property, t.interim_results, t.vad_tail) == ("chinese_8k_common", True, 800)
    assert t.config("ulaw8k8bit") == {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common",
                                      "interim_results": "yes", "add_punc": "no", "digit_norm": "yes",
                                      "need_word_info": "no", "vad_tail": 800}
    with pytest.raises(ValueError, match="vad_tail must be an integer"):
        s.with_overrides({"vad_tail": "soon"})
    with pytest.raises(ValueError, match="interim_results must be yes/no"):
        s.with_overrides({"interim_results": "maybe"})
    ulaw = AudioFormat(8000, "ulaw", 1)
    assert session_format(ulaw, "chinese_8k_common") == ulaw  # u-law passes straight through
    assert session_format(ulaw, "english_16k_common").sis_name == "pcm16k16bit"
    assert session_format(AudioFormat(8000, "pcm", 2), "chinese_8k_common").sis_name == "pcm8k16bit"


# -- the bounded queue: the reader never waits for SIS ---------------------------------------------


class _StuckClient:
    """A SIS client whose sessions never open (START is never answered)."""

    def stream(self, *a, **kw):
        class _S:
            async def __aenter__(self):
                await asyncio.Event().wait()

        return _S()


async def test_push_never_blocks_and_drops_oldest_with_lost_ms_and_time_map() -> None:
    events: list[dict] = []
    hub = EventHub([CallbackSink(events.append)])
    await hub.start()
    ctx = BridgeContext(_StuckClient(), hub, BridgeMetrics(),
                        LegOptions(max_buffer_ms=1000, final_timeout_s=0.2, connect_timeout_s=0.2))
    call = Call(ctx, "audiosocket", "c1", (0,), AudioFormat(8000, "pcm", 2), SessionSettings())
    call.start()
    leg = call.legs[0]
    frame = bytes(320)
    for _ in range(500):  # 10 s of audio while SIS is unreachable: push returns at once every time
        leg.push(frame)
    assert leg.audio_ms == 10_000
    assert leg.lost_ms == 9_000 and len(leg._buf) == 16_000  # 1 s kept: the newest audio
    assert leg.call_ms(0) == 9_000 and leg.call_ms(500) == 9_500  # stream time -> call time
    await call.finish("hangup")
    await hub.aclose()
    end = of(events, "call_end")[0]
    assert end["lost_ms"] == 10_000 and end["audio_ms"] == 10_000 and end["reason"] == "hangup"
    assert of(events, "error")[0]["code"] == "sis_unavailable"
    assert ctx.metrics.listener("audiosocket").lost_ms == 10_000


# -- AudioSocket ---------------------------------------------------------------------------------


async def test_audiosocket_call_silence_clock_dtmf_and_events(bridge) -> None:
    h, p = bridge.addresses["audiosocket"]
    peer = FakeAsterisk(h, p, tone(1.0), realtime=True, dtmf="1#")
    task = asyncio.create_task(peer.run())
    await settle(bridge.events, lambda ev: of(ev, "call_start"))
    conn = next(iter(bridge.listeners["audiosocket"].connections))
    sock = conn.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # Nagle off
    res = await task
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    ev = bridge.events
    cid = peer.call_uuid
    start, end = of(ev, "call_start")[0], of(ev, "call_end")[0]
    assert start["call_id"] == end["call_id"] == cid and start["source"] == "audiosocket" and start["channel"] == 0
    assert end["audio_ms"] == 1000 and end["lost_ms"] == 0 and end["reason"] == "hangup"
    assert [e["digit"] for e in of(ev, "dtmf")] == ["1", "#"]
    # silence came back: 320-byte slin frames, about one per 20 ms while the call lasted (generous)
    assert len(res.silence_times) >= 20 and not res.other_frames
    span = res.silence_times[-1] - res.silence_times[0]
    assert len(res.silence_times) <= span / 0.02 + 3  # never faster than the 20 ms clock
    assert res.closed_by_peer  # the bridge closed promptly after the hangup
    assert [e["seq"] for e in ev] == sorted(e["seq"] for e in ev)


@pytest.mark.parametrize("payload, code", [
    (as_frame(0x10, bytes(320)), "bad_frame"),                         # audio before the UUID
    (as_frame(0x01, b"short"), "bad_frame"),                           # UUID of 5 bytes
    (as_frame(0x01, uuid.uuid4().bytes) + as_frame(0x42, b"x"), "bad_frame"),  # unknown kind
    (as_frame(0x01, uuid.uuid4().bytes) + as_frame(0x12, bytes(640)), "unsupported_kind"),
    (as_frame(0x01, uuid.uuid4().bytes) + as_frame(0x10, bytes(319)), "bad_frame"),  # odd length
    (as_frame(0x01, uuid.uuid4().bytes) + as_frame(0x03, b"12"), "bad_frame"),  # 2-byte DTMF
])
async def test_audiosocket_malformed_peer_gets_error_event_and_clean_close(bridge, payload, code) -> None:
    h, p = bridge.addresses["audiosocket"]
    got, closed = await raw_audiosocket(h, p, payload)
    assert closed
    assert got.endswith(as_frame(0x00))  # a hangup frame, then the close
    await settle(bridge.events, lambda ev: of(ev, "error"))
    err = of(bridge.events, "error")[0]
    assert err["code"] == code and err["source"] == "audiosocket" and err["message"]
    if payload[0] == 0x01 and len(payload) > 19:
        await settle(bridge.events, lambda ev: of(ev, "call_end"))
        assert of(bridge.events, "call_end")[0]["reason"] == "protocol_error"
    # the listener still serves calls
    r = await FakeAsterisk(h, p, tone(0.2)).run()
    assert r.closed_by_peer


async def test_audiosocket_idle_connection_without_uuid_is_refused(bridge, monkeypatch) -> None:
    """Until its UUID a connection waits as an event-loop reader: one that sends nothing gets
    the no_uuid error and a hangup after UUID_TIMEOUT_S; a UUID sent late (after a pause)
    still starts the call."""
    from sis_stream.bridges import audiosocket

    monkeypatch.setattr(audiosocket, "UUID_TIMEOUT_S", 0.3)
    h, p = bridge.addresses["audiosocket"]
    got, closed = await raw_audiosocket(h, p, b"", timeout_s=5)
    assert closed and got == as_frame(0x00)
    await settle(bridge.events, lambda ev: of(ev, "error"))
    assert of(bridge.events, "error")[0]["code"] == "no_uuid" and not of(bridge.events, "call_start")
    reader, writer = await asyncio.open_connection(h, p)
    await asyncio.sleep(0.1)
    cid = uuid.uuid4()
    writer.write(as_frame(0x01, cid.bytes) + as_frame(0x10, bytes(320)) + as_frame(0x00))
    await writer.drain()
    await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    end = of(bridge.events, "call_end")[0]
    assert end["call_id"] == str(cid) and end["audio_ms"] == 20 and end["reason"] == "hangup"


async def test_audiosocket_a_failing_call_does_not_stop_the_others(bridge, monkeypatch) -> None:
    """A bug while handling one call's data (here: DTMF handling raises) ends that call with an
    ``internal`` error event and a hangup; the listener's clock keeps serving the other calls."""
    def boom(self, digit, channel=0):
        raise RuntimeError("dtmf handler failed")

    monkeypatch.setattr(Call, "dtmf", boom)
    h, p = bridge.addresses["audiosocket"]
    other = asyncio.create_task(FakeAsterisk(h, p, tone(0.6), realtime=True).run())
    await settle(bridge.events, lambda ev: of(ev, "call_start"))
    cid = uuid.uuid4()
    got, closed = await raw_audiosocket(h, p, as_frame(0x01, cid.bytes) + as_frame(0x10, bytes(320))
                                        + as_frame(0x03, b"5"))
    assert closed and got.endswith(as_frame(0x00))
    res = await other
    assert res.closed_by_peer and len(res.silence_times) >= 20  # the other call went on
    await settle(bridge.events, lambda ev: len(of(ev, "call_end")) == 2)
    err = of(bridge.events, "error", call_id=str(cid))[0]
    assert err["code"] == "internal" and "dtmf handler failed" in err["message"]
    assert of(bridge.events, "call_end", call_id=str(cid))[0]["reason"] == "internal_error"
    assert [e["reason"] for e in of(bridge.events, "call_end") if e["call_id"] != str(cid)] == ["hangup"]


async def test_audiosocket_truncated_frame_and_peer_error(bridge) -> None:
    h, p = bridge.addresses["audiosocket"]
    cid = uuid.uuid4()
    await raw_audiosocket(h, p, as_frame(0x01, cid.bytes) + b"\x10\x01", timeout_s=0.5)
    # the peer closes (raw_audiosocket closes after its timeout): a truncated header -> error event
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    assert of(bridge.events, "error")[0]["code"] == "truncated_frame"
    assert of(bridge.events, "call_end")[0]["reason"] == "protocol_error"
    bridge.events.clear()
    _, closed = await raw_audiosocket(h, p, as_frame(0x01, uuid.uuid4().bytes) + as_frame(0xFF, b"\x04"))
    assert closed
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    err = of(bridge.events, "error")[0]
    assert err["code"] == "peer_error" and "memory" in err["message"]
    assert of(bridge.events, "call_end")[0]["reason"] == "peer_error"


# -- mod_audio_fork ------------------------------------------------------------------------------


async def test_audio_fork_stereo_two_sessions_subprotocol_and_overrides(bridge) -> None:
    pcm = np.stack([tone(1.0), tone(1.0, freq=880)], axis=1)
    fs = FakeFreeSwitch(url(bridge, "audio_fork", "/stereo/8k"), {"uuid": "fs-7", "vad_tail": "600"}, pcm, seed=3)
    res = await fs.run()
    assert res.protocol == "audio.drachtio.org"  # echoed
    await settle(bridge.events, lambda ev: len(of(ev, "call_end")) == 2)
    starts = of(bridge.events, "call_start", call_id="fs-7")
    assert sorted(e["channel"] for e in starts) == [0, 1]
    assert all(e["mix"] == "stereo" and e["sample_rate"] == 8000 for e in starts)
    for e in of(bridge.events, "call_end"):
        assert e["audio_ms"] == 1000 and e["lost_ms"] == 0 and e["reason"] == "hangup"


async def test_audio_fork_16k_mono_generated_id(bridge) -> None:
    fs = FakeFreeSwitch(url(bridge, "audio_fork", "/16000"), "opaque text metadata", tone(0.5, 16000),
                        rate_hz=16000)
    await fs.run()
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    start = of(bridge.events, "call_start")[0]
    assert start["call_id"].startswith("af-") and start["audio_format"] == "pcm16k16bit"
    assert of(bridge.events, "call_end")[0]["audio_ms"] == 500


@pytest.mark.parametrize("first, code", [(b"\x00\x01" * 160, "no_metadata"), (b"", "no_metadata"),
                                         ('{"sampleRate": 11025}', "bad_config"),
                                         ('{"property": "klingon_8k_common"}', "bad_config")])
async def test_audio_fork_malformed_start(bridge, first, code) -> None:
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(url(bridge, "audio_fork"), protocols=("audio.drachtio.org",)) as ws:
        await (ws.send_bytes(first) if isinstance(first, bytes) else ws.send_str(first))
        msgs = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 1008
    assert msgs and msgs[0]["type"] == "error" and msgs[0]["data"]["code"] == code
    await settle(bridge.events, lambda ev: of(ev, "error"))
    assert of(bridge.events, "error")[0]["code"] == code
    assert not of(bridge.events, "call_start")


async def test_plain_http_to_a_ws_listener_is_a_400(bridge) -> None:
    h, p = bridge.addresses["twilio"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{h}:{p}/") as r:
        assert r.status == 400 and "websocket" in await r.text()


# -- Twilio --------------------------------------------------------------------------------------


async def test_twilio_both_tracks_ulaw_passthrough_dtmf(sis) -> None:
    _, client = sis
    events: list[dict] = []
    async with Bridge(client, twilio=":0", sinks=[CallbackSink(events.append)],
                      settings=SessionSettings(property="chinese_8k_common")) as b:
        tw = FakeTwilio(url(b, "twilio", "/media"), {"inbound": tone(1.0), "outbound": tone(0.6)},
                        call_sid="CA123", dtmf="7")
        res = await tw.run()
        assert res.messages == []  # nothing in-band: Twilio takes only media/mark/clear
        await settle(events, lambda ev: len(of(ev, "call_end")) == 2)
        leg_formats = {e["channel"]: e["audio_format"] for e in of(events, "call_start", call_id="CA123")}
        assert leg_formats == {"inbound": "ulaw8k8bit", "outbound": "ulaw8k8bit"}  # u-law untouched
        ends = {e["channel"]: e for e in of(events, "call_end")}
        assert ends["inbound"]["audio_ms"] == 1000 and ends["outbound"]["audio_ms"] == 600
        assert all(e["lost_ms"] == 0 and e["reason"] == "hangup" for e in ends.values())
        assert [(e["digit"], e["channel"]) for e in of(events, "dtmf")] == [("7", "inbound")]


@pytest.mark.parametrize("before, code, close", [
    ([b"\x01\x02"], "bad_frame", 1003),
    (['{"event": "media", "media": {"payload": "AAAA"}}'], "bad_order", 1008),
    (["not json"], "bad_json", 1008),
    (['{"no_event": 1}'], "bad_message", 1008),
])
async def test_twilio_malformed_peer(bridge, before, code, close) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url(bridge, "twilio")) as ws:
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        for m in before:
            await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
        async for _ in ws:
            pass
        assert ws.close_code == close
    await settle(bridge.events, lambda ev: of(ev, "error"))
    assert of(bridge.events, "error")[0]["code"] == code


async def test_twilio_bad_media_format_and_bad_base64(bridge) -> None:
    start = {"event": "start", "streamSid": "MZ1", "start": {
        "callSid": "CA9", "tracks": ["inbound"], "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}}}
    async with aiohttp.ClientSession() as http, http.ws_connect(url(bridge, "twilio")) as ws:
        await ws.send_str(json.dumps(start))
        async for _ in ws:
            pass
    await settle(bridge.events, lambda ev: of(ev, "error"))
    assert of(bridge.events, "error")[0]["code"] == "bad_format"
    bridge.events.clear()
    start["start"]["mediaFormat"] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    async with aiohttp.ClientSession() as http, http.ws_connect(url(bridge, "twilio")) as ws:
        await ws.send_str(json.dumps(start))
        await ws.send_str(json.dumps({"event": "media", "media": {"track": "inbound", "payload": "%%%"}}))
        async for _ in ws:
            pass
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    assert of(bridge.events, "error")[0]["code"] == "bad_payload"
    assert of(bridge.events, "call_end")[0]["reason"] == "protocol_error"


# -- sinks, metrics, drain ------------------------------------------------------------------------


async def _serve_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Start `app` on 127.0.0.1 at a free port; the caller cleans the runner up."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def test_webhook_retries_with_backoff_and_gives_up_on_4xx() -> None:
    seen: list[dict] = []
    answers = [500, 503, 200, 400]

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner, port = await _serve_loopback(app)
    try:
        sink = WebhookSink(f"http://127.0.0.1:{port}/hook", base_delay_s=0.01, max_delay_s=0.02)
        hub = EventHub([sink])
        await hub.start()
        hub.emit("c1", "twilio", "inbound", "final", text="hello")
        hub.emit("c1", "twilio", "inbound", "call_end", audio_ms=1, lost_ms=0, reason="hangup")
        await hub.aclose()
    finally:
        await runner.cleanup()
    assert [e["type"] for e in seen] == ["final", "final", "final", "call_end"]
    assert sink.retries == 2 and sink.delivered == 1 and sink.failed == 1  # 400: not retried
    with pytest.raises(ValueError, match="http"):
        WebhookSink("ftp://x")


async def test_sink_queue_is_bounded_drop_oldest(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonLinesSink(str(path), max_queue=3)
    hub = EventHub([sink])
    for i in range(5):  # before start: nothing is delivered yet, the queue holds 3
        hub.emit(f"c{i}", "audiosocket", 0, "dtmf", digit=str(i))
    assert sink.dropped == 2
    await hub.start()
    await hub.aclose()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["digit"] for e in lines] == ["2", "3", "4"]
    assert all({"call_id", "source", "channel", "type", "seq", "time"} <= e.keys() for e in lines)


async def test_metrics_endpoint(bridge) -> None:
    h, p = bridge.addresses["audiosocket"]
    await FakeAsterisk(h, p, tone(0.4)).run()
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    mh, mp = bridge.addresses["metrics"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{mh}:{mp}/metrics") as r:
        text = await r.text()
    assert r.status == 200
    assert 'sis_bridge_calls_total{source="audiosocket"} 1' in text
    assert 'sis_bridge_calls_active{source="audiosocket"} 0' in text
    assert 'sis_bridge_audio_seconds_total{source="audiosocket"} 0.4' in text
    assert 'sis_bridge_lost_ms_total{source="audiosocket"} 0' in text
    assert 'sis_bridge_silence_lateness_ms_count{source="audiosocket"}' in text
    assert "sis_bridge_time_to_final_ms_bucket" in text


async def test_drain_hangs_up_calls_in_progress(sis) -> None:
    _, client = sis
    events: list[dict] = []
    b = Bridge(client, audiosocket=":0", twilio=":0", sinks=[CallbackSink(events.append)])
    await b.start()
    h, p = b.addresses["audiosocket"]
    peer = FakeAsterisk(h, p, tone(0.2))
    task = asyncio.create_task(peer.run(hangup=False, linger_s=30))
    await settle(events, lambda ev: of(ev, "call_start"))
    await b.drain(0.1)
    res = await asyncio.wait_for(task, 10)
    assert res.hangup_received and res.closed_by_peer
    end = of(events, "call_end")[0]
    assert end["reason"] == "shutdown" and end["audio_ms"] == 200
    with pytest.raises(OSError):  # the listener is gone
        await asyncio.open_connection(h, p)


def test_bridge_needs_a_listener() -> None:
    with pytest.raises(ValueError, match="at least one listener"):
        Bridge(object())


# -- the command ---------------------------------------------------------------------------------


async def test_cli_bridge_startup_lines_events_and_sigterm(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sis_stream", "bridge", "--audiosocket", ":0", "--twilio", "127.0.0.1:0",
        "--events", str(events), "--engine", "english_16k_common=none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SIS_ENDPOINT": "", "SIS_REGION": ""})
    try:
        lines = {}
        async with asyncio.timeout(60):
            while len(lines) < 2:
                line = (await proc.stdout.readline()).decode()
                assert line, (await proc.stderr.read()).decode()
                kind, _, addr = line.strip().partition(" listening on ")
                lines[kind] = addr
        assert set(lines) == {"audiosocket", "twilio"}
        host, port = lines["audiosocket"].rsplit(":", 1)
        await FakeAsterisk(host, int(port), tone(0.3)).run()
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0, (await proc.stderr.read()).decode()
    types = [json.loads(x)["type"] for x in events.read_text().splitlines()]
    assert types[0] == "call_start" and types[-1] == "call_end"


def test_cli_bridge_usage_errors() -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "sis_stream", "bridge"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "at least one listener" in r.stderr
    r = subprocess.run([sys.executable, "-m", "sis_stream", "bridge", "--audiosocket", ":0", "--set", "x.y=z"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "LISTENER.KEY=VALUE" in r.stderr


# -- SIS misbehaving: rejected START, no END --------------------------------------------------------


async def _fake_sis(behaviour: str, log: list | None = None):
    """A SIS endpoint that rejects START (``reject``), never answers END (``mute``), or drops the
    first connection after 3 audio frames and behaves on the next (``drop_once``)."""
    conns = [0]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conns[0] += 1
        first = conns[0] == 1
        frames = 0
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames += 1
                if log is not None:
                    log.append((conns[0], len(msg.data)))
                if behaviour == "drop_once" and first and frames == 3:
                    await ws.close()
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            cmd = json.loads(msg.data).get("command")
            if cmd == "START" and behaviour == "reject":
                await ws.send_str(json.dumps({"resp_type": "ERROR", "trace_id": "t1", "error_code": "SIS.0032",
                                              "error_msg": "'property' is invalid"}))
            elif cmd == "START":
                await ws.send_str(json.dumps({"resp_type": "START", "trace_id": "t2"}))
            elif cmd == "END" and behaviour == "drop_once":
                await ws.send_str(json.dumps({"resp_type": "END", "trace_id": "t2", "reason": "NORMAL"}))
        return ws

    app = web.Application()
    app.router.add_get("/v1/{pid}/rasr/{mode}", handler)
    return await _serve_loopback(app)


@pytest.mark.parametrize("behaviour, code", [("reject", "SIS.0032"), ("mute", "final_timeout")])
async def test_sis_errors_become_error_events_and_inband_errors(behaviour, code) -> None:
    from sis_stream.client.rasr import RasrClient
    from sis_stream.protocol import Token

    runner, port = await _fake_sis(behaviour)
    events: list[dict] = []
    try:
        async with RasrClient(f"ws://127.0.0.1:{port}", "p", Token("t")) as client, \
                Bridge(client, audio_fork=":0", sinks=[CallbackSink(events.append)],
                       options=LegOptions(final_timeout_s=0.3)) as b:
            res = await FakeFreeSwitch(url(b, "audio_fork"), {"uuid": "fs-err"}, tone(0.5)).run()
            await settle(events, lambda ev: of(ev, "call_end"))
    finally:
        await runner.cleanup()
    err = of(events, "error")[0]
    assert err["code"] == code and err["call_id"] == "fs-err"
    assert any(m["type"] == "error" and m["data"]["code"] == code for m in res.messages)  # in-band too
    end = of(events, "call_end")[0]
    assert end["audio_ms"] == 500
    if behaviour == "reject":
        assert end["lost_ms"] == 500  # nothing reached a SIS session


async def test_no_leak_over_many_calls(bridge) -> None:
    h, p = bridge.addresses["audiosocket"]
    short = tone(0.1)

    async def calls(k: int) -> None:
        await asyncio.gather(*(FakeAsterisk(h, p, short).run() for _ in range(k)))
        await settle(bridge.events, lambda ev: len(of(ev, "call_end")) == len(of(ev, "call_start")), 30)

    await calls(10)
    tasks0 = len(asyncio.all_tasks())
    fds0 = len(os.listdir("/proc/self/fd"))
    for _ in range(6):
        await calls(20)
    assert len(of(bridge.events, "call_end")) == 130
    assert all(e["lost_ms"] == 0 and e["audio_ms"] == 100 for e in of(bridge.events, "call_end"))
    assert not bridge.ctx.calls and not bridge.metrics.active and not bridge.listeners["audiosocket"].connections
    assert len(asyncio.all_tasks()) <= tasks0
    assert len(os.listdir("/proc/self/fd")) <= fds0 + 5


async def test_sis_connection_drop_reconnects_with_replay() -> None:
    from sis_stream.client.rasr import RasrClient
    from sis_stream.protocol import Token

    log: list = []
    runner, port = await _fake_sis("drop_once", log)
    events: list[dict] = []
    try:
        async with RasrClient(f"ws://127.0.0.1:{port}", "p", Token("t")) as client, \
                Bridge(client, audiosocket=":0", sinks=[CallbackSink(events.append)],
                       settings=SessionSettings(property="chinese_8k_common")) as b:
            h, p = b.addresses["audiosocket"]
            await FakeAsterisk(h, p, tone(1.0), realtime=True).run()
            await settle(events, lambda ev: of(ev, "call_end"))
    finally:
        await runner.cleanup()
    end = of(events, "call_end")[0]
    assert end["lost_ms"] == 0 and end["audio_ms"] == 1000 and not of(events, "error")
    assert {c for c, _ in log} == {1, 2}  # a second connection carried the rest
    assert sum(n for c, n in log if c == 2) == 16000  # the ring replayed all (no final yet) + the rest


async def test_silence_clock_is_drift_free_skips_stalls_and_never_late_by_slotting() -> None:
    from sis_stream.bridges.audiosocket import SILENCE_FRAME, AudioSocketConnection, SilenceClock

    lm = BridgeMetrics().listener("audiosocket")
    clock = SilenceClock(lm)

    class Sock:
        """Takes `room` bytes per send (None: everything; 0: the buffer is full)."""

        def __init__(self) -> None:
            self.data = bytearray()
            self.room: int | None = None

        def send(self, data: bytes) -> int:
            if self.room == 0:
                raise BlockingIOError
            n = len(data) if self.room is None else min(self.room, len(data))
            self.data += data[:n]
            return n

    class Conn:  # the connection's write path, on a fake socket
        _closed = False
        _out = b""
        send = AudioSocketConnection.send
        flush = AudioSocketConnection.flush

        def __init__(self) -> None:
            self.sock = Sock()
            self.silence_deadline = 0.0

        def frames(self) -> int:
            assert self.sock.data == SILENCE_FRAME * (len(self.sock.data) // len(SILENCE_FRAME))  # whole frames
            return len(self.sock.data) // len(SILENCE_FRAME)

    c = Conn()
    clock.add(c)
    clock.close()  # drive it by hand from here
    slot = next(i for i, s in enumerate(clock._slots) if c in s)
    d0 = c.silence_deadline
    clock._serve(slot, d0 + 0.0004)  # due: sent, the next deadline is exactly 20 ms later
    assert c.frames() == 1 and c.silence_deadline == pytest.approx(d0 + 0.020)
    clock._serve(slot, d0 + 0.0185)  # 1.5 ms before the deadline: not due, moves to the next slot
    assert c.frames() == 1 and c in clock._slots[(slot + 1) % 20]
    s1 = (slot + 1) % 20
    clock._serve(s1, d0 + 0.0195)  # within the 1 ms window: sent
    assert c.frames() == 2 and c.silence_deadline == pytest.approx(d0 + 0.040)
    # a 65 ms stall: one frame now, the missed ticks skipped, the phase kept (d0 + k * 20 ms)
    clock._serve(s1, d0 + 0.105)
    assert c.frames() == 3 and c.silence_deadline == pytest.approx(d0 + 0.120)
    assert lm.silence_skipped == 3 and lm.silence_lateness.max == pytest.approx(65.0)
    c.sock.room = 0  # the peer's socket buffer is full: skipped, not queued
    clock._serve(s1, d0 + 0.120)
    assert c.frames() == 3 and lm.silence_skipped == 4 and c.silence_deadline == pytest.approx(d0 + 0.140)
    c.sock.room = 100  # the kernel takes part of a frame: the rest is kept and goes first
    clock._serve(s1, d0 + 0.140)
    assert len(c.sock.data) == 3 * len(SILENCE_FRAME) + 100 and c._out == SILENCE_FRAME[100:]
    clock._serve(s1, d0 + 0.160)  # 100 bytes more of the rest only: still pending, skipped
    assert c._out == SILENCE_FRAME[200:] and lm.silence_skipped == 5
    c.sock.room = None
    clock._serve(s1, d0 + 0.180)  # the rest, then this tick's frame
    assert c.frames() == 5 and not c._out and lm.silence_frames == 5
    c._closed = True
    clock._serve(s1, d0 + 0.200)
    assert len(clock) == 0 and lm.silence_frames == 5


async def test_polled_reads_are_scheduled_when_the_next_sis_frame_is_complete() -> None:
    """A call's socket is read again when the audio it holds should complete its next frame to
    SIS (plus a small margin), never sooner than 20 ms nor later than read_max_ms; a read that
    finds nothing keeps the schedule; the peer closing ends it."""
    from sis_stream.bridges.audiosocket import SilenceClock

    clock = SilenceClock(BridgeMetrics().listener("audiosocket"))
    margin, ring = clock.READ_MARGIN_MS, clock.READ_RING

    class Leg:
        missing = 100.0

        def ms_to_frame(self) -> float:
            return self.missing

    class Sock:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def recv_into(self, view: memoryview) -> int:
            if not self.chunks:
                raise BlockingIOError
            data = self.chunks.pop(0)
            view[:len(data)] = data
            return len(data)

    class Conn:
        _closed = False

        def __init__(self) -> None:
            self.sock, self._leg, self.got = Sock(), Leg(), []

        def received(self, data: memoryview) -> None:
            self.got.append(bytes(data))

        def lost(self, exc: object) -> None:
            self._closed, self._leg = True, None

    c = Conn()
    clock._rslots[0].append(c)

    def slot_of(conn: Conn) -> int:
        return next(i for i, s in enumerate(clock._rslots) if conn in s)

    c.sock.chunks.append(b"\x10" * 1615)  # five 20 ms frames: the next SIS frame is 100 ms away
    clock._read(0, 0)
    assert c.got == [b"\x10" * 1615] and slot_of(c) == 100 + margin
    c._leg.missing = 40.0  # 60 ms of the next frame are already here: read again in 40 ms
    clock._read(slot_of(c), 100)
    assert slot_of(c) == (140 + margin) % ring and clock.empty_reads == 1  # nothing came: still rescheduled
    c._leg.missing = 5.0  # never sooner than one 20 ms frame
    clock._read(slot_of(c), 150)
    assert slot_of(c) == (170 + margin) % ring
    c._leg.missing = 1000.0  # 1 s frames to SIS: still read every read_max_ms (hangups, DTMF)
    clock._read(slot_of(c), 200)
    assert slot_of(c) == (300 + margin) % ring
    clock.read_max_ms = 20  # the other path: a read per 20 ms frame
    clock._read(slot_of(c), 300)
    assert slot_of(c) == (320 + margin) % ring
    with pytest.raises(ValueError, match="read_max_ms"):
        clock.read_max_ms = 200
    c.sock.chunks.append(b"")  # the peer closed: no more reads
    clock._read(slot_of(c), 320)
    assert c._closed and not any(c in s for s in clock._rslots)
    assert clock.reads == 6


async def test_leg_ms_to_frame_counts_what_is_queued_modulo_a_frame() -> None:
    hub = EventHub([])
    ctx = BridgeContext(_StuckClient(), hub, BridgeMetrics(), LegOptions(frame_ms=100))
    call = Call(ctx, "audiosocket", "c1", (0,), AudioFormat(8000, "pcm", 2), SessionSettings())
    leg = call.legs[0]
    assert leg.ms_to_frame() == 100  # nothing queued: a whole frame is missing
    for _ in range(3):
        leg.push(bytes(320))
    assert leg.ms_to_frame() == pytest.approx(40)
    for _ in range(4):
        leg.push(bytes(320))
    assert leg.ms_to_frame() == pytest.approx(60)  # 140 ms queued: 40 ms into the second frame


async def test_audiosocket_polled_reads_join_frames_split_across_reads(bridge) -> None:
    """The socket is read once per 20 ms: frames cut anywhere by TCP (here: written in 7-byte
    pieces over several reads) still arrive whole and in order; the hangup closes the call."""
    h, p = bridge.addresses["audiosocket"]
    reader, writer = await asyncio.open_connection(h, p)
    cid = uuid.uuid4()
    pcm = (np.arange(25 * 160) % 200 - 100).astype("<i2").tobytes()  # 25 frames, no two alike
    data = as_frame(0x01, cid.bytes) + b"".join(as_frame(0x10, pcm[i:i + 320]) for i in range(0, len(pcm), 320))
    for i in range(0, len(data), 7):
        writer.write(data[i:i + 7])
        await writer.drain()
        if i % 700 == 0:
            await asyncio.sleep(0.021)  # let a poll see a part of a frame
    writer.write(as_frame(0x00))
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 10)  # until the bridge closes
    writer.close()
    assert got and len(got) % len(as_frame(0x10, bytes(320))) == 0  # silence came back in whole frames
    await settle(bridge.events, lambda ev: of(ev, "call_end"))
    end = of(bridge.events, "call_end")[0]
    assert end["call_id"] == str(cid) and end["audio_ms"] == 500 and end["reason"] == "hangup"
    assert not of(bridge.events, "error")


def test_audiosocket_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[dict]:
        events: list[dict] = []
        async with embedded_server(engine_overrides=NONE) as srv, srv.client() as client, \
                Bridge(client, audiosocket=":0", sinks=[CallbackSink(events.append)]) as b:
            h, p = b.addresses["audiosocket"]
            res = await FakeAsterisk(h, p, tone(0.4), realtime=True).run()
            assert res.silence_times and res.closed_by_peer
            await settle(events, lambda ev: of(ev, "call_end"))
        return events

    events = uvloop.run(main())
    end = of(events, "call_end")[0]
    assert end["audio_ms"] == 400 and end["lost_ms"] == 0 and end["reason"] == "hangup"
