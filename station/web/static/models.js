// Models page: registry, training runs with live progress, evaluation side by side, shadow mode,
// promotion through the gate (admin), rollback (admin), threshold tuning. Everything goes through /api/models/*.
"use strict";
(function () {
  const { $, el, clear, fmtTime, fmtPct: pct, toast, api } = window.UI;
  const ROLE = document.body.dataset.role;
  const ADMIN = ROLE === "admin";
  const st = { over: null, golden: [], evals: [], evalId: null, evalData: null, jobId: null, logOffset: -1, tuneArgs: null };
  const timers = {};

  // -- helpers of this page ---------------------------------------------------------------------
  function td(text, cls) { return el("td", cls, text); }
  function num(v, d) { return window.UI.fmtNum(v, d === undefined ? 3 : d); }
  function short(sha) { return sha ? sha.slice(0, 12) : "-"; }
  // a registered model's file is <sha256>.onnx, so its model id is "<sha256>:<sha12>": show the 12 digits
  function label(modelId) { const m = /^[0-9a-f]{64}:([0-9a-f]{12})$/.exec(modelId || ""); return m ? m[1] : (modelId || "-"); }
  function chip(node, s, text) { node.dataset.s = s || ""; node.textContent = text === undefined ? (s || "") : text; }
  function badge(outcome) { const b = el("span", "ui-badge", outcome); b.dataset.outcome = outcome; return b; }
  function every(name, ms, fn) {
    clearInterval(timers[name]);
    timers[name] = setInterval(fn, ms);
  }
  function stop(name) { clearInterval(timers[name]); timers[name] = null; }

  // -- dialog (confirm with reason; override for a refused promotion) ---------------------------------
  function ask(title, text, opts) {
    const dlg = $("dlg");
    $("dlg-title").textContent = title;
    $("dlg-text").textContent = text;
    $("dlg-reason").value = "";
    $("dlg-reason").required = !!(opts && opts.reasonRequired);
    $("dlg-reason-label").textContent = opts && opts.reasonRequired ? "Reason (required, kept in the audit trail)" : "Reason (audit trail, optional)";
    $("dlg-override").hidden = !(opts && opts.refusal);
    $("dlg-refusal").textContent = (opts && opts.refusal) || "";
    $("dlg-override-box").checked = false;
    $("dlg-ok").textContent = (opts && opts.ok) || "OK";
    return new Promise((resolve) => {
      const done = (v) => {
        $("dlg-ok").onclick = null;
        $("dlg-cancel").onclick = null;
        dlg.close();
        resolve(v);
      };
      $("dlg-ok").onclick = () => {
        const reason = $("dlg-reason").value.trim();
        if ($("dlg-reason").required && reason.length < 3) { $("dlg-reason").focus(); toast("Give a reason (at least 3 characters)", "error"); return; }
        if (opts && opts.refusal && !$("dlg-override-box").checked) { toast("Tick 'Override the gate' or cancel", "error"); return; }
        done({ reason, override: $("dlg-override-box").checked });
      };
      $("dlg-cancel").onclick = () => done(null);
      dlg.showModal();
      $("dlg-reason").focus();
    });
  }

  // -- registry -----------------------------------------------------------------------------------
  function goldenId() { return $("golden-pick").value || null; }

  function renderStrip() {
    const o = st.over;
    $("running-model").textContent = label(o.running.model_id);
    $("running-model").title = o.running.model_id;
    if (o.inspector_type !== "onnx") chip($("running-state"), "retired", o.inspector_type);
    else chip($("running-state"), o.running.is_current ? "ok" : "mismatch", o.running.is_current ? "registry current" : "not the registry's current");
    $("current-model").textContent = short(o.current);
    $("rollback-last").hidden = !ADMIN || !o.models.some((m) => m.status === "retired");
  }

  function modelName(m) { return short(m.sha256) + (m.trained_by ? " (" + m.trained_by + ")" : ""); }

  function renderRegistry() {
    const body = $("registry-body");
    clear(body);
    const models = st.over.models;
    if (!models.length) {
      const tr = el("tr", "ui-empty-row");
      const c = td("No model registered yet: train one below, or `models register FILE`.");
      c.colSpan = 15;
      tr.appendChild(c);
      body.appendChild(tr);
      return;
    }
    const gid = goldenId();
    for (const m of models) {
      const tr = el("tr", m.status === "current" ? "md-current-row" : "");
      tr.dataset.sha = m.sha256;
      const s = td("");
      const c = el("span", "md-chip");
      chip(c, m.status);
      s.appendChild(c);
      tr.appendChild(s);
      const shaCell = td("", "md-mono");
      shaCell.textContent = short(m.sha256);
      shaCell.title = m.sha256;
      tr.appendChild(shaCell);
      tr.appendChild(td(m.task));
      tr.appendChild(td(m.names.join(", ")));
      tr.appendChild(td(m.input_hw ? m.input_hw.join("x") : String(m.imgsz || "-")));
      const ds = td(m.dataset_snapshot ? m.dataset_snapshot.slice(0, 28) : "-", "md-mono");
      ds.title = m.dataset_snapshot || "";
      tr.appendChild(ds);
      tr.appendChild(td(short(m.parent_sha), "md-mono"));
      const g = (gid && m.golden[gid]) || null;
      tr.appendChild(td(g ? pct(g.escape_rate) : "-", "num"));
      tr.appendChild(td(g ? pct(g.false_reject_rate) : "-", "num"));
      tr.appendChild(td(g ? num(g.precision) : "-", "num"));
      tr.appendChild(td(g ? num(g.recall) : "-", "num"));
      tr.appendChild(td(g ? num(g.mAP50) : "-", "num"));
      tr.appendChild(td(m.trained_by || "-"));
      tr.appendChild(td(m.promoted_by ? m.promoted_by + ", " + fmtTime(m.promoted_at) : "-"));
      const act = td("");
      act.className = "ui-row";
      const button = (action, text, onClick, cls) => {
        const b = el("button", "ui-btn ui-btn-small" + (cls ? " " + cls : ""), text);
        b.type = "button";
        b.dataset.action = action;
        b.addEventListener("click", onClick);
        act.appendChild(b);
      };
      button("evaluate", "Evaluate", () => startEval(m));
      if (m.status !== "current") button("shadow", "Shadow", () => startShadow(m.sha256));
      if (ADMIN && m.status === "candidate") button("promote", "Promote", () => promote(m), "ui-btn-good");
      if (ADMIN && m.status === "retired") button("rollback", "Roll back to this", () => rollback(m));
      tr.appendChild(act);
      body.appendChild(tr);
    }
  }

  function renderModelPicks() {
    const sel = $("s-model");
    const keep = sel.value;
    clear(sel);
    for (const m of st.over.models.filter((x) => x.status !== "current")) {
      const o = el("option", null, short(m.sha256) + " " + m.status + (m.trained_by ? " by " + m.trained_by : ""));
      o.value = m.sha256;
      sel.appendChild(o);
    }
    if (keep) sel.value = keep;
  }

  async function loadOverview() {
    st.over = await api("GET", "/api/models");
    renderStrip();
    renderRegistry();
    renderModelPicks();
  }

  async function loadGolden() {
    st.golden = await api("GET", "/api/models/golden");
    for (const sel of [$("golden-pick"), $("t-golden")]) {
      const keep = sel.value;
      clear(sel);
      for (const g of st.golden) {
        const o = el("option", null, g.name + " (" + g.n + " images, " + g.n_defective + " defective) " + g.golden_id);
        o.value = g.golden_id;
        sel.appendChild(o);
      }
      if (!st.golden.length) { const o = el("option", null, "no golden set yet"); o.value = ""; sel.appendChild(o); }
      if (keep) sel.value = keep;
    }
    const g = st.golden.find((x) => x.golden_id === goldenId());
    $("golden-info").textContent = g ? "classes " + g.names.join(", ") : "";
  }

  async function loadSnapshots() {
    const snaps = await api("GET", "/api/models/snapshots");
    const sel = $("t-snapshot");
    clear(sel);
    for (const s of snaps) {
      const o = el("option", null, "#" + s.id + " " + s.name + " (" + s.n_images + " images, " + s.n_labels + " boxes; " + s.class_names.join(", ") + ")");
      o.value = s.id;
      sel.appendChild(o);
    }
    if (!snaps.length) { const o = el("option", null, "no snapshot: create one on the Dataset page"); o.value = ""; sel.appendChild(o); }
    $("train-start").disabled = !snaps.length;
  }

  async function loadHistory() {
    const h = await api("GET", "/api/models/history");
    const ul = $("history");
    clear(ul);
    const shown = h.filter((x) => /^model_(promote|rollback|swap$|swap_failed|train_start|train_cancel|evaluate)/.test(x.action)).slice(0, 60);
    if (!shown.length) { ul.appendChild(el("li", "ui-muted", "Nothing yet")); return; }
    for (const x of shown) {
      const li = el("li");
      li.appendChild(el("span", "ui-muted", fmtTime(x.t_wall) + " "));
      const a = el("span", "act", x.action.replace("model_", "").replace(/_/g, " "));
      a.dataset.a = x.action;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" " + short(x.object_id) + " by " + x.user + (x.reason ? ": " + x.reason : "")));
      ul.appendChild(li);
    }
  }

  // -- promotion / rollback (admin) -------------------------------------------------------------------
  function gateText(m) {
    const gid = goldenId();
    const cur = st.over.models.find((x) => x.status === "current");
    const ce = gid && m.golden[gid] ? pct(m.golden[gid].escape_rate) : "not evaluated";
    const ke = cur && gid && cur.golden[gid] ? pct(cur.golden[gid].escape_rate) : "not evaluated";
    return "Candidate " + short(m.sha256) + ": escape rate " + ce + " vs current " + (cur ? short(cur.sha256) : "-") + ": " + ke +
      ". The line hot-swaps to it between two parts.";
  }

  async function promote(m) {
    let ans = await ask("Promote " + short(m.sha256) + "?", gateText(m), { ok: "Promote" });
    if (!ans) return;
    try {
      const r = await api("POST", "/api/models/" + m.sha256 + "/promote", { reason: ans.reason });
      toast("Promoted " + short(m.sha256) + ": " + r.gate.message + "; line: " + r.swap.status, "ok");
    } catch (e) {
      if (e.status !== 409 || !/refused/.test(e.message)) { toast(e.message, "error"); await refresh(); return; }
      ans = await ask("The gate refused " + short(m.sha256), gateText(m), { refusal: e.message, reasonRequired: true, ok: "Promote anyway" });
      if (!ans) { await refresh(); return; }
      try {
        const r = await api("POST", "/api/models/" + m.sha256 + "/promote", { override: true, reason: ans.reason });
        toast("Promoted " + short(m.sha256) + " OVERRIDING the gate (audited); line: " + r.swap.status, "ok");
      } catch (e2) { toast(e2.message, "error"); }
    }
    await refresh();
  }

  async function rollback(m) {
    const target = m ? short(m.sha256) : "the model the last change replaced";
    const ans = await ask("Roll back to " + target + "?", "The registry makes it current again and the line hot-swaps to it. Audited, not gated.", { ok: "Roll back" });
    if (!ans) return;
    try {
      const r = await api("POST", "/api/models/rollback", { sha256: m ? m.sha256 : null, reason: ans.reason });
      toast("Rolled back to " + short(r.model.sha256) + "; line: " + r.swap.status, "ok");
    } catch (e) { toast(e.message, "error"); }
    await refresh();
  }

  // -- training --------------------------------------------------------------------------------------
  async function startTraining(ev) {
    ev.preventDefault();
    const body = {
      snapshot_id: Number($("t-snapshot").value),
      base: $("t-base").value,
      epochs: Number($("t-epochs").value),
      imgsz: Number($("t-imgsz").value),
      batch: Number($("t-batch").value),
      val_fraction: Number($("t-val").value),
      golden_id: st.golden.length ? $("t-golden").value : null,
    };
    try {
      const j = await api("POST", "/api/models/train", body);
      toast("Training job " + j.job_id + " started", "ok");
      watchJob(j.job_id);
    } catch (e) { toast(e.message, "error"); }
  }

  function watchJob(jobId) {
    if (st.jobId !== jobId) {
      st.jobId = jobId;
      st.logOffset = -1;
      $("job-log").textContent = "";
    }
    $("job").hidden = false;
    pollJob();
    every("job", 1000, pollJob);
  }

  function lossCells(tr, p) {
    const l = p.losses || {};
    const m = p.metrics || {};
    tr.appendChild(td(String(p.epoch), "num"));
    for (const k of ["box_loss", "cls_loss", "dfl_loss"]) tr.appendChild(td(num(l[k]), "num"));
    for (const k of ["precision", "recall", "mAP50"]) tr.appendChild(td(num(m[k]), "num"));
  }

  async function pollJob() {
    let j;
    try { j = await api("GET", "/api/models/jobs/" + st.jobId); } catch (e) { stop("job"); toast(e.message, "error"); return; }
    $("job-id").textContent = "Job " + j.job_id;
    chip($("job-status"), j.status);
    $("job-phase").textContent = j.phase;
    const p = j.progress;
    $("job-progress").value = p ? p.fraction : 0;
    $("job-epoch").textContent = p ? "epoch " + p.epoch + " / " + p.epochs + (p.phase === "batch" ? ", batch " + p.batch + " / " + p.batches : "") +
      (p.losses && p.losses.box_loss !== undefined ? " - box loss " + num(p.losses.box_loss) : "") : "";
    $("job-eta").textContent = p && p.eta_s ? " - about " + Math.round(p.eta_s) + " s left" : "";
    const body = $("job-epochs").tBodies[0];
    clear(body);
    for (const e of j.epochs) { const tr = el("tr"); lossCells(tr, e); body.appendChild(tr); }
    $("job-cancel").hidden = j.status !== "running";
    $("train-start").disabled = j.status === "running" || !$("t-snapshot").value;
    const res = $("job-result");
    if (j.status === "succeeded" && j.result) {
      const c = j.result.comparison;
      res.textContent = "Registered candidate " + short(j.result.sha256) +
        (c ? ": escape " + pct(c.candidate.escape_rate) + " vs current " + (c.current ? pct(c.current.escape_rate) : "-") +
          (c.escape_not_worse ? " (gate: passes)" : " (gate: would refuse)") : "");
    } else if (j.error) {
      res.textContent = j.status + ": " + j.error;
    } else {
      res.textContent = "";
    }
    await pollLog();
    if (j.status !== "running") {
      stop("job");
      await refresh();
    }
  }

  async function pollLog() {
    if ($("job-log-box").open === false && st.logOffset >= 0) return;
    try {
      const l = await api("GET", "/api/models/jobs/" + st.jobId + "/log?offset=" + st.logOffset);
      const pre = $("job-log");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      // Ultralytics redraws its progress bars with carriage returns: keep the last state of each line
      const text = (st.logOffset < 0 ? "" : pre.textContent) + l.text;
      pre.textContent = text.split("\n").map((ln) => ln.split("\r").filter((s) => s.length).pop() || "").join("\n").slice(-200000);
      st.logOffset = l.next_offset;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    } catch (e) { /* the log appears once the worker wrote something */ }
  }

  async function loadJobs() {
    const j = await api("GET", "/api/models/jobs");
    const show = j.active || (j.jobs.length ? j.jobs[0] : null);
    if (show) watchJob(show.job_id);
  }

  // -- evaluation --------------------------------------------------------------------------------------
  async function startEval(m) {
    try {
      const s = await api("POST", "/api/models/" + m.sha256 + "/evaluate", { golden_id: goldenId() });
      toast("Evaluating " + short(m.sha256) + (s.current_sha ? " against " + short(s.current_sha) : " alone") + " on " + s.golden_name, "ok");
      await loadEvals(s.eval_id);
    } catch (e) { toast(e.message, "error"); }
  }

  async function loadEvals(select) {
    st.evals = await api("GET", "/api/models/evaluations");
    const sel = $("e-pick");
    clear(sel);
    for (const e of st.evals) {
      const o = el("option", null, fmtTime(e.started_at) + "  " + short(e.candidate_sha) + (e.current_sha ? " vs " + short(e.current_sha) : " alone") +
        " on " + e.golden_name + " [" + e.status + "]");
      o.value = e.eval_id;
      sel.appendChild(o);
    }
    if (!st.evals.length) sel.appendChild(el("option", null, "no evaluation yet: press Evaluate on a model"));
    const pick = select || st.evalId || (st.evals[0] && st.evals[0].eval_id);
    if (pick) { sel.value = pick; await showEval(pick); }
  }

  async function showEval(evalId) {
    st.evalId = evalId;
    const d = await api("GET", "/api/models/evaluations/" + evalId);
    chip($("e-state"), d.state.status);
    $("e-info").textContent = "by " + d.state.started_by + ", golden set " + d.state.golden_name + " (" + d.state.golden_id + ")" +
      (d.seconds ? ", " + d.seconds + " s" : "");
    if (d.state.status === "running") {
      $("eval-body").hidden = true;
      every("eval", 1000, async () => {
        const s = await api("GET", "/api/models/evaluations/" + evalId);
        if (s.state.status !== "running") { stop("eval"); await loadEvals(evalId); await refresh(); }
      });
      return;
    }
    if (d.error) { $("eval-body").hidden = true; $("e-info").textContent += " - " + d.error; return; }
    st.evalData = d;
    renderEval(d);
  }

  function sideRow(body, label, a, b, fmt, lowerBetter) {
    const tr = el("tr");
    tr.appendChild(el("th", null, label));
    const ca = td(fmt(a), "num");
    const cb = td(b === undefined ? "-" : fmt(b), "num");
    if (b !== undefined && a !== null && b !== null && a !== b) {
      const aBetter = lowerBetter ? a < b : a > b;
      ca.classList.add(aBetter ? "better" : "worse");
      cb.classList.add(aBetter ? "worse" : "better");
    }
    tr.appendChild(ca);
    tr.appendChild(cb);
    body.appendChild(tr);
  }

  function confusion(table, summary) {
    clear(table);
    if (!summary) { table.appendChild(el("caption", "ui-muted", "no current model")); return; }
    const labels = summary.confusion.labels;
    const rows = summary.confusion.rows_truth_cols_predicted;
    const head = el("tr");
    head.appendChild(el("th", null, "truth \\ predicted"));
    for (const l of labels) head.appendChild(el("th", "num", l));
    table.appendChild(head);
    rows.forEach((r, i) => {
      const tr = el("tr");
      tr.appendChild(el("th", null, labels[i]));
      r.forEach((v, j) => tr.appendChild(td(String(v), "num " + (v ? (i === j ? "diag" : "off") : ""))));
      table.appendChild(tr);
    });
  }

  function renderEval(d) {
    $("eval-body").hidden = false;
    const c = d.candidate;
    const k = d.current;
    const gate = $("e-gate");
    gate.dataset.pass = String(!!d.escape_not_worse);
    gate.textContent = k
      ? (d.escape_not_worse ? "Gate: PASSES - " : "Gate: REFUSES - ") + "candidate " + label(d.candidate_model_id) + " escape rate " + pct(c.escape_rate) +
        " vs current " + label(d.current_model_id) + " " + pct(k.escape_rate) + " (" + c.n_images + " golden images, " + c.n_defective + " defective)"
      : "Model " + label(d.candidate_model_id) + " alone: escape rate " + pct(c.escape_rate) + ", false-reject rate " + pct(c.false_reject_rate);
    const sb = $("e-side").tBodies[0];
    clear(sb);
    $("e-side").tHead.rows[0].cells[1].textContent = "Candidate " + short(c.model_sha);
    $("e-side").tHead.rows[0].cells[2].textContent = k ? "Current " + short(k.model_sha) : "Current";
    const kk = (key) => (k ? k[key] : undefined);
    sideRow(sb, "Escape rate", c.escape_rate, kk("escape_rate"), (v) => pct(v) + "", true);
    sideRow(sb, "False-reject rate", c.false_reject_rate, kk("false_reject_rate"), (v) => pct(v), true);
    sideRow(sb, "Uncertain rate", c.uncertain_rate, kk("uncertain_rate"), (v) => pct(v), true);
    sideRow(sb, "Precision", c.precision, kk("precision"), (v) => num(v), false);
    sideRow(sb, "Recall", c.recall, kk("recall"), (v) => num(v), false);
    sideRow(sb, "mAP50", c.mAP50, kk("mAP50"), (v) => num(v), false);
    sideRow(sb, "Escapes / false rejects", c.escapes + " / " + c.false_rejects, k ? k.escapes + " / " + k.false_rejects : undefined, (v) => v, true);
    sideRow(sb, "ms per part", c.ms_per_part, kk("ms_per_part"), (v) => num(v, 1), true);
    const cb = $("e-classes").tBodies[0];
    clear(cb);
    for (const name of d.names) {
      const a = c.per_class[name];
      const b = k ? k.per_class[name] : null;
      const tr = el("tr");
      tr.appendChild(el("th", null, name));
      tr.appendChild(td(num(a.precision, 2) + " / " + num(a.recall, 2), "num"));
      tr.appendChild(td(b ? num(b.precision, 2) + " / " + num(b.recall, 2) : "-", "num"));
      tr.appendChild(td(num(a.ap50), "num"));
      tr.appendChild(td(b ? num(b.ap50) : "-", "num"));
      tr.appendChild(td(pct(a.escape_rate) + " of " + a.n_parts, "num"));
      tr.appendChild(td(b ? pct(b.escape_rate) + " of " + b.n_parts : "-", "num"));
      cb.appendChild(tr);
    }
    confusion($("e-conf-cand"), c);
    confusion($("e-conf-cur"), k);
    const grid = $("e-images");
    clear(grid);
    if (!d.images.length) grid.appendChild(el("p", "ui-muted", k ? "The two models decide every golden image the same way." : "No mistake on the golden set."));
    for (const im of d.images.slice(0, 60)) {
      const tile = el("figure", "md-tile");
      tile.dataset.right = im.current ? (im.candidate_right ? "candidate" : "current") : "";
      const img = el("img");
      img.src = im.thumb;
      img.alt = "golden image " + im.stem;
      img.loading = "lazy";
      tile.appendChild(img);
      const meta = el("figcaption", "md-tile-meta");
      meta.appendChild(el("div", null, "#" + im.index + " " + im.stem + " - truth: " + im.truth.join(", ")));
      const r1 = el("div", "ui-row");
      r1.appendChild(el("span", "ui-muted", "cand."));
      r1.appendChild(badge(im.candidate.outcome));
      if (im.current) { r1.appendChild(el("span", "ui-muted", "cur.")); r1.appendChild(badge(im.current.outcome)); }
      meta.appendChild(r1);
      meta.appendChild(el("div", "ui-muted", im.current ? (im.candidate_right ? "candidate is right" : "current is right") : "a mistake"));
      tile.appendChild(meta);
      grid.appendChild(tile);
    }
    $("tu-model").value = k ? "current" : "candidate";
    $("tune-result").hidden = true;
  }

  // -- threshold tuning -----------------------------------------------------------------------------
  async function propose(ev) {
    ev.preventDefault();
    if (!st.evalId) return;
    const args = { target_escape_rate: Number($("tu-target").value) / 100, model: $("tu-model").value };
    try {
      const p = await api("POST", "/api/models/evaluations/" + st.evalId + "/tune", args);
      st.tuneArgs = args;
      const body = $("tune-table").tBodies[0];
      clear(body);
      for (const name of Object.keys(p.after.thresholds)) {
        const b = p.before.thresholds[name];
        const a = p.after.thresholds[name];
        const tr = el("tr");
        tr.appendChild(el("th", null, name));
        tr.appendChild(td(num(b.reject_conf), "num"));
        tr.appendChild(td(num(b.uncertain_conf), "num"));
        tr.appendChild(td(a.reject_conf >= 1 ? "never" : num(a.reject_conf), "num"));
        tr.appendChild(td(num(a.uncertain_conf), "num"));
        tr.appendChild(td(pct(p.per_class_escape[name]), "num"));
        body.appendChild(tr);
      }
      $("tune-summary").textContent = "Target " + pct(p.target_escape_rate) + (p.achieved ? " reached" : " NOT reachable (lowest " + pct(p.floor_escape_rate) + ")") +
        ": escape rate " + pct(p.before.escape_rate) + " -> " + pct(p.after.escape_rate) + ", false-reject rate " + pct(p.before.false_reject_rate) +
        " -> " + pct(p.after.false_reject_rate) + (p.running_on_line ? "" : ". This model is not on the line: promote it before applying.");
      $("tune-result").hidden = false;
      $("apply-form").hidden = !ADMIN || !p.running_on_line;
    } catch (e) { toast(e.message, "error"); }
  }

  async function applyTuning(ev) {
    ev.preventDefault();
    try {
      await api("POST", "/api/models/rules", { eval_id: st.evalId, reason: $("ap-reason").value.trim(), ...st.tuneArgs });
      toast("The line's thresholds changed (audited); in force from the next part", "ok");
      $("ap-reason").value = "";
      await loadRules();
    } catch (e) { toast(e.message, "error"); }
  }

  async function loadRules() {
    const r = await api("GET", "/api/models/rules");
    const body = $("rules-table").tBodies[0];
    clear(body);
    for (const name of Object.keys(r.configured)) {
      const a = r.configured[name];
      const b = r.effective[name];
      const tr = el("tr");
      tr.appendChild(el("th", null, name));
      tr.appendChild(td(num(a.reject_conf), "num"));
      tr.appendChild(td(num(a.uncertain_conf), "num"));
      const c1 = td(num(b.reject_conf), "num");
      const c2 = td(num(b.uncertain_conf), "num");
      if (b.reject_conf !== a.reject_conf) c1.classList.add("worse");
      if (b.uncertain_conf !== a.uncertain_conf) c2.classList.add("worse");
      tr.appendChild(c1);
      tr.appendChild(c2);
      body.appendChild(tr);
    }
    $("rules-state").textContent = r.override ? "override #" + r.override.id + " by " + r.override.user + " (" + (r.override.reason || "") + ")" : "as configured";
    $("reset-form").hidden = !ADMIN || !r.override;
  }

  async function resetRules(ev) {
    ev.preventDefault();
    try {
      await api("POST", "/api/models/rules/reset", { reason: $("rs-reason").value.trim() });
      toast("Back to the configured thresholds", "ok");
      $("rs-reason").value = "";
      await loadRules();
    } catch (e) { toast(e.message, "error"); }
  }

  // -- shadow mode ---------------------------------------------------------------------------------------
  async function startShadow(sha) {
    try {
      await api("POST", "/api/models/" + sha + "/shadow", { queue_size: 16 });
      toast("Shadow mode: " + short(sha) + " judges every part beside the line", "ok");
    } catch (e) { toast(e.message, "error"); }
    await loadShadow();
  }

  async function stopShadow() {
    try {
      const r = await api("POST", "/api/models/shadow/stop", {});
      if (r.stopped) toast("Shadow stopped: " + r.stopped.recorded + " parts judged, " + r.stopped.differs + " disagreements", "ok");
    } catch (e) { toast(e.message, "error"); }
    await loadShadow();
  }

  async function loadShadow() {
    const v = await api("GET", "/api/models/shadow?limit=50");
    const run = v.running || v.last;
    $("shadow-start").hidden = !!v.running;
    $("shadow-stop").hidden = !v.running;
    $("shadow-state").textContent = v.running ? "running " + label(v.running.model_id) : "off";
    const dl = $("shadow-counters");
    clear(dl);
    if (run) {
      const pairs = [["model", short(run.model_sha)], ["state", v.running ? "running" : "stopped"], ["judged", run.recorded], ["dropped", run.dropped], ["differs", run.differs],
        ["eject differs", run.eject_differs], ["queued", run.pending], ["errors", run.errors], ["ms / part", run.mean_inspect_ms],
        ["abandoned", run.abandoned]];
      for (const [k, val] of pairs) {
        const item = el("div", "md-kv-item");
        item.appendChild(el("dt", null, k));
        item.appendChild(el("dd", null, val === null || val === undefined ? "-" : String(val)));
        dl.appendChild(item);
      }
    }
    const body = $("shadow-body");
    clear(body);
    if (!v.disagreements.length) {
      const tr = el("tr", "ui-empty-row");
      const c = td(v.model_sha ? "No disagreement recorded for " + short(v.model_sha) : "Shadow mode has not run yet");
      c.colSpan = 6;
      tr.appendChild(c);
      body.appendChild(tr);
    }
    for (const d of v.disagreements) {
      const tr = el("tr");
      tr.appendChild(td(String(d.part_id), "num"));
      tr.appendChild(td(fmtTime(d.t_wall)));
      const a = td("");
      a.appendChild(badge(d.production_outcome));
      tr.appendChild(a);
      const b = td("");
      b.appendChild(badge(d.shadow_outcome));
      tr.appendChild(b);
      tr.appendChild(td(d.defects.map((x) => x.class_name + " " + num(x.confidence, 2)).join(", ") || "-"));
      const ic = td("");
      if (d.image_ids.length) {
        const link = el("a");
        link.href = "/review/image/" + d.image_ids[0];
        const img = el("img", "md-thumb-small");
        img.src = "/api/review/images/" + d.image_ids[0] + "/thumb?size=96";
        img.alt = "part " + d.part_id;
        link.appendChild(img);
        ic.appendChild(link);
      } else ic.textContent = "not kept";
      tr.appendChild(ic);
      body.appendChild(tr);
    }
    if (v.running) every("shadow", 2000, loadShadow); else stop("shadow");
  }

  // -- start -----------------------------------------------------------------------------------------
  async function refresh() {
    await loadOverview();
    await loadHistory();
  }

  async function init() {
    if (!(await window.UI.startDesk())) return;
    for (const n of document.querySelectorAll(".md-admin")) if (!ADMIN) n.hidden = true;
    $("golden-pick").addEventListener("change", () => { renderRegistry(); loadGolden(); });
    $("train-form").addEventListener("submit", startTraining);
    $("job-cancel").addEventListener("click", async () => {
      try { await api("POST", "/api/models/jobs/" + st.jobId + "/cancel", {}); toast("Cancelling: training stops at the next batch", "ok"); } catch (e) { toast(e.message, "error"); }
    });
    $("job-log-box").addEventListener("toggle", () => { if ($("job-log-box").open) pollLog(); });
    $("e-pick").addEventListener("change", () => showEval($("e-pick").value));
    $("tune-form").addEventListener("submit", propose);
    $("apply-form").addEventListener("submit", applyTuning);
    $("reset-form").addEventListener("submit", resetRules);
    $("shadow-start").addEventListener("click", () => { if ($("s-model").value) startShadow($("s-model").value); });
    $("shadow-stop").addEventListener("click", stopShadow);
    $("rollback-last").addEventListener("click", () => rollback(null));
    try {
      await loadGolden();
      await refresh();
      await Promise.all([loadSnapshots(), loadRules(), loadShadow(), loadJobs(), loadEvals()]);
    } catch (e) { toast(e.message, "error"); }
    every("overview", 5000, () => loadOverview().catch(() => {}));
  }
  init();
})();
