"""RasrClient / RasrStream against the loopback fake SIS server (tests/client_fakes.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from client_fakes import AK, DOMAIN, PASSWORD, PROJECT, REGION, SK, USER, FakeSisServer

from sis_stream.client.rasr import RasrClient, VadGate
from sis_stream.errors import BufferFullError, LocalProtocolError, SisAuthError, SisConnectionError
from sis_stream.protocol import (
    AkSk,
    ConnectionClosed,
    Ended,
    EndReason,
    FinalResult,
    PartialResult,
    ServerError,
    StartConfig,
    Started,
    Token,
    VoiceEnd,
    VoiceStart,
)
from sis_stream.client.rest import IamPassword
from sis_stream.client.events import Reconnected
from sis_stream.client.transport import ReconnectPolicy

U8 = {"audio_format": "ulaw8k8bit", "property": "chinese_8k_common"}
FRAME = 800  # 100 ms of ulaw8k8bit


def frames(first: int, n: int) -> list[bytes]:
    """100 ms frames; frame k is filled with byte k (the fake engine names results after it)."""
    return [bytes([k % 256]) * FRAME for k in range(first, first + n)]


async def no_sleep(_s: float) -> None:
    await asyncio.sleep(0)


#: Generous bound on every wait for something to happen (shared, loaded machines).
WAIT_S = 30.0


async def until(cond, what: str, timeout_s: float = WAIT_S) -> None:
    """Wait (polling the loop) until ``cond()`` is true; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)


async def collect(stream) -> list[object]:
    return [ev async for ev in stream]


def finals(events: list[object]) -> list[tuple[int, int, str]]:
    return [(e.segment.start_time, e.segment.end_time, e.text) for e in events if isinstance(e, FinalResult)]


@pytest.fixture
async def server():
    async with FakeSisServer() as srv:
        yield srv


@pytest.fixture
async def client(server):
    async with RasrClient(server.url, PROJECT, AkSk(AK, SK)) as c:
        yield c


# --- modes -------------------------------------------------------------------------------------


async def test_continue_stream_results_and_end(server, client):
    # Proves the whole path: AK/SK upgrade verified, START, framed audio, finals on the user clock.
    async with client.stream("continue", {**U8, "interim_results": "yes"}, pacing=None) as s:
        for f in frames(0, 25):
            await s.send(f)
        await s.end()
        evs = await collect(s)
    assert isinstance(evs[0], Started)
    assert finals(evs) == [(0, 1000, "b0"), (1000, 2000, "b10"), (2000, 2500, "b20")]
    assert any(isinstance(e, PartialResult) for e in evs)
    assert isinstance(evs[-1], Ended) and evs[-1].reason is EndReason.NORMAL
    rec = server.connections[0]
    assert rec.principal == "aksk" and server.auth_failures == []
    assert [len(f) for f in rec.frames] == [FRAME] * 25
    assert json.loads(rec.texts_in[-1]) == {"command": "END", "cancel": "false"}


async def test_sentence_stream_stops_after_voice_end(server, client):
    # Sentence mode: VOICE_START, one final, VOICE_END; the client ends the session itself.
    async with client.stream("sentence", dict(U8, mode=None) if False else U8, pacing=None) as s:
        for f in frames(0, 12):
            await s.send(f)
        evs = await collect(s)
        await s.send(frames(12, 1)[0])  # dropped: the server already finished
    kinds = [type(e) for e in evs]
    assert kinds[:2] == [Started, VoiceStart]
    assert finals(evs) == [(0, 1000, "b0")]
    assert VoiceEnd in kinds and kinds[-1] is Ended
    assert s.stats.dropped_after_end >= 1


@pytest.mark.parametrize("mode", ["short", "short-audio"])
async def test_short_modes_one_final_after_end(server, client, mode):
    async with client.stream(mode, U8, pacing=None) as s:
        for f in frames(0, 7):
            await s.send(f)
        await s.end()
        evs = await collect(s)
    assert finals(evs) == [(0, 700, "b0")]
    start = json.loads(server.connections[0].texts_in[0])
    assert ("vad_head" in start["config"]) == (mode == "short")  # short-audio form drops VAD fields


