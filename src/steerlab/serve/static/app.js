// steerlab playground: plain JS, no build step, talks only to the server that served it.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  models: [], // {id, n_layers|null}
  directions: [], // {name, layers|null, site, method, ...}
  busy: null, // AbortController of the running compare
};

// --- errors and requests ----------------------------------------------------------------------

function showError(msg) {
  $("error-text").textContent = msg;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// The server answers errors as {"error": {"message": ...}} (OpenAI style); FastAPI's own
// validation errors come as {"detail": ...}. Either way the user sees one sentence.
function errorMessage(body, status) {
  if (body && typeof body === "object") {
    if (body.error) {
      return typeof body.error === "string" ? body.error : body.error.message || JSON.stringify(body.error);
    }
    if (body.detail) {
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) {
        return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
      }
      return JSON.stringify(body.detail);
    }
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 500);
  return `HTTP ${status}`;
}

async function readError(resp) {
  const text = await resp.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* plain text */ }
  return new Error(errorMessage(body, resp.status));
}

// A server started with --api-key wants "Authorization: Bearer KEY" on every API call: ask for
// the key once (on the first 401), keep it for this tab only.
const KEY_SLOT = "steerlab-api-key";

async function authFetch(path, opts = {}) {
  const withKey = () => {
    const key = sessionStorage.getItem(KEY_SLOT);
    const headers = { ...(opts.headers || {}) };
    if (key) headers.Authorization = `Bearer ${key}`;
    return fetch(path, { ...opts, headers });
  };
  let resp = await withKey();
  if (resp.status === 401) {
    const key = window.prompt("This server needs an API key (steerlab serve --api-key):");
    if (key) {
      sessionStorage.setItem(KEY_SLOT, key.trim());
      resp = await withKey();
    }
  }
  return resp;
}

async function api(path, opts = {}) {
  const resp = await authFetch(path, opts);
  if (!resp.ok) throw await readError(resp);
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

// --- models and directions --------------------------------------------------------------------

function nLayersOf(entry) {
  const n = entry.n_layers ?? entry.num_layers ?? entry.steerlab?.n_layers ?? entry.info?.n_layers;
  return Number.isInteger(n) && n > 0 ? n : null;
}

async function loadModels() {
  const body = await api("/v1/models");
  const data = Array.isArray(body) ? body : body.data || [];
  state.models = data.map((m) => (typeof m === "string" ? { id: m } : m))
    .map((m) => ({ ...m, n_layers: nLayersOf(m) }));
  const sel = $("model");
  sel.replaceChildren(...state.models.map((m) => new Option(m.id, m.id)));
  onModelChange();
  // Start mid-depth, where directions usually steer best (a direction's own layers win below).
  const m = currentModel();
  if (m && m.n_layers && !currentDirection()?.layers) setLayer(Math.floor(m.n_layers / 2));
  const n = state.models.length;
  $("server-status").textContent = `connected · ${n} model${n === 1 ? "" : "s"}`;
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value) || null;
}

function onModelChange() {
  const m = currentModel();
  const range = $("layer");
  const num = $("layer-num");
  if (m && m.n_layers) {
    range.max = String(m.n_layers - 1);
    range.hidden = false;
    num.hidden = true;
    if (Number(range.value) > m.n_layers - 1) range.value = String(m.n_layers - 1);
    $("model-info").textContent = `${m.n_layers} layers (0–${m.n_layers - 1})`;
  } else {
    // The server did not say how many layers: a plain number input, checked by the server.
    range.hidden = true;
    num.hidden = false;
    $("model-info").textContent = m ? "layer count unknown" : "";
  }
  syncLayerOut();
}

function layerValue() {
  return Number($("layer").hidden ? $("layer-num").value : $("layer").value);
}

function setLayer(l) {
  $("layer").value = String(l);
  $("layer-num").value = String(l);
  syncLayerOut();
}

