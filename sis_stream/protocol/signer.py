"""AK/SK ``SDK-HMAC-SHA256`` request signing and server-side verification (sis-protocol.md §2.2-2.4)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final, Union
from urllib.parse import quote, unquote, urlsplit

from ..errors import AuthRejected
from .credentials import AccessKeyRecord, AkSk, CredentialStore, mask
from .errors import APIG_AUTH_PREFIX

__all__ = [
    "ALGORITHM",
    "DATE_FORMAT",
    "EMPTY_BODY_SHA256",
    "UNSIGNED_PAYLOAD",
    "CheckedHeaders",
    "HeadersLike",
    "SignatureVerifier",
    "Signer",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "compute_signature",
    "format_sdk_date",
    "string_to_sign",
]

logger = logging.getLogger(__name__)

ALGORITHM: Final = "SDK-HMAC-SHA256"
#: ``X-Sdk-Date`` format (UTC).
DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256: Final = hashlib.sha256(b"").hexdigest()

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]]]


def _encode(s: str) -> str:
    # Only ALPHA / DIGIT / "-._~" stay literal (quote() always keeps "_.-~" and alphanumerics).
    return quote(s, safe="~")


def canonical_uri(path: str) -> str:
    """Canonical URI: percent-decode, split on ``/``, encode each piece, re-join, end with ``/``.

    Parameters
    ----------
    path : str
        The request path as sent (may be percent-encoded); ``""`` means ``/``.

    Returns
    -------
    str
    """
    encoded = "/".join(_encode(p) for p in unquote(path or "/").split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def _query_pairs(query: str | Mapping[str, object] | Sequence[tuple[str, object]]) -> list[tuple[str, str]]:
    if isinstance(query, str):
        pairs = []
        for kv in query.lstrip("?").split("&"):
            k, _, v = kv.partition("=")
            if k:  # an empty key (the SDK's "?&a=b") is ignored
                pairs.append((unquote(k), unquote(v)))
        return pairs
    items = query.items() if isinstance(query, Mapping) else query
    out = []
    for k, v in items:
        for one in (v if isinstance(v, (list, tuple)) else [v]):
            out.append((str(k), str(one)))
    return out


def canonical_query(query: str | Mapping[str, object] | Sequence[tuple[str, object]]) -> str:
    """Canonical query string: keys sorted, several values of one key sorted, each encoded.

    Parameters
    ----------
    query : str, mapping or sequence of pairs
        A raw query string (``a=1&b=x%2Fy``, decoded first) or decoded pairs.

    Returns
    -------
    str
        ``""`` for no query.
    """
    grouped: dict[str, list[str]] = {}
    for k, v in _query_pairs(query):
        grouped.setdefault(k, []).append(v)
    parts = []
    for k in sorted(grouped):
        for v in sorted(grouped[k]):
            parts.append(f"{_encode(k)}={_encode(v)}")
    return "&".join(parts)


def canonical_request(
    method: str,
    path: str,
    query: str | Mapping[str, object] | Sequence[tuple[str, object]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_sha256: str,
) -> str:
    """The six-part canonical request (joined by ``\\n``).

    Parameters
    ----------
    method : str
        Upper-cased here.
    path : str
        Raw request path.
    query : str, mapping or pairs
        Raw query string or pairs.
    headers : mapping
        Lower-case name -> value (trimmed here).
    signed_headers : sequence of str
        Lower-case, sorted names.
    body_sha256 : str
        Hex SHA-256 of the body, or the ``X-Sdk-Content-Sha256`` value.

    Returns
    -------
    str
    """
    block = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join([method.upper(), canonical_uri(path), canonical_query(query), block,
                      ";".join(signed_headers), body_sha256])


def string_to_sign(sdk_date: str, canonical: str) -> str:
    """``SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256 of the canonical request>``."""
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def compute_signature(sk: str, to_sign: str) -> str:
    """Lower-case hex HMAC-SHA256 with the SK as key (no key derivation)."""
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def format_sdk_date(epoch_s: float) -> str:
    """``X-Sdk-Date`` for a POSIX time."""
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).strftime(DATE_FORMAT)


def _parse_sdk_date(value: str) -> float:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=timezone.utc).timestamp()


def _body_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be bytes or str, got {type(body).__name__}")


def header_items(headers: HeadersLike | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    out = []
    for k, v in items:  # a CIMultiDict's items() yields every duplicate
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("header names and values must be str")
        out.append((k, v))
    return out


class Signer:
    """Sign requests with AK/SK exactly like the official SDKs (§2.2).

    Parameters
    ----------
    credentials : AkSk
    clock : callable, optional
        POSIX seconds for ``X-Sdk-Date`` when the request has none; default :func:`time.time`.

    Examples
    --------
    >>> s = Signer(AkSk("AKEXAMPLE0000000000", "SKEXAMPLEfakeSecretKey0000000000000000000"))
    >>> h = s.sign_websocket("wss://sis-ext.cn-north-4.myhuaweicloud.com/v1/0123456789abcdef"
    ...                      "0123456789abcdef/rasr/continue-stream", sdk_date="20240102T030405Z")
    >>> h["Authorization"][-64:]
    'd6a0adc877eb433c0cd6f1b62fb79966bb493d023dbf3b3bf9699ad685d5785d'
    """

    def __init__(self, credentials: AkSk, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(credentials, AkSk):
            raise TypeError(f"credentials must be AkSk, got {type(credentials).__name__}")
        self._cred = credentials
        self._clock = clock

    def __repr__(self) -> str:
        return f"Signer({self._cred!r})"

    def sign(
        self,
        method: str,
        url: str,
        headers: HeadersLike | None = None,
        body: bytes | str | None = b"",
        *,
        sdk_date: str | None = None,
    ) -> dict[str, str]:
        """Sign a request; every header present is signed (plus ``host`` and ``x-sdk-date``).

        Parameters
        ----------
        method : str
        url : str
            Absolute URL; ``ws``/``wss`` are treated as ``http``/``https`` (§2.3). Host = netloc
            (with the port if the URL has one).
        headers : mapping or pairs, optional
        body : bytes or str, optional
            UTF-8 for str.
        sdk_date : str, optional
            Fixed ``X-Sdk-Date`` (else the request's own, else the clock).

        Returns
        -------
        dict
            The headers to send: the given ones, ``X-Sdk-Date``, ``Host`` (if not given) and
            ``Authorization``.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
            raise ValueError(f"url must be an absolute http(s)/ws(s) URL, got scheme {parts.scheme!r}")
        out: dict[str, str] = dict(header_items(headers))
        lower = {k.lower(): k for k in out}
        if len(lower) != len(out):
            raise ValueError("headers contain the same name twice (case-insensitively)")
        if "x-sdk-date" in lower:
            if sdk_date is not None:
                raise ValueError("sdk_date given and the headers already carry X-Sdk-Date")
            date = out[lower["x-sdk-date"]]
            _parse_sdk_date(date)  # ValueError on a malformed date, as the SDK's strptime
        else:
            date = sdk_date if sdk_date is not None else format_sdk_date(self._clock())
            out["X-Sdk-Date"] = date
        if "host" not in lower:
            out["Host"] = parts.netloc
        canon_headers = {k.lower(): v for k, v in out.items()}
        signed = sorted(canon_headers)
        body_b = _body_bytes(body)
        body_hash = canon_headers.get("x-sdk-content-sha256") or hashlib.sha256(body_b).hexdigest()
        canon = canonical_request(method, parts.path, parts.query, canon_headers, signed, body_hash)
        sig = compute_signature(self._cred.sk, string_to_sign(date, canon))
        out["Authorization"] = f"{ALGORITHM} Access={self._cred.ak}, SignedHeaders={';'.join(signed)}, Signature={sig}"
        return out

    def sign_websocket(self, url: str, *, sdk_date: str | None = None, keep_host: bool = False) -> dict[str, str]:
        """Sign a websocket upgrade the SDK way: GET, no extra headers, empty body (§2.3).

        Parameters
        ----------
        url : str
            ``wss://host/v1/{project_id}/rasr/...``.
        sdk_date : str, optional
        keep_host : bool, optional
            Keep ``Host`` in the result. Default False, like the SDK: the websocket library writes
            its own ``Host`` (it must be byte-identical to the signed ``host`` = the URL's netloc),
            and a second one makes the gateway answer 401.

        Returns
        -------
        dict
            ``X-Sdk-Date`` and ``Authorization`` (and ``Host`` with ``keep_host``).
        """
        h = self.sign("GET", url, None, b"", sdk_date=sdk_date)
        if not keep_host:
            del h["Host"]
        return h

    def sign_v3(
        self,
        method: str,
        url: str,
        project_id: str,
        headers: HeadersLike | None = None,
        body: bytes | str | None = b"",
        *,
        user_agent: str | None = None,
        sdk_date: str | None = None,
    ) -> dict[str, str]:
        """Sign like the v3 SDK (``huaweicloudsdkcore``): adds ``X-Project-Id``, signs
        ``User-Agent`` when given, and ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`` when the
        Content-Type is not JSON (§2.2 step 3, §14.3).

        Returns
        -------
        dict
            Headers to send.
        """
        h = dict(header_items(headers))
        h["X-Project-Id"] = project_id
        if user_agent is not None:
            h["User-Agent"] = user_agent
        ctype = next((v for k, v in h.items() if k.lower() == "content-type"), None)
        if ctype is not None and not ctype.lower().startswith("application/json"):
            h.setdefault("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD")
        return self.sign(method, url, h, body, sdk_date=sdk_date)


_AUTH_RE: Final = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-fA-F]{64})\s*$")

