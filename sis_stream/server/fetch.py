"""SSRF-safe download of audio for ``data_url`` (transcriber) and ``url`` (legacy short audio).

The cloud service only reads same-region OBS objects (§11.2, §11.3); a local server reading any
URL a client names would be a server-side request forgery hole. :class:`FetchPolicy` therefore:

* accepts only ``http``, ``https`` and ``file`` URLs (anything else, or a URL that cannot be
  parsed: ``SIS.0608``);
* accepts http(s) hosts from an explicit allow-list only (``--fetch-allow HOST[,HOST...]``; an entry
  may carry a port, ``HOST:PORT``). The default list is **empty**, loopback included;
* reads ``file://`` URLs only below an explicit local input directory (``--fetch-dir``; none by
  default), symlinks resolved first, regular files only, never the server's own databases;
* refuses URLs with user information (``http://allowed@evil/``);
* never follows a redirect to another scheme, host or port (each hop is checked; at most
  ``max_redirects`` hops);
* answers every failed download (refused connection, timeout, HTTP error, a source that sends
  slower than ``min_rate_bps`` or pauses longer than ``idle_timeout_s``) with one uniform
  ``SIS.0609 "downloading ... failed: the source could not be read"``: the answer does not tell
  an open port from a closed one and never echoes what the source sent (the detail is logged);
* caps the size (``Content-Length`` checked first, then the bytes actually read) at ``max_bytes``
  (300 MB, the transcriber limit); the caller chooses the code (``SIS.0537`` / ``SIS.0604``);
* has connect and total timeouts, and ignores proxy environment variables.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from ..errors import RequestRejected
from ..protocol.errors import reject

__all__ = [
    "LOOPBACK_HOSTS",
    "MAX_FETCH_BYTES",
    "FetchPolicy",
    "check_http_url",
    "default_allow_hosts",
    "fetch_url",
    "parse_fetch_allow",
    "split_url",
    "url_scheme",
]

logger = logging.getLogger(__name__)

#: Host names treated as loopback for the default allow-list.
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")
#: Largest file (transcriber limit, §11.3).
MAX_FETCH_BYTES: Final = 300 * 1024 * 1024
#: Files of the data directory that are the server's state, never audio (with their -wal/-shm).
_PRIVATE_PREFIXES: Final = ("vocabularies.sqlite3", "jobs.sqlite3")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allow_hosts(listen_host: str) -> tuple[str, ...]:
    """The default allow-list: the loopback names when `listen_host` is loopback, else none."""
    return LOOPBACK_HOSTS if _is_loopback(listen_host) else ()


def _norm_host(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


def parse_fetch_allow(value: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``--fetch-allow`` (``"HOST,HOST:PORT,..."`` or a list of them).

    Returns
    -------
    tuple of str
        Lower-case entries, ``host`` or ``host:port`` (IPv6 as ``[::1]:8080`` or ``::1``).

    Raises
    ------
    ValueError
        An entry with a scheme, a path, user information, or a bad port.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if "/" in item or "@" in item:
            raise ValueError(f"--fetch-allow takes HOST or HOST:PORT entries, got {item!r}")
        host, port = _split_host_port(item)
        if port is None:
            out.append(host)
        else:
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return tuple(out)


def _split_host_port(item: str) -> tuple[str, int | None]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif item.count(":") == 1:
        host, port_s = item.split(":")
    else:  # a bare host name, IPv4 or unbracketed IPv6
        host, port_s = item, ""
    port = None
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"bad port in fetch allow-list entry {item!r}")
        port = int(port_s)
    return _norm_host(host), port


@dataclass(frozen=True)
class FetchPolicy:
    """What :func:`fetch_url` may read.

    Parameters
    ----------
    allow_hosts : tuple of str
        http(s) hosts (``host`` or ``host:port``, see :func:`parse_fetch_allow`).
    input_dir : Path, optional
        The explicit local input directory (``--fetch-dir``): ``file://`` URLs must point below
        it; None (default) refuses every ``file://`` URL.
    max_bytes : int
        Size cap.
    connect_timeout_s, total_timeout_s : float
        Network timeouts.
    min_rate_bps : float
        Minimum transfer rate after ``grace_s``; a slower source is abandoned (``SIS.0609``).
    idle_timeout_s : float
        Longest pause between two pieces of the body.
    grace_s : float
        Time before the minimum rate applies.
    max_redirects : int
        Same-host redirects followed.
    """

    allow_hosts: tuple[str, ...] = ()
    input_dir: Path | None = None
    max_bytes: int = MAX_FETCH_BYTES
    connect_timeout_s: float = 10.0
    total_timeout_s: float = 600.0
    max_redirects: int = 3
    min_rate_bps: float = 64 * 1024
    idle_timeout_s: float = 15.0
    grace_s: float = 10.0
    _parsed: tuple[tuple[str, int | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_hosts", parse_fetch_allow(self.allow_hosts))
        object.__setattr__(self, "_parsed", tuple(_split_host_port(h) for h in self.allow_hosts))
        if self.input_dir is not None and not isinstance(self.input_dir, Path):
            object.__setattr__(self, "input_dir", Path(self.input_dir))
        if not self.min_rate_bps > 0 or not self.idle_timeout_s > 0 or not self.grace_s >= 0:
            raise ValueError("min_rate_bps and idle_timeout_s must be > 0, grace_s >= 0")
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"max_bytes must be an int >= 1, got {self.max_bytes!r}")
        if not self.connect_timeout_s > 0 or not self.total_timeout_s > 0:
            raise ValueError("timeouts must be > 0")
        if not isinstance(self.max_redirects, int) or self.max_redirects < 0:
            raise ValueError(f"max_redirects must be an int >= 0, got {self.max_redirects!r}")

    def host_allowed(self, host: str, port: int) -> bool:
        """True if http(s) ``host:port`` is on the allow-list."""
        h = _norm_host(host)
        return any(h == ah and (ap is None or ap == port) for ah, ap in self._parsed)


def _illegal(url: str, why: str) -> Exception:
    return reject("SIS.0608", f"illegal URL {url[:200]!r}: {why}")


def check_http_url(url: str, policy: FetchPolicy) -> tuple[str, str, int]:
    """Check an ``http(s)`` URL against `policy` (scheme, no user info, host on the allow-list).

    Returns
    -------
    tuple
        ``(scheme, normalised host, port)``.

    Raises
    ------
    RequestRejected
        ``SIS.0608`` naming what is not allowed.
    """
    parts = split_url(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _illegal(url, f"scheme {scheme or '(none)'!r} is not allowed (http, https, file)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _illegal(url, "user information in URLs is not allowed")
    host = parts.hostname
    if not host:
        raise _illegal(url, "no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise _illegal(url, "bad port") from None
    if not policy.host_allowed(host, port):
        allowed = ", ".join(policy.allow_hosts) or "none configured"
        raise _illegal(url, f"host {host!r} is not on the fetch allow-list ({allowed}); "
                            "start the server with --fetch-allow HOST to allow it")
    return scheme, _norm_host(host), port


def _too_large(url: str, size: int | None, limit: int, code: str) -> Exception:
    got = f"{size} bytes" if size is not None else "more"
    return reject(code, f"the audio at {url[:200]!r} is too large: {got}, at most {limit} bytes")


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``, with an unparsable URL (``http://[::1``) as ``SIS.0608``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port (ValueError for a bad one)
    except ValueError:
        raise _illegal(url, "the URL cannot be parsed") from None
    return parts


def url_scheme(url: str) -> str:
    """The lower-case scheme of `url` (``SIS.0608`` if it cannot be parsed)."""
    return split_url(url).scheme.lower()


def _failed(url: str, detail: str) -> Exception:
    # One message for every way a download fails (refused, timed out, HTTP error, not audio...):
    # the answer must not tell open ports from closed ones nor echo what a source sent.
    logger.info("download failed url=%r: %s", url[:200], detail[:300])
    return reject("SIS.0609", f"downloading {url[:200]!r} failed: the source could not be read")


def _read_file(url: str, policy: FetchPolicy, too_large_code: str) -> bytes:
    parts = split_url(url)
    if parts.netloc not in ("", "localhost"):
        raise _illegal(url, "file URLs must name a local path (file:///path)")
    if policy.input_dir is None:
        raise _illegal(url, "file URLs are not allowed: the server has no local input directory "
                            "(start it with --fetch-dir DIR)")
    root = Path(os.path.realpath(policy.input_dir))
    path = Path(os.path.realpath(unquote(parts.path)))
    if path != root and root not in path.parents:
        raise _illegal(url, "file URLs must point below the server's local input directory")
    if path.name.startswith(_PRIVATE_PREFIXES):
        raise _illegal(url, "the server's own databases cannot be read")
    if not path.is_file():
        raise _failed(url, "no such regular file")
    size = path.stat().st_size
    if size > policy.max_bytes:
        raise _too_large(url, size, policy.max_bytes, too_large_code)
    with open(path, "rb") as f:
        data = f.read(policy.max_bytes + 1)
    if len(data) > policy.max_bytes:
        raise _too_large(url, None, policy.max_bytes, too_large_code)
    return data


async def fetch_url(url: object, policy: FetchPolicy, *, too_large_code: str = "SIS.0537") -> bytes:
    """Download `url` under `policy`.

    Parameters
    ----------
    url : object
        The request's URL (validated here: a non-empty string).
    policy : FetchPolicy
    too_large_code : str
        Error code for a file over ``policy.max_bytes`` (``SIS.0537`` transcriber, ``SIS.0604``
        short audio).

    Returns
    -------
    bytes
        The body.

    Raises
    ------
    RequestRejected
        ``SIS.0608`` (scheme, host not allowed, user info, file outside the data directory, a
        redirect elsewhere), ``SIS.0609`` (network error, timeout, HTTP status >= 400, too many
        redirects, missing file), `too_large_code`.
    """
    if not isinstance(url, str) or not url.strip():
        raise reject("SIS.0032", "data url is empty")
    url = url.strip()
    if url_scheme(url) == "file":
        return await asyncio.to_thread(_read_file, url, policy, too_large_code)
    import aiohttp

    scheme, host, port = check_http_url(url, policy)
    timeout = aiohttp.ClientTimeout(total=policy.total_timeout_s, connect=policy.connect_timeout_s)
    current = url
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            for _hop in range(policy.max_redirects + 1):
                async with session.get(current, allow_redirects=False,
                                       headers={"Accept-Encoding": "identity"}) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        loc = resp.headers.get("Location")
                        if not loc:
                            raise _failed(url, "redirect without Location")
                        try:
                            nxt = urljoin(current, loc)
                        except ValueError:
                            raise _failed(url, "unparsable redirect Location") from None
                        n_scheme, n_host, n_port = check_http_url(nxt, policy)
                        if (n_scheme, n_host, n_port) != (scheme, host, port):
                            raise _illegal(url, f"redirect to another scheme/host/port ({nxt[:200]!r}) "
                                                "is not followed")
                        current = nxt
                        continue
                    if resp.status >= 400 or resp.status < 200:
                        raise _failed(url, f"HTTP {resp.status}")
                    if resp.content_length is not None and resp.content_length > policy.max_bytes:
                        raise _too_large(url, resp.content_length, policy.max_bytes, too_large_code)
                    return await _read_limited(url, resp.content, policy, too_large_code)
            raise reject("SIS.0609", f"downloading {url[:200]!r} failed: more than "
                                     f"{policy.max_redirects} redirects")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        if isinstance(exc, RequestRejected):
            raise
        raise _failed(url, f"{type(exc).__name__}: {exc}") from None


async def _read_limited(url: str, content: Any, policy: FetchPolicy, too_large_code: str) -> bytes:
    """Read a response body under the size cap and the minimum transfer rate."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    buf = bytearray()
    while True:
        now = loop.time()
        rate_deadline = t0 + policy.grace_s + (len(buf) + 1) / policy.min_rate_bps
        timeout = min(policy.idle_timeout_s, rate_deadline - now)
        if timeout <= 0:
            raise _failed(url, f"slower than {policy.min_rate_bps:.0f} bytes/s")
        try:
            chunk = await asyncio.wait_for(content.readany(), timeout)
        except asyncio.TimeoutError:
            raise _failed(url, f"too slow: {len(buf)} bytes in {loop.time() - t0:.1f} s") from None
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > policy.max_bytes:
            raise _too_large(url, None, policy.max_bytes, too_large_code)
