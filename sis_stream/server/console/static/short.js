// Short audio: a file (anything the server decodes) or a recording of up to 60 s ->
// POST /v1/{project_id}/asr/short-audio -> text with word timings.
import { $, MicCapture, api, bytesToBase64, pcmToWav, projectPath, setStatus, showError, state } from "./api.js";

const MAX_RECORD_SECONDS = 60;
let recording = null;

// WAV header -> sample rate (or 0 if this is not a RIFF/WAVE file).
function wavRate(bytes) {
  if (bytes.length < 28) return 0;
  const tag = String.fromCharCode(...bytes.subarray(0, 4)) + String.fromCharCode(...bytes.subarray(8, 12));
  if (tag !== "RIFFWAVE") return 0;
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(24, true);
}

function formatFor(name, bytes) {
  const rate = wavRate(bytes);
  if (rate) return { audio_format: "wav", rate };
  const ext = (name.match(/\.([a-z0-9]+)$/i) || [])[1];
  const known = { mp3: "mp3", aac: "aac", amr: "amr", m4a: "auto", ogg: "auto", opus: "auto", wma: "auto" };
  return { audio_format: (ext && known[ext.toLowerCase()]) || "auto", rate: 0 };
}

async function recognise(bytes, audioFormat, rate) {
  const chosen = $("short-property").value;
  const property = chosen || (rate === 8000 ? "english_8k_common" : "english_16k_common");
  const config = {
    audio_format: audioFormat, property,
    add_punc: $("short-punc").checked ? "yes" : "no",
    need_word_info: $("short-words").checked ? "yes" : "no",
  };
  if (state.vocabulary) config.vocabulary_id = state.vocabulary.vocabulary_id;
  setStatus($("short-state"), "sending");
  const body = await api("POST", projectPath("/asr/short-audio"), { data: bytesToBase64(bytes), config });
  const res = body.result || {};
  $("short-text").textContent = res.text || "(no speech recognised)";
  const tbody = $("short-words-table").querySelector("tbody");
  tbody.textContent = "";
  for (const w of res.word_info || []) {
    const tr = document.createElement("tr");
    for (const v of [w.word, w.start_time, w.end_time]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    tbody.append(tr);
  }
  $("short-words-table").hidden = !(res.word_info && res.word_info.length);
  setStatus($("short-state"), "done", `done (score ${Number(res.score || 0).toFixed(2)})`);
}

async function sendFile() {
  showError($("short-error"), null);
  const f = $("short-file").files[0];
  if (!f) {
    showError($("short-error"), new Error("choose an audio file first"));
    return;
  }
  try {
    const bytes = new Uint8Array(await f.arrayBuffer());
    const { audio_format, rate } = formatFor(f.name, bytes);
    await recognise(bytes, audio_format, rate);
  } catch (err) {
    setStatus($("short-state"), "failed");
    showError($("short-error"), err);
  }
}

async function record() {
  showError($("short-error"), null);
  const chunks = [];
  let samples = 0;
  const mic = new MicCapture((frame) => {
    if (samples >= MAX_RECORD_SECONDS * 16000) return;   // the cap: later audio is not kept
    chunks.push(frame);
    samples += frame.length;
    setStatus($("short-state"), "recording", `recording ${(samples / 16000).toFixed(1)} s`);
    if (samples >= MAX_RECORD_SECONDS * 16000) stopRecording();
  });
  mic.chunks = chunks;
  recording = mic;
  try {
    await mic.start();
    $("short-record").disabled = true;
    $("short-record-stop").disabled = false;
    setStatus($("short-state"), "recording");
  } catch (err) {
    recording = null;
    showError($("short-error"), err);
    return;
  }
}

async function stopRecording() {
  const mic = recording;
  if (!mic) return;
  recording = null;
  $("short-record").disabled = false;
  $("short-record-stop").disabled = true;
  try {
    await mic.stop();
    const pcm = new Int16Array(mic.chunks.reduce((n, c) => n + c.length, 0));
    let pos = 0;
    for (const c of mic.chunks) { pcm.set(c, pos); pos += c.length; }
    await recognise(new Uint8Array(pcmToWav(pcm.subarray(0, MAX_RECORD_SECONDS * 16000), 16000)), "wav", 16000);
  } catch (err) {
    setStatus($("short-state"), "failed");
    showError($("short-error"), err);
  }
}

export function initShort() {
  $("short-send").addEventListener("click", sendFile);
  $("short-record").addEventListener("click", record);
  $("short-record-stop").addEventListener("click", stopRecording);
}
