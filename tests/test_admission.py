"""Admission control from the measured decode budget: the model on a fake clock, and SIS.0312
from a running server when the controller (fed through the app key) says the budget is used up."""

from __future__ import annotations

import json
import re
import threading

import pytest
from aiohttp import ClientSession as HttpClient
from server_helpers import none_settings, running_server

from sis_stream.protocol import Mode
from sis_stream.server.admission import Admission, AdmissionController
from sis_stream.server.engine_metrics import EngineMetrics
from sis_stream.server.state import ADMISSION, ENGINE_METRICS, SESSIONS


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Load:
    """Drives a controller: `sessions` active, each costing `cost` decode-s per session-second,
    reported as one decode observation every `step` seconds."""

    def __init__(self, ctl: AdmissionController, clock: FakeClock) -> None:
        self.ctl, self.clock = ctl, clock
        self.sessions = 0

    def run(self, seconds: float, cost: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.t += step
            self.ctl.observe_decode(self.sessions * cost * step)


def _controller(workers: int = 2, **kw) -> tuple[AdmissionController, FakeClock, Load]:
    clock = FakeClock()
    holder: dict[str, Load] = {}
    ctl = AdmissionController(workers, clock=clock, sessions=lambda: holder["load"].sessions, **kw)
    load = Load(ctl, clock)
    holder["load"] = load
    return ctl, clock, load


def test_cold_start_admits() -> None:
    ctl, _, _ = _controller()
    f = ctl.figures()
    assert f.mode == "cold" and f.session_cost is None and f.ttf_p95_s is None
    for n in (0, 1, 50, 500):
        assert ctl.admit(n) == Admission(True, "no session is active" if n == 0 else "nothing measured yet")
    assert ctl.figures().admitted == 4


def test_refuses_when_one_more_session_would_exceed_the_budget_and_admits_when_load_falls() -> None:
    ctl, _, load = _controller(workers=2)
    load.sessions = 10
    load.run(20.0, cost=0.17)  # 10 sessions x 0.17 = 1.7 decode-s/s of a budget of 2
    f = ctl.figures()
    assert f.mode == "budget"
    assert f.session_cost == pytest.approx(0.17, rel=0.02)
    assert f.utilisation == pytest.approx(0.85, rel=0.03)
    assert f.sessions_mean == pytest.approx(10, rel=0.02)
    assert f.capacity == 10  # floor(0.9 * 2 / 0.17)
    ok, reason = ctl.admit(10)  # 11 x 0.17 / 2 = 0.935 >= 0.9
    assert not ok
    assert "decode budget is used up" in reason
    assert re.search(r"10 sessions use 8[4-6]% of 2 decode worker\(s\)", reason), reason
    assert "one more would need 94%" in reason and "limit 90%" in reason and "1200 ms" in reason
    assert ctl.admit(9).ok  # 10 x 0.17 / 2 = 0.85 < 0.9
    # load falls: 4 sessions left; the cost per session stays what was measured
    load.sessions = 4
    load.run(15.0, cost=0.17)
    f = ctl.figures()
    assert f.utilisation == pytest.approx(0.34, rel=0.05) and f.session_cost == pytest.approx(0.17, rel=0.02)
    assert ctl.admit(4).ok
    f = ctl.figures()
    assert (f.refused_budget, f.refused_ttf, f.admitted) == (1, 0, 2)


def test_cost_follows_a_cheaper_engine_and_headroom_is_configurable() -> None:
    ctl, _, load = _controller(workers=2, headroom=0.5)
    load.sessions = 5
    load.run(10.0, cost=0.2)
    assert not ctl.admit(5).ok  # 6 x 0.2 / 2 = 0.6 >= 0.5
    load.run(60.0, cost=0.05)  # the same sessions got cheap (e.g. batched decoding)
    assert ctl.figures().session_cost == pytest.approx(0.05, rel=0.05)
    assert ctl.admit(5).ok  # 6 x 0.05 / 2 = 0.15


def test_ttf_over_bound_refuses_only_while_utilisation_is_high() -> None:
    ctl, _, load = _controller(workers=2, ttf_bound_ms=1000)
    load.sessions = 3
    load.run(10.0, cost=0.1)  # utilisation 0.15: the engine is not the bottleneck
    for _ in range(10):
        ctl.observe_ttf(1.8)
    f = ctl.figures()
    assert f.ttf_p95_s == pytest.approx(1.8) and f.ttf_samples == 10
    assert ctl.admit(3).ok
    load.run(10.0, cost=0.45)  # utilisation 0.675 >= busy 0.6; the cost model alone would admit
    for _ in range(10):
        ctl.observe_ttf(1.8)
    assert ctl.figures().capacity >= 4
    ok, reason = ctl.admit(3)
    assert not ok
    assert "time-to-final is over its bound: p95 time-to-final 1800 ms vs bound 1000 ms" in reason
    assert "of 2 decode worker(s) in use" in reason
    assert ctl.figures().refused_ttf == 1


def test_ttf_only_when_the_engine_reports_no_decodes() -> None:
    # pocketsphinx-like: decodes run outside the batcher, only time-to-final is measured
    ctl, clock, load = _controller(workers=2, ttf_bound_ms=1200, min_ttf_samples=5)
    load.sessions = 6
    for i in range(4):
        clock.t += 0.5
        ctl.observe_ttf(2.0)
    assert ctl.admit(6).ok  # 4 finals: too few for a p95
    clock.t += 0.5
    ctl.observe_ttf(2.0)
    f = ctl.figures()
    assert f.mode == "ttf" and f.utilisation == 0.0 and f.session_cost is None
    ok, reason = ctl.admit(6)
    assert not ok and "p95 time-to-final 2000 ms vs bound 1200 ms" in reason
    assert "decode utilisation not measured for this engine" in reason
    assert ctl.admit(0).ok  # never refuse when nothing runs
    clock.t += 11.0  # the slow finals leave the 10 s window
    assert ctl.figures().ttf_samples == 0
    assert ctl.admit(6).ok


def test_p95_uses_the_window_and_nearest_rank() -> None:
    ctl, clock, _ = _controller(min_ttf_samples=1)
    for i in range(100):
        ctl.observe_ttf(i / 100)
    assert ctl.figures().ttf_p95_s == pytest.approx(0.94)
    clock.t += 10.5
    ctl.observe_ttf(0.3)
    f = ctl.figures()
    assert f.ttf_samples == 1 and f.ttf_p95_s == pytest.approx(0.3)


def test_long_idle_gap_and_session_count_without_callable() -> None:
    clock = FakeClock()
    ctl = AdmissionController(1, clock=clock)
    ctl.admit(4)  # samples 4 active sessions
    for _ in range(100):
        clock.t += 0.1
        ctl.observe_decode(0.4 * 0.1)  # 4 x 0.1 decode-s/session-s on 1 worker
    assert ctl.figures().session_cost == pytest.approx(0.1, rel=0.05)
    assert not ctl.admit(9).ok  # 10 x 0.1 = 1.0 >= 0.9 (and now 9 sessions are sampled)
    clock.t += 3600.0  # an hour without observations: bounded work, figures still sane
    f = ctl.figures()
    assert f.utilisation == 0.0 and f.sessions_mean == pytest.approx(9.0)
    assert f.session_cost is not None and f.session_cost < 0.01  # 9 silent sessions cost nothing
    assert ctl.admit(9).ok


def test_thread_safe_observations() -> None:
    ctl, clock, load = _controller(workers=4)
    load.sessions = 1

    def work() -> None:
        for _ in range(500):
            ctl.observe_decode(0.001)
            ctl.observe_ttf(0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    clock.t += 2.0
    f = ctl.figures()
    assert f.ttf_samples == 4000
    assert f.utilisation == pytest.approx(4.0 / (4 * 2.0))  # 4000 x 1 ms over 2 s of 4 workers


@pytest.mark.parametrize("kw, match", [
    ({"workers": 0}, "workers"), ({"workers": 2, "ttf_bound_ms": 0}, "ttf_bound_ms"),
    ({"workers": 2, "headroom": 1.5}, "headroom"), ({"workers": 2, "window_s": 1.0}, "window_s"),
    ({"workers": 2, "alpha": 0.0}, "alpha"), ({"workers": 2, "busy": -0.1}, "busy"),
    ({"workers": 2, "min_ttf_samples": 0}, "min_ttf_samples"),
])
def test_bad_configuration(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AdmissionController(**kw)


def test_bad_observations() -> None:
    ctl = AdmissionController(2)
    with pytest.raises(ValueError, match="decode_s"):
        ctl.observe_decode(-1.0)
    with pytest.raises(TypeError, match="seconds"):
        ctl.observe_ttf("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="active_sessions"):
        ctl.admit(-1)


def test_engine_metrics_feed_the_controller() -> None:
    ctl, clock, load = _controller(workers=1)
    em = EngineMetrics([ctl])
    load.sessions = 2
    job = type("Job", (), {"tag": "p", "final": True, "wait_s": 0.0, "audio": [0] * 16000})()
    for _ in range(100):
        clock.t += 0.1
        em.on_batch("moonshine", [job], 2 * 0.3 * 0.1)
    em.observe_ttf("p", 0.7)
    f = ctl.figures()
    assert f.session_cost == pytest.approx(0.3, rel=0.05) and f.ttf_samples == 1
    assert not ctl.admit(2).ok  # 3 x 0.3 / 1 = 0.9


# -- end to end -------------------------------------------------------------------------------------

_START = json.dumps({"command": "START", "config": {"audio_format": "pcm16k16bit", "property": "english_16k_common",
                                                    "add_punc": "yes"}})
_END = json.dumps({"command": "END", "cancel": False})


async def test_server_refuses_start_with_sis0312_and_the_reason() -> None:
    clock = FakeClock()
    settings = none_settings(clock=clock, decode_workers=2, max_sessions=3, idle_timeout_s=3600.0)
    path = Mode.CONTINUE_STREAM.path("p1")
    async with running_server(settings) as srv, HttpClient() as http:
        ctl = srv.app[ADMISSION]
        assert ctl.workers == 2 and ctl.ttf_bound_s == 1.2
        async with http.ws_connect(srv.ws(path)) as ws1:
            await ws1.send_str(_START)  # cold start: admitted
            assert json.loads((await ws1.receive(timeout=10)).data)["resp_type"] == "START"
            assert srv.app[SESSIONS].active == 1
            # 10 s of decoding at 1.0 decode-s per session-second with one session open
            em = srv.app[ENGINE_METRICS]
            job = type("Job", (), {"tag": "english_16k_common", "final": True, "wait_s": 0.2,
                                   "audio": [0] * 32000})()
            for _ in range(100):
                clock.t += 0.1
                em.on_batch("moonshine", [job], 0.1)
            for _ in range(5):
                em.observe_ttf("english_16k_common", 1.5)
            async with http.ws_connect(srv.ws(path)) as ws2:
                await ws2.send_str(_START)
                err = json.loads((await ws2.receive(timeout=10)).data)
            assert err["resp_type"] == "ERROR" and err["error_code"] == "SIS.0312"
            msg = err["error_msg"]
            assert msg.startswith("max concurrency exceeded: the decode budget is used up")
            assert re.search(r"1 sessions use (49|50|51)% of 2 decode worker\(s\), one more would need (99|100)%", msg)
            assert "p95 time-to-final 1500 ms vs bound 1200 ms" in msg
            assert srv.app[SESSIONS].active == 1  # the refused START's slot was given back
            health = await (await http.get(srv.http("/healthz"))).json()
            assert health["admission"]["refused"] == 1 and health["admission"]["mode"] == "budget"
            assert health["admission"]["ttf_p95_ms"] == 1500 and health["admission"]["capacity"] == 1  # floor(0.9 x 2 / 1.0)
            text = await (await http.get(srv.http("/metrics"))).text()
            assert 'sis_rejections_total{reason="capacity"} 1' in text
            assert 'sis_admission_refused{rule="budget"} 1' in text
            assert 'api_calls_with_4xx_response{interface="rasr.continue-stream"} 1' in text
            assert 'sis_time_to_final_seconds_count{property="english_16k_common"} 5' in text
            assert 'sis_decode_batch_size_count{decoder="moonshine"} 100' in text
            cost = re.search(r"^sis_admission_session_cost (\S+)$", text, re.MULTILINE)
            assert cost and float(cost.group(1)) == pytest.approx(1.0, rel=0.03)
            await ws1.send_str(_END)
            assert json.loads((await ws1.receive(timeout=10)).data)["resp_type"] == "END"
        # load gone: nothing is active, the next START is admitted
        async with http.ws_connect(srv.ws(path)) as ws3:
            await ws3.send_str(_START)
            assert json.loads((await ws3.receive(timeout=10)).data)["resp_type"] == "START"


async def test_max_sessions_stays_a_hard_cap() -> None:
    settings = none_settings(max_sessions=1)
    path = Mode.CONTINUE_STREAM.path("p1")
    async with running_server(settings) as srv, HttpClient() as http:
        async with http.ws_connect(srv.ws(path)) as ws1, http.ws_connect(srv.ws(path)) as ws2:
            await ws1.send_str(_START)
            assert json.loads((await ws1.receive(timeout=10)).data)["resp_type"] == "START"
            await ws2.send_str(_START)  # the controller would admit (cold), the cap refuses
            err = json.loads((await ws2.receive(timeout=10)).data)
            assert err["error_code"] == "SIS.0312" and err["error_msg"] == "max concurrency exceeded: at most 1 sessions"
        f = srv.app[ADMISSION].figures()
        assert (f.admitted, f.refused_budget, f.refused_ttf) == (1, 0, 0)
