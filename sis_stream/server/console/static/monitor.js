// Service monitoring: polls /console/api/monitor (the server's metrics now plus a ring of samples
// of the last hour) and draws tables and sparklines. Needs nothing but this server.
const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

function sparkline(canvas, values) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 120, h = canvas.clientHeight || 28;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  canvas.dataset.points = String(values.length);
  canvas.dataset.max = String(values.length ? Math.max(...values) : 0);
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  g.strokeStyle = getComputedStyle(canvas).color;
  g.lineWidth = 1.5;
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (w - 2) + 1;
    const y = h - 2 - (v / max) * (h - 4);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
}

function total(row) {
  return row ? row.ok + row.c4xx + row.c5xx : 0;
}

function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  if (v === "inf") return "> 30 s";
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Number(v).toFixed(1)} ms`;
}

// p95 is the upper edge of a histogram bucket: an upper bound.
function fmtP95(v) {
  return v === null || v === undefined || v === "inf" ? fmtMs(v) : `≤ ${fmtMs(v)}`;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text); else td.textContent = String(text);
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

function render(data) {
  const now = data.now;
  const series = [...data.samples, now];
  $("mon-interval").textContent = String(data.interval_s);
  $("mon-sessions").textContent = now.sessions.active;
  $("mon-limit").textContent = now.sessions.limit;
  $("mon-connections").textContent = now.sessions.connections;
  $("mon-queue").textContent = now.engine.queue_depth;
  $("mon-queue-limit").textContent = now.engine.queue_limit;
  $("mon-running").textContent = now.engine.running;
  $("mon-workers").textContent = now.engine.workers;
  $("mon-rejected").textContent = now.engine.rejected;
  $("mon-jobs-waiting").textContent = now.jobs ? now.jobs.waiting : "–";
  $("mon-jobs-running").textContent = now.jobs ? now.jobs.running : "–";
  sparkline($("spark-sessions"), series.map((s) => s.sessions.active));
  sparkline($("spark-queue"), series.map((s) => s.engine.queue_depth));
  sparkline($("spark-jobs"), series.map((s) => (s.jobs ? s.jobs.waiting + s.jobs.running : 0)));

  const tbody = $("mon-interfaces").querySelector("tbody");
  tbody.textContent = "";
  for (const [name, row] of Object.entries(now.interfaces)) {
    const tr = document.createElement("tr");
    tr.dataset.interface = name;
    tr.dataset.ok = String(row.ok);
    tr.dataset.c4xx = String(row.c4xx);
    tr.dataset.c5xx = String(row.c5xx);
    cell(tr, name, "name");
    cell(tr, row.ok, "num");
    cell(tr, row.c4xx, row.c4xx ? "num warn" : "num");
    cell(tr, row.c5xx, row.c5xx ? "num bad" : "num");
    cell(tr, fmtMs(row.avg_ms), "num");
    cell(tr, fmtP95(row.p95_ms), "num");
    const canvas = document.createElement("canvas");
    canvas.className = "spark";
    cell(tr, canvas);
    tbody.append(tr);
    const per = [];
    for (let i = 1; i < series.length; i++) {
      per.push(Math.max(0, total(series[i].interfaces[name]) - total(series[i - 1].interfaces[name])));
    }
    sparkline(canvas, per);
  }
  const ubody = $("mon-usage").querySelector("tbody");
  ubody.textContent = "";
  for (const u of now.usage) {
    const tr = document.createElement("tr");
    for (const v of [u.project_id, u.interface, u.calls, u.audio_s.toFixed(1)]) cell(tr, v);
    ubody.append(tr);
  }
  $("mon-updated").textContent = `updated ${new Date(now.t * 1000).toLocaleTimeString()}`;
  document.body.dataset.loaded = "1";
}

async function poll() {
  try {
    const resp = await fetch("/console/api/monitor", { headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    render(await resp.json());
    $("mon-error").textContent = "";
  } catch (err) {
    $("mon-error").textContent = `monitoring data unavailable: ${err.message}`;
  }
}

poll();
setInterval(poll, POLL_MS);
