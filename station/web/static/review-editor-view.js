// The editor's canvas (templates/review_image.html): the view transform (zoom and pan), the hit tests of boxes and
// their handles, and the drawing of the image, its heat map and its boxes. makeView() reads and writes the editor's
// state object `ed` (scale, ox, oy, fit, detail, selected, preview, drag, heat); the input handling is in editor.js.
import { $ } from "./common.js";
import { classColor } from "./review-shared.js";

const HANDLE = 6;  // handle half-size, screen px

export function makeView(ed, stage, canvas, img) {
  const ctx = canvas.getContext("2d");
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
  return { W, H, toImg, toCan, clampX, clampY, localPoint, sizeCanvas, fitView, zoomAt, zoomCenter, labels, byId, boxOf, hitHandle, hitBox, render };
}
