// Statistics page (templates/stats.html): charts drawn by Chart.js (station/web/vendor/chartjs, served at /vendor/, loaded
// before this module; it sets window.Chart), with the same numbers in the tables beside them. Started by review.js once
// the login is known.
import { $, el, fmtPct, toast, api, hidpi } from "./common.js";
import { st, classColor } from "./review-shared.js";

const Chart = window.Chart;
const OUTCOME_COLOR = { PASS: "#2ea04f", FAIL: "#e5484d", UNCERTAIN: "#f5b800", FAILSAFE: "#b061e0" };
const FP_KINDS = [["confirmed", "Confirmed", "#2ea04f"], ["moved", "Moved", "#4aa3ff"], ["reclassified", "Reclassified", "#f5b800"],
  ["false_positives", "Deleted (false positive)", "#e5484d"]];
const SHIFT_COLOR = { A: "#4aa3ff", B: "#2ee6d6", C: "#c77dff" };
const LINE = "#e8ecf1", GRID = "#2d3540", MUTED = "#98a2b0";
let data = null;

Chart.defaults.color = MUTED;
Chart.defaults.borderColor = GRID;
Chart.defaults.font.family = "DejaVu Sans, Liberation Sans, sans-serif";
Chart.defaults.font.size = 12;
Chart.defaults.animation = false;  // the numbers, at once: no tweening on every refresh
Chart.defaults.maintainAspectRatio = false;  // the chart fills its .rv-chart box (CSS height)
Chart.defaults.plugins.legend.display = false;  // the legends are HTML, beside the chart (.rv-legend)

// -- chart helpers ---------------------------------------------------------------------------------
const notes = new Map();  // canvas -> its "no data" text (Chart.js resizes its charts; these are redrawn on resize)
function note(canvas, text) {
  const { ctx, w, h } = hidpi(canvas);
  ctx.fillStyle = MUTED;
  ctx.textAlign = "center";
  ctx.font = "15px DejaVu Sans, sans-serif";
  ctx.fillText(text, w / 2, h / 2);
}
// A new chart on the canvas (the previous one, if any, is destroyed), or a "no data" note when there is nothing.
function draw(canvas, config, emptyText) {
  const old = Chart.getChart(canvas);
  if (old) old.destroy();
  if (!config) {
    notes.set(canvas, emptyText || "No data in this period");
    note(canvas, notes.get(canvas));
    canvas.dataset.empty = "1";
    return null;
  }
  notes.delete(canvas);
  delete canvas.dataset.empty;
  return new Chart(canvas, config);
}
const pctAxis = (extra) => Object.assign({ min: 0, max: 1, ticks: { callback: (v) => Math.round(100 * v) + "%" } }, extra);
const countAxis = (extra) => Object.assign({ beginAtZero: true, ticks: { precision: 0 } }, extra);
const pctTip = (ctx) => ctx.dataset.label + ": " + fmtPct(ctx.parsed.y);
function legend(div, items) {
  div.replaceChildren(...items.map(([name, color]) => {
    const s = el("span");
    const i = el("i");
    i.style.background = color;
    s.append(i, document.createTextNode(name));
    return s;
  }));
}
function cells(tr, values) {
  for (const v of values) {
    const numeric = typeof v === "number" || /^(-|[0-9.]+%)$/.test(String(v));
    const td = el("td", numeric ? "num" : null, typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v);
    tr.append(td);
  }
  return tr;
}
function fill(tbody, rows, cols) {
  if (!rows.length) {
    const tr = el("tr", "ui-empty-row");
    const td = el("td", null, "No data in this period");
    td.colSpan = cols;
    tr.append(td);
    tbody.replaceChildren(tr);
    return;
  }
  tbody.replaceChildren(...rows.map((r) => cells(el("tr"), r)));
}
function hourLabel(iso, bucket) {  // two lines (Chart.js draws an array label as lines): hour, then day
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  const day = p(d.getMonth() + 1) + "-" + p(d.getDate());
  return bucket === "day" ? day : [p(d.getHours()) + ":00", day];
}