_FAIL: Final = "verify aksk signature fail"


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


#: ``X-Sdk-Content-Sha256`` value that leaves the body out of the signature (v3 SDK, non-JSON).
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
#: Methods whose signatures are remembered for replay protection (state-changing or billed
#: REST calls). GET (websocket upgrades, job queries) is exempt: clients legitimately repeat an
#: identical GET within the one-second resolution of ``X-Sdk-Date``.
REPLAY_METHODS: Final = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: Signatures remembered at most (overflow policy ``drop_oldest``).
DEFAULT_REPLAY_CAPACITY: Final = 65536
_HEX64: Final = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class CheckedHeaders:
    """What :meth:`SignatureVerifier.check_headers` found valid (the body is not checked yet)."""

    record: AccessKeyRecord
    signed: tuple[str, ...]
    signature: str
    date: str
    by_name: dict[str, list[str]]

    @property
    def body_hash(self) -> str | None:
        """The signed ``X-Sdk-Content-Sha256`` value, or None when the body must be hashed."""
        if "x-sdk-content-sha256" not in self.signed:
            return None
        return self.by_name["x-sdk-content-sha256"][0].strip()

    @property
    def needs_body(self) -> bool:
        """False when the signature does not cover the body (``UNSIGNED-PAYLOAD``)."""
        return self.body_hash != UNSIGNED_PAYLOAD


