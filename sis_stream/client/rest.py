"""aiohttp REST clients for SIS (short audio, legacy sentence, transcriber, flash, TTS, hot words, IAM)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from yarl import URL

from ..errors import AuthError, SisApiError, SisConnectionError, SisLimitError, SisServerError
from ..protocol import AkSk, Signer, Token, TokenRequest, api_error
from .transport import TransportOptions, host_header

__all__ = [
    "TOKEN_CACHE_S",
    "AuthProvider",
    "FlashResult",
    "FlashSentence",
    "IamPassword",
    "LegacySentenceResult",
    "Recognition",
    "ShortAudioResult",
    "SisRestClient",
    "TranscriptionJob",
    "TranscriptionSegment",
    "TtsResult",
    "Vocabulary",
    "VocabularyList",
    "Word",
    "fetch_token",
]

logger = logging.getLogger(__name__)

#: How long a fetched IAM token is reused (the SDK's 5 h; tokens live 24 h, §2.1).
TOKEN_CACHE_S: Final = 5 * 3600.0
_JSON: Final = "application/json"
_IDEMPOTENT: Final = frozenset({"GET", "PUT", "DELETE", "HEAD"})


@dataclass(frozen=True)
class IamPassword:
    """IAM password credentials: a project-scoped token is fetched (and cached) on first use.

    Attributes
    ----------
    user_name, password, domain : str
        IAM user, its password, and the account (domain) name. The password is never shown.
    region : str
        Project scope name (``scope.project.name``), e.g. ``cn-north-4`` (§2.1).
    iam_endpoint : str or None
        Default ``https://iam.{region}.myhuaweicloud.com``.
    """

    user_name: str
    password: str = field(repr=False)
    domain: str
    region: str
    iam_endpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("user_name", "password", "domain", "region"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise TypeError(f"IamPassword.{name} must be a non-empty str, got {type(v).__name__}")

    @property
    def token_url(self) -> str:
        """``{iam_endpoint}/v3/auth/tokens``."""
        base = self.iam_endpoint or f"https://iam.{self.region}.myhuaweicloud.com"
        return base.rstrip("/") + "/v3/auth/tokens"


async def fetch_token(http: aiohttp.ClientSession, cred: IamPassword,
                      options: TransportOptions | None = None) -> Token:
    """``POST /v3/auth/tokens`` (password flow) and return the ``X-Subject-Token`` (§2.1).

    Raises
    ------
    SisAuthError
        IAM answered an error body (e.g. wrong password).
    AuthError
        The answer carried no ``X-Subject-Token``.
    SisConnectionError
        Network failure.
    """
    options = TransportOptions() if options is None else options
    body = TokenRequest(cred.user_name, cred.password, cred.domain, project_name=cred.region).to_dict()
    try:
        async with http.post(cred.token_url, json=body, ssl=options.ssl, proxy=options.proxy,
                             proxy_auth=options.proxy_auth,
                             timeout=aiohttp.ClientTimeout(total=options.connect_timeout_s * 2)) as resp:
            raw = await resp.read()
            token = resp.headers.get("X-Subject-Token")
            if resp.status >= 400 or not token:
                _raise_for_body(resp.status, raw, resp.headers)
                raise AuthError(f"IAM answered HTTP {resp.status} without an X-Subject-Token header")
            return Token(token)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise SisConnectionError(f"IAM token request failed: {type(exc).__name__}: {exc}") from exc


class AuthProvider:
    """Headers for one request under AK/SK, a token, or IAM password credentials.

    With AK/SK the ``Host`` header is set explicitly to what aiohttp would send (no default port)
    and signed with that exact value (§2.3); aiohttp then sends it once, unchanged.
    """

    def __init__(self, auth: AkSk | Token | IamPassword, http: aiohttp.ClientSession,
                 options: TransportOptions | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(auth, (AkSk, Token, IamPassword)):
            raise TypeError(f"auth must be AkSk, Token or IamPassword, got {type(auth).__name__}")
        self.auth = auth
        self._http = http
        self._options = TransportOptions() if options is None else options
        self._clock = clock
        self._signer = Signer(auth, clock=clock) if isinstance(auth, AkSk) else None
        self._token: Token | None = auth if isinstance(auth, Token) else None
        self._token_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AuthProvider({self.auth!r})"

    async def token(self) -> Token:
        """The token (fetched for :class:`IamPassword`, cached :data:`TOKEN_CACHE_S`)."""
        if isinstance(self.auth, Token):
            return self.auth
        async with self._lock:
            if self._token is None or self._clock() - self._token_at > TOKEN_CACHE_S:
                assert isinstance(self.auth, IamPassword)
                self._token = await fetch_token(self._http, self.auth, self._options)
                self._token_at = self._clock()
            return self._token

    def invalidate(self) -> None:
        """Forget a fetched token (after a 401)."""
        if isinstance(self.auth, IamPassword):
            self._token = None

    async def headers(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                      body: bytes = b"") -> dict[str, str]:
        """The headers to send (given ones plus auth)."""
        h = dict(headers or {})
        if self._signer is not None:
            h["Host"] = host_header(url)
            return self._signer.sign(method, url, h, body)
        tok = await self.token()
        h.update(tok.headers())
        return h


def _raise_for_body(status: int, raw: bytes, headers: Mapping[str, str]) -> None:
    """Raise the typed SisApiError for an error answer; return if the body is not one."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    request_id = headers.get("X-Request-Id")
    if isinstance(body, dict):
        code = body.get("error_code", body.get("code"))
        msg = body.get("error_msg", body.get("message"))
        if isinstance(code, str) and isinstance(msg, str):
            trace = body.get("trace_id") or body.get("request_id") or request_id
            raise api_error(code, msg, trace_id=trace, http_status=status)
    if status >= 400:
        text = raw[:200].decode("utf-8", "replace")
        raise api_error(f"HTTP.{status}", f"HTTP {status} without a SIS error body: {text!r}",
                        trace_id=request_id, http_status=status)


