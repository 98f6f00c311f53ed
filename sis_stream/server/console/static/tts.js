// TTS: text, voice, speed, pitch, volume -> POST /v1/{project_id}/tts -> <audio> and download.
import { $, api, base64ToBytes, projectPath, setStatus, showError } from "./api.js";

let lastUrl = null;

async function synthesise() {
  showError($("tts-error"), null);
  const text = $("tts-text").value.trim();
  if (!text) {
    showError($("tts-error"), new Error("type some text first"));
    return;
  }
  const config = {
    audio_format: "wav", sample_rate: $("tts-rate").value, property: $("tts-property").value,
    speed: Number($("tts-speed").value), pitch: Number($("tts-pitch").value), volume: Number($("tts-volume").value),
  };
  try {
    setStatus($("tts-state"), "synthesising");
    const body = await api("POST", projectPath("/tts"), { text, config });
    const wav = base64ToBytes(body.result.data);
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = URL.createObjectURL(new Blob([wav], { type: "audio/wav" }));
    const audio = $("tts-audio");
    audio.src = lastUrl;
    const link = $("tts-download");
    link.href = lastUrl;
    link.hidden = false;
    await new Promise((resolve, reject) => {
      audio.onloadedmetadata = resolve;
      audio.onerror = () => reject(new Error("the browser could not decode the synthesised audio"));
    });
    setStatus($("tts-state"), "ready", `ready (${audio.duration.toFixed(2)} s)`);
  } catch (err) {
    setStatus($("tts-state"), "failed");
    showError($("tts-error"), err);
  }
}

export function initTts() {
  $("tts-go").addEventListener("click", synthesise);
  for (const k of ["speed", "pitch", "volume"]) {
    $(`tts-${k}`).addEventListener("input", () => { $(`tts-${k}-v`).textContent = $(`tts-${k}`).value; });
  }
}