// -- the charts ---------------------------------------------------------------------------------------
function drawDefects() {
  const rows = data.defects_over_time;
  const buckets = [...new Set(rows.map((r) => r.bucket))];
  const classes = [...new Set(rows.map((r) => r.class_name))].sort();
  const series = classes.map((c) => ({
    name: c, color: classColor(c),
    values: buckets.map((b) => { const r = rows.find((x) => x.bucket === b && x.class_name === c); return r ? r.count : 0; }),
  }));
  draw($("c-defects"), buckets.length ? {
    type: "bar",
    data: {
      labels: buckets.map((b) => hourLabel(b, data.bucket)),
      datasets: series.map((s) => ({ label: s.name, data: s.values, backgroundColor: s.color, maxBarThickness: 46 })),
    },
    options: { scales: { x: { stacked: true, grid: { display: false } }, y: countAxis({ stacked: true }) } },
  } : null);
  legend($("l-defects"), series.map((s) => [s.name, s.color]));
  const head = el("tr");
  cells(head, [data.bucket === "day" ? "Day" : "Hour", ...classes, "Total"]);
  head.querySelectorAll("td").forEach((td, i) => { td.replaceWith(el("th", i ? "num" : null, td.textContent)); });
  $("t-defects-head").replaceChildren(head);
  fill($("t-defects"), buckets.map((b, i) => [new Date(b).toLocaleString([], { hour12: false }), ...series.map((s) => s.values[i]),
    series.reduce((t, s) => t + s.values[i], 0)]), classes.length + 2);
}
function drawPareto() {
  const src = $("pareto-source").value;
  const rows = src === "labels" ? data.pareto_labels : data.pareto_model;
  fill($("t-pareto"), rows.map((r) => [r.class_name, r.count, fmtPct(r.share), fmtPct(r.cumulative_share)]), 4);
  draw($("c-pareto"), rows.length ? {
    data: {
      labels: rows.map((r) => r.class_name),
      datasets: [
        { type: "line", label: "cumulative", data: rows.map((r) => r.cumulative_share), yAxisID: "share", borderColor: LINE,
          backgroundColor: LINE, borderWidth: 2.5, pointRadius: 3.5, tooltip: { callbacks: { label: pctTip } } },
        { type: "line", label: "80 %", data: rows.map(() => 0.8), yAxisID: "share", borderColor: MUTED, borderWidth: 1,
          borderDash: [5, 4], pointRadius: 0, pointHitRadius: 0 },  // the 80 % line of the Pareto rule
        { type: "bar", label: "defects", data: rows.map((r) => r.count), backgroundColor: rows.map((r) => classColor(r.class_name)),
          maxBarThickness: 46 },
      ],
    },
    options: { scales: { x: { grid: { display: false } }, y: countAxis(), share: pctAxis({ position: "right", grid: { display: false } }) } },
  } : null, src === "labels" ? "No reviewed labels in this period" : "No defects in this period");
}
function drawYieldHour() {
  const rows = data.yield_by_hour;
  const outcomes = ["PASS", "FAIL", "UNCERTAIN", "FAILSAFE"];
  draw($("c-yield-hour"), rows.length ? {
    data: {
      labels: rows.map((r) => hourLabel(r.bucket, "hour")),
      datasets: [
        { type: "line", label: "yield", data: rows.map((r) => r.yield), yAxisID: "yield", borderColor: LINE, backgroundColor: LINE,
          borderWidth: 2.5, pointRadius: 3.5, spanGaps: false, tooltip: { callbacks: { label: pctTip } } },
        ...outcomes.map((o) => ({ type: "bar", label: o.toLowerCase() + " parts", data: rows.map((r) => r[o]),
          backgroundColor: OUTCOME_COLOR[o] + "aa", maxBarThickness: 46 })),
      ],
    },
    options: {
      scales: { x: { stacked: true, grid: { display: false } }, y: countAxis({ stacked: true }),
        yield: pctAxis({ position: "right", grid: { display: false } }) },
    },
  } : null);
  legend($("l-yield-hour"), [...outcomes.map((o) => [o.toLowerCase() + " parts", OUTCOME_COLOR[o] + "aa"]), ["yield (right axis)", LINE]]);
  fill($("t-yield-hour"), rows.map((r) => [new Date(r.bucket).toLocaleString([], { hour12: false }), r.total, r.PASS, r.FAIL, r.UNCERTAIN,
    r.FAILSAFE, fmtPct(r.yield)]), 7);
}
function drawYieldShift() {
  const rows = data.yield_by_shift;
  fill($("t-yield-shift"), rows.map((r) => [r.date, r.shift, r.total, r.PASS, r.FAIL, r.UNCERTAIN, r.FAILSAFE, fmtPct(r.yield)]), 8);
  draw($("c-yield-shift"), rows.length ? {
    type: "bar",
    data: {
      labels: rows.map((r) => ["shift " + r.shift, r.date.slice(5)]),
      datasets: [{ label: "yield", data: rows.map((r) => r.yield), backgroundColor: rows.map((r) => SHIFT_COLOR[r.shift] || MUTED),
        maxBarThickness: 60 }],
    },
    options: { scales: { x: { grid: { display: false } }, y: pctAxis() }, plugins: { tooltip: { callbacks: { label: pctTip } } } },
  } : null);
}
function drawFp() {
  const fp = data.false_positives;
  const classes = Object.keys(fp.by_class);
  const canvas = $("c-fp");
  legend($("l-fp"), FP_KINDS.map((k) => [k[1], k[2]]));
  const rows = classes.map((c) => { const v = fp.by_class[c]; return [c, v.reviewed, v.confirmed, v.moved, v.reclassified, v.false_positives, fmtPct(v.rate)]; });
  if (classes.length) rows.push(["all classes", fp.reviewed, fp.confirmed, fp.moved, fp.reclassified, fp.false_positives, fmtPct(fp.rate)]);
  fill($("t-fp"), rows, 7);
  canvas.parentElement.style.height = Math.max(120, 40 + 44 * classes.length) + "px";  // one bar per class
  // horizontal 100 % bars: what QA did with the model's boxes, per class (the counts in the tooltip and the table)
  const share = (v, key) => (v.reviewed ? v[key] / v.reviewed : 0);
  draw(canvas, classes.length ? {
    type: "bar",
    data: {
      labels: classes.map((c) => c + " (" + fmtPct(fp.by_class[c].rate, 0) + " FP)"),
      datasets: FP_KINDS.map(([key, label, color]) => ({ label, data: classes.map((c) => share(fp.by_class[c], key)), backgroundColor: color,
        counts: classes.map((c) => fp.by_class[c][key]), maxBarThickness: 30 })),
    },
    options: {
      indexAxis: "y",
      scales: { x: pctAxis({ stacked: true }), y: { stacked: true, grid: { display: false } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => ctx.dataset.label + ": " + ctx.dataset.counts[ctx.dataIndex] + " (" + fmtPct(ctx.parsed.x) + ")" } } },
    },
  } : null, "No reviewed model boxes in this period");
}
function drawKpis() {
  const hours = data.yield_by_hour;
  const total = hours.reduce((s, r) => s + r.total, 0), pass = hours.reduce((s, r) => s + r.PASS, 0);
  $("k-yield").textContent = total ? fmtPct(pass / total) : "-";
  $("k-parts").textContent = total + " parts";
  const fp = data.false_positives;
  $("k-fp").textContent = fmtPct(fp.rate);
  $("k-fp-n").textContent = fp.false_positives + " of " + fp.reviewed + " reviewed model boxes deleted";
  $("k-missed").textContent = fp.missed;
  const top = data.pareto_model[0];
  $("k-top").textContent = top ? top.class_name : "-";
  $("k-top-share").textContent = top ? fmtPct(top.share) + " of " + data.pareto_model.reduce((s, r) => s + r.count, 0) + " detections" : "";
}
function drawAll() {
  if (!data) return;
  drawKpis();
  drawDefects();
  drawPareto();
  drawYieldHour();
  drawYieldShift();
  drawFp();
}

async function load() {
  const range = $("st-range").value;
  const p = new URLSearchParams({ bucket: $("st-bucket").value });
  if (range !== "all") p.set("since", String(Math.floor(Date.now() / 1000 - Number(range))));
  try {
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz && /^[A-Za-z0-9_+\-/]+$/.test(tz)) p.set("tz", tz);
  } catch (e) { /* the station's zone then */ }
  try {
    data = await api("GET", "/api/review/stats?" + p);
  } catch (e) {
    toast("Cannot load the statistics: " + e.message, "error");
    return;
  }
  drawAll();
  $("st-updated").textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
  document.body.dataset.ready = "1";
}

export async function initStats() {
  $("stats-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("st-range").addEventListener("change", load);
  $("st-bucket").addEventListener("change", load);
  $("pareto-source").addEventListener("change", drawPareto);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => notes.forEach((text, canvas) => note(canvas, text)), 150);
  });
  try { st.classes = (await api("GET", "/api/review/facets")).classes; } catch (e) { /* colours from names then */ }
  await load();
}
