// Image health panel of the operator screen: per camera, small trend charts (sharpness, brightness, clipped share,
// shift from the setup position) of the last frames, with the band learned at setup shaded; a chart turns red while
// its drift alarm is active. Drawn by Chart.js (station/web/vendor/chartjs), like the statistics page.
"use strict";
(function () {
  const { $, el, api } = window.UI;
  const Chart = window.Chart;  // loaded before this script (templates/index.html)
  const LINE = "#4aa3ff", BAND = "rgba(46,160,79,0.22)", BAD = "#e5484d";
  // [check (alarm key), trend key, label, band key, value format]
  const CHARTS = [
    ["sharpness", "sharpness", "Sharpness", "sharpness", (v) => v.toFixed(3)],
    ["brightness", "brightness", "Brightness", "brightness", (v) => v.toFixed(0)],
    ["clipped", "clipped", "Clipped", "clipped", (v) => (100 * v).toFixed(1) + "%"],
    ["position", "shift_px", "Shift px", null, (v) => v.toFixed(0)],
  ];
  const POLL_MS = 2000;

  // A small line chart of the last values, on a y range that shows the band too.
  function spark(canvas, values, band, bad) {
    if (!values.length) return;
    let lo = Math.min(...values), hi = Math.max(...values);
    if (band) {
      if (band.low !== null) lo = Math.min(lo, band.low);
      if (band.high !== null) hi = Math.max(hi, band.high);
    }
    if (!(hi > lo)) { hi = lo + 1; }
    const pad = (hi - lo) * 0.08;
    const flat = (v) => values.map(() => v);
    const datasets = [{ data: values, borderColor: bad ? BAD : LINE, borderWidth: 2, pointRadius: 0 }];
    if (band && (band.low !== null || band.high !== null)) {  // the band learned at setup: the figure is fine inside it
      datasets.push({ data: flat(band.high === null ? band.low : band.high), borderWidth: 0, pointRadius: 0, backgroundColor: BAND,
        fill: band.high === null ? "end" : band.low === null ? "start" : { value: band.low } });
    }
    new Chart(canvas, {
      type: "line",
      data: { labels: values.map((_, i) => i), datasets },
      options: {
        animation: false, maintainAspectRatio: false, events: [], layout: { padding: 2 },
        scales: { x: { display: false }, y: { display: false, min: lo - pad, max: hi + pad } },
        plugins: { legend: { display: false }, tooltip: { enabled: false } },
      },
    });
  }

  function cameraRow(camId, cam) {
    const row = el("div", "health-cam");
    row.dataset.camera = camId;
    const head = el("div", "health-name", camId);
    if (cam.learning) head.append(el("small", "muted", ` learning ${cam.setup_frames}/${cam.setup_parts}`));
    row.append(head);
    for (const [check, key, label, bandKey, fmt] of CHARTS) {
      const values = cam.trend[key] || [];
      const bad = Object.prototype.hasOwnProperty.call(cam.alarms, check);
      const cell = el("div", "health-chart" + (bad ? " bad" : ""));
      cell.dataset.check = check;
      const last = values.length ? fmt(values[values.length - 1]) : "-";
      cell.append(el("div", "health-label", `${label} ${last}`));
      const box = el("div", "health-spark");  // Chart.js sizes the canvas to this box
      const canvas = el("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `${camId} ${label} over the last ${values.length} frames` + (bad ? ": " + cam.alarms[check] : ""));
      cell.title = bad ? cam.alarms[check] : `${label}: last ${values.length} frames; shaded: the band learned at setup`;
      box.append(canvas);
      cell.append(box);
      row.append(cell);
      requestAnimationFrame(() => canvas.isConnected && spark(canvas, values, bandKey ? cam.bands[bandKey] : (cam.shift_limit_px ? { low: null, high: cam.shift_limit_px } : null), bad));
    }
    return row;
  }

  async function load() {
    const box = $("health-cams");
    if (!box || document.hidden) return;
    let data;
    try { data = await api("GET", "/api/health/image"); } catch (e) { return; }  // the screen's connection state says why
    if (!data.enabled) { $("health").hidden = true; return; }
    const cams = Object.keys(data.cameras).sort();
    for (const c of box.querySelectorAll("canvas")) { const chart = Chart.getChart(c); if (chart) chart.destroy(); }  // before they go
    if (!cams.length) { box.replaceChildren(el("div", "muted", "No frames yet")); return; }
    box.replaceChildren(...cams.map((c) => cameraRow(c, data.cameras[c])));
    const m = data.model;
    const note = $("health-model");
    if (m && m.ready) {
      note.textContent = `model ${m.model_id}: score KS ${m.ks.toFixed(2)}, ${m.window_detections_per_frame === null ? "-" : m.window_detections_per_frame.toFixed(1)} det/frame`
        + ` (baseline ${m.baseline_detections_per_frame.toFixed(1)})`;
      note.classList.toggle("bad", Object.keys(m.alarms).length > 0);
    } else note.textContent = m ? `model ${m.model_id}: baseline ${m.baseline_frames}/${m.baseline_parts}` : "";
  }
  load();
  setInterval(load, POLL_MS);
})();
