/* Operator dashboard: Live, Review (keyboard first), Map (defects along the material) and Stats over the
   /api/v1 REST API.
   Plain ES2020, no build step; Chart.js is served from ./vendor. */
"use strict";

const API = "/api/v1";
const KEY_STORAGE = "inspect.apiKey";
const PALETTE = ["#ff3838", "#ff9d97", "#ff701f", "#ffb21d", "#cfd231", "#48f90a", "#92cc17", "#3ddb86",
  "#1a9334", "#00d4bb", "#2c99a8", "#00c2ff"];

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
};
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "-");
const fmtPct = (v) => (v === null || v === undefined ? "-" : `${(v * 100).toFixed(1)}%`);
const fmtNum = (v, d = 1) => (v === null || v === undefined || Number.isNaN(Number(v)) ? "-" : Number(v).toFixed(d));

/* API access ------------------------------------------------------------------------------------ */
class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  whoami: null,
  classNames: [],
  view: "live",
  queue: [],             // review queue items (GET /review/queue), newest first
  queueCursor: null,
  sel: { key: null, defectId: null }, // the selected item and box
  ops: [],               // actions typed but not yet sent, in order
  opBusy: false,         // an action is being sent
  undo: [],              // actions sent, the last one first to undo
  edited: new Map(),     // defect id -> box with corners moved, sent with its next confirm
  draw: null,            // drawing a missed defect: { box } in image pixels
  pointer: null,         // a drag on the canvas in progress
  zoom: { z: 1, x: 0, y: 0 },
  image: null,           // { inspectionId, bitmap }
  charts: {},
  timers: [],
  map: { seq: 0, answer: null, signature: "", marks: [], focusId: null, fromStart: true, cameras: new Set(), parts: new Set() },
};

async function api(path, { method = "GET", body, blob = false } = {}) {
  const headers = { Accept: blob ? "image/jpeg" : "application/json" };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    setConn("bad", "offline");
    throw new ApiError(0, { title: "network error", detail: String(err) });
  }
  if (!res.ok) {
    let problem = null;
    try { problem = await res.json(); } catch (_) { /* not JSON */ }
    if (res.status === 401) {
      askForKey(state.key
        ? "This access key was not accepted: it may be mistyped, revoked or expired. Enter another one."
        : "Enter the access key you were given to use this station.");
    }
    throw new ApiError(res.status, problem);
  }
  setConn("ok", "online");
  if (blob) return res.blob();
  if (res.status === 204) return null;
  return res.json();
}

function setConn(kind, text) {
  const c = $("#conn");
  c.className = `conn ${kind}`;
  $("#conn-text").textContent = text;
}

let toastTimer = null;
function toast(message) {
  const t = $("#toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

/* API key dialog -------------------------------------------------------------------------------- */
function askForKey(reason) {
  const dlg = $("#key-dialog");
  if (dlg.open) return;
  $("#key-reason").textContent = reason || "Enter the access key you were given: an operator key to review, a reading key to watch.";
  $("#key-input").value = state.key;
  setConn("warn", "key needed");
  dlg.showModal();
  $("#key-input").focus();
}

function initKeyDialog() {
  $("#key-button").addEventListener("click", () => askForKey("Enter or replace the API key used by this browser."));
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("#key-input").value.trim();
    localStorage.setItem(KEY_STORAGE, state.key);
    $("#key-dialog").close();
    boot();
  });
  $("#key-forget").addEventListener("click", () => {
    state.key = "";
    localStorage.removeItem(KEY_STORAGE);
    $("#key-input").value = "";
    $("#who").textContent = "";
  });
}

/* Navigation ------------------------------------------------------------------------------------ */
function showView(view) {
  state.view = ["live", "review", "map", "stats"].includes(view) ? view : "live";
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.dataset.view === state.view));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === state.view));
  if (state.view === "live") refreshLive();
  if (state.view === "review" && state.queue.length === 0) loadQueue(true);
  if (state.view === "stats") loadStats();
  if (state.view === "map") {
    if (!state.map.cameras.size) loadMapCameras();
    loadMap(!state.map.answer); // back from Review: the band keeps its place unless the answer changed
  }
}

/* Live ------------------------------------------------------------------------------------------ */
const thumbCache = new Map(); // inspection id -> object URL

async function thumbFor(inspectionId) {
  if (thumbCache.has(inspectionId)) return thumbCache.get(inspectionId);
  const blob = await api(`inspections/${inspectionId}/image/annotated`, { blob: true });
  const url = URL.createObjectURL(blob);
  thumbCache.set(inspectionId, url);
  if (thumbCache.size > 64) {
    const [oldId, oldUrl] = thumbCache.entries().next().value;
    URL.revokeObjectURL(oldUrl);
    thumbCache.delete(oldId);
  }
  return url;
}

