// Operator screen: live verdict, image with defect overlays, counters, rejects, alarms, line control.
// Live data comes from Server-Sent Events (/api/events); nothing reloads the page.
"use strict";
(function () {
  const { $, el, fmtClock: fmtTime, toast, api } = window.UI;
  const session = window.UI.session;  // session.me: {username, role, csrf} when logged in
  const OUTCOME_WORD = { PASS: "PASS", FAIL: "FAIL", UNCERTAIN: "UNCERTAIN", FAILSAFE: "FAILSAFE" };
  const ACTION_STYLE = {
    reject: { color: "#ff3b30", dash: [], label: "REJECT" },
    uncertain: { color: "#ffcc00", dash: [14, 8], label: "UNCERTAIN" },
    ignore: { color: "#b0b0b0", dash: [3, 6], label: "IGNORED" },
    good: { color: "#34c759", dash: [3, 6], label: "GOOD" },  // a classify model's good class (rule "good class")
  };
  const styleOf = (d) => (d.action === "ignore" && d.rule === "good class" ? ACTION_STYLE.good : ACTION_STYLE[d.action] || ACTION_STYLE.reject);
  const MAX_REJECT_ROWS = 8;
  const MAX_ALARM_ROWS = 6;

  const st = {
    status: null,
    liveFps: 5,
    rejectOutcomes: ["FAIL", "FAILSAFE", "UNCERTAIN"],
    results: new Map(),  // part_id -> result (recent only), for overlays
    regions: {},         // camera id -> drawn regions in force (GET /api/setup)
    latest: null,        // newest result
    lastRequested: null, // part id of the last image request
    shown: null,         // {partId, cameraId, frameWidth, frameHeight}
    imgBusy: false,
    imgUrl: null,
    rejects: [],
    alarmsTimer: null,
    alarms: null,        // last /api/alarms answer
    heat: null,          // {partId, canvas}: the coloured heat map of the shown part (no-labels inspectors)
    heatOn: true,        // the operator's choice; a part with a heat map shows it unless switched off
    statusAsked: 0,      // status requests sent (GET and the pause/resume POSTs), in order
    statusShown: 0,      // the newest of them whose answer is on screen
  };

  // -- helpers ---------------------------------------------------------------
  function fmtInt(v) { return v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US"); }
  function hasRole(role) {
    const rank = { operator: 0, qa: 1, admin: 2 };
    return !!session.me && rank[session.me.role] >= rank[role];
  }
  // The line-side screen keeps showing without a login: a write refused for want of one shows the anonymous view.
  window.UI.settings.onUnauthorized = (method) => { if (method !== "GET") setMe(null); };
  window.UI.settings.toastMs = window.UI.settings.errorToastMs = 4000;

  // -- user ------------------------------------------------------------------
  function setMe(me) {
    session.me = me;
    $("user-name").textContent = me ? me.username + " (" + me.role + ")" : "";
    $("login-link").hidden = !!me;
    $("logout").hidden = !me;
    const op = hasRole("operator");
    document.querySelectorAll(".op-only").forEach((e) => { e.hidden = !op; });
    $("controls-anon").hidden = op;
    renderAlarms(st.alarms);
  }
  async function loadMe() { setMe(await window.UI.loadMe()); }
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); toast("Logged out"); } catch (e) { toast(String(e.message), "error"); }
    setMe(null);
  });

  // -- status ----------------------------------------------------------------
  function renderStatus(s) {
    if (!s) return;
    st.status = s;
    st.liveFps = s.live_fps || st.liveFps;
    st.rejectOutcomes = s.reject_outcomes || st.rejectOutcomes;
    $("station-name").textContent = s.station;
    document.title = s.station + " - operator screen";
    $("model-id").textContent = s.model_id || "-";
    $("trigger-type").textContent = s.trigger || "-";
    const chip = $("run-state");
    const state = !s.running ? "stopped" : s.paused ? "paused" : "running";
    chip.dataset.state = state;
    chip.textContent = state === "running" ? "\u25B6 RUNNING" : state === "paused" ? "\u275A\u275A PAUSED" : "\u25A0 STOPPED";
    $("pause-banner").hidden = !s.paused;
    $("pause-reason").textContent = s.pause ? s.pause.reason : "";
    $("pause-by").textContent = s.pause ? "by " + s.pause.by + " at " + fmtTime(s.pause.t_wall) : "";
    $("pause-btn").disabled = !!s.paused || !s.running;
    $("resume-btn").disabled = !s.paused;
    $("trigger-btn").disabled = !!s.paused || !s.running;
  }
  // Status answers can arrive out of order (a GET sent before a RESUME may answer after it): an answer older
  // than the one on screen is dropped, or a stale "paused" would disable the buttons of a running line.
  async function statusCall(method, url, body) {
    const n = ++st.statusAsked;
    const s = await api(method, url, body);
    if (n > st.statusShown) { st.statusShown = n; renderStatus(s); }
    return s;
  }
  async function refreshStatus() {
    try { await statusCall("GET", "/api/status"); } catch (e) { /* shown by the connection state */ }
  }

  // -- counters ----------------------------------------------------------------
  function renderCounters(c) {
    if (!c) return;
    for (const k of ["triggers", "PASS", "FAIL", "UNCERTAIN", "FAILSAFE", "dropped", "records_written", "records_dropped", "rejects_fired"]) {
      const e = $("c-" + k);
      if (e) e.textContent = fmtInt(c[k]);
    }
    $("c-yield").textContent = c.yield_pct === null || c.yield_pct === undefined ? "-" : c.yield_pct.toFixed(1);
    $("c-ppm").textContent = c.parts_per_min === null || c.parts_per_min === undefined ? "-" : Math.round(c.parts_per_min).toString();
  }

  // -- verdict -----------------------------------------------------------------
  function renderVerdict(r) {
    if (!r) return;
    const v = $("verdict");
    v.dataset.outcome = r.outcome;
    $("verdict-word").textContent = OUTCOME_WORD[r.outcome] || r.outcome;
    $("verdict-part").textContent = r.part_id;
    const reasons = r.reasons && r.reasons.length ? r.reasons.join(" \u00B7 ") : (r.outcome === "PASS" ? "no defect" : "");
    $("verdict-reasons").textContent = reasons;
    renderAge();
  }
  function renderAge() {
    const r = st.latest;
    if (!r) return;
    const age = Math.max(0, Date.now() / 1000 - (r.t_trigger_wall || 0));
    $("verdict-age").textContent = age < 2 ? "just now" : Math.round(age) + " s ago";
    $("verdict").classList.toggle("stale", age > 30);
  }

  function onResult(r) {
    st.results.set(r.part_id, r);
    if (st.results.size > 64) st.results.delete(st.results.keys().next().value);
    if (!st.latest || r.part_id >= st.latest.part_id) {
      st.latest = r;
      renderVerdict(r);
      if (r.model_id) $("model-id").textContent = r.model_id;  // follows learning and hot swaps
    }
    if (st.rejectOutcomes.includes(r.outcome)) addReject({ part_id: r.part_id, t_wall: r.t_trigger_wall, outcome: r.outcome, reasons: r.reasons });
  }

  // -- rejects -----------------------------------------------------------------
  function addReject(row) {
    if (st.rejects.some((x) => x.part_id === row.part_id)) return;
    st.rejects.push(row);
    st.rejects.sort((a, b) => b.part_id - a.part_id);
    st.rejects = st.rejects.slice(0, MAX_REJECT_ROWS);
    renderRejects();
  }
  function renderRejects() {
    const body = $("rejects-body");
    body.replaceChildren();
    if (!st.rejects.length) {
      const tr = el("tr", "empty");
      const td = el("td", "", "No rejects yet");
      td.colSpan = 4;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const r of st.rejects) {
      const tr = el("tr");
      tr.appendChild(el("td", "num", String(r.part_id)));
      tr.appendChild(el("td", "num", fmtTime(r.t_wall)));
      const td = el("td");
      td.appendChild(el("span", "tag tag-" + r.outcome, r.outcome));
      tr.appendChild(td);
      const reasons = (r.reasons || []).join(" \u00B7 ");
      const rc = el("td", "", reasons);
      rc.title = reasons;
      tr.appendChild(rc);
      body.appendChild(tr);
    }
  }
  async function loadRejects() {
    try {
      const rows = await api("GET", "/api/rejects?limit=" + MAX_REJECT_ROWS);
      for (const r of rows) addReject(r);
      renderRejects();
    } catch (e) { /* keep what we have */ }
  }

  // -- alarms ------------------------------------------------------------------
  function renderAlarms(data) {
    if (!data) return;
    st.alarms = data;
    const list = $("alarm-list");
    list.replaceChildren();
    const op = hasRole("operator");
    $("alarm-count").textContent = data.unacknowledged ? String(data.unacknowledged) : "";
    $("ack-all").hidden = !op || !data.unacknowledged;
    // log rows come from the database; an active state not yet written is shown on its own
    const log = data.log || [];
    const active = data.active || [];
    const same = (a, b) => a.component === b.component && a.message === b.message;
    const rows = [];
    const activeIds = new Set();
    for (const a of active) {
      const newest = log.filter((x) => same(x, a)).sort((x, y) => y.t_wall - x.t_wall)[0];
      if (newest) activeIds.add(newest.id);
      else rows.push({ id: null, t_wall: a.t_wall, component: a.component, state: a.state, message: a.message, active: true });
    }
    for (const a of log) rows.push(Object.assign({ active: activeIds.has(a.id) }, a));
    if (!rows.length) { list.appendChild(el("li", "empty", "No alarms")); return; }
    for (const a of rows.slice(0, MAX_ALARM_ROWS)) {
      const li = el("li", a.acknowledged_at ? "acked" : "");
      li.appendChild(el("span", "when", fmtTime(a.t_wall)));
      const sev = a.state === "alarm" ? "\u25B2 ALARM" : "\u25C6 WARNING";
      li.appendChild(el("span", "sev sev-" + a.state, sev));
      const msg = el("span", "msg", a.component + ": " + a.message);
      msg.title = msg.textContent;
      li.appendChild(msg);
      if (a.acknowledged_at) {
        li.appendChild(el("span", "who", "ack " + a.acknowledged_by + (a.active ? " \u00B7 active" : "")));
      } else if (a.id !== null && op) {
        const b = el("button", "btn btn-small ack", "ACK");
        b.addEventListener("click", () => ack(a.id, b));
        li.appendChild(b);
      } else {
        li.appendChild(el("span", "who", a.active ? "active" : ""));
      }
      list.appendChild(li);
    }
  }
  async function loadAlarms() {
    try { renderAlarms(await api("GET", "/api/alarms?limit=" + MAX_ALARM_ROWS * 2)); } catch (e) { /* keep */ }
  }
  function alarmsSoon() {
    clearTimeout(st.alarmsTimer);
    st.alarmsTimer = setTimeout(loadAlarms, 800); // the recorder writes alarm rows in batches
  }
  async function ack(id, btn) {
    btn.disabled = true;
    try { await api("POST", "/api/alarms/" + id + "/ack"); toast("Alarm acknowledged"); } catch (e) { toast(e.message, "error"); }
    loadAlarms();
  }
  $("ack-all").addEventListener("click", async () => {
    try { const r = await api("POST", "/api/alarms/ack-all"); toast(r.acknowledged + " alarm(s) acknowledged"); } catch (e) { toast(e.message, "error"); }
    loadAlarms();
  });

  // -- line control ------------------------------------------------------------
  $("pause-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = $("pause-note").value.trim();
    const reason = $("pause-reason-select").value + (note ? ": " + note : "");
    try { await statusCall("POST", "/api/line/pause", { reason }); toast("Line paused"); $("pause-note").value = ""; }
    catch (e) { toast(e.message, "error"); }
  });
  $("resume-btn").addEventListener("click", async () => {
    try { await statusCall("POST", "/api/line/resume", {}); toast("Line running"); } catch (e) { toast(e.message, "error"); }
  });
  $("trigger-btn").addEventListener("click", async () => {
    try { const r = await api("POST", "/api/trigger"); toast("Part " + r.part_id + " triggered"); } catch (e) { toast(e.message, "error"); }
  });

  // -- live image and overlay ----------------------------------------------------
  const img = $("live-img");
  const canvas = $("overlay");
  function drawOverlay() {
    const s = st.shown;
    const w = img.clientWidth, h = img.clientHeight;
    canvas.style.left = img.offsetLeft + "px";
    canvas.style.top = img.offsetTop + "px";
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const caption = $("live-defects");
    if (!s || !w) { caption.textContent = ""; return; }
    const r = st.results.get(s.partId);
    if (!r) { caption.textContent = ""; return; }
    const shownDefects = (r.defects || []).filter((d) => !(d.camera_id && s.cameraId && d.camera_id !== s.cameraId));
    caption.textContent = shownDefects.length
      ? shownDefects.map((d) => styleOf(d).label + " " + d.class_name + " " + Math.round(d.confidence * 100) + "%").join(" \u00B7 ")
      : r.outcome === "PASS" ? "PASS: no defect" : r.outcome + ": " + ((r.reasons || []).join(" \u00B7 ") || "no defect marked");
    const sx = w / s.frameWidth, sy = h / s.frameHeight;
    if (window.Regions) window.Regions.draw(ctx, st.regions[s.cameraId], sx, sy);  // the drawn ROI, ignore zones, regions
    ctx.font = "bold 20px 'DejaVu Sans', Arial, sans-serif";
    ctx.textBaseline = "bottom";
    for (const d of shownDefects) {
      const style = styleOf(d);
      const [x1, y1, x2, y2] = d.box_xyxy;
      const x = x1 * sx, y = y1 * sy, bw = Math.max(2, (x2 - x1) * sx), bh = Math.max(2, (y2 - y1) * sy);
      const pad = 4;
      ctx.lineWidth = 4;
      ctx.setLineDash(style.dash);
      ctx.strokeStyle = "#000";
      ctx.strokeRect(x - pad - 1, y - pad - 1, bw + 2 * pad + 2, bh + 2 * pad + 2);
      ctx.strokeStyle = style.color;
      ctx.strokeRect(x - pad, y - pad, bw + 2 * pad, bh + 2 * pad);
      ctx.setLineDash([]);
      const label = style.label + " " + d.class_name + " " + Math.round(d.confidence * 100) + "%";
      const tw = ctx.measureText(label).width + 12;
      let ly = y - pad - 2;
      if (ly < 26) ly = y + bh + pad + 28;
      const lx = Math.min(Math.max(0, x - pad), w - tw);
      ctx.fillStyle = style.color;
      ctx.fillRect(lx, ly - 26, tw, 26);
      ctx.fillStyle = d.action === "reject" ? "#fff" : "#000";
      ctx.fillText(label, lx + 6, ly - 2);
    }
  }
  window.addEventListener("resize", () => { drawOverlay(); drawHeat(); });

  // -- heat map (no-labels inspectors): under the boxes, only where the part looks anomalous -----------
  const heatCanvas = $("heat");
  const heatBtn = $("heat-toggle");
  function drawHeat() {
    const s = st.shown;
    const heat = st.heat && s && st.heat.partId === s.partId ? st.heat.canvas : null;
    heatBtn.hidden = !heat;
    heatBtn.setAttribute("aria-pressed", st.heatOn ? "true" : "false");
    heatCanvas.hidden = !heat || !st.heatOn;
    const r = s ? st.results.get(s.partId) : null;
    const score = r ? r.image_score : null;
    $("live-score").hidden = score === null || score === undefined;
    $("image-score").textContent = window.Heat.fmtScore(score);
    if (heatCanvas.hidden) return;
    const w = img.clientWidth, h = img.clientHeight;
    heatCanvas.style.left = img.offsetLeft + "px";
    heatCanvas.style.top = img.offsetTop + "px";
    heatCanvas.style.width = w + "px";
    heatCanvas.style.height = h + "px";
    heatCanvas.width = Math.max(1, w);
    heatCanvas.height = Math.max(1, h);
    const ctx = heatCanvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    window.Heat.draw(ctx, heat, 0, 0, w, h);
    heatCanvas.dataset.partId = String(s.partId);
  }
  async function loadHeat(partId) {
    const r = st.results.get(partId);
    if (!r || !r.heatmap) { st.heat = null; drawHeat(); return; }
    if (st.heat && st.heat.partId === partId) { drawHeat(); return; }
    const canvas = await window.Heat.load("/api/live/heatmap?part_id=" + partId);
    if (!st.shown || st.shown.partId !== partId) return;  // a newer image is shown meanwhile
    st.heat = canvas ? { partId, canvas } : null;
    drawHeat();
  }
  heatBtn.addEventListener("click", () => { st.heatOn = !st.heatOn; drawHeat(); });

  async function fetchImage() {
    const want = st.latest ? st.latest.part_id : null;
    if (st.imgBusy || (want !== null && want === st.lastRequested)) return;
    st.imgBusy = true;
    st.lastRequested = want;
    try {
      const res = await fetch("/api/live/image" + (want !== null ? "?part_id=" + want : ""), { credentials: "same-origin" });
      if (res.status === 404) { $("live-note").hidden = false; $("live-note").textContent = "NO IMAGE YET"; return; }
      if (!res.ok) return;
      const blob = await res.blob();
      const shown = {
        partId: Number(res.headers.get("X-Part-Id")),
        cameraId: res.headers.get("X-Camera-Id"),
        frameWidth: Number(res.headers.get("X-Frame-Width")),
        frameHeight: Number(res.headers.get("X-Frame-Height")),
      };
      const url = URL.createObjectURL(blob);
      await new Promise((resolve) => {
        img.onload = resolve;
        img.onerror = resolve;
        img.src = url;
      });
      if (st.imgUrl) URL.revokeObjectURL(st.imgUrl);
      st.imgUrl = url;
      st.shown = shown;
      $("live-part").textContent = shown.partId;
      // an older image than asked for is normal under the live_fps limit; say so only when the part has no frame at all
      const note = $("live-note");
      const wanted = want !== null ? st.results.get(want) : null;
      if (wanted && shown.partId < want && !(wanted.frames && wanted.frames.length)) {
        note.hidden = false;
        note.textContent = "PART " + want + ": NO IMAGE (showing part " + shown.partId + ")";
      } else {
        note.hidden = true;
        // an older image than asked for (the server's live_fps limit): ask again on the next round, or the
        // screen would stay on the older part until another part arrives
        if (want !== null && shown.partId < want) st.lastRequested = null;
      }
      drawOverlay();
      drawHeat();
      loadHeat(shown.partId);
    } catch (e) {
      /* connection state shows the problem */
    } finally {
      st.imgBusy = false;
    }
  }
  function imageLoop() {
    fetchImage();
    setTimeout(imageLoop, Math.max(50, 1000 / (st.liveFps || 5)));
  }

  // -- live events -----------------------------------------------------------------
  function connect() {
    const conn = $("conn");
    const es = new EventSource("/api/events");
    es.onopen = () => { conn.dataset.state = "live"; $("conn-text").textContent = "LIVE"; };
    es.onerror = () => {
      conn.dataset.state = "lost";
      $("conn-text").textContent = "RECONNECTING";
      if (es.readyState === EventSource.CLOSED) {  // refused (503: too many screens, 401: login needed): the browser gives up, we do not
        es.close();
        fetch("/api/status", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign("/login?next=/");
          else setTimeout(connect, 5000);
        }, () => setTimeout(connect, 5000));
      }
    };
    es.addEventListener("hello", (ev) => {
      const d = JSON.parse(ev.data);
      st.statusShown = st.statusAsked;  // newer than any status request still on its way: their answers are dropped
      renderStatus(d.status);
      renderCounters(d.counters);
      if (d.result) onResult(d.result);
      loadRejects();
      loadAlarms();
    });
    es.addEventListener("result", (ev) => onResult(JSON.parse(ev.data)));
    es.addEventListener("counters", (ev) => renderCounters(JSON.parse(ev.data)));
    es.addEventListener("status", () => { refreshStatus(); alarmsSoon(); });
  }

  function clock() {
    $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false });
    renderAge();
  }

  // the regions drawn on the setup page (per camera), under the defect boxes
  async function loadRegions() {
    try {
      const res = await fetch("/api/setup", { credentials: "same-origin" });
      if (!res.ok) return;
      const d = await res.json();
      st.regions = Object.fromEntries(d.cameras.map((c) => [c.camera_id, c.regions]));
      drawOverlay();
    } catch (e) { /* the next poll tries again */ }
  }

  loadMe();
  connect();
  loadRegions();
  setInterval(loadRegions, 15000);
  imageLoop();
  clock();
  setInterval(clock, 1000);
  setInterval(loadAlarms, 15000);
})();
