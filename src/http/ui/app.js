// doculearn progress UI: plain JavaScript, served from the binary.
//
// State comes from the API on load (so a reload loses nothing) and is kept
// current by the progress socket. Every event carries a per-job `seq`; the
// page remembers the last one per job, ignores anything not newer, and after
// a reconnect sends {"type":"resume","after":{job: seq}} so the server
// replays what was missed. Reconnects back off 1 s, 2 s, 4 s … up to 30 s.
"use strict";

const STAGES = ["queued", "downloading", "extracting", "chunking", "embedding", "storing", "completed"];
// The seed's progress marks: where each stage starts and ends.
const MARKS = {
  queued: [0, 0.05], downloading: [0.05, 0.15], extracting: [0.15, 0.25], chunking: [0.25, 0.40],
  embedding: [0.40, 0.85], storing: [0.85, 0.95], completed: [1, 1],
};
const TOKEN_KEY = "doculearn.token";
const BACKOFF_START_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const PING_EVERY_MS = 25000;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  user: null,
  jobs: new Map(),     // job_id -> job record (documents)
  batches: new Map(),  // batch_id -> batch record
  lastSeq: new Map(),  // job_id (documents and batches) -> last seq applied
  stageAvg: new Map(), // stage -> average seconds (from /api/v1/analytics/processing)
  ws: null,
  backoff: BACKOFF_START_MS,
  reconnectTimer: null,
  pingTimer: null,
  analyticsAt: 0,
};

// ---------- helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function decodeJwt(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("this is not a token (it has no payload)");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  return JSON.parse(json);
}

function fmtDuration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 1) return "<1 s";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function pct(progress) {
  return Math.round(Math.max(0, Math.min(1, progress || 0)) * 100);
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, body: payload });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (res.status === 401) {
    signOut(data?.error?.message || "your session has expired");
    throw new Error("signed out");
  }
  if (!res.ok) {
    throw new Error(data?.error?.message || `${res.status} ${res.statusText}`);
  }
  return data;
}

// ---------- toasts ----------

function toast(kind, text) {
  const close = el("button", { type: "button", "aria-label": "Dismiss" }, "×");
  const node = el("div", { class: `toast ${kind}`, role: kind === "failed" ? "alert" : "status" },
    el("span", { text }), close);
  close.addEventListener("click", () => node.remove());
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "failed" ? 12000 : 7000);
}

// ---------- sign-in ----------

function showSignIn(message) {
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  fetch("/dev/token", { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : null))
    .then((d) => {
      if (d && d.token) {
        $("dev-token").hidden = false;
        $("dev-token").onclick = () => signIn(d.token);
      }
    })
    .catch(() => {});
}

function signIn(token) {
  token = token.trim().replace(/^Bearer\s+/i, "");
  let claims;
  try {
    claims = decodeJwt(token);
  } catch (e) {
    $("signin-error").textContent = `That is not a valid token: ${e.message}`;
    return;
  }
  if (!claims.sub) {
    $("signin-error").textContent = "That token names no user (no sub).";
    return;
  }
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    $("signin-error").textContent = "That token has expired; mint a new one.";
    return;
  }
  state.token = token;
  state.user = claims.sub;
  localStorage.setItem(TOKEN_KEY, token);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `User ${claims.sub.slice(0, 8)}…${claims.role === "admin" ? " (admin)" : ""}`;
  start();
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  clearTimeout(state.reconnectTimer);
  clearInterval(state.pingTimer);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close(1000, "signed out");
    state.ws = null;
  }
  state.jobs.clear();
  state.batches.clear();
  state.lastSeq.clear();
  $("cards").replaceChildren();
  $("batches").replaceChildren();
  $("results").replaceChildren();
  showSignIn(message);
}

// ---------- document cards ----------

function jobFromDocument(d) {
  return {
    job_id: d.job_id,
    document_id: d.id,
    name: d.name,
    batch_id: d.batch_id,
    stage: d.stage,
    progress: d.progress,
    message: d.message || "",
    error: d.error,
    failed_stage: d.failed_stage,
    warnings: d.warnings || [],
    chunks: d.chunk_count,
    startedAt: Date.parse(d.started_at || d.created_at),
    endedAt: d.completed_at ? Date.parse(d.completed_at) : null,
    stageSince: Date.now(),
    card: null,
  };
}