# --- typed results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """A ``word_info`` item (ms)."""

    word: str | None
    start_time: int | None
    end_time: int | None


def _words(items: object) -> tuple[Word, ...] | None:
    if not isinstance(items, list):
        return None
    return tuple(Word(w.get("word"), w.get("start_time"), w.get("end_time")) for w in items if isinstance(w, dict))


@dataclass(frozen=True)
class Recognition:
    """``result``: text, score, words."""

    text: str
    score: float | None = None
    words: tuple[Word, ...] | None = None

    @classmethod
    def from_dict(cls, d: object) -> Recognition:
        """Parse a ``result`` object."""
        if not isinstance(d, dict):
            return cls("")
        return cls(str(d.get("text", "")), d.get("score"), _words(d.get("word_info")))


@dataclass(frozen=True)
class ShortAudioResult:
    """``POST /v1/{project_id}/asr/short-audio`` answer (§11.1)."""

    trace_id: str | None
    result: Recognition

    @property
    def text(self) -> str:
        """The recognised text."""
        return self.result.text


@dataclass(frozen=True)
class LegacySentenceResult:
    """``POST /v1.0/voice/asr/sentence`` answer (§11.2): ``{"result": {"words": ...}}``."""

    text: str


@dataclass(frozen=True)
class TranscriptionSegment:
    """One transcriber segment (no is_final/score, §11.3)."""

    start_time: int
    end_time: int
    result: Recognition
    analysis: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TranscriptionJob:
    """A transcriber job as queried (§11.3)."""

    job_id: str
    status: str  #: WAITING, FINISHED or ERROR
    segments: tuple[TranscriptionSegment, ...] = ()
    create_time: str | None = None
    start_time: str | None = None
    finish_time: str | None = None
    audio_duration: int | None = None
    error_code: str | None = None
    error_msg: str | None = None

    @property
    def done(self) -> bool:
        """FINISHED or ERROR."""
        return self.status in ("FINISHED", "ERROR")


@dataclass(frozen=True)
class FlashSentence:
    """One flash sentence."""

    channel_id: int
    start_time: int
    end_time: int
    result: Recognition


@dataclass(frozen=True)
class FlashResult:
    """``POST /v1/{project_id}/asr/flash`` answer (§11.4)."""

    trace_id: str | None
    audio_duration: int | None
    sentences: tuple[FlashSentence, ...]


@dataclass(frozen=True)
class TtsResult:
    """``POST /v1/{project_id}/tts`` answer: decoded audio bytes (§11.5)."""

    trace_id: str | None
    audio: bytes


@dataclass(frozen=True)
class Vocabulary:
    """A hot-word table (§11.7)."""

    vocabulary_id: str
    name: str | None = None
    language: str | None = None
    description: str | None = None
    contents: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VocabularyList:
    """``GET /v1/{project_id}/asr/vocabularies``."""

    count: int
    vocabularies: tuple[Vocabulary, ...]


