// The editor's side panel (templates/review_image.html): the part and image facts, the class picker, the list of
// boxes (a click selects one) with the anomaly-to-defect form, and the history tables (review-editor-history.js).
// makePanel() reads the editor's state object `ed` (detail, selected, drawClass) and writes ed.drawClass.
import { $, el, fmtTime } from "./common.js";
import { st, classColor } from "./review-shared.js";
import { renderHistory } from "./review-editor-history.js";

export function makePanel(ed, byId, labels, select) {
  function renderPanel() {
    const d = ed.detail;
    const o = $("outcome");
    o.textContent = d.inspection.outcome || "";
    o.dataset.outcome = d.inspection.outcome || "";
    $("part-id").textContent = d.inspection.part_id;
    $("img-meta").textContent = "#" + d.image.id + " \u00B7 " + d.image.camera_id + " \u00B7 " + d.image.width + "\u00D7" + d.image.height + " " + d.image.format;
    const cams = $("cameras");  // every image of this part, one per camera
    cams.replaceChildren(...d.inspection.images.map((im, i) => {
      const node = el(im.id === d.image.id ? "b" : im.deleted ? "s" : "a", null, im.camera_id);
      if (node.tagName === "A") node.href = "/review/image/" + im.id;
      if (im.deleted) node.title = "image deleted by the disk budget";
      return i ? [document.createTextNode(" \u00B7 "), node] : [node];
    }).flat());
    $("model-id").textContent = d.inspection.model_id || "-";
    $("t-wall").textContent = fmtTime(d.inspection.t_wall);
    $("reasons").textContent = d.inspection.reasons.length ? d.inspection.reasons.join(" \u00B7 ") : "-";
    $("image-score").textContent = window.Heat.fmtScore(d.inspection.image_score);
    $("review-state").textContent = d.review ? (d.review.verdict === "good" ? "GOOD (no defect)" : "LABELED") + " by " + d.review.reviewed_by + ", " + fmtTime(d.review.reviewed_at) : "not reviewed";
    document.title = "Part " + d.inspection.part_id + " (image " + d.image.id + ") - review";
    st.classes = d.classes;
    const sel = $("class-select");
    const cur = sel.value;
    sel.replaceChildren(...d.classes.map((c, i) => new Option((i < 9 ? i + 1 + ": " : "") + c, c)));
    if (!ed.drawClass || !d.classes.includes(ed.drawClass)) ed.drawClass = d.classes[0] || null;
    const lab = byId(ed.selected);
    sel.value = lab ? lab.class_name : (cur && d.classes.includes(cur) ? cur : ed.drawClass);
    renderLabelList();
    renderHistory(ed.detail);
  }
  function renderLabelList() {
    const ul = $("label-list");
    const labs = labels();
    $("label-count").textContent = labs.length ? "(" + labs.length + ")" : "";
    if (!labs.length) { ul.replaceChildren(el("li", "ui-empty-row", "No boxes: the image shows no defect" + (ed.detail.review ? "." : " (not reviewed yet).")) ); }
    else {
      ul.replaceChildren(...labs.map((lab) => {
        const li = el("li");
        li.dataset.labelId = lab.id;
        li.classList.toggle("selected", lab.id === ed.selected);
        const sw = el("span", "rv-swatch");
        sw.style.background = classColor(lab.class_name);
        const text = el("span", "rv-label-text");
        text.append(el("b", null, lab.class_name + " "), el("small", null,
          "#" + lab.id + " [" + [lab.x1, lab.y1, lab.x2, lab.y2].map((v) => Math.round(v)).join(", ") + "]" +
          (lab.confidence !== null && lab.source === "model" ? " conf " + lab.confidence.toFixed(2) : "")));
        const src = el("span", "rv-src", lab.source === "qa" ? "\u2713 qa" : lab.source);
        src.dataset.src = lab.source;
        li.append(sw, text, src);
        li.addEventListener("click", () => select(lab.id));
        return li;
      }));
    }
    $("confirm-selected").disabled = ed.selected === null;
    $("delete-selected").disabled = ed.selected === null;
    renderAnomalyForm();
  }
  // An anomaly box (no-labels inspector) selected: QA names the defect it shows, a known class or a new one.
  function renderAnomalyForm() {
    const lab = byId(ed.selected);
    const form = $("anomaly-form");
    const show = !!lab && !!ed.detail && lab.class_name === ed.detail.anomaly_class;
    if (show && form.hidden) $("anomaly-class").value = "";
    form.hidden = !show;
    if (!show) return;
    $("anomaly-classes").replaceChildren(...st.classes.filter((c) => c !== ed.detail.anomaly_class).map((c) => new Option(c, c)));
  }

  return { renderPanel, renderLabelList };
}
