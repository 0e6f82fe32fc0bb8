/* Operator dashboard: Live, Review (keyboard first) and Stats over the /api/v1 REST API.
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
  queue: [],
  queueCursor: null,
  selected: -1,
  detail: null,
  image: null,           // { inspectionId, bitmap }
  busy: false,
  charts: {},
  timers: [],
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
    if (res.status === 401) askForKey(problem && problem.detail);
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
  $("#key-reason").textContent = reason || "This service needs an API key (role operator to review, mes to read).";
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
  state.view = ["live", "review", "stats"].includes(view) ? view : "live";
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.dataset.view === state.view));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === state.view));
  if (state.view === "live") refreshLive();
  if (state.view === "review" && state.queue.length === 0) loadQueue(true);
  if (state.view === "stats") loadStats();
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
    empty.textContent = err.status === 404
      ? "Camera ingest is not running in this service (no /api/v1/cameras). Inspections posted over the API still appear in Review and Stats."
      : `Cameras unavailable: ${err.message}`;
    return;
  }
  empty.hidden = cams.length > 0;
  empty.textContent = data.running === false
    ? `Camera ingest is not running${data.reason ? `: ${data.reason}` : ""}. Inspections posted over the API still appear in Review and Stats.`
    : "No cameras configured.";
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
    const thumb = el("div", { class: "thumb", text: "no NG yet" });
    const tile = el("div", { class: `tile ${status}`, "data-camera": id },
      el("div", { class: "tile-head" }, el("span", { class: "tile-name", text: id }),
        el("span", { class: "tile-state", text: status })),
      where ? el("div", { class: "muted", text: where }) : null,
      seen ? el("div", { class: "muted tile-model", text: seen }) : null,
      el("div", { class: "tile-nums" },
        el("div", {}, el("div", { class: "k", text: "fps in" }), el("div", { class: "v", text: fmtNum(fpsIn) })),
        el("div", {}, el("div", { class: "k", text: "fps out" }), el("div", { class: "v", text: fmtNum(fpsOut) })),
        el("div", {}, el("div", { class: "k", text: "drops" }), el("div", { class: "v", text: drops ?? "-" }))),
      cam.storage ? el("div", { class: "muted tile-storage", text: storageText(cam.storage) }) : null,
      cam.last_error && status !== "running" ? el("div", { class: "tile-error", text: cam.last_error }) : null,
      thumb);
    let ngId = pick(cam, "last_ng_inspection_id", "latest_ng.inspection_id", "latest_ng_inspection_id", "last_ng.id");
    (async () => {
      try {
        if (ngId === undefined) ngId = await latestNgFor(id);
        if (ngId === null || ngId === undefined) return;
        const url = await thumbFor(ngId);
        thumb.replaceChildren(el("img", { src: url, alt: `latest NG of ${id}`, title: `inspection ${ngId}` }));
      } catch (err) { thumb.textContent = err.status === 410 ? "NG image expired (retention)" : "NG image not stored"; }
    })();
    return tile;
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
  const rows = stats.lines.map((l) => {
    const y = l.yield;
    const cls = y === null ? "" : y < 0.9 ? "bad" : y < 0.97 ? "low" : "";
    return el("div", { class: "yield-row" },
      el("span", { class: "name", text: l.line ?? "(none)" }),
      el("div", { class: `bar ${cls}` }, el("span", { style: `width:${((y ?? 0) * 100).toFixed(1)}%` })),
      el("span", { class: "pct", text: fmtPct(y) }));
  });
  $("#yield-lines").replaceChildren(...(rows.length ? rows : [el("p", { class: "empty", text: "No inspections today." })]));
  renderKpis($("#today-kpis"), stats);
}

function renderKpis(target, stats) {
  const t = stats.totals;
  const r = stats.reviews;
  const y = t.yield;
  const kpi = (k, v, cls = "") => el("div", { class: `kpi ${cls}` }, el("div", { class: "k", text: k }), el("div", { class: "v", text: v }));
  target.replaceChildren(
    kpi("Inspections", String(t.inspections)),
    kpi("Yield", fmtPct(y), y === null ? "" : y < 0.9 ? "bad" : "good"),
    kpi("NG", String(t.ng), t.ng ? "bad" : ""),
    kpi("Pending review", String(r.pending), r.pending ? "warn" : ""),
    kpi("False-positive rate", fmtPct(r.false_positive_rate)),
  );
}

function refreshLive() {
  refreshCameras();
  refreshYield();
}

/* Review ---------------------------------------------------------------------------------------- */
function reviewQuery() {
  const form = $("#review-filters");
  const p = new URLSearchParams();
  for (const name of ["review_status", "line", "camera_id", "class_name", "min_confidence"]) {
    const v = form.elements[name].value.trim();
    if (v) p.set(name, v);
  }
  for (const name of ["from", "to"]) {
    const v = form.elements[name].value;
    if (v) p.set(name, new Date(v).toISOString());
  }
  p.set("sort", "captured_at");
  p.set("order", "desc");
  p.set("limit", "50");
  return p;
}

