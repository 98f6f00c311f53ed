// Hot words: list, create, edit, delete vocabularies (/v1/{project_id}/asr/vocabularies) and
// pick one for the other tabs (its id goes into their configs as vocabulary_id).
import { $, api, notify, projectPath, setStatus, showError, state } from "./api.js";

function resetForm() {
  $("hw-id").value = "";
  $("hw-name").value = "";
  $("hw-description").value = "";
  $("hw-contents").value = "";
  $("hw-form-title").textContent = "New vocabulary";
}

async function edit(id) {
  try {
    const v = await api("GET", projectPath(`/asr/vocabularies/${encodeURIComponent(id)}`));
    $("hw-id").value = v.vocabulary_id;
    $("hw-name").value = v.name;
    $("hw-language").value = v.language;
    $("hw-description").value = v.description || "";
    $("hw-contents").value = (v.contents || []).join("\n");
    $("hw-form-title").textContent = `Edit ${v.name}`;
  } catch (err) {
    showError($("hw-error"), err);
  }
}

async function remove(id, name) {
  try {
    await api("DELETE", projectPath(`/asr/vocabularies/${encodeURIComponent(id)}`));
    if (state.vocabulary && state.vocabulary.vocabulary_id === id) {
      state.vocabulary = null;
      notify();
    }
    setStatus($("hw-state"), "deleted", `deleted ${name}`);
    await refreshHotwords();
  } catch (err) {
    showError($("hw-error"), err);
  }
}

export async function refreshHotwords() {
  if (!state.projectId) return;
  showError($("hw-error"), null);
  try {
    const body = await api("GET", projectPath("/asr/vocabularies?offset=0&limit=100"));
    const tbody = $("hw-table").querySelector("tbody");
    tbody.textContent = "";
    for (const v of body.result || []) {
      const tr = document.createElement("tr");
      tr.dataset.vocabularyId = v.vocabulary_id;
      const use = document.createElement("input");
      use.type = "radio";
      use.name = "hw-use";
      use.checked = !!(state.vocabulary && state.vocabulary.vocabulary_id === v.vocabulary_id);
      use.addEventListener("change", () => {
        state.vocabulary = { vocabulary_id: v.vocabulary_id, name: v.name };
        notify();
      });
      const cells = [use, v.name, v.language, v.description || ""];
      for (const c of cells) {
        const td = document.createElement("td");
        td.append(c);
        tr.append(td);
      }
      const td = document.createElement("td");
      const e = document.createElement("button");
      e.type = "button"; e.textContent = "Edit"; e.className = "hw-edit";
      e.addEventListener("click", () => edit(v.vocabulary_id));
      const d = document.createElement("button");
      d.type = "button"; d.textContent = "Delete"; d.className = "hw-delete";
      d.addEventListener("click", () => remove(v.vocabulary_id, v.name));
      td.append(e, " ", d);
      tr.append(td);
      tbody.append(tr);
    }
    $("hw-table").dataset.count = String(body.count || 0);
  } catch (err) {
    showError($("hw-error"), err);
  }
}

async function save() {
  showError($("hw-error"), null);
  const id = $("hw-id").value;
  const body = {
    name: $("hw-name").value.trim(), language: $("hw-language").value,
    description: $("hw-description").value.trim(),
    contents: $("hw-contents").value.split(/\n/).map((w) => w.trim()).filter(Boolean),
  };
  try {
    if (id) {
      await api("PUT", projectPath(`/asr/vocabularies/${encodeURIComponent(id)}`), body);
      setStatus($("hw-state"), "saved", `saved ${body.name}`);
    } else {
      await api("POST", projectPath("/asr/vocabularies"), body);
      setStatus($("hw-state"), "created", `created ${body.name}`);
    }
    resetForm();
    await refreshHotwords();
  } catch (err) {
    setStatus($("hw-state"), "failed");
    showError($("hw-error"), err);
  }
}

export function initHotwords() {
  $("hw-save").addEventListener("click", save);
  $("hw-cancel").addEventListener("click", resetForm);
  $("hw-refresh").addEventListener("click", refreshHotwords);
  $("hw-none").addEventListener("click", () => {
    state.vocabulary = null;
    for (const r of document.querySelectorAll("input[name=hw-use]")) r.checked = false;
    notify();
  });
}
