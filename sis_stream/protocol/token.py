"""IAM-compatible ``POST /v3/auth/tokens`` password flow, and stateless locally issued tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from ..errors import AuthRejected
from .credentials import CredentialStore, UserRecord
from .errors import APIG_AUTH_PREFIX, reject

__all__ = [
    "TOKEN_TTL_S",
    "TOKEN_PREFIX",
    "SUBJECT_TOKEN_HEADER",
    "TokenRequest",
    "TokenClaims",
    "TokenIssuer",
    "TokenService",
    "IssuedToken",
]

#: Validity of an issued token (24 h, §2.1).
TOKEN_TTL_S: Final = 24 * 3600
#: Real IAM tokens start with "MII" (§2.1); ours do too, so clients that sniff it are happy.
TOKEN_PREFIX: Final = "MII"
#: Response header carrying the token (§2.1).
SUBJECT_TOKEN_HEADER: Final = "X-Subject-Token"


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _iso(ts: float) -> str:
    # IAM style: 2024-01-02T03:04:05.000000Z
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _get(d: object, path: str) -> Any:
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise reject("SIS.0012", field=path)
        cur = cur[key]
    return cur


def _get_str(d: object, path: str) -> str:
    v = _get(d, path)
    if not isinstance(v, str) or not v:
        raise reject("SIS.0032", field=path)
    return v


@dataclass(frozen=True)
class TokenRequest:
    """The password-flow body (§2.1, §14.4); the password never appears in the repr.

    Attributes
    ----------
    user_name, password, domain : str
    project_name : str or None
        ``scope.project.name`` (the SDKs send the region, e.g. ``cn-north-4``).
    project_id : str or None
        ``scope.project.id`` (IAM's alternative form).
    """

    user_name: str
    password: str = field(repr=False)
    domain: str
    project_name: str | None = None
    project_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The request body, shaped like the SDKs send it."""
        project: dict[str, str] = {}
        if self.project_name is not None:
            project["name"] = self.project_name
        if self.project_id is not None:
            project["id"] = self.project_id
        return {"auth": {
            "identity": {"methods": ["password"],
                         "password": {"user": {"name": self.user_name, "password": self.password,
                                               "domain": {"name": self.domain}}}},
            "scope": {"project": project}}}

    @classmethod
    def parse(cls, body: bytes | str | object) -> TokenRequest:
        """Parse a request body (bytes/str JSON, or an already decoded object).

        Raises
        ------
        RequestRejected
            ``SIS.0032`` invalid JSON or a field of the wrong type, ``SIS.0012`` a required field
            missing (the message names the dotted path, never a value). A domain-scoped or
            unscoped request is rejected: SIS needs a project-scoped token (§2.1).
        """
        obj = body
        if isinstance(body, (bytes, bytearray, str)):
            try:
                obj = json.loads(body)
            except (ValueError, RecursionError):
                raise reject("SIS.0032") from None
        methods = _get(obj, "auth.identity.methods")
        if not isinstance(methods, list) or "password" not in methods:
            raise reject("SIS.0032", field="auth.identity.methods")
        project = _get(obj, "auth.scope.project")
        if not isinstance(project, dict) or not ({"name", "id"} & set(project)):
            raise reject("SIS.0012", field="auth.scope.project.name")
        name = _get_str(obj, "auth.scope.project.name") if "name" in project else None
        pid = _get_str(obj, "auth.scope.project.id") if "id" in project else None
        return cls(_get_str(obj, "auth.identity.password.user.name"),
                   _get_str(obj, "auth.identity.password.user.password"),
                   _get_str(obj, "auth.identity.password.user.domain.name"), name, pid)


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says (no secret inside)."""

    user: str
    domain: str
    project_id: str
    region: str
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token and its claims; the repr hides the value."""

    value: str = field(repr=False)
    claims: TokenClaims

    def response_body(self) -> dict[str, Any]:
        """The IAM-style response body (the token itself travels in ``X-Subject-Token``)."""
        c = self.claims
        return {"token": {
            "methods": ["password"],
            "expires_at": _iso(c.expires_at),
            "issued_at": _iso(c.issued_at),
            "user": {"name": c.user, "domain": {"name": c.domain}},
            "project": {"id": c.project_id, "name": c.region, "domain": {"name": c.domain}},
            "catalog": [],
        }}

    def response_headers(self) -> dict[str, str]:
        """``{"X-Subject-Token": value}`` (answer with HTTP 201)."""
        return {SUBJECT_TOKEN_HEADER: self.value}


class TokenIssuer:
    """Issue and verify self-contained tokens: HMAC-SHA256-signed claims, no storage.

    Parameters
    ----------
    secret : bytes
        Server secret, at least 32 bytes (``secrets.token_bytes(32)``); tokens survive a restart
        only if the secret does.
    ttl_s : float, optional
        Lifetime; default 24 h.
    clock : callable, optional
        POSIX seconds; default :func:`time.time`.
    """

    def __init__(self, secret: bytes, *, ttl_s: float = TOKEN_TTL_S, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, (bytes, bytearray)):
            raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
        if len(secret) < 32:
            raise ValueError(f"secret must have at least 32 bytes, got {len(secret)}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        self._secret = bytes(secret)
        self.ttl_s = float(ttl_s)
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenIssuer(secret=<hidden>, ttl_s={self.ttl_s})"

    def _mac(self, payload: str) -> str:
        return _b64e(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: UserRecord) -> IssuedToken:
        """A token scoped to ``user.project_id`` / ``user.region``, valid for ``ttl_s``."""
        now = self._clock()
        claims = TokenClaims(user.name, user.domain, user.project_id, user.region, now, now + self.ttl_s)
        payload = TOKEN_PREFIX + _b64e(json.dumps({
            "u": claims.user, "d": claims.domain, "p": claims.project_id, "r": claims.region,
            "iat": claims.issued_at, "exp": claims.expires_at, "n": secrets.token_hex(8),
        }, separators=(",", ":")).encode("utf-8"))
        return IssuedToken(f"{payload}.{self._mac(payload)}", claims)

    def verify(self, value: object, project_id: str | None = None) -> TokenClaims:
        """Check signature, expiry and (optionally) the project scope of a token.

        Parameters
        ----------
        value : object
            The ``X-Auth-Token`` value (anything; non-strings fail).
        project_id : str, optional
            The project of the requested URL.

        Returns
        -------
        TokenClaims

        Raises
        ------
        AuthRejected
            ``APIG.0301`` "decrypt token fail" (``reason="bad_token"``), ``APIG.0301``
            "token expires, expires_at: ..." (``token_expired``), ``SIS.0101`` for a token of
            another project (``wrong_project``). Never echoes the token.
        """
        bad = AuthRejected(APIG_AUTH_PREFIX + "decrypt token fail", reason="bad_token")
        if (not isinstance(value, str) or len(value) > 16384 or not value.startswith(TOKEN_PREFIX)
                or not value.isascii()):
            raise bad
        payload, dot, mac = value.rpartition(".")
        if not dot or not hmac.compare_digest(self._mac(payload).encode("ascii"), mac.encode("ascii")):
            raise bad
        try:
            d = json.loads(_b64d(payload[len(TOKEN_PREFIX):]))
            claims = TokenClaims(str(d["u"]), str(d["d"]), str(d["p"]), str(d["r"]), float(d["iat"]), float(d["exp"]))
        except (ValueError, KeyError, TypeError):
            raise bad from None
        if self._clock() >= claims.expires_at:
            raise AuthRejected(APIG_AUTH_PREFIX + f"token expires, expires_at: {_iso(claims.expires_at)}",
                               reason="token_expired")
        if project_id is not None and project_id != claims.project_id:
            raise AuthRejected("token verification failed: the token is not scoped to the project in the URL",
                               reason="wrong_project", error_code="SIS.0101")
        return claims


class TokenService:
    """The ``POST /v3/auth/tokens`` endpoint logic: check a password request, issue a token.

    Parameters
    ----------
    store : CredentialStore
        Users (name, password, domain, project_id, region).
    issuer : TokenIssuer
    """

    def __init__(self, store: CredentialStore, issuer: TokenIssuer) -> None:
        self._store = store
        self._issuer = issuer

    def authenticate(self, body: bytes | str | object) -> IssuedToken:
        """Handle one request body.

        Returns
        -------
        IssuedToken
            Answer HTTP 201 with :meth:`IssuedToken.response_headers` and
            :meth:`IssuedToken.response_body`.

        Raises
        ------
        RequestRejected
            Malformed body (400).
        AuthRejected
            Unknown user / wrong password (``reason="bad_credentials"``) or a scope that is not the
            user's project or region (``reason="wrong_project"``); 401, ``APIG.0301``.
        """
        req = TokenRequest.parse(body)
        user = self._store.user(req.user_name, req.domain)
        # Compare even for an unknown user so the timing does not reveal which users exist.
        expected = user.password if user is not None else "\x00" * 16
        ok = hmac.compare_digest(expected.encode("utf-8"), req.password.encode("utf-8"))
        if user is None or not ok:
            raise AuthRejected(APIG_AUTH_PREFIX + "the username or password is wrong", reason="bad_credentials")
        if (req.project_name is not None and req.project_name != user.region) or (
                req.project_id is not None and req.project_id != user.project_id):
            raise AuthRejected(APIG_AUTH_PREFIX + "the project in the scope is not the user's project",
                               reason="wrong_project")
        return self._issuer.issue(user)