async function loadQueue(reset) {
  const params = reviewQuery();
  if (!reset && state.queueCursor) params.set("cursor", state.queueCursor);
  let page;
  try {
    page = await api(`defects?${params}`);
  } catch (err) {
    toast(`Cannot load the review queue: ${err.message}`);
    return;
  }
  if (reset) {
    state.queue = [];
    state.selected = -1;
  }
  state.queue.push(...page.items);
  state.queueCursor = page.next_cursor;
  renderQueue();
  if (reset) select(state.queue.length ? 0 : -1);
  refreshPendingBadge();
}

async function refreshPendingBadge() {
  try {
    const s = await api(`stats?bucket=day&from=${encodeURIComponent(new Date(Date.now() - 29 * 86400e3).toISOString())}`);
    $("#pending-badge").textContent = s.reviews.pending ? String(s.reviews.pending) : "";
  } catch (_) { /* badge is optional */ }
}

function renderQueue() {
  const list = $("#queue");
  list.replaceChildren(...state.queue.map((d, i) => el("li", {
    class: i === state.selected ? "selected" : "", "data-index": i, "data-defect-id": d.id,
    onclick: () => select(i),
  },
  el("span", { class: "q-class", text: d.reviewed_class_name && d.review_status === "reclassified" ? `${d.class_name} → ${d.reviewed_class_name}` : d.class_name }),
  el("span", { class: "q-conf", text: fmtNum(d.confidence, 2) }),
  el("span", { class: "q-meta", text: `${fmtTime(d.captured_at)} · ${d.camera_id ?? "-"} · ${d.part_id ?? "no part"}` }),
  el("span", { class: `q-status ${d.review_status === "pending" ? "warn-text" : "muted"}`, text: d.review_status }))));
  $("#queue-empty").hidden = state.queue.length > 0;
  $("#queue-more").hidden = !state.queueCursor;
  $("#queue-count").textContent = `${state.queue.length}${state.queueCursor ? "+" : ""}`;
}

async function select(index) {
  state.selected = index;
  document.querySelectorAll("#queue li").forEach((li) => li.classList.toggle("selected", Number(li.dataset.index) === index));
  const li = $(`#queue li[data-index="${index}"]`);
  if (li) li.scrollIntoView({ block: "nearest" });
  $("#review-message").textContent = "";
  if (index < 0 || index >= state.queue.length) {
    state.detail = null;
    renderDetail();
    drawImage();
    return;
  }
  const id = state.queue[index].id;
  try {
    const detail = await api(`defects/${id}`);
    if (state.selected !== index) return; // the user moved on meanwhile
    state.detail = detail;
    renderDetail();
    await loadImage(detail.inspection.id);
    drawImage();
  } catch (err) {
    toast(`Cannot load defect ${id}: ${err.message}`);
  }
}

