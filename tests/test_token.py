"""IAM-compatible password flow, locally issued tokens, the credential store, the Authenticator."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import FakeClock

from sis_stream.errors import AuthRejected, RequestRejected
from sis_stream.protocol import (
    AkSk,
    Authenticator,
    CredentialStore,
    SignatureVerifier,
    Signer,
    Token,
    TokenIssuer,
    TokenRequest,
    TokenService,
)

SECRET = b"s" * 32
CREDS = {
    "access_keys": [{"ak": "AKLOCAL0001", "sk": "sk-very-secret-0001", "project_id": "p1"}],
    "users": [{"name": "alice", "password": "pw-very-secret", "domain": "acme", "project_id": "p1",
               "region": "cn-north-4"}],
}
# Exactly what the old SDK posts (§14.4).
SDK_BODY = ('{"auth": {"identity": {"password": {"user": {"name": "alice", "password": "pw-very-secret", '
            '"domain": {"name": "acme"}}}, "methods": ["password"]}, "scope": {"project": {"name": "cn-north-4"}}}}')


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def service(clock):
    return TokenService(CredentialStore.from_dict(CREDS), TokenIssuer(SECRET, clock=clock))


def test_sdk_password_flow_issues_a_project_scoped_token(service, clock):
    issued = service.authenticate(SDK_BODY)
    assert issued.value.startswith("MII")
    assert issued.response_headers() == {"X-Subject-Token": issued.value}
    body = issued.response_body()["token"]
    assert body["project"] == {"id": "p1", "name": "cn-north-4", "domain": {"name": "acme"}}
    assert body["user"]["name"] == "alice" and body["methods"] == ["password"]
    assert body["expires_at"].endswith("Z")
    claims = TokenIssuer(SECRET, clock=clock).verify(issued.value, "p1")  # verified without storage
    assert (claims.user, claims.project_id, claims.expires_at - claims.issued_at) == ("alice", "p1", 86400)
    assert "pw-very-secret" not in issued.value  # the password is never inside the token


def test_token_request_round_trip_and_project_id_scope(service):
    req = TokenRequest.parse(SDK_BODY)
    assert TokenRequest.parse(json.dumps(req.to_dict())) == req
    assert "pw-very-secret" not in repr(req)
    by_id = TokenRequest("alice", "pw-very-secret", "acme", project_id="p1")
    assert service.authenticate(by_id.to_dict()).claims.project_id == "p1"


def test_expiry_after_24h(service, clock):
    issued = service.authenticate(SDK_BODY)
    issuer = TokenIssuer(SECRET, clock=clock)
    clock.advance(86399)
    issuer.verify(issued.value)
    clock.advance(1)
    with pytest.raises(AuthRejected, match="token expires, expires_at: ") as ei:
        issuer.verify(issued.value)
    assert ei.value.reason == "token_expired" and ei.value.error_code == "APIG.0301"


def test_wrong_project_is_sis_0101(service, clock):
    issued = service.authenticate(SDK_BODY)
    with pytest.raises(AuthRejected) as ei:
        TokenIssuer(SECRET, clock=clock).verify(issued.value, "p2")
    assert (ei.value.error_code, ei.value.reason, ei.value.http_status) == ("SIS.0101", "wrong_project", 401)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature
    lambda t: "MII" + t[4:],  # payload
    lambda t: t.split(".")[0],  # no signature
    lambda t: "xyz",
    lambda t: "",
    lambda t: None,
    lambda t: "MII" + "é.x",
])
def test_tampered_tokens_fail(service, clock, mangle):
    issued = service.authenticate(SDK_BODY)
    with pytest.raises(AuthRejected, match="decrypt token fail") as ei:
        TokenIssuer(SECRET, clock=clock).verify(mangle(issued.value))
    assert ei.value.reason == "bad_token"


def test_other_secret_rejects(service, clock):
    issued = service.authenticate(SDK_BODY)
    with pytest.raises(AuthRejected, match="decrypt token fail"):
        TokenIssuer(b"t" * 32, clock=clock).verify(issued.value)


@pytest.mark.parametrize("body,reason", [
    (SDK_BODY.replace("pw-very-secret", "wrong"), "bad_credentials"),
    (SDK_BODY.replace('"alice"', '"bob"'), "bad_credentials"),
    (SDK_BODY.replace('"acme"', '"other"'), "bad_credentials"),
    (SDK_BODY.replace("cn-north-4", "cn-east-3"), "wrong_project"),
])
def test_password_flow_rejections(service, body, reason):
    with pytest.raises(AuthRejected) as ei:
        service.authenticate(body)
    assert ei.value.reason == reason and ei.value.http_status == 401
    assert "pw-very-secret" not in str(ei.value)


@pytest.mark.parametrize("body,code,field", [
    ("{", "SIS.0032", None),
    ("{}", "SIS.0012", "auth.identity.methods"),
    ('{"auth": {"identity": {"methods": ["token"]}}}', "SIS.0032", "auth.identity.methods"),
    ('{"auth": {"identity": {"methods": ["password"]}, "scope": {"domain": {"name": "x"}}}}', "SIS.0012",
     "auth.scope.project"),
    ('{"auth": {"identity": {"methods": ["password"]}, "scope": {"project": {}}}}', "SIS.0012",
     "auth.scope.project.name"),
    ('{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": 1}}}, '
     '"scope": {"project": {"name": "r"}}}}', "SIS.0032", "auth.identity.password.user.name"),
])
def test_malformed_token_requests(service, body, code, field):
    with pytest.raises(RequestRejected) as ei:
        service.authenticate(body)
    assert ei.value.error_code == code
    if field:
        assert field in ei.value.error_msg


def test_issuer_arguments():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenIssuer(b"short")
    with pytest.raises(TypeError, match="secret must be bytes"):
        TokenIssuer("s" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_s"):
        TokenIssuer(SECRET, ttl_s=0)
    assert "s" * 32 not in repr(TokenIssuer(SECRET))


def test_credential_store_shape_errors_never_echo_values():
    with pytest.raises(ValueError, match=r"access_keys\[0\]: field 'sk' is missing"):
        CredentialStore.from_dict({"access_keys": [{"ak": "a", "project_id": "p"}]})
    with pytest.raises(ValueError, match="must be a non-empty string") as ei:
        CredentialStore.from_dict({"users": [{**CREDS["users"][0], "password": 12345}]})
    assert "12345" not in str(ei.value)
    with pytest.raises(ValueError, match="unknown top-level keys"):
        CredentialStore.from_dict({"keys": []})
    with pytest.raises(ValueError, match="duplicate access key"):
        CredentialStore.from_dict({"access_keys": CREDS["access_keys"] * 2})
    with pytest.raises(ValueError, match="not valid JSON"):
        CredentialStore.from_json("{")
    with pytest.raises(ValueError, match="must be a list"):
        CredentialStore.from_dict({"users": {}})


def test_credential_store_file_and_reprs(tmp_path):
    p = tmp_path / "creds.json"
    p.write_text(json.dumps(CREDS))
    store = CredentialStore.from_file(p)
    assert store.access_key("AKLOCAL0001").project_id == "p1" and store.user("alice", "acme").region == "cn-north-4"
    assert store.project_ids == {"p1"} and len(store) == 2
    for obj in (store, store.access_key("AKLOCAL0001"), store.user("alice", "acme"), Token("MIIsecret"),
                AkSk("AKLOCAL0001", "sk-very-secret-0001")):
        assert "secret" not in repr(obj) and "secret" not in str(obj)
    assert Token("MIIx").headers() == {"X-Auth-Token": "MIIx"}


def test_authenticator_dispatch(service, clock, caplog):
    caplog.set_level(logging.DEBUG)
    store = CredentialStore.from_dict(CREDS)
    issuer = TokenIssuer(SECRET, clock=clock)
    auth = Authenticator(SignatureVerifier(store, clock=clock), issuer)
    url = "http://127.0.0.1:8080/v1/p1/rasr/continue-stream"
    h = Signer(AkSk("AKLOCAL0001", "sk-very-secret-0001"), clock=clock).sign_websocket(url, keep_host=True)
    p = auth.authenticate("GET", "/v1/p1/rasr/continue-stream", h, project_id="p1")
    assert (p.kind, p.name, p.project_id) == ("aksk", "AKLOCAL0001", "p1")
    with pytest.raises(AuthRejected, match="no access to the project") as ei:
        auth.authenticate("GET", "/v1/p1/rasr/continue-stream", h, project_id="p2")
    assert ei.value.reason == "wrong_project"
    tok = service.authenticate(SDK_BODY).value
    p = auth.authenticate("GET", "/v1/p1/rasr/short-stream", {"X-Auth-Token": tok}, project_id="p1")
    assert (p.kind, p.name) == ("token", "alice")
    with pytest.raises(AuthRejected, match="x-auth-token not found") as ei:
        auth.authenticate("GET", "/", {"Host": "x"})
    assert ei.value.body() == {"error_code": "APIG.0301",
                               "error_msg": "Incorrect IAM authentication information: x-auth-token not found"}
    with pytest.raises(AuthRejected, match="decrypt token fail"):
        auth.authenticate("GET", "/", [("X-Auth-Token", tok), ("X-Auth-Token", tok)])
    assert tok not in caplog.text and "sk-very-secret" not in caplog.text
