"""Wire models: exact JSON of every message, round trips, the official SDK strings."""

from __future__ import annotations

import json

import pytest

from sis_stream.errors import RemoteProtocolError, RequestRejected
from sis_stream.protocol import (
    CancelEncoding,
    EndCommand,
    EndMessage,
    EndReason,
    ErrorMessage,
    EventMessage,
    EventType,
    FatalErrorMessage,
    Mode,
    ResultMessage,
    Segment,
    SegmentResult,
    StartCommand,
    StartConfig,
    StartMessage,
    WordInfo,
    parse_client_message,
    parse_server_message,
)

# The official SDKs' exact frames (sis-protocol.md §4, §6, §14.7).
SDK_OLD_START = ('{"command": "START", "config": {"audio_format": "pcm16k16bit", "property": '
                 '"chinese_16k_general", "add_punc": "yes", "vad_head": 10000, "vad_tail": 500, '
                 '"max_seconds": 30, "interim_results": "yes", "vocabulary_id": '
                 '"CFD08A32-6176-4ad7-92F9-11ED015C8109"}}')
SDK_NEW_START = json.dumps({"command": "START", "config": {
    "audio_format": "ulaw8k8bit", "property": "chinese_8k_common", "add_punc": "no", "digit_norm": "yes",
    "vad_head": 10000, "vad_tail": 500, "max_seconds": 30, "interim_results": "no", "vad_threshold": 0,
    "need_word_info": "no", "user_words": ["华为云"]}})
DOC_START = ('{"command": "START", "config": {"audio_format": "pcm16k16bit", "property": "chinese_16k_general", '
             '"add_punc": "yes", "digit_norm": "yes", "vad_head": 10000, "vad_tail": 500, "max_seconds": 30, '
             '"interim_results": "yes", "need_word_info": "no", "vocabulary_id": "abc"}}')
SDK_END = '{"command": "END", "cancel": "false"}'
DOC_END = '{"command": "END", "cancel": false}'
SHORT_AUDIO_END = '{"command": "END"}'


@pytest.mark.parametrize("text", [SDK_OLD_START, SDK_NEW_START, DOC_START])
def test_official_start_strings_parse(text):
    # Proves: every documented/SDK START parses and re-serialises to the same JSON value.
    cmd = parse_client_message(text)
    assert isinstance(cmd, StartCommand)
    again = json.loads(cmd.to_json())
    src = json.loads(text)
    for k, v in src["config"].items():
        assert again["config"][k] == v
    assert parse_client_message(cmd.to_json()) == cmd


def test_sdk_new_start_values():
    cfg = parse_client_message(SDK_NEW_START).config
    assert cfg.vad_threshold == 0 and cfg.user_words == ("华为云",) and cfg.rate_hz == 8000
    assert cfg.add_punc is False and cfg.digit_norm is True


def test_short_audio_start_from_sdk_with_vad_fields_is_tolerated():
    # Proves: the SDK leaves vad_* inside config on the short-audio websocket; accepted, dropped.
    cmd = parse_client_message(SDK_NEW_START, Mode.SHORT_AUDIO)
    assert "vad_head" not in cmd.to_dict()["config"]
    assert parse_client_message(cmd.to_json(), Mode.SHORT_AUDIO) == cmd


@pytest.mark.parametrize("text,cancel,enc", [
    (SDK_END, False, CancelEncoding.STRING),
    ('{"command": "END", "cancel": "true"}', True, CancelEncoding.STRING),
    ('{"command": "END", "cancel": "True"}', True, CancelEncoding.STRING),
    (DOC_END, False, CancelEncoding.BOOLEAN),
    ('{"command": "END", "cancel": true}', True, CancelEncoding.BOOLEAN),
    (SHORT_AUDIO_END, False, CancelEncoding.OMITTED),
])
def test_end_forms(text, cancel, enc):
    cmd = parse_client_message(text)
    assert cmd == EndCommand(cancel, enc)
    assert parse_client_message(cmd.to_json()) == cmd


