"""Process helpers for the scale-out tests (Redis, HAProxy, serve/worker subprocesses), and a
test of the shared job queue across two API processes.

Every process is started on 127.0.0.1 on a free port, waited for with a bound, and killed by a
fixture finalizer. A missing ``redis-server``/``haproxy`` skips the test with a printed reason,
or FAILS it under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SIS = [sys.executable, "-m", "sis_stream"]
STARTUP_S = 30.0


def need_binary(name: str) -> str:
    """The path of `name`; a missing binary fails the test under CI=true, else skips it."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if path is None:
        reason = f"{name} is not installed (apt-get install {name}); the scale-out test needs a real one"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(f"SKIP: {reason}", file=sys.stderr)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Subprocesses of one test; :meth:`close` kills every one still running."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.groups: list[int] = []

    def start(self, args: list[str], *, ready: str | None, name: str, env: dict[str, str] | None = None,
              timeout_s: float = STARTUP_S, group: bool = False) -> tuple[subprocess.Popen[str], str]:
        """Start `args`; when `ready` is given, wait (bounded) for a stdout line starting with it.
        With `group`, the process leads its own process group, killed as a whole at the end."""
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - the child keeps writing to it
        proc = subprocess.Popen(args, stdout=subprocess.PIPE if ready else log, stderr=log, text=True,
                                env={**os.environ, **(env or {})}, cwd=self.tmp, start_new_session=group)
        if group:
            self.groups.append(proc.pid)
        self.procs.append(proc)
        if ready is None:
            return proc, ""
        line: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for ln in proc.stdout:
                if ln.startswith(ready):
                    line.append(ln.strip())
                    break
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout_s)
        if not line:
            proc.kill()
            raise AssertionError(f"{name} did not print {ready!r} within {timeout_s} s; log: "
                                 f"{(self.tmp / f'{name}.log').read_text()[-2000:]}")
        return proc, line[0]

    def close(self) -> None:
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture(name="procs")
def procs_fixture(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


def start_redis(procs: Procs, *, port: int | None = None, data_dir: Path | None = None) -> str:
    """A redis-server with AOF (fsync everysec) on a free loopback port; returns its URL."""
    binary = need_binary("redis-server")
    port = port or free_port()
    d = data_dir or procs.tmp / "redis"
    d.mkdir(exist_ok=True)
    procs.start([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "yes",
                 "--appendfsync", "everysec", "--dir", str(d), "--daemonize", "no", "--protected-mode", "yes"],
                ready=None, name=f"redis-{port}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not answer PING on port {port} within 10 s")


def start_serve(procs: Procs, redis_url: str, *extra: str, name: str = "serve") -> tuple[subprocess.Popen[str], str]:
    """``sis-stream serve --redis`` on a free port (engine ``none``); returns (proc, base URL)."""
    proc, line = procs.start([*SIS, "serve", "--no-auth", "--port", "0", "--redis", redis_url,
                              "--engine", "english_16k_common=none", "--fetch-allow", "127.0.0.1", *extra], ready="listening on", name=name)
    return proc, line.split()[-1]


def start_worker(procs: Procs, redis_url: str, *extra: str, name: str = "worker") -> tuple[subprocess.Popen[str], str]:
    """``sis-stream worker --redis``; returns (proc, consumer name)."""
    proc, line = procs.start([*SIS, "worker", "-v", "--redis", redis_url, "--engine", "english_16k_common=none",
                              "--fetch-allow", "127.0.0.1", *extra], ready="worker ", name=name)
    return proc, line.split()[1]


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    """16 kHz mono WAV: bursts of noise and silence (sentences for the Endpointer)."""
    import io
    import wave

    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = (np.sin(2 * np.pi * 0.4 * t) > 0).astype(np.float64)
    pcm = (rng.standard_normal(n) * 3000 * env).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class Sink:
    """A loopback HTTP server: ``GET /audio.wav`` (sent at ``rate_bps``) and ``POST /cb/<name>``
    (recorded; the first POST of each name in ``fail_first`` is answered 503)."""

    def __init__(self, audio: bytes, *, rate_bps: float = 160_000, fail_first: set[str] = frozenset()) -> None:
        self.audio = audio
        self.rate_bps = rate_bps
        self.fail_first = set(fail_first)
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(sink.audio)))
                self.end_headers()
                step = 16000
                try:
                    for i in range(0, len(sink.audio), step):
                        self.wfile.write(sink.audio[i:i + step])
                        self.wfile.flush()
                        time.sleep(step / sink.rate_bps)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the downloading process was killed: expected in these tests

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = self.path.rsplit("/", 1)[-1]
                with sink.lock:
                    fail = name in sink.fail_first
                    sink.fail_first.discard(name)
                    sink.posts.append({"name": name, "headers": dict(self.headers), "body": json.loads(body),
                                       "answered": 503 if fail else 200})
                self.send_response(503 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="sink_factory")
