// Shared helpers of the console pages: the API wrapper, the session, base64, downloads, and the
// microphone capture (AudioWorklet -> 16 kHz PCM frames).

export const state = {
  projectId: null,
  user: null,
  vocabulary: null,        // {vocabulary_id, name} picked on the hot-words tab, or null
  properties: [],          // property names the server routes to an engine
  listeners: new Set(),
};

export function notify() {
  for (const f of state.listeners) f(state);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(code ? `${code}: ${message}` : message);
    this.status = status;
    this.code = code;
  }
}

// One JSON request to this server. The session cookie goes along (same origin); the header
// X-Sis-Console marks the request as the console's (CSRF check on the server).
export async function api(method, path, body, { raw = false, headers = {} } = {}) {
  const h = { "X-Sis-Console": "1", Accept: "application/json", ...headers };
  let payload;
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer) {
      payload = body;
    } else {
      h["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
  }
  const resp = await fetch(path, { method, headers: h, body: payload, credentials: "same-origin" });
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const code = data && data.error_code;
    const msg = (data && data.error_msg) || `${resp.status} ${resp.statusText}`;
    const err = new ApiError(resp.status, code, msg);
    if (resp.status === 401 && !raw) document.dispatchEvent(new CustomEvent("console-unauthorized"));
    throw err;
  }
  return data;
}

export function projectPath(rest) {
  return `/v1/${encodeURIComponent(state.projectId)}${rest}`;
}

export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export function $(id) {
  return document.getElementById(id);
}

export function setStatus(el, value, text) {
  el.dataset.state = value;
  el.textContent = text || value;
}

export function showError(el, err) {
  el.textContent = err ? String(err.message || err) : "";
}

export function bytesToBase64(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
}

export function base64ToBytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function download(name, content, type) {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ms -> "m:ss.cc"
export function clock(ms) {
  const s = Math.max(0, ms) / 1000;
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(2).padStart(5, "0")}`;
}

// 16-bit mono PCM -> a WAV file (ArrayBuffer).
export function pcmToWav(int16, rate) {
  const buf = new ArrayBuffer(44 + int16.length * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + int16.length * 2, true); str(8, "WAVE");
  str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, int16.length * 2, true);
  new Int16Array(buf, 44).set(int16);
  return buf;
}

// Microphone -> AudioWorklet -> 16 kHz 16-bit PCM frames of 100 ms, in order.
// onFrame(Int16Array) for every frame; stop() flushes the last partial frame and resolves with
// {captured, produced, rate} once the worklet has sent everything.
export class MicCapture {
  constructor(onFrame, { frameSamples = 1600 } = {}) {
    this.onFrame = onFrame;
    this.frameSamples = frameSamples;
    this.captured = 0;
    this.rate = 0;
    this._flushed = null;
  }

  async start() {
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error("this browser has no microphone capture with AudioWorklet (it needs https or localhost)");
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    // The device's own rate: the worklet low-passes and decimates to 16 kHz itself (browsers
    // differ in whether a 16 kHz context may take a microphone at another rate).
    this.ctx = new AudioContext();
    this.rate = this.ctx.sampleRate;
    await this.ctx.audioWorklet.addModule("/console/static/capture-worklet.js");
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "pcm16k-capture", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: { outRate: 16000, frameSamples: this.frameSamples },
    });
    let resolveFlushed;
    this._flushed = new Promise((r) => { resolveFlushed = r; });
    this.node.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "frame") {
        this.captured = m.captured;
        this.onFrame(new Int16Array(m.pcm));
      } else if (m.type === "flushed") {
        this.captured = m.captured;
        resolveFlushed({ captured: m.captured, produced: m.produced, rate: this.rate });
      }
    };
    // A silent sink keeps the graph pulling the worklet.
    this.mute = this.ctx.createGain();
    this.mute.gain.value = 0;
    this.source.connect(this.node).connect(this.mute).connect(this.ctx.destination);
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  async stop() {
    if (!this.node) return { captured: 0, produced: 0, rate: this.rate };
    this.source.disconnect();
    for (const t of this.stream.getTracks()) t.stop();
    this.node.port.postMessage({ type: "flush" });
    const timeout = new Promise((_, rej) => setTimeout(() => rej(new Error("the audio worklet did not flush within 5 s")), 5000));
    try {
      return await Promise.race([this._flushed, timeout]);
    } finally {
      this.node.disconnect();
      await this.ctx.close();
      this.node = null;
    }
  }
}
