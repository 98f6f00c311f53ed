"""Sans-IO sessions: the client/server pair over a fake link, every mode and error flow."""

from __future__ import annotations

import json

import pytest
from helpers import ConnectionPair, FakeClock, pcm_silence

from sis_stream.errors import BufferFullError, LocalProtocolError, RemoteProtocolError
from sis_stream.protocol import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    AudioFrame,
    AudioLimitReached,
    AudioReceived,
    ClientSession,
    ClientState,
    ConnectionClosed,
    Ended,
    EndOfStream,
    EndReason,
    EndRequested,
    EndResponse,
    ErrorResponse,
    EventResponse,
    EventType,
    ExceededAudio,
    ExceededSilence,
    FatalErrorResponse,
    FinalResult,
    Mode,
    PartialResult,
    ProtocolViolation,
    ResultResponse,
    Segment,
    SegmentResult,
    ServerError,
    ServerSession,
    ServerState,
    StartConfig,
    Started,
    StartRequested,
    StartResponse,
    StartStream,
    VoiceEnd,
    VoiceStart,
    WordInfo,
)
from sis_stream.protocol.session import MAX_PENDING_EVENTS

PCM16 = dict(audio_format="pcm16k16bit", property="chinese_16k_general")


def cfg(mode: Mode = Mode.CONTINUE_STREAM, **kw) -> StartConfig:
    return StartConfig(**{**PCM16, **kw}, mode=mode)


def final(start: int, end: int, text: str, **kw) -> Segment:
    return Segment(start, end, True, SegmentResult(text, 0.9, **kw))


def started_pair(mode: Mode = Mode.CONTINUE_STREAM, **cfg_kw) -> ConnectionPair:
    pair = ConnectionPair(mode)
    ev = pair.client_send(StartStream(cfg(mode, **cfg_kw)))
    assert [type(e) for e in ev] == [StartRequested]
    assert pair.server_send(StartResponse()) == [Started("trace-1")]
    return pair


def wire_json(pair: ConnectionPair) -> list[dict]:
    return [json.loads(f) for f in pair.s2c()]


# --- the three modes end to end ----------------------------------------------------------------


def test_continuous_mode_many_segments_then_end():
    # Proves: START -> audio -> interim + finals (several per RESULT) -> END -> END(NORMAL).
    pair = started_pair(interim_results=True, need_word_info=True)
    ev = pair.client_send(AudioFrame(pcm_silence(3200)))
    assert ev == [AudioReceived(pcm_silence(3200), 0, False)]
    ev = pair.client_send(AudioFrame(pcm_silence(3200)))
    assert ev[0].offset_bytes == 3200
    assert pair.server.audio_ms == pytest.approx(200.0)
    partial = Segment(0, 100, False, SegmentResult("hel", 0.1))
    assert pair.server_send(ResultResponse((partial,))) == [PartialResult(partial, "trace-1")]
    a = final(0, 150, "hello", word_info=(WordInfo(0, 150, "hello"),))
    b = final(160, 200, "world")
    got = pair.server_send(ResultResponse((a, b)))
    assert got == [FinalResult(a, "trace-1"), FinalResult(b, "trace-1")]
    assert got[0].text == "hello"
    assert pair.client_send(EndOfStream()) == [EndRequested(False)]
    assert pair.server.state is ServerState.DRAINING and pair.client.state is ClientState.ENDING
    assert pair.server_send(ResultResponse((final(210, 300, "again"),)))[0].text == "again"
    assert pair.server_send(EndResponse()) == [Ended(EndReason.NORMAL, "trace-1")]
    assert pair.server.state is ServerState.IDLE and pair.client.state is ClientState.IDLE
    # Every server message carries the trace id.
    assert all(m["trace_id"] == "trace-1" for m in wire_json(pair))