def test_end_serialises_like_the_sdk_by_default():
    assert EndCommand().to_json() == SDK_END
    assert EndCommand(True, CancelEncoding.BOOLEAN).to_json() == '{"command": "END", "cancel": true}'
    with pytest.raises(ValueError, match="OMITTED"):
        EndCommand(True, CancelEncoding.OMITTED)
    with pytest.raises(TypeError, match="cancel must be a bool"):
        EndCommand("true")  # type: ignore[arg-type]


@pytest.mark.parametrize("text,code,msg", [
    ("not json", "SIS.0032", "the json in the request is invalid"),
    (b"\xff\xfe", "SIS.0032", "the json in the request is invalid"),
    ("[]", "SIS.0032", "the json in the request is invalid"),
    ('{"config": {}}', "SIS.0012", "'command' is required"),
    ('{"command": "STOP"}', "SIS.0032", "'command' is invalid"),
    ('{"command": 1}', "SIS.0032", "'command' is invalid"),
    ('{"command": "START"}', "SIS.0012", "'config' is required"),
    ('{"command": "START", "config": []}', "SIS.0032", "'config' is invalid"),
    ('{"command": "END", "cancel": "yes"}', "SIS.0032", "'cancel' is invalid"),
    ('{"command": "END", "cancel": 0}', "SIS.0032", "'cancel' is invalid"),
    ('{"command": "END", "cancel": NaN}', "SIS.0032", "the json in the request is invalid"),
    ("[" * 100000 + "]" * 100000, "SIS.0032", "the json in the request is invalid"),
    ("x" * (1 << 20 + 1), "SIS.0032", "the json in the request is invalid"),
])
def test_client_message_rejections(text, code, msg):
    with pytest.raises(RequestRejected) as ei:
        parse_client_message(text)
    assert (ei.value.error_code, ei.value.error_msg) == (code, msg)
    assert ei.value.body() == {"error_code": code, "error_msg": msg}


def test_parse_type_error_for_non_text():
    with pytest.raises(TypeError, match="str or bytes"):
        parse_client_message(12)  # type: ignore[arg-type]


