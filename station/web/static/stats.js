// Statistics page: charts drawn on <canvas> by this file (no library), with the same numbers in tables.
"use strict";
(function () {
  const { $, el, fmtPct, toast, api } = window.UI;
  const R = window.Review;  // class colours shared with the review pages
  const OUTCOME_COLOR = { PASS: "#2ea04f", FAIL: "#e5484d", UNCERTAIN: "#f5b800", FAILSAFE: "#b061e0" };
  const FP_KINDS = [["confirmed", "Confirmed", "#2ea04f"], ["moved", "Moved", "#4aa3ff"], ["reclassified", "Reclassified", "#f5b800"],
    ["false_positives", "Deleted (false positive)", "#e5484d"]];
  const FONT = "12px DejaVu Sans, Liberation Sans, sans-serif";
  const TEXT = "#c9d1db", GRID = "#2d3540", MUTED = "#98a2b0";
  let data = null;

  // -- drawing primitives ----------------------------------------------------------------------
  function setup(canvas) {
    const r = window.UI.hidpi(canvas);
    r.ctx.font = FONT;
    return r;
  }
  function empty(canvas, text) {
    const { ctx, w, h } = setup(canvas);
    ctx.fillStyle = MUTED;
    ctx.textAlign = "center";
    ctx.font = "15px DejaVu Sans, sans-serif";
    ctx.fillText(text || "No data in this period", w / 2, h / 2);
    canvas.dataset.empty = "1";
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  // Axes: y from 0 to yMax on the left (and 0..100% on the right with opts.pct); returns the plot box.
  function axes(ctx, w, h, yMax, opts) {
    const o = Object.assign({ left: 46, right: opts && opts.pct ? 44 : 12, top: 12, bottom: 42, ticks: 5 }, opts || {});
    const box = { x: o.left, y: o.top, w: w - o.left - o.right, h: h - o.top - o.bottom };
    ctx.strokeStyle = GRID;
    ctx.fillStyle = MUTED;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= o.ticks; i++) {
      const y = box.y + box.h - (i / o.ticks) * box.h;
      ctx.beginPath();
      ctx.moveTo(box.x, Math.round(y) + 0.5);
      ctx.lineTo(box.x + box.w, Math.round(y) + 0.5);
      ctx.stroke();
      const v = (yMax * i) / o.ticks;
      ctx.fillText(o.fmt ? o.fmt(v) : (Number.isInteger(v) ? v : v.toFixed(1)), box.x - 6, y);
      if (o.pct) {
        ctx.textAlign = "left";
        ctx.fillText(Math.round((100 * i) / o.ticks) + "%", box.x + box.w + 6, y);
        ctx.textAlign = "right";
      }
    }
    ctx.textBaseline = "alphabetic";
    return box;
  }
  function xLabels(ctx, box, labels, slot) {
    ctx.fillStyle = MUTED;
    ctx.textAlign = "center";
    const every = Math.max(1, Math.ceil((labels.length * 62) / box.w));
    labels.forEach((lab, i) => {
      if (i % every) return;
      const x = box.x + slot * (i + 0.5);
      const parts = String(lab).split("\n");
      parts.forEach((p, k) => ctx.fillText(p, x, box.y + box.h + 15 + 13 * k));
    });
  }
  function stackedBars(canvas, labels, series, opts) {
    delete canvas.dataset.empty;
    if (!labels.length) { empty(canvas); return; }
    const { ctx, w, h } = setup(canvas);
    const totals = labels.map((_, i) => series.reduce((s, ser) => s + (ser.values[i] || 0), 0));
    const yMax = niceMax(Math.max(...totals));
    const box = axes(ctx, w, h, yMax, opts);
    const slot = box.w / labels.length;
    const bw = Math.max(2, Math.min(46, slot * 0.72));
    labels.forEach((_, i) => {
      let y = box.y + box.h;
      for (const ser of series) {
        const v = ser.values[i] || 0;
        if (!v) continue;
        const bh = (v / yMax) * box.h;
        ctx.fillStyle = ser.color;
        ctx.fillRect(box.x + slot * i + (slot - bw) / 2, y - bh, bw, bh);
        y -= bh;
      }
      if (totals[i] && bw >= 18) {
        ctx.fillStyle = TEXT;
        ctx.textAlign = "center";
        ctx.fillText(String(totals[i]), box.x + slot * (i + 0.5), y - 4);
      }
    });
    xLabels(ctx, box, labels, slot);
    return { ctx, box, slot };
  }
  function line(ctx, box, slot, values, color, max) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    let started = false;
    values.forEach((v, i) => {
      if (v === null || v === undefined) { started = false; return; }
      const x = box.x + slot * (i + 0.5), y = box.y + box.h - (v / max) * box.h;
      if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y);
    });
    ctx.stroke();
    values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const x = box.x + slot * (i + 0.5), y = box.y + box.h - (v / max) * box.h;
      ctx.beginPath();
      ctx.arc(x, y, 3.5, 0, 2 * Math.PI);
      ctx.fill();
    });
  }
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
  function hourLabel(iso, bucket) {
    const d = new Date(iso);
    const p = (n) => String(n).padStart(2, "0");
    const day = p(d.getMonth() + 1) + "-" + p(d.getDate());
    return bucket === "day" ? day : p(d.getHours()) + ":00\n" + day;
  }

  // -- the charts ---------------------------------------------------------------------------------
  function drawDefects() {
    const rows = data.defects_over_time;
    const buckets = [...new Set(rows.map((r) => r.bucket))];
    const classes = [...new Set(rows.map((r) => r.class_name))].sort();
    const series = classes.map((c) => ({
      name: c, color: R.classColor(c),
      values: buckets.map((b) => { const r = rows.find((x) => x.bucket === b && x.class_name === c); return r ? r.count : 0; }),
    }));
    stackedBars($("c-defects"), buckets.map((b) => hourLabel(b, data.bucket)), series);
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
    const canvas = $("c-pareto");
    fill($("t-pareto"), rows.map((r) => [r.class_name, r.count, fmtPct(r.share), fmtPct(r.cumulative_share)]), 4);
    if (!rows.length) { empty(canvas, src === "labels" ? "No reviewed labels in this period" : "No defects in this period"); return; }
    const series = rows.map((r, k) => ({ name: r.class_name, color: R.classColor(r.class_name), values: rows.map((_, i) => (i === k ? r.count : 0)) }));
    const drawn = stackedBars(canvas, rows.map((r) => r.class_name), series, { pct: true });
    const yMax = 1;
    line(drawn.ctx, drawn.box, drawn.slot, rows.map((r) => r.cumulative_share), "#e8ecf1", yMax);
    // the 80 % line of the Pareto rule
    const y = drawn.box.y + drawn.box.h * 0.2;
    drawn.ctx.setLineDash([5, 4]);
    drawn.ctx.strokeStyle = MUTED;
    drawn.ctx.beginPath();
    drawn.ctx.moveTo(drawn.box.x, y);
    drawn.ctx.lineTo(drawn.box.x + drawn.box.w, y);
    drawn.ctx.stroke();
    drawn.ctx.setLineDash([]);
  }
  function drawYieldHour() {
    const rows = data.yield_by_hour;
    const series = ["PASS", "FAIL", "UNCERTAIN", "FAILSAFE"].map((o) => ({ name: o, color: OUTCOME_COLOR[o] + "aa", values: rows.map((r) => r[o]) }));
    const canvas = $("c-yield-hour");
    const drawn = stackedBars(canvas, rows.map((r) => hourLabel(r.bucket, "hour")), series, { pct: true });
    if (drawn) line(drawn.ctx, drawn.box, drawn.slot, rows.map((r) => r.yield), "#e8ecf1", 1);
    legend($("l-yield-hour"), [...series.map((x) => [x.name.toLowerCase() + " parts", x.color]), ["yield (right axis)", "#e8ecf1"]]);
    fill($("t-yield-hour"), rows.map((r) => [new Date(r.bucket).toLocaleString([], { hour12: false }), r.total, r.PASS, r.FAIL, r.UNCERTAIN, r.FAILSAFE, fmtPct(r.yield)]), 7);
  }
  function drawYieldShift() {
    const rows = data.yield_by_shift;
    const canvas = $("c-yield-shift");
    fill($("t-yield-shift"), rows.map((r) => [r.date, r.shift, r.total, r.PASS, r.FAIL, r.UNCERTAIN, r.FAILSAFE, fmtPct(r.yield)]), 8);
    delete canvas.dataset.empty;
    if (!rows.length) { empty(canvas); return; }
    const { ctx, w, h } = setup(canvas);
    const box = axes(ctx, w, h, 100, { fmt: (v) => v + "%" });
    const slot = box.w / rows.length;
    const bw = Math.max(3, Math.min(60, slot * 0.7));
    const shiftColor = (s) => ({ A: "#4aa3ff", B: "#2ee6d6", C: "#c77dff" }[s] || "#98a2b0");
    rows.forEach((r, i) => {
      if (r.yield === null) return;
      const bh = r.yield * box.h;
      const x = box.x + slot * i + (slot - bw) / 2;
      ctx.fillStyle = shiftColor(r.shift);
      ctx.fillRect(x, box.y + box.h - bh, bw, bh);
      if (bw >= 26) {
        ctx.fillStyle = TEXT;
        ctx.textAlign = "center";
        ctx.fillText(Math.round(r.yield * 100) + "%", x + bw / 2, box.y + box.h - bh - 4);
      }
    });
    xLabels(ctx, box, rows.map((r) => "shift " + r.shift + "\n" + r.date.slice(5)), slot);
  }
  function drawFp() {
    const fp = data.false_positives;
    const classes = Object.keys(fp.by_class);
    const canvas = $("c-fp");
    legend($("l-fp"), FP_KINDS.map((k) => [k[1], k[2]]));
    const rows = classes.map((c) => { const v = fp.by_class[c]; return [c, v.reviewed, v.confirmed, v.moved, v.reclassified, v.false_positives, fmtPct(v.rate)]; });
    if (classes.length) rows.push(["all classes", fp.reviewed, fp.confirmed, fp.moved, fp.reclassified, fp.false_positives, fmtPct(fp.rate)]);
    fill($("t-fp"), rows, 7);
    delete canvas.dataset.empty;
    canvas.style.height = Math.max(120, 24 + 44 * classes.length) + "px";  // one bar per class
    if (!classes.length) { empty(canvas, "No reviewed model boxes in this period"); return; }
    // horizontal 100% bars: what QA did with the model's boxes, per class
    const { ctx, w, h } = setup(canvas);
    const left = 120, right = 60, top = 10, rowH = Math.min(44, (h - top - 14) / classes.length);
    ctx.textBaseline = "middle";
    classes.forEach((c, i) => {
      const v = fp.by_class[c];
      const y = top + i * rowH;
      ctx.fillStyle = TEXT;
      ctx.textAlign = "right";
      ctx.fillText(c, left - 8, y + rowH / 2);
      let x = left;
      const width = w - left - right;
      for (const [key, , color] of FP_KINDS) {
        const bw = v.reviewed ? (v[key] / v.reviewed) * width : 0;
        ctx.fillStyle = color;
        ctx.fillRect(x, y + rowH * 0.15, bw, rowH * 0.7);
        if (bw > 26 && v[key]) {
          ctx.fillStyle = "#000";
          ctx.textAlign = "center";
          ctx.fillText(String(v[key]), x + bw / 2, y + rowH / 2);
        }
        x += bw;
      }
      ctx.fillStyle = TEXT;
      ctx.textAlign = "left";
      ctx.fillText(fmtPct(v.rate, 0) + " FP", w - right + 6, y + rowH / 2);
    });
    ctx.textBaseline = "alphabetic";
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

  $("stats-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("st-range").addEventListener("change", load);
  $("st-bucket").addEventListener("change", load);
  $("pareto-source").addEventListener("change", drawPareto);
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawAll, 150); });
  R.ready.then(async (me) => {
    if (!me) return;
    try { R.setClasses((await api("GET", "/api/review/facets")).classes); } catch (e) { /* colours from names then */ }
    load();
  });
})();