def test_sentence_mode_events_and_audio_ignored_after_voice_end():
    # Proves: VOICE_START/VOICE_END reach the client; audio after VOICE_END is dropped and
    # counted; no END is sent until the client's END.
    pair = started_pair(Mode.SENTENCE_STREAM)
    pair.client_send(AudioFrame(pcm_silence(640)))
    assert pair.server_send(EventResponse(EventType.VOICE_START, 120)) == [VoiceStart(120, "trace-1")]
    assert pair.server_send(EventResponse(EventType.VOICE_END, 900)) == [VoiceEnd(900, "trace-1")]
    assert pair.server.state is ServerState.FINISHED
    assert pair.client_send(AudioFrame(pcm_silence(640))) == []
    assert pair.server.stats.dropped_frames == 1
    pair.server_send(ResultResponse((final(120, 900, "one sentence"),)))
    assert pair.client_send(EndOfStream()) == [EndRequested(False)]
    assert pair.server_send(EndResponse()) == [Ended(EndReason.NORMAL, "trace-1")]


def test_sentence_mode_exceeded_silence():
    # Proves: EXCEEDED_SILENCE ends recognition like VOICE_END.
    pair = started_pair(Mode.SENTENCE_STREAM)
    assert pair.server_send(EventResponse("EXCEEDED_SILENCE", 10000)) == [ExceededSilence(10000, "trace-1")]
    assert pair.server.state is ServerState.FINISHED


def test_short_stream_mode_single_final_after_end():
    # Proves: short-stream has no VAD events and its final comes after END.
    pair = started_pair(Mode.SHORT_STREAM)
    pair.client_send(AudioFrame(pcm_silence(4000)))
    with pytest.raises(LocalProtocolError, match="VOICE_START does not exist in short-stream"):
        pair.server.send(EventResponse(EventType.VOICE_START))
    assert pair.server.state is ServerState.ERROR


def test_short_stream_normal_flow():
    pair = started_pair(Mode.SHORT_STREAM)
    pair.client_send(AudioFrame(pcm_silence(4000)))
    pair.client_send(EndOfStream())
    assert pair.server_send(ResultResponse((final(0, 125, "done"),)))[0].text == "done"
    assert pair.server_send(EndResponse())[-1] == Ended(EndReason.NORMAL, "trace-1")


def test_short_audio_websocket_end_without_cancel_key():
    # Proves: the short-audio form sends {"command": "END"} and omits the VAD fields.
    pair = ConnectionPair(Mode.SHORT_AUDIO)
    pair.client_send(StartStream(cfg(Mode.SHORT_AUDIO)))
    start = json.loads(pair.wire[0][1])
    assert "vad_head" not in start["config"] and "max_seconds" not in start["config"]
    pair.server_send(StartResponse())
    from sis_stream.protocol import CancelEncoding
    pair.client_send(EndOfStream(encoding=CancelEncoding.OMITTED))
    assert json.loads(pair.wire[-1][1]) == {"command": "END"}


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_is_answered_by_the_session_at_once():
    # Proves: END(cancel) -> END(CANCEL) immediately, no further results allowed.
    pair = started_pair()
    pair.client_send(AudioFrame(pcm_silence(3200)))
    assert pair.client_send(EndOfStream(cancel=True)) == [EndRequested(True)]
    assert pair.client_events() == [Ended(EndReason.CANCEL, "trace-1")]
    assert pair.server.state is ServerState.IDLE and pair.client.state is ClientState.IDLE
    with pytest.raises(LocalProtocolError, match="RESULT"):
        pair.server.send(ResultResponse((final(0, 1, "late"),)))


def test_cancel_before_start_answer_ends_right_behind_start():
    # Proves: START, audio, END(cancel) all before the app answers -> START then END(CANCEL).
    pair = ConnectionPair()
    pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    pair.raw_to_server(pcm_silence(640))
    assert pair.raw_to_server('{"command": "END", "cancel": "true"}') == [EndRequested(True)]
    assert pair.server.state is ServerState.STARTING_ENDED
    frames = pair.server.send(StartResponse())
    assert [json.loads(f)["resp_type"] for f in frames] == ["START", "END"]
    assert json.loads(frames[1])["reason"] == "CANCEL"
    assert pair.server.state is ServerState.IDLE


def test_end_before_start_answer_drains_after_start():
    pair = ConnectionPair()
    pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    pair.raw_to_server('{"command": "END", "cancel": false}')
    pair.server.send(StartResponse())
    assert pair.server.state is ServerState.DRAINING
    assert json.loads(pair.server.send(EndResponse())[0])["reason"] == "NORMAL"


# --- errors ------------------------------------------------------------------------------------


