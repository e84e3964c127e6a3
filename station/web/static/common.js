// Helpers every page shares (operator screen, review pages, statistics, models): DOM building, number and time
// formats, the toast, the login session and api(), the fetch wrapper that sends the session's CSRF token.
// An ES module: the desk pages' modules import it. The pages still written as classic scripts (operator screen,
// setup, models) read the same functions from window.UI, set at the end; this module runs before them because
// module and deferred scripts run in document order.
const $ = (id) => document.getElementById(id);
const session = { me: null };  // {username, role, csrf} from GET /api/me once logged in
const settings = {
  toastMs: 3500,
  errorToastMs: 8000,
  // Called when the station answers 401 (session ended): by default, to the login page and back here after.
  onUnauthorized: () => {
    window.location.assign(loginUrl());
    throw new Error("login required");
  },
};

// -- DOM ------------------------------------------------------------------------------------------
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function clear(node) { node.replaceChildren(); }
// A canvas sized to its CSS box at the screen's pixel ratio, cleared; draw in CSS pixels on the returned ctx.
function hidpi(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(w * dpr));
  canvas.height = Math.max(1, Math.round(h * dpr));
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

// -- formats (all "-" for a missing value) ----------------------------------------------------------
const missing = (v) => v === null || v === undefined;
function fmtTime(t) {  // local date and time, 2025-01-31 14:05:09
  if (missing(t) || t === "") return "-";
  const d = new Date(t * 1000);
  return d.toLocaleDateString("en-CA") + " " + d.toLocaleTimeString([], { hour12: false });
}
function fmtClock(t) {  // local time of day, 14:05:09
  if (!t) return "-";
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}
function fmtPct(v, digits) { return missing(v) ? "-" : (100 * v).toFixed(digits === undefined ? 1 : digits) + "%"; }
function fmtNum(v, digits) { return missing(v) ? "-" : Number(v).toFixed(digits === undefined ? 2 : digits); }

// -- toast -----------------------------------------------------------------------------------------
let toastTimer = null;
function toast(msg, kind) {
  const t = $("toast");
  if (!t) return;
  t.textContent = msg;
  t.dataset.kind = kind || "info";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, kind === "error" ? settings.errorToastMs : settings.toastMs);
}

// -- session and API ---------------------------------------------------------------------------------
function loginUrl(next) { return "/login?next=" + encodeURIComponent(next || window.location.pathname); }
function csrf() { return session.me ? session.me.csrf : ""; }
// The message of a refused request: FastAPI's detail (a string, or field: message for each invalid field).
function errText(data, res) {
  if (data && data.detail) {
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
  }
  return res.status + " " + res.statusText;
}
// JSON in and out; writes carry X-CSRF-Token. A refusal throws an Error with the detail and .status.
async function api(method, url, body) {
  const opt = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    opt.headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) {
      opt.headers["Content-Type"] = "application/json";
      opt.body = JSON.stringify(body);
    }
  }
  const res = await fetch(url, opt);
  let data = null;
  try { data = await res.json(); } catch (e) { /* no JSON body */ }
  if (res.status === 401) settings.onUnauthorized(method);
  if (!res.ok) {
    const err = new Error(errText(data, res));
    err.status = res.status;
    throw err;
  }
  return data;
}
// The logged-in user (also kept in UI.session.me), or null when nobody is logged in or the station is unreachable.
async function loadMe() {
  try {
    const res = await fetch("/api/me", { credentials: "same-origin" });
    session.me = res.ok ? await res.json() : null;
  } catch (e) {
    session.me = null;
  }
  return session.me;
}
// A page of the QA desk (templates/desk.html): the user in the header and the logout button; the login page
// when nobody is logged in (then resolves to null).
async function startDesk() {
  const me = await loadMe();
  if (!me) { window.location.assign(loginUrl()); return null; }
  $("user-name").textContent = me.username + " (" + me.role + ")";
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (e) { /* gone anyway */ }
    window.location.assign(loginUrl());
  });
  return me;
}


export { $, el, clear, hidpi, fmtTime, fmtClock, fmtPct, fmtNum, toast, errText, api, csrf, loadMe, loginUrl, startDesk, session, settings };
window.UI = { $, el, clear, hidpi, fmtTime, fmtClock, fmtPct, fmtNum, toast, errText, api, csrf, loadMe, loginUrl, startDesk, session, settings };
