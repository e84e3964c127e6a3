// What the review pages (queue, editor, dataset, statistics) share: the class colours, time inputs, the SVG
// namespace, and the list the editor's next/previous keys walk (kept in sessionStorage by the queue).
import { toast, api } from "./common.js";

export const PALETTE = ["#ff5d5d", "#4aa3ff", "#ffd23f", "#3ddc84", "#c77dff", "#ff9f43", "#2ee6d6", "#ff7eb6", "#a3e635", "#f97316"];
export const st = { classes: [] };  // the classes of the label store, in order: colours and the keys 1-9

// The SVG namespace, taken from an <svg> the HTML parser made (templates/review.html).
const svgProto = document.getElementById("svg-proto");
const SVG_NS = svgProto ? svgProto.content.firstElementChild.namespaceURI : null;
export function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
export function fmtShort(t) {  // time of day today, else month-day and time
  if (t === null || t === undefined) return "-";
  const d = new Date(t * 1000), now = new Date();
  const time = d.toLocaleTimeString([], { hour12: false });
  if (d.toDateString() === now.toDateString()) return time;
  return String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0") + " " + time.slice(0, 5);
}
export function classColor(name) {
  let i = st.classes.indexOf(name);
  if (i < 0) { // a class outside the known list: a stable colour from its name
    i = 0;
    for (const ch of String(name)) i = (i * 31 + ch.charCodeAt(0)) >>> 0;
  }
  return PALETTE[i % PALETTE.length];
}
export function toLocalInput(t) {
  if (t === null || t === undefined || t === "") return "";
  const d = new Date(Number(t) * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
}
export function fromLocalInput(v) {
  if (!v) return "";
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? String(Math.round(t / 1000)) : "";
}
export function typing(ev) {
  const t = ev.target;
  return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable);
}
const NAV_KEY = "review.nav";
export function loadNav() {
  try { return JSON.parse(sessionStorage.getItem(NAV_KEY)) || { query: "", ids: [] }; } catch (e) { return { query: "", ids: [] }; }
}
export function saveNav(nav) { sessionStorage.setItem(NAV_KEY, JSON.stringify(nav)); }
// Open the image `delta` places from image `id` in the list the queue saved (fetching more of the queue at its end).
export async function goInQueue(id, delta, quiet) {
  const nav = loadNav();
  let ids = Array.isArray(nav.ids) ? nav.ids.slice() : [];
  let i = ids.indexOf(id);
  if (i < 0) { ids = [id]; i = 0; }
  let t = i + delta;
  if (t < 0) { toast("This is the first image of the list"); return; }
  if (t >= ids.length) {
    const p = new URLSearchParams(nav.query || "");
    p.set("limit", "200");
    p.set("offset", "0");
    try {
      const data = await api("GET", "/api/review/queue?" + p);
      const more = data.items.map((it) => it.image_id).filter((x) => !ids.includes(x));
      ids = ids.concat(more);
    } catch (e) { toast("Cannot load the queue: " + e.message, "error"); return; }
    if (t >= ids.length) { if (!quiet) toast("End of the queue"); else toast("Done: end of the queue", "ok"); return; }
  }
  saveNav({ query: nav.query || "", ids, current: ids[t] });
  window.location.assign("/review/image/" + ids[t]);
}