def test_app_error_mid_session_sends_error_then_end_error():
    # Proves: ERROR -> END(ERROR); the client sees ServerError then Ended(ERROR); audio racing
    # the error is dropped on the client side; the connection is reusable.
    pair = started_pair()
    ev = pair.server_send(ErrorResponse.from_catalogue("SIS.0306"))
    assert ev == [ServerError("SIS.0306", "recognition error", "trace-1"), Ended(EndReason.ERROR, "trace-1")]
    assert ev[0].to_exception().error_code == "SIS.0306"
    assert pair.client.state is ClientState.SERVER_ENDED
    assert pair.client.send(AudioFrame(pcm_silence(320))) == []
    assert pair.client.dropped_frames == 1
    assert pair.client.send(EndOfStream()) == []
    # Late audio that did reach the server is ignored silently until the next START.
    assert pair.raw_to_server(pcm_silence(320)) == []
    assert pair.server.state is ServerState.IGNORING
    pair.client_send(StartStream(cfg()))
    assert pair.server_send(StartResponse()) == [Started("trace-2")]


def test_start_rejected_sends_error_only():
    # Proves: rejecting a START (e.g. concurrency) sends ERROR without END (§7.4).
    pair = ConnectionPair()
    pair.client_send(StartStream(cfg()))
    ev = pair.server_send(ErrorResponse.from_catalogue("SIS.0312", limit=2))
    assert ev == [ServerError("SIS.0312", "max concurrency exceeded: at most 2 sessions", "trace-1")]
    assert [m["resp_type"] for m in wire_json(pair)] == ["ERROR"]
    assert pair.client.state is ClientState.SERVER_ENDED


def test_start_twice_is_error_and_end_error():
    # Proves: START while a session is open -> ERROR + END(ERROR), ProtocolViolation for the app.
    pair = started_pair()
    ev = pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    assert ev == [ProtocolViolation("SIS.0032", ev[0].error_msg, True)]
    assert "START twice" in ev[0].error_msg
    assert [m["resp_type"] for m in wire_json(pair)][-2:] == ["ERROR", "END"]
    assert wire_json(pair)[-1]["reason"] == "ERROR"
    assert pair.server.state is ServerState.IGNORING


def test_start_twice_before_answer_is_error_only():
    pair = ConnectionPair()
    pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    ev = pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    assert ev[0].session_ended is False
    assert [m["resp_type"] for m in wire_json(pair)] == ["ERROR"]


def test_bad_config_is_error_without_end_and_following_audio_ignored():
    # Proves: the SDK streams right behind START; a rejected START must not answer every frame.
    pair = ConnectionPair()
    ev = pair.raw_to_server(json.dumps({"command": "START", "config": {**PCM16, "audio_format": "mp3"}}))
    assert len(ev) == 1 and ev[0].error_code == "SIS.0032" and not ev[0].session_ended
    assert ev[0].error_msg.startswith("'audio_format' is invalid: got 'mp3'")  # + the valid ones
    for _ in range(3):
        assert pair.raw_to_server(pcm_silence(640)) == []
    assert len(pair.s2c()) == 1
    answer = json.loads(pair.s2c()[0])
    assert answer == {"resp_type": "ERROR", "trace_id": "trace-0", "error_code": "SIS.0032",
                      "error_msg": ev[0].error_msg}


def test_audio_before_start_is_answered_once():
    pair = ConnectionPair()
    ev = pair.raw_to_server(pcm_silence(640))
    assert ev[0].error_code == "SIS.0032" and "before START" in ev[0].error_msg
    assert pair.raw_to_server(pcm_silence(640)) == []
    assert len(pair.s2c()) == 1


def test_end_outside_session_and_end_twice():
    pair = ConnectionPair()
    ev = pair.raw_to_server('{"command": "END"}')
    assert "outside a session" in ev[0].error_msg
    pair = started_pair()
    pair.client_send(EndOfStream())
    ev = pair.raw_to_server('{"command": "END", "cancel": "false"}')
    assert "twice" in ev[0].error_msg and ev[0].session_ended


def test_malformed_json_mid_session():
    pair = started_pair()
    ev = pair.raw_to_server("{not json")
    assert ev == [ProtocolViolation("SIS.0032", "the json in the request is invalid", True)]


@pytest.mark.parametrize("rate_fmt,prop,hi", [("pcm16k16bit", "chinese_16k_general", 65536),
                                              ("ulaw8k8bit", "chinese_8k_common", 32768)])
