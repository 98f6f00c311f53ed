"""AK/SK signer and verifier: the §2.4 vectors to the hex digit, and every rejection."""

from __future__ import annotations

import hashlib
import logging

import pytest
from helpers import FakeClock

from sis_stream.errors import AuthRejected
from sis_stream.protocol import AkSk, CredentialStore, SignatureVerifier, Signer
from sis_stream.protocol.credentials import AccessKeyRecord
from sis_stream.protocol.signer import (
    EMPTY_BODY_SHA256,
    canonical_query,
    canonical_request,
    canonical_uri,
    string_to_sign,
)

AK, SK = "AKEXAMPLE0000000000", "SKEXAMPLEfakeSecretKey0000000000000000000"
PID = "0123456789abcdef0123456789abcdef"
HOST = "sis-ext.cn-north-4.myhuaweicloud.com"
DATE = "20240102T030405Z"
DATE_TS = 1704164645.0  # 2024-01-02T03:04:05Z
BODY_B = ('{"data": "AAAA", "config": {"audio_format": "pcm16k16bit", "property": "chinese_16k_general", '
          '"add_punc": "yes"}}')
FLASH_QUERY = ("property=chinese_8k_common&audio_format=wav&add_punc=no&obs_bucket_name=test"
               "&obs_object_key=data/0601/test.wav")

SIG_A = "d6a0adc877eb433c0cd6f1b62fb79966bb493d023dbf3b3bf9699ad685d5785d"
SIG_B = "1a26c96717fb53b6e7f312416cafb751ffec41c98974e5467c3492f7ce723348"
SIG_C = "0501be252d934efe5e65cbb00ac9ec4c94714e05a84de29cb3a8e0b0c060cb23"


@pytest.fixture
def signer():
    return Signer(AkSk(AK, SK))


@pytest.fixture
def clock():
    return FakeClock(DATE_TS)


@pytest.fixture
def verifier(clock):
    store = CredentialStore([AccessKeyRecord(AK, SK, PID)])
    return SignatureVerifier(store, clock=clock)


