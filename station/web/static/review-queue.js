// The review queue (templates/review.html): the gallery of images most worth a look first, its filters (kept in the
// URL), and the bulk confirm / mark-good of the selected images.
import { $, el, fmtTime, fmtNum, toast, api } from "./common.js";
import { st, svgEl, classColor, toLocalInput, fromLocalInput, saveNav } from "./review-shared.js";

const FILTERS = ["reviewed", "outcome", "class_name", "min_conf", "max_conf", "since", "until", "model_id"];
const LIMIT = 48;

export function initQueue() {
  const q = { offset: 0, selected: new Set(), items: [], total: 0, armed: null };
  const form = $("filters");

  function readUrl() {
    const p = new URLSearchParams(window.location.search);
    for (const k of FILTERS) {
      const input = form.elements[k];
      const v = p.get(k) || "";
      if (k === "since" || k === "until") input.value = toLocalInput(v);
      else if (input.tagName === "SELECT" && v && ![...input.options].some((o) => o.value === v)) input.add(new Option(v, v));
      if (k !== "since" && k !== "until") input.value = v || (k === "reviewed" ? "no" : "");
    }
    q.offset = Math.max(0, parseInt(p.get("offset") || "0", 10) || 0);
  }
  function query() {
    const p = new URLSearchParams();
    for (const k of FILTERS) {
      let v = form.elements[k].value;
      if (k === "since" || k === "until") v = fromLocalInput(v);
      if (v !== "") p.set(k, v);
    }
    return p;
  }
  function writeUrl() {
    const p = query();
    if (q.offset) p.set("offset", q.offset);
    history.replaceState(null, "", "/review" + (p.toString() ? "?" + p : ""));
  }

  function tile(it) {
    const art = el("article", "rv-tile");
    art.setAttribute("role", "listitem");
    art.dataset.imageId = it.image_id;
    const check = el("label", "rv-tile-check");
    const cb = el("input");
    cb.type = "checkbox";
    cb.className = "rv-select";
    cb.setAttribute("aria-label", "Select image " + it.image_id + " (part " + it.part_id + ")");
    cb.checked = q.selected.has(it.image_id);
    art.classList.toggle("selected", cb.checked);
    cb.addEventListener("change", () => {
      if (cb.checked) q.selected.add(it.image_id); else q.selected.delete(it.image_id);
      art.classList.toggle("selected", cb.checked);
      updateSelection();
    });
    check.append(cb);
    const a = el("a", "rv-thumb");
    a.href = "/review/image/" + it.image_id;
    a.title = it.why;
    const img = el("img");
    img.loading = "lazy";
    img.alt = "Part " + it.part_id + " " + it.camera_id + ": " + it.outcome;
    img.src = it.thumb;
    a.append(img);
    if (it.width && it.height) {
      const svg = svgEl("svg", { viewBox: "0 0 " + it.width + " " + it.height, preserveAspectRatio: "xMidYMid meet", "aria-hidden": "true" });
      const sw = Math.max(it.width, it.height) / 160;
      for (const b of it.boxes) {
        svg.append(svgEl("rect", {
          x: b[0], y: b[1], width: Math.max(1, b[2] - b[0]), height: Math.max(1, b[3] - b[1]),
          fill: "none", stroke: classColor(b[4]), "stroke-width": sw, "stroke-dasharray": b[5] === "model" ? (3 * sw) + " " + (2 * sw) : "none",
        }));
      }
      a.append(svg);
    }
    a.addEventListener("click", () => rememberNav(it.image_id));
    const meta = el("div", "rv-tile-meta");
    const row = el("div", "ui-row");
    const badge = el("span", "ui-badge", it.outcome);
    badge.dataset.outcome = it.outcome;
    row.append(badge, el("span", null, "part " + it.part_id), el("span", "ui-muted", it.camera_id));
    if (it.max_score !== null) row.append(el("span", "ui-muted", "max " + fmtNum(it.max_score)));
    if (it.reviewed) {
      const r = el("span", "ui-badge", it.verdict === "good" ? "\u2713 GOOD" : "\u2713 LABELED");
      r.dataset.state = "reviewed";
      r.title = it.verdict === "good" ? "Reviewed: no defect" : "Reviewed: the boxes are right";
      row.append(r);
    }
    row.append(el("span", "rv-tier", it.tier.replace("_", " ")));
    meta.append(row);
    meta.append(el("div", "rv-why", it.why));
    meta.append(el("div", "ui-muted", it.n_labels ? it.n_labels + " box" + (it.n_labels > 1 ? "es" : "") + ": " + it.classes.join(", ") : "no boxes"));
    meta.append(el("div", "ui-muted ui-small", fmtTime(it.t_wall)));
    art.append(check, a, meta);
    return art;
  }

  function rememberNav(current) {
    saveNav({ query: query().toString(), ids: q.items.map((it) => it.image_id), current });
  }

  function updateSelection() {
    const n = q.selected.size;
    $("selected-count").textContent = n + " selected";
    $("bulk-confirm").disabled = n === 0;
    $("bulk-good").disabled = n === 0;
    const boxes = [...document.querySelectorAll(".rv-select")];
    $("select-all").checked = boxes.length > 0 && boxes.every((b) => b.checked);
    disarm();
  }

  async function load() {
    writeUrl();
    const p = query();
    p.set("limit", LIMIT);
    p.set("offset", q.offset);
    let data;
    try {
      data = await api("GET", "/api/review/queue?" + p);
    } catch (e) {
      toast("Cannot load the queue: " + e.message, "error");
      return;
    }
    q.items = data.items;
    q.total = data.total;
    const grid = $("grid");
    grid.replaceChildren(...data.items.map(tile));
    $("empty").hidden = data.items.length > 0;
    const dl = $("tier-counts");
    dl.replaceChildren();
    for (const [k, v] of Object.entries(data.counts)) dl.append(el("dt", null, k.replace("_", " ")), el("dd", null, v));
    dl.append(el("dt", null, "total"), el("dd", null, data.total));
    const first = data.items.length ? q.offset + 1 : 0;
    $("page-info").textContent = first + "-" + (q.offset + data.items.length) + " of " + data.total;
    $("prev-page").disabled = q.offset === 0;
    $("next-page").disabled = q.offset + data.items.length >= data.total;
    saveNav({ query: query().toString(), ids: data.items.map((it) => it.image_id) });
    updateSelection();
  }

  function disarm() {
    if (q.armed) { clearTimeout(q.armed.timer); q.armed.btn.textContent = q.armed.text; q.armed = null; }
  }
  async function bulk(kind, btn) {
    const ids = [...q.selected];
    if (!ids.length) return;
    if (kind === "good" && (!q.armed || q.armed.btn !== btn)) { // destructive: ask for a second click
      disarm();
      q.armed = { btn, text: btn.textContent, timer: setTimeout(disarm, 5000) };
      btn.textContent = "Click again: delete every box of " + ids.length + " image" + (ids.length > 1 ? "s" : "");
      return;
    }
    disarm();
    btn.disabled = true;
    try {
      const r = await api("POST", "/api/review/bulk/" + kind, { image_ids: ids });
      toast((kind === "good" ? "Marked good: " : "Confirmed: ") + r.images + " image" + (r.images > 1 ? "s" : ""), "ok");
      q.selected.clear();
      await load();
    } catch (e) {
      toast("Nothing changed: " + e.message, "error");
      btn.disabled = false;
    }
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); q.offset = 0; q.selected.clear(); load(); });
  $("reset").addEventListener("click", () => {
    form.reset();
    form.elements.reviewed.value = "no";
    q.offset = 0;
    q.selected.clear();
    load();
  });
  $("select-all").addEventListener("change", (ev) => {
    for (const it of q.items) { if (ev.target.checked) q.selected.add(it.image_id); else q.selected.delete(it.image_id); }
    for (const cb of document.querySelectorAll(".rv-select")) {
      cb.checked = ev.target.checked;
      cb.closest(".rv-tile").classList.toggle("selected", cb.checked);
    }
    updateSelection();
  });
  $("bulk-confirm").addEventListener("click", (ev) => bulk("confirm", ev.currentTarget));
  $("bulk-good").addEventListener("click", (ev) => bulk("good", ev.currentTarget));
  $("prev-page").addEventListener("click", () => { q.offset = Math.max(0, q.offset - LIMIT); load(); });
  $("next-page").addEventListener("click", () => { q.offset += LIMIT; load(); });

  (async () => {
    try {
      const f = await api("GET", "/api/review/facets");
      st.classes = f.classes;
      for (const c of f.classes) form.elements.class_name.add(new Option(c, c));
      for (const m of f.models) form.elements.model_id.add(new Option(m, m));
    } catch (e) { toast("Cannot load the filters: " + e.message, "error"); }
    readUrl();
    await load();
    document.body.dataset.ready = "1";
  })();
}