def test_oversize_frame_is_error_and_undersized_is_counted(rate_fmt, prop, hi):
    # Proves: shard maximum per rate -> SIS.0032 + END(ERROR); undersized frames accepted.
    pair = ConnectionPair(early_audio=True)
    pair.client_send(StartStream(StartConfig(rate_fmt, prop)))
    pair.server_send(StartResponse())
    assert pair.client_send(AudioFrame(pcm_silence(hi)))[0].undersized is False
    ev = pair.client_send(AudioFrame(pcm_silence(7)))
    assert ev[0].undersized is True and pair.server.stats.undersized_frames == 1
    ev = pair.raw_to_server(pcm_silence(hi + 1))
    assert ev[0].error_code == "SIS.0032" and f"at most {hi} bytes" in ev[0].error_msg
    assert [m["resp_type"] for m in wire_json(pair)][-2:] == ["ERROR", "END"]


def test_client_refuses_oversize_frame():
    pair = started_pair()
    with pytest.raises(LocalProtocolError, match="exceeds the shard maximum of 65536"):
        pair.client.send(AudioFrame(pcm_silence(65537)))
    assert pair.client.state is ClientState.ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):
        pair.client.send(EndOfStream())


def test_fatal_error_closes_both_sides():
    pair = started_pair()
    ev = pair.server_send(FatalErrorResponse.from_catalogue("SIS.0304"))
    assert ev == [ServerError("SIS.0304", "wait voice timeout", "trace-1", fatal=True),
                  ConnectionClosed("SIS.0304", True)]
    assert pair.server.state is ServerState.CLOSED and pair.client.state is ClientState.CLOSED
    assert pair.server.receive(pcm_silence(320)) == []  # late frames ignored
    with pytest.raises(LocalProtocolError):
        pair.server.send(StartResponse())


def test_idle_timeout_with_fake_clock():
    # Proves: 20 s without client data -> FATAL_ERROR SIS.0304; data resets the timer.
    clock = FakeClock()
    pair = ConnectionPair(clock=clock)
    pair.client_send(StartStream(cfg()))
    clock.advance(19.9)
    assert pair.server.expire_idle() == []
    pair.raw_to_server(pcm_silence(320))  # early audio: the server accepts it in STARTING
    clock.advance(19.9)
    assert pair.server.expire_idle() == []
    clock.advance(0.2)
    out = pair.server.expire_idle()
    assert json.loads(out[0]) == {"resp_type": "FATAL_ERROR", "trace_id": "trace-1",
                                  "error_code": "SIS.0304", "error_msg": "wait voice timeout"}
    assert pair.server.state is ServerState.CLOSED
    assert pair.server_events()[-1] == ConnectionClosed("SIS.0304", True)


def test_audio_cap_sends_exceeded_audio_and_truncates():
    # Proves: the frame crossing the cap is truncated, EXCEEDED_AUDIO sent, later audio dropped.
    pair = ConnectionPair(max_audio_ms=250)  # 250 ms of pcm16k16bit = 8000 bytes
    pair.client_send(StartStream(cfg()))
    pair.server_send(StartResponse())
    pair.client_send(AudioFrame(pcm_silence(6400)))
    ev = pair.client_send(AudioFrame(pcm_silence(3200)))
    assert ev == [AudioReceived(pcm_silence(1600), 6400, False), AudioLimitReached(250)]
    assert pair.client_events() == [ExceededAudio(250, "trace-1")]
    assert pair.server.state is ServerState.FINISHED
    assert pair.client_send(AudioFrame(pcm_silence(3200))) == []
    pair.client_send(EndOfStream())
    pair.server_send(EndResponse())
    assert pair.server.state is ServerState.IDLE


def test_server_initiated_end_and_crossing_client_end():
    # Proves: the server may end first (shutdown); the client's crossing END is dropped.
    pair = started_pair()
    assert pair.server_send(EndResponse()) == [Ended(EndReason.NORMAL, "trace-1")]
    assert pair.client.state is ClientState.SERVER_ENDED
    assert pair.raw_to_server('{"command": "END", "cancel": "false"}') == []
    assert pair.server.state is ServerState.IGNORING


