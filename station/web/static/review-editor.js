// The image editor (templates/review_image.html): QA confirms, moves, resizes, reclassifies, deletes and draws boxes,
// marks the image good, and walks the queue with n / p. Every change is one call to /api/review/images/{id}/*
// (append-only labels, audited). The canvas is drawn by review-editor-view.js, the side panel by review-editor-panel.js.
import { $, toast, api } from "./common.js";
import { st, typing, goInQueue } from "./review-shared.js";
import { makeView } from "./review-editor-view.js";
import { makePanel } from "./review-editor-panel.js";

const MIN_BOX = 2;    // smallest box drawn, image px

export function initEditor() {
  const id = parseInt(document.body.dataset.imageId, 10);
  const stage = $("stage");
  const canvas = $("canvas");
  const img = new Image();
  const ed = {
    detail: null, loaded: false, scale: 1, ox: 0, oy: 0, fit: 1,
    selected: null, mode: "select", drag: null, preview: null, drawClass: null, busy: false, space: false,
    heat: null, heatOn: true,  // the coloured heat map of a no-labels inspector (window.Heat), and whether it is shown
  };
  const { W, H, toImg, clampX, clampY, localPoint, sizeCanvas, fitView, zoomAt, zoomCenter, labels, byId, boxOf, hitHandle, hitBox, render } =
    makeView(ed, stage, canvas, img);
  const { renderPanel, renderLabelList } = makePanel(ed, byId, labels, select);

  // -- selection, mode, heat map -----------------------------------------------------------------
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
    if (r && $("auto-next") && $("auto-next").checked) goInQueue(id, 1, true);
  }
  async function markGood() {
    const r = await send("POST", base + "/good", { reason: "no defect" }, "Image marked good", false);
    if (r) ed.selected = null;
    if (r && $("auto-next") && $("auto-next").checked) goInQueue(id, 1, true);
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
    if (k === "n") { goInQueue(id, 1); return; }
    if (k === "p") { goInQueue(id, -1); return; }
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
  $("prev").addEventListener("click", () => goInQueue(id, -1));
  $("next").addEventListener("click", () => goInQueue(id, 1));
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
