// audiosim's page: the sound map on a canvas, and searches through the JSON API (see serve.py).
// Every name and folder is put into the page as text (textContent), never as HTML.
"use strict";

const K = 20;
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#fabfd2", "#b6992d", "#499894", "#f1ce63", "#a0cbe8",
  "#ffbe7d", "#8cd17d", "#d4a6c8", "#79706e"];
const $ = (id) => document.getElementById(id);
const canvas = $("map"), ctx = canvas.getContext("2d"), player = $("player");

const state = {
  pts: null,           // columns from /api/points?compact=1: ids, x, y, name, folder, duration, category
  colour: null,        // (n,) index into PALETTE
  keys: [],            // legend: the colour keys, in PALETTE order
  view: { scale: 1, tx: 0, ty: 0 },
  grid: null,          // screen-space buckets for hover: Map "cx,cy" -> [point index]
  hovered: -1, selected: -1,
  neighbours: new Set(),
  where: [],
  query: null,         // what the result list shows: {kind: "id"|"file"|"recommend", ...}
  offset: 0,
  hits: [],
  likes: new Set(), unlikes: new Set(),
  tickets: 0,          // searches started; an answer to an earlier one is dropped
};

// The page's state for tests and scripts.
window.audiosim = { ready: false, drawn: 0, count: 0, answered: 0, screenOf: (id) => screenOf(state.pts.ids.indexOf(id)) };

function whereParams() {
  const p = new URLSearchParams();
  for (const w of state.where) p.append("where", w);
  return p;
}

async function api(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ detail: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(body.detail || `${r.status}`);
  return body;
}

// ---------------------------------------------------------------- the map
function resize() {
  const box = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(box.width * devicePixelRatio));
  canvas.height = Math.max(1, Math.round(box.height * devicePixelRatio));
  draw();
}

function toScreen(i) {  // CSS pixels within the canvas
  const box = canvas.getBoundingClientRect(), s = Math.min(box.width, box.height) * 0.45 * state.view.scale;
  return [box.width / 2 + state.view.tx + state.pts.x[i] * s, box.height / 2 + state.view.ty - state.pts.y[i] * s];
}

function screenOf(i) {  // page coordinates, for tests
  if (i < 0) return null;
  const box = canvas.getBoundingClientRect(), [x, y] = toScreen(i);
  return [box.left + x, box.top + y];
}

function colourKeys() {
  const n = state.pts.count, byCat = state.pts.category.some((c) => c);
  const key = (i) => (byCat ? state.pts.category[i] || "(none)" : (state.pts.folder[i] || "(top)").split("/")[0]);
  const counts = new Map();
  for (let i = 0; i < n; i++) counts.set(key(i), (counts.get(key(i)) || 0) + 1);
  state.keys = [...counts.keys()].sort();
  const index = new Map(state.keys.map((k, j) => [k, Math.min(j, PALETTE.length - 1)]));
  state.colour = new Uint8Array(n);
  for (let i = 0; i < n; i++) state.colour[i] = index.get(key(i));
  const legend = $("legend");
  legend.replaceChildren();
  const title = document.createElement("div");
  title.textContent = byCat ? "category" : "top-level folder";
  legend.append(title);
  for (const k of state.keys) {
    const row = document.createElement("div"), sw = document.createElement("span");
    sw.style.background = PALETTE[index.get(k)];
    row.append(sw, document.createTextNode(`${k} (${counts.get(k)})`));
    legend.append(row);
  }
}

function draw() {
  if (!state.pts) return;
  const dpr = devicePixelRatio, n = state.pts.count;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const r = n > 20000 ? 1 : n > 2000 ? 1.6 : 2.5;
  const grid = new Map(), cell = 8;
  let drawn = 0;
  for (let c = 0; c < PALETTE.length; c++) {  // one fill colour at a time: 100k points in a few ms
    ctx.fillStyle = PALETTE[c];
    for (let i = 0; i < n; i++) {
      if (state.colour[i] !== c) continue;
      const [x, y] = toScreen(i);
      ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
      drawn++;
      const g = `${Math.floor(x / cell)},${Math.floor(y / cell)}`;
      const b = grid.get(g);
      if (b) b.push(i); else grid.set(g, [i]);
    }
  }
  state.grid = grid;
  ctx.lineWidth = 1.5;
  for (const i of state.neighbours) ring(i, "#fff", r + 3);
  if (state.selected >= 0) ring(state.selected, "#ffea00", r + 5);
  window.audiosim.drawn = drawn;
}

function ring(i, colour, radius) {
  const [x, y] = toScreen(i);
  ctx.strokeStyle = colour;
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.stroke();
}

function nearest(mx, my) {  // the point under the pointer (within 6 px), or -1
  if (!state.grid) return -1;
  let best = -1, bestD = 36;
  const cx = Math.floor(mx / 8), cy = Math.floor(my / 8);
  for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
    for (const i of state.grid.get(`${cx + dx},${cy + dy}`) || []) {
      const [x, y] = toScreen(i), d = (x - mx) ** 2 + (y - my) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
  }
  return best;
}