function renderDetail() {
  const d = state.detail;
  const facts = $("#detail-facts");
  const status = $("#detail-status");
  $("#detail-id").textContent = d ? `#${d.id}` : "";
  status.textContent = d ? d.review_status : "";
  status.className = `status-pill ${d ? d.review_status : ""}`;
  const buttons = document.querySelectorAll(".actions .btn, .reclass .btn");
  buttons.forEach((b) => { b.disabled = !d || state.busy; });
  if (!d) {
    facts.replaceChildren();
    $("#history").replaceChildren();
    $("#image-title").textContent = "Image";
    $("#image-meta").textContent = "";
    return;
  }
  const ins = d.inspection;
  const row = (k, v) => [el("dt", { text: k }), el("dd", { text: v ?? "-" })];
  facts.replaceChildren(
    ...row("Class", d.class_name),
    ...row("Reviewed", d.reviewed_class_name && d.review_status !== "confirmed" ? d.reviewed_class_name : d.review_status === "confirmed" ? "confirmed" : null),
    ...row("Confidence", fmtNum(d.confidence, 3)),
    ...row("Camera", ins.camera_id),
    ...row("Line", [ins.line, ins.station].filter(Boolean).join(" / ") || null),
    ...row("Part", ins.part_id),
    ...row("Captured", fmtTime(ins.captured_at)),
    ...row("Inspection", `#${ins.id} · ${ins.verdict} · ${ins.defect_count} defect(s)`),
    ...row("Box", d.box.map((v) => Math.round(v)).join(", ")),
  );
  document.querySelectorAll(".reclass .btn").forEach((b) => {
    b.classList.toggle("current", b.dataset.class === (d.reviewed_class_name || d.class_name));
  });
  $("#image-title").textContent = `Inspection #${ins.id}`;
  $("#image-meta").textContent = `${ins.width}×${ins.height} · ${ins.model_version}`;
  const hist = d.history || [];
  $("#history").replaceChildren(...(hist.length ? hist.slice().reverse().map((h) => el("li", {},
    el("div", {}, el("span", { class: "h-when", text: fmtTime(h.created_at) }), " "),
    el("div", { text: `${h.actor}: ${h.action} (${h.before_status}${h.before_class_name ? ` ${h.before_class_name}` : ""} → ${h.after_status}${h.after_class_name ? ` ${h.after_class_name}` : ""})` }),
    h.note ? el("div", { class: "h-note", text: h.note }) : null)) : [el("li", { class: "muted", text: "not reviewed yet" })]));
}