def test_end_reason_cancel_or_error_by_hand_is_refused():
    pair = started_pair()
    with pytest.raises(LocalProtocolError, match="sent by the session itself"):
        pair.server.send(EndResponse(EndReason.ERROR))


def test_interim_and_word_info_must_be_requested():
    pair = started_pair()
    with pytest.raises(LocalProtocolError, match="interim_results=no"):
        pair.server.send(ResultResponse((Segment(0, 1, False, SegmentResult("x")),)))
    pair = started_pair()
    with pytest.raises(LocalProtocolError, match="need_word_info=no"):
        pair.server.send(ResultResponse((final(0, 1, "x", word_info=(WordInfo(0, 1, "x"),)),)))
    pair = started_pair()
    with pytest.raises(LocalProtocolError, match="start_time <= end_time"):
        pair.server.send(ResultResponse((final(5, 1, "x"),)))


def test_result_before_start_answer_is_refused():
    pair = ConnectionPair()
    pair.client_send(StartStream(cfg()))
    with pytest.raises(LocalProtocolError, match="send RESULT is not allowed in server state STARTING"):
        pair.server.send(ResultResponse((final(0, 1, "x"),)))
    # ERROR state: only FATAL_ERROR and transport loss remain.
    with pytest.raises(LocalProtocolError, match="ERROR"):
        pair.server.receive(pcm_silence(320))
    assert json.loads(pair.server.send(FatalErrorResponse("SIS.0100", "internal error"))[0])["resp_type"] == "FATAL_ERROR"


def test_stale_answer_is_dropped_not_applied_to_the_next_session():
    # Proves: an async START answer for a voided session does not accept the next one.
    pair = ConnectionPair()
    ev = pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    first = ev[0].trace_id
    pair.raw_to_server(pcm_silence(70000))  # oversize: the START is voided
    ev = pair.raw_to_server(json.dumps({"command": "START", "config": PCM16}))
    assert pair.server.send(StartResponse(trace_id=first)) == []
    assert pair.server.stats.stale_responses == 1
    assert pair.server.state is ServerState.STARTING
    assert json.loads(pair.server.send(StartResponse(trace_id=ev[0].trace_id))[0])["resp_type"] == "START"


def test_several_sessions_on_one_connection():
    # Proves: START..END cycles repeat on one connection with fresh trace ids.
    pair = ConnectionPair()
    for i in range(1, 4):
        pair.client_send(StartStream(cfg()))
        assert pair.server_send(StartResponse()) == [Started(f"trace-{i}")]
        pair.client_send(AudioFrame(pcm_silence(3200)))
        pair.client_send(EndOfStream())
        pair.server_send(ResultResponse((final(0, 100, f"s{i}"),)))
        assert pair.server_send(EndResponse())[-1] == Ended(EndReason.NORMAL, f"trace-{i}")
        assert pair.server.audio_bytes == 0  # reset per session
    assert pair.server.stats.sessions_started == 3 and pair.server.stats.sessions_ended == 3


def test_official_sdk_start_audio_without_waiting():
    # Proves: the old SDK's exact START, audio right behind it, a short last frame, END "false".
    pair = ConnectionPair()
    start = ('{"command": "START", "config": {"audio_format": "pcm16k16bit", "property": '
             '"chinese_16k_general", "add_punc": "no", "vad_head": 10000, "vad_tail": 500, '
             '"max_seconds": 30, "interim_results": "no"}}')
    ev = pair.raw_to_server(start)
    assert isinstance(ev[0], StartRequested)
    ev = pair.raw_to_server(pcm_silence(4000)) + pair.raw_to_server(pcm_silence(4000))
    assert [e.offset_bytes for e in ev] == [0, 4000]
    ev = pair.raw_to_server(pcm_silence(100))
    assert ev[0].undersized
    pair.server.send(StartResponse())
    assert pair.raw_to_server('{"command": "END", "cancel": "false"}') == [EndRequested(False)]


def test_transport_loss_both_sides():
    pair = started_pair()
    pair.server.receive(None)
    assert pair.server_events() == [ConnectionClosed(None, True)]
    pair.client.receive(None)
    assert pair.client_events() == [ConnectionClosed(None, True)]
    assert pair.server.state is ServerState.CLOSED and pair.client.state is ClientState.CLOSED