function pick(obj, ...names) {
  for (const n of names) {
    const parts = n.split(".");
    let v = obj;
    for (const p of parts) v = v === null || v === undefined ? undefined : v[p];
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// a camera's part of the image store (GET /cameras: storage)
function storageText(s) {
  const skipped = s.images_skipped ? ` · ${s.images_skipped} images skipped` : "";
  return `stored ${fmtBytes(s.frame_bytes + s.crop_bytes)}: ${s.frames} frames, ${s.crops} crops${skipped}`;
}

async function latestNgFor(cameraId) {
  const page = await api(`inspections?camera_id=${encodeURIComponent(cameraId)}&verdict=NG&limit=1`);
  const item = (page.items || [])[0];
  return item && item.has_image !== false ? item.id : null;
}

async function refreshCameras() {
  const tiles = $("#camera-tiles");
  const empty = $("#cameras-empty");
  let cams;
  let data;
  try {
    data = await api("cameras");
    cams = Array.isArray(data) ? data : data.cameras || data.items || [];
  } catch (err) {
    tiles.replaceChildren();
    empty.hidden = false;
    plainMessage(empty, err.status === 404
      ? "This service does not run cameras. Frames sent to it by other systems still appear in Review and Stats."
      : "The camera status cannot be read right now; retrying.", err.message);
    return;
  }
  empty.hidden = cams.length > 0;
  if (data.running === false) {
    plainMessage(empty, "No camera is running on this station. Frames sent by other systems still appear in Review and Stats; "
      + "an administrator can check the cameras file.", data.reason);
  } else plainMessage(empty, "No cameras are set up yet.", null);
  const disk = data.storage;  // GET /cameras: free space and the low-disk state (INSPECT_DISK_*)
  $("#cameras-updated").textContent = `updated ${new Date().toLocaleTimeString()}`
    + (disk ? ` · disk ${fmtBytes(disk.free_bytes)} free${disk.low_disk ? " · LOW DISK: new images are skipped" : ""}` : "");
  $("#cameras-updated").classList.toggle("bad", Boolean(disk && disk.low_disk));
  tiles.replaceChildren(...cams.map((cam) => {
    const id = String(pick(cam, "id", "camera_id", "name") ?? "?");
    const status = String(pick(cam, "status", "state")
      ?? (cam.connected ? "running" : cam.finished ? "finished" : cam.last_error ? "error" : "offline")).toLowerCase();
    const where = [cam.line, cam.station].filter(Boolean).join(" / ");
    // how the model sees this camera's frames (GET /cameras: imgsz, tiles)
    const seen = cam.tiles ? `tiles ${cam.tiles.size} px, overlap ${cam.tiles.overlap}`
      : cam.imgsz ? `model input ${cam.imgsz} px` : "";
    const fpsIn = pick(cam, "fps_in", "fps.in", "capture_fps", "input_fps");
    const fpsOut = pick(cam, "fps_out", "fps.out", "inference_fps", "output_fps");
    const drops = pick(cam, "drops", "dropped", "frames_dropped", "dropped_frames");
    const thumb = el("div", { class: "thumb", text: "no NG frame yet" });
    const tile = el("div", { class: `tile ${status}`, "data-camera": id },
      el("div", { class: "tile-head" }, el("span", { class: "tile-name", text: id }),
        el("span", { class: "tile-state", text: status })),
      where ? el("div", { class: "muted", text: where }) : null,
      seen ? el("div", { class: "muted tile-model", text: seen }) : null,
      el("div", { class: "tile-nums" },
        el("div", {}, el("div", { class: "k", text: "fps in" }), el("div", { class: "v", text: fmtNum(fpsIn) })),
        el("div", {}, el("div", { class: "k", text: "fps out" }), el("div", { class: "v", text: fmtNum(fpsOut) })),
        el("div", {}, el("div", { class: "k", text: "drops" }), el("div", { class: "v", text: drops ?? "-" }))),
      // the part (coil, sheet) under the camera, as the line said it (GET /cameras: part)
      cam.part ? el("div", { class: "tile-part", title: `since ${fmtTime(cam.part.since)}, set by ${cam.part.set_by}`,
        text: `part ${cam.part.part_id}` }) : null,
      cam.storage ? el("div", { class: "muted tile-storage", text: storageText(cam.storage) }) : null,
      cam.tracking ? el("div", { class: "muted tile-tracks", text: tracksText(cam.tracking) }) : null,
      cam.last_error && status !== "running" ? el("div", { class: "tile-error", text: cam.last_error }) : null,
      thumb);
    let ngId = pick(cam, "last_ng_inspection_id", "latest_ng.inspection_id", "latest_ng_inspection_id", "last_ng.id");
    (async () => {
      try {
        if (ngId === undefined) ngId = await latestNgFor(id);
        if (ngId === null || ngId === undefined) return;
        const url = await thumbFor(ngId);
        thumb.replaceChildren(el("img", { src: url, alt: `latest NG of ${id}`, title: "Click to enlarge" }));
        thumb.classList.add("clickable");
        thumb.dataset.inspectionId = String(ngId);
        thumb.onclick = () => enlargeFrame(ngId, `latest NG of camera ${id}`);
      } catch (err) { thumb.textContent = err.status === 410 ? "NG image expired (retention)" : "NG image not stored"; }
    })();
    return tile;
  }));
}

/* A tracked defect's frames: up to 8 of the frames it was seen in (its best one outlined). */
const TRACK_STRIP_MAX = 8;
async function fillTrackStrip(facts, trackId) {
  const strip = el("div", { class: "track-strip", "data-track": String(trackId), text: "…" });
  facts.append(el("dt", { text: "Frames seen" }), el("dd", {}, strip));
  let track;
  try { track = await api(`tracks/${trackId}`); } catch (_) { strip.textContent = "-"; return; }
  const stored = track.frames.filter((f) => f.image_url);
  const step = Math.max(1, Math.ceil(stored.length / TRACK_STRIP_MAX));
  const shown = stored.filter((f, k) => k % step === 0 || f.frame_uid === track.best_frame_uid);
  if (!shown.length) { strip.textContent = `${track.frames_seen} frame(s), no image kept`; return; }
  strip.replaceChildren(...shown.map((f) => {
    const best = f.frame_uid === track.best_frame_uid;
    const thumb = el("span", { class: `track-thumb${best ? " best" : ""}`, "data-inspection-id": String(f.inspection_id),
      title: `frame #${f.inspection_id} · ${fmtTime(f.captured_at)}${best ? " · best" : ""}` });
    api(f.image_url, { blob: true }).then((blob) => {
      const url = URL.createObjectURL(blob);
      thumb.replaceChildren(el("img", { src: url, alt: `frame #${f.inspection_id}`, onload: () => URL.revokeObjectURL(url) }));
    }).catch(() => { thumb.textContent = "expired"; });
    return thumb;
  }));
}

/* A tracked camera's defects in view now and its line speed (GET /cameras: tracking). With a minimum
   score, each defect in view shows its score so far and whether it would be stored if it ended now. */
function trackText(a, minScore) {
  if (minScore == null) return `${a.class_name} (${a.frames_seen})`;
  const kept = a.score >= minScore ? "≥" : "<";
  return `${a.class_name} (${a.frames_seen}, score ${fmtNum(a.score, 2)} ${kept} ${fmtNum(minScore, 2)})`;
}

function tracksText(t) {
  const inView = t.active_tracks.map((a) => trackText(a, t.min_score)).join(", ");
  const speed = t.motion.stopped ? "line stopped"
    : t.motion.speed_mm_s != null ? `${fmtNum(t.motion.speed_mm_s)} mm/s` : `${fmtNum(t.motion.speed_px_s)} px/s`;
  return `${speed} · ${t.tracks.active} defect(s) in view${inView ? `: ${inView}` : ""} · ${t.tracks.ended} passed`;
}

/* A sentence for the operator, the technical reason folded away under it for whoever fixes it. */
function plainMessage(target, text, detail) {
  target.replaceChildren(el("span", { text }),
    detail ? el("details", { class: "tech" }, el("summary", { text: "technical detail" }), el("code", { text: detail })) : null);
}

/* The annotated frame large, over the page. */
async function enlargeFrame(inspectionId, caption) {
  const dlg = $("#frame-dialog");
  $("#frame-dialog-title").textContent = `Frame #${inspectionId}`;
  $("#frame-dialog-meta").textContent = caption || "";
  const img = $("#frame-dialog-img");
  img.removeAttribute("src");
  img.dataset.inspectionId = String(inspectionId);
  if (!dlg.open) dlg.showModal();
  try {
    img.src = await thumbFor(inspectionId);
    img.alt = `frame ${inspectionId} with its defects`;
  } catch (err) {
    $("#frame-dialog-meta").textContent = `The image of this frame is not stored (${err.message}).`;
  }
}

async function refreshGallery() {
  const box = $("#ng-gallery");
  let page;
  try {
    page = await api("inspections?verdict=NG&limit=12");
  } catch (_) { return; }
  const items = (page.items || []).filter((i) => i.has_image);
  if (!items.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No NG frame with a stored image yet." }));
    return;
  }
  const known = new Map([...box.querySelectorAll("figure")].map((f) => [f.dataset.inspectionId, f]));
  box.replaceChildren(...items.map((i) => {
    const id = String(i.id);
    if (known.has(id)) return known.get(id);
    const caption = `${fmtTime(i.captured_at)} · ${i.camera_id ?? "upload"} · ${i.defects.map((d) => d.class_name).join(", ")}`;
    const img = el("img", { alt: `NG frame ${i.id}` });
    thumbFor(i.id).then((url) => { img.src = url; }).catch(() => { img.alt = "image not stored"; });
    return el("figure", { class: "shot", "data-inspection-id": id, tabindex: "0", title: "Click to enlarge",
      onclick: () => enlargeFrame(i.id, caption),
      onkeydown: (ev) => { if (ev.key === "Enter") enlargeFrame(i.id, caption); } },
    img, el("figcaption", { text: caption }));
  }));
}

function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d;
}

async function refreshYield() {
  const from = startOfToday();
  $("#yield-range").textContent = `since ${from.toLocaleString([], { dateStyle: "short", timeStyle: "short" })}`;
  let stats;
  try {
    stats = await api(`stats?bucket=hour&from=${encodeURIComponent(from.toISOString())}`);
  } catch (err) {
    $("#yield-lines").replaceChildren(el("p", { class: "empty", text: `Stats unavailable: ${err.message}` }));
    return;
  }
  const target = stats.yield_target;
  const rows = stats.lines.map((l) => {
    const y = l.yield;
    const cls = yieldClass(y, target);
    return el("div", { class: "yield-row", "data-line": l.line ?? "", "data-level": cls || "none",
      title: target == null ? "" : `target ${fmtPct(target)}` },
      el("span", { class: "name", text: l.line ?? "(none)" }),
      el("div", { class: `bar ${cls}` }, el("span", { style: `width:${((y ?? 0) * 100).toFixed(1)}%` }),
        target == null ? null : el("i", { class: "target", style: `left:${(target * 100).toFixed(1)}%` })),
      el("span", { class: "pct", text: fmtPct(y) }));
  });
  $("#yield-lines").replaceChildren(...(rows.length ? rows : [el("p", { class: "empty", text: "No inspections today." })]));
  renderKpis($("#today-kpis"), stats);
}

/* good at or above the target, low within 5 points below it, bad further below. */
function yieldClass(y, target) {
  if (y === null || y === undefined) return "";
  const t = target ?? 0.95;
  return y >= t ? "good" : y >= t - 0.05 ? "low" : "bad";
}

function renderKpis(target, stats) {
  const t = stats.totals;
  const r = stats.reviews;
  const y = t.yield;
  const kpi = (k, v, cls = "") => el("div", { class: `kpi ${cls}` }, el("div", { class: "k", text: k }), el("div", { class: "v", text: v }));
  target.replaceChildren(
    kpi("Inspections", String(t.inspections)),
    kpi("Yield", fmtPct(y), { good: "good", low: "warn", bad: "bad" }[yieldClass(y, stats.yield_target)] || ""),
    kpi("NG", String(t.ng), t.ng ? "bad" : ""),
    kpi("Pending review", String(r.pending), r.pending ? "warn" : ""),
    kpi("False-positive rate", fmtPct(r.false_positive_rate)),
    kpi("Miss rate", fmtPct(r.miss_rate)),
  );
  target.lastChild.title = `Defects the model missed, over ${r.fully_reviewed_frames ?? 0} frame(s) marked fully reviewed`;
}

/* Raised alarms, newest first, each until an operator acknowledges it. */
async function refreshAlarms() {
  const banner = $("#alarm-banner");
  let page;
  try {
    page = await api("alarms?state=open");
  } catch (_) { return; }
  const items = page.items || [];
  banner.hidden = items.length === 0;
  banner.replaceChildren(...items.map((a) => el("div", { class: "alarm", "data-alarm-id": a.id },
    el("span", { class: "alarm-mark", text: "ALARM" }),
    el("span", { class: "alarm-text", text: a.message }),
    el("span", { class: "muted", text: `${a.line ? `line ${a.line}` : ""}${a.line && a.camera_id ? " · " : ""}${a.camera_id ? `camera ${a.camera_id}` : ""} · since ${fmtTime(a.raised_at)}` }),
    el("button", { class: "btn", type: "button", text: "Acknowledge", onclick: (ev) => acknowledgeAlarm(a.id, ev.currentTarget) }))));
}

async function acknowledgeAlarm(id, button) {
  button.disabled = true;
  try {
    await api(`alarms/${id}/acknowledge`, { method: "POST", body: {} });
    const row = $(`#alarm-banner [data-alarm-id="${id}"]`);
    if (row) row.remove();
    $("#alarm-banner").hidden = !$("#alarm-banner .alarm");
  } catch (err) {
    button.disabled = false;
    toast(err.status === 403 ? "Acknowledging an alarm needs an operator key." : `Cannot acknowledge: ${err.message}`);
  }
}

function refreshLive() {
  refreshAlarms();
  refreshCameras();
  refreshYield();
  refreshGallery();
}

/* Review ---------------------------------------------------------------------------------------- */
/* The queue is a list of items from GET /review/queue, one per frame with all its boxes (item.kind
   "frame"; other kinds, such as a tracked defect, get their own card renderer beside renderFrameCard).
   Decisions are applied on screen at once and sent in order by one worker (state.ops), so keystrokes
   typed while a request is out are queued, never dropped. */
const REFRESH_MS = 5000;
const MAX_ZOOM = 8;

function reviewQuery() {
  const form = $("#review-filters");
  const p = new URLSearchParams();
  const status = form.elements.review_status.value;
  if (status === "open") p.set("fully_reviewed", "false");
  else if (status) p.set("review_status", status);
  for (const name of ["line", "camera_id", "class_name", "min_confidence"]) {
    const v = form.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  for (const name of ["from", "to"]) {
    const v = form.elements[name].value;
    if (v) p.set(name, new Date(v).toISOString());
  }
  p.set("limit", "20");
  return p;
}

const isPending = (d) => (d.review_status || "pending") === "pending";
const itemOf = (key) => state.queue.find((q) => q.key === key);
const selectedItem = () => (state.sel.key ? itemOf(state.sel.key) : null);
function selectedDefect() {
  const item = selectedItem();
  return item && state.sel.defectId != null ? item.inspection.defects.find((d) => d.id === state.sel.defectId) : null;
}
function recount(item) {
  item.pending = item.inspection.defects.filter(isPending).length;
}
function newerFirst(a, b) {
  const ta = Date.parse(a.inspection.captured_at);
  const tb = Date.parse(b.inspection.captured_at);
  return tb - ta || b.inspection.id - a.inspection.id;
}

async function loadQueue(reset) {
  const params = reviewQuery();
  if (!reset && state.queueCursor) params.set("cursor", state.queueCursor);
  let page;
  try {
    page = await api(`review/queue?${params}`);
  } catch (err) {
    toast(`Cannot load the review queue: ${err.message}`);
    return;
  }
  if (reset) state.queue = [];
  const known = new Set(state.queue.map((q) => q.key));
  state.queue.push(...page.items.filter((i) => !known.has(i.key)));
  state.queueCursor = page.next_cursor;
  renderQueue();
  if (reset || !selectedItem()) {
    const first = state.queue[0];
    selectBox(first ? first.key : null, first ? firstBoxId(first) : null);
  }
  refreshPendingBadge();
}

/* The first page again, merged in: new frames appear, known ones get their server state, frames that
   left the filter go (the selected one stays). Skipped while actions are being sent. */
async function refreshQueue() {
  if (state.ops.length || state.opBusy || state.pointer) return;
  let page;
  try {
    page = await api(`review/queue?${reviewQuery()}`);
  } catch (_) { return; }
  if (state.ops.length || state.opBusy) return;
  const fetched = new Map(page.items.map((i) => [i.key, i]));
  const last = page.items[page.items.length - 1];
  const kept = state.queue.filter((q) => !fetched.has(q.key)
    && (q.key === state.sel.key || (page.next_cursor && last && newerFirst(q, last) > 0)));
  state.queue = [...page.items, ...kept].sort(newerFirst);
  if (!state.queueCursor) state.queueCursor = page.next_cursor; // everything was loaded: more came since
  renderQueue();
  if (!selectedItem() && state.queue.length) selectBox(state.queue[0].key, firstBoxId(state.queue[0]));
  else { renderDetail(); drawImage(); }
  refreshPendingBadge();
}

async function refreshPendingBadge() {
  try {
    const s = await api(`stats?bucket=day&from=${encodeURIComponent(new Date(Date.now() - 29 * 86400e3).toISOString())}`);
    $("#pending-badge").textContent = s.reviews.pending ? String(s.reviews.pending) : "";
  } catch (_) { /* badge is optional */ }
}

function reviewedText(d) {
  const status = d.review_status || "pending";
  if (status === "confirmed" || status === "reclassified") return `${status} as ${d.reviewed_class_name || d.class_name}`;
  return status;
}

function boxChip(item, d) {
  const name = d.review_status === "reclassified" && d.reviewed_class_name ? `${d.class_name} → ${d.reviewed_class_name}` : d.class_name;
  const selected = item.key === state.sel.key && d.id === state.sel.defectId;
  return el("li", {
    class: `box-chip ${d.review_status || "pending"}${selected ? " selected" : ""}${d.queued ? " queued" : ""}`,
    "data-defect-id": d.id, title: `${reviewedText(d)}${d.source === "operator" ? " (drawn by an operator)" : ""}`,
    onclick: (ev) => { ev.stopPropagation(); selectBox(item.key, d.id); },
  },
  el("span", { class: "chip-dot", style: `background:${boxColor(d)}` }),
  el("span", { class: "chip-name", text: name }),
  el("span", { class: "chip-conf", text: d.source === "operator" ? "drawn" : fmtNum(d.confidence, 2) }),
  el("span", { class: "chip-status", text: d.queued ? "sending" : (d.review_status || "pending") }));
}

function renderFrameCard(item, index) {
  const ins = item.inspection;
  const selected = item.key === state.sel.key;
  return el("li", {
    class: `card frame${selected ? " selected" : ""}${item.pending ? "" : " done"}`, "data-index": index,
    "data-key": item.key, "data-inspection-id": ins.id, onclick: () => selectBox(item.key, firstBoxId(item)),
  },
  el("div", { class: "card-head" },
    el("span", { class: `verdict ${ins.verdict === "NG" ? "ng-text" : "ok-text"}`, text: ins.verdict }),
    el("span", { class: "card-title", text: `#${ins.id} · ${ins.camera_id ?? "upload"}` }),
    el("span", { class: `card-state ${item.pending ? "warn-text" : "ok-text"}`,
      text: item.fully_reviewed ? "fully reviewed" : item.pending ? `${item.pending} to decide` : "decided" })),
  el("div", { class: "q-meta", text: `${fmtTime(ins.captured_at)} · ${ins.part_id ?? "no part"} · ${ins.defects.length} box(es)` }),
  ins.defects.length ? el("ol", { class: "chips" }, ...ins.defects.map((d) => boxChip(item, d))) : null);
}

const CARD_RENDERERS = { frame: renderFrameCard };

function renderQueue() {
  const list = $("#queue");
  list.replaceChildren(...state.queue.map((item, i) => (CARD_RENDERERS[item.kind] || renderFrameCard)(item, i)));
  $("#queue-empty").hidden = state.queue.length > 0;
  $("#queue-more").hidden = !state.queueCursor;
  $("#queue-count").textContent = `${state.queue.length}${state.queueCursor ? "+" : ""}`;
  const sel = $("#queue li.card.selected");
  if (sel) sel.scrollIntoView({ block: "nearest" });
}

function firstBoxId(item) {
  const ds = item.inspection.defects;
  const pending = ds.find((d) => isPending(d) && !d.queued);
  return pending ? pending.id : ds.length ? ds[0].id : null;
}

/* Every (item, box) in queue order: what J and K walk through. A frame without boxes is one stop. */
function stops() {
  const out = [];
  for (const item of state.queue) {
    if (item.inspection.defects.length === 0) out.push([item.key, null]);
    for (const d of item.inspection.defects) out.push([item.key, d.id]);
  }
  return out;
}

function step(delta) {
  const all = stops();
  const at = all.findIndex(([k, id]) => k === state.sel.key && id === state.sel.defectId);
  const next = all[Math.max(0, Math.min(all.length - 1, at + delta))];
  if (next) selectBox(...next);
  if (delta > 0 && at + delta >= all.length && state.queueCursor) loadQueue(false);
}

function stepFrame(delta) {
  const at = state.queue.findIndex((q) => q.key === state.sel.key);
  const item = state.queue[Math.max(0, Math.min(state.queue.length - 1, at + delta))];
  if (item) selectBox(item.key, firstBoxId(item));
  if (delta > 0 && at + delta >= state.queue.length && state.queueCursor) loadQueue(false);
}

/* After a decision: the next box of the frame still to decide, else the next frame's first. */
function advance() {
  const item = selectedItem();
  if (!item) return;
  const ds = item.inspection.defects;
  const at = ds.findIndex((d) => d.id === state.sel.defectId);
  const later = ds.slice(at + 1).concat(ds.slice(0, Math.max(0, at))).find((d) => isPending(d) && !d.queued);
  if (later) { selectBox(item.key, later.id); return; }
  const idx = state.queue.indexOf(item);
  const next = state.queue.slice(idx + 1).find((q) => q.inspection.defects.some((d) => isPending(d) && !d.queued));
  if (next) selectBox(next.key, firstBoxId(next));
  else selectBox(item.key, state.sel.defectId);
}

function selectBox(key, defectId) {
  const changedFrame = key !== state.sel.key;
  state.sel = { key, defectId };
  if (changedFrame) { state.zoom = { z: 1, x: 0, y: 0 }; cancelDraw(); }
  renderQueue();
  renderDetail();
  const item = selectedItem();
  if (item) loadImage(item.inspection.id).then(drawImage);
  drawImage();
  loadHistory(defectId);
}

/* Review one frame's box from elsewhere (the Map): the frame joins the queue, whatever the filters,
   selected with that box; it stays while selected, like any card. */
async function openInReview(inspectionId, defectId) {
  let ins;
  try {
    ins = await api(`inspections/${inspectionId}`);
  } catch (err) {
    toast(`Cannot open frame #${inspectionId}: ${err.message}`);
    return;
  }
  if (!state.queue.length) await loadQueue(true);
  const item = { kind: "frame", key: `frame:${ins.id}`, fully_reviewed: ins.fully_reviewed_at != null, inspection: ins };
  recount(item);
  state.queue = [...state.queue.filter((q) => q.key !== item.key), item].sort(newerFirst);
  location.hash = "#review";
  selectBox(item.key, defectId);
}

async function loadHistory(defectId) {
  if (defectId == null) { renderHistory(null); return; }
  try {
    const detail = await api(`defects/${defectId}`);
    if (state.sel.defectId === defectId) renderHistory(detail.history);
  } catch (_) { /* the facts still show */ }
}

function renderHistory(hist) {
  $("#history").replaceChildren(...(hist && hist.length ? hist.slice().reverse().map((h) => el("li", {},
    el("div", {}, el("span", { class: "h-when", text: fmtTime(h.created_at) }), " "),
    el("div", { text: `${h.actor}: ${h.action} (${h.before_status}${h.before_class_name ? ` ${h.before_class_name}` : ""} → ${h.after_status}${h.after_class_name ? ` ${h.after_class_name}` : ""})` }),
    h.after_box && h.action !== "add" ? el("div", { class: "h-note", text: `box → ${h.after_box.map((v) => Math.round(v)).join(", ")}` }) : null,
    h.note ? el("div", { class: "h-note", text: h.note }) : null)) : [el("li", { class: "muted", text: "not reviewed yet" })]));
}

function renderDetail() {
  const item = selectedItem();
  const d = selectedDefect();
  const facts = $("#detail-facts");
  const status = $("#detail-status");
  $("#detail-id").textContent = d ? `#${d.id}` : "";
  status.textContent = d ? (d.queued ? "sending" : d.review_status) : item ? (item.fully_reviewed ? "fully reviewed" : "") : "";
  status.className = `status-pill ${d ? d.review_status : item && item.fully_reviewed ? "confirmed" : ""}`;
  document.querySelectorAll("#btn-confirm, #btn-reject, .reclass .btn").forEach((b) => { b.disabled = !d; });
  document.querySelectorAll("#btn-frame-confirm, #btn-frame-reject, #btn-complete, #btn-draw").forEach((b) => { b.disabled = !item; });
  $("#btn-undo").disabled = !(state.undo.length || state.ops.length);
  if (!item) {
    facts.replaceChildren();
    renderHistory(null);
    $("#image-title").textContent = "Image";
    $("#image-meta").textContent = "";
    return;
  }
  const ins = item.inspection;
  const row = (k, v) => [el("dt", { text: k }), el("dd", { text: v ?? "-" })];
  const edited = d && state.edited.get(d.id);
  facts.replaceChildren(
    ...(d ? [
      ...row("Class", d.class_name),
      ...row("Reviewed", reviewedText(d)),
      ...row("Source", d.source === "operator" ? "drawn by an operator" : "model"),
      ...row("Confidence", d.source === "operator" ? "-" : fmtNum(d.confidence, 3)),
      ...row("Box", (edited || d.box).map((v) => Math.round(v)).join(", ") + (edited ? " (moved, not saved)" : "")),
      ...(d.track_id != null ? row("Track", `#${d.track_id} · seen in ${d.frames_seen} frame(s), this is the best`
        + (d.position_mm ? ` · at ${d.position_mm.map((v) => fmtNum(v)).join(", ")} mm` : "")) : []),
    ] : []),
    ...row("Frame", `#${ins.id} · ${ins.verdict} · ${ins.defects.length} box(es)${item.fully_reviewed ? " · fully reviewed" : ""}`),
    ...row("Camera", ins.camera_id),
    ...row("Line", [ins.line, ins.station].filter(Boolean).join(" / ") || null),
    ...row("Part", ins.part_id),
    ...row("Captured", fmtTime(ins.captured_at)),
  );
  if (d && d.track_id != null) fillTrackStrip(facts, d.track_id);
  document.querySelectorAll(".reclass .btn").forEach((b) => {
    b.classList.toggle("current", !!d && b.dataset.class === (d.reviewed_class_name || d.class_name));
  });
  $("#image-title").textContent = `Frame #${ins.id}`;
  $("#image-meta").textContent = `${ins.width}×${ins.height} · ${ins.model_version}`;
}

function renderReclassButtons() {
  const box = $("#reclass-buttons");
  box.replaceChildren(...state.classNames.slice(0, 9).map((name, i) => el("button", {
    class: "btn", type: "button", "data-class": name, title: `Reclassify as ${name} (key ${i + 1})`,
    onclick: () => decide("reclassify", name),
  }, el("kbd", { text: String(i + 1) }), ` ${name}`)));
  $("#draw-class-buttons").replaceChildren(...state.classNames.slice(0, 9).map((name, i) => el("button", {
    class: "btn btn-ghost", type: "button", "data-class": name, onclick: () => addDrawn(name),
  }, el("kbd", { text: String(i + 1) }), ` ${name}`)));
  const sel = $("#review-filters").elements.class_name;
  const current = sel.value;
  sel.replaceChildren(el("option", { value: "", text: "any" }), ...state.classNames.map((n) => el("option", { value: n, text: n })));
  sel.value = current;
}

async function loadImage(inspectionId) {
  if (state.image && state.image.inspectionId === inspectionId) return;
  state.image = { inspectionId, bitmap: null, error: null };
  try {
    const blob = await api(`inspections/${inspectionId}/image`, { blob: true });
    const bitmap = await createImageBitmap(blob);
    if (state.image.inspectionId === inspectionId) state.image.bitmap = bitmap;
  } catch (err) {
    if (state.image.inspectionId === inspectionId) state.image.error = err.status === 404 ? "image not stored" : err.message;
  }
}

function classColor(id) { return PALETTE[((id % PALETTE.length) + PALETTE.length) % PALETTE.length]; }

/* Actions: applied on screen, queued, sent in order --------------------------------------------- */
function message(text, kind = "done") {
  const msg = $("#review-message");
  msg.className = `message ${kind}`;
  msg.textContent = text;
}

function renderOps() {
  const n = state.ops.length + (state.opBusy ? 1 : 0);
  const ops = $("#ops-pending");
  ops.dataset.count = String(n);
  ops.textContent = n ? `sending ${n} action${n > 1 ? "s" : ""}…` : "";
  $("#btn-undo").disabled = !(state.undo.length || state.ops.length);
}

function enqueue(op) {
  state.ops.push(op);
  renderOps();
  runOps();
}

async function runOps() {
  if (state.opBusy) return;
  state.opBusy = true;
  while (state.ops.length) {
    const op = state.ops.shift();
    renderOps();
    try {
      const result = await api(op.path, { method: "POST", body: op.body });
      op.done(result);
    } catch (err) {
      if (op.failed) op.failed(err);
      message(err.status === 403 ? `Not allowed: ${err.message} (an operator key is needed)` : err.message, "error");
    }
    renderQueue();
    renderDetail();
    drawImage();
  }
  state.opBusy = false;
  renderOps();
}

/* The defect's fields from a DefectDetail / DefectPublic answer. */
function defectFields(d) {
  const out = {};
  for (const k of ["id", "inspection_id", "class_id", "class_name", "confidence", "box", "review_status",
    "reviewed_class_id", "reviewed_class_name", "reviewed_by", "reviewed_at", "review_note", "source",
    "track_id", "frames_seen", "position_mm"]) out[k] = d[k];
  return out;
}

function storeDefect(updated) {
  for (const item of state.queue) {
    if (item.inspection.id !== updated.inspection_id) continue;
    const ds = item.inspection.defects;
    const at = ds.findIndex((x) => x.id === updated.id);
    if (at >= 0) ds[at] = defectFields(updated);
    else ds.push(defectFields(updated));
    recount(item);
    if (updated.id === state.sel.defectId && updated.history) renderHistory(updated.history);
  }
}

function noteValue() {
  const v = $("#review-note").value.trim();
  $("#review-note").value = "";
  return v || undefined;
}

const DONE_WORDS = { confirm: "confirmed", reject: "rejected", reclassify: "reclassified" };

/* Queue a decision on one box: shown at once (marked "sending"), the selection moves on. `group`: the
   undo entry shared by the boxes of a whole-frame decision (one U undoes them all). */
function queueDecision(item, d, action, className, note, group) {
  const body = { action };
  if (action === "reclassify") body.class_name = className;
  const edited = state.edited.get(d.id);
  if (edited && action !== "reject") body.box = edited.map((v) => Math.round(v * 100) / 100);
  if (note) body.note = note;
  const before = { ...d };
  d.queued = true;
  d.review_status = DONE_WORDS[action];
  d.reviewed_class_name = action === "reclassify" ? className : action === "confirm" ? d.class_name : null;
  if (body.box) d.box = body.box;
  state.edited.delete(d.id);
  recount(item);
  enqueue({
    path: `defects/${d.id}/review`, body,
    done: (updated) => {
      storeDefect(updated);
      if (!group) state.undo.push({ kind: "defect", ids: [d.id], text: `#${d.id} ${action}` });
      else {
        if (!group.ids.length) state.undo.push(group);
        group.ids.push(d.id);
      }
      message(`#${d.id} ${updated.review_status}${action === "reclassify" ? ` as ${className}` : ""}`);
    },
    failed: () => { Object.assign(d, before, { queued: false }); recount(item); },
  });
}

function decide(action, className) {
  const item = selectedItem();
  const d = selectedDefect();
  if (!item || !d) return;
  queueDecision(item, d, action, className, noteValue());
  renderQueue();
  advance();
}

function decideFrame(action) {
  const item = selectedItem();
  if (!item) return;
  const note = noteValue();
  const todo = item.inspection.defects.filter((d) => isPending(d) && !d.queued);
  if (!todo.length) { message(`Frame #${item.inspection.id} has no box left to decide`); return; }
  const group = { kind: "defect", ids: [], text: `frame #${item.inspection.id} ${action}` };
  for (const d of todo) queueDecision(item, d, action, undefined, note, group);
  renderQueue();
  advance();
}

function completeFrame() {
  const item = selectedItem();
  if (!item) return;
  const id = item.inspection.id;
  const was = item.fully_reviewed;
  item.fully_reviewed = true;
  enqueue({
    path: `inspections/${id}/review`, body: { action: "complete" },
    done: (ins) => {
      item.inspection = { ...item.inspection, fully_reviewed_at: ins.fully_reviewed_at, fully_reviewed_by: ins.fully_reviewed_by };
      state.undo.push({ kind: "frame", id, text: `frame #${id} fully reviewed` });
      message(`Frame #${id} fully reviewed`);
    },
    failed: () => { item.fully_reviewed = was; },
  });
  renderQueue();
  stepFrame(1);
}

/* U: an action still waiting to be sent is dropped; else the last one sent is undone (audited). */
function undo() {
  const waiting = state.ops.pop();
  if (waiting) {
    if (waiting.failed) waiting.failed(new Error("undone"));
    message("Undone before it was sent");
    renderOps(); renderQueue(); renderDetail(); drawImage();
    return;
  }
  const last = state.undo.pop();
  if (!last) { message("Nothing to undo"); return; }
  if (last.kind === "frame") {
    enqueue({
      path: `inspections/${last.id}/review`, body: { action: "reopen", note: "undo" },
      done: () => {
        const item = state.queue.find((q) => q.inspection.id === last.id);
        if (item) item.fully_reviewed = false;
        message(`Undone: ${last.text}`);
      },
    });
    return;
  }
  for (const id of last.ids) {
    enqueue({
      path: `defects/${id}/review`, body: { action: "undo" },
      done: (updated) => {
        storeDefect(updated);
        const item = state.queue.find((q) => q.inspection.id === updated.inspection_id);
        if (item) {
          if (isPending(updated)) item.fully_reviewed = false;
          selectBox(item.key, updated.id);
        }
        message(`Undone: ${last.text} (#${id} ${updated.review_status})`);
      },
    });
  }
}

/* Drawing a missed defect ---------------------------------------------------------------------- */
function toggleDraw() {
  if (!selectedItem()) return;
  if (state.draw) { cancelDraw(); return; }
  state.draw = { box: null };
  $("#btn-draw").classList.add("active");
  $("#image-canvas").classList.add("drawing");
  message("Drag on the frame to draw the missed defect, then pick its class (1-9)");
}

function cancelDraw() {
  state.draw = null;
  const btn = $("#btn-draw");
  if (btn) btn.classList.remove("active");
  const canvas = $("#image-canvas");
  if (canvas) canvas.classList.remove("drawing");
  const picker = $("#draw-classes");
  if (picker) picker.hidden = true;
}

function addDrawn(className) {
  const item = selectedItem();
  if (!item || !state.draw || !state.draw.box) return;
  const box = state.draw.box.map((v) => Math.round(v * 100) / 100);
  cancelDraw();
  const id = item.inspection.id;
  const placeholder = { id: `new-${Date.now()}`, inspection_id: id, class_id: state.classNames.indexOf(className),
    class_name: className, confidence: 1, box, review_status: "confirmed", reviewed_class_name: className,
    source: "operator", queued: true };
  item.inspection.defects.push(placeholder);
  enqueue({
    path: `inspections/${id}/defects`, body: { class_name: className, box },
    done: (created) => {
      item.inspection.defects = item.inspection.defects.filter((x) => x !== placeholder);
      storeDefect(created);
      state.undo.push({ kind: "defect", ids: [created.id], text: `drawn ${className} #${created.id}` });
      if (state.sel.key === item.key) selectBox(item.key, created.id);
      message(`#${created.id} drawn as ${className}`);
    },
    failed: () => { item.inspection.defects = item.inspection.defects.filter((x) => x !== placeholder); },
  });
  renderQueue();
  drawImage();
}

/* Box drawing ----------------------------------------------------------------------------------- */
const REJECTED_COLOR = "#9aa3ad";
const SELECTED_RING = "#ffffff";            // the selected box: a white ring around its class-coloured outline
const SELECTED_HALO = "rgba(0, 0, 0, 0.6)"; // a dark band under the ring, so it shows on bright steel too
const LABEL_FONT_PX = 14;                   // CSS pixels as the operator sees them

/* Where a box's label goes, in canvas pixels (inclusive, like app/annotate.py place_label): above the box
   where it fits, else below it, else inside its top edge (a box as tall as the frame); shifted left at the
   right edge, so the whole label stays inside the frame. Returns the filled rectangle (x1, y1)-(x2, y2) and
   the text origin (alphabetic baseline). */
function placeLabel(box, textW, textH, baseline, frameW, frameH) {
  const [bx1, by1, , by2] = box;
  const height = textH + baseline + 4;
  const width = Math.min(textW + 4, frameW);
  let top;
  if (by1 - height >= 0) top = by1 - height;
  else if (by2 + height <= frameH - 1) top = by2 + 1;
  else top = Math.max(0, Math.min(by1, frameH - height));
  const left = Math.max(0, Math.min(bx1, frameW - 1 - width));
  const bottom = Math.min(frameH - 1, top + height);
  return { x1: left, y1: top, x2: Math.min(frameW - 1, left + width), y2: bottom,
    textX: left + 2, textY: bottom - baseline - 1 };
}

/* Black or white, whichever contrasts more with the background "#rrggbb" (WCAG relative luminance). */
function labelTextColor(background) {
  const channel = (i) => {
    const c = parseInt(background.slice(1 + 2 * i, 3 + 2 * i), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const lum = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
  return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#000000" : "#ffffff";
}

/* A defect's colour: its class's (the reviewed class where reclassified), grey once rejected. */
function boxColor(o) {
  if (o.review_status === "rejected") return REJECTED_COLOR;
  const reclassified = o.review_status === "reclassified" && o.reviewed_class_id != null;
  return classColor(reclassified ? o.reviewed_class_id : o.class_id);
}

/* The defect's box and label as drawn on a canvas of frameW x frameH; toCanvas maps a box in image
   pixels to canvas pixels (scale, zoom and pan). The box is cut to the canvas; null when it is out of
   sight. A box an operator drew is labelled "drawn" instead of a confidence. */
function boxLook(o, toCanvas, frameW, frameH) {
  const rejected = o.review_status === "rejected";
  const reclassified = o.review_status === "reclassified";
  const name = reclassified && o.reviewed_class_name ? o.reviewed_class_name : o.class_name;
  const [x1, y1, x2, y2] = toCanvas(o.box);
  if (x2 < 0 || y2 < 0 || x1 > frameW - 1 || y1 > frameH - 1) return null;
  const box = [Math.round(Math.max(0, x1)), Math.round(Math.max(0, y1)),
    Math.round(Math.min(frameW - 1, x2)), Math.round(Math.min(frameH - 1, y2))];
  return { rejected, name, box, color: boxColor(o),
    text: `${name} ${o.source === "operator" ? "drawn" : o.confidence.toFixed(2)}` };
}

function strokeBox(ctx, [x1, y1, x2, y2]) { ctx.strokeRect(x1, y1, x2 - x1, y2 - y1); }

/* Draws the boxes, then the labels on top (the selected one last), and returns what was drawn:
   one record per label with its text, rectangle, colours and, for the selected box, its ring. */
function drawDefects(ctx, defects, selectedId, toCanvas, fontPx) {
  const W = ctx.canvas.width;
  const H = ctx.canvas.height;
  const ordered = defects.filter((o) => o.id !== selectedId).concat(defects.filter((o) => o.id === selectedId));
  const looks = ordered.map((o) => ({ o, look: boxLook(o, toCanvas, W, H) })).filter((x) => x.look)
    .map(({ o, look }) => ({ id: o.id, selected: o.id === selectedId, ...look }));
  const drawn = [];
  for (const look of looks) {
    ctx.save();
    if (look.rejected) ctx.setLineDash([6, 4]);
    let ring = null;
    if (look.selected) {
      const [x1, y1, x2, y2] = look.box;
      ring = [Math.max(1, x1 - 5), Math.max(1, y1 - 5), Math.min(W - 1, x2 + 5), Math.min(H - 1, y2 + 5)];
      ctx.strokeStyle = SELECTED_HALO;
      ctx.lineWidth = 10;
      strokeBox(ctx, ring);
      ctx.strokeStyle = look.color;
      ctx.lineWidth = 3;
      strokeBox(ctx, look.box);
      ctx.setLineDash([]);
      ctx.strokeStyle = SELECTED_RING;
      ctx.lineWidth = 2;
      strokeBox(ctx, ring);
    } else {
      ctx.globalAlpha = 0.55;
      ctx.strokeStyle = look.color;
      ctx.lineWidth = 1.5;
      strokeBox(ctx, look.box);
    }
    ctx.restore();
    look.ring = ring;
    if (look.selected) drawHandles(ctx, look.box, fontPx / LABEL_FONT_PX); // under the labels
  }
  ctx.font = `600 ${fontPx}px ui-monospace, monospace`;
  ctx.textBaseline = "alphabetic";
  for (const look of looks) {
    const m = ctx.measureText(look.text);
    const textW = Math.ceil(m.width);
    const ascent = Math.ceil(m.fontBoundingBoxAscent ?? m.actualBoundingBoxAscent);
    const descent = Math.ceil(m.fontBoundingBoxDescent ?? m.actualBoundingBoxDescent);
    const at = placeLabel(look.box, textW, ascent, descent, W, H);
    const textColor = labelTextColor(look.color);
    ctx.fillStyle = look.color;
    ctx.fillRect(at.x1, at.y1, at.x2 - at.x1 + 1, at.y2 - at.y1 + 1);
    ctx.fillStyle = textColor;
    ctx.fillText(look.text, at.textX, at.textY);
    drawn.push({
      defectId: look.id, text: look.text, className: look.name, selected: look.selected,
      rejected: look.rejected, box: look.box, background: look.color, textColor,
      x: at.x1, y: at.y1, width: at.x2 - at.x1 + 1, height: at.y2 - at.y1 + 1,
      textX: at.textX, textY: at.textY, textWidth: textW,
      ring: look.ring && { color: SELECTED_RING, lineWidth: 2, box: look.ring },
    });
  }
  return drawn;
}


/* The frame on the canvas: zoom, pan, corners, drawing ------------------------------------------ */
/* The canvas holds the frame at `scale` (small frames upscaled); state.zoom = { z, x, y } zooms it by z
   and shifts it by (x, y) canvas pixels. Boxes and labels are drawn in canvas pixels after that, so a
   label keeps its size and stays inside the canvas at any zoom. */
function frameView() {
  const canvas = $("#image-canvas");
  const img = state.image;
  const item = selectedItem();
  if (!item || !img || img.inspectionId !== item.inspection.id || !img.bitmap) return null;
  const scale = Math.max(1, Math.min(4, Math.floor(720 / Math.max(img.bitmap.width, img.bitmap.height))));
  const { z, x, y } = state.zoom;
  const k = (scale * z * img.bitmap.width) / item.inspection.width; // canvas px per image px
  return { canvas, item, bitmap: img.bitmap, scale, W: img.bitmap.width * scale, H: img.bitmap.height * scale,
    toCanvas: ([x1, y1, x2, y2]) => [x1 * k - x, y1 * k - y, x2 * k - x, y2 * k - y],
    toImage: (cx, cy) => [(cx + x) / k, (cy + y) / k], k };
}

function clampZoom() {
  const v = frameView();
  const zm = state.zoom;
  zm.z = Math.max(1, Math.min(MAX_ZOOM, zm.z));
  if (!v) return;
  zm.x = Math.max(0, Math.min(v.W * zm.z - v.W, zm.x));
  zm.y = Math.max(0, Math.min(v.H * zm.z - v.H, zm.y));
}

/* Zoom by `factor` keeping the canvas point (cx, cy) where it is (the centre by default). */
function zoomBy(factor, cx, cy) {
  const v = frameView();
  if (!v) return;
  const zm = state.zoom;
  const px = cx ?? v.W / 2;
  const py = cy ?? v.H / 2;
  const z2 = Math.max(1, Math.min(MAX_ZOOM, zm.z * factor));
  zm.x = ((px + zm.x) / zm.z) * z2 - px;
  zm.y = ((py + zm.y) / zm.z) * z2 - py;
  zm.z = z2;
  clampZoom();
  drawImage();
}

function canvasPoint(ev) {
  const canvas = $("#image-canvas");
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * (canvas.width / r.width), (ev.clientY - r.top) * (canvas.height / r.height)];
}

function orderedBox([ax, ay], [bx, by], w, h) {
  const c = (v, hi) => Math.max(0, Math.min(hi, v));
  return [c(Math.min(ax, bx), w), c(Math.min(ay, by), h), c(Math.max(ax, bx), w), c(Math.max(ay, by), h)];
}

function shownBox(d) { return state.edited.get(d.id) || d.box; }

function cornerAt(v, c) {
  const d = selectedDefect();
  if (!d || d.queued) return -1;
  const r = v.canvas.getBoundingClientRect();
  const reach = 10 * (v.canvas.width / r.width);
  const [x1, y1, x2, y2] = v.toCanvas(shownBox(d));
  const corners = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]];
  return corners.findIndex(([x, y]) => Math.hypot(x - c[0], y - c[1]) <= reach);
}

function boxAt(v, p) {
  const hits = v.item.inspection.defects.filter((d) => typeof d.id === "number").filter((d) => {
    const [x1, y1, x2, y2] = shownBox(d);
    return p[0] >= x1 && p[0] <= x2 && p[1] >= y1 && p[1] <= y2;
  });
  hits.sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
  return hits[0];
}

function onPointerDown(ev) {
  const v = frameView();
  if (!v || ev.button !== 0) return;
  const c = canvasPoint(ev);
  const p = v.toImage(...c);
  const ins = v.item.inspection;
  ev.currentTarget.setPointerCapture(ev.pointerId);
  ev.preventDefault();
  if (state.draw) {
    state.pointer = { mode: "draw", start: p };
    state.draw.box = orderedBox(p, p, ins.width, ins.height);
  } else if (cornerAt(v, c) >= 0) {
    const d = selectedDefect();
    const [x1, y1, x2, y2] = shownBox(d);
    const fixed = [[x2, y2], [x1, y2], [x1, y1], [x2, y1]][cornerAt(v, c)]; // across from the grabbed one
    state.pointer = { mode: "corner", fixed, id: d.id };
  } else {
    state.pointer = { mode: "pan", from: c, pan: { ...state.zoom }, moved: false, at: p };
  }
}

function onPointerMove(ev) {
  const v = frameView();
  const ptr = state.pointer;
  if (!v || !ptr) {
    if (v) ev.currentTarget.style.cursor = state.draw ? "crosshair" : cornerAt(v, canvasPoint(ev)) >= 0 ? "nwse-resize"
      : state.zoom.z > 1 ? "grab" : "default";
    return;
  }
  const c = canvasPoint(ev);
  const p = v.toImage(...c);
  const ins = v.item.inspection;
  if (ptr.mode === "draw") {
    state.draw.box = orderedBox(ptr.start, p, ins.width, ins.height);
  } else if (ptr.mode === "corner") {
    const d = selectedDefect();
    if (!d || d.id !== ptr.id) return;
    state.edited.set(d.id, orderedBox(ptr.fixed, p, ins.width, ins.height));
    renderDetail();
  } else {
    const dx = c[0] - ptr.from[0];
    const dy = c[1] - ptr.from[1];
    if (Math.hypot(dx, dy) > 3) ptr.moved = true;
    state.zoom.x = ptr.pan.x - dx;
    state.zoom.y = ptr.pan.y - dy;
    clampZoom();
  }
  drawImage();
}

function onPointerUp() {
  const v = frameView();
  const ptr = state.pointer;
  state.pointer = null;
  if (!v || !ptr) return;
  if (ptr.mode === "draw") {
    const b = state.draw && state.draw.box;
    if (b && b[2] - b[0] >= 2 && b[3] - b[1] >= 2) {
      $("#draw-classes").hidden = false;
      message("Pick the class of the drawn defect (1-9), or Esc");
    } else if (state.draw) state.draw.box = null;
  } else if (ptr.mode === "corner") {
    const d = selectedDefect();
    if (d && state.edited.has(d.id)) message(`Box #${d.id} moved: A confirms it with the new corners, Esc puts it back`);
  } else if (!ptr.moved) {
    const hit = boxAt(v, ptr.at);
    if (hit) selectBox(v.item.key, hit.id);
  }
  drawImage();
}

function onWheel(ev) {
  if (!frameView()) return;
  ev.preventDefault();
  const [cx, cy] = canvasPoint(ev);
  zoomBy(ev.deltaY < 0 ? 1.25 : 0.8, cx, cy);
}

function initCanvas() {
  const canvas = $("#image-canvas");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", () => { state.pointer = null; });
  canvas.addEventListener("wheel", onWheel, { passive: false });
  $("#btn-zoom-in").addEventListener("click", () => zoomBy(1.5));
  $("#btn-zoom-out").addEventListener("click", () => zoomBy(1 / 1.5));
  $("#btn-zoom-reset").addEventListener("click", () => { state.zoom = { z: 1, x: 0, y: 0 }; drawImage(); });
}

/* Small squares on the selected box's corners: they can be dragged to correct the box. */
function drawHandles(ctx, [x1, y1, x2, y2], unit) {
  const half = Math.round(4 * unit);
  ctx.save();
  for (const [x, y] of [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) {
    if (x < 0 || y < 0 || x > ctx.canvas.width || y > ctx.canvas.height) continue;
    ctx.fillStyle = SELECTED_HALO;
    ctx.fillRect(x - half - 1, y - half - 1, 2 * half + 2, 2 * half + 2);
    ctx.fillStyle = SELECTED_RING;
    ctx.fillRect(x - half, y - half, 2 * half, 2 * half);
  }
  ctx.restore();
}

function drawImage() {
  const canvas = $("#image-canvas");
  const ctx = canvas.getContext("2d");
  const note = $("#image-note");
  const item = selectedItem();
  const v = frameView();
  $("#zoom-level").textContent = `${Math.round(state.zoom.z * 100)}%`;
  if (!v) {
    canvas.width = 640; canvas.height = 480;
    ctx.fillStyle = "#0c0f12";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const img = state.image;
    note.textContent = !item ? "Nothing selected" : img && img.error ? `No image: ${img.error}` : "Loading…";
    canvas.drawnLabels = [];
    canvas.dataset.drawn = "";
    return;
  }
  note.textContent = "";
  if (canvas.width !== v.W) canvas.width = v.W;
  if (canvas.height !== v.H) canvas.height = v.H;
  ctx.fillStyle = "#0c0f12";
  ctx.fillRect(0, 0, v.W, v.H);
  ctx.imageSmoothingEnabled = v.scale * state.zoom.z < 2;
  ctx.setTransform(state.zoom.z, 0, 0, state.zoom.z, -state.zoom.x, -state.zoom.y);
  ctx.drawImage(v.bitmap, 0, 0, v.W, v.H);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  // the label text keeps its size on screen where the page shows the canvas shrunk
  const shown = canvas.getBoundingClientRect().width;
  const fontPx = Math.round(LABEL_FONT_PX * Math.max(1, shown > 0 ? canvas.width / shown : 1));
  const defects = v.item.inspection.defects.map((d) => (state.edited.has(d.id) ? { ...d, box: state.edited.get(d.id) } : d));
  // What was drawn, for tests and for anyone inspecting the page; the operator sees only the pixels.
  canvas.drawnLabels = drawDefects(ctx, defects, state.sel.defectId, v.toCanvas, fontPx);
  if (state.draw && state.draw.box) {
    const [x1, y1, x2, y2] = v.toCanvas(state.draw.box);
    ctx.save();
    ctx.setLineDash([8, 4]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = SELECTED_HALO;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.lineDashOffset = 6;
    ctx.strokeStyle = SELECTED_RING;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.restore();
  }
  canvas.dataset.drawn = `${v.item.inspection.id}:${state.sel.defectId ?? ""}`;
  canvas.dataset.zoom = String(state.zoom.z);
}

function onKey(ev) {
  if (state.view !== "review" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable)) {
    if (ev.key === "Escape") t.blur();
    return;
  }
  if ($("#key-dialog").open) return;
  const key = ev.key.toLowerCase();
  let handled = true;
  if (key === "j" || ev.key === "ArrowDown") step(1);
  else if (key === "k" || ev.key === "ArrowUp") step(-1);
  else if (key === "n") stepFrame(1);
  else if (key === "p") stepFrame(-1);
  else if (key === "a") (ev.shiftKey ? decideFrame("confirm") : decide("confirm"));
  else if (key === "r") (ev.shiftKey ? decideFrame("reject") : decide("reject"));
  else if (key === "f") completeFrame();
  else if (key === "u") undo();
  else if (key === "d") toggleDraw();
  else if (ev.key === "+" || ev.key === "=") zoomBy(1.5);
  else if (ev.key === "-") zoomBy(1 / 1.5);
  else if (ev.key === "0") { state.zoom = { z: 1, x: 0, y: 0 }; drawImage(); }
  else if (ev.key === "Escape") {
    if (state.draw) cancelDraw();
    else if (state.sel.defectId != null) { state.edited.delete(state.sel.defectId); renderDetail(); }
    drawImage();
  } else if (/^[1-9]$/.test(ev.key)) {
    const name = state.classNames[Number(ev.key) - 1];
    if (!name) toast(`No class ${ev.key}: the model has ${state.classNames.length} classes`);
    else if (state.draw && state.draw.box) addDrawn(name);
    else decide("reclassify", name);
  } else {
    handled = false;
  }
  if (handled) ev.preventDefault();
}

/* Map ------------------------------------------------------------------------------------------- */
/* The defect map along the material (GET /tracks): one camera's material as a long band, x along it,
   y across it, one mark per tracked defect, sized by its box, in its class's colour (the reviewed class
   where reclassified, grey once rejected: boxColor). Drawn once per changed answer and per scale; the
   refresh every 10 s redraws nothing while the answer stays the same. */
const MAP_LIMIT = 5000;                                   // the most GET /tracks answers at once
const MAP_REFRESH_MS = 10000;
const MAP_BAND_PX = 200;                                  // the band's height on screen
const MAP_PAD = { left: 64, right: 24, top: 12, bottom: 44 };
const MAP_MIN_MARK_PX = 3;                                // the smallest mark, whatever the scale
const MAP_TICK_PX = 110;                                  // about one tick label per this many px
const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const pad2 = (n) => String(n).padStart(2, "0");
/* A time as a datetime-local input's value, in the browser's time zone. */
function localInputValue(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

function mapQuery() {
  const form = $("#map-filters");
  const p = new URLSearchParams();
  for (const name of ["camera_id", "part_id"]) {
    const v = form.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  for (const name of ["from", "to"]) {
    const v = form.elements[name].value;
    if (v) p.set(name, new Date(v).toISOString());
  }
  p.set("limit", String(MAP_LIMIT));
  return p;
}

function fillOptions(selector, values) {
  $(selector).replaceChildren(...[...values].sort().map((v) => el("option", { value: v })));
}

/* The cameras the station runs, for the camera field's suggestions (the tracks add theirs). */
async function loadMapCameras() {
  try {
    const data = await api("cameras");
    const cams = Array.isArray(data) ? data : data.cameras || data.items || [];
    for (const c of cams) if (c.id) state.map.cameras.add(String(c.id));
    fillOptions("#map-cameras", state.map.cameras);
  } catch (_) { /* a station without cameras: the tracks' cameras only */ }
}

/* force: the filters changed (draw whatever comes, say why nothing came); else a refresh. */
async function loadMap(force) {
  const form = $("#map-filters");
  if (!form.elements.from.value) form.elements.from.value = localInputValue(new Date(Date.now() - 3600e3));
  const seq = ++state.map.seq;
  let answer;
  try {
    answer = await api(`tracks?${mapQuery()}`);
  } catch (err) {
    if (force) toast(`Cannot load the defect map: ${err.message}`);
    return;
  }
  if (seq !== state.map.seq) return; // a newer request is out
  const signature = JSON.stringify([answer.truncated,
    answer.items.map((t) => [t.id, t.review_status, t.reviewed_class_name])]);
  if (!force && signature === state.map.signature) return;
  state.map.signature = signature;
  state.map.answer = answer;
  state.map.fromStart = force; // new filters: the band from its start; a refresh keeps the place
  for (const t of answer.items) {
    if (t.camera_id) state.map.cameras.add(t.camera_id);
    if (t.part_id) state.map.parts.add(t.part_id);
  }
  fillOptions("#map-cameras", state.map.cameras);
  fillOptions("#map-parts", state.map.parts);
  renderMap();
}

/* Which of a track's x, y runs along the material: the material's travel at the best frame (its
   position on the material minus its box's centre in that frame) is larger along x or along y. */
function mapAlongAxis(items) {
  let tx = 0;
  let ty = 0;
  for (const t of items) {
    tx += Math.abs(t.position_px[0] - (t.box[0] + t.box[2]) / 2);
    ty += Math.abs(t.position_px[1] - (t.box[1] + t.box[3]) / 2);
  }
  return ty > tx ? 1 : 0;
}

/* The marks in order along the material: position and size along and across it, in mm where every
   track carries the camera's calibration, else px. */
function mapMarks(items) {
  const mm = items.length > 0 && items.every((t) => t.position_mm && t.size_mm);
  const a = mapAlongAxis(items);
  const marks = items.map((t) => {
    const pos = mm ? t.position_mm : t.position_px;
    const size = mm ? t.size_mm : t.size_px;
    return { t, along: pos[a], across: pos[1 - a], length: size[a], width: size[1 - a] };
  });
  marks.sort((m, n) => m.along - n.along || m.t.id - n.t.id);
  return { unit: mm ? "mm" : "px", axis: a ? "y" : "x", marks };
}

/* Round tick values, about `count` of them, from lo to hi. */
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return { ticks, label: (v) => v.toFixed(decimals) };
}

function spanOf(marks, centre, size) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const m of marks) {
    lo = Math.min(lo, m[centre] - m[size] / 2);
    hi = Math.max(hi, m[centre] + m[size] / 2);
  }
  return [lo, hi];
}

function markColor(t) {
  const reviewed = t.reviewed_class_name ? state.classNames.indexOf(t.reviewed_class_name) : -1;
  return boxColor({ ...t, reviewed_class_id: reviewed >= 0 ? reviewed : null });
}

function markClassName(t) {
  if (t.review_status === "rejected") return "rejected";
  return t.review_status === "reclassified" && t.reviewed_class_name ? t.reviewed_class_name : t.class_name;
}

function markText(m, unit, decimals) {
  const t = m.t;
  const status = t.review_status && t.review_status !== "pending" ? `, ${t.review_status}` : "";
  return `${markClassName(t)} at ${m.along.toFixed(decimals)} ${unit} along, ${m.across.toFixed(decimals)} ${unit} across, `
    + `confidence ${fmtNum(t.confidence, 2)}, seen in ${t.frames_seen} frame(s)${t.part_id ? `, part ${t.part_id}` : ""}${status}`;
}

function renderMap() {
  const answer = state.map.answer;
  if (!answer) return;
  const chosen = $("#map-filters").elements.camera_id.value.trim();
  const byCamera = new Map();
  for (const t of answer.items) {
    const cam = t.camera_id ?? "";
    if (!byCamera.has(cam)) byCamera.set(cam, []);
    byCamera.get(cam).push(t);
  }
  let camera = chosen;
  let items = answer.items;
  const notes = [];
  if (!chosen && byCamera.size > 1) {
    [camera, items] = [...byCamera.entries()].sort((a, b) => b[1].length - a[1].length)[0];
    notes.push(`${byCamera.size} cameras have tracked defects in this range, each on its own material: `
      + `this is camera ${camera || "(none)"}'s; choose a camera to see another.`);
  } else if (!chosen && byCamera.size === 1) [camera] = byCamera.keys();
  if (answer.truncated) {
    notes.push(`More than ${MAP_LIMIT} tracked defects match: the map shows the first ${MAP_LIMIT} `
      + "(oldest first). Narrow the time range or choose a part.");
  }
  const note = $("#map-note");
  note.textContent = notes.join(" ");
  note.hidden = notes.length === 0;
  const layout = mapMarks(items);
  state.map.marks = layout.marks;
  const empty = items.length === 0;
  $("#map-empty").hidden = !empty;
  $("#map-empty").textContent = "No tracked defects for this camera, part and time range. Only cameras with "
    + "tracking record them, when a defect has passed the camera.";
  $("#map-scroll").hidden = empty;
  $("#map-summary").textContent = empty ? "" : `${items.length} tracked defect(s)${camera ? ` · camera ${camera}` : ""}`
    + ` · along the frame's ${layout.axis} · positions in ${layout.unit}`;
  renderMapLegend(layout.marks);
  if (empty) {
    $("#map-band").replaceChildren();
    return;
  }
  drawMap(layout);
}

function renderMapLegend(marks) {
  const counts = new Map();
  for (const m of marks) {
    const name = markClassName(m.t);
    const entry = counts.get(name) || { name, color: markColor(m.t), count: 0 };
    entry.count += 1;
    counts.set(name, entry);
  }
  $("#map-legend").replaceChildren(...[...counts.values()].sort((a, b) => b.count - a.count || a.name.localeCompare(b.name))
    .map((c) => el("li", { class: "map-legend-item", "data-class": c.name, "data-count": String(c.count) },
      el("span", { class: "chip-dot", style: `background:${c.color}` }), el("span", { text: c.name }),
      el("b", { text: String(c.count) }))));
}

/* The band: axes with ticks and unit, the marks (larger ones under smaller ones). The scroll position
   keeps its place along the material when the scale changes. */
function drawMap({ marks, unit }) {
  const svg = $("#map-band");
  const scroll = $("#map-scroll");
  const zoom = Number($("#map-filters").elements.zoom.value) || 1;
  const centre = state.map.fromStart || !scroll.scrollWidth ? null
    : (scroll.scrollLeft + scroll.clientWidth / 2) / scroll.scrollWidth;
  state.map.fromStart = false;
  const W = Math.round(Math.max(320, scroll.clientWidth) * zoom);
  const H = MAP_PAD.top + MAP_BAND_PX + MAP_PAD.bottom;
  const plotW = W - MAP_PAD.left - MAP_PAD.right;
  let [aLo, aHi] = spanOf(marks, "along", "length");
  const aPad = Math.max((aHi - aLo) * 0.02, 1);
  aLo -= aPad;
  aHi += aPad;
  let [cLo, cHi] = spanOf(marks, "across", "width");
  cLo = Math.min(0, cLo);
  if (cHi <= cLo) cHi = cLo + 1;
  const kx = plotW / (aHi - aLo);
  const ky = MAP_BAND_PX / (cHi - cLo);
  const X = (v) => MAP_PAD.left + (v - aLo) * kx;
  const Y = (v) => MAP_PAD.top + (v - cLo) * ky;
  // the along axis in m once the band is 10 m or longer
  const inMetres = unit === "mm" && aHi - aLo >= 10000;
  const shownUnit = inMetres ? "m" : unit;
  const f = inMetres ? 1000 : 1;
  const bottom = MAP_PAD.top + MAP_BAND_PX;
  const axes = svgEl("g", { class: "map-axes", "aria-hidden": "true" });
  axes.append(svgEl("rect", { class: "map-material", x: MAP_PAD.left, y: MAP_PAD.top, width: plotW, height: MAP_BAND_PX }));
  const along = niceTicks(aLo / f, aHi / f, Math.max(2, Math.floor(plotW / MAP_TICK_PX)));
  for (const v of along.ticks) {
    const x = X(v * f).toFixed(1);
    axes.append(svgEl("line", { class: "map-grid", x1: x, x2: x, y1: MAP_PAD.top, y2: bottom + 4 }),
      svgEl("text", { class: "map-tick map-tick-along", x, y: bottom + 17, "text-anchor": "middle" }, along.label(v)));
  }
  axes.append(svgEl("text", { class: "map-axis-title", x: MAP_PAD.left, y: H - 6 }, `along the material (${shownUnit})`));
  const across = niceTicks(cLo, cHi, 4);
  for (const v of across.ticks) {
    const y = Y(v).toFixed(1);
    axes.append(svgEl("line", { class: "map-grid", x1: MAP_PAD.left - 4, x2: MAP_PAD.left, y1: y, y2: y }),
      svgEl("text", { class: "map-tick", x: MAP_PAD.left - 7, y, "text-anchor": "end", "dominant-baseline": "middle" }, across.label(v)));
  }
  axes.append(svgEl("text", { class: "map-axis-title", transform: `translate(14 ${MAP_PAD.top + MAP_BAND_PX / 2}) rotate(-90)`,
    "text-anchor": "middle" }, `across (${unit})`));
  const decimals = unit === "mm" ? 1 : 0;
  const focusId = state.map.focusId != null && marks.some((m) => m.t.id === state.map.focusId) ? state.map.focusId : marks[0].t.id;
  const hadFocus = svg.contains(document.activeElement);
  for (const m of marks) {
    const w = Math.max(MAP_MIN_MARK_PX, m.length * kx);
    const h = Math.max(MAP_MIN_MARK_PX, m.width * ky);
    const color = markColor(m.t);
    const text = markText(m, unit, decimals);
    m.node = svgEl("rect", { class: "map-mark", x: (X(m.along) - w / 2).toFixed(1), y: (Y(m.across) - h / 2).toFixed(1),
      width: w.toFixed(1), height: h.toFixed(1), fill: color, stroke: color, role: "button", "aria-label": text,
      tabindex: m.t.id === focusId ? "0" : "-1", "data-track-id": String(m.t.id), "data-class": markClassName(m.t),
      "data-along": String(m.along) });
    m.node.append(svgEl("title", {}, text));
  }
  const layer = svgEl("g", { class: "map-marks" });
  layer.append(...[...marks].sort((m, n) => n.length * n.width - m.length * m.width).map((m) => m.node));
  svg.setAttribute("width", String(W));
  svg.setAttribute("height", String(H));
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren(axes, layer);
  state.map.focusId = focusId;
  scroll.scrollLeft = centre === null ? 0 : centre * W - scroll.clientWidth / 2;
  if (hadFocus) marks.find((m) => m.t.id === focusId).node.focus({ preventScroll: true });
}

function openMark(m) {
  if (m.t.defect_id == null) {
    toast(`Track #${m.t.id} has no defect row any more (deleted): nothing to review.`);
    return;
  }
  openInReview(m.t.inspection_id, m.t.defect_id);
}

function markOf(node) {
  const mark = node && node.closest ? node.closest(".map-mark") : null;
  return mark ? state.map.marks.find((m) => m.node === mark) : null;
}

/* One mark in the tab order at a time (the last one focused); the arrow keys walk along the material. */
function focusMark(m) {
  for (const n of state.map.marks) if (n.node) n.node.setAttribute("tabindex", n === m ? "0" : "-1");
  state.map.focusId = m.t.id;
  m.node.focus();
  m.node.scrollIntoView({ block: "nearest", inline: "nearest" });
}

function onMapKey(ev) {
  const m = markOf(ev.target);
  if (!m) return;
  const marks = state.map.marks;
  const at = marks.indexOf(m);
  const to = { ArrowRight: at + 1, ArrowDown: at + 1, ArrowLeft: at - 1, ArrowUp: at - 1, Home: 0, End: marks.length - 1 }[ev.key];
  if (to !== undefined) {
    focusMark(marks[Math.max(0, Math.min(marks.length - 1, to))]);
    ev.preventDefault();
  } else if (ev.key === "Enter" || ev.key === " ") {
    openMark(m);
    ev.preventDefault();
  }
}

function initMap() {
  const svg = $("#map-band");
  svg.addEventListener("click", (ev) => {
    const m = markOf(ev.target);
    if (m) { state.map.focusId = m.t.id; openMark(m); }
  });
  svg.addEventListener("keydown", onMapKey);
  svg.addEventListener("focusin", (ev) => { const m = markOf(ev.target); if (m) state.map.focusId = m.t.id; });
  $("#map-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadMap(true); });
  $("#map-filters").elements.zoom.addEventListener("change", renderMap);
  let pending = false;
  window.addEventListener("resize", () => {
    if (state.view !== "map" || pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderMap(); });
  });
  setInterval(() => {
    if (state.view === "map" && state.whoami && !document.hidden && !$("#map-filters").elements.to.value) loadMap(false);
  }, MAP_REFRESH_MS);
}

/* Stats ----------------------------------------------------------------------------------------- */
function chartDefaults() {
  if (!window.Chart) return false;
  Chart.defaults.color = "#8a97a6";
  Chart.defaults.borderColor = "#2f3944";
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.animation = false;
  return true;
}

function bucketLabel(iso, bucket) {
  const d = new Date(iso);
  return bucket === "hour"
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "2-digit", day: "2-digit" });
}

