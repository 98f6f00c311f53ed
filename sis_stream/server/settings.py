"""Configuration of the SIS-compatible local server (one frozen dataclass, validated once).

Every knob of ``sis-stream serve`` lives in :class:`ServerSettings`; :func:`load_credentials`
reads the AK/SK pairs and IAM users from a ``creds.json`` file or the environment. Tests build
settings directly and may inject a shared :class:`~sis_stream.engines.registry.EngineRegistry`
(load the Whisper model once per test session) and a fake clock for the 20 s idle rule.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from ..engines.batcher import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH
from ..protocol import IDLE_TIMEOUT_S, AccessKeyRecord, CredentialStore
from .admission import DEFAULT_TTF_BOUND_MS

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_PORT",
    "ENV_AK",
    "ENV_CREDENTIALS_FILE",
    "ENV_PROJECT_ID",
    "ENV_SK",
    "ServerSettings",
    "load_credentials",
]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
#: Default concurrency limit (RASR websocket sessions open at once; beyond: SIS.0312).
DEFAULT_MAX_SESSIONS: Final = 256
#: Largest HTTP body accepted (AK/SK signing supports bodies <= 12 MB, §2.2; tokens beyond).
DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
#: Environment: path of a creds.json.
ENV_CREDENTIALS_FILE: Final = "SIS_STREAM_CREDENTIALS"
#: Environment: one AK/SK pair and its project (used when no file is given).
ENV_AK: Final = "SIS_STREAM_AK"
ENV_SK: Final = "SIS_STREAM_SK"
ENV_PROJECT_ID: Final = "SIS_STREAM_PROJECT_ID"


def load_credentials(path: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> CredentialStore:
    """Load the credentials a server accepts.

    Order: `path` if given; else the file named by ``$SIS_STREAM_CREDENTIALS``; else one AK/SK
    pair from ``$SIS_STREAM_AK`` / ``$SIS_STREAM_SK`` / ``$SIS_STREAM_PROJECT_ID``; else an empty
    store (every authenticated request is then rejected).

    Parameters
    ----------
    path : str or os.PathLike, optional
        A ``creds.json``: ``{"access_keys": [{"ak", "sk", "project_id"}], "users": [{"name",
        "password", "domain", "project_id", "region"}]}``.
    environ : mapping, optional
        Environment to read (default ``os.environ``).

    Returns
    -------
    CredentialStore

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Bad JSON or shape (the message never contains a secret), or an incomplete AK/SK
        environment triple.
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(ENV_CREDENTIALS_FILE) or None
    if path is not None:
        return CredentialStore.from_file(path)
    triple = [env.get(k) for k in (ENV_AK, ENV_SK, ENV_PROJECT_ID)]
    if any(triple):
        if not all(triple):
            raise ValueError(f"set all of {ENV_AK}, {ENV_SK} and {ENV_PROJECT_ID}, or none of them")
        return CredentialStore([AccessKeyRecord(*triple)])  # type: ignore[arg-type]
    return CredentialStore()