# --- client-side strictness --------------------------------------------------------------------


def test_client_audio_before_start_answer_needs_early_audio():
    c = ClientSession(Mode.CONTINUE_STREAM)
    c.send(StartStream(cfg()))
    with pytest.raises(LocalProtocolError, match="early_audio"):
        c.send(AudioFrame(b"\0" * 320))
    c2 = ClientSession(Mode.CONTINUE_STREAM, early_audio=True)
    c2.send(StartStream(cfg()))
    assert c2.send(AudioFrame(b"\0" * 320)) == [b"\0" * 320]


def test_client_start_while_open_and_wrong_mode_config():
    c = ClientSession(Mode.CONTINUE_STREAM)
    with pytest.raises(LocalProtocolError, match="config is for sentence-stream"):
        c.send(StartStream(cfg(Mode.SENTENCE_STREAM)))
    c = ClientSession(Mode.CONTINUE_STREAM)
    c.send(StartStream(cfg()))
    with pytest.raises(LocalProtocolError, match="send START is not allowed in client state STARTING"):
        c.send(StartStream(cfg()))


def test_client_type_errors():
    c = ClientSession("continue-stream")
    with pytest.raises(TypeError, match="not a client event"):
        c.send("START")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AudioFrame.data must be bytes"):
        AudioFrame("abc")  # type: ignore[arg-type]
    s = ServerSession("continue-stream")
    with pytest.raises(TypeError, match="must be str, bytes or None"):
        s.receive(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("msg,match", [
    (b"\x00\x01", "binary frame"),
    ('{"resp_type": "RESULT", "trace_id": "t", "segments": []}', "recv RESULT is not allowed in client state IDLE"),
    ('{"resp_type": "END", "trace_id": "t", "reason": "NORMAL"}', "recv END is not allowed"),
    ('{"trace_id": "t"}', "no 'resp_type'"),
    ('{"resp_type": "NOPE", "trace_id": "t"}', "unknown resp_type"),
    ("[1, 2]", "not a JSON object"),
])
def test_client_rejects_unexpected_server_messages(msg, match):
    c = ClientSession("continue-stream")
    with pytest.raises(RemoteProtocolError, match=match):
        c.receive(msg)
    assert c.state is ClientState.ERROR
    with pytest.raises(LocalProtocolError):
        c.receive('{"resp_type": "START", "trace_id": "t"}')
    c.receive(None)  # transport loss after an error is quietly accepted


def test_client_tolerates_unknown_event_and_missing_trace_id():
    pair = started_pair()
    pair.client.receive('{"resp_type": "EVENT", "event": "SOMETHING_NEW", "timestamp": 5}')
    ev = pair.client_events()
    assert ev[0].event == "SOMETHING_NEW" and ev[0].trace_id == "trace-1"


def test_gateway_style_error_without_resp_type():
    c = ClientSession("continue-stream")
    c.receive('{"error_code": "APIG.0301", "error_msg": "Incorrect IAM authentication information: x"}')
    (ev,) = list(c.events())
    assert ev.error_code == "APIG.0301"
    from sis_stream.errors import SisAuthError
    assert isinstance(ev.to_exception(), SisAuthError)


def test_event_queue_is_bounded():
    s = ServerSession("continue-stream")
    s.receive(json.dumps({"command": "START", "config": PCM16}))
    with pytest.raises(BufferFullError, match="drain events"):
        for _ in range(MAX_PENDING_EVENTS + 1):
            s.receive(b"\0" * 320)


def test_transition_tables_cover_every_state():
    # Proves: each state has a row, and terminal states only accept transport loss / fatal.
    assert set(SERVER_TRANSITIONS) == set(ServerState)
    assert set(CLIENT_TRANSITIONS) == set(ClientState)
    assert CLIENT_TRANSITIONS[ClientState.CLOSED] == {} and CLIENT_TRANSITIONS[ClientState.ERROR] == {}
    assert set(SERVER_TRANSITIONS[ServerState.ERROR]) <= {t for t in SERVER_TRANSITIONS[ServerState.IDLE]}


def test_server_session_validates_arguments():
    with pytest.raises(ValueError, match="max_audio_ms must be > 0"):
        ServerSession("continue-stream", max_audio_ms=0)
    with pytest.raises(ValueError):
        ServerSession("nope")