const X_TICKS = { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 };

function drawChart(id, config) {
  if (state.charts[id]) state.charts[id].destroy();
  state.charts[id] = new Chart($(`#${id}`), config);
}

async function loadStats() {
  const form = $("#stats-filters");
  const range = form.elements.range.value;
  const hours = { "24h": 24, "7d": 24 * 7, "30d": 24 * 30 }[range];
  const bucket = range === "24h" ? "hour" : "day";
  const to = new Date();
  const from = new Date(to.getTime() - hours * 3600e3);
  const p = new URLSearchParams({ bucket, from: from.toISOString(), to: to.toISOString() });
  const line = form.elements.line.value.trim();
  if (line) p.set("line", line);
  let s;
  try {
    s = await api(`stats?${p}`);
  } catch (err) {
    toast(`Cannot load stats: ${err.message}`);
    return;
  }
  renderKpis($("#stats-kpis"), s);
  const tbody = $("#stations-table tbody");
  tbody.replaceChildren(...s.stations.map((r) => el("tr", {},
    el("td", { text: r.line ?? "-" }), el("td", { text: r.station ?? "-" }), el("td", { class: "num", text: r.inspections }),
    el("td", { class: `num ${r.ng ? "ng-text" : ""}`, text: r.ng }), el("td", { class: "num", text: fmtPct(r.yield) }))));
  if (!chartDefaults()) return;
  const labels = s.buckets.map((b) => bucketLabel(b, s.bucket));
  const index = new Map(s.buckets.map((b, i) => [b, i]));
  const classes = [...new Set([...state.classNames, ...s.classes.map((c) => c.class_name)])];
  const classSets = classes.map((name, i) => {
    const data = new Array(labels.length).fill(0);
    for (const r of s.class_timeline) if (r.class_name === name && index.has(r.bucket)) data[index.get(r.bucket)] += r.defects;
    return { label: name, data, backgroundColor: PALETTE[i % PALETTE.length], stack: "defects" };
  }).filter((ds) => ds.data.some((v) => v > 0));
  drawChart("chart-classes", {
    type: "bar",
    data: { labels, datasets: classSets },
    options: { maintainAspectRatio: false, scales: { x: { stacked: true, ticks: X_TICKS }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } } },
  });
  const lines = [...new Set(s.timeline.map((r) => r.line ?? "(none)"))];
  const lineSets = lines.map((name, i) => {
    const data = new Array(labels.length).fill(null);
    for (const r of s.timeline) if ((r.line ?? "(none)") === name && index.has(r.bucket)) data[index.get(r.bucket)] = r.yield === null ? null : r.yield * 100;
    const color = ["#4aa8ff", "#3ecf8e", "#f0b429", "#c678dd", "#ff5d5d", "#56b6c2"][i % 6];
    const few = data.filter((v) => v !== null).length <= 2; // one or two points: large dots, not specks
    return { label: name, data, borderColor: color, backgroundColor: color, spanGaps: true, tension: 0.2,
      pointRadius: few ? 6 : 2, pointHoverRadius: few ? 8 : 4 };
  });
  if (s.yield_target != null && lineSets.length) {
    lineSets.push({ label: `target ${fmtPct(s.yield_target)}`, data: labels.map(() => s.yield_target * 100),
      borderColor: "#8a97a6", borderDash: [6, 4], borderWidth: 1, pointRadius: 0, pointHoverRadius: 0 });
  }
  drawChart("chart-yield", {
    type: "line",
    data: { labels, datasets: lineSets },
    options: { maintainAspectRatio: false, scales: { x: { ticks: X_TICKS, offset: true }, y: { min: 0, max: 100, ticks: { callback: (v) => `${v}%` } } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.parsed.y === null ? "-" : c.parsed.y.toFixed(1)}%` } } } },
  });
}

/* Start ----------------------------------------------------------------------------------------- */
async function loadClassNames() {
  try {
    const model = await api("model");
    const names = model.names || (model.metadata && model.metadata.names) || [];
    state.classNames = Array.isArray(names) ? names.map(String) : Object.values(names).map(String);
  } catch (_) {
    state.classNames = [];
  }
  renderReclassButtons();
}

async function boot() {
  try {
    const me = await api("whoami");
    state.whoami = me;
    // the key's name (the one on every audit row) and, for a key that expires, until when
    const until = me.expires_at ? ` · until ${me.expires_at.slice(0, 10)}` : "";
    $("#who").textContent = me.auth_enabled ? `${me.name} · ${me.role}${until}` : "auth off";
  } catch (err) {
    if (err.status !== 401) setConn("bad", err.status ? `error ${err.status}` : "offline");
    return;
  }
  await loadClassNames();
  state.queue = [];
  showView((location.hash || "#live").slice(1));
}

function init() {
  initKeyDialog();
  window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { if (state.view === "review") drawImage(); });
  $("#review-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadQueue(true); });
  $("#stats-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadStats(); });
  $("#queue-more").addEventListener("click", () => loadQueue(false));
  $("#btn-confirm").addEventListener("click", () => decide("confirm"));
  $("#btn-reject").addEventListener("click", () => decide("reject"));
  $("#btn-frame-confirm").addEventListener("click", () => decideFrame("confirm"));
  $("#btn-frame-reject").addEventListener("click", () => decideFrame("reject"));
  $("#btn-complete").addEventListener("click", completeFrame);
  $("#btn-draw").addEventListener("click", toggleDraw);
  $("#btn-undo").addEventListener("click", undo);
  $("#draw-cancel").addEventListener("click", () => { cancelDraw(); drawImage(); });
  initCanvas();
  initMap();
  setInterval(() => { if (state.view === "live" && state.whoami && !document.hidden) refreshLive(); }, 5000);
  setInterval(() => { if (state.view === "review" && state.whoami && !document.hidden) refreshQueue(); }, REFRESH_MS);
  boot();
}

document.addEventListener("DOMContentLoaded", init);
