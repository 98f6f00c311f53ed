"""Session routing through HAProxy with the shipped ``deploy/haproxy.cfg``: three real
``sis-stream serve`` processes on loopback, leastconn spread, drain on SIGTERM (``/healthz`` 503,
no new session lands there, open sessions finish), and a kill -9 marked DOWN by the checks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
from test_scaleout_procs import SIS, Procs, free_port, need_binary, procs_fixture  # noqa: F401 - fixture

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
START = {"command": "START", "config": {"audio_format": "pcm16k16bit", "property": "english_16k_common"}}
CHUNK = bytes(3200)  # 100 ms of 16 kHz silence


def haproxy_cfg(front: int, backs: list[int], sock: Path) -> str:
    """deploy/haproxy.cfg with the loopback ports and the stats socket rewritten."""
    text = (DEPLOY / "haproxy.cfg").read_text()
    assert "balance leastconn" in text and "option httpchk GET /healthz" in text and "timeout tunnel 6h" in text
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{front}").replace("/run/haproxy/sis-admin.sock", str(sock))
    for i, port in enumerate(backs):
        text = text.replace(f"127.0.0.1:{8081 + i}", f"127.0.0.1:{port}")
    return text


def server_status(sock: Path) -> dict[str, str]:
    """``{server: UP|DOWN|...}`` of backend sis_serve from the runtime API."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for ln in lines[1:]:
        row = dict(zip(head, ln.split(",")))
        if row.get("pxname") == "sis_serve" and row.get("svname") not in ("BACKEND", "FRONTEND", None):
            out[row["svname"]] = row["status"]
    return out


async def wait_for(pred, timeout_s: float, what: str, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = await pred() if asyncio.iscoroutinefunction(pred) else pred()
        if v:
            return v
        await asyncio.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def test_leastconn_drain_and_kill(procs: Procs) -> None:
    haproxy = need_binary("haproxy")
    ports = [free_port() for _ in range(3)]
    names = ["s1", "s2", "s3"]
    servers = {}
    for name, port in zip(names, ports):
        servers[name], _ = procs.start([*SIS, "serve", "--no-auth", "--port", str(port), "--drain-grace", "20",
                                        "--engine", "english_16k_common=none"], ready="listening on", name=name)
    front = free_port()
    sock = procs.tmp / "haproxy.sock"
    (procs.tmp / "haproxy.cfg").write_text(haproxy_cfg(front, ports, sock))
    procs.start([haproxy, "-db", "-f", str(procs.tmp / "haproxy.cfg")], ready=None, name="haproxy")
    await wait_for(lambda: sock.exists() and set(server_status(sock).values()) == {"UP"}, 15,
                   "HAProxy to see 3 servers UP", step_s=0.2)

    async with aiohttp.ClientSession() as http:
        async def sessions() -> dict[str, int | None]:
            out: dict[str, int | None] = {}
            for name, port in zip(names, ports):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        out[name] = (await r.json())["sessions"]
                except aiohttp.ClientError:
                    out[name] = None
            return out

        async def open_session() -> tuple[aiohttp.ClientWebSocketResponse, str]:
            before = await sessions()
            ws = await http.ws_connect(f"ws://127.0.0.1:{front}/v1/p1/rasr/continue-stream")
            await ws.send_json(START)
            msg = await asyncio.wait_for(ws.receive_json(), 10)
            assert msg["resp_type"] == "START", msg
            after = await sessions()
            landed = [n for n in names if after[n] is not None and after[n] == (before[n] or 0) + 1]
            assert len(landed) == 1, (before, after)
            return ws, landed[0]

        async def finish(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
            await ws.send_bytes(CHUNK)
            await ws.send_json({"command": "END", "cancel": False})
            seen = []
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                seen.append(msg.json()["resp_type"])
                if seen[-1] == "END":
                    break
            await ws.close()
            return seen

        opened = [await open_session() for _ in range(6)]
        spread = {n: sum(1 for _, b in opened if b == n) for n in names}
        assert spread == {"s1": 2, "s2": 2, "s3": 2}, spread  # leastconn

        # Drain s1: /healthz 503 at once, HAProxy takes it out, its open sessions keep working.
        t0 = time.monotonic()
        os.kill(servers["s1"].pid, signal.SIGTERM)
        async def s1_draining() -> bool:
            async with http.get(f"http://127.0.0.1:{ports[0]}/healthz") as r:
                return r.status == 503 and (await r.json())["status"] == "draining"
        await wait_for(s1_draining, 5, "s1 /healthz to answer 503")
        await wait_for(lambda: server_status(sock)["s1"] == "DOWN", 10, "HAProxy to take s1 out")
        drain_out_s = time.monotonic() - t0

        # kill -9 s3: the checks mark it DOWN.
        t1 = time.monotonic()
        servers["s3"].send_signal(signal.SIGKILL)
        await wait_for(lambda: server_status(sock)["s3"] == "DOWN", 10, "HAProxy to mark s3 DOWN")
        down_s = time.monotonic() - t1

        for ws, _b in opened:
            if _b != "s3":
                await ws.send_bytes(CHUNK)  # keep the open sessions active
        new = [await open_session() for _ in range(3)]
        assert [b for _, b in new] == ["s2"] * 3, "no new session may land on a draining or dead process"
        assert (await sessions())["s1"] == 2, "the draining process keeps its open sessions"

        for ws, b in opened:
            if b == "s1":
                assert (await finish(ws))[-1] == "END"
        rc = await asyncio.to_thread(servers["s1"].wait, 15)
        assert rc == 0, "the drained process exits 0 once its sessions finished"
        for ws, b in [*opened, *new]:
            if b == "s2":
                assert (await finish(ws))[-1] == "END"
            elif b == "s3":
                await ws.close()
    print(f"\nHAProxy (inter 1s, fall 2): draining s1 out of rotation {drain_out_s:.2f} s after SIGTERM; "
          f"killed s3 marked DOWN {down_s:.2f} s after kill -9")
