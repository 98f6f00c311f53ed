// File jobs: upload -> POST /v1/{project_id}/asr/transcriber/jobs -> poll GET .../jobs/{id}
// until FINISHED or ERROR -> segment table, TXT / SRT / JSON download.
import { $, api, clock, download, projectPath, setStatus, showError, state } from "./api.js";

const POLL_MS = 1000;
const MAX_JOBS_LISTED = 50;     // older rows leave the list (drop_oldest); the jobs stay on the server
const jobs = new Map();          // job_id -> {id, file, status, body}
let shown = null;
// The job list survives a reload of the tab (ids and file names only, per project).
const STORE_KEY = "sis-console-jobs";
let restored = false;

function persist() {
  const rows = [...jobs.values()].map((j) => ({ id: j.id, file: j.file, project: j.project }));
  try { sessionStorage.setItem(STORE_KEY, JSON.stringify(rows)); } catch { /* storage full or disabled */ }
}

function restore() {
  if (restored || !state.projectId) return;
  restored = true;
  let rows = [];
  try { rows = JSON.parse(sessionStorage.getItem(STORE_KEY) || "[]"); } catch { rows = []; }
  for (const r of rows) {
    if (r.project !== state.projectId || jobs.has(r.id)) continue;
    const j = { id: r.id, file: r.file, project: r.project, status: "WAITING", body: null };
    jobs.set(j.id, j);
    poll(j, false);
  }
  renderList();
}

function srtTime(ms) {
  const h = Math.floor(ms / 3600000), m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000), r = ms % 1000;
  const p = (v, n) => String(v).padStart(n, "0");
  return `${p(h, 2)}:${p(m, 2)}:${p(s, 2)},${p(r, 3)}`;
}

function renderList() {
  const tbody = $("jobs-table").querySelector("tbody");
  tbody.textContent = "";
  for (const j of [...jobs.values()].reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = j.id;
    tr.dataset.status = j.status;
    const dur = j.body && j.body.audio_duration != null ? clock(j.body.audio_duration) : "";
    for (const v of [j.id.slice(0, 8), j.file, j.status, dur]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    const td = document.createElement("td");
    if (j.status === "FINISHED" || j.status === "ERROR") {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = j.status === "FINISHED" ? "Segments" : "Error";
      b.addEventListener("click", () => showJob(j.id));
      td.append(b);
    }
    tr.append(td);
    tbody.append(tr);
  }
}

function showJob(id) {
  const j = jobs.get(id);
  shown = j;
  $("jobs-detail").hidden = false;
  $("jobs-detail-id").textContent = id;
  const tbody = $("jobs-segments").querySelector("tbody");
  tbody.textContent = "";
  if (j.status === "ERROR") {
    showError($("jobs-error"), new Error(`${j.body.error_code}: ${j.body.error_msg}`));
    return;
  }
  for (const seg of j.body.segments || []) {
    const tr = document.createElement("tr");
    for (const v of [clock(seg.start_time), clock(seg.end_time), (seg.result && seg.result.text) || ""]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    tbody.append(tr);
  }
}

async function poll(j, show = true) {
  while (j.status !== "FINISHED" && j.status !== "ERROR") {
    await new Promise((r) => setTimeout(r, POLL_MS));
    try {
      j.body = await api("GET", projectPath(`/asr/transcriber/jobs/${encodeURIComponent(j.id)}`));
      j.status = j.body.status;
    } catch (err) {
      j.status = "ERROR";
      j.body = { error_code: err.code || "", error_msg: err.message };
    }
    renderList();
  }
  setStatus($("jobs-state"), j.status.toLowerCase(), `${j.id.slice(0, 8)}: ${j.status}`);
  if (show) showJob(j.id);
}

async function submit() {
  showError($("jobs-error"), null);
  const f = $("jobs-file").files[0];
  if (!f) {
    showError($("jobs-error"), new Error("choose an audio file first"));
    return;
  }
  try {
    setStatus($("jobs-state"), "uploading");
    const up = await api("POST", "/console/api/uploads", await f.arrayBuffer(),
      { headers: { "Content-Type": "application/octet-stream", "X-Upload-Name": f.name.slice(-64) } });
    const config = {
      audio_format: "auto", property: $("jobs-property").value,
      add_punc: $("jobs-punc").checked ? "yes" : "no",
      need_word_info: $("jobs-words").checked ? "yes" : "no",
    };
    if (state.vocabulary) config.vocabulary_id = state.vocabulary.vocabulary_id;
    setStatus($("jobs-state"), "submitting");
    const res = await api("POST", projectPath("/asr/transcriber/jobs"), { data_url: up.data_url, config });
    const j = { id: res.job_id, file: f.name, project: state.projectId, status: "WAITING", body: null };
    jobs.set(j.id, j);
    while (jobs.size > MAX_JOBS_LISTED) jobs.delete(jobs.keys().next().value);
    persist();
    renderList();
    setStatus($("jobs-state"), "waiting", `${j.id.slice(0, 8)}: WAITING`);
    poll(j);
  } catch (err) {
    setStatus($("jobs-state"), "failed");
    showError($("jobs-error"), err);
  }
}

function segmentsOf() {
  return (shown && shown.body && shown.body.segments) || [];
}

export function initJobs() {
  state.listeners.add(restore);
  $("jobs-submit").addEventListener("click", submit);
  $("jobs-dl-txt").addEventListener("click", () => download(`${shown.id}.txt`,
    segmentsOf().map((s) => (s.result && s.result.text) || "").join("\n") + "\n", "text/plain"));
  $("jobs-dl-srt").addEventListener("click", () => download(`${shown.id}.srt`,
    segmentsOf().map((s, i) => `${i + 1}\n${srtTime(s.start_time)} --> ${srtTime(s.end_time)}\n` +
      `${(s.result && s.result.text) || ""}\n`).join("\n"), "application/x-subrip"));
  $("jobs-dl-json").addEventListener("click", () => download(`${shown.id}.json`,
    JSON.stringify(shown.body, null, 2), "application/json"));
}
