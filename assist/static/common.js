// callwise pages: the login token, API calls, the event socket, and a small DOM builder.
// No framework, nothing from a CDN: the Content-Security-Policy allows this origin only.
"use strict";

const callwise = (() => {
  const TOKEN_KEY = "callwise_token";

  // A desktop that embeds the sidebar may hand over a token in the fragment (#token=...),
  // which never reaches a server or its log; it is kept for this tab only.
  function takeFragmentToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get("token");
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  function setToken(value) { sessionStorage.setItem(TOKEN_KEY, value); }
  function forgetToken() { sessionStorage.removeItem(TOKEN_KEY); }

  // Set once the page is on its way out (logged out, or sent to the login): a socket closing
  // behind it must not start a second navigation.
  let leaving = false;

  // To the login page, which brings the user back here afterwards.
  function toLogin(why) {
    if (leaving) return;
    leaving = true;
    forgetToken();
    const back = location.pathname + location.search;
    const query = new URLSearchParams({ next: back });
    if (why) query.set("why", why);
    location.replace(`/login?${query}`);
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "the server cannot be reached");
    }
    if (res.status === 401) {
      toLogin("Your session has ended; log in again.");
      throw new ApiError(401, "not logged in");
    }
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (err) { data = null; }
    if (!res.ok) {
      throw new ApiError(res.status, (data && data.error) || `${res.status} ${res.statusText}`);
    }
    return data;
  }

  async function logout() {
    if (leaving) return;
    leaving = true;  // the server closes this token's streams now
    try { await api("POST", "/api/logout"); } catch (err) { /* signed out either way */ }
    forgetToken();
    location.replace("/login?why=" + encodeURIComponent("You are logged out."));
  }

  function socketUrl(path, params) {
    const query = new URLSearchParams(params || {});
    const t = token();
    if (t) query.set("token", t);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${path}?${query}`;
  }

  // h("div", {class: "x", onclick: f}, child, "text", ...): text always goes in as text.
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clock(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
    const s = Math.floor(seconds);
    const hours = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(hours ? 2 : 1, "0");
    const ss = String(s % 60).padStart(2, "0");
    return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function label(text) { return String(text || "").replaceAll("_", " "); }

  takeFragmentToken();
  return { token, setToken, forgetToken, toLogin, api, ApiError, logout, socketUrl, h, clock,
           label, get leaving() { return leaving; } };
})();