function stageStates(job) {
  const out = {};
  const current = job.stage === "failed" ? job.failed_stage || "queued" : job.stage;
  const idx = STAGES.indexOf(current);
  STAGES.forEach((s, i) => {
    if (job.stage === "completed") out[s] = "done";
    else if (i < idx) out[s] = "done";
    else if (i === idx) out[s] = job.stage === "failed" ? "failed" : "active";
    else out[s] = "pending";
  });
  return out;
}

// Seconds left: what remains of the current stage plus the average time of
// the stages still ahead (from /api/v1/analytics/processing). null when
// there is nothing to go on yet.
function eta(job) {
  if (job.stage === "completed" || job.stage === "failed") return null;
  const idx = STAGES.indexOf(job.stage);
  if (idx < 0) return null;
  let total = 0;
  let known = false;
  for (let i = Math.max(idx, 1); i < STAGES.length - 1; i++) {
    const s = STAGES[i];
    const avg = state.stageAvg.get(s);
    if (s === job.stage) {
      // This job's own pace within the stage, once it has shown some;
      // otherwise what the stage usually takes, minus the time already spent.
      const [a, b] = MARKS[s];
      const within = b > a ? Math.min(1, Math.max(0, (job.progress - a) / (b - a))) : 0;
      const spent = (Date.now() - job.stageSince) / 1000;
      if (within >= 0.05 && spent >= 1) {
        total += (spent * (1 - within)) / within;
        known = true;
      } else if (avg !== undefined) {
        total += Math.max(avg - spent, 0);
        known = true;
      }
    } else if (avg !== undefined) {
      total += avg;
      known = true;
    }
  }
  return known ? total : null;
}

function buildCard(job) {
  const title = el("h3", { text: job.name });
  const badge = el("span", { class: "badge" });
  const fill = el("div", { class: "fill" });
  const track = el("div", {
    class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-label": `Progress of ${job.name}`,
  }, fill);
  const percent = el("span", { class: "pct", "aria-hidden": "true" });
  const stages = el("ol", { class: "stages", "aria-label": "Stages" },
    ...STAGES.map((s) => el("li", { "data-stage": s, text: s })));
  const message = el("p", { class: "message" });
  const reason = el("p", { class: "reason", role: "alert" });
  const warning = el("p", { class: "warning", role: "status" });
  const duplicate = el("p", { class: "duplicate", role: "status" });
  const times = el("p", { class: "times" });
  const retry = el("button", { type: "button", class: "secondary", "data-action": "retry" }, "Retry");
  const cancel = el("button", { type: "button", class: "danger", "data-action": "cancel" }, "Cancel");
  retry.addEventListener("click", () => act(job, "retry", retry));
  cancel.addEventListener("click", () => act(job, "cancel", cancel));
  const card = el("article", { class: "card", "data-job": job.job_id, "aria-label": job.name },
    el("header", {}, title, badge),
    el("div", { class: "bar" }, track, percent),
    duplicate, message, stages, times, warning, reason,
    el("div", { class: "actions" }, retry, cancel));
  job.card = { card, badge, fill, track, percent, stages, message, reason, warning, duplicate, times, retry, cancel };
  return card;
}

