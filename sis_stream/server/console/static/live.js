// Live captions: microphone -> 16 kHz PCM frames of 100 ms -> the real RASR websocket
// (continue-stream or sentence-stream) with the START config chosen on the page.
import { $, MicCapture, clock, projectPath, setStatus, showError, state, wsUrl } from "./api.js";

// Frames captured before the server's START answer wait here (bounded; overflow policy
// "error": the session stops with a message rather than dropping audio).
const MAX_PENDING_FRAMES = 600;
const END_TIMEOUT_MS = 120000;

let session = null;

function configFromForm(mode) {
  const cfg = {
    audio_format: "pcm16k16bit",
    property: $("live-property").value,
    add_punc: $("live-punc").checked ? "yes" : "no",
    interim_results: $("live-interim").checked ? "yes" : "no",
    vad_head: Number($("live-vad-head").value),
    vad_tail: Number($("live-vad-tail").value),
    max_seconds: Number($("live-max-seconds").value),
  };
  if (state.vocabulary) cfg.vocabulary_id = state.vocabulary.vocabulary_id;
  return cfg;
}

function updateStats(s) {
  const el = $("live-stats");
  el.dataset.frames = String(s.frames);
  el.dataset.bytes = String(s.bytes);
  el.dataset.captured = String(s.mic ? s.mic.captured : 0);
  el.dataset.rate = String(s.mic ? s.mic.rate : 0);
  el.textContent = `${s.frames} frames · ${(s.bytes / 32000).toFixed(1)} s sent` +
    (s.mic && s.mic.rate ? ` · microphone ${s.mic.rate} Hz -> 16000 Hz` : "");
}

function addEvent(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("live-events").append(li);
}

function onResult(msg) {
  for (const seg of msg.segments || []) {
    const text = (seg.result && seg.result.text) || "";
    if (seg.is_final) {
      if (text) {
        const li = document.createElement("li");
        const ts = document.createElement("span");
        ts.className = "ts";
        ts.textContent = `${clock(seg.start_time)}–${clock(seg.end_time)}`;
        const tx = document.createElement("span");
        tx.className = "text";
        tx.textContent = text;
        li.append(ts, " ", tx);
        $("live-final").append(li);
      }
      $("live-interim-text").textContent = "";
    } else {
      $("live-interim-text").textContent = text;
    }
  }
}

function send(s, frame) {
  s.ws.send(frame);
  s.frames += 1;
  s.bytes += frame.byteLength;
  updateStats(s);
}

async function start() {
  showError($("live-error"), null);
  $("live-final").textContent = "";
  $("live-events").textContent = "";
  $("live-interim-text").textContent = "";
  const mode = $("live-mode").value;
  const s = { mode, frames: 0, bytes: 0, pending: [], started: false, ended: false, mic: null, ws: null };
  session = s;
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  setStatus($("live-state"), "connecting");
  s.endPromise = new Promise((resolve) => { s.resolveEnd = resolve; });
  try {
    s.ws = new WebSocket(wsUrl(projectPath(`/rasr/${mode}`)));
    s.ws.binaryType = "arraybuffer";
    s.ws.onmessage = (e) => onMessage(s, e);
    s.ws.onclose = (e) => {
      if (!s.ended) {
        s.ended = true;
        showError($("live-error"), new Error(`the connection closed (code ${e.code})` +
          (e.code === 1006 ? ": refused at the upgrade (log in again?)" : "")));
        setStatus($("live-state"), "closed");
        stopMic(s);
      }
      s.resolveEnd(null);
    };
    await new Promise((resolve, reject) => {
      s.ws.onopen = resolve;
      s.ws.onerror = () => {
        // A refused upgrade (an ended session, say): let the page check the login.
        document.dispatchEvent(new CustomEvent("console-unauthorized"));
        reject(new Error("the websocket could not connect (refused or unreachable)"));
      };
    });
    s.ws.send(JSON.stringify({ command: "START", config: configFromForm(mode) }));
    s.mic = new MicCapture((frame) => {
      if (s.ended) return;
      if (s.started) {
        send(s, frame);
      } else if (s.pending.length >= MAX_PENDING_FRAMES) {
        fail(s, new Error(`no START answer after ${MAX_PENDING_FRAMES / 10} s of audio; stopped`));
      } else {
        s.pending.push(frame);
      }
    });
    await s.mic.start();
    updateStats(s);
    if (!s.ended) setStatus($("live-state"), s.started ? "streaming" : "connecting");
  } catch (err) {
    fail(s, err);
  }
}

function onMessage(s, e) {
  if (typeof e.data !== "string") return;
  const msg = JSON.parse(e.data);
  switch (msg.resp_type) {
    case "START":
      s.started = true;
      for (const f of s.pending.splice(0)) send(s, f);
      setStatus($("live-state"), "streaming");
      break;
    case "RESULT":
      onResult(msg);
      break;
    case "EVENT":
      addEvent(`${msg.event} at ${clock(msg.timestamp || 0)}`);
      if (s.mode === "sentence-stream" && (msg.event === "VOICE_END" || msg.event === "EXCEEDED_SILENCE")) {
        stop();
      }
      break;
    case "ERROR":
    case "FATAL_ERROR":
      showError($("live-error"), new Error(`${msg.resp_type} ${msg.error_code}: ${msg.error_msg}`));
      break;
    case "END":
      s.ended = true;
      setStatus($("live-state"), "ended", `ended (${msg.reason})`);
      s.resolveEnd(msg);
      stopMic(s);
      s.ws.close(1000);
      break;
    default:
      break;
  }
}

async function stopMic(s) {
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  if (s.mic && !s.micStopped) {
    s.micStopped = true;
    try { await s.mic.stop(); } catch (err) { showError($("live-error"), err); }
    updateStats(s);
  }
}

function fail(s, err) {
  showError($("live-error"), err);
  s.ended = true;
  setStatus($("live-state"), "failed");
  stopMic(s);
  if (s.ws && s.ws.readyState <= 1) s.ws.close(1000);
}

async function stop() {
  const s = session;
  if (!s || s.ended || s.stopping) return;
  s.stopping = true;
  $("live-stop").disabled = true;
  setStatus($("live-state"), "ending");
  await stopMic(s);          // the last partial frame is sent before END
  if (s.ended) return;
  if (!s.started) {
    // START was never answered: nothing to end.
    fail(s, new Error("the server did not answer START"));
    return;
  }
  s.ws.send(JSON.stringify({ command: "END", cancel: false }));
  const timer = setTimeout(() => fail(s, new Error(`no END from the server within ${END_TIMEOUT_MS / 1000} s`)),
    END_TIMEOUT_MS);
  await s.endPromise;
  clearTimeout(timer);
}

export function initLive() {
  $("live-start").addEventListener("click", start);
  $("live-stop").addEventListener("click", stop);
}