async def test_cancel_discards_and_ends_with_cancel(server, client):
    async with client.stream("continue", U8, pacing=None) as s:
        for f in frames(0, 5):
            await s.send(f)
        await s.end(cancel=True)
        evs = await collect(s)
    assert isinstance(evs[-1], Ended) and evs[-1].reason is EndReason.CANCEL
    assert finals(evs) == []
    assert json.loads(server.connections[0].texts_in[-1]) == {"command": "END", "cancel": "true"}


async def test_cancel_overrides_a_pending_end(server, client):
    # end() waits while 5 s of buffered audio go out in real time; end(cancel=True) meanwhile
    # drops the rest and sends END with cancel; both calls return, the stream ends CANCEL.
    async with client.stream("continue", U8, pacing="realtime", max_buffer_ms=10_000) as s:
        for f in frames(0, 50):
            await s.send(f)
        pending = asyncio.create_task(s.end())
        # some audio is out (the pacer runs), far from the 5 s end() waits for
        await until(lambda: len(server.connections[0].audio) >= 2 * FRAME, "the first frames")
        assert not pending.done()
        await s.end(cancel=True)
        await pending
        evs = await collect(s)
    assert isinstance(evs[-1], Ended) and evs[-1].reason is EndReason.CANCEL
    assert json.loads(server.connections[0].texts_in[-1]) == {"command": "END", "cancel": "true"}
    assert 0 < len(server.connections[0].audio) < 50 * FRAME  # the rest was never sent


async def test_exception_in_block_cancels_session(server, client):
    with pytest.raises(RuntimeError, match="boom"):
        async with client.stream("continue", U8, pacing=None) as s:
            await s.send(frames(0, 1)[0])
            raise RuntimeError("boom")
    texts = server.connections[0].texts_in
    await until(lambda: texts and json.loads(texts[-1]).get("command") == "END", "the END")
    assert json.loads(texts[-1])["cancel"] == "true"


# --- server errors -----------------------------------------------------------------------------


async def test_start_rejected_is_an_event(server, client):
    server.faults.reject_start[0] = "SIS.0032"
    async with client.stream("continue", U8, pacing=None) as s:
        evs = await collect(s)
    assert [type(e) for e in evs] == [ServerError]
    assert evs[0].error_code == "SIS.0032" and not evs[0].fatal
    assert evs[0].to_exception().error_code == "SIS.0032"


async def test_server_error_mid_session_then_end_error(server, client):
    server.faults.error_after_bytes[0] = 3 * FRAME
    async with client.stream("continue", U8, pacing=None) as s:
        for f in frames(0, 5):
            await s.send(f)
        evs = await collect(s)
    errs = [e for e in evs if isinstance(e, ServerError)]
    assert errs and errs[0].error_code == "SIS.0306"
    assert isinstance(evs[-1], Ended) and evs[-1].reason is EndReason.ERROR
    assert s.stats.reconnects == 0


