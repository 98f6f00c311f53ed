"""AK/SK canonical request pinned by an independent computation of the documented algorithm.

The signer and the verifier share ``canonical_request``, so a round trip cannot see a
canonicalisation bug (both sides would make the same mistake). Here the canonical requests
are written out literally from the documented rules (method upper-cased; each signed header
``name:value`` with the value trimmed of surrounding whitespace, inner whitespace kept), and
the string to sign and the signature are computed with ``hashlib``/``hmac`` in the test,
for requests with a lower-case method and spaces/tabs around header values.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from helpers import FakeClock

from sis_stream.errors import AuthRejected
from sis_stream.protocol import AkSk, CredentialStore, SignatureVerifier, Signer
from sis_stream.protocol.credentials import AccessKeyRecord
from sis_stream.protocol.signer import canonical_request

AK, SK = "AKEXAMPLE0000000000", "SKEXAMPLEfakeSecretKey0000000000000000000"
PID = "0123456789abcdef0123456789abcdef"
HOST = "sis-ext.cn-north-4.myhuaweicloud.com"
DATE = "20240102T030405Z"
DATE_TS = 1704164645.0  # 2024-01-02T03:04:05Z
BODY = b'{"config": {"audio_format": "pcm16k16bit", "property": "chinese_16k_general"}}'
PATH = f"/v1/{PID}/asr/short-audio"

#: Headers as a client sends them: padded values, one with inner spaces (kept as they are).
PADDED = {
    "Content-Type": "  application/json;charset=utf-8 ",
    "X-Project-Id": f"\t{PID}  ",
    "X-Note": " two  inner   spaces\t",
}

#: The documented canonical request of ``post PATH`` with PADDED, written out by hand.
CANONICAL_POST = (
    "POST\n"
    f"/v1/{PID}/asr/short-audio/\n"
    "\n"  # no query
    "content-type:application/json;charset=utf-8\n"
    f"host:{HOST}\n"
    f"x-note:two  inner   spaces\n"
    f"x-project-id:{PID}\n"
    f"x-sdk-date:{DATE}\n"
    "\n"  # the header block ends with a newline, then the parts' separator
    "content-type;host;x-note;x-project-id;x-sdk-date\n"
    + hashlib.sha256(BODY).hexdigest()
)

#: ``get`` of the websocket path, padded Host and date (as a hand-written client might send).
CANONICAL_GET = (
    "GET\n"
    f"/v1/{PID}/rasr/continue-stream/\n"
    "\n"
    f"host:{HOST}\n"
    f"x-sdk-date:{DATE}\n"
    "\n"
    "host;x-sdk-date\n"
    + hashlib.sha256(b"").hexdigest()
)


def _independent_signature(canonical: str) -> str:
    to_sign = "SDK-HMAC-SHA256\n" + DATE + "\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(SK.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _authorization(signed: str, canonical: str) -> str:
    return (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={signed}, "
            f"Signature={_independent_signature(canonical)}")


@pytest.fixture
def verifier():
    store = CredentialStore([AccessKeyRecord(AK, SK, PID)])
    return SignatureVerifier(store, clock=FakeClock(DATE_TS))


def test_canonical_request_trims_values_and_upper_cases_the_method():
    headers = {k.lower(): v for k, v in PADDED.items()}
    headers.update({"host": f" {HOST} ", "x-sdk-date": DATE})
    signed = sorted(headers)
    got = canonical_request("post", PATH, "", headers, signed, hashlib.sha256(BODY).hexdigest())
    assert got == CANONICAL_POST


@pytest.mark.parametrize("method", ["post", "Post", "POST"])
def test_signer_matches_the_independent_signature(method):
    out = Signer(AkSk(AK, SK)).sign(method, f"https://{HOST}{PATH}", PADDED, BODY, sdk_date=DATE)
    assert out["Authorization"] == _authorization(
        "content-type;host;x-note;x-project-id;x-sdk-date", CANONICAL_POST)
    # the padded values are sent as given: only the signature trims them
    assert out["Content-Type"] == PADDED["Content-Type"]


def test_signer_websocket_lower_case_get():
    out = Signer(AkSk(AK, SK)).sign("get", f"wss://{HOST}/v1/{PID}/rasr/continue-stream",
                                    None, b"", sdk_date=DATE)
    assert out["Authorization"] == _authorization("host;x-sdk-date", CANONICAL_GET)


@pytest.mark.parametrize("method", ["post", "POST"])
def test_verifier_accepts_independently_signed_padded_request(verifier, method):
    headers = [(k, v) for k, v in PADDED.items()]
    headers += [("Host", HOST), ("X-Sdk-Date", DATE),
                ("Authorization", _authorization("content-type;host;x-note;x-project-id;x-sdk-date",
                                                 CANONICAL_POST))]
    assert verifier.verify(method, PATH, headers, BODY).project_id == PID


@pytest.mark.parametrize("method", ["get", "GET"])
def test_verifier_accepts_padded_host_and_date(verifier, method):
    headers = [("Host", f"  {HOST}\t"), ("X-Sdk-Date", f" {DATE} "),
               ("Authorization", _authorization("host;x-sdk-date", CANONICAL_GET))]
    assert verifier.verify(method, f"/v1/{PID}/rasr/continue-stream", headers, b"").ak == AK


def test_verifier_rejects_a_signature_over_untrimmed_values(verifier):
    # The other side of the rule: a client that signed the padded value verbatim is wrong.
    untrimmed = CANONICAL_POST.replace("content-type:application/json;charset=utf-8\n",
                                       "content-type:  application/json;charset=utf-8 \n")
    headers = [(k, v) for k, v in PADDED.items()]
    headers += [("Host", HOST), ("X-Sdk-Date", DATE),
                ("Authorization", _authorization("content-type;host;x-note;x-project-id;x-sdk-date",
                                                 untrimmed))]
    with pytest.raises(AuthRejected) as ei:
        verifier.verify("POST", PATH, headers, BODY)
    assert ei.value.reason == "bad_signature"