def test_vector_a_websocket_canonical_request_and_signature(signer):
    # Proves: §2.4 A to the hex digit, including the canonical request text.
    path = f"/v1/{PID}/rasr/continue-stream"
    canon = canonical_request("GET", path, "", {"host": HOST, "x-sdk-date": DATE}, ["host", "x-sdk-date"],
                              EMPTY_BODY_SHA256)
    assert canon == (f"GET\n{path}/\n\nhost:{HOST}\nx-sdk-date:{DATE}\n\nhost;x-sdk-date\n"
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert string_to_sign(DATE, canon) == (
        "SDK-HMAC-SHA256\n20240102T030405Z\ne23eedfba007215fb99aa7296c95725ffec52c26f3e09c291a8ba70c140a8854")
    h = signer.sign_websocket(f"wss://{HOST}{path}", sdk_date=DATE)
    assert h == {"X-Sdk-Date": DATE, "Authorization": (
        f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-sdk-date, Signature={SIG_A}")}
    assert signer.sign_websocket(f"wss://{HOST}{path}", sdk_date=DATE, keep_host=True)["Host"] == HOST


def test_vector_b_rest_post(signer):
    assert hashlib.sha256(BODY_B.encode()).hexdigest() == "4fab9e24e2ddd0934877d9832c69d0637e84aed0d85cffe560a5fddd224c884d"
    path = f"/v1/{PID}/asr/short-audio"
    canon = canonical_request("POST", path, "", {"content-type": "application/json", "host": HOST, "x-sdk-date": DATE},
                              ["content-type", "host", "x-sdk-date"], hashlib.sha256(BODY_B.encode()).hexdigest())
    assert hashlib.sha256(canon.encode()).hexdigest() == "c9bf9b6ae640aac704d5c35d40009ec9a65ad8047065878224bbee72b08403f3"
    h = signer.sign("POST", f"https://{HOST}{path}", {"Content-Type": "application/json"}, BODY_B, sdk_date=DATE)
    assert h["Authorization"] == (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;host;x-sdk-date, "
                                  f"Signature={SIG_B}")
    assert h["Host"] == HOST and h["Content-Type"] == "application/json"


def test_vector_c_query_canonicalisation(signer):
    assert canonical_query(FLASH_QUERY) == ("add_punc=no&audio_format=wav&obs_bucket_name=test&"
                                            "obs_object_key=data%2F0601%2Ftest.wav&property=chinese_8k_common")
    h = signer.sign("POST", f"https://{HOST}/v1/{PID}/asr/flash?{FLASH_QUERY}", {"Content-Type": "application/json"},
                    "", sdk_date=DATE)
    assert h["Authorization"].endswith(f"Signature={SIG_C}")
    # The SDK's leading "&" (empty key) is ignored.
    h2 = signer.sign("POST", f"https://{HOST}/v1/{PID}/asr/flash?&{FLASH_QUERY}", {"Content-Type": "application/json"},
                     "", sdk_date=DATE)
    assert h2["Authorization"] == h["Authorization"]


@pytest.mark.parametrize("method,target,headers,body,sig", [
    ("GET", f"/v1/{PID}/rasr/continue-stream", {"Host": HOST, "X-Sdk-Date": DATE}, b"", SIG_A),
    ("POST", f"/v1/{PID}/asr/short-audio", {"Host": HOST, "X-Sdk-Date": DATE, "Content-Type": "application/json",
                                            "Content-Length": str(len(BODY_B))}, BODY_B.encode(), SIG_B),
    ("POST", f"/v1/{PID}/asr/flash?{FLASH_QUERY}", {"host": HOST, "X-Sdk-Date": DATE,
                                                     "Content-Type": "application/json"}, b"", SIG_C),
])
def test_verifier_accepts_the_three_vectors(verifier, method, target, headers, body, sig):
    # Proves: the verifier reproduces the same signatures from what arrives on the wire
    # (content-length added after signing is not signed and ignored).
    signed = "content-type;host;x-sdk-date" if "Content-Type" in headers else "host;x-sdk-date"
    headers = {**headers, "Authorization": f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={signed}, Signature={sig}"}
    assert verifier.verify(method, target, headers, body).project_id == PID


def test_canonical_uri_rules():
    assert canonical_uri("/v1/a b/x") == "/v1/a%20b/x/"
    assert canonical_uri("/v1/a%20b/") == "/v1/a%20b/"
    assert canonical_uri("") == "/"
    assert canonical_uri("/a~b/c%2Fd") == "/a~b/c/d/"  # decoded first, then split
    assert canonical_query({"b": ["2", "1"], "a": "x y"}) == "a=x%20y&b=1&b=2"
    assert canonical_query([("k", "v/w")]) == "k=v%2Fw"


def test_v3_form_signs_project_and_user_agent(signer, verifier):
    h = signer.sign_v3("POST", f"https://{HOST}/v1/{PID}/asr/short-audio", PID,
                       {"Content-Type": "application/json;charset=utf-8"}, BODY_B,
                       user_agent="huaweicloud-usdk-python/3.0", sdk_date=DATE)
    assert "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date," in h["Authorization"]
    assert h["X-Project-Id"] == PID
    assert verifier.verify("POST", f"/v1/{PID}/asr/short-audio", h, BODY_B).ak == AK
    h2 = signer.sign_v3("PUT", f"https://{HOST}/v1/{PID}/x", PID, {"Content-Type": "application/octet-stream"},
                        b"\x00\x01", sdk_date=DATE)
    assert h2["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    assert "x-sdk-content-sha256" in h2["Authorization"]
    assert verifier.verify("PUT", f"/v1/{PID}/x", h2, b"anything: unsigned payload").ak == AK


def test_signer_round_trip_with_port_and_clock(verifier, clock):
    s = Signer(AkSk(AK, SK), clock=clock)
    h = s.sign("GET", f"ws://127.0.0.1:8080/v1/{PID}/rasr/short-stream")
    assert h["X-Sdk-Date"] == DATE and h["Host"] == "127.0.0.1:8080"
    assert verifier.verify("GET", f"/v1/{PID}/rasr/short-stream", h).ak == AK


def _ws_headers(**over):
    h = Signer(AkSk(AK, SK)).sign_websocket(f"wss://{HOST}/v1/{PID}/rasr/continue-stream", sdk_date=DATE,
                                            keep_host=True)
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def reason_of(verifier, headers, target=f"/v1/{PID}/rasr/continue-stream", method="GET", body=b""):
    with pytest.raises(AuthRejected) as ei:
        verifier.verify(method, target, headers, body)
    e = ei.value
    assert e.http_status == 401 and e.error_code == "APIG.0301"
    assert e.body()["error_msg"].startswith("Incorrect IAM authentication information: ")
    assert SK not in str(e) and SK not in e.error_msg
    return e.reason, e.error_msg


def test_rejects_bad_signature(verifier):
    bad = _ws_headers()
    bad["Authorization"] = bad["Authorization"][:-1] + ("0" if bad["Authorization"][-1] != "0" else "1")
    assert reason_of(verifier, bad) == ("bad_signature", "Incorrect IAM authentication information: verify aksk signature fail")


def test_rejects_wrong_path_method_and_body(verifier):
    assert reason_of(verifier, _ws_headers(), target=f"/v1/{PID}/rasr/sentence-stream")[0] == "bad_signature"
    assert reason_of(verifier, _ws_headers(), method="POST")[0] == "bad_signature"
    assert reason_of(verifier, _ws_headers(), body=b"x")[0] == "bad_signature"


def test_rejects_host_mismatch_including_port(verifier):
    # Proves: the Host received is verified: a port added or dropped breaks the signature.
    assert reason_of(verifier, _ws_headers(Host=HOST + ":443"))[0] == "bad_signature"
    s = Signer(AkSk(AK, SK))
    h = s.sign("GET", f"http://{HOST}:8443/v1/{PID}/rasr/continue-stream", sdk_date=DATE)
    assert verifier.verify("GET", f"/v1/{PID}/rasr/continue-stream", h).ak == AK
    h["Host"] = HOST
    assert reason_of(verifier, h)[0] == "bad_signature"


def test_rejects_malformed_target(verifier):
    assert reason_of(verifier, _ws_headers(), target="//[x/v1")[0] == "malformed"


def test_rejects_duplicated_host(verifier):
    # The SDK's Host quirk (§2.3): two Host headers are rejected.
    items = list(_ws_headers().items()) + [("Host", HOST)]
    assert reason_of(verifier, items)[0] == "malformed"


def test_rejects_clock_skew_both_ways(clock):
    store = CredentialStore([AccessKeyRecord(AK, SK, PID)])
    v = SignatureVerifier(store, clock=clock)
    clock.advance(900)
    assert v.verify("GET", f"/v1/{PID}/rasr/continue-stream", _ws_headers()).ak == AK  # exactly 15 min
    clock.advance(1)
    assert reason_of(v, _ws_headers()) == (
        "expired", "Incorrect IAM authentication information: calc ak sk signature fail:signature expired")
    clock.now = DATE_TS - 901
    assert reason_of(v, _ws_headers())[0] == "expired"
    v2 = SignatureVerifier(store, clock=clock, max_skew_s=3600)
    assert v2.verify("GET", f"/v1/{PID}/rasr/continue-stream", _ws_headers()).ak == AK


@pytest.mark.parametrize("over,reason,match", [
    ({"Authorization": None}, "missing", "x-auth-token not found"),
    ({"X-Sdk-Date": None}, "missing", "signed header 'x-sdk-date' is missing"),
    ({"Host": None}, "missing", "signed header 'host' is missing"),
    ({"Authorization": "Basic abc"}, "malformed", "malformed Authorization"),
    ({"Authorization": f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host, Signature={SIG_A}"}, "missing",
     "host and x-sdk-date must be signed"),
    ({"Authorization": f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=x-sdk-date;host, Signature={SIG_A}"},
     "malformed", "sorted"),
    ({"X-Sdk-Date": "2024-01-02T03:04:05Z"}, "malformed", "X-Sdk-Date"),
    ({"Authorization": f"SDK-HMAC-SHA256 Access=AKUNKNOWN, SignedHeaders=host;x-sdk-date, Signature={SIG_A}"},
     "unknown_ak", "verify aksk signature fail"),
])
def test_rejects_missing_and_malformed(verifier, over, reason, match):
    r, msg = reason_of(verifier, _ws_headers(**over))
    assert r == reason and match in msg


def test_lockout_after_five_failures_for_five_minutes(verifier, clock):
    # Proves: 5 consecutive failures lock the AK; a correct request is refused while locked;
    # the lock expires after 300 s; a success resets the count.
    good = _ws_headers()
    bad = dict(good, Authorization=good["Authorization"].replace(SIG_A, "0" * 64))
    target = f"/v1/{PID}/rasr/continue-stream"
    for _ in range(4):
        assert reason_of(verifier, bad)[0] == "bad_signature"
    assert verifier.verify("GET", target, good).ak == AK  # resets
    for _ in range(5):
        reason_of(verifier, bad)
    assert verifier.is_locked(AK)
    r, msg = reason_of(verifier, good)
    assert r == "locked" and "locked for 300 s" in msg
    clock.advance(299)
    assert reason_of(verifier, good)[0] == "locked"
    # Skew window is 15 min and the date is fixed, so 301 s later the signature is still valid.
    clock.advance(2)
    assert verifier.verify("GET", target, good).ak == AK


def test_secrets_never_in_repr_or_logs(caplog, verifier):
    caplog.set_level(logging.DEBUG)
    cred = AkSk(AK, SK)
    assert SK not in repr(cred) and AK not in repr(cred) and SK not in str(Signer(cred))
    bad = _ws_headers()
    bad["Authorization"] = bad["Authorization"][:-4] + "0000"
    for _ in range(5):
        with pytest.raises(AuthRejected):
            verifier.verify("GET", "/x", bad)
    assert SK not in caplog.text and AK not in caplog.text
    assert "AKEX***" in caplog.text


def test_signer_argument_errors():
    with pytest.raises(TypeError, match="credentials must be AkSk"):
        Signer((AK, SK))  # type: ignore[arg-type]
    s = Signer(AkSk(AK, SK))
    with pytest.raises(ValueError, match="absolute"):
        s.sign("GET", "/relative")
    with pytest.raises(ValueError, match="twice"):
        s.sign("GET", f"https://{HOST}/", {"A": "1", "a": "2"})
    with pytest.raises(ValueError, match="already carry X-Sdk-Date"):
        s.sign("GET", f"https://{HOST}/", {"X-Sdk-Date": DATE}, sdk_date=DATE)
    with pytest.raises(TypeError, match="body must be bytes or str"):
        s.sign("GET", f"https://{HOST}/", None, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        AkSk("", SK)
    with pytest.raises(ValueError, match="max_failures"):
        SignatureVerifier(CredentialStore(), max_failures=0)
    # An existing X-Sdk-Date header is reused (SDK behaviour).
    assert s.sign("GET", f"https://{HOST}/", {"X-Sdk-Date": DATE})["X-Sdk-Date"] == DATE
