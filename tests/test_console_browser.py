"""The browser console in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``,
driven by Selenium through the system driver; no driver or browser download).

The fake microphone plays a 16-bit WAV of real read speech (LibriVox, pocketsphinx-testdata);
Chromium delivers it at its own capture rate (44.1 kHz headless), the page decimates it to
16 kHz in its AudioWorklet and streams it to the real continue-stream websocket, logged in with
the console's session cookie. Screenshots of every tab (1280x800 and phone width) are
saved under ``$SIS_STREAM_ARTIFACTS`` (default: pytest's tmp_path).

Without chromium/chromedriver/selenium the module is skipped, except under ``CI=true``, where
it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from realspeech import librivox
from server_helpers import whisper_registry  # noqa: F401 - fixture

from sis_stream.protocol import CredentialStore, UserRecord
from sis_stream.server import METRICS, ServerSettings, create_app
from sis_stream.text import wer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER, DOMAIN, PASSWORD, PROJECT = "alice", "acme", "correct horse battery", "proj-console"
#: The engine's WER bar on real read speech (bundled whisper tiny.en), as the REST tests use.
MAX_WER = 0.4
PHONE = (390, 844)
DESKTOP = (1280, 800)
TABS = ("live", "short", "jobs", "tts", "hotwords")


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium Python package (pip install selenium)")
    if missing:
        msg = (f"the console browser tests need {', '.join(missing)} "
               "(apt-get install chromium chromium-driver; .ci/run installs them)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def _noise(seconds: float, rate: int, seed: int) -> np.ndarray:
    n = int(seconds * rate)
    return np.clip(np.round(np.random.default_rng(seed).normal(0, 20, n)), -32768, 32767).astype(np.int16)


class Speech:
    """The test recordings: `live16` (two sentences with pauses, 16 kHz; also the fake
    microphone's file) and one short sentence for the short-audio tab."""

    def __init__(self, folder: Path) -> None:
        utts = {u.name.rsplit("-", 1)[-1]: u for u in librivox()}
        a, b = utts["0880"], utts["0930"]
        rate = a.rate_hz
        self.live16 = np.concatenate([_noise(0.6, rate, 1), a.pcm, _noise(1.0, rate, 2), b.pcm,
                                      _noise(1.2, rate, 3)])
        self.live_text = f"{a.text} {b.text}"
        self.live_seconds = len(self.live16) / rate
        self.live16_path = folder / "two-sentences-16k.wav"
        _write_wav(self.live16_path, self.live16, rate)
        # Chromium's fake device converts the file to the capture rate itself (sis_stream's
        # resampler only goes down to 8/16 kHz, so the file stays at 16 kHz).
        self.mic_path = self.live16_path
        self.short_path = folder / "short-16k.wav"
        _write_wav(self.short_path, a.pcm, rate)
        self.short_text = a.text


class ServerThread:
    """The server app on 127.0.0.1:<free port>, in its own event loop thread."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.app: Any = None
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="console-test-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        from aiohttp import web

        self._stop = asyncio.Event()
        self.app = create_app(self.settings)
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> ServerThread:
        self.thread.start()
        if not self.ready.wait(60) or self.error is not None:
            raise RuntimeError(f"the test server did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("SIS_STREAM_ARTIFACTS")
    folder = Path(env) / "console" if env else tmp_path_factory.mktemp("console-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    return Speech(tmp_path_factory.mktemp("console-speech"))


@pytest.fixture(scope="module")
def server(whisper_registry, tmp_path_factory):  # noqa: F811 - fixture
    creds = CredentialStore(users=[UserRecord(USER, PASSWORD, DOMAIN, PROJECT, "cn-north-4")])
    settings = ServerSettings(host="127.0.0.1", port=0, credentials=creds, registry=whisper_registry,
                              data_dir=tmp_path_factory.mktemp("console-data"), interim_interval_s=0.5,
                              fetch_dir=tmp_path_factory.mktemp("console-inputs"))
    srv = ServerThread(settings).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-downloads")


@pytest.fixture(scope="module")
def driver(speech: Speech, downloads: Path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common import selenium_manager

    def no_manager(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Selenium Manager must not run: the system chromedriver is used")

    saved = selenium_manager.SeleniumManager.binary_paths
    selenium_manager.SeleniumManager.binary_paths = no_manager  # type: ignore[method-assign]
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech.mic_path}%noloop",
                "--autoplay-policy=no-user-gesture-required", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_script_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        selenium_manager.SeleniumManager.binary_paths = saved  # type: ignore[method-assign]


def wait_for(drv: Any, js: str, timeout: float, what: str) -> Any:
    """Poll a JS expression until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = drv.execute_script(f"return ({js});")
        if value:
            return value
        if time.monotonic() > deadline:
            logs = [e["message"] for e in drv.get_log("browser")][-10:]
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; browser log: {logs}")
        time.sleep(0.1)


def shot(drv: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    drv.save_screenshot(str(path))
    return path


def show_tab(drv: Any, tab: str) -> None:
    drv.find_element("css selector", f"#tabs button[data-tab={tab}]").click()
    wait_for(drv, f"!document.getElementById('tab-{tab}').hidden", 5, f"the {tab} tab")


@pytest.fixture(scope="module")
def page(driver, server, artifacts):
    """The console, logged in (the wrong password is tried first and must be refused)."""
    driver.get(server.url + "/")  # a browser asking for / lands on the console
    wait_for(driver, "document.body.dataset.session === 'out'", 20, "the login form")
    assert driver.current_url == server.url + "/console/"
    driver.find_element("id", "login-domain").send_keys(DOMAIN)
    driver.find_element("id", "login-name").send_keys(USER)
    driver.find_element("id", "login-password").send_keys("not the password")
    driver.find_element("id", "login-submit").click()
    wait_for(driver, "document.getElementById('login-error').textContent", 10, "the login error")
    assert "wrong" in driver.find_element("id", "login-error").text
    assert driver.execute_script("return document.body.dataset.session") == "out"
    assert "not the password" not in driver.page_source
    shot(driver, artifacts, "login-refused-1280")
    pw = driver.find_element("id", "login-password")
    pw.clear()
    pw.send_keys(PASSWORD)
    driver.find_element("id", "login-submit").click()
    wait_for(driver, "document.body.dataset.session === 'in'", 10, "the login")
    cookie = driver.get_cookie("sis_console_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie") == ""  # not readable from scripts
    return driver


def test_wrong_password_refused_and_counted(page, server):
    # The refused login of the `page` fixture is an auth rejection (401) of console.login.
    ok, c4xx, c5xx = server.app[METRICS].calls("console.login")
    assert (ok, c4xx, c5xx) == (1, 1, 0)
    assert page.find_element("id", "who-project").text == PROJECT


def test_decimator_frequency_response(page):
    # JS unit test of the worklet's decimator, run in the browser under test.
    res = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/console/static/decimator.js').then((m) => {
          const out = {};
          for (const rate of [44100, 48000, 96000, 22050]) {
            const g = {};
            for (const f of [100, 1000, 3000, 5000, 6500, 7000, 8000, 9000, 12000, 15000, 20000]) {
              if (f < rate / 2) g[f] = m.toneGainDb(rate, 16000, f, 0.4);
            }
            out[rate] = g;
          }
          // Streaming in odd chunks gives the same samples and the documented count.
          const r1 = new m.RationalResampler(44100, 16000), r2 = new m.RationalResampler(44100, 16000);
          const x = new Float32Array(44111);
          for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.01) * 0.3 + Math.sin(i * 1.3) * 0.2;
          const whole = r1.process(x);
          const parts = [];
          let pos = 0, k = 1;
          while (pos < x.length) { const n = Math.min(x.length - pos, 37 * k++ % 997 + 1); parts.push(...r2.process(x.subarray(pos, pos + n))); pos += n; }
          let maxDiff = 0;
          for (let i = 0; i < whole.length; i++) maxDiff = Math.max(maxDiff, Math.abs(whole[i] - parts[i]));
          const pass = new m.RationalResampler(16000, 16000).process(x.subarray(0, 100));
          done({gains: out, n: whole.length, nParts: parts.length, expected: m.RationalResampler.outputCount(44111, 44100, 16000),
                maxDiff, passthrough: pass.length});
        }).catch((e) => done({error: String(e)}));
    """)
    assert "error" not in res, res
    assert res["n"] == res["nParts"] == res["expected"] == -(-44111 * 160 // 441)
    assert res["maxDiff"] < 1e-6
    assert res["passthrough"] == 100
    for rate, gains in res["gains"].items():
        for f, db in gains.items():
            f = int(f)
            if f <= 7000:
                assert abs(db) < 0.1, (rate, f, db)      # pass band: flat
            elif f >= 8000:
                assert db < -70, (rate, f, db)           # stop band: no aliasing into 0-8 kHz


def test_live_captions_from_the_microphone(page, server, speech, artifacts):
    show_tab(page, "live")
    page.find_element("id", "live-start").click()
    wait_for(page, "document.getElementById('live-state').dataset.state === 'streaming'", 20, "streaming")
    # Let the whole WAV play (the fake device then sends silence), then stop.
    wait_for(page, f"(() => {{ const d = document.getElementById('live-stats').dataset;"
                   f" return d.rate > 0 && d.captured / d.rate >= {speech.live_seconds + 0.3}; }})()",
             speech.live_seconds + 30, "the WAV to play")
    shot(page, artifacts, "live-streaming-1280")
    page.find_element("id", "live-stop").click()
    wait_for(page, "document.getElementById('live-state').dataset.state === 'ended'", 60, "END from the server")
    assert page.find_element("id", "live-state").text == "ended (NORMAL)"
    finals = [e.text for e in page.find_elements("css selector", "#live-final .text")]
    text = " ".join(finals)
    assert wer(speech.live_text, text) <= MAX_WER, (speech.live_text, finals)
    assert len(finals) >= 2  # two sentences, cut by the server's VAD
    stats = page.execute_script("return {...document.getElementById('live-stats').dataset}")
    frames, nbytes, captured, rate = (int(stats["frames"]), int(stats["bytes"]), int(stats["captured"]),
                                      int(stats["rate"]))
    # Every captured sample was sent: 16 kHz output count of the decimator, 100 ms frames.
    expected = -(-captured * 16000 // rate)  # ceil: the decimator's output count
    assert nbytes == 2 * expected
    assert frames == -(-expected // 1600)
    sent_s = nbytes / 32000
    assert abs(sent_s - captured / rate) < 0.001
    assert speech.live_seconds <= sent_s <= speech.live_seconds + 3.0
    # The server received exactly that audio (billable seconds of the continue-stream call).
    usage = {u.interface: u for u in server.app[METRICS].usage(PROJECT)}
    assert abs(usage["rasr.continue-stream"].audio_ms - 1000 * sent_s) < 1.0
    shot(page, artifacts, "live-ended-1280")


def test_live_sentence_mode_shows_voice_events(page, speech, artifacts):
    # sentence-stream: VOICE_START, one final, VOICE_END; the page then ends the session itself.
    show_tab(page, "live")
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "live-mode")).select_by_value("sentence-stream")
    try:
        page.find_element("id", "live-start").click()
        wait_for(page, "document.getElementById('live-state').dataset.state === 'ended'"
                       " || document.getElementById('live-error').textContent", speech.live_seconds + 30,
                 "the sentence to end")
        assert page.find_element("id", "live-error").text == ""
        events = [e.text.split()[0] for e in page.find_elements("css selector", "#live-events li")]
        assert events == ["VOICE_START", "VOICE_END"]
        finals = [e.text for e in page.find_elements("css selector", "#live-final .text")]
        assert len(finals) == 1 and wer(speech.short_text, finals[0]) <= MAX_WER, finals
        shot(page, artifacts, "live-sentence-1280")
    finally:
        Select(page.find_element("id", "live-mode")).select_by_value("continue-stream")


def test_short_audio_file(page, speech, artifacts):
    show_tab(page, "short")
    page.find_element("id", "short-file").send_keys(str(speech.short_path))
    page.find_element("id", "short-send").click()
    wait_for(page, "['done', 'failed'].includes(document.getElementById('short-state').dataset.state)", 60,
             "the short-audio answer")
    assert page.find_element("id", "short-error").text == ""
    assert wer(speech.short_text, page.find_element("id", "short-text").text) <= MAX_WER
    rows = page.find_elements("css selector", "#short-words-table tbody tr")
    assert len(rows) >= 4
    shot(page, artifacts, "short-1280")


def test_short_audio_recording(page, speech):
    # Record from the (fake) microphone, which plays the WAV from its start again.
    show_tab(page, "short")
    page.find_element("id", "short-record").click()
    wait_for(page, "(() => { const t = document.getElementById('short-state').textContent;"
                   " return t.startsWith('recording ') && parseFloat(t.split(' ')[1]) >= 4.0; })()", 30,
             "4 s of recording")
    page.find_element("id", "short-record-stop").click()
    wait_for(page, "['done', 'failed'].includes(document.getElementById('short-state').dataset.state)", 60,
             "the short-audio answer")
    assert page.find_element("id", "short-error").text == ""
    assert wer(speech.short_text, page.find_element("id", "short-text").text) <= MAX_WER


def test_file_job_reaches_finished(page, speech, artifacts, downloads):
    show_tab(page, "jobs")
    page.find_element("id", "jobs-file").send_keys(str(speech.live16_path))
    page.find_element("id", "jobs-submit").click()
    wait_for(page, "document.querySelector('#jobs-table tr[data-status=FINISHED], #jobs-table tr[data-status=ERROR]')"
                   " || document.getElementById('jobs-error').textContent", 90, "the job to end")
    assert page.find_elements("css selector", "#jobs-table tr[data-status=FINISHED]"), \
        page.find_element("id", "jobs-error").text
    wait_for(page, "!document.getElementById('jobs-detail').hidden", 5, "the segment table")
    segs = [r.find_elements("tag name", "td")[2].text
            for r in page.find_elements("css selector", "#jobs-segments tbody tr")]
    assert len(segs) >= 2
    assert wer(speech.live_text, " ".join(segs)) <= MAX_WER
    shot(page, artifacts, "jobs-1280")
    job_id = page.find_element("id", "jobs-detail-id").text
    for fmt in ("srt", "txt", "json"):
        page.find_element("id", f"jobs-dl-{fmt}").click()
    deadline = time.monotonic() + 10
    files = {f: downloads / f"{job_id}.{f}" for f in ("srt", "txt", "json")}
    while not all(p.is_file() for p in files.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    srt = files["srt"].read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:0") and " --> " in srt and segs[0] in srt
    assert files["txt"].read_text(encoding="utf-8").splitlines() == segs
    assert json.loads(files["json"].read_text(encoding="utf-8"))["status"] == "FINISHED"


def test_tts_plays(page, artifacts):
    show_tab(page, "tts")
    page.find_element("id", "tts-go").click()
    wait_for(page, "['ready', 'failed'].includes(document.getElementById('tts-state').dataset.state)", 60, "TTS")
    assert page.find_element("id", "tts-error").text == ""
    duration = page.execute_script("return document.getElementById('tts-audio').duration")
    assert duration > 1.0  # two sentences of speech
    assert page.find_element("id", "tts-download").get_attribute("href").startswith("blob:")
    shot(page, artifacts, "tts-1280")


def test_hot_words_create_pick_delete(page, artifacts):
    show_tab(page, "hotwords")
    page.find_element("id", "hw-name").send_keys("console_words")
    page.find_element("id", "hw-contents").send_keys("dashwood\nprudently")
    page.find_element("id", "hw-save").click()
    wait_for(page, "document.querySelector('#hw-table tbody tr')", 10, "the new vocabulary")
    page.find_element("css selector", "#hw-table tbody tr input[type=radio]").click()
    assert page.find_element("id", "who-vocab").text == "console_words"
    page.find_element("css selector", "#hw-table tbody tr .hw-edit").click()
    wait_for(page, "document.getElementById('hw-id').value", 10, "the vocabulary in the form")
    assert page.find_element("id", "hw-contents").get_attribute("value").split() == ["dashwood", "prudently"]
    page.find_element("id", "hw-description").send_keys("names from the book")
    page.find_element("id", "hw-save").click()
    wait_for(page, "document.getElementById('hw-state').dataset.state === 'saved'", 10, "the update")
    wait_for(page, "document.querySelector('#hw-table tbody tr td:nth-child(4)').textContent"
                   " === 'names from the book'", 10, "the new description")
    shot(page, artifacts, "hotwords-1280")
    page.find_element("css selector", "#hw-table tbody tr .hw-delete").click()
    wait_for(page, "!document.querySelector('#hw-table tbody tr')", 10, "the deletion")
    assert page.find_element("id", "who-vocab").text == "none"


def test_monitor_shows_the_calls(page, server, artifacts):
    page.get(server.url + "/console/monitor")
    wait_for(page, "document.body.dataset.loaded === '1'", 15, "the monitor data")
    rows = {r.get_attribute("data-interface"): r for r in page.find_elements("css selector", "#mon-interfaces tbody tr")}
    metrics = server.app[METRICS]
    for iface in ("rasr.continue-stream", "sentence-transcription", "long-audio-transcription-post",
                  "long-audio-transcription-get", "text-to-speech-customization", "vocabulary-create",
                  "vocabulary-delete"):
        ok = metrics.calls(iface)[0]
        if ok == 0:
            continue  # that test did not run in this session
        assert iface in rows, sorted(rows)
        assert int(rows[iface].get_attribute("data-ok")) == ok
    assert "console.login" in rows and int(rows["console.login"].get_attribute("data-c4xx")) >= 1
    usage = page.find_element("id", "mon-usage").text
    assert PROJECT in usage
    shot(page, artifacts, "monitor-1280")
    page.set_window_size(*PHONE)
    try:
        shot(page, artifacts, "monitor-phone")
        page.get(server.url + "/console/")
        wait_for(page, "document.body.dataset.session === 'in'", 10, "the console")
        for tab in TABS:
            show_tab(page, tab)
            shot(page, artifacts, f"{tab}-phone")
        # Nothing overflows the phone's width.
        width = page.execute_script("return document.documentElement.scrollWidth")
        assert width <= PHONE[0] + 1
    finally:
        page.set_window_size(*DESKTOP)
    print(f"console screenshots: {artifacts}")


def test_no_script_or_policy_errors(page):
    # Whatever ran above: no uncaught exception and no Content-Security-Policy refusal.
    bad = [e["message"] for e in page.get_log("browser")
           if any(k in e["message"] for k in ("Uncaught", "Content Security Policy", "Refused to"))]
    assert bad == []