function render(job) {
  if (!job.card) {
    $("cards").prepend(buildCard(job));
    $("empty").hidden = true;
  }
  const c = job.card;
  const p = pct(job.progress);
  c.card.classList.toggle("completed", job.stage === "completed");
  c.card.classList.toggle("failed", job.stage === "failed");
  c.badge.textContent = job.stage !== "failed" ? job.stage
    : job.error === "cancelled" ? "cancelled" : `failed in ${job.failed_stage || "?"}`;
  c.fill.style.width = `${p}%`;
  c.track.setAttribute("aria-valuenow", String(p));
  c.track.setAttribute("aria-valuetext", `${p} percent, ${job.stage}`);
  c.percent.textContent = `${p} %`;
  c.message.textContent = job.stage === "failed" ? "" : job.message;
  const st = stageStates(job);
  for (const li of c.stages.children) {
    const s = li.dataset.stage;
    li.className = st[s];
    li.setAttribute("aria-label", `${s}: ${st[s]}`);
  }
  c.reason.textContent = job.stage !== "failed" ? ""
    : job.error === "cancelled" ? "Cancelled at your request." : job.error || "failed";
  // Text lost while reading (undecodable pages, unreadable pages): said on
  // the card for as long as the document is shown, not only in the message.
  const warnings = job.warnings || [];
  c.warning.textContent = warnings.length ? `Warning: ${warnings.join("; ")}` : "";
  c.warning.hidden = warnings.length === 0;
  c.card.classList.toggle("warned", warnings.length > 0);
  // An upload of a file that was already here points at this card.
  c.duplicate.textContent = job.duplicate || "";
  c.duplicate.hidden = !job.duplicate;
  c.card.classList.toggle("already", Boolean(job.duplicate));
  c.retry.hidden = job.stage !== "failed";
  c.cancel.hidden = job.stage === "failed" || job.stage === "completed";
  renderTimes(job);
}

function renderTimes(job) {
  const end = job.endedAt || Date.now();
  let text = `Elapsed ${fmtDuration((end - job.startedAt) / 1000)}`;
  if (job.stage === "completed" && job.chunks != null) text += ` · ${job.chunks} chunks`;
  const left = eta(job);
  if (left !== null) text += ` · ETA ${fmtDuration(left)}`;
  job.card.times.textContent = text;
}

