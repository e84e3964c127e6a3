// The dataset page (templates/review_dataset.html): snapshots of the reviewed labels, their YOLO / COCO exports,
// and the import of labels from a YOLO or COCO zip (with upload progress).
import { $, el, fmtTime, toast, errText, api, csrf } from "./common.js";
import { fromLocalInput } from "./review-shared.js";

export function initDataset() {
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
    xhr.setRequestHeader("X-CSRF-Token", csrf());
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