function syncLayerOut() {
  const l = layerValue();
  $("layer-out").textContent = String(l);
  // A direction holds rows for some layers only: say so before the server refuses.
  const d = currentDirection();
  const warn = $("layer-warn");
  if (d && d.layers && d.layers.length && !d.layers.includes(l)) {
    warn.textContent = `"${d.name}" has no row for layer ${l} (it has ${d.layers.join(", ")}).`;
    warn.hidden = false;
  } else {
    warn.hidden = true;
  }
  renderSpec();
}

// GET /directions gives {"directions": [names]}; objects with layers/site/method (as a list,
// or an "info" map by name) are used when the server sends them.
function normalizeDirections(body) {
  let list = body;
  const info = (body && !Array.isArray(body) && body.info) || {};
  if (body && !Array.isArray(body)) list = body.directions || body.data || [];
  return (list || []).map((d) => {
    if (typeof d === "string") d = { name: d, ...(info[d] || {}) };
    const meta = d.meta || d.metadata || {};
    return {
      ...d,
      name: d.name || d.id,
      layers: d.layers || meta.layers || null,
      site: d.site || meta.site || null,
      method: d.method || meta.method || null,
    };
  });
}

async function loadDirections(select) {
  state.directions = normalizeDirections(await api("/directions"));
  const sel = $("direction");
  const prev = select || sel.value;
  if (state.directions.length === 0) {
    sel.replaceChildren(new Option("(none: upload one)", ""));
  } else {
    sel.replaceChildren(...state.directions.map((d) => new Option(d.name, d.name)));
    if (prev && state.directions.some((d) => d.name === prev)) sel.value = prev;
  }
  onDirectionChange();
}

function currentDirection() {
  return state.directions.find((d) => d.name === $("direction").value) || null;
}

function onDirectionChange() {
  const d = currentDirection();
  const bits = [];
  if (d) {
    if (d.layers && d.layers.length) bits.push(`layers ${d.layers.join(", ")}`);
    if (d.site) bits.push(d.site);
    if (d.method) bits.push(d.method);
    // Start at a layer the direction was fitted for; ticks mark the others.
    if (d.layers && d.layers.length) setLayer(d.layers[Math.floor((d.layers.length - 1) / 2)]);
  }
  $("layer-ticks").replaceChildren(...(d?.layers || []).map((l) => new Option("", String(l))));
  $("direction-info").textContent = bits.join(" · ");
  syncLayerOut();
}

async function uploadDirection(ev) {
  ev.preventDefault();
  clearError();
  const file = $("upload-file").files[0];
  if (!file) { showError("Choose a direction file to upload."); return; }
  const fd = new FormData();
  fd.append("file", file);
  const name = $("upload-name").value.trim();
  if (name) fd.append("name", name);
  const btn = $("upload-btn");
  btn.disabled = true;
  try {
    const out = await api("/directions", { method: "POST", body: fd });
    await loadDirections(out && out.name);
    $("upload-form").reset();
  } catch (e) {
    showError(`Upload failed: ${e.message}`);
  } finally {
    btn.disabled = false;
  }
}

// --- the steerlab request field ---------------------------------------------------------------

function steerSpec() {
  const d = $("direction").value;
  if (!d) return null;
  const layer = layerValue();
  const spec = {};
  if ($("do-steer").checked) spec.steer = [{ direction: d, layer, coeff: Number($("coeff").value) }];
  // Ablation names the row only when the direction has several (a single row is implied).
  const rows = currentDirection()?.layers;
  if ($("do-ablate").checked) {
    spec.ablate = [rows && rows.length === 1 ? { direction: d } : { direction: d, layer }];
  }
  if ($("do-clamp").checked) {
    const value = Number($("clamp-value").value);
    spec.clamp = [rows && rows.length === 1 ? { direction: d, value } : { direction: d, layer, value }];
  }
  return Object.keys(spec).length ? spec : null;
}