def sink_factory_fixture() -> Iterator[Callable[..., Sink]]:
    made: list[Sink] = []

    def make(*a: Any, **kw: Any) -> Sink:
        s = Sink(*a, **kw)
        made.append(s)
        return s
    try:
        yield make
    finally:
        for s in made:
            s.close()


def http_json(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def submit(base: str, audio_url: str, callback_url: str | None = None, vocabulary_id: str | None = None) -> str:
    cfg: dict[str, Any] = {"property": "english_16k_common", "audio_format": "auto"}
    if vocabulary_id:
        cfg["vocabulary_id"] = vocabulary_id
    if callback_url:
        cfg["callback_url"] = callback_url
    st, body = http_json("POST", f"{base}/v1/p1/asr/transcriber/jobs", {"data_url": audio_url, "config": cfg})
    assert st == 200, body
    return body["job_id"]


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_jobs_shared_across_api_processes(procs: Procs, sink_factory: Callable[..., Sink]) -> None:
    """A job submitted to one serve process is answered by another and run by a worker; a
    vocabulary created on one process is seen by the others (and by the worker running a job
    that names it)."""
    url = start_redis(procs)
    sink = sink_factory(wav_bytes(2.0), rate_bps=1e7)
    _a, base_a = start_serve(procs, url, "--no-job-workers", name="serve-a")
    _b, base_b = start_serve(procs, url, "--no-job-workers", name="serve-b")
    vocab = {"name": "shared_words", "language": "english", "contents": ["HELLO", "WORLD"]}
    st, body = http_json("POST", f"{base_a}/v1/p1/asr/vocabularies", vocab)
    assert st == 200, body
    vid = body["vocabulary_id"]
    st, body = http_json("POST", f"{base_b}/v1/p1/asr/vocabularies", vocab)
    assert st == 400 and body["error_code"] == "SIS.0204", body  # the name is taken cluster-wide
    st, body = http_json("GET", f"{base_b}/v1/p1/asr/vocabularies/{vid}")
    assert st == 200 and body["contents"] == ["HELLO", "WORLD"], body
    st, body = http_json("PUT", f"{base_b}/v1/p1/asr/vocabularies/{vid}", {**vocab, "contents": ["HELLO"]})
    assert st == 200, body
    st, body = http_json("GET", f"{base_a}/v1/p1/asr/vocabularies")
    assert st == 200 and body["count"] == 1 and body["result"][0]["vocabulary_id"] == vid, body
    st, body = http_json("GET", f"{base_a}/v1/p1/asr/vocabularies/{vid}")
    assert body["contents"] == ["HELLO"], body
    job_id = submit(base_a, f"{sink.url}/audio.wav", vocabulary_id=vid)
    st, body = http_json("GET", f"{base_b}/v1/p1/asr/transcriber/jobs/{job_id}")
    assert st == 200 and body["status"] == "WAITING" and body["job_id"] == job_id
    st, body = http_json("GET", f"{base_b}/v1/other/asr/transcriber/jobs/{job_id}")
    assert st == 400 and body["error_code"] == "SIS.0533"  # another project cannot see it
    import redis

    r = redis.Redis.from_url(url, decode_responses=True)
    try:  # each serve process publishes its capacity (TTL-bound hash)
        names = {base_a.split("//")[1], base_b.split("//")[1]}
        keys = wait_until(lambda: {k.split(":", 2)[2] for k in r.scan_iter("sis:capacity:*")} == names and names,
                          10, "both capacity hashes")
        assert keys and all(r.hget(f"sis:capacity:{n}", "capacity") == "256" for n in names)
        assert r.ttl(f"sis:capacity:{base_a.split('//')[1]}") > 0
    finally:
        r.close()
    start_worker(procs, url)
    done = wait_until(lambda: (r := http_json("GET", f"{base_a}/v1/p1/asr/transcriber/jobs/{job_id}")[1])
                      ["status"] == "FINISHED" and r, 30, "the job to finish")
    assert done["audio_duration"] == 2000  # the worker found the vocabulary in Redis
    st, body = http_json("DELETE", f"{base_b}/v1/p1/asr/vocabularies/{vid}")
    assert st == 200, body
    st, body = http_json("GET", f"{base_a}/v1/p1/asr/vocabularies/{vid}")
    assert st == 404 and body["error_code"] == "SIS.0201", body
    os.kill(_a.pid, signal.SIGTERM)
    assert _a.wait(15) == 0
    os.kill(_b.pid, signal.SIGTERM)
    assert _b.wait(15) == 0
    import redis

    r = redis.Redis.from_url(url, decode_responses=True)
    try:  # usage counted by both processes, flushed at shutdown: the cluster-wide totals
        usage = r.hgetall("sis:usage:p1")
        assert int(usage["long-audio-transcription-post:calls"]) == 1, usage
        assert int(usage["long-audio-transcription-get:calls"]) >= 2, usage
        assert int(usage["vocabulary-create:calls"]) == 1, usage  # the refused duplicate is not billed
    finally:
        r.close()


def test_missing_binary_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        need_binary("sis-no-such-binary")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        need_binary("sis-no-such-binary")
