// The experience center: login, tabs, and the shared state (project, picked vocabulary).
import { $, api, notify, showError, state } from "./api.js";
import { initLive } from "./live.js";
import { initShort } from "./short.js";
import { initJobs } from "./jobs.js";
import { initTts } from "./tts.js";
import { initHotwords, refreshHotwords } from "./hotwords.js";

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== `tab-${name}`;
  document.body.dataset.tab = name;
  if (name === "hotwords") refreshHotwords();
}

function loggedIn(info) {
  state.projectId = info.project_id;
  state.user = info.user;
  $("login").hidden = true;
  $("who").hidden = false;
  $("who-name").textContent = info.user || "no authentication";
  $("who-project").textContent = info.project_id;
  $("logout").hidden = !info.user;
  document.body.dataset.session = "in";
  showTab(document.body.dataset.tab || "live");
  notify();
}

function loggedOut() {
  state.projectId = null;
  $("who").hidden = true;
  for (const s of document.querySelectorAll("section.tab")) s.hidden = true;
  $("login").hidden = false;
  document.body.dataset.session = "out";
}

async function loadProperties() {
  // The root JSON lists every property and whether an engine serves it.
  try {
    const root = await api("GET", "/", undefined, { raw: true });
    const rows = Array.isArray(root.properties) ? root.properties : [];
    state.properties = rows.filter((r) => r.status !== "unsupported").map((r) => r.property).sort();
  } catch {
    state.properties = [];
  }
  const pick = (re) => {
    const list = state.properties.filter((p) => re.test(p));
    return list.length ? list : ["english_16k_common"];
  };
  const fill = (sel, list) => {
    const keep = sel.querySelector("option[value='']");
    sel.textContent = "";
    if (keep) sel.append(keep);
    for (const p of list) sel.append(new Option(p, p, p === "english_16k_common", p === "english_16k_common"));
  };
  for (const sel of document.querySelectorAll("select.property-16k")) fill(sel, pick(/_16k_/));
  for (const sel of document.querySelectorAll("select.property-any")) fill(sel, pick(/_(8|16)k_/));
  fill($("short-property"), pick(/_(8|16)k_/));
}

async function checkSession() {
  const info = await api("GET", "/console/api/session", undefined, { raw: true });
  if (info.logged_in) loggedIn(info); else loggedOut();
}

function init() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError($("login-error"), null);
    $("login-submit").disabled = true;
    try {
      const info = await api("POST", "/console/api/login", {
        domain: $("login-domain").value.trim(), name: $("login-name").value.trim(), password: $("login-password").value,
      }, { raw: true });
      $("login-password").value = "";
      loggedIn({ ...info, logged_in: true });
    } catch (err) {
      showError($("login-error"), err.status === 401 ? new Error("The user name or password is wrong.") : err);
    } finally {
      $("login-submit").disabled = false;
    }
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/console/api/logout", {}, { raw: true }).catch(() => {});
    loggedOut();
  });
  document.addEventListener("console-unauthorized", () => checkSession());
  state.listeners.add(() => {
    $("who-vocab").textContent = state.vocabulary ? state.vocabulary.name : "none";
  });
  initLive();
  initShort();
  initJobs();
  initTts();
  initHotwords();
  loadProperties().then(checkSession).catch((err) => {
    loggedOut();
    showError($("login-error"), err);
  });
}

init();
