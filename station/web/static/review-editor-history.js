// The editor's history tables (templates/review_image.html): the audit rows of the image's labels, newest first,
// and every label row (append-only). Plain functions of the image detail from GET /api/review/images/{id}.
import { $, el, fmtTime } from "./common.js";
import { fmtShort } from "./review-shared.js";

function boxText(v) {
  if (!v || v.x1 === undefined) return "";
  return v.class_name + " [" + [v.x1, v.y1, v.x2, v.y2].map((n) => Math.round(n)).join(", ") + "]";
}
function change(a) {
  const b = a.before, f = a.after;
  switch (a.action) {
    case "add": case "import_add": return "+ " + boxText(f);
    case "delete": case "import_delete": return "\u2212 " + boxText(b) + (a.reason ? " (" + a.reason + ")" : "");
    case "confirm": case "import_confirm": return "\u2713 " + boxText(b);
    case "move": case "reclass": case "move+reclass": return boxText(b) + " \u2192 " + boxText(f);
    case "mark_good": return "image good: " + (b && b.labels ? b.labels.length : 0) + " box(es) removed";
    case "import": return "imported with " + (f && f.labels ? f.labels.length : 0) + " box(es)";
    default: return a.reason || "";
  }
}
export function renderHistory(detail) {
  const rows = detail.audit.slice().reverse();
  const tb = $("audit-body");
  if (!rows.length) tb.replaceChildren(row1("No change yet: the boxes are the model's.", 4));
  else tb.replaceChildren(...rows.map((a) => {
    const tr = el("tr");
    tr.dataset.action = a.action;
    const when = el("td", "rv-nowrap", fmtShort(a.t_wall));
    when.title = fmtTime(a.t_wall);
    tr.append(when, el("td", null, a.user), el("td", null, a.action), el("td", null, change(a)));
    return tr;
  }));
  const hb = $("history-body");
  hb.replaceChildren(...detail.history.map((l) => {
    const tr = el("tr");
    tr.append(el("td", null, l.id), el("td", null, l.class_name), el("td", null, [l.x1, l.y1, l.x2, l.y2].map((n) => Math.round(n)).join(",")),
      el("td", null, l.source), el("td", null, l.status), el("td", null, l.supersedes === null ? "" : "#" + l.supersedes), el("td", null, l.created_by));
    return tr;
  }));
}
function row1(text, cols) {
  const tr = el("tr", "ui-empty-row");
  const td = el("td", null, text);
  td.colSpan = cols;
  tr.append(td);
  return tr;
}
