"""``deploy/run-local.sh`` starts redis-server + HAProxy + 3 serve + 1 worker on loopback: a job
submitted through HAProxy is run, and SIGTERM stops every process it started."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from test_scaleout_procs import (  # noqa: F401 - fixtures
    Procs,
    Sink,
    free_port,
    http_json,
    need_binary,
    procs_fixture,
    sink_factory_fixture,
    submit,
    wait_until,
    wav_bytes,
)

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "run-local.sh"


def _backends(port: int) -> set[str]:
    seen = set()
    for _ in range(6):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                seen.add(r.headers.get("X-Sis-Backend"))
        except OSError:
            return set()
    return seen


def test_run_local_script(procs: Procs, sink_factory: Callable[..., Sink]) -> None:
    need_binary("redis-server")
    need_binary("haproxy")
    base_port = free_port()
    sink = sink_factory(wav_bytes(2.0), rate_bps=1e7)
    env = {"SIS_PORT": str(base_port), "SIS_REDIS_PORT": str(free_port()), "SIS_RUN_SECONDS": "60",
           "SIS_STREAM": str(Path(sys.executable).parent / "sis-stream")}
    script, _ = procs.start(["sh", str(SCRIPT)], ready=None, name="run-local", env=env, group=True)
    wait_until(lambda: _backends(base_port) == {"s1", "s2", "s3"}, 40, "the three serve processes behind HAProxy",
               step_s=0.3)
    base = f"http://127.0.0.1:{base_port}"
    job_id = submit(base, f"{sink.url}/audio.wav", f"{sink.url}/cb/one")
    wait_until(lambda: http_json("GET", f"{base}/v1/p1/asr/transcriber/jobs/{job_id}")[1]["status"] == "FINISHED",
               30, "the job to finish")
    wait_until(lambda: sink.posts, 10, "the callback")
    script.send_signal(signal.SIGTERM)
    assert script.wait(15) == 0
    out = subprocess.run(["pgrep", "-g", str(script.pid)], check=False, capture_output=True, text=True)
    assert out.stdout.strip() == "", f"processes left behind: {out.stdout}"
