"""Metrics: Cloud Eye names in Prometheus text, usage accounting (successful calls only), bounds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from aiohttp import ClientSession as HttpClient
from server_helpers import (
    SENTENCES,
    config_for,
    encode,
    none_settings,
    run_ws_session,
    running_server,
    silence,
    speech_pcm,
)

from sis_stream.protocol import Mode
from sis_stream.server.metrics import CLOUD_EYE_METRICS, OTHER_LABEL, Metrics, render_labels


def _sample(text: str, name: str, **labels: str) -> float | None:
    pat = re.escape(name + render_labels(labels)) + r" (\S+)"
    m = re.search("^" + pat + "$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def test_observe_counts_by_status_class_and_average_delay() -> None:
    m = Metrics()
    m.observe("asr.short-audio", 200, 10.0, "p1", audio_ms=1500)
    m.observe("asr.short-audio", 201, 30.0, "p1", audio_ms=500)
    m.observe("asr.short-audio", 400, 5.0, "p1", audio_ms=900)
    m.observe("asr.short-audio", 503, 55.0, "p2")
    assert m.calls("asr.short-audio") == (2, 1, 1)
    text = m.render()
    for name in CLOUD_EYE_METRICS:
        assert f"# TYPE {name} " in text
    assert _sample(text, "successful_calls_of_service", interface="asr.short-audio") == 2
    assert _sample(text, "api_calls_with_4xx_response", interface="asr.short-audio") == 1
    assert _sample(text, "api_calls_with_5xx_response", interface="asr.short-audio") == 1
    assert _sample(text, "average_delay", interface="asr.short-audio") == pytest.approx(25.0)
    # billing: failed calls are not counted; audio of successful calls only
    (u,) = m.usage("p1")
    assert (u.calls, u.audio_ms) == (2, 2000.0)
    assert m.usage("p2") == []
    assert _sample(text, "sis_usage_audio_seconds_total", project_id="p1", interface="asr.short-audio") == 2.0
    assert _sample(text, "sis_call_delay_ms_count", interface="asr.short-audio") == 4
    assert _sample(text, "sis_call_delay_ms_bucket", interface="asr.short-audio", le="+Inf") == 4


def test_label_values_are_bounded_and_escaped() -> None:
    m = Metrics(max_label_values=2)
    for i in range(5):
        m.observe(f"if{i}", 200, 1.0, f"proj{i}")
    assert m.calls(OTHER_LABEL) == (3, 0, 0)
    assert {u.project_id for u in m.usage()} == {"proj0", "proj1", OTHER_LABEL}
    assert render_labels({"a": 'x"y\\z\n'}) == '{a="x\\"y\\\\z\\n"}'


def test_sessions_and_rejections_and_gauges() -> None:
    m = Metrics(gauges=lambda: [("sis_engine_queue_depth", "q", {}, 3)])
    m.session_opened("rasr.continue-stream")
    m.session_opened("rasr.continue-stream")
    m.session_closed("rasr.continue-stream", "NORMAL")
    m.rejected("auth")
    assert m.sessions_active("rasr.continue-stream") == 1 and m.sessions_active() == 1
    text = m.render()
    assert _sample(text, "sis_sessions_active", interface="rasr.continue-stream") == 1
    assert _sample(text, "sis_sessions_total", interface="rasr.continue-stream", reason="NORMAL") == 1
    assert _sample(text, "sis_rejections_total", reason="auth") == 1
    assert _sample(text, "sis_engine_queue_depth") == 3


def test_observe_validation() -> None:
    m = Metrics()
    with pytest.raises(TypeError, match="http_status must be int"):
        m.observe("x", "200", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be >= 0"):
        m.observe("x", 200, -1.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        m.observe("x", 200, 1.0, audio_ms=float("nan"))
    with pytest.raises(ValueError, match="max_label_values"):
        Metrics(max_label_values=0)


async def test_metrics_endpoint_after_sessions() -> None:
    pcm = np.concatenate([silence(300), speech_pcm(SENTENCES[1]), silence(800)])
    audio = encode(pcm, "pcm16k16bit")
    async with running_server(none_settings()) as srv, HttpClient() as http:
        for _ in range(2):
            await run_ws_session(http, srv.ws(Mode.CONTINUE_STREAM.path("projA")), config_for(Mode.CONTINUE_STREAM),
                                 audio)
        async with http.ws_connect(srv.ws(Mode.CONTINUE_STREAM.path("projA"))) as ws:  # SIS.0301 -> 4xx
            await ws.send_str('{"command": "START", "config": {"audio_format": "pcm8k16bit", '
                              '"property": "english_16k_common"}}')
            assert (await ws.receive_json(timeout=5))["error_code"] == "SIS.0301"
        r = await http.get(srv.http("/metrics"))
        assert r.status == 200 and r.content_type == "text/plain"
        text = await r.text()
    iface = "rasr.continue-stream"
    assert _sample(text, "successful_calls_of_service", interface=iface) == 2
    assert _sample(text, "api_calls_with_4xx_response", interface=iface) == 1
    secs = _sample(text, "sis_usage_audio_seconds_total", project_id="projA", interface=iface)
    assert secs == pytest.approx(2 * len(pcm) / 16000, abs=0.01)
    assert _sample(text, "sis_usage_calls_total", project_id="projA", interface=iface) == 2
    assert _sample(text, "sis_sessions_active", interface=iface) == 0
    assert _sample(text, "sis_engine_queue_depth") is not None
    assert _sample(text, "sis_sessions_limit") == 256