function renderReclassButtons() {
  const box = $("#reclass-buttons");
  box.replaceChildren(...state.classNames.slice(0, 9).map((name, i) => el("button", {
    class: "btn", type: "button", "data-class": name, title: `Reclassify as ${name} (key ${i + 1})`,
    onclick: () => review("reclassify", name),
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

/* The defect's box and label as drawn on a canvas of frameW x frameH at the given scale. */
function boxLook(o, scale, frameW, frameH) {
  const rejected = o.review_status === "rejected";
  const reclassified = o.review_status === "reclassified";
  const name = reclassified && o.reviewed_class_name ? o.reviewed_class_name : o.class_name;
  const cid = reclassified && o.reviewed_class_id != null ? o.reviewed_class_id : o.class_id;
  const [x1, y1, x2, y2] = o.box.map((v) => v * scale);
  const box = [Math.round(Math.max(0, x1)), Math.round(Math.max(0, y1)),
    Math.round(Math.min(frameW - 1, x2)), Math.round(Math.min(frameH - 1, y2))];
  return { rejected, name, box, color: rejected ? REJECTED_COLOR : classColor(cid),
    text: `${name} ${o.confidence.toFixed(2)}` };
}

function strokeBox(ctx, [x1, y1, x2, y2]) { ctx.strokeRect(x1, y1, x2 - x1, y2 - y1); }

/* Draws the boxes, then the labels on top (the selected one last), and returns what was drawn:
   one record per label with its text, rectangle, colours and, for the selected box, its ring. */
function drawDefects(ctx, defects, selectedId, scale, fontPx) {
  const W = ctx.canvas.width;
  const H = ctx.canvas.height;
  const ordered = defects.filter((o) => o.id !== selectedId).concat(defects.filter((o) => o.id === selectedId));
  const looks = ordered.map((o) => ({ id: o.id, selected: o.id === selectedId, ...boxLook(o, scale, W, H) }));
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

function drawImage() {
  const canvas = $("#image-canvas");
  const ctx = canvas.getContext("2d");
  const note = $("#image-note");
  const d = state.detail;
  const img = state.image && d && state.image.inspectionId === d.inspection.id ? state.image : null;
  if (!d || !img || !img.bitmap) {
    canvas.width = 640; canvas.height = 480;
    ctx.fillStyle = "#0c0f12";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    note.textContent = !d ? "Nothing selected" : img && img.error ? `No image: ${img.error}` : "Loading…";
    canvas.drawnLabels = [];
    canvas.dataset.drawn = "";
    return;
  }
  note.textContent = "";
  const { bitmap } = img;
  // Upscale small images (NEU-DET frames are 200x200) so boxes are readable.
  const scale = Math.max(1, Math.min(4, Math.floor(720 / Math.max(bitmap.width, bitmap.height))));
  canvas.width = bitmap.width * scale;
  canvas.height = bitmap.height * scale;
  ctx.imageSmoothingEnabled = scale === 1;
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  // the label text keeps its size on screen where the page shows the canvas shrunk
  const shown = canvas.getBoundingClientRect().width;
  const fontPx = Math.round(LABEL_FONT_PX * Math.max(1, shown > 0 ? canvas.width / shown : 1));
  // What was drawn, for tests and for anyone inspecting the page; the operator sees only the pixels.
  canvas.drawnLabels = drawDefects(ctx, d.inspection.defects || [], d.id, scale, fontPx);
  canvas.dataset.drawn = `${d.inspection.id}:${d.id}`;
}

async function review(action, className) {
  const d = state.detail;
  if (!d || state.busy) return;
  const body = { action };
  if (action === "reclassify") body.class_name = className;
  const note = $("#review-note").value.trim();
  if (note) body.note = note;
  state.busy = true;
  renderDetail();
  const msg = $("#review-message");
  try {
    const updated = await api(`defects/${d.id}/review`, { method: "POST", body });
    $("#review-note").value = "";
    msg.className = "message done";
    msg.textContent = `#${d.id} ${updated.review_status}${action === "reclassify" ? ` as ${className}` : ""}`;
    const idx = state.queue.findIndex((q) => q.id === d.id);
    const statusFilter = $("#review-filters").elements.review_status.value;
    state.busy = false;
    if (idx >= 0 && statusFilter && statusFilter !== updated.review_status) {
      state.queue.splice(idx, 1);
      renderQueue();
      await select(Math.min(idx, state.queue.length - 1));
      $("#review-message").className = "message done";
      $("#review-message").textContent = `#${d.id} ${updated.review_status}${action === "reclassify" ? ` as ${className}` : ""}`;
      if (state.queue.length < 10 && state.queueCursor) loadQueue(false);
    } else {
      if (idx >= 0) state.queue[idx] = { ...state.queue[idx], ...updated };
      renderQueue();
      await select(idx >= 0 && idx + 1 < state.queue.length ? idx + 1 : idx);
    }
    refreshPendingBadge();
  } catch (err) {
    state.busy = false;
    msg.className = "message error";
    msg.textContent = err.status === 403 ? `Not allowed: ${err.message} (an operator key is needed)` : err.message;
    renderDetail();
  }
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
  if (key === "j" || ev.key === "ArrowDown") {
    if (state.selected + 1 < state.queue.length) select(state.selected + 1);
    else if (state.queueCursor) loadQueue(false);
  } else if (key === "k" || ev.key === "ArrowUp") {
    if (state.selected > 0) select(state.selected - 1);
  } else if (key === "a") {
    review("confirm");
  } else if (key === "r") {
    review("reject");
  } else if (/^[1-9]$/.test(ev.key)) {
    const name = state.classNames[Number(ev.key) - 1];
    if (name) review("reclassify", name);
    else toast(`No class ${ev.key}: the model has ${state.classNames.length} classes`);
  } else {
    handled = false;
  }
  if (handled) ev.preventDefault();
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
    return { label: name, data, borderColor: color, backgroundColor: color, spanGaps: true, tension: 0.2, pointRadius: 2 };
  });
  drawChart("chart-yield", {
    type: "line",
    data: { labels, datasets: lineSets },
    options: { maintainAspectRatio: false, scales: { x: { ticks: X_TICKS }, y: { min: 0, max: 100, ticks: { callback: (v) => `${v}%` } } },
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
    $("#who").textContent = me.auth_enabled ? `${me.name} · ${me.role}` : "auth off";
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
  $("#btn-confirm").addEventListener("click", () => review("confirm"));
  $("#btn-reject").addEventListener("click", () => review("reject"));
  setInterval(() => { if (state.view === "live" && state.whoami && !document.hidden) refreshLive(); }, 5000);
  boot();
}

document.addEventListener("DOMContentLoaded", init);