class SignatureVerifier:
    """Verify ``SDK-HMAC-SHA256`` requests on the server (the API gateway's job, §2.2).

    Parameters
    ----------
    store : CredentialStore
        Where the SK of an AK is looked up.
    max_skew_s : float, optional
        Allowed distance between ``X-Sdk-Date`` and the clock (default 900 s = 15 min, the
        commonly documented APIG window; §2.2 [U]).
    clock : callable, optional
        POSIX seconds; default :func:`time.time`.
    max_failures : int, optional
        Consecutive failures of one AK that lock it (default 5).
    lockout_s : float, optional
        Lock duration (default 300 s).
    replay_capacity : int, optional
        Signatures of :data:`REPLAY_METHODS` requests remembered for the skew window (replay
        protection); 0 turns replay protection off. When full, the oldest entry is forgotten
        (overflow policy ``drop_oldest``).

    Notes
    -----
    Every rejection raises :class:`~sis_stream.errors.AuthRejected` (HTTP 401, ``APIG.0301``,
    ``.body()`` the answer, ``.reason`` for logs). The signature is compared in constant time.
    The Host that was *received* is what gets verified: a client that signed ``host:port`` and
    sends another Host (e.g. without the port) fails. Failures of a known AK (bad signature, bad
    or expired date, headers missing) count towards the lockout; while locked, even a correct
    signature is rejected; a success resets the count. Thread-safe.

    Body integrity: the body's SHA-256 is part of the signature. An ``X-Sdk-Content-Sha256``
    header is only used when it is itself signed, and then only ``UNSIGNED-PAYLOAD`` or the
    hash of the body actually received is accepted; an unsigned one is ignored (the body is
    hashed). Replays: a POST/PUT/DELETE/PATCH signature is accepted once within the skew window
    (``reason="replay"`` for the second use).
    """

    def __init__(
        self,
        store: CredentialStore,
        *,
        max_skew_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        max_failures: int = 5,
        lockout_s: float = 300.0,
        replay_capacity: int = DEFAULT_REPLAY_CAPACITY,
    ) -> None:
        if max_skew_s < 0 or lockout_s < 0 or max_failures < 1 or replay_capacity < 0:
            raise ValueError("max_skew_s, lockout_s and replay_capacity must be >= 0 and max_failures >= 1")
        self._store = store
        self.max_skew_s = float(max_skew_s)
        self._clock = clock
        self.max_failures = int(max_failures)
        self.lockout_s = float(lockout_s)
        self.replay_capacity = int(replay_capacity)
        self._failures: dict[str, _Failures] = {}  # bounded: known AKs only
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> forget after (POSIX s)
        self._lock = threading.Lock()

    def _reject(self, reason: str, detail: str = _FAIL) -> AuthRejected:
        return AuthRejected(APIG_AUTH_PREFIX + detail, reason=reason)

    def _failed(self, ak: str, now: float) -> None:
        with self._lock:
            f = self._failures.setdefault(ak, _Failures())
            f.count += 1
            if f.count >= self.max_failures:
                f.locked_until = now + self.lockout_s
                f.count = 0
                logger.warning("access key %s locked for %.0f s after %d failures", mask(ak), self.lockout_s,
                               self.max_failures)

    def is_locked(self, ak: str, now: float | None = None) -> bool:
        """Whether ``ak`` is currently locked out."""
        now = self._clock() if now is None else now
        with self._lock:
            f = self._failures.get(ak)
            return f is not None and now < f.locked_until

    def _fail(self, ak: str, now: float, problem: tuple[str, str]) -> AuthRejected:
        self._failed(ak, now)
        logger.info("AK/SK rejected for %s: %s", mask(ak), problem[0])
        return self._reject(*problem)

    def check_headers(self, headers: HeadersLike) -> CheckedHeaders:
        """Every check that needs only the headers (run it before reading the body).

        Parameters
        ----------
        headers : mapping or pairs
            Every received header (duplicates kept).

        Returns
        -------
        CheckedHeaders
            Pass it to :meth:`verify_body`.

        Raises
        ------
        AuthRejected
            ``reason`` one of ``missing``, ``malformed``, ``unknown_ak``, ``locked``, ``expired``.
        """
        now = self._clock()
        items = header_items(headers)
        by_name: dict[str, list[str]] = {}
        for k, v in items:
            by_name.setdefault(k.lower(), []).append(v)
        auth = by_name.get("authorization")
        if not auth:
            raise self._reject("missing", "x-auth-token not found")
        m = _AUTH_RE.match(auth[0].strip()) if len(auth) == 1 else None
        if m is None:
            raise self._reject("malformed", _FAIL + ": malformed Authorization header")
        ak, signed_list, signature = m.group(1), m.group(2), m.group(3).lower()
        rec = self._store.access_key(ak)
        if rec is None:
            logger.info("unknown access key %s", mask(ak))
            raise self._reject("unknown_ak")
        if self.is_locked(ak, now):
            raise self._reject("locked", _FAIL + f": the access key is locked for {self.lockout_s:.0f} s "
                                                 f"after {self.max_failures} consecutive failures")
        signed = signed_list.split(";")
        if signed != sorted(signed) or len(set(signed)) != len(signed) or any(s != s.lower() for s in signed):
            raise self._fail(ak, now, ("malformed", _FAIL + ": SignedHeaders must be lower-case, sorted and unique"))
        if "host" not in signed or "x-sdk-date" not in signed:
            raise self._fail(ak, now, ("missing", _FAIL + ": host and x-sdk-date must be signed"))
        for name in signed:
            vals = by_name.get(name)
            if not vals:
                raise self._fail(ak, now, ("missing", _FAIL + f": signed header {name!r} is missing"))
            if len(vals) > 1:
                raise self._fail(ak, now, ("malformed", _FAIL + f": signed header {name!r} appears "
                                                                f"{len(vals)} times"))
        date = by_name["x-sdk-date"][0].strip()
        try:
            ts = _parse_sdk_date(date)
        except ValueError:
            raise self._fail(ak, now, ("malformed", _FAIL + ": X-Sdk-Date is not YYYYMMDDTHHMMSSZ")) from None
        if abs(now - ts) > self.max_skew_s:
            raise self._fail(ak, now, ("expired", "calc ak sk signature fail:signature expired"))
        checked = CheckedHeaders(rec, tuple(signed), signature, date, by_name)
        bh = checked.body_hash
        if bh is not None and bh != UNSIGNED_PAYLOAD and not _HEX64.match(bh):
            raise self._fail(ak, now, ("malformed", _FAIL + ": X-Sdk-Content-Sha256 must be UNSIGNED-PAYLOAD "
                                                            "or the hex SHA-256 of the body"))
        return checked

    def verify_body(self, checked: CheckedHeaders, method: str, target: str,
                    body: bytes | str | None = b"") -> AccessKeyRecord:
        """Finish :meth:`check_headers`: the signature over the request line, headers and body.

        Raises
        ------
        AuthRejected
            ``reason`` ``malformed``, ``bad_signature`` or ``replay``.
        """
        now = self._clock()
        ak = checked.record.ak
        try:
            parts = urlsplit(target)
        except ValueError:  # e.g. "//[" (an unclosed IPv6 literal)
            raise self._fail(ak, now, ("malformed", _FAIL + ": malformed request target")) from None
        claimed = checked.body_hash
        if claimed is None:
            body_hash = hashlib.sha256(_body_bytes(body)).hexdigest()
        elif claimed == UNSIGNED_PAYLOAD:
            body_hash = claimed
        else:
            actual = hashlib.sha256(_body_bytes(body)).hexdigest()
            if not hmac.compare_digest(actual.encode("ascii"), claimed.lower().encode("ascii")):
                raise self._fail(ak, now, ("bad_signature", _FAIL + ": the body does not match X-Sdk-Content-Sha256"))
            body_hash = claimed
        signed = list(checked.signed)
        canon_headers = {name: checked.by_name[name][0] for name in signed}
        canon = canonical_request(method, parts.path, parts.query, canon_headers, signed, body_hash)
        expected = compute_signature(checked.record.sk, string_to_sign(checked.date, canon))
        if not hmac.compare_digest(expected.encode("ascii"), checked.signature.encode("ascii")):
            raise self._fail(ak, now, ("bad_signature", _FAIL))
        if method.upper() in REPLAY_METHODS and not self._remember(checked.signature, now):
            logger.info("AK/SK rejected for %s: replay", mask(ak))
            raise self._reject("replay", _FAIL + ": this signed request was already used (replay); sign every "
                                                 "request anew")
        with self._lock:
            self._failures.pop(ak, None)
        return checked.record

    def _remember(self, signature: str, now: float) -> bool:
        """Record a signature; False if it was seen within the skew window."""
        if self.replay_capacity == 0:
            return True
        with self._lock:
            seen = self._seen
            while seen:
                sig, until = next(iter(seen.items()))
                if until > now:
                    break
                del seen[sig]
            until = seen.get(signature)
            if until is not None and until > now:
                return False
            # A signature stays valid while its X-Sdk-Date is within the skew window: at most
            # 2 x max_skew_s from now.
            seen[signature] = now + 2 * self.max_skew_s
            seen.move_to_end(signature)
            while len(seen) > self.replay_capacity:
                seen.popitem(last=False)
            return True

    def verify(
        self,
        method: str,
        target: str,
        headers: HeadersLike,
        body: bytes | str | None = b"",
    ) -> AccessKeyRecord:
        """Check one request (:meth:`check_headers` then :meth:`verify_body`).

        Parameters
        ----------
        method : str
        target : str
            The raw request target: path plus optional ``?query`` as received (or an absolute URL).
        headers : mapping or pairs
            Every received header (duplicates kept: a duplicated signed header is rejected).
        body : bytes or str, optional

        Returns
        -------
        AccessKeyRecord
            The caller's AK record (its ``project_id`` scopes the request).

        Raises
        ------
        AuthRejected
            ``reason`` one of ``missing``, ``malformed``, ``unknown_ak``, ``locked``, ``expired``,
            ``bad_signature``, ``replay``.
        """
        return self.verify_body(self.check_headers(headers), method, target, body)