async function loadPoints() {
  $("status").textContent = "loading the map… (the first time, it is computed from the vectors)";
  const p = whereParams();
  p.set("compact", "1");
  const pts = await api(`/api/points?${p}`);
  state.pts = pts;
  state.selected = -1;
  state.neighbours = new Set();
  window.audiosim.count = pts.count;
  colourKeys();
  resize();
  $("status").textContent = `${pts.count} sounds`;
}

let drag = null;
canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
canvas.addEventListener("mousemove", (e) => {
  const box = canvas.getBoundingClientRect(), mx = e.clientX - box.left, my = e.clientY - box.top;
  if (drag && (e.buttons & 1)) {
    state.view.tx += e.clientX - drag.x; state.view.ty += e.clientY - drag.y;
    drag.moved = drag.moved || Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 2;
    drag.x = e.clientX; drag.y = e.clientY;
    draw();
    return;
  }
  const i = nearest(mx, my), tip = $("tip");
  if (i < 0) { tip.hidden = true; state.hovered = -1; return; }
  tip.hidden = false;
  tip.style.left = `${mx + 12}px`; tip.style.top = `${my + 12}px`;
  const d = state.pts.duration[i];
  tip.textContent = `${state.pts.name[i]}\n${state.pts.folder[i] || "(top folder)"}` +
    `${d != null ? `\n${d.toFixed(2)} s` : ""}${state.pts.category[i] ? `  ·  ${state.pts.category[i]}` : ""}`;
  if (i !== state.hovered) { state.hovered = i; play(state.pts.ids[i]); }
});
canvas.addEventListener("mouseleave", () => { $("tip").hidden = true; state.hovered = -1; });
canvas.addEventListener("click", (e) => {
  if (drag && drag.moved) return;
  const box = canvas.getBoundingClientRect(), i = nearest(e.clientX - box.left, e.clientY - box.top);
  if (i >= 0) select(i);
});
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const box = canvas.getBoundingClientRect(), mx = e.clientX - box.left - box.width / 2,
    my = e.clientY - box.top - box.height / 2, f = Math.exp(-e.deltaY * 0.0015);
  state.view.tx = mx - (mx - state.view.tx) * f; state.view.ty = my - (my - state.view.ty) * f;
  state.view.scale *= f;
  draw();
}, { passive: false });
window.addEventListener("resize", resize);

function play(id) {
  player.src = `/audio/${encodeURIComponent(id)}`;
  player.play().catch(() => {});  // a browser may refuse to play before the first click: hovering then is silent
}

function select(i) {
  state.selected = i;
  state.likes = new Set([state.pts.ids[i]]);
  state.unlikes = new Set();
  runQuery({ kind: "id", id: state.pts.ids[i], label: state.pts.name[i] }, 0);
}

// ---------------------------------------------------------------- searches and the result list
// Shown when the collection's model has a category part to leave out (see --timbre).
const timbre = () => !$("timbre-box").hidden && $("timbre").checked;
$("timbre").addEventListener("change", () => { if (state.query) runQuery(state.query, 0); });

async function runQuery(query, offset) {
  const ticket = ++state.tickets;  // only the latest search may fill the list, whichever answers last
  state.query = query;
  state.offset = offset;
  $("message").textContent = "";
  try {
    let res;
    if (query.kind === "id") {
      const p = whereParams();
      p.set("id", query.id); p.set("k", K); p.set("offset", offset);
      if (timbre()) p.set("timbre", "true");
      res = await api(`/api/search?${p}`);
    } else if (query.kind === "file") {
      const form = new FormData();
      form.append("file", query.file, query.file.name);
      form.append("k", K); form.append("offset", offset);
      for (const w of state.where) form.append("where", w);
      if (timbre()) form.append("timbre", "true");
      res = await api("/api/search", { method: "POST", body: form });
    } else {
      res = await api("/api/recommend", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ like: [...state.likes], unlike: [...state.unlikes], k: K, offset, where: state.where,
          timbre: timbre() }),
      });
    }
    if (ticket === state.tickets) showResults(query.label, res.results);
  } catch (err) {
    if (ticket === state.tickets) $("message").textContent = err.message;
  } finally {
    window.audiosim.answered++;
  }
}

function showResults(label, hits) {
  state.hits = hits;
  $("results-title").textContent = `${state.offset ? `more ` : ""}like ${label}${timbre() ? " (by sound alone)" : ""}`;
  $("actions").hidden = hits.length === 0;
  const list = $("results");
  list.replaceChildren();
  list.start = state.offset + 1;
  const index = state.pts ? new Map(state.pts.ids.map((id, i) => [id, i])) : new Map();
  state.neighbours = new Set(hits.map((h) => index.get(h.id)).filter((i) => i !== undefined));
  for (const h of hits) list.append(resultItem(h));
  if (!hits.length) $("message").textContent = "no sound matches";
  draw();
}