function renderSpec() {
  $("coeff-out").textContent = Number($("coeff").value).toString();
  $("clamp-value").disabled = !$("do-clamp").checked;
  $("coeff").disabled = !$("do-steer").checked;
  const spec = steerSpec();
  // What the steered request adds to OpenAI's body: one line per intervention, wrapping at
  // spaces in the narrow panel.
  const item = (o) => `{${Object.entries(o).map(([k, v]) => `"${k}": ${JSON.stringify(v)}`).join(", ")}}`;
  const lines = Object.entries(spec || {})
    .map(([k, v]) => `  "${k}": [\n${v.map((o) => `    ${item(o)}`).join(",\n")}\n  ]`);
  $("spec").textContent = `"steerlab": {${lines.length ? `\n${lines.join(",\n")}\n` : ""}}`;
  const tags = [];
  if (spec?.steer) tags.push(`+${spec.steer[0].coeff}× @ ${spec.steer[0].layer}`);
  if (spec?.ablate) tags.push("ablate");
  if (spec?.clamp) tags.push(`clamp ${spec.clamp[0].value}`);
  $("steered-tag").textContent = tags.length ? `(${tags.join(", ")})` : "(nothing on)";
}

// --- compare: two streamed replies side by side ------------------------------------------------

// Reads an OpenAI-style SSE stream and appends each delta's content to `el`; the token count
// and finish reason go to the reply's footer `meta`.
async function streamChat(body, el, meta, signal) {
  el.textContent = "";
  meta.textContent = "";
  el.setAttribute("aria-busy", "true");
  const info = { tokens: null, finish: null };
  try {
    const resp = await authFetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal,
    });
    if (!resp.ok) throw await readError(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        if (handleEvent(event, el, info)) return;
      }
    }
    if (buf.trim()) handleEvent(buf, el, info);
  } finally {
    el.setAttribute("aria-busy", "false");
    const bits = [];
    if (info.tokens !== null) bits.push(`${info.tokens} token${info.tokens === 1 ? "" : "s"}`);
    if (info.finish) bits.push(info.finish === "length" ? "stopped at max tokens" : `finish: ${info.finish}`);
    if (info.tokens && !el.textContent.trim()) bits.push("no visible text (special or unused tokens)");
    meta.textContent = bits.join(" · ");
  }
}

// One SSE event; returns true at [DONE].
function handleEvent(event, el, info) {
  const data = event.split(/\r?\n/)
    .filter((l) => l.startsWith("data:"))
    .map((l) => l.slice(5).replace(/^ /, ""))
    .join("\n");
  if (!data) return false;
  if (data.trim() === "[DONE]") return true;
  let obj;
  try { obj = JSON.parse(data); } catch (_) { return false; }
  if (obj.error) throw new Error(errorMessage(obj, 500));
  if (obj.usage) info.tokens = obj.usage.completion_tokens;
  for (const ch of obj.choices || []) {
    const piece = ch.delta?.content ?? ch.text ?? "";
    if (piece) el.textContent += piece;
    if (ch.finish_reason) info.finish = ch.finish_reason;
  }
  return false;
}

async function sendCompare(ev) {
  ev?.preventDefault();
  clearError();
  const prompt = $("prompt").value.trim();
  if (!prompt) { showError("Type a prompt first."); return; }
  const model = $("model").value;
  if (!model) { showError("No model is loaded on the server."); return; }
  const spec = steerSpec();
  if (!spec) showError("No intervention is on (or no direction chosen): both replies are unsteered.");
  const base = {
    model,
    messages: [{ role: "user", content: prompt }],
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Number($("max-tokens").value) || 48,
    temperature: Number($("temperature").value) || 0,
  };
  const ctrl = new AbortController();
  state.busy = ctrl;
  $("send").disabled = true;
  $("stop").disabled = false;
  $("chat-status").textContent = "generating…";
  const t0 = performance.now();
  const runs = [
    streamChat(base, $("reply-plain"), $("meta-plain"), ctrl.signal),
    streamChat(spec ? { ...base, steerlab: spec } : base, $("reply-steered"), $("meta-steered"),
      ctrl.signal),
  ];
  const results = await Promise.allSettled(runs);
  const failed = [];
  results.forEach((r, i) => {
    if (r.status === "rejected" && r.reason?.name !== "AbortError") {
      const el = i === 0 ? $("reply-plain") : $("reply-steered");
      const span = document.createElement("span");
      span.className = "err";
      span.textContent = `[error: ${r.reason.message}]`;
      el.append(el.textContent ? " " : "", span);
      failed.push(`${i === 0 ? "unsteered" : "steered"}: ${r.reason.message}`);
    }
  });
  if (failed.length) showError(failed.join("\n"));
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  $("chat-status").textContent = ctrl.signal.aborted ? "stopped" : `done in ${secs} s`;
  $("send").disabled = false;
  $("stop").disabled = true;
  state.busy = null;
}