SERVER_MESSAGES = [
    StartMessage("567e8537-a89c-13c3-a882-826321939651"),
    ResultMessage("t", (Segment(0, 5480, True, SegmentResult("欢迎", 0.8452650904655457,
                                                             (WordInfo(1700, 1800, "欢"), WordInfo(word="迎")))),
                        Segment(5500, 5600, False, SegmentResult("", 0.0)),
                        Segment(5600, 5700, False, None))),
    EventMessage("t", "VOICE_END", 1500),
    EventMessage("t", "EXCEEDED_AUDIO"),
    EventMessage("t", "FUTURE_EVENT", 3),
    ErrorMessage("t", "SIS.0032", "'audio_format' is invalid"),
    FatalErrorMessage("t", "SIS.0304", "wait voice timeout"),
    EndMessage("t", EndReason.NORMAL),
    EndMessage("t", EndReason.CANCEL),
    EndMessage("t", EndReason.ERROR),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_message_round_trip(msg):
    # Proves: serialise -> parse gives the same value, for every server message type.
    assert parse_server_message(msg.to_json()) == msg
    assert parse_server_message(msg.to_json().encode("utf-8")) == msg


def test_documented_server_json_exact():
    # Proves: field names and types exactly as §7 documents them.
    assert json.loads(StartMessage("x").to_json()) == {"resp_type": "START", "trace_id": "x"}
    assert json.loads(EventMessage("x", EventType.VOICE_START, 10).to_json()) == {
        "resp_type": "EVENT", "trace_id": "x", "event": "VOICE_START", "timestamp": 10}
    assert json.loads(EndMessage("x").to_json()) == {"resp_type": "END", "trace_id": "x", "reason": "NORMAL"}
    r = json.loads(SERVER_MESSAGES[1].to_json())
    seg = r["segments"][0]
    assert seg == {"start_time": 0, "end_time": 5480, "is_final": True,
                   "result": {"text": "欢迎", "score": 0.8452650904655457,
                              "word_info": [{"start_time": 1700, "end_time": 1800, "word": "欢"}, {"word": "迎"}]}}
    assert "欢迎" in SERVER_MESSAGES[1].to_json()  # UTF-8 text, not \\u escapes


def test_doc_result_example_parses():
    doc = ('{"resp_type": "RESULT", "trace_id": "149edb8a-664b-4f0d-9935-847a57b1e3a5", "segments": '
           '[{"start_time": 0, "end_time": 5480, "is_final": true, "result": {"text": '
           '"欢迎大家使用华为云语音交互服务。", "score": 0.8452650904655457, "word_info": [{"start_time": 1700, '
           '"end_time": 1800, "word": "欢"}, {"start_time": 1940, "end_time": 2040, "word": "迎"}]}}]}')
    m = parse_server_message(doc)
    assert m.segments[0].result.word_info[1] == WordInfo(1940, 2040, "迎")


def test_parse_tolerances():
    # Missing trace_id (allowed on errors), gateway-style error, integral float durations.
    assert parse_server_message('{"resp_type": "ERROR", "error_code": "SIS.0002", "error_msg": "x"}').trace_id is None
    assert parse_server_message('{"error_code": "APIG.0301", "error_msg": "m"}') == ErrorMessage(None, "APIG.0301", "m")
    m = parse_server_message('{"resp_type": "RESULT", "segments": [{"start_time": 1.0, "end_time": 2, "is_final": true}]}')
    assert m.segments[0].start_time == 1


@pytest.mark.parametrize("text,match", [
    ('{"resp_type": "RESULT", "trace_id": "t"}', "'segments'"),
    ('{"resp_type": "RESULT", "segments": [{"start_time": 0, "end_time": 1}]}', "'is_final'"),
    ('{"resp_type": "RESULT", "segments": [{"start_time": 0.5, "end_time": 1, "is_final": true}]}', "'start_time'"),
    ('{"resp_type": "RESULT", "segments": [{"start_time": 0, "end_time": 1, "is_final": true, "result": {"text": 3}}]}', "'text'"),
    ('{"resp_type": "RESULT", "segments": [{"start_time": 0, "end_time": 1, "is_final": true, "result": {"text": "a", "score": "x"}}]}', "'score'"),
    ('{"resp_type": "RESULT", "segments": [{"start_time": 0, "end_time": 1, "is_final": true, "result": {"text": "a", "word_info": {}}}]}', "'word_info'"),
    ('{"resp_type": "EVENT", "trace_id": "t"}', "'event'"),
    ('{"resp_type": "EVENT", "event": "VOICE_END", "timestamp": "1"}', "'timestamp'"),
    ('{"resp_type": "ERROR", "error_code": "x"}', "'error_msg'"),
    ('{"resp_type": "END", "reason": "DONE"}', "'reason'"),
    ('{"resp_type": "START", "trace_id": 5}', "'trace_id'"),
    ('{"resp_type": 5}', "unknown resp_type"),
    ("nope", "not valid JSON"),
])
def test_server_message_rejections(text, match):
    with pytest.raises(RemoteProtocolError, match=match):
        parse_server_message(text)


def test_model_validation():
    with pytest.raises(TypeError, match="start_time must be an int"):
        Segment(0.5, 1, True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is_final must be a bool"):
        Segment(0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        SegmentResult("a", float("nan"))
    with pytest.raises(TypeError, match="score must be a float"):
        SegmentResult("a", True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        SegmentResult(None)  # type: ignore[arg-type]
    assert EventMessage("t", "VOICE_END").event_type is EventType.VOICE_END
    assert EventMessage("t", "NEW").event_type is None
    assert EventType.VOICE_END.ends_recognition and not EventType.VOICE_START.ends_recognition
    assert StartCommand(StartConfig("pcm8k16bit", "chinese_8k_common")).to_dict()["command"] == "START"