async def test_fatal_error_closes_without_reconnect(server, client):
    server.faults.fatal_after_bytes[0] = 3 * FRAME
    async with client.stream("continue", U8, pacing=None) as s:
        for f in frames(0, 4):
            await s.send(f)
        evs = await collect(s)
    fatal = [e for e in evs if isinstance(e, ServerError) and e.fatal]
    assert fatal and fatal[0].error_code == "SIS.0305"
    closed = [e for e in evs if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1 and closed[0].error_code == "SIS.0305"
    assert len(server.connections) == 1


# --- keepalive ---------------------------------------------------------------------------------


async def test_idle_keepalive_beats_server_idle_rule():
    # The server's idle rule is shortened to 1 s; the client keeps it alive with 0.1 s keepalives.
    async with FakeSisServer(idle_timeout_s=1.0) as srv:  # noqa: SIM117 - the stream needs the client
        async with RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c:
            async with c.stream("continue", U8, pacing=None, keepalive_s=0.1) as s:
                await s.send(frames(0, 1)[0])
                await asyncio.sleep(2.0)
                await s.end()
                evs = await collect(s)
    assert isinstance(evs[-1], Ended) and evs[-1].reason is EndReason.NORMAL
    assert srv.connections[0].closed_by_server is None
    assert s.stats.keepalive_frames >= 3
    # keepalive frames are the shard minimum of silence (ulaw 0xFF)
    assert bytes([0xFF]) * 160 in srv.connections[0].frames


async def test_without_keepalive_the_idle_rule_fires():
    async with FakeSisServer(idle_timeout_s=0.3) as srv:  # noqa: SIM117 - the stream needs the client
        async with RasrClient(srv.url, PROJECT, AkSk(AK, SK)) as c:
            async with c.stream("continue", U8, pacing=None, keepalive_s=None,
                                reconnect=ReconnectPolicy(enabled=False)) as s:
                await s.send(frames(0, 1)[0])
                evs = await collect(s)
    assert any(isinstance(e, ServerError) and e.fatal and e.error_code == "SIS.0304" for e in evs)
    assert srv.connections[0].closed_by_server == "idle"


# --- reconnect with replay ---------------------------------------------------------------------


async def _drop_run(server, client, pol, before=15, after=10):
    # Send `before` frames, let the link drop right after them, wait for the reconnect, then
    # send `after` more frames and end the stream.
    server.faults.drop_after_bytes[0] = before * FRAME
    async with client.stream("continue", U8, pacing=None, reconnect=pol, sleep=no_sleep) as s:
        for f in frames(0, before):
            await s.send(f)
        evs = []
        async for ev in s:
            evs.append(ev)
            if isinstance(ev, Reconnected):
                break
        for f in frames(before, after):
            await s.send(f)
        await s.end()
        evs += await collect(s)
    return s, evs


def _no_delay(**kwargs):
    return ReconnectPolicy(base_delay_s=0.0, max_delay_s=0.0, **kwargs)


async def test_drop_mid_utterance_replays_ring_exactly(server, client):
    # The drop comes after 1.5 s; the final for 0-1 s was delivered, so the ring holds 1.0-1.5 s.
    s, evs = await _drop_run(server, client, _no_delay(ring_ms=30_000))
    rec = next(e for e in evs if isinstance(e, Reconnected))
    assert rec.lost_ms == 0 and rec.replayed_ms == 500.0 and rec.attempt == 1
    # Conn 2 got exactly the replay (frames 10-14) then the new audio (15-24).
    assert server.connections[1].audio == b"".join(frames(10, 15))
    # Timestamps shifted back onto the session clock, texts prove which audio they came from.
    assert finals(evs) == [(0, 1000, "b0"), (1000, 2000, "b10"), (2000, 2500, "b20")]
    assert s.stats.reconnects == 1 and s.stats.lost_ms == 0
    assert isinstance(evs[-1], Ended)


async def test_drop_with_small_ring_reports_lost_ms(server, client):
    # Ring of 300 ms: frames 10 and 11 (200 ms after the last final) cannot be replayed.
    _s, evs = await _drop_run(server, client, _no_delay(ring_ms=300))
    rec = next(e for e in evs if isinstance(e, Reconnected))
    assert rec.lost_ms == 200.0 and rec.replayed_ms == 300.0
    assert server.connections[1].audio == b"".join(frames(12, 13))
    # Conn 2's first final covers frames 12-21 and is reported on the session clock: 1200-2200.
    assert finals(evs) == [(0, 1000, "b0"), (1200, 2200, "b12"), (2200, 2500, "b22")]


async def test_duplicate_finals_are_dropped(server, client):
    # Finals every 450 ms: the frame 400-500 ms straddles the first final, so the ring replays it.
    # After the reconnect the server cuts a 50 ms first segment (400-450 ms on the session clock):
    # it ends where the delivered final ended, so it is a duplicate and never reaches the user.
    server.segment_ms = 450
    server.faults.first_segment_ms[1] = 50
    s, evs = await _drop_run(server, client, _no_delay(), before=6, after=6)
    assert server.connections[1].audio == b"".join(frames(4, 8))  # replay from the straddling frame
    assert finals(evs) == [(0, 450, "b0"), (450, 900, "b4"), (900, 1200, "b9")]
    assert s.stats.duplicate_finals == 1


async def test_reconnect_gives_up_after_attempt_limit(server, client):
    server.faults.drop_after_bytes[0] = 3 * FRAME
    server.faults.refuse_connect.update({1, 2, 3})
    slept = []

    async def fake_sleep(s):
        slept.append(s)

    pol = ReconnectPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=8.0, jitter=0.5)
    async with client.stream("continue", U8, pacing=None, reconnect=pol, sleep=fake_sleep,
                             rng=lambda: 1.0) as s:
        for f in frames(0, 3):
            await s.send(f)
        with pytest.raises(SisConnectionError, match="3 reconnect attempts failed"):
            await collect(s)
    assert slept == [0.25, 0.5, 1.0]  # 0.5*2**(k-1) * (1 - 0.5*1.0)


