// The plant dashboard: yield and Pareto per line/station/shift/product, stations (with the desired model: pinned
// or the group's), parts, drill down to an image.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const get = async (url) => {
    const res = await fetch(url, { credentials: "same-origin" });
    if (res.status === 401) { window.location.assign("/login?next=/"); throw new Error("login"); }
    if (!res.ok) throw new Error(url + ": " + res.status);
    return res.json();
  };
  const cell = (tr, text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; };
  const body = (id) => { const tb = $(id).querySelector("tbody"); tb.replaceChildren(); return tb; };
  const pct = (x) => (x === null || x === undefined ? "-" : (100 * x).toFixed(1) + " %");

  async function pareto(key) {
    const by = $("by").value, days = $("days").value;
    $("pareto-key").textContent = key === null ? "(all)" : "(" + by + " " + key + ")";
    const q = "/api/plant/pareto?by=" + encodeURIComponent(by) + "&days=" + days + (key === null ? "" : "&key=" + encodeURIComponent(key));
    const tb = body("pareto");
    for (const r of await get(q)) { const tr = tb.insertRow(); cell(tr, r.class_name); cell(tr, r.count); cell(tr, pct(r.cumulative_share)); }
  }

  async function parts(station) {
    $("parts-of").textContent = station ? "(" + station + ")" : "(newest)";
    const tb = body("parts");
    for (const p of await get("/api/plant/parts?limit=50" + (station ? "&station=" + encodeURIComponent(station) : ""))) {
      const tr = tb.insertRow();
      cell(tr, p.station_id); cell(tr, p.seq); cell(tr, new Date(p.t).toLocaleString()); cell(tr, p.outcome, p.outcome); cell(tr, p.defects.join(", "));
      const td = cell(tr, "");
      if (p.images.length) {
        const a = document.createElement("a"); a.href = "#"; a.textContent = "image"; a.className = "image-link";
        a.addEventListener("click", (ev) => { ev.preventDefault(); show(p); });
        td.appendChild(a);
      }
    }
  }

  function show(p) {
    $("part-image").src = "/api/plant/image/" + p.images[0];
    $("part-caption").textContent = p.station_id + " #" + p.seq + " " + p.outcome + " " + p.defects.join(", ");
    $("viewer").hidden = false;
  }

  async function refresh() {
    const by = $("by").value, days = $("days").value;
    const tb = body("yield");
    for (const r of await get("/api/plant/yield?by=" + encodeURIComponent(by) + "&days=" + days)) {
      const tr = tb.insertRow(); tr.className = "clickable";
      cell(tr, r.key); cell(tr, r.total); cell(tr, r.pass); cell(tr, r.fail); cell(tr, r.uncertain); cell(tr, r.failsafe); cell(tr, pct(r.yield));
      cell(tr, r.latency_ms_mean === null ? "-" : r.latency_ms_mean.toFixed(1));
      tr.addEventListener("click", () => { pareto(r.key); if (by === "station_id") parts(r.key); });
    }
    await pareto(null);
    const st = body("stations");
    const desired = await get("/api/plant/desired").catch(() => ({ groups: {}, stations: {} }));
    for (const s of await get("/api/plant/stations")) {
      const tr = st.insertRow(); tr.className = "clickable";
      const status = s.status || {};
      cell(tr, s.station_id); cell(tr, s.line); cell(tr, s.last_seen ? new Date(s.last_seen).toLocaleString() : "-");
      cell(tr, status.model_id || s.model_id || "-");
      const pin = desired.stations[s.station_id], group = desired.groups[status.group];
      cell(tr, pin ? pin.version + " (pinned)" : group ? group.version + " (" + status.group + ")" : "-", pin ? "pinned" : "");
      cell(tr, status.outbox === undefined ? "-" : status.outbox);
      cell(tr, (status.alarms || []).join("; ") || "-");
      tr.addEventListener("click", () => parts(s.station_id));
    }
    await parts(null);
  }

  get("/api/me").then((me) => { $("user").textContent = me.username ? me.username + " (" + me.role + ")" : ""; }).catch(() => {});
  $("by").addEventListener("change", refresh);
  $("days").addEventListener("change", refresh);
  refresh();
})();