// --- read: tokens coloured by their projection ---------------------------------------------------

// Diverging scale (ColorBrewer RdBu ends): blue for negative, white at zero, red for positive.
const NEG = [33, 102, 172];
const POS = [178, 24, 43];

function colour(t) {
  const end = t < 0 ? NEG : POS;
  const a = Math.min(1, Math.abs(t));
  const c = end.map((v) => Math.round(255 + (v - 255) * a));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function showToken(tok) {
  return tok.replace(/\n/g, "⏎").replace(/\t/g, "⇥") || "∅";
}

async function readText(ev) {
  ev.preventDefault();
  clearError();
  const text = $("read-text").value;
  const direction = $("direction").value;
  if (!text.trim()) { showError("Type some text to read."); return; }
  if (!direction) { showError("Choose or upload a direction first."); return; }
  const layer = layerValue();
  $("read-btn").disabled = true;
  $("read-status").textContent = "reading…";
  try {
    const out = await api("/read", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, direction, layer, chat: $("read-chat").checked }),
    });
    renderTokens(out.tokens || [], out.projections || []);
    $("read-status").textContent = `${(out.tokens || []).length} tokens · layer ${layer}`;
  } catch (e) {
    $("read-status").textContent = "";
    showError(`Read failed: ${e.message}`);
  } finally {
    $("read-btn").disabled = false;
  }
}

function renderTokens(tokens, projections) {
  const vals = projections.map(Number);
  const scale = Math.max(1e-12, ...vals.map((v) => Math.abs(v)));
  const box = $("read-tokens");
  box.replaceChildren(...tokens.map((tok, i) => {
    const v = vals[i];
    const t = v / scale;
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = showToken(tok);
    span.style.backgroundColor = colour(t);
    span.style.color = Math.abs(t) > 0.6 ? "#fff" : "inherit";
    const label = `${showToken(tok)}: ${v.toFixed(3)}`;
    span.title = label;
    span.setAttribute("aria-label", label);
    span.tabIndex = 0;
    span.dataset.projection = String(v);
    return span;
  }));
  $("legend-min").textContent = (-scale).toFixed(2);
  $("legend-max").textContent = `+${scale.toFixed(2)}`;
  $("legend").hidden = tokens.length === 0;
}

// --- runs browser ------------------------------------------------------------------------------

function runUrl(path) {
  return `/runs/${String(path).split("/").map(encodeURIComponent).join("/")}`;
}

// GET /runs gives {"runs": [{path, kind, reports: ["report.html", "report.json"], modified}]}.
function normalizeRun(r) {
  if (typeof r === "string") r = { path: r };
  const path = r.path || r.name || r.id || r.dir;
  const files = r.reports || r.files || ["report.html"];
  const pick = files.includes("report.html") ? "report.html" : files[0];
  let report = r.report_url || r.report || r.url || (pick ? `${path}/${pick}` : null);
  if (report && !report.startsWith("/")) report = runUrl(report);
  return { ...r, name: r.name || path, path, report, file: pick };
}