async def test_no_reconnect_after_user_end(server, client):
    server.faults.drop_after_bytes[0] = 3 * FRAME
    async with client.stream("continue", U8, pacing=None, sleep=no_sleep) as s:
        for f in frames(0, 3):
            await s.send(f)
        await s.end()
        evs = await collect(s)
    assert len(server.connections) == 1
    assert isinstance(evs[-1], ConnectionClosed) and s.stats.reconnects == 0


async def test_other_modes_never_reconnect(server, client):
    server.faults.drop_after_bytes[0] = 3 * FRAME
    async with client.stream("short", U8, pacing=None, sleep=no_sleep) as s:
        for f in frames(0, 3):
            await s.send(f)
        evs = await collect(s)
    assert isinstance(evs[-1], ConnectionClosed) and len(server.connections) == 1


# --- planned rollover --------------------------------------------------------------------------


async def test_planned_rollover_at_silence_boundary(server, client):
    # rollover_after_s is tiny; the rollover waits for the final (a boundary), then continues.
    from sis_stream.client.events import RolledOver

    t = [0.0]
    async with client.stream("continue", U8, pacing=None, rollover_after_s=0.5, clock=lambda: t[0]) as s:
        for f in frames(0, 10):
            await s.send(f)
        evs = []
        t[0] = 1.0
        async for ev in s:
            evs.append(ev)
            if isinstance(ev, FinalResult):
                break
        await s.send(frames(10, 1)[0])  # wakes the send loop: the rollover happens at the boundary
        async for ev in s:
            evs.append(ev)
            if isinstance(ev, RolledOver):
                break
        t[0] = 1.1
        for f in frames(11, 14):
            await s.send(f)
        await s.end()
        evs += await collect(s)
    assert len(server.connections) == 2 and s.stats.rollovers == 1
    ro = next(e for e in evs if isinstance(e, RolledOver))
    assert not ro.forced
    fs = finals(evs)
    assert fs[0] == (0, 1000, "b0") and fs[-1][1] == 2500
    assert [e for e in evs if isinstance(e, Ended)][-1].reason is EndReason.NORMAL
    assert b"".join(server.connections[0].frames) + b"".join(server.connections[1].frames) == b"".join(frames(0, 25))


# --- shard limits, queues ----------------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 5000])
async def test_frame_outside_shard_limits_rejected_before_connecting(server, client, frame_ms):
    from sis_stream.errors import AudioFormatError

    with pytest.raises(AudioFormatError, match="shard limits"):
        client.stream("continue", U8, frame_ms=frame_ms)
    assert server.connections == []


async def test_frames_on_the_wire_respect_shard_limits(server, client):
    async with client.stream("continue", U8, pacing=None, frame_ms=20) as s:
        await s.send(bytes(1000))  # 125 ms: 6 frames of 160 + a 40-byte tail
        await s.end()
        await collect(s)
    sizes = [len(f) for f in server.connections[0].frames]
    assert sizes == [160] * 6 + [40]  # the tail below the minimum is sent as is (like the SDK)


async def test_input_overflow_error_policy(server, client):
    async with client.stream("continue", U8, pacing=None, overflow="error", max_buffer_ms=200) as s:
        with pytest.raises(BufferFullError, match="offered"):
            await s.send(bytes(8000))  # 1 s into a 200 ms buffer
        await s.end(cancel=True)


async def test_input_overflow_drop_oldest_counts(server, client):
    async with client.stream("continue", U8, pacing=None, overflow="drop_oldest", max_buffer_ms=200) as s:
        await s.send(bytes(8000))
        assert s.framer.stats.bytes_dropped == 8000 - 1600
        await s.end()
        await collect(s)


async def test_event_queue_error_policy_fails_stream(server, client):
    server.segment_ms = 100
    async with client.stream("continue", U8, pacing=None, events_max=2, events_overflow="error") as s:
        for f in frames(0, 10):
            await s.send(f)
        events = s._kw["events"]  # the stream's bounded queue: wait until it overflowed
        await until(lambda: events.overruns >= 1, "the event queue to overflow")
        with pytest.raises(BufferFullError, match="event queue full"):
            await collect(s)


