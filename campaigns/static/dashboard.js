// The supervisor's dashboard: fetches /api/campaigns and /api/campaigns/{id}/report and draws
// them. Every number on the page is an element with data-metric="<path into the report JSON>"
// and data-value="<the raw JSON number>", so a test (or a person) can check each one against
// the API. Paths: dotted keys; a list item is picked by its key in brackets, e.g.
// ai_vs_human[conversion].ai.lower, by_agent.agents[alice].rate, funnel.all[answered].calls,
// by_day[2025-03-03].by_channel.ai.conversion_rate. A path ending at a proportion
// ({successes, n, rate, lower, upper}) means its rate.
"use strict";

(() => {
  const REFRESH_MS = 30000;
  const CHANNELS = [
    { key: "ai", name: "AI", cls: "ai", shape: "circle" },
    { key: "human", name: "Human", cls: "human", shape: "square" },
  ];
  const COMPARED_LABELS = {
    answer: "Answer rate",
    engagement: "Engagement",
    conversion: "Conversion",
    conversion_per_dialed: "Conversion per dialed",
    opt_out: "Opt-out",
    hand_off: "Hand-off",
  };
  const CHARTED = ["answer", "engagement", "conversion", "opt_out", "hand_off"];
  const PER = { dialed: "per dialed", answered: "per answered", shown: "per suggestion" };

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let loading = false;
  let lastReport = null;

  // ---- formatting: one function per kind of number; the test parses these back ------------
  const DASH = "\u2014";
  const fmt = {
    int: (v) => (v === null ? DASH : String(v).replace(/\B(?=(\d{3})+(?!\d))/g, ",")),
    pct: (v) => (v === null ? DASH : `${(v * 100).toFixed(1)}%`),
    pts: (v) => {
      if (v === null) return DASH;
      const s = (Math.abs(v) * 100).toFixed(1);
      const sign = Number(s) === 0 ? "" : v > 0 ? "+" : "\u2212";
      return `${sign}${s} pts`;
    },
    p: (v) => (v === null ? DASH : v < 0.001 ? "<0.001" : v.toFixed(3)),
    dur: (v) => {
      if (v === null) return DASH;
      const s = Math.round(v);
      return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    },
    rank: (v) => (v === null ? DASH : String(v)),
    yesno: (v) => (v === null ? DASH : v ? "yes" : "no"),
    top: (v) => (v ? "\u2605 Top" : ""),
  };

  function node(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      el.append(child);
    }
    return el;
  }

  /** One number: <span data-metric=path data-value=raw>formatted</span>. */
  function metric(path, value, kind, tag = "span") {
    const v = value === undefined ? null : value;
    return node(tag, {
      "data-metric": path,
      "data-value": v === null ? "" : String(v),
      class: `num ${kind}`,
      text: fmt[kind](v),
    });
  }

  /** A rate and its interval: 31.6% (21.3–40.2%). */
  function rateWithCi(path, prop) {
    return node("span", { class: "rate-ci" },
      metric(path, prop.rate, "pct"), " ",
      node("span", { class: "ci" }, "(",
        metric(`${path}.lower`, prop.lower, "pct"), "\u2013",
        metric(`${path}.upper`, prop.upper, "pct"), ")"));
  }

  function table(id, caption, head, rows) {
    const t = $(id);
    t.replaceChildren(
      node("caption", { text: caption }),
      node("thead", {}, node("tr", {}, ...head.map((h) => node("th", { scope: "col", text: h })))),
      node("tbody", {}, ...rows),
    );
  }

  function row(cells, header = 0) {
    return node("tr", {}, ...cells.map((c, i) => {
      const cell = node(i < header ? "th" : "td", i < header ? { scope: "row" } : {});
      cell.append(c === null ? "" : c);
      return cell;
    }));
  }

  function channels(report) {
    return CHANNELS.filter((c) => report.by_channel[c.key]);
  }

  // ---- sections ---------------------------------------------------------------------------
  function renderCards(report) {
    const t = report.totals;
    const split = (field, kind, prop) => {
      const parts = channels(report).flatMap((c, i) => [
        i ? " \u00b7 " : "",
        `${c.name} `,
        metric(`by_channel.${c.key}.${field}`,
          prop ? report.by_channel[c.key][field].rate : report.by_channel[c.key][field], kind),
      ]);
      return node("p", { class: "split" }, ...parts);
    };
    const card = (label, main, ...lines) =>
      node("article", { class: "card" }, node("h3", { text: label }),
        node("p", { class: "big" }, main), ...lines);
    const ci = (path, prop) => node("p", { class: "sub" }, "95% CI ",
      metric(`${path}.lower`, prop.lower, "pct"), "\u2013", metric(`${path}.upper`, prop.upper, "pct"));
    const ofs = (num, den, what) => node("p", { class: "sub" },
      metric(`totals.${num}`, t[num], "int"), " of ", metric(`totals.${den}`, t[den], "int"), ` ${what}`);
    const rateCard = (label, field, num, den, what) => card(label,
      metric(`totals.${field}`, t[field].rate, "pct"), ci(`totals.${field}`, t[field]),
      ofs(num, den, what), split(field, "pct", true));

    $("cards").replaceChildren(
      card("Dialed", metric("totals.dialed", t.dialed, "int"),
        node("p", { class: "sub" }, "calls placed"), split("dialed", "int", false)),
      card("Answered", metric("totals.answered", t.answered, "int"),
        node("p", { class: "sub" }, metric("totals.answer_rate", t.answer_rate.rate, "pct"),
          " of dialed"),
        split("answered", "int", false)),
      rateCard("Engagement rate", "engagement_rate", "engaged", "answered", "answered"),
      rateCard("Conversion rate", "conversion_rate", "converted", "answered", "answered"),
      rateCard("Opt-out rate", "opt_out_rate", "opted_out", "answered", "answered"),
      rateCard("Hand-off rate", "hand_off_rate", "handed_off", "answered", "answered"),
      card("Avg handle time", metric("totals.avg_handle_seconds", t.avg_handle_seconds, "dur"),
        node("p", { class: "sub" }, "min:sec over ", metric("totals.handled", t.handled, "int"),
          " ended answered calls"),
        split("avg_handle_seconds", "dur", false)),
      card("Suggestion acceptance",
        metric("totals.suggestion_acceptance", t.suggestion_acceptance.rate, "pct"),
        ci("totals.suggestion_acceptance", t.suggestion_acceptance),
        ofs("suggestions_accepted", "suggestions_shown", "shown to agents")),
    );
  }

  function renderTrend(report) {
    const days = report.by_day.map((d) => d.day);
    $("tz").textContent = report.query.time_zone;
    const chans = channels(report);
    if (!days.length) {
      $("trend-chart").replaceChildren(node("p", { class: "empty", text: "No calls yet." }));
    } else {
      const series = chans.map((c) => ({
        name: c.name,
        cls: c.cls,
        shape: c.shape,
        values: report.by_day.map((d) => d.by_channel[c.key].conversion_rate.rate),
        notes: report.by_day.map((d) => `${c.name}, ${d.day}`),
      }));
      const label = `Conversion rate per day, ${chans.map((c) => c.name).join(" and ")}; ` +
        "the table below lists the values.";
      window.Charts.lineChart($("trend-chart"), days, series, label);
    }
    table("trend-table", "Daily figures (conversion = converted / answered)",
      ["Day", "Dialed", "Answered", "Converted", "Conversion", ...chans.map((c) => `${c.name} conversion`)],
      report.by_day.map((d) => {
        const p = `by_day[${d.day}]`;
        return row([
          d.day,
          metric(`${p}.totals.dialed`, d.totals.dialed, "int"),
          metric(`${p}.totals.answered`, d.totals.answered, "int"),
          metric(`${p}.totals.converted`, d.totals.converted, "int"),
          metric(`${p}.totals.conversion_rate`, d.totals.conversion_rate.rate, "pct"),
          ...chans.map((c) => metric(`${p}.by_channel.${c.key}.conversion_rate`,
            d.by_channel[c.key].conversion_rate.rate, "pct")),
        ], 1);
      }));
  }

  function renderVersus(report) {
    const section = $("versus");
    const comparisons = report.ai_vs_human;
    section.hidden = comparisons.length === 0;
    if (!comparisons.length) return;
    const byMetric = Object.fromEntries(comparisons.map((c) => [c.metric, c]));
    const lead = byMetric.conversion || comparisons[0];
    const verdict = $("verdict");
    verdict.textContent = lead.verdict;
    verdict.setAttribute("data-text", `ai_vs_human[${lead.metric}].verdict`);

    const groups = CHARTED.filter((m) => byMetric[m]).map((m) => ({
      label: COMPARED_LABELS[m],
      bars: CHANNELS.map((c) => {
        const prop = byMetric[m][c.key];
        return {
          name: c.name,
          cls: c.cls,
          rate: prop.rate,
          lower: prop.lower,
          upper: prop.upper,
          metric: `ai_vs_human[${m}].${c.key}`,
          shown: fmt.pct(prop.rate),
          note: `${c.name}, ${COMPARED_LABELS[m]}`,
        };
      }),
    }));
    window.Charts.intervalBars($("versus-chart"), groups, CHANNELS,
      "AI and human rates with 95% confidence intervals as whiskers; the table below lists them.");

    table("versus-table", "AI vs human: rates with 95% Wilson intervals; gap = AI minus human " +
      "with Newcombe's 95% interval; p from the two-proportion z-test",
      ["Metric", "AI", "Human", "Gap (95% CI)", "p", "Significant"],
      comparisons.map((c) => {
        const p = `ai_vs_human[${c.metric}]`;
        const name = node("span", {}, COMPARED_LABELS[c.metric] || c.metric, " ",
          node("span", { class: "per", text: PER[c.per] || c.per }));
        return row([
          name,
          node("span", {}, rateWithCi(`${p}.ai`, c.ai), " n=", metric(`${p}.ai.n`, c.ai.n, "int")),
          node("span", {}, rateWithCi(`${p}.human`, c.human), " n=",
            metric(`${p}.human.n`, c.human.n, "int")),
          node("span", {}, metric(`${p}.difference`, c.difference, "pts"), " ",
            node("span", { class: "ci" }, "(", metric(`${p}.lower`, c.lower, "pts"), " to ",
              metric(`${p}.upper`, c.upper, "pts"), ")")),
          metric(`${p}.p`, c.p, "p"),
          metric(`${p}.significant`, c.significant, "yesno"),
        ], 1);
      }));
    $("verdicts").replaceChildren(...comparisons.filter((c) => c !== lead).map((c) =>
      node("li", { "data-text": `ai_vs_human[${c.metric}].verdict`, text: c.verdict })));
  }

  function renderFunnel(report) {
    const stages = report.funnel.all;
    const label = (s) => s.charAt(0).toUpperCase() + s.slice(1);
    window.Charts.funnel($("funnel-chart"), stages.map((s, i) => ({
      label: label(s.stage),
      calls: s.calls,
      parts: [
        { text: fmt.int(s.calls), metric: `funnel.all[${s.stage}].calls`, value: s.calls },
        { text: i ? " \u00b7 " : " calls" },
        ...(i ? [
          { text: fmt.pct(s.of_previous), metric: `funnel.all[${s.stage}].of_previous`,
            value: s.of_previous },
          { text: " of previous" },
        ] : []),
      ],
    })), "Call funnel: dialed, answered, engaged, converted; the table below lists the values.");
    const chans = channels(report);
    table("funnel-table", "Funnel: calls at each stage and their share of the stage before",
      ["Stage", "All", "Of previous", "Of dialed",
        ...chans.flatMap((c) => [`${c.name}`, `${c.name} of previous`])],
      stages.map((s) => row([
        label(s.stage),
        metric(`funnel.all[${s.stage}].calls`, s.calls, "int"),
        metric(`funnel.all[${s.stage}].of_previous`, s.of_previous, "pct"),
        metric(`funnel.all[${s.stage}].of_dialed`, s.of_dialed, "pct"),
        ...chans.flatMap((c) => {
          const own = report.funnel[c.key].find((x) => x.stage === s.stage);
          return [
            metric(`funnel.${c.key}[${s.stage}].calls`, own.calls, "int"),
            metric(`funnel.${c.key}[${s.stage}].of_previous`, own.of_previous, "pct"),
          ];
        }),
      ], 1)));
  }

  function intervalStrip(lower, upper, rate) {
    // a 0-100% track with the interval and the rate: ranks by the lower end become visible
    const svg = window.Charts.svgEl("svg", {
      viewBox: "0 0 100 12", class: "strip", "aria-hidden": "true", focusable: "false",
    });
    window.Charts.svgEl("rect", { x: 0, y: 5, width: 100, height: 2, class: "track" }, svg);
    if (rate !== null) {
      window.Charts.svgEl("rect", {
        x: lower * 100, y: 2, width: Math.max(0.5, (upper - lower) * 100), height: 8, class: "ci",
      }, svg);
      window.Charts.svgEl("rect", { x: rate * 100 - 0.75, y: 0, width: 1.5, height: 12, class: "dot" }, svg);
    }
    return svg;
  }

  function renderLeaderboard(report) {
    const board = report.by_agent;
    const outcome = board.rule.outcome;
    $("rule").textContent = board.rule_text;
    const successLabel = { converted: "Conversions", engaged: "Engaged", not_converted: "Not converted" };
    table("leaderboard", `Agents ranked within their channel by the lower Wilson bound of their ` +
      `${outcome.replace("_", " ")} rate`,
      ["Rank", "Agent", "Channel", "Dialed", "Answered", successLabel[outcome] || outcome, "Rate",
        "95% Wilson interval", "Top"],
      board.agents.map((a) => {
        const p = `by_agent.agents[${a.agent_id}]`;
        const tr = row([
          metric(`${p}.rank`, a.rank, "rank"),
          a.agent_id,
          a.channel === "ai" ? "AI" : "Human",
          metric(`${p}.metrics.dialed`, a.metrics.dialed, "int"),
          metric(`${p}.calls`, a.calls, "int"),
          metric(`${p}.successes`, a.successes, "int"),
          metric(`${p}.rate`, a.rate, "pct"),
          node("span", { class: "interval" },
            metric(`${p}.lower`, a.lower, "pct"), "\u2013", metric(`${p}.upper`, a.upper, "pct"),
            intervalStrip(a.lower, a.upper, a.rate)),
          metric(`${p}.top`, a.top, "top"),
        ], 0);
        tr.setAttribute("data-agent", a.agent_id);
        if (a.top) tr.classList.add("top");
        if (a.rank === null) {
          tr.classList.add("unranked");
          tr.title = `Not ranked: fewer than ${board.rule.min_calls} answered calls`;
        }
        return tr;
      }));
  }

  function renderDefinitions(report) {
    $("definitions").replaceChildren(...Object.entries(report.definitions).flatMap(([k, v]) =>
      [node("dt", { text: k.replaceAll("_", " ") }), node("dd", { text: v })]));
  }

  function render(report) {
    const c = report.campaign;
    $("campaign-meta").textContent =
      `${c.name} \u00b7 ${c.product || "no product"} \u00b7 language ${c.language} \u00b7 id ${c.id}`;
    document.title = `${c.name} \u00b7 callwise dashboard`;
    renderCards(report);
    renderTrend(report);
    renderVersus(report);
    renderFunnel(report);
    renderLeaderboard(report);
    renderDefinitions(report);
  }

  // ---- the login: a token from POST /api/login, kept for this tab only ----------------------
  // A link may carry one in its fragment (#token=...), which never reaches a server or its log.
  const TOKEN_KEY = "callwise_token";

  function takeTokenFromLink() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get("token");
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function askForLogin(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    lastReport = null;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("status").textContent = "Not logged in";
    setState("login", why);
  }

  async function logIn(event) {
    event.preventDefault();
    const error = $("login-error");
    error.hidden = true;
    let res;
    try {
      res = await fetch("/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ username: $("username").value, password: $("password").value }),
        cache: "no-store",
      });
    } catch (err) {
      error.textContent = `The server cannot be reached (${err.message}).`;
      error.hidden = false;
      return;
    }
    let body = {};
    try {
      body = await res.json();
    } catch {
      body = { error: `unexpected answer (HTTP ${res.status})` };
    }
    if (res.status !== 200 || !body.token) {
      error.textContent = body.error || `HTTP ${res.status}`;
      error.hidden = false;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, body.token);
    $("password").value = "";
    $("login").hidden = true;
    load();
  }

  function logOut() {
    askForLogin("Logged out.");
  }

  // ---- data and state ---------------------------------------------------------------------
  async function getJson(url) {
    let res;
    try {
      res = await fetch(url, {
        headers: { Accept: "application/json", ...authHeaders() },
        cache: "no-store",
      });
    } catch (err) {
      return { status: 0, body: { error: `the server cannot be reached (${err.message})` } };
    }
    let body;
    try {
      body = await res.json();
    } catch {
      body = { error: `unexpected answer (HTTP ${res.status})` };
    }
    return { status: res.status, body };
  }

  function setState(state, message) {
    document.body.setAttribute("data-state", state);
    const box = $("message");
    box.hidden = !message;
    box.textContent = message || "";
    if (state !== "ready" && state !== "stale") $("report").hidden = true;
  }

  function fillPicker(campaigns, chosen) {
    const select = $("campaign");
    // a refresh must not rebuild the list under a supervisor who has it open
    const signature = JSON.stringify([chosen, campaigns.map((c) => [c.id, c.name, c.calls])]);
    if (select.dataset.signature === signature) return;
    select.dataset.signature = signature;
    const options = campaigns.map((c) => node("option", {
      value: c.id,
      selected: c.id === chosen,
      text: `${c.name} (${c.id}) \u00b7 ${fmt.int(c.calls)} calls`,
    }));
    if (!campaigns.some((c) => c.id === chosen)) {
      options.unshift(node("option", { value: "", selected: true, disabled: true,
        text: "Choose a campaign" }));
    }
    select.replaceChildren(...options);
  }

  function apiOptions(params) {
    const rest = new URLSearchParams(params);
    rest.delete("campaign");
    const query = rest.toString();
    return query ? `?${query}` : "";
  }

  function stamp() {
    return new Date().toLocaleTimeString("en-GB", { hour12: false });
  }

  async function load() {
    if (loading) return;
    loading = true;
    clearTimeout(timer);
    try {
      await loadOnce();
    } finally {
      loading = false;
      // no refresh behind the login form: nothing would come back but another 401
      if (document.body.getAttribute("data-state") !== "login") {
        timer = setTimeout(load, REFRESH_MS);
      }
    }
  }

  async function loadOnce() {
    const params = new URLSearchParams(location.search);
    const list = await getJson("/api/campaigns");
    if (list.status === 401) return askForLogin("Log in to see the campaigns.");
    $("login").hidden = true;
    $("logout").hidden = false;
    if (list.status === 403) {
      $("status").textContent = `Checked ${stamp()}`;
      return setState("forbidden", "This dashboard is for supervisors; log in as one.");
    }
    if (list.status !== 200) return failed(list);
    let chosen = params.get("campaign");
    if (!chosen) {
      if (!list.body.length) {
        fillPicker([], "");
        $("status").textContent = `Checked ${stamp()}`;
        return setState("empty", "There are no campaigns yet.");
      }
      chosen = list.body[0].id; // the campaign with the latest call
      params.set("campaign", chosen);
      history.replaceState(null, "", `?${params}`);
    }
    fillPicker(list.body, chosen);
    const res = await getJson(`/api/campaigns/${encodeURIComponent(chosen)}/report${apiOptions(params)}`);
    if (res.status === 404) {
      lastReport = null;
      $("status").textContent = `Checked ${stamp()}`;
      return setState("not-found",
        `No campaign with id \u201c${chosen}\u201d. Choose one of the campaigns in the list above.`);
    }
    if (res.status === 401) return askForLogin("Your login has expired; log in again.");
    if (res.status !== 200) return failed(res);
    lastReport = res.body;
    render(res.body);
    $("report").hidden = false;
    setState("ready", "");
    $("status").textContent = `Updated ${stamp()} \u00b7 refreshes every ${REFRESH_MS / 1000} s`;
  }

  function failed(res) {
    const why = (res.body && res.body.error) || `HTTP ${res.status}`;
    if (lastReport) {
      // keep the last figures on screen; a blank page helps no one during a database blip
      setState("stale", `Could not refresh: ${why}. Showing the figures from before.`);
      $("status").textContent = `Refresh failed at ${stamp()}; retrying in ${REFRESH_MS / 1000} s`;
    } else {
      setState(res.status === 503 ? "unavailable" : "error", why);
      $("status").textContent = `Failed at ${stamp()}; retrying in ${REFRESH_MS / 1000} s`;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeTokenFromLink();
    $("login").addEventListener("submit", logIn);
    $("logout").addEventListener("click", logOut);
    $("campaign").addEventListener("change", (event) => {
      const params = new URLSearchParams(location.search);
      params.set("campaign", event.target.value);
      history.pushState(null, "", `?${params}`);
      lastReport = null;
      load();
    });
    window.addEventListener("popstate", () => {
      lastReport = null;
      load();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") load();
    });
    load();
  });
})();
