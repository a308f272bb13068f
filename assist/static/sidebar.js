// The agent's sidebar: one call's live transcript, intent, reply cards and compliance alerts,
// then its wrap-up. Everything on screen is rebuilt from the call's events (core/events.py):
// the server sends each call's story first, then live events, so a reconnect resumes exactly.
"use strict";

(() => {
  const { h, api, clock, label } = callwise;
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const MAX_CARDS = 3;
  // a key pressed this soon after the call changed the aimed-at card was meant for the old one
  const SHIFT_GUARD_MS = 400;

  const state = {
    me: null,
    calls: new Map(),
    current: null,
    wanted: params.get("call_id"),
    socket: null,
    caughtUp: false,
    retry: 0,
    // the chosen card by id, not by place: a reply that arrives must not shift the choice
    selected: null,
    aimedId: null,        // the card the keys act on, as last painted
    aimedChangedAt: 0,    // when the call (not the agent) last changed that card
    pickedByKey: false,
    pinned: null,
    renderQueued: false,
  };
  // What the page measured, for bench/sidebar.py: the customer's audio end -> painted.
  const metrics = [];
  window.callwiseMetrics = metrics;

  function newCall(id) {
    return {
      id, agent: null, campaign: null, startedAt: null, endedAt: null, ended: false,
      wrapped: null, lines: new Map(), partials: new Map(), intent: null, cards: new Map(),
      cardSeq: -1, alerts: new Map(), disclosures: new Map(), overrides: new Map(),
      note: null, noteSource: null, noteDirty: false, measured: new Set(),
    };
  }

  function call(id) {
    let c = state.calls.get(id);
    if (!c) { c = newCall(id); state.calls.set(id, c); }
    return c;
  }

  // ---- events -> state ------------------------------------------------------------------
  function apply(ev) {
    if (!ev || typeof ev.call_id !== "string") return;
    const c = call(ev.call_id);
    const live = state.caughtUp;
    switch (ev.type) {
      case "call_started":
        c.agent = ev.agent_id; c.campaign = ev.campaign_id; c.startedAt = Date.parse(ev.at);
        if (live) state.pinned = null;  // a new call takes the screen
        break;
      case "call_ended":
        if (ev.disposition) c.wrapped = ev;
        c.ended = true;
        c.endedAt = c.endedAt || Date.parse(ev.at);
        c.partials.clear();
        break;
      case "transcript_partial":
        c.partials.set(ev.utterance_id, ev);
        break;
      case "utterance": {
        const had = c.lines.get(ev.seq);
        if (!had || had.revision <= ev.revision) c.lines.set(ev.seq, ev);
        if (ev.utterance_id) c.partials.delete(ev.utterance_id);
        // a partial of the same channel that ended before this final is this final
        for (const [key, p] of c.partials) {
          if (p.channel === ev.channel && p.start_s <= ev.end_s) c.partials.delete(key);
        }
        break;
      }
      case "intent":
        if (!c.intent || ev.seq >= c.intent.seq) c.intent = ev;
        break;
      case "suggestion_draft": {
        if (!turnOf(c, ev.seq)) break;
        const card = upsertCard(c, ev, "llm");
        if (card.state === "draft") card.text = ev.text;
        if (live && ev.latency_ms != null && ev.text) card.firstTextEvent ??= ev;
        break;
      }
      case "suggestion_shown": {
        if (!turnOf(c, ev.seq)) break;
        const card = upsertCard(c, ev, ev.source);
        Object.assign(card, { state: "shown", text: ev.text, rank: ev.rank,
                              citations: ev.citations || [], source: ev.source });
        if (live && ev.latency_ms != null) {
          card.shownEvent = ev;
          if (ev.source === "llm") card.firstTextEvent ??= ev;
        }
        break;
      }
      case "suggestion_withheld": {
        const card = c.cards.get(ev.suggestion_id);
        if (card) Object.assign(card, { state: "withheld", reason: ev.reason,
                                        detail: ev.detail, rules: ev.rules || [] });
        else if (ev.seq === null || ev.seq >= c.cardSeq) {
          const fresh = upsertCard(c, ev, "llm");
          Object.assign(fresh, { state: "withheld", reason: ev.reason, detail: ev.detail,
                                 rules: ev.rules || [] });
        }
        break;
      }
      case "suggestion_feedback": {
        const card = c.cards.get(ev.suggestion_id);
        if (card) { card.feedback = ev.feedback; card.pending = false; card.error = null; }
        break;
      }
      case "compliance_alert":
        c.alerts.set(ev.event_id, ev);
        break;
      case "disclosure": {
        const had = c.disclosures.get(ev.rule);
        // "made" is final (even late); "overdue" replaces "due"
        if (!had || had.status !== "made") c.disclosures.set(ev.rule, ev);
        break;
      }
      case "override":
        c.overrides.set(ev.event_id, ev);
        break;
      case "wrap_up_draft":
        c.note = ev.note; c.noteSource = ev.source;
        break;
      default:
        break;
    }
    schedule();
  }

  // Cards belong to the customer's latest turn: a newer turn clears the older one's.
  function turnOf(c, seq) {
    if (seq === null || seq === undefined) return true;
    if (seq < c.cardSeq) return false;
    if (seq > c.cardSeq) { c.cardSeq = seq; c.cards.clear(); }
    return true;
  }

  function upsertCard(c, ev, source) {
    let card = c.cards.get(ev.suggestion_id);
    if (!card) {
      card = { id: ev.suggestion_id, seq: ev.seq, source, rank: ev.rank || 0, text: "",
               citations: [], state: "draft", feedback: null, pending: false, error: null,
               order: c.cards.size };
      c.cards.set(ev.suggestion_id, card);
    }
    return card;
  }

  // ---- which call is on screen ----------------------------------------------------------
  function pickCurrent() {
    if (state.wanted) { state.current = state.wanted; return; }
    if (state.pinned && state.calls.has(state.pinned)) { state.current = state.pinned; return; }
    const calls = [...state.calls.values()].filter((c) => c.startedAt !== null);
    const live = calls.filter((c) => !c.ended).sort((a, b) => b.startedAt - a.startedAt);
    if (live.length) {
      state.current = live[0].id;
      return;
    }
    const current = state.calls.get(state.current);
    if (current && current.startedAt !== null) return;  // stays until the next call starts
    const pending = calls.filter((c) => !c.wrapped).sort((a, b) => b.startedAt - a.startedAt);
    state.current = pending.length ? pending[0].id : null;
  }

  // ---- state -> screen ------------------------------------------------------------------
  function schedule() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => { state.renderQueued = false; render(); });
  }

  function render() {
    pickCurrent();
    const c = state.calls.get(state.current);
    renderTabs();
    $("waiting").hidden = Boolean(c && c.startedAt !== null);
    $("call").hidden = !(c && c.startedAt !== null);
    if (!c || c.startedAt === null) {
      $("call-title").textContent = state.wanted ? `Call ${state.wanted}` : "callwise";
      $("call-meta").textContent = "";
      $("waiting").textContent = state.wanted ? "This call has not started or is no longer here."
        : (state.caughtUp ? "Waiting for your next call…" : "Loading…");
      $("banners").replaceChildren();
      return;
    }
    $("call-title").textContent = `Call ${c.id}`;
    renderMeta(c);
    renderBanners(c);
    renderIntent(c);
    renderCards(c);
    renderCompliance(c);
    renderTranscript(c);
    renderWrapUp(c);
    measure(c);
  }

  function renderMeta(c) {
    const end = c.ended ? (c.endedAt || Date.now()) : Date.now();
    const parts = [c.ended ? "ended" : "live", clock((end - c.startedAt) / 1000)];
    if (c.agent && readOnly()) parts.push(`agent ${c.agent}`);
    if (c.campaign) parts.push(c.campaign);
    $("call-meta").textContent = parts.join(" · ");
  }

  function renderTabs() {
    const open = [...state.calls.values()].filter(
      (c) => c.startedAt !== null && (!c.wrapped || c.id === state.current));
    const tabs = $("tabs");
    tabs.hidden = state.wanted !== null || open.length < 2;
    if (tabs.hidden) return;
    tabs.replaceChildren(...open.sort((a, b) => a.startedAt - b.startedAt).map((c) => h(
      "button", {
        type: "button", class: c.id === state.current ? "tab active" : "tab",
        "aria-current": c.id === state.current ? "true" : undefined,
        onclick: () => { state.pinned = c.id; render(); },
      },
      c.id, c.ended ? (c.wrapped ? " ✓" : " · wrap-up") : " · live")));
  }

  function renderBanners(c) {
    const banners = [...c.overrides.values()].map((o) => h(
      "div", { class: `banner ${o.action === "stop_and_add_to_do_not_call" ? "optout" : "handoff"}`,
               role: "alert" },
      h("strong", {}, o.action === "stop_and_add_to_do_not_call"
        ? "Opt-out: the customer asked not to be called again."
        : "Hand-off: the customer asked for a person or a transfer."),
      " ", o.action === "stop_and_add_to_do_not_call"
        ? "Stop the offer, confirm the opt-out, and close politely."
        : "Transfer the call or offer a call back now.",
      h("span", { class: "why" }, ` (${o.why})`)));
    if (c.ended && !c.wrapped && !readOnly()) {
      banners.push(h("div", { class: "banner ended" }, "The call has ended: complete the wrap-up."));
    }
    $("banners").replaceChildren(...banners);
  }

  function renderIntent(c) {
    const node = $("intent");
    if (!c.intent) { node.textContent = "—"; return; }
    node.replaceChildren(
      h("strong", {}, label(c.intent.intent)),
      h("span", { class: "confidence" }, ` ${Math.round(c.intent.confidence * 100)}%`));
  }

  function visibleCards(c) {
    const cards = [...c.cards.values()];
    const overrides = cards.filter((k) => k.source === "override");
    const llm = cards.filter((k) => k.source === "llm").sort((a, b) => a.order - b.order);
    // an AI reply that repeats a later top agent's card word for word is one card, not two
    // (the first card stays where the agent is reading it)
    const said = new Set(llm.filter((k) => k.state === "shown").map((k) => same(k.text)));
    // the cards shown at once: the policy's answer (when no top agent's reply states it) and
    // the top agents' replies, in the order the server ranked them
    const exemplars = cards.filter((k) => (k.source === "exemplar" || k.source === "policy")
                                     && !(k.rank > 0 && said.has(same(k.text))))
      .sort((a, b) => a.rank - b.rank);
    // the first card never moves when the AI's reply arrives: it goes second
    const rest = [...exemplars.slice(0, 1), ...llm, ...exemplars.slice(1)];
    return [...overrides, ...rest].slice(0, MAX_CARDS + overrides.length);
  }

  function same(text) { return String(text || "").toLowerCase().replace(/\W+/g, " ").trim(); }

  const cardNodes = new Map();

  // The card the keys act on: the one the agent picked, else the first. A pick whose card
  // is gone (the customer's next turn replaced the cards) acts on nothing.
  function aimedCard(cards) {
    return state.selected === null ? cards[0] : cards.find(card => card.id === state.selected);
  }

  function renderCards(c) {
    const cards = visibleCards(c);
    const aimed = aimedCard(cards);
    const aimedId = aimed ? aimed.id : null;
    if (aimedId !== state.aimedId) {
      if (!state.pickedByKey) state.aimedChangedAt = performance.now();
      state.aimedId = aimedId;
    }
    state.pickedByKey = false;
    $("cards-empty").hidden = cards.length > 0;
    const nodes = cards.map((card, i) => {
      let node = cardNodes.get(card.id);
      if (!node) { node = h("article", { class: "card", dataset: { id: card.id } }); cardNodes.set(card.id, node); }
      fillCard(node, c, card, i, card.id === aimedId);
      return node;
    });
    for (const id of [...cardNodes.keys()]) if (!c.cards.has(id)) cardNodes.delete(id);
    const box = $("cards");
    if (nodes.length !== box.children.length || nodes.some((n, i) => box.children[i] !== n)) {
      box.replaceChildren(...nodes);
    }
  }

  function sourceLabel(card) {
    if (card.source === "override") return "Required next step";
    if (card.source === "policy") return "Policy answer";
    if (card.source === "llm") return card.state === "draft" ? "AI reply (writing…)" : "AI reply";
    return "Top agent's reply";
  }

  const WITHHELD = {
    guardrail: "AI reply withheld: it broke a rule",
    superseded: "AI reply dropped: the customer spoke again",
    llm_error: "AI reply unavailable",
    empty: "The AI had nothing to add",
  };

  function fillCard(node, c, card, index, selected) {
    node.className = ["card", `source-${card.source}`, `state-${card.state}`,
                      card.feedback ? `fb-${card.feedback}` : "", selected ? "selected" : ""]
      .filter(Boolean).join(" ");
    node.dataset.source = card.source;
    node.dataset.state = card.state;
    node.dataset.feedback = card.feedback || "";
    const parts = [h("header", {}, h("span", { class: "key" }, String(index + 1)),
                     h("span", { class: "source" }, sourceLabel(card)))];
    if (card.state === "withheld") {
      const why = [card.detail, (card.rules || []).join(", ")].filter(Boolean).join(" — ");
      parts.push(h("p", { class: "withheld" }, WITHHELD[card.reason] || "AI reply withheld",
                   why ? h("span", { class: "why" }, `: ${why}`) : null));
    } else {
      parts.push(h("p", { class: "text" }, card.text || "…"));
    }
    for (const cite of card.citations || []) {
      parts.push(h("p", { class: "cite", title: cite.context || "" },
                   `Top agent ${cite.agent_id} · call ${cite.call_id} · ${label(cite.outcome)}`));
    }
    if (card.state === "shown" && !readOnly()) {
      parts.push(h("div", { class: "actions" },
        h("button", { type: "button", class: "accept", disabled: card.pending || undefined,
                      onclick: () => feedback(c, card, "accepted") },
          card.feedback === "accepted" ? "Accepted ✓" : "Accept"),
        h("button", { type: "button", class: "dismiss", disabled: card.pending || undefined,
                      onclick: () => feedback(c, card, "dismissed") },
          card.feedback === "dismissed" ? "Dismissed" : "Dismiss"),
        h("button", { type: "button", class: "copy", onclick: () => copy(c, card) },
          card.copied ? "Copied" : "Copy")));
    } else if (card.feedback) {
      parts.push(h("p", { class: "note" }, `Agent ${card.feedback}`));
    }
    if (card.error) parts.push(h("p", { class: "error" }, card.error));
    node.replaceChildren(...parts);
  }

  function renderCompliance(c) {
    const now = Date.now();
    const elapsed = ((c.ended ? c.endedAt : now) - c.startedAt) / 1000;
    $("disclosures").replaceChildren(...[...c.disclosures.values()].map((d) => {
      let text;
      if (d.status === "made") {
        const late = d.due_s !== null && d.said_at_s > d.due_s;
        text = `said at ${clock(d.said_at_s)}${late ? " (late)" : ""}`;
      } else if (d.status === "overdue") {
        text = `not said by ${clock(d.due_s)}: say it now`;
      } else if (d.due_s === null) {
        text = "before the call ends";
      } else {
        const left = d.due_s - elapsed;
        text = left > 0 ? `due by ${clock(d.due_s)} (${clock(left)} left)`
          : `due by ${clock(d.due_s)}: say it now`;
      }
      return h("li", { class: `disclosure ${d.status}`, dataset: { rule: d.rule }, title: d.why },
               h("span", { class: "mark" }, d.status === "made" ? "✓" : "!"),
               h("strong", {}, label(d.rule)), " ", h("span", { class: "when" }, text));
    }));
    const alerts = [...c.alerts.values()].sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    $("alerts").replaceChildren(...alerts.map((a) => h(
      "li", { class: `alert ${a.severity} kind-${a.kind}`, dataset: { kind: a.kind, rule: a.rule } },
      h("strong", {}, ALERT_TITLES[a.kind] || label(a.kind)), " ",
      h("span", { class: "rule" }, label(a.rule)), ": ", a.why)));
  }
  const ALERT_TITLES = {
    forbidden_claim: "Forbidden claim",
    pii_spoken: "Sensitive number spoken",
    disclosure_missing: "Disclosure missing",
    override: "Customer request",
  };

  const lineNodes = new Map();

  function renderTranscript(c) {
    const list = $("transcript");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const lines = [...c.lines.values()].sort((a, b) => a.seq - b.seq);
    const partials = [...c.partials.values()].sort((a, b) => a.start_s - b.start_s);
    const wanted = [];
    for (const u of lines) wanted.push(lineNode(`${c.id}/${u.seq}`, u, false));
    for (const p of partials) wanted.push(lineNode(`${c.id}/p/${p.utterance_id}`, p, true));
    if (wanted.length !== list.children.length || wanted.some((n, i) => list.children[i] !== n)) {
      list.replaceChildren(...wanted);
    }
    for (const key of [...lineNodes.keys()]) {
      if (!wanted.includes(lineNodes.get(key))) lineNodes.delete(key);
    }
    if (nearBottom) list.scrollTop = list.scrollHeight;
  }

  function lineNode(key, u, partial) {
    let node = lineNodes.get(key);
    if (!node) { node = h("li", {}); lineNodes.set(key, node); }
    const role = u.role || "unknown";
    const signature = `${role}|${u.text}|${partial}|${u.provisional}|${u.revision}`;
    if (node.dataset.signature === signature) return node;
    node.dataset.signature = signature;
    node.className = `line role-${role}${partial ? " partial" : ""}${u.provisional ? " provisional" : ""}`;
    node.dataset.role = role;
    if (!partial) node.dataset.seq = String(u.seq);
    node.replaceChildren(
      h("span", { class: "at" }, clock(u.start_s)),
      h("span", { class: "speaker" }, ROLE_NAMES[role] || role),
      h("span", { class: "words" }, u.text || "…"));
    return node;
  }
  const ROLE_NAMES = { agent: "Agent", customer: "Customer", bot: "Bot", unknown: "Speaker" };

  function renderWrapUp(c) {
    const section = $("wrapup");
    section.hidden = !c.ended;
    if (!c.ended) return;
    const form = $("wrapup-form");
    const saved = $("wrapup-saved");
    if (readOnly()) {
      form.hidden = true;
      saved.hidden = false;
      const note = (c.wrapped && c.wrapped.note) || {};
      saved.replaceChildren(
        h("dt", {}, "Outcome"), h("dd", {}, c.wrapped ? label(c.wrapped.disposition) : "not yet wrapped up"),
        h("dt", {}, "Reason"), h("dd", {}, note.reason || "—"),
        h("dt", {}, "Agreed"), h("dd", {}, note.agreed || "—"),
        h("dt", {}, "Next step"), h("dd", {}, note.next_step || "—"));
      return;
    }
    form.hidden = false;
    saved.hidden = true;
    if (form.dataset.call !== c.id) {
      form.dataset.call = c.id;
      form.reset();
      $("wrapup-status").textContent = "";
    }
    const note = (c.wrapped && c.wrapped.note) || c.note;
    if (note && !c.noteDirty) {
      $("note-reason").value = note.reason || "";
      $("note-agreed").value = note.agreed || "";
      $("note-next").value = note.next_step || "";
    }
    if (c.wrapped && !$("disposition").value) $("disposition").value = c.wrapped.disposition;
    $("wrapup-source").textContent = c.wrapped ? `Saved by ${c.wrapped.by || "you"}.`
      : c.noteSource === "llm" ? "Drafted by the AI from the transcript: check and edit it."
      : c.noteSource ? "Drafted from the transcript's own lines: check and edit it."
      : "Drafting a note from the transcript…";
  }

  // ---- the agent's actions --------------------------------------------------------------
  function readOnly() { return !state.me || state.me.role !== "agent"; }

  async function feedback(c, card, value) {
    if (readOnly() || card.state !== "shown") return;
    card.pending = true; card.error = null;
    schedule();
    try {
      const ev = await api("POST", `/api/calls/${encodeURIComponent(c.id)}/suggestions/` +
                           `${encodeURIComponent(card.id)}/feedback`, { feedback: value });
      apply(ev);
    } catch (err) {
      card.pending = false;
      card.error = `Not saved: ${err.message}`;
      schedule();
    }
  }

  async function copy(c, card) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(card.text);
      ok = true;
    } catch (err) {
      // a frame without clipboard permission: the old way still works on a user's click
      const area = h("textarea", { class: "offscreen", readonly: true });
      area.value = card.text;
      document.body.append(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
    }
    card.copied = ok;
    if (!ok) card.error = "Could not copy; select the text instead.";
    schedule();
    if (ok && card.feedback !== "accepted") await feedback(c, card, "accepted");
  }

  async function saveWrapUp(event) {
    event.preventDefault();
    const c = state.calls.get(state.current);
    if (!c || readOnly()) return;
    const disposition = $("disposition").value;
    const status = $("wrapup-status");
    if (!disposition) { status.textContent = "Choose the outcome first."; $("disposition").focus(); return; }
    $("wrapup-save").disabled = true;
    status.textContent = "Saving…";
    try {
      const ev = await api("POST", `/api/calls/${encodeURIComponent(c.id)}/wrap-up`, {
        disposition,
        note: { reason: $("note-reason").value, agreed: $("note-agreed").value,
                next_step: $("note-next").value },
      });
      c.noteDirty = false;
      apply(ev);
      status.textContent = "Saved.";
    } catch (err) {
      status.textContent = `Not saved: ${err.message}`;
    } finally {
      $("wrapup-save").disabled = false;
    }
  }

  // A key acts on the card the agent sees aimed at, never on one that just took its place:
  // a reply arriving or the customer's next turn must not turn "dismiss" into a wrong click.
  function actionable(cards) {
    const card = aimedCard(cards);
    if (!card && state.selected !== null) {
      state.selected = null;  // the picked card is gone: the first one is aimed at now
      schedule();
      return null;
    }
    if (!card || card.id !== state.aimedId) return null;
    return performance.now() - state.aimedChangedAt < SHIFT_GUARD_MS ? null : card;
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) {
      if (event.key === "Escape") target.blur();
      return;
    }
    const c = state.calls.get(state.current);
    const cards = c ? visibleCards(c) : [];
    const card = actionable(cards);
    switch (event.key) {
      case "1": case "2": case "3": case "4":
        if (Number(event.key) <= cards.length) {
          state.selected = cards[Number(event.key) - 1].id;
          state.pickedByKey = true;
          schedule();
        }
        break;
      case "a": if (card) feedback(c, card, "accepted"); break;
      case "d": if (card) feedback(c, card, "dismissed"); break;
      case "c": if (card && card.state === "shown") copy(c, card); break;
      case "w": if (c && c.ended && !readOnly()) $("note-reason").focus(); break;
      case "?": toggleHelp(); break;
      case "Escape": $("help").hidden = true; break;
      default: return;
    }
    event.preventDefault();
  }

  function toggleHelp() { $("help").hidden = !$("help").hidden; }

  // ---- measuring what the agent gets ----------------------------------------------------
  function measure(c) {
    for (const card of c.cards.values()) {
      const pairs = [["first_card", card.shownEvent, `card/${card.seq}`],
                     ["first_llm_text", card.firstTextEvent, `llm/${card.seq}`]];
      for (const [kind, ev, key] of pairs) {
        if (!ev || c.measured.has(key)) continue;
        if (kind === "first_card" && card.source === "llm") continue;  // an exemplar is first
        c.measured.add(key);
        const audioEnd = Date.parse(ev.at) - ev.latency_ms;
        // after this frame is painted
        requestAnimationFrame(() => setTimeout(() => metrics.push({
          kind, call_id: c.id, seq: card.seq, suggestion_id: card.id,
          ms: Date.now() - audioEnd, server_ms: ev.latency_ms,
        }), 0));
      }
    }
  }

  // ---- the socket -----------------------------------------------------------------------
  function setConnection(kind, text) {
    document.body.dataset.connection = kind;
    $("connection").textContent = text;
  }

  function connect() {
    const query = state.wanted ? { call_id: state.wanted } : {};
    const socket = new WebSocket(callwise.socketUrl("/events", query));
    state.socket = socket;
    state.caughtUp = false;
    socket.addEventListener("open", () => { state.retry = 0; setConnection("live", "Live"); });
    socket.addEventListener("message", (msg) => {
      let data;
      try { data = JSON.parse(msg.data); } catch (err) { return; }
      if (data.type === "caught_up") { state.caughtUp = true; schedule(); return; }
      if (data.type === "error") { showError(data.detail); return; }
      apply(data);
    });
    socket.addEventListener("close", (event) => {
      if (state.socket !== socket || callwise.leaving) return;
      state.socket = null;
      for (const c of state.calls.values()) c.partials.clear();  // finals come in the story
      schedule();
      if (event.code === 1008) { callwise.toLogin(event.reason || "Log in again."); return; }
      const wait = Math.min(5000, 500 * 2 ** state.retry++);
      setConnection("down", `Reconnecting… (${event.reason || "connection lost"})`);
      setTimeout(connect, wait);
    });
  }

  function showError(detail) {
    setConnection(document.body.dataset.connection, `Server: ${detail}`);
  }

  async function start() {
    try {
      state.me = await api("GET", "/api/me");
    } catch (err) {
      if (err.status !== 401) {
        setConnection("down", `Cannot load: ${err.message}`);
        setTimeout(start, 2000);
      }
      return;
    }
    if (state.me.role === "supervisor") {
      $("to-live").hidden = false;
      if (!state.wanted) { location.replace("/live"); return; }
    }
    $("readonly").hidden = !readOnly();
    document.body.classList.toggle("readonly-view", readOnly());
    connect();
    setInterval(() => {
      const c = state.calls.get(state.current);
      if (c && !c.ended) schedule();  // the call's clock and the disclosures' deadlines
    }, 1000);
  }

  $("logout").addEventListener("click", callwise.logout);
  $("help-toggle").addEventListener("click", toggleHelp);
  $("wrapup-form").addEventListener("submit", saveWrapUp);
  for (const id of ["note-reason", "note-agreed", "note-next"]) {
    $(id).addEventListener("input", () => {
      const c = state.calls.get(state.current);
      if (c) c.noteDirty = true;
    });
  }
  document.addEventListener("keydown", onKey);
  start();
})();