async def test_event_queue_drop_partial_keeps_finals(server, client):
    server.segment_ms = 200
    async with client.stream("continue", {**U8, "interim_results": "yes"}, pacing=None, events_max=3,
                             events_overflow="drop_partial") as s:
        for f in frames(0, 20):
            await s.send(f)
        await s.end()
        events = s._kw["events"]  # not read yet: partials had to make room for finals
        await until(lambda: events.dropped >= 1, "a partial to be dropped")
        evs = await collect(s)
    assert len(finals(evs)) == 10 and events.dropped >= 1


def test_event_queue_validation():
    from sis_stream.client.events import EventQueue

    with pytest.raises(ValueError, match="overflow must be one of"):
        EventQueue(4, "spill")
    with pytest.raises(ValueError, match="maxsize"):
        EventQueue(0)


# --- auth ---------------------------------------------------------------------------------------


async def test_token_flow(server):
    issued = server.token_service.authenticate(json.dumps(
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": USER, "password": PASSWORD, "domain": {"name": DOMAIN}}}},
            "scope": {"project": {"name": REGION}}}}))
    async with RasrClient(server.url, PROJECT, Token(issued.value)) as c:  # noqa: SIM117 - the stream needs the client
        async with c.stream("short", U8, pacing=None) as s:
            await s.send(frames(0, 3)[0])
            await s.end()
            await collect(s)
    assert server.connections[0].principal == "token"
    assert any(k.lower() == "x-auth-token" for k, _ in server.connections[0].headers)


async def test_iam_password_fetches_and_caches_token(server):
    cred = IamPassword(USER, PASSWORD, DOMAIN, REGION, iam_endpoint=server.http_url)
    async with RasrClient(server.url, PROJECT, cred) as c:
        for _ in range(2):
            async with c.stream("short", U8, pacing=None) as s:
                await s.end()
                await collect(s)
    assert server.token_requests == 1
    assert [r.principal for r in server.connections] == ["token", "token"]
    assert "pa55word" not in repr(cred)


async def test_bad_secret_key_raises_auth_error(server):
    async with RasrClient(server.url, PROJECT, AkSk(AK, "wrong-secret")) as c:
        with pytest.raises(SisAuthError, match="401"):
            async with c.stream("continue", U8):
                pass
    assert server.auth_failures == ["bad_signature"]


async def test_signed_host_equals_sent_host_byte_for_byte(server):
    # The verifier checks the received Host against the signed one; record both on the wire.
    async with RasrClient(server.url, PROJECT, AkSk(AK, SK)) as c:  # noqa: SIM117 - the stream needs the client
        async with c.stream("short", U8, pacing=None) as s:
            await s.end()
            await collect(s)
    hdrs = server.connections[0].headers
    hosts = [v for k, v in hdrs if k.lower() == "host"]
    assert hosts == [f"127.0.0.1:{server.port}"]  # exactly one Host, with the non-default port
    auth = next(v for k, v in hdrs if k.lower() == "authorization")
    assert "SignedHeaders=host;x-sdk-date," in auth


def test_host_header_drops_default_ports():
    from sis_stream.client.transport import host_header

    assert host_header("wss://sis-ext.cn-north-4.myhuaweicloud.com:443/v1/p/rasr/continue-stream") == \
        "sis-ext.cn-north-4.myhuaweicloud.com"
    assert host_header("ws://example.com:80/x") == "example.com"
    assert host_header("wss://example.com:8443/x") == "example.com:8443"
    assert host_header("ws://[::1]:9000/x") == "[::1]:9000"


async def test_signed_default_port_url_verifies(monkeypatch):
    # An endpoint written with :443 must be signed as the bare host aiohttp will send.
    from sis_stream.protocol import AccessKeyRecord, CredentialStore, SignatureVerifier
    from sis_stream.client.rest import AuthProvider

    async with __import__("aiohttp").ClientSession() as http:
        p = AuthProvider(AkSk(AK, SK), http)
        url = f"wss://sis-ext.cn-north-4.myhuaweicloud.com:443/v1/{PROJECT}/rasr/continue-stream"
        h = await p.headers("GET", url)
    assert h["Host"] == "sis-ext.cn-north-4.myhuaweicloud.com"
    v = SignatureVerifier(CredentialStore([AccessKeyRecord(AK, SK, PROJECT)]))
    v.verify("GET", f"/v1/{PROJECT}/rasr/continue-stream", list(h.items()))