async function act(job, action, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/${action}`);
    if (action === "retry") toast("info", `Retrying ${job.name}`);
  } catch (e) {
    if (e.message !== "signed out") toast("failed", `Could not ${action} ${job.name}: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

// ---------- batches ----------

function renderBatch(b) {
  if (!b.card) {
    const fill = el("div", { class: "fill" });
    const track = el("div", {
      class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-label": "Batch progress",
    }, fill);
    const percent = el("span", { class: "pct", "aria-hidden": "true" });
    const badge = el("span", { class: "badge" });
    const message = el("p", { class: "message" });
    const card = el("article", { class: "card batch", "data-batch": b.batch_id, "aria-label": "Batch" },
      el("header", {}, el("h3", { text: `Batch of ${b.total} documents` }), badge),
      el("div", { class: "bar" }, track, percent), message);
    b.card = { card, fill, track, percent, badge, message };
    $("batches").prepend(card);
  }
  const c = b.card;
  const p = pct(b.progress);
  const done = b.stage === "completed";
  c.card.classList.toggle("completed", done && !b.failed);
  c.card.classList.toggle("failed", done && b.failed > 0);
  c.fill.style.width = `${p}%`;
  c.track.setAttribute("aria-valuenow", String(p));
  c.track.setAttribute("aria-valuetext", `${p} percent, ${b.completed} of ${b.total} completed, ${b.failed} failed`);
  c.percent.textContent = `${p} %`;
  c.badge.textContent = done ? "finished" : "processing";
  c.message.textContent = b.message || `${b.completed + b.failed} of ${b.total} documents done`;
}

async function loadBatch(batchId) {
  if (state.batches.has(batchId)) return;
  const b = { batch_id: batchId, total: 0, completed: 0, failed: 0, progress: 0, stage: "batch_processing", card: null };
  state.batches.set(batchId, b);
  try {
    const v = await api("GET", `/api/v1/batches/${batchId}`);
    Object.assign(b, {
      total: v.total, completed: v.completed, failed: v.failed, progress: v.progress,
      stage: v.status === "completed" ? "completed" : "batch_processing",
    });
    if (!state.lastSeq.has(v.job_id)) state.lastSeq.set(v.job_id, 0);
    renderBatch(b);
  } catch (e) {
    state.batches.delete(batchId);
  }
}

// ---------- events ----------

function applyEvent(ev) {
  if (!ev || typeof ev.job_id !== "string" || typeof ev.seq !== "number") return;
  const last = state.lastSeq.get(ev.job_id) ?? -1;
  if (ev.seq <= last) return; // already shown (replay or duplicate)
  state.lastSeq.set(ev.job_id, ev.seq);

  if (ev.type === "batch_progress") {
    let b = state.batches.get(ev.batch_id);
    if (!b) {
      b = { batch_id: ev.batch_id, card: null };
      state.batches.set(ev.batch_id, b);
    }
    const d = ev.details || {};
    Object.assign(b, {
      total: d.total ?? b.total ?? 0, completed: d.completed ?? 0, failed: d.failed ?? 0,
      progress: ev.progress, stage: ev.stage, message: ev.message,
    });
    renderBatch(b);
    if (ev.stage === "completed") {
      toast(b.failed ? "failed" : "ok", ev.message);
    }
    return;
  }

  let job = state.jobs.get(ev.job_id);
  if (!job) {
    job = {
      job_id: ev.job_id, document_id: ev.document_id, name: ev.document_name || ev.document_id,
      batch_id: ev.batch_id, stage: "queued", progress: 0, message: "", chunks: null,
      startedAt: Date.parse(ev.timestamp) || Date.now(), endedAt: null, stageSince: Date.now(), card: null,
    };
    state.jobs.set(ev.job_id, job);
    if (ev.batch_id) loadBatch(ev.batch_id);
  }
  const ts = Date.parse(ev.timestamp) || Date.now();
  if (ev.stage !== job.stage) job.stageSince = Math.min(Date.now(), ts);
  if (ev.type === "job_queued" && (job.stage === "failed" || job.stage === "completed")) {
    // A retry (or a replacing upload): a new run starts the clock again.
    job.startedAt = ts;
    job.endedAt = null;
    job.warnings = [];
    job.duplicate = null;
  }
  if (Array.isArray(ev.details?.warnings)) job.warnings = ev.details.warnings;
  job.stage = ev.stage;
  job.progress = ev.progress;
  job.message = ev.message || "";
  if (ev.type === "job_completed") {
    job.endedAt = ts;
    job.error = null;
    job.chunks = ev.details?.chunks ?? job.chunks;
    const warned = (job.warnings || []).length > 0;
    toast(warned ? "info" : "ok",
      `${job.name} is ready${job.chunks != null ? ` (${job.chunks} chunks)` : ""}${warned ? `, but ${job.warnings.join("; ")}` : ""}`);
    refreshAnalytics();
  } else if (ev.type === "job_failed") {
    job.endedAt = ts;
    job.error = ev.error || ev.message || "failed";
    job.failed_stage = ev.details?.failed_stage || state.jobs.get(ev.job_id)?.failed_stage || lastActive(job);
    job.stage = "failed";
    if (job.error === "cancelled") toast("info", `${job.name} was cancelled`);
    else toast("failed", `${job.name} failed: ${job.error}`);
  } else {
    job.error = null;
  }
  render(job);
}

// A failed event names its stage in `stage` only as "failed"; the stage it
// failed in is the last one the card showed active.
function lastActive(job) {
  const st = job.card ? [...job.card.stages.children].find((li) => li.className === "active") : null;
  return st ? st.dataset.stage : "queued";
}

// ---------- socket ----------

function setConn(kind, text) {
  const c = $("conn");
  c.className = `conn ${kind}`;
  c.textContent = text;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/api/v1/ws/${encodeURIComponent(state.user)}`;
  let ws;
  try {
    ws = new WebSocket(url, ["bearer", state.token]);
  } catch (e) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  setConn("", "Connecting…");
  ws.onopen = () => {
    state.backoff = BACKOFF_START_MS;
    setConn("live", "Live");
    // Ask for everything after what we have; the server answers "resumed".
    const after = {};
    for (const [job, seq] of state.lastSeq) after[job] = seq;
    ws.send(JSON.stringify({ type: "resume", after }));
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send("ping"), PING_EVERY_MS);
  };
  ws.onmessage = (m) => {
    if (m.data === "pong") return;
    let msg;
    try { msg = JSON.parse(m.data); } catch { return; }
    if (msg.type === "resync") {
      // The server may have missed publishing while Redis was away: reload.
      loadDocuments().then(() => ws.send(JSON.stringify({ type: "resume", after: Object.fromEntries(state.lastSeq) })));
    } else if (msg.type === "error") {
      console.warn("socket:", msg.message);
    } else if (msg.type !== "resumed" && msg.type !== "pong") {
      applyEvent(msg);
    }
  };
  ws.onclose = (e) => {
    clearInterval(state.pingTimer);
    if (state.ws !== ws) return;
    state.ws = null;
    if (e.code === 1008 && /token expired/i.test(e.reason)) {
      signOut("Your session has expired; sign in again.");
      return;
    }
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  if (!state.token) return;
  const wait = state.backoff;
  state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
  setConn("down", `Reconnecting in ${Math.round(wait / 1000)} s…`);
  state.reconnectTimer = setTimeout(connect, wait);
}

// ---------- loading ----------

async function loadDocuments() {
  const data = await api("GET", "/api/v1/documents");
  // Oldest first so prepend leaves the newest on top.
  for (const d of [...data.documents].reverse()) {
    const known = state.jobs.get(d.job_id);
    const last = state.lastSeq.get(d.job_id) ?? -1;
    if (known && d.seq <= last) continue;
    const job = jobFromDocument(d);
    if (known) {
      job.card = known.card;
      job.stageSince = known.stage === d.stage ? known.stageSince : Date.now();
    }
    state.jobs.set(d.job_id, job);
    state.lastSeq.set(d.job_id, d.seq);
    render(job);
    if (d.batch_id) loadBatch(d.batch_id);
  }
  $("empty").hidden = state.jobs.size > 0;
}

async function refreshAnalytics(force) {
  if (!force && Date.now() - state.analyticsAt < 5000) return;
  state.analyticsAt = Date.now();
  try {
    const a = await api("GET", "/api/v1/analytics/processing");
    for (const s of a.stages || []) {
      if (s.count > 0) state.stageAvg.set(s.stage, s.avg_seconds);
    }
  } catch {
    // The ETA stays hidden without numbers; nothing else depends on them.
  }
}

async function start() {
  try {
    await Promise.all([loadDocuments(), refreshAnalytics(true)]);
  } catch (e) {
    if (e.message !== "signed out") toast("failed", `Could not load your documents: ${e.message}`);
  }
  if (state.token) connect();
}

// ---------- uploads ----------

async function upload(files) {
  files = [...files];
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  const many = files.length > 1;
  try {
    const res = await api("POST", many ? "/api/v1/batches" : "/api/v1/documents", form);
    const accepted = many ? res.documents : [res].flat();
    accepted.forEach((a, i) => {
      // A file already here (duplicate_of) gets no new card: its existing one says so.
      if (a.duplicate_of && !a.replaced) markDuplicate(a, files[i].name);
      else addAccepted(a, files[i].name, many && !a.duplicate_of ? res.batch_id : null);
      if (a.replaced) toast("info", `Processing ${files[i].name} again`);
    });
    const dups = many ? res.duplicates || 0 : 0;
    if (many && res.batch_id) {
      const b = state.batches.get(res.batch_id) || { batch_id: res.batch_id, card: null };
      state.batches.set(res.batch_id, b);
      if (!b.card) {
        Object.assign(b, { total: res.total, completed: 0, failed: 0, progress: 0, stage: "batch_processing" });
        renderBatch(b);
      }
      toast("info", `Uploaded ${res.total} files as one batch${dups ? `; ${dups} already uploaded` : ""}`);
    } else if (many) {
      toast("info", `All ${files.length} files were already uploaded`);
    }
  } catch (e) {
    if (e.message !== "signed out") toast("failed", `Upload failed: ${e.message}`);
  }
}

// The card of the document an upload turned out to duplicate: fetched if
// the page does not show it yet, marked "already uploaded", moved to the top.
async function markDuplicate(a, name) {
  let job = state.jobs.get(a.job_id);
  if (!job) {
    try {
      const d = await api("GET", `/api/v1/documents/${encodeURIComponent(a.document_id)}`);
      job = state.jobs.get(a.job_id) || jobFromDocument(d);
      state.jobs.set(a.job_id, job);
      if (!state.lastSeq.has(d.job_id)) state.lastSeq.set(d.job_id, d.seq);
    } catch (e) {
      if (e.message !== "signed out") toast("failed", `${name} was already uploaded, but it cannot be shown: ${e.message}`);
      return;
    }
  }
  const as = name !== job.name ? ` as ${job.name}` : "";
  job.duplicate = `Already uploaded${as}: no second copy was made.`;
  render(job);
  $("cards").prepend(job.card.card);
  toast("info", `${name} was already uploaded${as} (${job.stage})`);
}

function addAccepted(a, name, batchId) {
  if (state.jobs.has(a.job_id)) return; // the socket was quicker
  const job = {
    job_id: a.job_id, document_id: a.document_id, name, batch_id: batchId, stage: "queued", progress: 0,
    message: "Waiting for a worker", chunks: null, startedAt: Date.now(), endedAt: null, stageSince: Date.now(),
    card: null,
  };
  state.jobs.set(a.job_id, job);
  render(job);
}

async function uploadUrl(url) {
  try {
    const a = await api("POST", "/api/v1/documents", { url });
    addAccepted(a, url.split("/").filter(Boolean).pop() || url, null);
    $("url-input").value = "";
  } catch (e) {
    if (e.message !== "signed out") toast("failed", `Could not fetch ${url}: ${e.message}`);
  }
}

// ---------- search ----------

// The snippet as text nodes with <mark> around the highlights. Ranges count
// Unicode scalar values (the API's unit), so the text is split by code
// point, not by UTF-16 unit.
function snippetNode(hit) {
  const chars = Array.from(hit.snippet || "");
  const quote = el("blockquote", { class: "snippet" });
  const ranges = [...(hit.highlights || [])].sort((a, b) => a.start - b.start);
  let at = 0;
  for (const r of ranges) {
    if (r.start < at || r.end > chars.length || r.start >= r.end) continue;
    quote.append(chars.slice(at, r.start).join(""), el("mark", { text: chars.slice(r.start, r.end).join("") }));
    at = r.end;
  }
  quote.append(chars.slice(at).join(""));
  return quote;
}

async function search(query, mode) {
  const list = $("results");
  list.replaceChildren(el("li", { class: "muted", text: "Searching…" }));
  try {
    const res = await api("POST", "/api/v1/search", { query, k: 5, mode });
    if (!res.results.length) {
      list.replaceChildren(el("li", { class: "muted", text: "No matches in your documents yet." }));
      return;
    }
    list.replaceChildren(...res.results.map((h) => el("li", { class: "hit" },
      el("div", { class: "hit-title", text: h.document_name }),
      el("div", {
        class: "hit-meta",
        text: `${h.page ? `page ${h.page} · ` : ""}chunk ${h.chunk_index + 1} · ${res.mode} score ${h.score.toFixed(3)}`,
      }),
      snippetNode(h))));
  } catch (e) {
    if (e.message !== "signed out") list.replaceChildren(el("li", { class: "error", text: `Search failed: ${e.message}` }));
  }
}

// ---------- wiring ----------

function wire() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token-input").value);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  const drop = $("drop");
  const input = $("files");
  input.addEventListener("change", () => {
    upload(input.files);
    input.value = "";
  });
  drop.addEventListener("click", (e) => {
    if (e.target === drop || e.target.tagName === "P") input.click();
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  for (const t of ["dragenter", "dragover"]) {
    drop.addEventListener(t, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const t of ["dragleave", "drop"]) {
    drop.addEventListener(t, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    upload(e.dataTransfer.files);
  });
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = $("url-input").value.trim();
    if (url) uploadUrl(url);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("search-input").value.trim();
    if (q) search(q, $("search-mode").value);
  });
  // Elapsed time and ETA move even when no event arrives.
  setInterval(() => {
    for (const job of state.jobs.values()) {
      if (job.card && !job.endedAt) renderTimes(job);
    }
  }, 1000);
}

wire();
const saved = localStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
else showSignIn("");
