"""Errors a user can act on (issue 15 §4): the server's reason for a refused websocket upgrade,
``serve`` without credentials, a blocking send at real-time pace, and one clean line (no
traceback, no "Future exception was never retrieved") on every CLI error path.

Servers are the embedded one (in-process) or ``sis-stream serve`` (a subprocess), on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from realspeech import asterisk_prompts

from sis_stream.audio.formats import AudioFormat, wav_bytes
from sis_stream.client.rasr import RasrClient
from sis_stream.client.sync import SyncRasrClient
from sis_stream.client.transport import (
    TransportOptions,
    open_websocket,
    upgrade_trace_config,
    ws_url,
)
from sis_stream.errors import SisAuthError
from sis_stream.protocol import AkSk, Token
from sis_stream.protocol.signer import Signer
from sis_stream.server.embedded import embedded_server

NONE_ENGINE = ("english_16k_common=none",)


async def _refusal(srv: Any, project_id: str, auth: Any) -> SisAuthError:
    async with RasrClient(srv.url, project_id, auth) as client:
        with pytest.raises(SisAuthError) as info:
            async with client.stream("continue", {"audio_format": "pcm16k16bit",
                                                  "property": "english_16k_common"}):
                pass
    return info.value


async def test_refused_upgrade_shows_the_servers_reason() -> None:
    async with embedded_server(engine_overrides=NONE_ENGINE) as srv:
        cases = {
            "wrong SK": (srv.project_id, AkSk(srv.auth.ak, "Z" * 40), "verify aksk signature fail",
                         "SK is this AK's secret"),
            "unknown AK": (srv.project_id, AkSk("A" * 20, srv.auth.sk), "verify aksk signature fail",
                           "unknown AK"),
            "wrong project": ("0" * 32, srv.auth, "no access to the project in the URL",
                              "check the project id"),
            "bad token": (srv.project_id, Token("not-a-token"), "decrypt token fail", "get a new one"),
        }
        for name, (pid, auth, reason, hint) in cases.items():
            exc = await _refusal(srv, pid, auth)
            text = str(exc)
            assert exc.error_code == "APIG.0301", name
            assert reason in text and hint in text, (name, text)
            assert "Invalid response status" not in text, (name, text)
            assert srv.auth.sk not in text


async def test_clock_skew_is_named() -> None:
    async with embedded_server(engine_overrides=NONE_ENGINE) as srv:
        url = ws_url(srv.url, srv.project_id, "continue-stream")
        headers = Signer(srv.auth, clock=lambda: time.time() - 3600).sign_websocket(url)
        async with aiohttp.ClientSession(trace_configs=[upgrade_trace_config()]) as http:
            with pytest.raises(SisAuthError) as info:
                await open_websocket(http, url, headers, TransportOptions())
        assert "signature expired" in str(info.value) and "clock" in str(info.value)


async def test_expired_token_is_named() -> None:
    from sis_stream.protocol.credentials import UserRecord
    from sis_stream.protocol.token import TokenIssuer

    secret = b"k" * 32
    async with embedded_server(engine_overrides=NONE_ENGINE, token_secret=secret) as srv:
        user = UserRecord("alice", "pw", "dom", srv.project_id, "cn-north-4")
        old = TokenIssuer(secret, ttl_s=60, clock=lambda: time.time() - 7200).issue(user)
        exc = await _refusal(srv, srv.project_id, Token(old.value))
        assert "token expires" in str(exc) and "get a new one" in str(exc)


def test_sync_send_of_a_long_buffer_blocks_as_long_as_pacing_needs() -> None:
    # 4 s of audio in ONE send() at real-time pace with timeout_s=1: the send takes ~2 s beyond
    # the 2 s input buffer, and must not time out while frames keep leaving.
    import asyncio
    import threading

    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            async with embedded_server(engine_overrides=NONE_ENGINE) as srv:
                box["srv"] = srv
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(30)
    srv = box["srv"]
    try:
        pcm = np.zeros(16000 * 4, np.int16).tobytes()
        cfg = {"audio_format": "pcm16k16bit", "property": "english_16k_common"}
        with SyncRasrClient(srv.url, srv.project_id, srv.auth, timeout_s=1.0) as client, \
                client.stream("continue", cfg, pacing="realtime") as s:
            s.send(pcm)
            s.end()
            assert s.stats.audio_ms_sent == pytest.approx(4000, abs=1)
    finally:
        stop.set()
        t.join(30)


def test_sync_timeout_names_what_timed_out() -> None:
    import asyncio

    with SyncRasrClient("ws://127.0.0.1:9", "p", AkSk("a" * 20, "b" * 40), timeout_s=0.2) as client:
        never = asyncio.Event()
        with pytest.raises(TimeoutError, match=r"opening the thing did not finish within 0.2 s"):
            client._call(never.wait(), what="opening the thing")


# --- the command line as a user runs it: subprocesses, stderr captured --------------------------


def _cli(*argv: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SIS_", "SIS_STREAM_"))}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "sis_stream", *argv], capture_output=True,
                          text=True, timeout=timeout, env=e, check=False,
                          input=None if stdin is None else stdin.decode("latin-1"))


def _clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err and "never retrieved" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("usage:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    u = asterisk_prompts()[0]
    p = tmp_path_factory.mktemp("err") / "call.wav"
    p.write_bytes(wav_bytes(AudioFormat.from_sis("pcm8k16bit"), u.pcm.tobytes()))
    return p


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``sis-stream serve`` with a creds.json (AK/SK + a user), the ``none`` engine."""
    d = tmp_path_factory.mktemp("serve")
    creds = {"access_keys": [{"ak": "AK" + "1" * 18, "sk": "S" * 40, "project_id": "p" * 32}],
             "users": []}
    (d / "creds.json").write_text(json.dumps(creds))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_")}
    proc = subprocess.Popen([sys.executable, "-m", "sis_stream", "serve", "--port", "0",
                             "--credentials", str(d / "creds.json"),
                             "--engine", "english_16k_common=none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env, PYTHONUNBUFFERED="1"))
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.split("listening on ", 1)[1].replace("http://", "ws://"), creds["access_keys"][0]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize(("case", "needles"), [
    ("wrong_sk", ("exit", "verify aksk signature fail", "SK is this AK's secret")),
    ("unknown_ak", ("exit", "verify aksk signature fail")),
    ("wrong_project", ("exit", "no access to the project in the URL")),
    ("bad_token", ("exit", "decrypt token fail")),
])
def test_cli_auth_errors_name_the_reason(case: str, needles: tuple[str, ...], served: Any,
                                         call_wav: Path) -> None:
    url, key = served
    args = {"wrong_sk": ["--ak", key["ak"], "--sk", "X" * 40, "--project-id", key["project_id"]],
            "unknown_ak": ["--ak", "AK" + "9" * 18, "--sk", key["sk"], "--project-id", key["project_id"]],
            "wrong_project": ["--ak", key["ak"], "--sk", key["sk"], "--project-id", "q" * 32],
            "bad_token": ["--token", "garbage-token", "--project-id", key["project_id"]]}[case]
    proc = _cli("transcribe", str(call_wav), "-q", "--endpoint", url, *args)
    line = _clean_error(proc, 4, *needles[1:])
    assert key["sk"] not in line


def test_cli_error_paths_are_one_clean_line(tmp_path: Path, call_wav: Path) -> None:
    mp3ish = tmp_path / "x.mp3"
    mp3ish.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(2000))
    cases = [
        (("transcribe", str(tmp_path / "missing.wav")), 3, "cannot read"),
        (("transcribe", str(mp3ish), "--audio-format", "ulaw8k8bit"), 3, "looks like an MP3"),
        (("transcribe", str(call_wav), "--property", "english_16k_comon"), 2,
         "did you mean 'english_16k_common'"),
        (("transcribe", str(call_wav), "--vad-tail", "99999"), 2, "[0, 3000] ms, got 99999"),
        (("transcribe", str(call_wav), "-q", "--endpoint", "ws://127.0.0.1:9", "--ak", "A" * 20,
          "--sk", "B" * 40, "--project-id", "p"), 5, "connect"),
        (("convert", str(call_wav), str(tmp_path / "o.xyz"), "--to", "ulaw8k8bit"), 2,
         "cannot tell the output container"),
        (("vad", str(tmp_path / "missing.wav")), 3, "cannot read"),
        (("serve", "--port", "0"), 2, "--no-auth"),
    ]
    for argv, code, needle in cases:
        _clean_error(_cli(*argv, timeout=60), code, needle)


def test_serve_without_credentials_refuses_to_start() -> None:
    proc = _cli("serve", "--port", "0", timeout=30)
    line = _clean_error(proc, 2, "--credentials", "--no-auth")
    assert proc.stdout == ""  # never got to "listening on"
    assert "serve" in line


def test_serve_takes_credentials_from_the_environment(tmp_path: Path) -> None:
    # SIS_STREAM_CREDENTIALS counts as credentials: the server starts (and is stopped at once).
    (tmp_path / "c.json").write_text(json.dumps({"access_keys": [], "users": []}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_")}
    env.update(SIS_STREAM_CREDENTIALS=str(tmp_path / "c.json"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "sis_stream", "serve", "--port", "0",
                             "--engine", "english_16k_common=none"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("listening on http://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(20)


def test_server_gone_mid_session_is_one_line(tmp_path: Path, call_wav: Path) -> None:
    # The server process dies while a call streams: reconnects fail, one line, exit 5.
    creds = {"access_keys": [{"ak": "AK" + "2" * 18, "sk": "T" * 40, "project_id": "p"}], "users": []}
    (tmp_path / "creds.json").write_text(json.dumps(creds))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIS_")}
    srv = subprocess.Popen([sys.executable, "-m", "sis_stream", "serve", "--port", "0",
                            "--credentials", str(tmp_path / "creds.json"),
                            "--engine", "english_16k_common=none"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=dict(env, PYTHONUNBUFFERED="1"))
    try:
        line = srv.stdout.readline().strip()
        if not line.startswith("listening on "):
            srv.kill()
            pytest.fail(f"serve did not start: {line!r}; stderr: {srv.stderr.read()[-2000:]}")
        url = line.split("listening on ", 1)[1].replace("http://", "ws://")
        cli = subprocess.Popen([sys.executable, "-m", "sis_stream", "transcribe", str(call_wav),
                                "--speed", "realtime", "--endpoint", url, "--ak", "AK" + "2" * 18,
                                "--sk", "T" * 40, "--project-id", "p", "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(2.0)
    finally:
        srv.kill()
        srv.wait(10)
    out, err = cli.communicate(timeout=120)
    # (usually "connection lost and 5 reconnect attempts failed"; on a slow start the connect
    # itself fails: one line and exit 5 either way)
    _clean_error(subprocess.CompletedProcess(cli.args, cli.returncode, out, err), 5)