# --- validation -------------------------------------------------------------------------------


async def test_stream_argument_validation(client):
    with pytest.raises(ValueError, match="mode must be one of"):
        client.stream("lecture", U8)
    with pytest.raises(TypeError, match="config is required"):
        client.stream("continue")
    with pytest.raises(TypeError, match="config must be a StartConfig or a mapping"):
        client.stream("continue", 42)
    with pytest.raises(ValueError, match="built for"):
        client.stream("short", StartConfig("ulaw8k8bit", "chinese_8k_common"))
    with pytest.raises(TypeError, match="pacing must be"):
        async with client.stream("continue", U8, pacing=3.5):
            pass
    with pytest.raises(ValueError, match="keepalive_s must lie"):
        async with client.stream("continue", U8, keepalive_s=30):
            pass


async def test_send_validation_and_after_end(server, client):
    async with client.stream("continue", U8, pacing=None) as s:
        with pytest.raises(TypeError, match="bytes-like"):
            await s.send("audio")
        await s.end()
        with pytest.raises(LocalProtocolError, match="after end"):
            await s.send(bytes(160))
        await collect(s)


def test_client_constructor_validation():
    with pytest.raises(ValueError, match="endpoint must be"):
        RasrClient("ftp://x", PROJECT, AkSk(AK, SK))
    with pytest.raises(ValueError, match="project_id"):
        RasrClient("wss://x", "", AkSk(AK, SK))
    with pytest.raises(TypeError, match="auth must be"):
        RasrClient("wss://x", PROJECT, ("ak", "sk"))


def test_tls_verification_on_by_default():
    from sis_stream.client.transport import TransportOptions

    assert TransportOptions().ssl is True
    assert TransportOptions(verify_tls=False).ssl is False
    with pytest.raises(TypeError, match="verify_tls"):
        TransportOptions(verify_tls="no")


# --- VAD gating -------------------------------------------------------------------------------


async def test_vad_gating_keeps_user_clock_and_keepalive(server, client):
    import numpy as np

    from sis_stream.audio import codec

    # 1 s silence, 1 s tone, 1 s silence (ulaw 8 kHz); gating sends the tone (+ pre-roll/hangover).
    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    pcm = np.concatenate([np.zeros(8000, np.int16), tone, np.zeros(8000, np.int16)])
    audio = bytes(codec.ulaw_encode(pcm))
    gate = VadGate("ulaw8k8bit", preroll_ms=200, hangover_ms=200)
    async with client.stream("continue", U8, pacing=None, vad=gate) as s:
        await s.send(audio)
        await s.end()
        evs = await collect(s)
    sent = len(server.connections[0].audio)
    assert sent < len(audio)  # silence was withheld
    assert s.stats.gated_ms > 0
    fs = finals(evs)
    # the first final starts at the pre-roll before the tone, on the user's clock (not at 0)
    assert fs and 700 <= fs[0][0] <= 1000, fs


# --- input transcoding -------------------------------------------------------------------------


@pytest.mark.parametrize("src", ["pcm16k16bit", "pcm8k16bit", "alaw8k8bit", "pcm44100"])
async def test_input_is_transcoded_to_the_session_format(server, client, src):
    from sis_stream.audio.formats import AudioFormat

    fmt = AudioFormat(44100, "pcm", 2) if src == "pcm44100" else AudioFormat.from_sis(src)
    silence = {"pcm": b"\x00\x00", "alaw": b"\xd5", "ulaw": b"\xff"}[fmt.encoding] * fmt.rate_hz  # 1 s
    async with client.stream("continue", U8, pacing=None, input_format=fmt if src == "pcm44100" else src) as s:
        for i in range(0, len(silence), 999):  # odd chunk sizes, split samples included
            await s.send(silence[i:i + 999])
        await s.end()
        evs = await collect(s)
    got = server.connections[0].audio
    # 1 s at 8 kHz; A-law silence 0xD5 decodes to +8, which is u-law 0xFE (G.711), the rest 0
    quiet = 0xFE if fmt.encoding == "alaw" else 0xFF
    assert len(got) == 8000 and set(got) == {quiet}
    assert finals(evs) == [(0, 1000, f"b{quiet}")]


