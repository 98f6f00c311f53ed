"""``--report DIR``: one HTML page with the run's figures and plots, readable offline.

The plots are drawn with matplotlib (the ``plot`` extra, Agg backend, no display) and embedded
in ``index.html`` as PNG data URIs, so the page is a single self-contained file (the PNG files
are written beside it too, and ``result.json``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .runner import LoadTest

__all__ = ["matplotlib_available", "write_report"]


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _histograms(run: LoadTest, plt: Any) -> bytes:
    agg = run.agg
    series = [("time from end of speech to final (ms)", agg.final_latency.v),
              ("connect + START (ms)", agg.connect.v), ("time to first result (ms)", agg.ttfs.v)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for ax, (title, vals) in zip(axes, series):
        if vals:
            a = np.asarray(vals)
            ax.hist(a, bins=min(60, max(5, int(np.sqrt(a.size)))), color="tab:blue")
            for q, style in ((0.5, "--"), (0.95, ":")):
                ax.axvline(float(np.quantile(a, q)), color="k", ls=style, lw=1, label=f"p{int(q * 100)}")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("count")
    return _png(fig)


def _over_time(run: LoadTest, plt: Any) -> bytes:
    st, agg = run.state, run.agg
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 6), sharex=True, constrained_layout=True)
    t = [r["t"] for r in st.timeline]
    ax1.plot(t, [r["active"] for r in st.timeline], color="tab:green", label="active calls")
    ax1.set_ylabel("active calls")
    tt, vv = agg.final_latency.arrays()
    if tt.size:
        ax1b = ax1.twinx()
        edges = np.arange(0.0, max(tt.max(), t[-1] if t else 0.0) + 5.0, 5.0)
        idx = np.digitize(tt, edges) - 1
        centers, p95 = [], []
        for b in np.unique(idx):
            sel = vv[idx == b]
            centers.append(edges[b] + 2.5)
            p95.append(float(np.quantile(sel, 0.95)))
        ax1b.plot(centers, p95, color="tab:red", marker=".", label="p95 final latency (5 s bins)")
        ax1b.set_ylabel("p95 time to final (ms)")
        ax1b.legend(loc="upper right", fontsize=8)
    ax1.legend(loc="upper left", fontsize=8)
    cpu = [r.get("cpu_pct") or 0.0 for r in st.timeline]
    ax2.plot(t, cpu, color="tab:purple", label="harness CPU (% of one core)")
    ax2.plot(t, [r.get("loop_lag_ms") or 0.0 for r in st.timeline], color="tab:brown",
             label="harness loop lag, max per second (ms)")
    if any(r.get("wait_pct") is not None for r in st.timeline):
        ax2.plot(t, [r.get("wait_pct") or 0.0 for r in st.timeline], color="tab:gray", ls="--",
                 label="harness waiting for a CPU (% of the second)")
    ax2.set_ylabel("CPU % / lag ms")
    if agg.error_times:
        ax2b = ax2.twinx()
        et = np.asarray(agg.error_times)
        edges = np.arange(0.0, et.max() + 1.0, 1.0)
        counts, _ = np.histogram(et, bins=edges) if edges.size > 1 else (np.array([et.size]), None)
        ax2b.bar(edges[:-1] if edges.size > 1 else [0.0], counts, width=1.0, color="tab:orange",
                 alpha=0.6, label="errors per second")
        ax2b.set_ylabel("errors / s")
        ax2b.legend(loc="upper right", fontsize=8)
    ax2.legend(loc="upper left", fontsize=8)
    ax2.set_xlabel("seconds since start")
    return _png(fig)


def _wer(result: dict[str, Any], plt: Any) -> bytes | None:
    by_file = result["accuracy"]["by_file"]
    if not by_file:
        return None
    names = list(by_file)[:60]
    key = "cer" if result["accuracy"]["unit"] == "char" else "wer"
    fig, ax = plt.subplots(figsize=(13, max(2.5, 0.22 * len(names) + 1)), constrained_layout=True)
    ax.barh(names, [by_file[n][key] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(key.upper())
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def _capacity(result: dict[str, Any], plt: Any) -> bytes | None:
    cap = result.get("capacity")
    if not cap or not cap["levels"]:
        return None
    rows = sorted(cap["levels"], key=lambda r: r["streams"])
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    xs = [r["streams"] for r in rows]
    ys = [r["final_latency_ms"].get("p95") or np.nan for r in rows]
    colors = ["tab:green" if r["verdict"] == "pass" else "tab:red" for r in rows]
    ax.scatter(xs, ys, c=colors, zorder=3)
    ax.plot(xs, ys, color="0.6", zorder=2)
    ax.axhline(cap["slo_ms"], color="k", ls="--", lw=1, label=f"SLO {cap['slo_ms']:g} ms")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("p95 time to final (ms)")
    ax.legend(fontsize=8)
    return _png(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(result: dict[str, Any]) -> str:
    rows = []
    for key in ("target", "mode", "property", "audio_format", "pace", "frame_ms", "streams",
                "streams_peak", "duration_s", "interrupted", "audio_s", "finals", "missed_ends", "wer",
                "cer", "harness_cpu_pct", "harness_wait_pct", "harness_cpu_includes_server",
                "harness_limited"):
        rows.append(f"<tr><th>{key}</th><td>{html.escape(_fmt(result.get(key)))}</td></tr>")
    for key in ("connect_ms", "ttfs_ms", "final_latency_ms", "harness_pacing_ms", "interim_per_s"):
        d = result.get(key) or {}
        cells = ", ".join(f"{k} {_fmt(v)}" for k, v in d.items())
        rows.append(f"<tr><th>{key}</th><td>{html.escape(cells)}</td></tr>")
    calls = ", ".join(f"{k} {v}" for k, v in result["calls"].items())
    errors = ", ".join(f"{k} {v}" for k, v in result["errors"].items()) or "none"
    rows.append(f"<tr><th>calls</th><td>{html.escape(calls)}</td></tr>")
    rows.append(f"<tr><th>errors</th><td>{html.escape(errors)}</td></tr>")
    cap = result.get("capacity")
    if cap:
        rows.append(f"<tr><th>capacity</th><td>knee {cap['knee_streams']} streams at p95 &le; "
                    f"{_fmt(cap['slo_ms'])} ms (stopped by {html.escape(cap['stopped_by'])})</td></tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def write_report(run: LoadTest, result: dict[str, Any], folder: str | Path) -> Path:
    """Write ``index.html`` (plots embedded), the PNGs and ``result.json`` into `folder`.

    Returns the path of ``index.html``.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'sis-stream[plot]'``).
    """
    if not matplotlib_available():
        raise ImportError("--report needs matplotlib: pip install 'sis-stream[plot]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, str, bytes]] = [
        ("latency_histograms.png", "Latency histograms", _histograms(run, plt)),
        ("over_time.png", "Latency, errors, harness CPU and loop lag over time, against active calls",
         _over_time(run, plt)),
    ]
    w = _wer(result, plt)
    if w is not None:
        plots.append(("wer_per_file.png", "Error rate per file", w))
    c = _capacity(result, plt)
    if c is not None:
        plots.append(("capacity.png", "Capacity search: p95 time to final per level", c))
    figs = []
    for name, title, data in plots:
        (out / name).write_bytes(data)
        b64 = base64.b64encode(data).decode("ascii")
        figs.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                    f"src='data:image/png;base64,{b64}'>")
    (out / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    warn = ""
    if result.get("harness_limited"):
        warn = ("<p class='warn'>The harness may have been the limit in this run (pacing p99, its CPU "
                "share or its wait for a CPU too high): run it on a less loaded machine or with fewer "
                "streams.</p>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sis-stream load test</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}} img{{max-width:100%}}
.warn{{color:#a00;font-weight:bold}}</style></head><body>
<h1>sis-stream load test</h1>
{warn}
{_table(result)}
{''.join(figs)}
<p>Full results: <a href="result.json">result.json</a>.</p>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