def _vocab(d: Mapping[str, Any]) -> Vocabulary:
    c = d.get("contents")
    return Vocabulary(str(d.get("vocabulary_id", "")), d.get("name"), d.get("language"), d.get("description"),
                      tuple(c) if isinstance(c, list) else None)


# --- the client ---------------------------------------------------------------------------------


class SisRestClient:
    """Async REST client for the SIS HTTP APIs with AK/SK, token or IAM password auth.

    Parameters
    ----------
    endpoint : str
        ``https://sis-ext.{region}.myhuaweicloud.com`` (or a loopback test server).
    project_id : str
    auth : AkSk, Token or IamPassword
    options : TransportOptions, optional
        TLS (verified by default), proxy, timeouts.
    legacy_endpoint : str, optional
        Host of the v1.0 APIs (``https://sis.{region}.myhuaweicloud.com``); default ``endpoint``.
    max_retries : int
        Extra attempts for idempotent requests (GET/PUT/DELETE) on network errors, 429 and 5xx
        (default 2). POST is never retried (it may be billed or create a job twice).
    session : aiohttp.ClientSession, optional
        Shared session (not closed by this client).
    sleep, rng : callables
        Injected for the retry backoff.

    Raises
    ------
    SisApiError subclasses
        Every SIS/APIG error body, with ``error_code``, ``error_msg``, ``trace_id`` (body
        ``trace_id``/``request_id`` or the ``X-Request-Id`` header) and ``http_status``.

    Examples
    --------
    >>> async def main():                                            # doctest: +SKIP
    ...     async with SisRestClient(endpoint, pid, AkSk(ak, sk)) as rest:
    ...         r = await rest.recognize_short_audio(pcm, {"audio_format": "pcm16k16bit",
    ...                                                    "property": "chinese_16k_general"})
    ...         print(r.text)
    """

    def __init__(self, endpoint: str, project_id: str, auth: AkSk | Token | IamPassword, *,
                 options: TransportOptions | None = None, legacy_endpoint: str | None = None,
                 max_retries: int = 2, session: aiohttp.ClientSession | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        u = URL(endpoint)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"endpoint must be an absolute http(s) URL, got {endpoint!r}")
        if not isinstance(project_id, str) or not project_id or "/" in project_id:
            raise ValueError(f"project_id must be a non-empty str without '/', got {project_id!r}")
        if type(max_retries) is not int or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.endpoint = str(u).rstrip("/")
        self.legacy_endpoint = (legacy_endpoint or self.endpoint).rstrip("/")
        self.project_id = project_id
        self.options = TransportOptions() if options is None else options
        self.max_retries = max_retries
        self._own_session = session is None
        self._http = session
        self._auth_in = auth
        self._auth: AuthProvider | None = None
        self._sleep = sleep
        self._rng = rng

    async def __aenter__(self) -> SisRestClient:  # noqa: PYI034 - py3.10 has no typing.Self
        if self._http is None:
            self._http = aiohttp.ClientSession(trust_env=self.options.trust_env)
        self._auth = AuthProvider(self._auth_in, self._http, self.options)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the aiohttp session if this client created it."""
        if self._own_session and self._http is not None:
            await self._http.close()
        self._http = None

    def _check_open(self) -> tuple[aiohttp.ClientSession, AuthProvider]:
        if self._http is None or self._auth is None:
            raise RuntimeError("use 'async with SisRestClient(...) as client:' before calling it")
        return self._http, self._auth

    async def request(self, method: str, path: str, *, body: Any = None, query: Mapping[str, Any] | None = None,
                      base: str | None = None) -> tuple[Any, Mapping[str, str]]:
        """Send one signed JSON request; returns ``(parsed body or None, headers)``.

        Raises the typed :class:`SisApiError` for error answers (see the class docs).
        """
        http, auth = self._check_open()
        url = URL((base or self.endpoint) + path)
        if query:
            url = url.with_query({k: str(v) for k, v in query.items() if v is not None})
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        method = method.upper()
        attempts = 1 + (self.max_retries if method in _IDEMPOTENT else 0)
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await self._sleep(min(4.0, 0.25 * 2 ** (attempt - 2)) * (0.5 + 0.5 * self._rng()))
            headers = await auth.headers(method, str(url), {"Content-Type": _JSON}, data)
            try:
                async with http.request(method, url, data=data or None, headers=headers, ssl=self.options.ssl,
                                        proxy=self.options.proxy, proxy_auth=self.options.proxy_auth,
                                        timeout=aiohttp.ClientTimeout(sock_connect=self.options.connect_timeout_s,
                                                                      total=None)) as resp:
                    raw = await resp.read()
                    status, rh = resp.status, resp.headers
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                last = SisConnectionError(f"{method} {url.path} failed: {type(exc).__name__}: {exc}")
                last.__cause__ = exc
                continue
            try:
                _raise_for_body(status, raw, rh)
            except (SisServerError, SisLimitError) as exc:
                last = exc
                if status >= 500 or status == 429:
                    continue
                raise
            except SisApiError as exc:
                if exc.http_status == 401:
                    auth.invalidate()
                raise
            try:
                return (json.loads(raw) if raw else None), rh
            except ValueError as exc:
                raise SisApiError("HTTP.INVALID_JSON", f"answer is not JSON: {raw[:80]!r}",
                                  http_status=status) from exc
        assert last is not None
        raise last

    # -- recognition ----------------------------------------------------------------------------

    async def recognize_short_audio(self, audio: bytes, config: Mapping[str, Any]) -> ShortAudioResult:
        """One-shot recognition of <= 1 min of audio (``data`` base64-encoded here, §11.1).

        Parameters
        ----------
        audio : bytes
            Raw audio in ``config["audio_format"]`` (or a wav/mp3 file's bytes).
        config : mapping
            ``audio_format``, ``property`` and the optional flags (``"yes"``/``"no"`` strings).
        """
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise TypeError(f"audio must be bytes, got {type(audio).__name__}")
        _require(config, ("audio_format", "property"))
        body = {"data": base64.b64encode(bytes(audio)).decode("ascii"), "config": dict(config)}
        d, _ = await self.request("POST", f"/v1/{self.project_id}/asr/short-audio", body=body)
        d = d or {}
        return ShortAudioResult(d.get("trace_id"), Recognition.from_dict(d.get("result")))

    async def recognize_sentence_legacy(self, audio: bytes | None = None, *, url: str | None = None,
                                        encode_type: str = "wav", sample_rate: str = "8k") -> LegacySentenceResult:
        """Legacy ``POST /v1.0/voice/asr/sentence`` on :attr:`legacy_endpoint` (§11.2)."""
        if audio is None and url is None:
            raise ValueError("give audio bytes or an OBS url")
        if sample_rate not in ("8k", "16k"):
            raise ValueError(f"sample_rate must be '8k' or '16k', got {sample_rate!r}")
        body: dict[str, Any] = {"encode_type": encode_type, "sample_rate": sample_rate}
        if audio is not None:
            body["data"] = base64.b64encode(bytes(audio)).decode("ascii")
        if url is not None:
            body["url"] = url
        d, _ = await self.request("POST", "/v1.0/voice/asr/sentence", body=body, base=self.legacy_endpoint)
        res = (d or {}).get("result") or {}
        return LegacySentenceResult(str(res.get("words", "")))

    async def submit_transcription(self, data_url: str, config: Mapping[str, Any]) -> str:
        """Submit a transcriber job; returns ``job_id`` (§11.3). Not retried (not idempotent)."""
        _require(config, ("property",))
        d, _ = await self.request("POST", f"/v1/{self.project_id}/asr/transcriber/jobs",
                                  body={"data_url": data_url, "config": dict(config)})
        job = (d or {}).get("job_id")
        if not isinstance(job, str):
            raise SisApiError("HTTP.INVALID_ANSWER", f"transcriber submit answered without job_id: {d!r}")
        return job

    async def get_transcription(self, job_id: str) -> TranscriptionJob:
        """Query a transcriber job (GET: retried on 5xx/429/network errors)."""
        d, _ = await self.request("GET", f"/v1/{self.project_id}/asr/transcriber/jobs/{job_id}")
        d = d or {}
        segs = tuple(TranscriptionSegment(int(s.get("start_time", 0)), int(s.get("end_time", 0)),
                                          Recognition.from_dict(s.get("result")),
                                          (s.get("result") or {}).get("analysis_info"))
                     for s in d.get("segments") or [] if isinstance(s, dict))
        return TranscriptionJob(job_id, str(d.get("status", "")), segs, d.get("create_time"), d.get("start_time"),
                                d.get("finish_time"), d.get("audio_duration"), d.get("error_code"),
                                d.get("error_msg"))

    async def wait_transcription(self, job_id: str, *, poll_s: float = 2.0, timeout_s: float = 3600.0) -> TranscriptionJob:
        """Poll until FINISHED or ERROR.

        Raises
        ------
        SisApiError
            The job ended in ERROR (its error_code/error_msg).
        TimeoutError
            Not done within ``timeout_s`` (counted in poll intervals, so a fake sleep works).
        """
        waited = 0.0
        while True:
            job = await self.get_transcription(job_id)
            if job.status == "FINISHED":
                return job
            if job.status == "ERROR":
                raise api_error(job.error_code or "SIS.0538", job.error_msg or "transcription failed")
            if waited >= timeout_s:
                raise TimeoutError(f"transcription {job_id} still {job.status} after {timeout_s:g} s")
            await self._sleep(poll_s)
            waited += poll_s

    async def recognize_flash(self, *, property: str, audio_format: str, obs_bucket_name: str,
                              obs_object_key: str, **flags: str) -> FlashResult:
        """Flash ASR: every parameter in the query string, empty body (§11.4)."""
        q = {"property": property, "audio_format": audio_format, "obs_bucket_name": obs_bucket_name,
             "obs_object_key": obs_object_key, **flags}
        d, _ = await self.request("POST", f"/v1/{self.project_id}/asr/flash", query=q)
        d = d or {}
        sents = []
        for ch in d.get("flash_result") or []:
            for s in ch.get("sentences") or []:
                sents.append(FlashSentence(int(ch.get("channel_id", 0)), int(s.get("start_time", 0)),
                                           int(s.get("end_time", 0)), Recognition.from_dict(s.get("result"))))
        return FlashResult(d.get("trace_id"), d.get("audio_duration"), tuple(sents))

    async def synthesize(self, text: str, *, audio_format: str = "wav", sample_rate: str = "8000",
                         property: str = "chinese_xiaoyan_common", speed: int = 0, pitch: int = 0,
                         volume: int = 50) -> TtsResult:
        """TTS ``POST /v1/{project_id}/tts`` (§11.5); returns the decoded audio bytes."""
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty str")
        if len(text) >= 500:
            raise ValueError(f"text must be shorter than 500 characters, got {len(text)}")
        if sample_rate not in ("8000", "16000"):
            raise ValueError(f"sample_rate must be the string '8000' or '16000', got {sample_rate!r}")
        body = {"text": text, "config": {"audio_format": audio_format, "sample_rate": sample_rate,
                                         "property": property, "speed": speed, "pitch": pitch, "volume": volume}}
        d, _ = await self.request("POST", f"/v1/{self.project_id}/tts", body=body)
        d = d or {}
        data = (d.get("result") or {}).get("data", "")
        return TtsResult(d.get("trace_id"), base64.b64decode(data))

    # -- hot words -------------------------------------------------------------------------------

    def _vocab_path(self, vid: str | None = None) -> str:
        p = f"/v1/{self.project_id}/asr/vocabularies"
        return p if vid is None else f"{p}/{vid}"

    async def create_vocabulary(self, name: str, contents: list[str], *, language: str = "chinese_mandarin",
                                description: str = "") -> str:
        """Create a hot-word table; returns its id (POST, not retried)."""
        d, _ = await self.request("POST", self._vocab_path(), body={
            "name": name, "description": description, "language": language, "contents": list(contents)})
        return str((d or {}).get("vocabulary_id", ""))

    async def update_vocabulary(self, vocabulary_id: str, name: str, contents: list[str], *,
                                language: str = "chinese_mandarin", description: str = "") -> str:
        """Replace a hot-word table (PUT: idempotent, retried)."""
        d, _ = await self.request("PUT", self._vocab_path(vocabulary_id), body={
            "name": name, "description": description, "language": language, "contents": list(contents)})
        return str((d or {}).get("vocabulary_id", vocabulary_id))

    async def list_vocabularies(self, *, offset: int = 0, limit: int = 10) -> VocabularyList:
        """List hot-word tables."""
        d, _ = await self.request("GET", self._vocab_path(), query={"offset": offset, "limit": limit})
        d = d or {}
        items = tuple(_vocab(x) for x in d.get("result") or [] if isinstance(x, dict))
        return VocabularyList(int(d.get("count", len(items))), items)

    async def get_vocabulary(self, vocabulary_id: str) -> Vocabulary:
        """One hot-word table with its contents."""
        d, _ = await self.request("GET", self._vocab_path(vocabulary_id))
        return _vocab(d or {})

    async def delete_vocabulary(self, vocabulary_id: str) -> None:
        """Delete a hot-word table (DELETE: retried)."""
        await self.request("DELETE", self._vocab_path(vocabulary_id))


def _require(config: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ValueError(f"config is missing {missing} (expected at least {list(keys)})")