async function loadRuns() {
  $("runs-status").textContent = "loading…";
  try {
    const body = await api("/runs");
    const list = (Array.isArray(body) ? body : body.runs || body.data || []).map(normalizeRun);
    const ul = $("runs-list");
    ul.replaceChildren(...list.map(runItem));
    $("runs-status").textContent = list.length
      ? `${list.length} run${list.length === 1 ? "" : "s"}`
      : "no runs with a report yet";
  } catch (e) {
    $("runs-status").textContent = "";
    showError(`Could not list runs: ${e.message}`);
  }
}

function runItem(run) {
  const li = document.createElement("li");
  const name = document.createElement("div");
  name.className = "run-name";
  name.textContent = run.name;
  li.append(name);
  const meta = [run.kind || run.type, run.model, run.created || run.mtime || run.modified]
    .filter((x) => x !== undefined && x !== null && x !== "")
    .map((x) => (typeof x === "number" && x > 1e9 ? new Date(x * 1000).toLocaleString() : String(x)));
  if (meta.length) {
    const m = document.createElement("div");
    m.className = "run-meta";
    m.textContent = meta.join(" · ");
    li.append(m);
  }
  const actions = document.createElement("div");
  actions.className = "run-actions";
  if (run.report) {
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = run.file === "report.json" ? "Open report (JSON)" : "Open report";
    open.setAttribute("aria-label", `Open report of ${run.name}`);
    open.addEventListener("click", () => {
      for (const other of $("runs-list").children) other.classList.remove("current");
      li.classList.add("current");
      const frame = $("run-frame");
      showReport(frame, run.report);
      frame.title = `Report of ${run.name}`;
      frame.hidden = false;
    });
    const tab = document.createElement("a");
    tab.href = run.report;
    tab.target = "_blank";
    tab.rel = "noopener";
    tab.textContent = "new tab";
    tab.setAttribute("aria-label", `Open report of ${run.name} in a new tab`);
    actions.append(open, tab);
  } else {
    actions.textContent = "no report";
  }
  li.append(actions);
  return li;
}

// Reports are shown sandboxed (no script, an origin of their own; the server also sends them
// under "CSP: sandbox"). With an API key the frame cannot send it: fetch, then show the text.
async function showReport(frame, url) {
  if (!sessionStorage.getItem(KEY_SLOT)) {
    frame.removeAttribute("srcdoc");
    frame.src = url;
    return;
  }
  try {
    const resp = await authFetch(url);
    if (!resp.ok) throw await readError(resp);
    frame.srcdoc = await resp.text();
  } catch (e) {
    showError(`Could not open the report: ${e.message}`);
  }
}

// --- tabs ---------------------------------------------------------------------------------------

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (tab.id === "tab-runs") loadRuns();
  if (tab.id === "tab-read" && !$("read-text").value.trim()) $("read-text").value = $("prompt").value;
}

function initTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => selectTab(t));
    t.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      selectTab(next);
    });
  });
}

// --- start ----------------------------------------------------------------------------------------

async function start() {
  initTabs();
  $("error-close").addEventListener("click", clearError);
  $("model").addEventListener("change", onModelChange);
  $("direction").addEventListener("change", onDirectionChange);
  for (const id of ["layer", "layer-num"]) $(id).addEventListener("input", syncLayerOut);
  for (const id of ["coeff", "do-steer", "do-ablate", "do-clamp", "clamp-value"]) {
    $(id).addEventListener("input", renderSpec);
    $(id).addEventListener("change", renderSpec);
  }
  $("upload-form").addEventListener("submit", uploadDirection);
  $("chat-form").addEventListener("submit", sendCompare);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("send").disabled) sendCompare(e);
  });
  $("stop").addEventListener("click", () => state.busy?.abort());
  $("read-form").addEventListener("submit", readText);
  $("runs-refresh").addEventListener("click", loadRuns);
  renderSpec();
  const results = await Promise.allSettled([loadModels(), loadDirections()]);
  const bad = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
  if (bad.length) {
    $("server-status").textContent = "server error";
    $("server-status").classList.add("bad");
    showError(bad.join("\n"));
  }
  document.body.dataset.ready = "true"; // for tests: first loads are done
}

start();
