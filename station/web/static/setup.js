// Camera setup page: draw the ROI, ignore zones and named regions on the camera's last frame and save them
// as a new version; calibrate from uploaded board views; list versions and roll back. Admin only (the API checks).
(function () {
  "use strict";
  const { $, el, clear, fmtTime, fmtNum, toast, api } = window.UI;
  const st = { camera: null, spec: { image_size: null, roi: null, ignore: [], regions: [] }, points: [], w: 0, h: 0 };
  const img = $("ref-img"), canvas = $("draw");

  function scale() { return st.w ? img.clientWidth / st.w : 1; }
  function redraw() {
    const w = img.clientWidth, h = img.clientHeight;
    canvas.width = w; canvas.height = h;
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const s = scale();
    window.Regions.draw(ctx, st.spec, s, s);
    if (st.points.length) {  // the polygon being drawn
      window.Regions.path(ctx, st.points, s, s, false);
      ctx.strokeStyle = "#ff4fd8"; ctx.lineWidth = 2; ctx.stroke();
      ctx.fillStyle = "#ff4fd8";
      for (const [x, y] of st.points) ctx.fillRect(x * s - 3, y * s - 3, 6, 6);
    }
    listPolygons();
  }

  function listPolygons() {
    const ul = $("poly-list");
    clear(ul);
    const items = [];
    if (st.spec.roi) items.push(["ROI", () => { st.spec.roi = null; }]);
    st.spec.ignore.forEach((z, i) => items.push(["ignore zone " + (z.name || i + 1), () => st.spec.ignore.splice(i, 1)]));
    st.spec.regions.forEach((r, i) => items.push(["region " + r.name + (r.reject_conf != null ? " reject >= " + r.reject_conf : "") +
      (r.min_area_mm2 != null ? " min " + r.min_area_mm2 + " mm\u00B2" : ""), () => st.spec.regions.splice(i, 1)]));
    for (const [label, remove] of items) {
      const b = el("button", "ui-btn ui-btn-small", "remove");
      b.addEventListener("click", () => { remove(); redraw(); });
      const li = el("li", null, label);
      li.append(b);
      ul.append(li);
    }
  }

  canvas.addEventListener("click", (ev) => {
    if (!st.w) return;
    const s = scale();
    st.points.push([Math.round(ev.offsetX / s * 10) / 10, Math.round(ev.offsetY / s * 10) / 10]);
    redraw();
  });
  $("undo-point").addEventListener("click", () => { st.points.pop(); redraw(); });
  $("close-poly").addEventListener("click", () => {
    if (st.points.length < 3) { toast("a polygon needs at least 3 points", "error"); return; }
    const kind = $("kind").value, name = $("poly-name").value.trim(), pts = st.points;
    if (kind === "roi") st.spec.roi = pts;
    else if (kind === "ignore") st.spec.ignore.push({ name, points: pts });
    else {
      if (!name) { toast("a named region needs a name", "error"); return; }
      const r = { name, points: pts };
      const rc = $("poly-reject").value, ma = $("poly-min-area").value;
      if (rc !== "") { r.reject_conf = Number(rc); r.uncertain_conf = Number(rc); }
      if (ma !== "") r.min_area_mm2 = Number(ma);
      st.spec.regions.push(r);
    }
    st.points = [];
    redraw();
  });

  $("save-regions").addEventListener("click", async () => {
    const msg = $("regions-msg");
    try {
      const spec = Object.assign({}, st.spec, { image_size: st.w ? [st.w, st.h] : null });
      const v = await api("POST", "/api/setup/" + encodeURIComponent(st.camera) + "/regions", { regions: spec, reason: $("regions-reason").value });
      msg.textContent = "Saved: version " + v.version + " is in force";
      msg.className = "ui-result";
      loadHistory();
    } catch (e) {
      msg.textContent = "Not saved: " + e.message;
      msg.className = "ui-result setup-bad";
    }
  });

  async function loadReference() {
    const note = $("ref-note");
    const res = await fetch("/api/setup/" + encodeURIComponent(st.camera) + "/reference.jpg", { credentials: "same-origin" });
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
      note.textContent = detail; note.hidden = false; return;
    }
    st.w = Number(res.headers.get("X-Frame-Width")); st.h = Number(res.headers.get("X-Frame-Height"));
    const url = URL.createObjectURL(await res.blob());
    await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = url; });
    note.hidden = true;
    redraw();
  }
  $("reload-ref").addEventListener("click", loadReference);
  window.addEventListener("resize", redraw);

  function rollbackButton(kind, v, inForce) {
    if (inForce) return el("b", null, "in force");
    const b = el("button", "ui-btn ui-btn-small", "Roll back to v" + v.version);
    b.addEventListener("click", async () => {
      try {
        await api("POST", "/api/setup/" + encodeURIComponent(st.camera) + "/" + kind + "/rollback", { version: v.version, reason: "rollback from the setup page" });
        toast(kind + " version " + v.version + " is in force again");
        loadHistory();
      } catch (e) { toast(e.message, "error"); }
    });
    return b;
  }

  async function loadHistory() {
    const [reg, cal] = await Promise.all(["regions", "calibration"].map((k) => api("GET", "/api/setup/" + encodeURIComponent(st.camera) + "/" + k + "/history")));
    const rt = $("regions-history"); clear(rt);
    for (const v of reg.versions) {
      const tr = el("tr");
      [String(v.version), fmtTime(v.created_at), v.created_by, v.reason || ""].forEach((t) => tr.append(el("td", null, t)));
      const td = el("td"); td.append(rollbackButton("regions", v, v.version === reg.in_force)); tr.append(td);
      rt.append(tr);
    }
    const inForce = reg.versions.find((v) => v.version === reg.in_force);
    if (inForce && !st.loaded) { st.spec = Object.assign({ roi: null, ignore: [], regions: [] }, inForce.body); st.loaded = true; redraw(); }
    const ct = $("cal-history"); clear(ct);
    for (const v of cal.versions) {
      const tr = el("tr");
      [String(v.version), v.ref, fmtTime(v.created_at), v.created_by, fmtNum(v.body.rms_px, 3), fmtNum(v.body.mm_per_px, 5)]
        .forEach((t) => tr.append(el("td", null, t)));
      const td = el("td"); td.append(rollbackButton("calibration", v, v.version === cal.in_force)); tr.append(td);
      ct.append(tr);
    }
  }

  function readB64(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(String(r.result).split(",", 2)[1]);
      r.onerror = () => reject(r.error);
      r.readAsDataURL(file);
    });
  }
  $("cal-run").addEventListener("click", async () => {
    const msg = $("cal-msg");
    const files = Array.from($("cal-files").files);
    if (!files.length) { msg.textContent = "Choose the board views first"; return; }
    msg.textContent = "Calibrating " + files.length + " view(s)\u2026";
    const marker = $("cal-marker").value;
    const body = {
      views: await Promise.all(files.map(async (f) => ({ name: f.name, data: await readB64(f) }))),
      target: $("cal-target").value, cols: Number($("cal-cols").value), rows: Number($("cal-rows").value),
      square_mm: Number($("cal-square").value), marker_mm: marker === "" ? null : Number(marker),
      dictionary: $("cal-dict").value, plane_view: Number($("cal-plane").value), reason: $("cal-reason").value,
    };
    const res = await fetch("/api/setup/" + encodeURIComponent(st.camera) + "/calibration", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json", "X-CSRF-Token": window.UI.csrf() },
      body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => null);
    if (res.ok) {
      const b = data.body;
      msg.className = "ui-result";
      msg.textContent = "Version " + data.version + " in force: " + data.ref + ", reprojection error " + fmtNum(b.rms_px, 3) +
        " px, " + fmtNum(b.mm_per_px, 5) + " mm/px, coverage " + Math.round(100 * b.coverage) + "%";
      loadHistory();
      return;
    }
    msg.className = "ui-result setup-bad";
    const d = data && data.detail;
    msg.textContent = d && d.reasons ? "Refused: " + d.reasons.join("; ") : "Refused: " + window.UI.errText(data, res);
  });

  async function start() {
    const me = await window.UI.startDesk();
    if (!me) return;
    const setup = await api("GET", "/api/setup");
    const sel = $("camera");
    for (const c of setup.cameras) sel.append(el("option", null, c.camera_id));
    const pick = () => {
      st.camera = sel.value; st.loaded = false; st.spec = { roi: null, ignore: [], regions: [] }; st.points = [];
      return Promise.all([loadReference(), loadHistory()]);
    };
    sel.addEventListener("change", pick);
    await pick();
    document.body.dataset.ready = "1";
  }
  start();
})();
