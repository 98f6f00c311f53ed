"""Helper processes shared by the benchmarks (imported as ``from _procs import ...``; this
directory is on ``sys.path`` under pytest and when a ``bench_*.py`` runs as a script).

- :func:`run_sis_sink`: a minimal SIS websocket server on loopback that answers START and END and
  swallows the audio, so that a benchmark measures its client side only.
- :class:`ServeProcess`: ``python -m sis_stream serve`` in its own process (its own GIL, so the
  load generator does not steal the server's interpreter), with its CPU time.
- :func:`process_cpu_s`: user + system CPU seconds of a process, from ``/proc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

__all__ = ["ServeProcess", "process_cpu_s", "run_sis_sink"]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux ``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServeProcess:
    """``sis-stream serve --port 0 --no-auth ARGS`` started and waited for; ``base`` is its
    ``ws://127.0.0.1:PORT`` URL. :meth:`stop` sends SIGTERM (graceful drain), then kills after
    30 s."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "sis_stream", "serve", "--port", "0", "--no-auth", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        line = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("listening on "), line
        self.base = line.split("listening on ", 1)[1].replace("http://", "ws://")
        self.pid = self.proc.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_sis_sink() -> None:
    """Serve ``/v1/{project}/rasr/{mode}`` on 127.0.0.1 (a free port) until killed.

    Prints the port on one line of stdout first (the parent reads it). START is answered with
    a START response, END with an END response (reason ``NORMAL``), binary frames are dropped;
    any other message type closes the connection. Call it in the sink process after pinning it.
    """
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                cmd = json.loads(msg.data).get("command")
                if cmd == "START":
                    await ws.send_str('{"resp_type": "START", "trace_id": "sink"}')
                elif cmd == "END":
                    await ws.send_str('{"resp_type": "END", "trace_id": "sink", "reason": "NORMAL"}')
            elif msg.type is not WSMsgType.BINARY:
                break
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/{pid}/rasr/{mode}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())
