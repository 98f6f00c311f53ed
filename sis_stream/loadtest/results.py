"""The result of a run as one JSON-ready dict (the ``--json`` file; docs/loadtest.md lists the keys)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Final

from .runner import LoadTest

__all__ = ["HARNESS_CPU_LIMIT_PCT", "HARNESS_PACING_LIMIT_MS", "HARNESS_WAIT_LIMIT_PCT", "SCHEMA_VERSION", "summarize", "write_json"]

SCHEMA_VERSION: Final = 1
#: Above these the harness, not the endpoint, may have been the limit (``harness_limited``).
HARNESS_PACING_LIMIT_MS: Final = 10.0
HARNESS_CPU_LIMIT_PCT: Final = 90.0
HARNESS_WAIT_LIMIT_PCT: Final = 10.0


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def summarize(run: LoadTest, *, capacity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything `run` measured (see docs/loadtest.md for each key)."""
    agg, st, spec = run.agg, run.state, run.spec
    cpu_pct = 100.0 * run.cpu_s / run.wall_s if run.wall_s > 0 else None
    pacing = agg.pacing_ms()
    wait_pct = 100.0 * run.wait_s / run.wall_s if run.wait_s is not None and run.wall_s > 0 else None
    limited = bool((pacing["p99"] is not None and pacing["p99"] > HARNESS_PACING_LIMIT_MS)
                   or (cpu_pct is not None and cpu_pct > HARNESS_CPU_LIMIT_PCT)
                   or (wait_pct is not None and wait_pct > HARNESS_WAIT_LIMIT_PCT))
    acc = agg.accuracy(bool(spec.by_chars))
    outcomes = agg.outcomes
    out: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "target": run.target.describe(),
        "mode": spec.mode,
        "property": spec.config.get("property"),
        "audio_format": spec.config.get("audio_format"),
        "interim_results": spec.config.get("interim_results") == "yes",
        "pace": spec.pace,
        "frame_ms": spec.frame_ms,
        "streams": run.options.plan.streams,
        "streams_peak": max((r["active"] for r in st.timeline), default=0),
        "duration_s": round(run.wall_s, 3),
        "interrupted": st.interrupted,
        "calls": {
            "started": st.calls_started,
            "ok": outcomes.get("ok", 0),
            "error": outcomes.get("error", 0),
            "cut": outcomes.get("cut", 0),
            "lost": st.calls_started - sum(outcomes.values()),
        },
        "errors": dict(sorted(agg.errors.items())),
        "connect_ms": agg.connect.summary(),
        "ttfs_ms": agg.ttfs.summary(),
        "final_latency_ms": agg.final_latency.summary(),
        "finals": agg.finals,
        "missed_ends": agg.missed_ends,
        "interim_per_s": agg.interim_rate.summary(),
        "audio_s": round(agg.audio_s, 3),
        "wer": acc["wer"],
        "cer": acc["cer"],
        "accuracy": acc,
        "harness_pacing_ms": pacing,
        "harness_cpu_pct": None if cpu_pct is None else round(cpu_pct, 1),
        "harness_cpu_includes_server": run.target.embedded,
        "harness_wait_pct": None if wait_pct is None else round(wait_pct, 1),
        "harness_limited": limited,
        "host": {"cpus": os.cpu_count(), "load1_start": run.load1[0], "load1_end": run.load1[1]},
        "corpus": {"source": run.corpus.source, "files": len(run.corpus.items),
                   "scored_files": run.corpus.scored, "audio_s": round(run.corpus.audio_s, 3)},
        "timeline": st.timeline,
        "call_records": agg.records,
        "call_records_dropped": agg.records_dropped,
    }
    if capacity is not None:
        out["capacity"] = capacity
    return _clean(out)


def write_json(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write `result` to `path` (atomically: a temporary file renamed over it)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)