function resultItem(h) {
  const li = document.createElement("li"), p = h.payload || {};
  li.className = "drag";
  li.draggable = true;
  li.dataset.id = h.id;
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = `${p.name ?? h.path}  ${h.score.toFixed(3)}`;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = [p.folder || "(top folder)", p.duration != null ? `${p.duration.toFixed(2)} s` : "",
    p.category ? `${p.category} ${(p.category_score ?? 0).toFixed(2)}` : ""].filter(Boolean).join("  ·  ");
  const audio = document.createElement("audio");
  audio.controls = true; audio.preload = "none";
  audio.src = `/audio/${encodeURIComponent(h.id)}`;
  const like = vote("+", "like", h.id), unlike = vote("−", "unlike", h.id);
  name.append(like, unlike);
  li.append(name, meta, audio);
  li.addEventListener("dragstart", (e) => {
    const url = new URL(`/audio/${encodeURIComponent(h.id)}`, location.href).href;
    const type = audioType(p.ext);
    // Chromium turns DownloadURL into a real file when dropped on a file manager or a DAW.
    e.dataTransfer.setData("DownloadURL", `${type}:${p.name || "sound"}:${url}`);
    e.dataTransfer.setData("text/uri-list", url);
    e.dataTransfer.setData("text/plain", h.path || "");
  });
  return li;
}

function audioType(ext) {
  return { ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg",
    ".aif": "audio/aiff", ".aiff": "audio/aiff" }[(ext || "").toLowerCase()] || "application/octet-stream";
}

function vote(text, kind, id) {
  const b = document.createElement("button");
  b.className = `vote ${kind}`;
  b.textContent = text;
  b.title = kind === "like" ? "more like this" : "less like this";
  const set = kind === "like" ? state.likes : state.unlikes, other = kind === "like" ? state.unlikes : state.likes;
  b.classList.toggle("on", set.has(id));
  b.addEventListener("click", (e) => {
    e.preventDefault();
    if (set.has(id)) set.delete(id); else { set.add(id); other.delete(id); }
    for (const el of document.querySelectorAll(`#results li`)) {
      if (el.dataset.id !== id) continue;
      el.querySelector(".vote.like").classList.toggle("on", state.likes.has(id));
      el.querySelector(".vote.unlike").classList.toggle("on", state.unlikes.has(id));
    }
  });
  return b;
}

$("recommend").addEventListener("click", () => {
  if (!state.likes.size) { $("message").textContent = "mark at least one sound with +"; return; }
  runQuery({ kind: "recommend", label: `${state.likes.size} liked, ${state.unlikes.size} unliked` }, 0);
});
$("next").addEventListener("click", () => { if (state.query) runQuery(state.query, state.offset + K); });
$("copy").addEventListener("click", async () => {
  const text = state.hits.map((h) => h.path).join("\n");
  try { await navigator.clipboard.writeText(text); $("message").textContent = `copied ${state.hits.length} paths`; }
  catch { $("message").textContent = text; }
});
$("save").addEventListener("click", async () => {
  const name = prompt("Name of the collection (a folder of links to these sounds):");
  if (!name) return;
  try {
    const r = await api("/api/collections", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ name, ids: state.hits.map((h) => h.id) }) });
    $("message").textContent = `saved ${r.total} sounds in ${r.folder}`;
  } catch (err) { $("message").textContent = err.message; }
});

// ---------------------------------------------------------------- filters and files in
$("filter").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("where").value.trim();
  const previous = state.where;
  state.where = text ? text.split(/\s*;\s*|\s+(?=!?[a-z_]+\s*(?:!=|<=|>=|\^=|[=<>~]))/i).filter(Boolean) : [];
  $("filter-error").textContent = "";
  try {
    await loadPoints();
  } catch (err) {
    state.where = previous;
    $("filter-error").textContent = err.message;
  }
});

function searchFile(file) {
  runQuery({ kind: "file", file, label: file.name }, 0);
}
$("pick").addEventListener("change", (e) => { if (e.target.files[0]) searchFile(e.target.files[0]); });
document.addEventListener("dragover", (e) => {
  if ([...e.dataTransfer.types].includes("Files")) { e.preventDefault(); document.body.classList.add("dropping"); }
});
document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
document.addEventListener("drop", (e) => {
  document.body.classList.remove("dropping");
  if (!e.dataTransfer.files.length) return;
  e.preventDefault();
  searchFile(e.dataTransfer.files[0]);
});

(async () => {
  try {
    const info = await api("/api/info");
    $("info").textContent = `${info.collection}: ${info.points} sounds · model ${info.model ?? "?"}`;
    $("timbre-box").hidden = !info.timbre;
    await loadPoints();
  } catch (err) {
    $("status").textContent = err.message;
    $("message").textContent = err.message;
  }
  window.audiosim.ready = true;
})();
