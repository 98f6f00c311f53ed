"""``python -m sis_stream serve`` as a subprocess: the listening line, a session, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from aiohttp import ClientSession as HttpClient
from aiohttp import WSMsgType
from server_helpers import SENTENCES, encode, silence, speech_pcm

from sis_stream.cli.main import EXIT_INPUT, EXIT_USAGE, build_parser, main


def _start_server(*extra: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sis_stream", "serve", "--port", "0", "--no-auth",
         "--engine", "english_16k_common=none", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().strip()  # the FIRST stdout line
    if not line.startswith("listening on http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"unexpected first line {line!r}; stderr: {proc.stderr.read()}")
    return proc, line.split("listening on ", 1)[1]


async def test_serve_session_then_sigterm_drains_gracefully() -> None:
    proc, base = _start_server()
    try:
        ws_base = base.replace("http://", "ws://")
        audio = encode(np.concatenate([silence(300), speech_pcm(SENTENCES[1]), silence(200)]), "pcm16k16bit")
        async with HttpClient() as http:
            root = await (await http.get(base + "/")).json()
            assert root["server"] == "sis-stream" and root["auth"] == "none"
            async with http.ws_connect(ws_base + "/v1/p/rasr/continue-stream") as ws:
                await ws.send_str(json.dumps({"command": "START", "config": {
                    "audio_format": "pcm16k16bit", "property": "english_16k_common"}}))
                assert (await ws.receive_json(timeout=10))["resp_type"] == "START"
                for i in range(0, len(audio), 4000):
                    await ws.send_bytes(audio[i:i + 4000])
                await asyncio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)  # mid-session, no END from us
                frames = []
                while True:
                    msg = await ws.receive(timeout=15)
                    if msg.type != WSMsgType.TEXT:
                        break
                    frames.append(json.loads(msg.data))
                assert frames[-1]["resp_type"] == "END" and frames[-1]["reason"] == "NORMAL"
                assert any(f["resp_type"] == "RESULT" for f in frames)  # the open segment was finalised
                assert ws.close_code == 1001
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read()
        assert "authentication is disabled" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_usage_and_input_errors(tmp_path, capsys) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["serve", "--port", "notaport"]) == EXIT_USAGE
    assert main(["serve", "--tls-cert", "x.pem"]) == EXIT_USAGE
    assert main(["serve", "--credentials", str(tmp_path / "missing.json")]) == EXIT_INPUT
    assert main(["serve", "--engine", "english_16k_common=nosuchengine", "--no-auth", "--port", "0"]) == EXIT_INPUT
    assert main(["serve", "--engine-option", "bad"]) == EXIT_USAGE
    out = capsys.readouterr()
    assert "credentials file not found" in out.err
    assert "serve" in build_parser().format_help()


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"]])
def test_cli_help_exits_zero(argv, capsys) -> None:
    assert main(argv) == 0


async def test_tls_wss_like_the_sdk(tmp_path) -> None:
    """--tls-cert/--tls-key: https/wss; the SDK connects with certificate checks off (§14.5)."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    await asyncio.to_thread(
        subprocess.run, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    from server_helpers import config_for, run_ws_session, running_server

    from sis_stream.protocol import Mode
    from sis_stream.server import ServerSettings
    from sis_stream.server.serve import ssl_context

    settings = ServerSettings(no_auth=True, tls_cert=cert, tls_key=key, rest_routes=False,
                              engine_overrides=("english_16k_common=none",))
    audio = encode(np.concatenate([silence(200), speech_pcm(SENTENCES[1]), silence(700)]), "pcm16k16bit")
    async with running_server(settings, ssl_context=ssl_context(settings)) as srv:
        assert srv.ws("/x").startswith("wss://")
        client_ctx = ssl.create_default_context()
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        async with HttpClient() as http:
            ws = await http.ws_connect(srv.ws(Mode.CONTINUE_STREAM.path("p")), ssl=client_ctx)
            res = await run_ws_session(http, "", config_for(Mode.CONTINUE_STREAM), audio, ws=ws)
            await ws.close()
            assert res.frames[-1]["reason"] == "NORMAL" and len(res.finals()) == 1
            r = await http.get(srv.http("/healthz"), ssl=client_ctx)
            assert r.status == 200
