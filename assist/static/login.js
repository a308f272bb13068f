// The login page: POST /api/login, keep the token for this tab, go where the user is needed.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  // Only a path of this site: a login page that forwards anywhere is a phishing aid.
  function next(role) {
    const wanted = params.get("next") || "";
    if (/^\/(sidebar|live|dashboard)(\?[^#]*)?$/.test(wanted)) {
      if (role === "supervisor" || wanted.startsWith("/sidebar")) return wanted;
    }
    return role === "supervisor" ? "/live" : "/sidebar";
  }

  async function logIn(event) {
    event.preventDefault();
    const error = $("error");
    error.hidden = true;
    $("submit").disabled = true;
    try {
      let res;
      try {
        res = await fetch("/api/login", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          credentials: "same-origin",
          body: JSON.stringify({ username: $("username").value, password: $("password").value }),
        });
      } catch (err) {
        throw new Error("The server cannot be reached; try again.");
      }
      let body = {};
      try { body = await res.json(); } catch (err) { body = {}; }
      if (res.status !== 200 || !body.token) {
        throw new Error(body.error || `Login failed (${res.status}).`);
      }
      callwise.setToken(body.token);
      location.replace(next(body.role));
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      $("password").value = "";
      $("password").focus();
    } finally {
      $("submit").disabled = false;
    }
  }

  $("why").textContent = params.get("why") || "Log in to see your calls.";
  $("login").addEventListener("submit", logIn);
})();
