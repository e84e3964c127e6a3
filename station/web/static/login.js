// Login without a page reload; the plain form post works without JavaScript too.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const err = document.getElementById("login-error");
  const btn = document.getElementById("login-btn");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    btn.disabled = true;
    try {
      const res = await fetch("/api/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": document.getElementById("csrf_token").value },
        body: JSON.stringify({
          username: document.getElementById("username").value,
          password: document.getElementById("password").value,
        }),
      });
      if (res.ok) {
        const next = document.getElementById("next").value || "/";
        window.location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
        return;
      }
      let detail = "Login failed (" + res.status + ")";
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      if (res.status === 401) detail = "Wrong username or password.";
      if (res.status === 429) detail = "Too many failed attempts. " + detail;
      if (res.status === 403) detail = "The login form expired: reload the page. (" + detail + ")";
      err.textContent = detail;
      document.getElementById("password").value = "";
      document.getElementById("password").focus();
    } catch (e) {
      err.textContent = "Cannot reach the station: " + e;
    } finally {
      btn.disabled = false;
    }
  });
})();
