"""Property tests: no byte string or JSON value makes a parser raise anything but its documented error."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sis_stream.errors import AuthRejected, LocalProtocolError, RemoteProtocolError, RequestRejected
from sis_stream.protocol import (
    CredentialStore,
    EndMessage,
    ErrorMessage,
    EventMessage,
    Mode,
    ResultMessage,
    Segment,
    SegmentResult,
    ServerSession,
    SignatureVerifier,
    StartMessage,
    TokenIssuer,
    TokenRequest,
    WordInfo,
    parse_client_message,
    parse_server_message,
    validate_config,
)
from sis_stream.protocol.credentials import AccessKeyRecord
from sis_stream.protocol.session import ClientSession

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=15), kids, max_size=6),
    max_leaves=25,
)
# Values shaped like the real messages, so the fuzzer gets past the first checks.
config_keys = st.sampled_from(["audio_format", "property", "add_punc", "digit_norm", "vad_head", "vad_tail",
                               "max_seconds", "interim_results", "need_word_info", "vocabulary_id",
                               "vad_threshold", "user_words", "other"])
config_vals = st.sampled_from(["pcm16k16bit", "ulaw8k8bit", "chinese_16k_general", "chinese_8k_common", "yes",
                               "no", 0, 500, 60001, -1, True, None, [], ["w"], 1.5]) | json_values
configs = st.dictionaries(config_keys, config_vals, max_size=8)
client_objs = st.fixed_dictionaries({"command": st.sampled_from(["START", "END", "X"]) | json_values},
                                    optional={"config": configs | json_values, "cancel": json_values})
server_objs = st.fixed_dictionaries(
    {"resp_type": st.sampled_from(["START", "RESULT", "EVENT", "ERROR", "FATAL_ERROR", "END"]) | json_values},
    optional={"trace_id": json_values, "segments": st.lists(st.dictionaries(
        st.sampled_from(["start_time", "end_time", "is_final", "result"]), json_values | st.fixed_dictionaries(
            {}, optional={"text": json_values, "score": json_values, "word_info": json_values})), max_size=3),
        "event": json_values, "timestamp": json_values, "error_code": json_values, "error_msg": json_values,
        "reason": json_values})


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_client_parser_any_bytes(data):
    try:
        parse_client_message(data)
    except RequestRejected:
        pass


@FAST
@given(client_objs | json_values, st.sampled_from(list(Mode)))
def test_client_parser_any_json(obj, mode):
    try:
        parse_client_message(json.dumps(obj), mode)
    except RequestRejected as exc:
        assert exc.error_code in ("SIS.0012", "SIS.0031", "SIS.0032", "SIS.0301")


@FAST
@given(configs | json_values, st.sampled_from(list(Mode)))
def test_validate_config_any_json(obj, mode):
    try:
        c = validate_config(obj, mode)
    except RequestRejected:
        return
    # Whatever is accepted re-validates to the same value from its own wire form.
    assert validate_config(c.to_dict(), mode) == c


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_server_parser_any_bytes(data):
    try:
        parse_server_message(data)
    except RemoteProtocolError:
        pass


@FAST
@given(server_objs | json_values)
def test_server_parser_any_json(obj):
    try:
        msg = parse_server_message(json.dumps(obj))
    except RemoteProtocolError:
        return
    assert parse_server_message(msg.to_json()) == msg


ints = st.integers(0, 10**7)
segments = st.builds(Segment, ints, ints, st.booleans(), st.none() | st.builds(
    SegmentResult, st.text(max_size=20), st.none() | st.floats(0, 1),
    st.none() | st.lists(st.builds(WordInfo, st.none() | ints, st.none() | ints, st.none() | st.text(max_size=5)),
                         max_size=3).map(tuple)))
server_messages = st.one_of(
    st.builds(StartMessage, st.text(max_size=10)),
    st.builds(ResultMessage, st.text(max_size=10), st.lists(segments, max_size=3).map(tuple)),
    st.builds(EventMessage, st.text(max_size=10), st.text(max_size=10), st.none() | ints),
    st.builds(ErrorMessage, st.text(max_size=10), st.text(max_size=10), st.text(max_size=10)),
    st.builds(EndMessage, st.text(max_size=10), st.sampled_from(["NORMAL", "CANCEL", "ERROR"])),
)


@FAST
@given(server_messages)
def test_server_messages_round_trip(msg):
    assert parse_server_message(msg.to_json()) == msg


frames = st.one_of(
    st.binary(max_size=400),
    st.sampled_from([b"\0" * 320, b"\0" * 70000]),
    st.text(max_size=60),
    client_objs.map(json.dumps),
    st.sampled_from(['{"command": "START", "config": {"audio_format": "pcm16k16bit", "property": '
                     '"chinese_16k_general"}}', '{"command": "END", "cancel": "false"}',
                     '{"command": "END", "cancel": true}']),
)


@FAST
@given(st.lists(frames, max_size=12), st.sampled_from(list(Mode)))
def test_server_session_never_raises_on_client_input(seq, mode):
    # Proves: whatever the client sends, the server session answers on the wire (valid server
    # JSON with a trace_id) and never raises.
    s = ServerSession(mode)
    for f in seq:
        for out in s.receive(f):
            msg = parse_server_message(out)
            assert msg.trace_id
        list(s.events())
    s.receive(None)


@FAST
@given(st.lists(st.binary(max_size=50) | st.text(max_size=60) | server_objs.map(json.dumps), max_size=8))
def test_client_session_raises_only_protocol_errors(seq):
    c = ClientSession(Mode.CONTINUE_STREAM)
    for f in seq:
        try:
            c.receive(f)
        except (RemoteProtocolError, LocalProtocolError):
            pass
        list(c.events())


@FAST
@given(json_values | st.text(max_size=50))
def test_token_request_parser(obj):
    try:
        TokenRequest.parse(obj if isinstance(obj, str) else json.dumps(obj))
    except RequestRejected:
        pass


@FAST
@given(st.text(max_size=80) | st.just("MII") | st.text(max_size=40).map(lambda t: "MII" + t))
def test_token_verify_any_string(value):
    try:
        TokenIssuer(b"k" * 32).verify(value)
    except AuthRejected:
        pass


_store = CredentialStore([AccessKeyRecord("AK1", "SK1", "p")])
header_names = st.sampled_from(["Authorization", "Host", "X-Sdk-Date", "Content-Type", "X-Sdk-Content-Sha256"])
auth_values = st.text(max_size=40) | st.builds(
    lambda a, s, g: f"SDK-HMAC-SHA256 Access={a}, SignedHeaders={s}, Signature={g}",
    st.sampled_from(["AK1", "AK2", ""]), st.sampled_from(["host;x-sdk-date", "host", "a;b", "x-sdk-date;host"]),
    st.sampled_from(["0" * 64, "zz", "f" * 64]))


@FAST
@given(st.lists(st.tuples(header_names, auth_values | st.sampled_from(["20240102T030405Z", "h", ""])), max_size=6),
       st.text(max_size=30) | st.sampled_from(["//[x", "/v1/p/rasr/short-stream?a=%zz&&b"]), st.binary(max_size=20))
def test_verifier_raises_only_auth_rejected(headers, target, body):
    v = SignatureVerifier(_store, clock=lambda: 1704164645.0)
    try:
        v.verify("GET", target, headers, body)
    except AuthRejected:
        pass
