"""A loopback aiohttp server playing SIS with the protocol core's ServerSession (client tests only).

The recognition "engine" is scripted and deterministic: every ``segment_ms`` of session audio
becomes one final segment whose text names the first byte of that audio (``"b<byte>"``), so a
test that fills frame ``k`` with byte ``k`` can check exactly which audio a result came from and
that its timestamps were mapped back to the user's clock. Faults (drop the transport, ERROR,
FATAL_ERROR, reject START) are triggered per connection by byte counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from sis_stream.errors import AuthRejected, RequestRejected
from sis_stream.protocol import (
    AccessKeyRecord,
    Authenticator,
    CredentialStore,
    EndRequested,
    EndResponse,
    ErrorResponse,
    EventResponse,
    EventType,
    FatalErrorResponse,
    Mode,
    ResultResponse,
    Segment,
    SegmentResult,
    ServerSession,
    SignatureVerifier,
    StartRequested,
    StartResponse,
    TokenIssuer,
    TokenService,
    UserRecord,
    WordInfo,
    mode_from_path,
)
from sis_stream.protocol.events import AudioReceived

__all__ = ["AK", "DOMAIN", "PASSWORD", "PROJECT", "REGION", "SK", "USER", "ConnRecord", "FakeSisServer"]

AK = "AKFAKE00000000000000"
SK = "SKFAKEsecret0000000000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
USER, PASSWORD, DOMAIN, REGION = "alice", "pa55word", "acme", "cn-north-4"


@dataclass
class ConnRecord:
    """What one websocket connection saw."""

    index: int
    mode: Mode
    headers: list[tuple[str, str]]
    principal: str | None = None
    frames: list[bytes] = field(default_factory=list)
    texts_in: list[str] = field(default_factory=list)
    texts_out: list[str] = field(default_factory=list)
    closed_by_server: str | None = None

    @property
    def audio(self) -> bytes:
        return b"".join(self.frames)


@dataclass
class Faults:
    """Per-connection fault triggers (keys: connection index, 0-based)."""

    drop_after_bytes: dict[int, int] = field(default_factory=dict)
    error_after_bytes: dict[int, int] = field(default_factory=dict)
    fatal_after_bytes: dict[int, int] = field(default_factory=dict)
    reject_start: dict[int, str] = field(default_factory=dict)
    refuse_connect: set[int] = field(default_factory=set)  # answer 503 to the upgrade
    first_segment_ms: dict[int, int] = field(default_factory=dict)  # a shorter first final


class FakeSisServer:
    """Loopback SIS stand-in (websocket + IAM token route). Use ``async with``.

    Parameters
    ----------
    segment_ms : int
        Audio per scripted final result.
    auth : bool
        Check AK/SK (via ``SignatureVerifier``) or ``X-Auth-Token`` on every upgrade.
    idle_timeout_s : float
        The server's idle rule (20 s in SIS).
    interim : bool
        Send one partial per segment half-way (when the START asked for interim results).
    """

    def __init__(self, *, segment_ms: int = 1000, auth: bool = True, idle_timeout_s: float = 20.0,
                 interim: bool = True, word_info: bool = True) -> None:
        self.segment_ms = segment_ms
        self.auth = auth
        self.idle_timeout_s = idle_timeout_s
        self.interim = interim
        self.word_info = word_info
        self.faults = Faults()
        store = CredentialStore([AccessKeyRecord(AK, SK, PROJECT)],
                                [UserRecord(USER, PASSWORD, DOMAIN, PROJECT, REGION)])
        issuer = TokenIssuer(b"k" * 32)
        self.verifier = SignatureVerifier(store, max_failures=1000)
        self.authenticator = Authenticator(self.verifier, issuer)
        self.token_service = TokenService(store, issuer)
        self.connections: list[ConnRecord] = []
        self.auth_failures: list[str] = []
        self._counter = itertools.count()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0
        self.token_requests = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeSisServer:  # noqa: PYI034 - py3.10 has no typing.Self
        app = web.Application()
        app.router.add_get("/v1/{pid}/rasr/{mode}", self._ws)
        app.router.add_get("/v1/{pid}/asr/short-audio", self._ws)
        app.router.add_post("/v3/auth/tokens", self._token)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        body = await request.read()
        try:
            issued = self.token_service.authenticate(body)
        except AuthRejected as exc:
            return web.json_response(exc.body(), status=exc.http_status)
        except RequestRejected as exc:
            return web.json_response({"error_code": exc.error_code, "error_msg": exc.error_msg}, status=400)
        return web.json_response(issued.response_body(), status=201, headers=issued.response_headers())

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        found = mode_from_path(request.path)
        if found is None:
            return web.json_response({"error_code": "APIG.0101", "error_msg": "API not found"}, status=404)
        pid, mode = found
        index = next(self._counter)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        rec = ConnRecord(index, mode, headers)
        self.connections.append(rec)
        if index in self.faults.refuse_connect:
            return web.json_response({"error_code": "SIS.0302", "error_msg": "internal"}, status=503)
        if self.auth:
            try:
                p = self.authenticator.authenticate("GET", request.raw_path, headers, b"", project_id=pid)
                rec.principal = p.kind
            except AuthRejected as exc:
                self.auth_failures.append(exc.reason)
                return web.json_response(exc.body(), status=exc.http_status)
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 22)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        sess = ServerSession(mode, clock=loop.time, idle_timeout_s=self.idle_timeout_s)
        conn = _Conn(self, rec, ws, sess, request)
        idle = loop.create_task(conn.idle_watch())
        self._tasks.add(idle)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    rec.texts_in.append(msg.data)
                    await conn.handle(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    rec.frames.append(msg.data)
                    await conn.handle(msg.data)
                else:
                    break
                if conn.dead:
                    break
        finally:
            idle.cancel()
            self._tasks.discard(idle)
            with contextlib.suppress(asyncio.CancelledError):
                await idle
            if not conn.dropped:
                await ws.close()
        return ws


class _Conn:
    def __init__(self, server: FakeSisServer, rec: ConnRecord, ws: web.WebSocketResponse, sess: ServerSession,
                 request: web.Request) -> None:
        self.server = server
        self.rec = rec
        self.ws = ws
        self.sess = sess
        self.request = request
        self.dead = False
        self.dropped = False
        self.conn_bytes = 0
        self._reset()

    def _reset(self) -> None:
        self.audio = bytearray()
        self.done_ms = 0
        self.partial_sent = False
        self.cfg = None
        self.trace: str | None = None
        self.voice_started = False

    async def send(self, frames: list[str]) -> None:
        for f in frames:
            self.rec.texts_out.append(f)
            await self.ws.send_str(f)

    async def idle_watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.dead:
            await asyncio.sleep(max(0.0, self.sess.idle_deadline() - loop.time()) + 0.001)
            out = self.sess.expire_idle()
            if out:
                await self.send(out)
                self.rec.closed_by_server = "idle"
                self.dead = True
                await self.ws.close()
                return

    async def handle(self, data: str | bytes) -> None:
        f = self.server.faults
        await self.send(self.sess.receive(data))
        for ev in self.sess.events():
            if isinstance(ev, StartRequested):
                self._reset()
                self.cfg, self.trace = ev.config, ev.trace_id
                code = f.reject_start.get(self.rec.index)
                if code is not None:
                    await self.send(self.sess.send(ErrorResponse.from_catalogue(code, trace_id=ev.trace_id)
                                                   if code != "SIS.0032" else
                                                   ErrorResponse(code, "'audio_format' is invalid", ev.trace_id)))
                else:
                    await self.send(self.sess.send(StartResponse(ev.trace_id)))
            elif isinstance(ev, AudioReceived):
                self.conn_bytes += len(ev.data)
                self.audio += ev.data
                await self._recognise(final_tail=False)
                i = self.rec.index
                if i in f.drop_after_bytes and self.conn_bytes >= f.drop_after_bytes[i]:
                    self.rec.closed_by_server = "drop"
                    self.dead = self.dropped = True
                    tr = self.request.transport
                    if tr is not None:
                        tr.abort()
                    return
                if i in f.error_after_bytes and self.conn_bytes >= f.error_after_bytes[i]:
                    f.error_after_bytes.pop(i)
                    await self.send(self.sess.send(ErrorResponse("SIS.0306", "recognition error", self.trace)))
                if i in f.fatal_after_bytes and self.conn_bytes >= f.fatal_after_bytes[i]:
                    await self.send(self.sess.send(FatalErrorResponse("SIS.0305", "engine error")))
                    self.rec.closed_by_server = "fatal"
                    self.dead = True
                    await self.ws.close()
                    return
            elif isinstance(ev, EndRequested) and not ev.cancel and self.cfg is not None:
                await self._recognise(final_tail=True)
                await self.send(self.sess.send(EndResponse(trace_id=self.trace)))

    def _bpms(self) -> float:
        assert self.cfg is not None
        return self.cfg.format_info.bytes_per_second / 1000.0

    def _segment(self, start: int, end: int, final: bool) -> Segment:
        bpms = self._bpms()
        first = self.audio[int(start * bpms)] if int(start * bpms) < len(self.audio) else 0
        words = None
        if self.server.word_info and self.cfg is not None and self.cfg.need_word_info:
            words = (WordInfo(start, (start + end) // 2, f"w{first}"),)
        return Segment(start, end, final, SegmentResult(f"b{first}", 0.9, words))

    async def _recognise(self, final_tail: bool) -> None:
        if self.cfg is None or self.sess.state.name not in ("STREAMING", "DRAINING", "FINISHED"):
            return
        first = self.server.faults.first_segment_ms.get(self.rec.index)

        def seg_len() -> int:
            return first if first is not None and self.done_ms == 0 else self.server.segment_ms

        seg = seg_len()
        have_ms = int(len(self.audio) / self._bpms())
        mode = self.sess.mode
        if mode is Mode.SENTENCE_STREAM and not self.voice_started and have_ms > 0 \
                and self.sess.state.name == "STREAMING":
            self.voice_started = True
            await self.send(self.sess.send(EventResponse(EventType.VOICE_START, 0, self.trace)))
        uses_vad = mode in (Mode.CONTINUE_STREAM, Mode.SENTENCE_STREAM)
        while uses_vad and have_ms - self.done_ms >= seg and self.sess.state.name in ("STREAMING", "DRAINING"):
            s, e = self.done_ms, self.done_ms + seg
            self.done_ms = e
            seg = seg_len()
            await self.send(self.sess.send(ResultResponse((self._segment(s, e, True),), self.trace)))
            self.partial_sent = False
            if mode is Mode.SENTENCE_STREAM:
                await self.send(self.sess.send(EventResponse(EventType.VOICE_END, e, self.trace)))
                return
        if (self.server.interim and self.cfg.interim_results and not self.partial_sent
                and have_ms - self.done_ms >= seg // 2 and self.sess.state.name == "STREAMING"):
            self.partial_sent = True
            await self.send(self.sess.send(ResultResponse(
                (self._segment(self.done_ms, self.done_ms + seg // 2, False),), self.trace)))
        if final_tail and have_ms > self.done_ms and self.sess.state.name == "DRAINING":
            s, e = self.done_ms, have_ms
            self.done_ms = e
            await self.send(self.sess.send(ResultResponse((self._segment(s, e, True),), self.trace)))


def decode_texts(rec: ConnRecord) -> list[dict[str, Any]]:
    """The server's text frames of a connection, parsed."""
    return [json.loads(t) for t in rec.texts_out]