def _positive(name: str, value: Any, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        what = "a number" if kind is float else "an int"
        raise ValueError(f"{name} must be {what} > 0, got {value!r}")


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``sis-stream serve`` can be told.

    Parameters
    ----------
    host : str
        Interface to bind (default loopback).
    port : int
        TCP port; 0 picks a free one (the bound port is printed).
    credentials_file : Path, optional
        ``creds.json``; see :func:`load_credentials` (environment fallback).
    credentials : CredentialStore, optional
        Use this store instead of loading one (tests).
    data_dir : Path, optional
        Where REST modules keep vocabularies/jobs; None = a temporary directory chosen by them.
    tls_cert, tls_key : Path, optional
        PEM files; both or neither. With them the server speaks https/wss.
    no_auth : bool
        Accept every request without credentials (local development only; a warning is logged
        and printed).
    engine_overrides : tuple of str
        ``PROPERTY=ENGINE`` items (``english_16k_common=pocketsphinx``).
    engine_options : mapping
        Engine name -> constructor options (``{"whisper": {"model_dir": "..."}}``).
    registry : EngineRegistry, optional
        A ready registry to share (tests load Whisper once); overrides/options are then ignored.
    max_sessions : int
        Concurrency limit: RASR websocket sessions (START..END) open at once. Beyond: ERROR
        SIS.0312 for the START.
    idle_timeout_s : float
        The SIS 20 s rule: FATAL_ERROR SIS.0304 after this long without a client message.
    clock : callable
        Monotonic seconds used for the idle rule and latencies (inject a fake one in tests).
    idle_check_s : float
        How often each connection compares ``clock()`` with its idle deadline (a fake clock
        only takes effect at these checks).
    interim_interval_s : float
        Minimum time between two interim results of one stream (rate limit; partials are also
        skipped while the engine queue is busy).
    engine_workers : int, optional
        Threads of the engine executor (default: the cores this process may use).
    engine_queue : int, optional
        Bound on queued engine tasks (default 64 per worker); beyond it work is rejected.
    lane_pending : int
        Bound on queued engine tasks of one stream.
    max_body_bytes : int
        Largest HTTP request body.
    token_secret : bytes, optional
        Secret of the IAM-compatible token issuer (random per process by default).
    max_skew_s : float
        Allowed X-Sdk-Date skew for AK/SK signatures.
    shutdown_timeout_s : float
        How long a graceful shutdown waits for sessions to finish their END.
    max_audio_ms : mapping, optional
        Per-mode audio cap override in ms (``{"continue-stream": 60000}``), for tests.
    max_connection_s : float
        A websocket connection is closed after this long on ``clock`` (SIS: at most 5 hours).
    rest_routes : bool
        Install the REST API (:func:`sis_stream.server.app.setup_rest_routes`; default True).
    fetch_allow : tuple of str, optional
        Hosts (``HOST`` or ``HOST:PORT``) the transcriber / legacy ASR may download ``data_url``
        from. None (default): the loopback hosts when listening on loopback, nothing otherwise.
    flash_store : Path, optional
        Folder standing in for OBS for flash ASR (``obs_bucket_name`` = sub-folder,
        ``obs_object_key`` = file).
    transcriber_workers : int, optional
        Concurrent recording-file transcription jobs (default: the REST module's default, 2).
    fetch_dir : Path, optional
        The local input directory ``file://`` URLs (``data_url``, ``url``) may name
        (``--fetch-dir``); None (default): no ``file://`` URL is read.
    min_body_rate_bps : float
        Minimum transfer rate of a request body after ``body_grace_s`` (slower: 408, closed).
    body_idle_timeout_s : float
        Longest pause while a request body arrives.
    body_grace_s : float
        Time a request body may take before the minimum rate applies.
    header_timeout_s : float
        Time a connection may take to send a complete request head (and how long an idle
        keep-alive connection stays open).
    validate_engines : bool
        ``serve`` loads every mapped engine before listening, so a wrong model path or option
        fails at start-up (:class:`~sis_stream.errors.EngineConfigError`), not at the first request.
    redis_url : str, optional
        ``redis://HOST:PORT/DB``: transcriber jobs on Redis Streams shared by every process using
        it (:mod:`.redis_jobs`); None (default): the embedded SQLite store of this process.
    job_lease_s : float
        With ``redis_url``: a job whose owner stopped renewing its lease for this long is taken
        over by another process.
    run_jobs : bool
        With ``redis_url``: run transcriber jobs in this process (False: submit and answer GETs
        only, leave the work to ``sis-stream worker`` processes).
    job_checkpoint_s : float
        With ``redis_url``: a job's audio is transcribed in pieces of about this many seconds,
        each saved when done; a job taken over after a crash resumes after the last saved piece.
    drain_grace_s : float
        On SIGTERM/SIGINT, ``/healthz`` answers 503 at once and the server keeps serving for up to
        this long (or until no websocket is open), so a load balancer stops sending new sessions
        while open ones finish; then the graceful shutdown ends what is left. 0 (default): shut
        down at once.
    ttf_bound_ms : float
        Admission control: a new RASR session is refused (SIS.0312) when the measured decode
        budget says accepting it would push the time from end of speech to final over this bound
        (default 1200 = the default ``vad_tail`` 500 + 700; :mod:`.admission`). ``max_sessions``
        stays a hard cap.
    batch_window_ms : float
        Batched decoding: how long the decode batcher waits after the oldest due decode for
        others to join it (0..1000 ms, default 20).
    max_batch : int
        Largest decode batch (default 16).
    decode_workers : int, optional
        Threads of the decode batcher (default: the cores this process may use).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    credentials_file: Path | None = None
    credentials: CredentialStore | None = None
    data_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    no_auth: bool = False
    engine_overrides: tuple[str, ...] = ()
    engine_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    registry: Any = None
    max_sessions: int = DEFAULT_MAX_SESSIONS
    idle_timeout_s: float = IDLE_TIMEOUT_S
    clock: Callable[[], float] = time.monotonic
    idle_check_s: float = 1.0
    interim_interval_s: float = 1.0
    engine_workers: int | None = None
    engine_queue: int | None = None
    lane_pending: int = 256
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    token_secret: bytes | None = None
    max_skew_s: float = 900.0
    shutdown_timeout_s: float = 10.0
    max_audio_ms: Mapping[str, int] = field(default_factory=dict)
    rest_routes: bool = True
    max_connection_s: float = 5 * 3600.0
    fetch_allow: tuple[str, ...] | None = None
    flash_store: Path | None = None
    transcriber_workers: int | None = None
    fetch_dir: Path | None = None
    min_body_rate_bps: float = 16 * 1024
    body_idle_timeout_s: float = 10.0
    body_grace_s: float = 5.0
    header_timeout_s: float = 30.0
    validate_engines: bool = True
    redis_url: str | None = None
    job_lease_s: float = 30.0
    run_jobs: bool = True
    drain_grace_s: float = 0.0
    job_checkpoint_s: float = 60.0
    ttf_bound_ms: float = float(DEFAULT_TTF_BOUND_MS)
    batch_window_ms: float = float(DEFAULT_BATCH_WINDOW_MS)
    max_batch: int = DEFAULT_MAX_BATCH
    decode_workers: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty str, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {self.port!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        for name in ("credentials_file", "data_dir", "tls_cert", "tls_key", "flash_store", "fetch_dir"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))
        if isinstance(self.engine_overrides, str):
            raise TypeError("engine_overrides must be a sequence of 'PROPERTY=ENGINE' strings, got one str")
        object.__setattr__(self, "engine_overrides", tuple(self.engine_overrides))
        _positive("max_sessions", self.max_sessions)
        _positive("idle_timeout_s", self.idle_timeout_s, float)
        _positive("idle_check_s", self.idle_check_s, float)
        _positive("interim_interval_s", self.interim_interval_s, float)
        _positive("lane_pending", self.lane_pending)
        _positive("max_body_bytes", self.max_body_bytes)
        _positive("max_skew_s", self.max_skew_s, float)
        _positive("shutdown_timeout_s", self.shutdown_timeout_s, float)
        _positive("max_connection_s", self.max_connection_s, float)
        _positive("min_body_rate_bps", self.min_body_rate_bps, float)
        _positive("body_idle_timeout_s", self.body_idle_timeout_s, float)
        _positive("header_timeout_s", self.header_timeout_s, float)
        _positive("job_lease_s", self.job_lease_s, float)
        _positive("job_checkpoint_s", self.job_checkpoint_s, float)
        _positive("ttf_bound_ms", self.ttf_bound_ms, float)
        _positive("max_batch", self.max_batch)
        if self.decode_workers is not None:
            _positive("decode_workers", self.decode_workers)
        if isinstance(self.batch_window_ms, bool) or not isinstance(self.batch_window_ms, (int, float)) \
                or not 0 <= self.batch_window_ms <= 1000:
            raise ValueError(f"batch_window_ms must be a number in 0..1000, got {self.batch_window_ms!r}")
        if isinstance(self.drain_grace_s, bool) or not isinstance(self.drain_grace_s, (int, float)) \
                or self.drain_grace_s < 0:
            raise ValueError(f"drain_grace_s must be a number >= 0, got {self.drain_grace_s!r}")
        if self.redis_url is not None and (not isinstance(self.redis_url, str)
                                           or not self.redis_url.startswith(("redis://", "rediss://", "unix://"))):
            shown = str(self.redis_url).split("://")[0] + "://..." if "://" in str(self.redis_url) else "no scheme"
            raise ValueError(f"redis_url must start with redis://, rediss:// or unix://, got {shown} "
                             "(the URL is not shown: it may hold a password)")
        if isinstance(self.body_grace_s, bool) or not isinstance(self.body_grace_s, (int, float)) \
                or self.body_grace_s < 0:
            raise ValueError(f"body_grace_s must be a number >= 0, got {self.body_grace_s!r}")
        if self.engine_workers is not None:
            _positive("engine_workers", self.engine_workers)
        if self.engine_queue is not None:
            _positive("engine_queue", self.engine_queue)
        if self.transcriber_workers is not None:
            _positive("transcriber_workers", self.transcriber_workers)
        if self.fetch_allow is not None:
            if isinstance(self.fetch_allow, str):
                raise TypeError("fetch_allow must be a sequence of 'HOST[:PORT]' strings, got one str")
            object.__setattr__(self, "fetch_allow", tuple(self.fetch_allow))
        if not callable(self.clock):
            raise TypeError(f"clock must be callable, got {type(self.clock).__name__}")
        if self.token_secret is not None and (not isinstance(self.token_secret, bytes) or len(self.token_secret) < 32):
            raise ValueError("token_secret must be bytes of length >= 32")
        for mode, ms in dict(self.max_audio_ms).items():
            _positive(f"max_audio_ms[{mode!r}]", ms)

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, else ``"http"``."""
        return "https" if self.tls_cert is not None else "http"

    def load_credentials(self) -> CredentialStore:
        """The credential store: the injected one, else :func:`load_credentials`."""
        if self.credentials is not None:
            return self.credentials
        return load_credentials(self.credentials_file)

    def secret(self) -> bytes:
        """The token secret (a fresh random one when none is configured)."""
        return self.token_secret if self.token_secret is not None else secrets.token_bytes(32)

    def with_(self, **changes: Any) -> ServerSettings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """The settings without anything secret, for logs and the root JSON."""
        return {
            "host": self.host, "port": self.port, "tls": self.tls_cert is not None,
            "no_auth": self.no_auth, "engine_overrides": list(self.engine_overrides),
            "max_sessions": self.max_sessions, "idle_timeout_s": self.idle_timeout_s,
            "interim_interval_s": self.interim_interval_s,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
        }


def _parse_jsonish(value: str) -> Any:  # used by the CLI for --engine-option values
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_engine_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse ``ENGINE.OPTION=VALUE`` items (``whisper.model_dir=/models/base``) into a mapping.

    Raises
    ------
    ValueError
        For an item that does not read ``ENGINE.OPTION=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        engine, dot, option = key.partition(".")
        if not eq or not dot or not engine or not option:
            raise ValueError(f"engine option must read ENGINE.OPTION=VALUE, got {item!r}")
        out.setdefault(engine.strip(), {})[option.strip()] = _parse_jsonish(value)
    return out


__all__ += ["parse_engine_options"]
