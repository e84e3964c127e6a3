// QA review pages: the queue gallery, the image editor, and the dataset page.
// Every change is a call to /api/review/* (labeling: append-only labels, audited); nothing is edited in place.
"use strict";
(function () {
  const { $, el, fmtTime, fmtNum, toast, errText, api } = window.UI;
  const PAGE = document.body.dataset.page;
  const PALETTE = ["#ff5d5d", "#4aa3ff", "#ffd23f", "#3ddc84", "#c77dff", "#ff9f43", "#2ee6d6", "#ff7eb6", "#a3e635", "#f97316"];
  const st = { classes: [] };

  // -- helpers of the review pages -------------------------------------------------------------
  // The SVG namespace, taken from an <svg> the HTML parser made (templates/review.html).
  const svgProto = document.getElementById("svg-proto");
  const SVG_NS = svgProto ? svgProto.content.firstElementChild.namespaceURI : null;
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function fmtShort(t) {  // time of day today, else month-day and time
    if (t === null || t === undefined) return "-";
    const d = new Date(t * 1000), now = new Date();
    const time = d.toLocaleTimeString([], { hour12: false });
    if (d.toDateString() === now.toDateString()) return time;
    return String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0") + " " + time.slice(0, 5);
  }
  function classColor(name) {
    let i = st.classes.indexOf(name);
    if (i < 0) { // a class outside the known list: a stable colour from its name
      i = 0;
      for (const ch of String(name)) i = (i * 31 + ch.charCodeAt(0)) >>> 0;
    }
    return PALETTE[i % PALETTE.length];
  }
  function toLocalInput(t) {
    if (t === null || t === undefined || t === "") return "";
    const d = new Date(Number(t) * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  function fromLocalInput(v) {
    if (!v) return "";
    const t = new Date(v).getTime();
    return Number.isFinite(t) ? String(Math.round(t / 1000)) : "";
  }
  function typing(ev) {
    const t = ev.target;
    return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable);
  }
  const NAV_KEY = "review.nav";
  function loadNav() {
    try { return JSON.parse(sessionStorage.getItem(NAV_KEY)) || { query: "", ids: [] }; } catch (e) { return { query: "", ids: [] }; }
  }
  function saveNav(nav) { sessionStorage.setItem(NAV_KEY, JSON.stringify(nav)); }

  // =================================================================================== queue page
  const FILTERS = ["reviewed", "outcome", "class_name", "min_conf", "max_conf", "since", "until", "model_id"];
  const LIMIT = 48;

  function initQueue() {
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

  // ================================================================================== editor page
  const HANDLE = 6;     // handle half-size, screen px
  const MIN_BOX = 2;    // smallest box drawn, image px

  function initEditor() {
    const id = parseInt(document.body.dataset.imageId, 10);
    const stage = $("stage");
    const canvas = $("canvas");
    const ctx = canvas.getContext("2d");
    const img = new Image();
    const ed = {
      detail: null, loaded: false, scale: 1, ox: 0, oy: 0, fit: 1,
      selected: null, mode: "select", drag: null, preview: null, drawClass: null, busy: false, space: false,
      heat: null, heatOn: true,  // the coloured heat map of a no-labels inspector (window.Heat), and whether it is shown
    };

    // -- geometry ----------------------------------------------------------------------------
    const W = () => (ed.detail ? ed.detail.image.width : 1);
    const H = () => (ed.detail ? ed.detail.image.height : 1);
    const toImg = (cx, cy) => [(cx - ed.ox) / ed.scale, (cy - ed.oy) / ed.scale];
    const toCan = (x, y) => [ed.ox + x * ed.scale, ed.oy + y * ed.scale];
    const clampX = (x) => Math.min(Math.max(x, 0), W());
    const clampY = (y) => Math.min(Math.max(y, 0), H());
    function localPoint(ev) {
      const r = canvas.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    }
    function sizeCanvas() {
      const dpr = window.devicePixelRatio || 1;
      const w = stage.clientWidth, h = stage.clientHeight;
      canvas.width = Math.max(1, Math.round(w * dpr));
      canvas.height = Math.max(1, Math.round(h * dpr));
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    function fitView() {
      const w = stage.clientWidth, h = stage.clientHeight;
      ed.fit = Math.min(w / W(), h / H()) * 0.98;
      ed.scale = ed.fit;
      ed.ox = (w - W() * ed.scale) / 2;
      ed.oy = (h - H() * ed.scale) / 2;
      render();
    }
    function zoomAt(factor, cx, cy) {
      const s = Math.min(Math.max(ed.scale * factor, ed.fit * 0.25), 40);
      const [ix, iy] = toImg(cx, cy);
      ed.scale = s;
      ed.ox = cx - ix * s;
      ed.oy = cy - iy * s;
      render();
    }
    function zoomCenter(factor) { zoomAt(factor, stage.clientWidth / 2, stage.clientHeight / 2); }

    // -- labels --------------------------------------------------------------------------------
    const labels = () => (ed.detail ? ed.detail.labels : []);
    const byId = (lid) => labels().find((l) => l.id === lid) || null;
    function boxOf(lab) {
      if (ed.preview && ed.preview.id === lab.id) return ed.preview.box;
      return [lab.x1, lab.y1, lab.x2, lab.y2];
    }
    // Handle half-size on screen: smaller on small boxes, so the middle of a box stays grabbable to move it.
    function handleSize(box) {
      const side = Math.min(box[2] - box[0], box[3] - box[1]) * ed.scale;
      return Math.max(2.5, Math.min(HANDLE, side / 5));
    }
    function handles(box) {
      const [x1, y1, x2, y2] = box, mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
      const hs = handleSize(box);
      const out = { nw: [x1, y1], ne: [x2, y1], se: [x2, y2], sw: [x1, y2] };
      if ((x2 - x1) * ed.scale >= 8 * hs) { out.n = [mx, y1]; out.s = [mx, y2]; }
      if ((y2 - y1) * ed.scale >= 8 * hs) { out.e = [x2, my]; out.w = [x1, my]; }
      return out;
    }
    function hitHandle(cx, cy) {
      const lab = byId(ed.selected);
      if (!lab) return null;
      const box = boxOf(lab), hs = handleSize(box) + 1.5;
      for (const [name, [x, y]] of Object.entries(handles(box))) {
        const [hx, hy] = toCan(x, y);
        if (Math.abs(cx - hx) <= hs && Math.abs(cy - hy) <= hs) return name;
      }
      return null;
    }
    function hitBox(cx, cy) {
      const [x, y] = toImg(cx, cy);
      const pad = 3 / ed.scale;
      let best = null, area = Infinity;
      for (const lab of labels()) {
        const [x1, y1, x2, y2] = boxOf(lab);
        if (x >= x1 - pad && x <= x2 + pad && y >= y1 - pad && y <= y2 + pad) {
          const a = (x2 - x1) * (y2 - y1);
          if (a < area) { best = lab; area = a; }
        }
      }
      return best;
    }

    // -- drawing ---------------------------------------------------------------------------------
    function render() {
      const w = stage.clientWidth, h = stage.clientHeight;
      ctx.clearRect(0, 0, w, h);
      canvas.dataset.scale = ed.scale;
      canvas.dataset.ox = ed.ox;
      canvas.dataset.oy = ed.oy;
      $("zoom-level").textContent = Math.round(ed.scale * 100) + "%";
      if (!ed.loaded) return;
      ctx.imageSmoothingEnabled = ed.scale < 2;
      ctx.drawImage(img, ed.ox, ed.oy, W() * ed.scale, H() * ed.scale);
      if (ed.heat && ed.heatOn) window.Heat.draw(ctx, ed.heat, ed.ox, ed.oy, W() * ed.scale, H() * ed.scale);
      canvas.dataset.heat = !ed.heat ? "none" : ed.heatOn ? "on" : "off";
      ctx.strokeStyle = "#3a4350";
      ctx.lineWidth = 1;
      ctx.strokeRect(ed.ox - 0.5, ed.oy - 0.5, W() * ed.scale + 1, H() * ed.scale + 1);
      const sel = byId(ed.selected);
      for (const lab of labels()) if (lab !== sel) drawLabel(lab, false);
      if (sel) drawLabel(sel, true);
      if (ed.drag && ed.drag.kind === "draw" && ed.drag.box) {
        const [x1, y1, x2, y2] = ed.drag.box;
        const [a, b] = toCan(x1, y1), [c, d] = toCan(x2, y2);
        ctx.setLineDash([6, 4]);
        ctx.strokeStyle = classColor(ed.drawClass);
        ctx.lineWidth = 2;
        ctx.strokeRect(a, b, c - a, d - b);
        ctx.setLineDash([]);
      }
    }
    function drawLabel(lab, selected) {
      const [x1, y1, x2, y2] = boxOf(lab);
      const [a, b] = toCan(x1, y1), [c, d] = toCan(x2, y2);
      const color = classColor(lab.class_name);
      ctx.save();
      ctx.lineWidth = selected ? 3 : 2;
      ctx.strokeStyle = color;
      ctx.setLineDash(lab.source === "model" ? [7, 4] : lab.source === "import" ? [2, 3] : []);
      if (selected) { ctx.fillStyle = color + "22"; ctx.fillRect(a, b, c - a, d - b); }
      ctx.strokeRect(a, b, c - a, d - b);
      ctx.setLineDash([]);
      const tag = (lab.source === "qa" ? "\u2713 " : "") + lab.class_name + (lab.confidence !== null && lab.source === "model" ? " " + lab.confidence.toFixed(2) : "");
      ctx.font = "bold 12px DejaVu Sans, sans-serif";
      const tw = ctx.measureText(tag).width + 8;
      const ty = b - 17 < 0 ? d + 1 : b - 17;
      ctx.fillStyle = color;
      ctx.fillRect(a - (selected ? 1.5 : 1), ty, tw, 16);
      ctx.fillStyle = "#000";
      ctx.fillText(tag, a + 3, ty + 12);
      if (selected) {
        const hs = handleSize([x1, y1, x2, y2]);
        for (const [x, y] of Object.values(handles([x1, y1, x2, y2]))) {
          const [hx, hy] = toCan(x, y);
          ctx.fillStyle = "#fff";
          ctx.fillRect(hx - hs, hy - hs, 2 * hs, 2 * hs);
          ctx.strokeStyle = "#000";
          ctx.lineWidth = 1;
          ctx.strokeRect(hx - hs + 0.5, hy - hs + 0.5, 2 * hs - 1, 2 * hs - 1);
        }
      }
      ctx.restore();
    }

    // -- side panel -------------------------------------------------------------------------------
    function renderPanel() {
      const d = ed.detail;
      const o = $("outcome");
      o.textContent = d.inspection.outcome || "";
      o.dataset.outcome = d.inspection.outcome || "";
      $("part-id").textContent = d.inspection.part_id;
      $("img-meta").textContent = "#" + d.image.id + " \u00B7 " + d.image.camera_id + " \u00B7 " + d.image.width + "\u00D7" + d.image.height + " " + d.image.format;
      const cams = $("cameras");  // every image of this part, one per camera
      cams.replaceChildren(...d.inspection.images.map((im, i) => {
        const node = el(im.id === d.image.id ? "b" : im.deleted ? "s" : "a", null, im.camera_id);
        if (node.tagName === "A") node.href = "/review/image/" + im.id;
        if (im.deleted) node.title = "image deleted by the disk budget";
        return i ? [document.createTextNode(" \u00B7 "), node] : [node];
      }).flat());
      $("model-id").textContent = d.inspection.model_id || "-";
      $("t-wall").textContent = fmtTime(d.inspection.t_wall);
      $("reasons").textContent = d.inspection.reasons.length ? d.inspection.reasons.join(" \u00B7 ") : "-";
      $("image-score").textContent = window.Heat.fmtScore(d.inspection.image_score);
      $("review-state").textContent = d.review ? (d.review.verdict === "good" ? "GOOD (no defect)" : "LABELED") + " by " + d.review.reviewed_by + ", " + fmtTime(d.review.reviewed_at) : "not reviewed";
      document.title = "Part " + d.inspection.part_id + " (image " + d.image.id + ") - review";
      st.classes = d.classes;
      const sel = $("class-select");
      const cur = sel.value;
      sel.replaceChildren(...d.classes.map((c, i) => new Option((i < 9 ? i + 1 + ": " : "") + c, c)));
      if (!ed.drawClass || !d.classes.includes(ed.drawClass)) ed.drawClass = d.classes[0] || null;
      const lab = byId(ed.selected);
      sel.value = lab ? lab.class_name : (cur && d.classes.includes(cur) ? cur : ed.drawClass);
      renderLabelList();
      renderHistory();
    }
    function renderLabelList() {
      const ul = $("label-list");
      const labs = labels();
      $("label-count").textContent = labs.length ? "(" + labs.length + ")" : "";
      if (!labs.length) { ul.replaceChildren(el("li", "ui-empty-row", "No boxes: the image shows no defect" + (ed.detail.review ? "." : " (not reviewed yet).")) ); }
      else {
        ul.replaceChildren(...labs.map((lab) => {
          const li = el("li");
          li.dataset.labelId = lab.id;
          li.classList.toggle("selected", lab.id === ed.selected);
          const sw = el("span", "rv-swatch");
          sw.style.background = classColor(lab.class_name);
          const text = el("span", "rv-label-text");
          text.append(el("b", null, lab.class_name + " "), el("small", null,
            "#" + lab.id + " [" + [lab.x1, lab.y1, lab.x2, lab.y2].map((v) => Math.round(v)).join(", ") + "]" +
            (lab.confidence !== null && lab.source === "model" ? " conf " + lab.confidence.toFixed(2) : "")));
          const src = el("span", "rv-src", lab.source === "qa" ? "\u2713 qa" : lab.source);
          src.dataset.src = lab.source;
          li.append(sw, text, src);
          li.addEventListener("click", () => select(lab.id));
          return li;
        }));
      }
      $("confirm-selected").disabled = ed.selected === null;
      $("delete-selected").disabled = ed.selected === null;
      renderAnomalyForm();
    }
    // An anomaly box (no-labels inspector) selected: QA names the defect it shows, a known class or a new one.
    function renderAnomalyForm() {
      const lab = byId(ed.selected);
      const form = $("anomaly-form");
      const show = !!lab && !!ed.detail && lab.class_name === ed.detail.anomaly_class;
      if (show && form.hidden) $("anomaly-class").value = "";
      form.hidden = !show;
      if (!show) return;
      $("anomaly-classes").replaceChildren(...st.classes.filter((c) => c !== ed.detail.anomaly_class).map((c) => new Option(c, c)));
    }
    function labelAnomaly(ev) {
      ev.preventDefault();
      const lab = byId(ed.selected);
      const name = $("anomaly-class").value.trim();
      if (!lab || !name) { toast("Pick or type the defect class first"); return; }
      send("POST", base + "/labels/" + lab.id + "/as-defect", { class_name: name }, "Anomaly labelled as " + name, true);
      stage.focus({ preventScroll: true });
    }
    function renderHeatToggle() {
      const b = $("heat-toggle");
      b.hidden = !ed.heat;
      b.setAttribute("aria-pressed", ed.heatOn ? "true" : "false");
    }
    function toggleHeat() {
      if (!ed.heat) { toast("No heat map for this image (the model is not a no-labels inspector)"); return; }
      ed.heatOn = !ed.heatOn;
      renderHeatToggle();
      render();
    }
    function boxText(v) {
      if (!v || v.x1 === undefined) return "";
      return v.class_name + " [" + [v.x1, v.y1, v.x2, v.y2].map((n) => Math.round(n)).join(", ") + "]";
    }
    function change(a) {
      const b = a.before, f = a.after;
      switch (a.action) {
        case "add": case "import_add": return "+ " + boxText(f);
        case "delete": case "import_delete": return "\u2212 " + boxText(b) + (a.reason ? " (" + a.reason + ")" : "");
        case "confirm": case "import_confirm": return "\u2713 " + boxText(b);
        case "move": case "reclass": case "move+reclass": return boxText(b) + " \u2192 " + boxText(f);
        case "mark_good": return "image good: " + (b && b.labels ? b.labels.length : 0) + " box(es) removed";
        case "import": return "imported with " + (f && f.labels ? f.labels.length : 0) + " box(es)";
        default: return a.reason || "";
      }
    }
    function renderHistory() {
      const rows = ed.detail.audit.slice().reverse();
      const tb = $("audit-body");
      if (!rows.length) tb.replaceChildren(row1("No change yet: the boxes are the model's.", 4));
      else tb.replaceChildren(...rows.map((a) => {
        const tr = el("tr");
        tr.dataset.action = a.action;
        const when = el("td", "rv-nowrap", fmtShort(a.t_wall));
        when.title = fmtTime(a.t_wall);
        tr.append(when, el("td", null, a.user), el("td", null, a.action), el("td", null, change(a)));
        return tr;
      }));
      const hb = $("history-body");
      hb.replaceChildren(...ed.detail.history.map((l) => {
        const tr = el("tr");
        tr.append(el("td", null, l.id), el("td", null, l.class_name), el("td", null, [l.x1, l.y1, l.x2, l.y2].map((n) => Math.round(n)).join(",")),
          el("td", null, l.source), el("td", null, l.status), el("td", null, l.supersedes === null ? "" : "#" + l.supersedes), el("td", null, l.created_by));
        return tr;
      }));
    }
    function row1(text, cols) {
      const tr = el("tr", "ui-empty-row");
      const td = el("td", null, text);
      td.colSpan = cols;
      tr.append(td);
      return tr;
    }

    function select(lid) {
      ed.selected = lid;
      const lab = byId(lid);
      if (lab) $("class-select").value = lab.class_name;
      else if (ed.drawClass) $("class-select").value = ed.drawClass;
      renderLabelList();
      render();
      const li = document.querySelector('#label-list li[data-label-id="' + lid + '"]');
      if (li) li.scrollIntoView({ block: "nearest" });
    }
    function setMode(mode) {
      ed.mode = mode;
      stage.dataset.mode = mode;
      $("mode-draw").setAttribute("aria-pressed", mode === "draw" ? "true" : "false");
      $("mode-hint").textContent = mode === "draw"
        ? "Drag on the image to draw a " + (ed.drawClass || "") + " box \u00B7 Esc cancels"
        : "Click a box to select it \u00B7 drag the image to pan \u00B7 wheel to zoom";
    }

    // -- server ------------------------------------------------------------------------------------
    async function load(keepView) {
      try {
        ed.detail = await api("GET", "/api/review/images/" + id);
      } catch (e) {
        note(e.status === 404 ? "No image " + id + ": " + e.message : "Cannot load the image: " + e.message);
        return;
      }
      if (!byId(ed.selected)) ed.selected = null;
      renderPanel();
      if (!keepView) {
        if (ed.detail.image.deleted) { note("The image file was deleted by the disk budget; its labels are shown in the history only."); return; }
        const heat = ed.detail.heatmap ? window.Heat.load(ed.detail.heatmap.url) : Promise.resolve(null);
        img.onload = async () => {
          ed.heat = await heat;
          renderHeatToggle();
          ed.loaded = true; $("stage-note").hidden = true; fitView(); document.body.dataset.ready = "1";
        };
        img.onerror = () => note("The image file cannot be loaded.");
        note("Loading image\u2026");
        img.src = ed.detail.image.url;
      } else {
        render();
      }
    }
    function note(text) {
      const n = $("stage-note");
      n.textContent = text;
      n.hidden = false;
    }
    async function send(method, url, body, okText, selectChanged) {
      if (ed.busy) return null;
      ed.busy = true;
      try {
        const r = await api(method, url, body);
        ed.detail = r.detail;
        ed.preview = null;
        const one = Array.isArray(r.changed) && r.changed.length === 1 ? r.changed[0] : r.changed;
        if (selectChanged && one && one.status === "active") ed.selected = one.id;
        else if (!byId(ed.selected)) ed.selected = null;
        renderPanel();
        render();
        if (okText) toast(okText, "ok");
        return r;
      } catch (e) {
        ed.preview = null;
        toast((e.status === 409 ? "Changed meanwhile, reloaded: " : "Not saved: ") + e.message, "error");
        await load(true);
        return null;
      } finally {
        ed.busy = false;
      }
    }
    const base = "/api/review/images/" + id;
    const round = (v) => Math.round(v * 10) / 10;
    function saveBox(lab, box) {
      const b = [round(clampX(box[0])), round(clampY(box[1])), round(clampX(box[2])), round(clampY(box[3]))];
      if (b[2] - b[0] < 0.5 || b[3] - b[1] < 0.5) { ed.preview = null; render(); return; }
      send("PATCH", base + "/labels/" + lab.id, { box: b }, "Box moved", true);
    }
    function setClass(name) {
      const lab = byId(ed.selected);
      if (!lab) {
        ed.drawClass = name;
        $("class-select").value = name;
        setMode(ed.mode);
        toast("New boxes: " + name);
        return;
      }
      if (lab.class_name === name) return;
      send("PATCH", base + "/labels/" + lab.id, { class_name: name }, "Class changed to " + name, true);
    }
    function deleteSelected() {
      const lab = byId(ed.selected);
      if (!lab) { toast("Select a box first (click it, or Tab)"); return; }
      send("DELETE", base + "/labels/" + lab.id + "?reason=" + encodeURIComponent("false positive"), undefined, "Box deleted (false positive)", false)
        .then(() => { ed.selected = null; renderLabelList(); render(); });
    }
    function confirmSelected() {
      const lab = byId(ed.selected);
      if (!lab) { toast("Select a box first"); return; }
      send("POST", base + "/confirm", { label_ids: [lab.id] }, "Box confirmed", true);
    }
    async function confirmAll() {
      const r = await send("POST", base + "/confirm", {}, "Image reviewed: every box confirmed", false);
      if (r && $("auto-next") && $("auto-next").checked) go(1, true);
    }
    async function markGood() {
      const r = await send("POST", base + "/good", { reason: "no defect" }, "Image marked good", false);
      if (r) ed.selected = null;
      if (r && $("auto-next") && $("auto-next").checked) go(1, true);
    }

    // -- queue navigation ----------------------------------------------------------------------------
    async function go(delta, quiet) {
      const nav = loadNav();
      let ids = Array.isArray(nav.ids) ? nav.ids.slice() : [];
      let i = ids.indexOf(id);
      if (i < 0) { ids = [id]; i = 0; }
      let t = i + delta;
      if (t < 0) { toast("This is the first image of the list"); return; }
      if (t >= ids.length) {
        const p = new URLSearchParams(nav.query || "");
        p.set("limit", "200");
        p.set("offset", "0");
        try {
          const data = await api("GET", "/api/review/queue?" + p);
          const more = data.items.map((it) => it.image_id).filter((x) => !ids.includes(x));
          ids = ids.concat(more);
        } catch (e) { toast("Cannot load the queue: " + e.message, "error"); return; }
        if (t >= ids.length) { if (!quiet) toast("End of the queue"); else toast("Done: end of the queue", "ok"); return; }
      }
      saveNav({ query: nav.query || "", ids, current: ids[t] });
      window.location.assign("/review/image/" + ids[t]);
    }

    // -- mouse -------------------------------------------------------------------------------------
    canvas.addEventListener("mousedown", (ev) => {
      if (!ed.loaded || ed.busy) return;
      stage.focus({ preventScroll: true });
      const [cx, cy] = localPoint(ev);
      if (ev.button === 1 || (ev.button === 0 && ed.space)) { startPan(cx, cy); ev.preventDefault(); return; }
      if (ev.button !== 0) return;
      ev.preventDefault();
      if (ed.mode === "draw") {
        const [x, y] = toImg(cx, cy);
        ed.drag = { kind: "draw", x0: clampX(x), y0: clampY(y), box: null };
        return;
      }
      const h = hitHandle(cx, cy);
      if (h) {
        const lab = byId(ed.selected);
        ed.drag = { kind: "resize", handle: h, lab, orig: boxOf(lab), start: toImg(cx, cy), moved: false };
        return;
      }
      const lab = hitBox(cx, cy);
      if (lab) {
        select(lab.id);
        ed.drag = { kind: "move", lab, orig: boxOf(lab), start: toImg(cx, cy), startC: [cx, cy], moved: false };
        return;
      }
      if (ed.selected !== null) select(null);
      startPan(cx, cy);
    });
    function startPan(cx, cy) {
      ed.drag = { kind: "pan", startC: [cx, cy], ox: ed.ox, oy: ed.oy };
      stage.dataset.drag = "pan";
    }
    window.addEventListener("mousemove", (ev) => {
      if (!ed.loaded) return;
      const [cx, cy] = localPoint(ev);
      const [ix, iy] = toImg(cx, cy);
      if (ix >= 0 && iy >= 0 && ix <= W() && iy <= H()) $("cursor-pos").textContent = "x " + Math.round(ix) + "  y " + Math.round(iy);
      const d = ed.drag;
      if (!d) { hoverCursor(cx, cy); return; }
      if (d.kind === "pan") {
        ed.ox = d.ox + cx - d.startC[0];
        ed.oy = d.oy + cy - d.startC[1];
      } else if (d.kind === "draw") {
        const x = clampX(ix), y = clampY(iy);
        d.box = [Math.min(d.x0, x), Math.min(d.y0, y), Math.max(d.x0, x), Math.max(d.y0, y)];
      } else if (d.kind === "move") {
        if (!d.moved && Math.hypot(cx - d.startC[0], cy - d.startC[1]) < 3) return;
        d.moved = true;
        let dx = ix - d.start[0], dy = iy - d.start[1];
        const [x1, y1, x2, y2] = d.orig;
        dx = Math.min(Math.max(dx, -x1), W() - x2);
        dy = Math.min(Math.max(dy, -y1), H() - y2);
        ed.preview = { id: d.lab.id, box: [x1 + dx, y1 + dy, x2 + dx, y2 + dy] };
      } else if (d.kind === "resize") {
        d.moved = true;
        let [x1, y1, x2, y2] = d.orig;
        const x = clampX(ix), y = clampY(iy);
        if (d.handle.includes("w")) x1 = x;
        if (d.handle.includes("e")) x2 = x;
        if (d.handle.includes("n")) y1 = y;
        if (d.handle.includes("s")) y2 = y;
        ed.preview = { id: d.lab.id, box: [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)] };
      }
      render();
    });
    window.addEventListener("mouseup", () => {
      const d = ed.drag;
      if (!d) return;
      ed.drag = null;
      delete stage.dataset.drag;
      if (d.kind === "draw") {
        setMode("select");
        if (d.box && d.box[2] - d.box[0] >= MIN_BOX && d.box[3] - d.box[1] >= MIN_BOX) {
          const b = d.box.map(round);
          send("POST", base + "/labels", { box: b, class_name: ed.drawClass, reason: "missed defect" }, "Box added: " + ed.drawClass, true);
        } else {
          toast("Box too small: drag a larger rectangle");
          render();
        }
      } else if ((d.kind === "move" || d.kind === "resize") && d.moved && ed.preview) {
        saveBox(d.lab, ed.preview.box);
      }
    });
    function hoverCursor(cx, cy) {
      if (ed.mode === "draw") { canvas.style.cursor = "crosshair"; return; }
      const h = hitHandle(cx, cy);
      const cursors = { nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize", n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize" };
      if (h) canvas.style.cursor = cursors[h];
      else if (hitBox(cx, cy)) canvas.style.cursor = "move";
      else canvas.style.cursor = "grab";
    }
    canvas.addEventListener("wheel", (ev) => {
      if (!ed.loaded) return;
      ev.preventDefault();
      const [cx, cy] = localPoint(ev);
      zoomAt(Math.exp(-ev.deltaY * 0.0015), cx, cy);
    }, { passive: false });
    canvas.addEventListener("dblclick", (ev) => {
      const [cx, cy] = localPoint(ev);
      if (!hitBox(cx, cy)) fitView();
    });

    // -- keyboard ---------------------------------------------------------------------------------
    const help = $("help");
    function toggleHelp(show) { help.hidden = show === undefined ? !help.hidden : !show; if (!help.hidden) $("help-close").focus(); }
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        if (!help.hidden) { toggleHelp(false); stage.focus(); return; }
        if (typing(ev)) { ev.target.blur(); return; }
        if (ed.drag) { ed.drag = null; ed.preview = null; }
        if (ed.mode === "draw") setMode("select"); else select(null);
        render();
        return;
      }
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (!help.hidden && ev.key !== "?") return;
      const k = ev.key;
      const onControl = ev.target && (ev.target.tagName === "BUTTON" || ev.target.tagName === "A");
      if (onControl && (k === "Enter" || k === " ")) return;  // the focused button or link acts itself
      if (k === " ") { ed.space = true; ev.preventDefault(); return; }
      if (k === "?") { toggleHelp(); return; }
      if (k === "n") { go(1); return; }
      if (k === "p") { go(-1); return; }
      if (k === "c") { confirmAll(); return; }
      if (k === "g") { markGood(); return; }
      if (k === "h") { toggleHeat(); return; }
      if (k === "b" || k === "a") { setMode(ed.mode === "draw" ? "select" : "draw"); return; }
      if (k === "Delete" || k === "Backspace") { ev.preventDefault(); deleteSelected(); return; }
      if (k === "Enter") { ev.preventDefault(); confirmSelected(); return; }
      if (k === "+" || k === "=") { zoomCenter(1.25); return; }
      if (k === "-" || k === "_") { zoomCenter(0.8); return; }
      if (k === "0") { fitView(); return; }
      if (k === "Tab") {
        const labs = labels();
        if (!labs.length) return;
        ev.preventDefault();
        const i = labs.findIndex((l) => l.id === ed.selected);
        const j = i < 0 ? (ev.shiftKey ? labs.length - 1 : 0) : (i + (ev.shiftKey ? -1 : 1) + labs.length) % labs.length;
        select(labs[j].id);
        return;
      }
      if (/^[1-9]$/.test(k)) {
        const name = st.classes[parseInt(k, 10) - 1];
        if (name) setClass(name); else toast("No class " + k + " (there are " + st.classes.length + ")");
      }
    });
    document.addEventListener("keyup", (ev) => { if (ev.key === " ") ed.space = false; });

    // -- buttons ----------------------------------------------------------------------------------
    $("prev").addEventListener("click", () => go(-1));
    $("next").addEventListener("click", () => go(1));
    $("zoom-in").addEventListener("click", () => zoomCenter(1.25));
    $("zoom-out").addEventListener("click", () => zoomCenter(0.8));
    $("zoom-fit").addEventListener("click", fitView);
    $("zoom-1").addEventListener("click", () => zoomCenter(1 / ed.scale));
    $("mode-draw").addEventListener("click", () => { setMode(ed.mode === "draw" ? "select" : "draw"); stage.focus(); });
    $("class-select").addEventListener("change", (ev) => { setClass(ev.target.value); ev.target.blur(); stage.focus(); });
    $("confirm-all").addEventListener("click", confirmAll);
    $("mark-good").addEventListener("click", markGood);
    $("confirm-selected").addEventListener("click", confirmSelected);
    $("delete-selected").addEventListener("click", deleteSelected);
    $("heat-toggle").addEventListener("click", () => { toggleHeat(); stage.focus({ preventScroll: true }); });
    $("anomaly-form").addEventListener("submit", labelAnomaly);
    $("help-btn").addEventListener("click", () => toggleHelp(true));
    $("help-close").addEventListener("click", () => { toggleHelp(false); stage.focus(); });
    help.addEventListener("click", (ev) => { if (ev.target === help) toggleHelp(false); });
    const auto = $("auto-next");
    if (auto) {
      auto.checked = localStorage.getItem("review.autoNext") !== "0";
      auto.addEventListener("change", () => localStorage.setItem("review.autoNext", auto.checked ? "1" : "0"));
    }
    new ResizeObserver(() => {
      const wasFit = Math.abs(ed.scale - ed.fit) < 1e-9;
      sizeCanvas();
      if (ed.loaded && wasFit) fitView(); else render();
    }).observe(stage);

    sizeCanvas();
    setMode("select");
    load(false);
    stage.focus({ preventScroll: true });
  }

  // ================================================================================= dataset page
  function initDataset() {
    const maxMb = parseFloat(document.body.dataset.maxUploadMb) || 0;

    function exportLinks(s) {
      const td = el("td");
      const p = new URLSearchParams({ val_fraction: $("x-val").value || "0.2", split: $("x-split").value });
      const links = [
        ["YOLO zip", "/api/review/snapshots/" + s.id + "/yolo?" + p, "yolo"],
        ["COCO JSON", "/api/review/snapshots/" + s.id + "/coco", "coco"],
        ["COCO + images", "/api/review/snapshots/" + s.id + "/coco?images=true", "coco-zip"],
      ];
      for (const [text, href, kind] of links) {
        const a = el("a", "ui-btn ui-btn-small", text);
        a.href = href;
        a.setAttribute("download", "");
        a.dataset.export = kind;
        td.append(a);
      }
      return td;
    }
    async function loadSnapshots() {
      let list;
      try { list = await api("GET", "/api/review/snapshots"); } catch (e) { toast("Cannot list snapshots: " + e.message, "error"); return; }
      const tb = $("snapshot-body");
      if (!list.length) {
        const tr = el("tr", "ui-empty-row");
        const td = el("td", null, "No snapshot yet: review some images, then create one.");
        td.colSpan = 9;
        tr.append(td);
        tb.replaceChildren(tr);
        return;
      }
      tb.replaceChildren(...list.map((s) => {
        const tr = el("tr");
        tr.dataset.snapshotId = s.id;
        const sha = el("td", "rv-sha", s.sha.slice(0, 12) + "\u2026");
        sha.title = s.sha;
        tr.append(el("td", "num", s.id), el("td", null, s.name), el("td", null, fmtTime(s.created_at)), el("td", null, s.created_by),
          el("td", "num", s.n_images), el("td", "num", s.n_labels), el("td", null, s.class_names.join(", ")), sha, exportLinks(s));
        return tr;
      }));
    }
    $("x-val").addEventListener("change", loadSnapshots);
    $("x-split").addEventListener("change", loadSnapshots);

    $("snapshot-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: $("s-name").value.trim() || null, only_reviewed: $("s-reviewed").checked };
      const since = fromLocalInput($("s-since").value), until = fromLocalInput($("s-until").value);
      if (since) body.since = Number(since);
      if (until) body.until = Number(until);
      const btn = $("snapshot-create");
      btn.disabled = true;
      try {
        const s = await api("POST", "/api/review/snapshots", body);
        toast("Snapshot " + s.id + " created: " + s.n_images + " images, " + s.n_labels + " boxes", "ok");
        $("s-name").value = "";
        await loadSnapshots();
      } catch (e) {
        toast("No snapshot: " + e.message, "error");
      } finally {
        btn.disabled = false;
      }
    });

    $("import-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const file = $("i-file").files[0];
      const out = $("import-result");
      if (!file) return;
      if (maxMb && file.size > maxMb * 1048576) {
        out.dataset.kind = "error";
        out.textContent = file.name + " is " + (file.size / 1048576).toFixed(1) + " MB: larger than the " + maxMb + " MB limit (web.max_upload_mb).";
        return;
      }
      const p = new URLSearchParams({ format: $("i-format").value });
      const name = $("i-name").value.trim() || file.name.replace(/\.zip$/i, "").replace(/[^A-Za-z0-9 ._-]/g, "_").slice(0, 80);
      if (name) p.set("name", name);
      const xhr = new XMLHttpRequest();  // XHR, not fetch: it reports upload progress
      const bar = $("import-progress");
      const btn = $("import-btn");
      xhr.open("POST", "/api/review/import?" + p);
      xhr.setRequestHeader("Content-Type", "application/zip");
      xhr.setRequestHeader("X-CSRF-Token", window.UI.csrf());
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
      xhr.onload = () => {
        btn.disabled = false;
        bar.hidden = true;
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 200) {
          out.dataset.kind = "ok";
          out.textContent = "Imported " + data.images + " images (" + data.new + " new, " + data.existing + " already recorded), " + data.labels + " boxes, as " + data.name + ".";
        } else {
          out.dataset.kind = "error";
          out.textContent = "Refused (" + xhr.status + "): " + errText(data, { status: xhr.status, statusText: xhr.statusText });
        }
      };
      xhr.onerror = () => { btn.disabled = false; bar.hidden = true; out.dataset.kind = "error"; out.textContent = "Upload failed: the station cannot be reached."; };
      btn.disabled = true;
      bar.hidden = false;
      bar.value = 0;
      out.dataset.kind = "";
      out.textContent = "Uploading " + file.name + "\u2026";
      xhr.send(file);
    });

    loadSnapshots().then(() => { document.body.dataset.ready = "1"; });
  }

  // -- start ----------------------------------------------------------------------------------
  // stats.js draws with the class colours of these pages and starts once the login is known
  const init = { queue: initQueue, editor: initEditor, dataset: initDataset }[PAGE];
  window.Review = {
    classColor, PALETTE, setClasses: (c) => { st.classes = c; },
    ready: window.UI.startDesk().then((me) => { if (me && init) init(); return me; }),
  };
})();
