"""Helper processes shared by the benchmarks (imported as ``from _procs import ...``; this
directory is on ``sys.path`` under pytest and when a ``bench_*.py`` runs as a script).

- :func:`run_sis_sink`: a minimal SIS websocket server on loopback that answers START and END and
  swallows the audio, so that a benchmark measures its client side only.
"""

from __future__ import annotations

import asyncio
import json

__all__ = ["run_sis_sink"]


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