async def test_same_input_format_is_passed_through(server, client):
    async with client.stream("continue", U8, pacing=None, input_format="ulaw8k8bit") as s:
        assert s._transcoder is None
        await s.end()
        await collect(s)


async def test_forced_rollover_without_a_boundary(server, client):
    # No final and no idle moment: after the grace period the rollover happens anyway.
    from sis_stream.client.events import RolledOver

    server.segment_ms = 100_000  # no final ever
    holder: dict = {}

    def clock() -> float:  # 0 until three frames went out, then far past the grace period
        s = holder.get("s")
        return 1000.0 if s is not None and s._runner.stats.frames_sent >= 3 else 0.0

    async with client.stream("continue", U8, pacing=None, rollover_after_s=0.5, clock=clock) as s:
        holder["s"] = s
        await s.send(b"".join(frames(0, 10)))
        await s.end()
        evs = await collect(s)
    ro = [e for e in evs if isinstance(e, RolledOver)]
    assert len(ro) == 1 and ro[0].forced
    assert len(server.connections) == 2
    assert server.connections[0].audio + server.connections[1].audio == b"".join(frames(0, 10))


def test_time_map_gaps_and_keepalive():
    # conn ms -> user ms through sent frames: a VAD gap and a keepalive frame do not shift times.
    from sis_stream.client._replay import _Sent, _TimeMap

    m = _TimeMap(100)
    m.add(_Sent(b"a" * 800, 0.0, 0.0, 100.0, False))       # user 0-100
    m.add(_Sent(b"b" * 800, 100.0, 500.0, 100.0, False))   # user 500-600 (400 ms withheld)
    m.add(_Sent(b"\xff" * 160, 200.0, 600.0, 20.0, True))   # keepalive: user clock stands still
    m.add(_Sent(b"c" * 800, 220.0, 900.0, 100.0, False))    # user 900-1000
    assert m.map(50) == (50.0, 50.0)
    assert m.map(150) == (550.0, 150.0)
    assert m.map(210) == (600.0, 210.0)
    assert m.map(270) == (950.0, 270.0)
    assert m.map(400) == (1080.0, 400.0)  # past the last frame: extrapolated 1:1
    m.trim(200)  # a final ended at conn 200: the first two frames leave, an anchor stays
    assert m.map(150) == (550.0, 150.0)


def test_replay_ring_bound_and_trim():
    from sis_stream.client._replay import _Ring, _Sent

    r = _Ring(300.0)
    for k in range(5):
        r.add(_Sent(bytes([k]) * 800, 100.0 * k, 100.0 * k, 100.0, False))
    assert [s.stream_ms for s in r] == [200.0, 300.0, 400.0] and r.dropped_ms == 200.0
    assert r.start_stream_ms(500.0) == 200.0
    r.trim(350.0)  # frames ending at or before 350 ms go; the straddling frame 300-400 stays
    assert [s.stream_ms for s in r] == [300.0, 400.0] and r.ms == 200.0
    r.clear()
    assert len(r) == 0 and r.start_stream_ms(500.0) == 500.0


def test_reconnect_policy_backoff_and_validation():
    p = ReconnectPolicy(base_delay_s=0.5, max_delay_s=2.0, jitter=0.5)
    assert [p.delay(k, lambda: 0.0) for k in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]
    assert p.delay(1, lambda: 1.0) == 0.25
    with pytest.raises(ValueError, match="max_attempts"):
        ReconnectPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        ReconnectPolicy(jitter=2)
    with pytest.raises(ValueError, match="base_delay_s"):
        ReconnectPolicy(base_delay_s=5, max_delay_s=1)
    with pytest.raises(ValueError, match="ring_ms"):
        ReconnectPolicy(ring_ms=-1)


def test_ws_url_forms():
    from sis_stream.client.transport import ws_url

    assert ws_url("https://sis-ext.cn-north-4.myhuaweicloud.com", "p1", "continue-stream") == \
        "wss://sis-ext.cn-north-4.myhuaweicloud.com/v1/p1/rasr/continue-stream"
    assert ws_url("ws://127.0.0.1:8080/prefix/", "p1", "short-audio") == \
        "ws://127.0.0.1:8080/prefix/v1/p1/asr/short-audio"
    with pytest.raises(ValueError, match="project_id"):
        ws_url("wss://x", "a/b", "short-stream")
