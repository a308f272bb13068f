// The supervisor's live view: every live call with its agent, duration, intent, open alerts
// and how many cards the agent took, refreshed every two seconds from GET /api/calls.
"use strict";

(() => {
  const { h, api, clock, label } = callwise;
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 2000;
  let calls = [];
  let fetchedAt = Date.now();

  function duration(c) {
    const start = Date.parse(c.started_at);
    const end = c.ended_at ? Date.parse(c.ended_at) : Date.now();
    return Number.isFinite(start) ? clock((end - start) / 1000) : "—";
  }

  function acceptance(c) {
    if (!c.cards_shown) return "—";
    return `${c.accepted} of ${c.cards_shown} (${Math.round(100 * c.acceptance)}%)`;
  }

  function row(c) {
    const link = h("a", { href: `/sidebar?call_id=${encodeURIComponent(c.call_id)}` }, c.call_id);
    return h("tr", { dataset: { call: c.call_id }, class: c.open_alerts ? "has-alerts" : "" },
      h("td", {}, link), h("td", {}, c.agent_id || "—"), h("td", { class: "num" }, duration(c)),
      h("td", {}, c.live ? label(c.intent) || "—" : (c.disposition ? label(c.disposition) : "not wrapped up")),
      h("td", { class: c.open_alerts ? "num alerts-open" : "num" }, String(c.open_alerts)),
      h("td", { class: "num" }, acceptance(c)));
  }

  function render() {
    const live = calls.filter((c) => c.live);
    const ended = calls.filter((c) => !c.live).slice(-10).reverse();
    $("rows").replaceChildren(...live.map(row));
    $("recent").replaceChildren(...ended.map(row));
    $("empty").hidden = live.length > 0;
  }

  async function refresh() {
    try {
      calls = await api("GET", "/api/calls?recent=true");
      fetchedAt = Date.now();
      $("status").textContent = `${calls.filter((c) => c.live).length} live · updated ` +
        new Date(fetchedAt).toLocaleTimeString();
      document.body.dataset.connection = "live";
      render();
    } catch (err) {
      if (err.status === 401) return;
      if (err.status === 403) { location.replace("/sidebar"); return; }
      document.body.dataset.connection = "down";
      $("status").textContent = `Cannot refresh: ${err.message}`;
    }
    setTimeout(refresh, REFRESH_MS);
  }

  async function start() {
    let me;
    try { me = await api("GET", "/api/me"); } catch (err) {
      if (err.status !== 401) setTimeout(start, 2000);
      return;
    }
    if (me.role !== "supervisor") { location.replace("/sidebar"); return; }
    $("who").textContent = me.username;
    refresh();
    setInterval(render, 1000);  // durations tick between refreshes
  }

  $("logout").addEventListener("click", callwise.logout);
  start();
})();
