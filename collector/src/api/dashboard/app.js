// stocksync operator dashboard: a few views over the collector's JSON API, routed by the
// URL fragment (#/fleet, #/stock, #/sku/<sku>, #/history/<sku>/<location>, #/exceptions,
// #/exception/<id>, #/channels, #/report). No framework, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const enc = encodeURIComponent;
const time = (ms) => (ms == null ? "—" : new Date(ms).toLocaleString());
const ago = (ms) => {
  if (ms == null) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
};
const num = (v) => `<td class="num">${v == null ? "—" : esc(Number(v).toLocaleString())}</td>`;
const state = (s) => `<span class="state ${esc(s)}">${esc(s)}</span>`;
const skuLink = (sku) => (sku ? `<a href="#/sku/${enc(sku)}">${esc(sku)}</a>` : "—");

// With `[[http.tokens]]` configured every API call carries a token: the one entered in the
// header, kept in sessionStorage (this tab only, gone when it closes).
const TOKEN_KEY = "stocksync.token";

function withToken(opts) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const o = Object.assign({}, opts);
  o.headers = Object.assign({}, (opts && opts.headers) || {});
  if (token) o.headers.authorization = "Bearer " + token;
  return o;
}

async function api(path, opts) {
  const r = await fetch(path, withToken(opts));
  if (r.status === 401) throw new Error("This collector needs an API token: enter one at the top right.");
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  if (!r.ok) throw new Error((body && body.detail) || r.status + " " + text);
  return body;
}

function table(id, head, rows, empty) {
  if (!rows.length) return `<p class="muted" id="${id}-empty">${esc(empty || "Nothing here.")}</p>`;
  const th = head.map((h) => (h.startsWith("#") ? `<th class="num">${esc(h.slice(1))}</th>` : `<th>${esc(h)}</th>`)).join("");
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

// ---- pages -------------------------------------------------------------------------

const skew = (ms) => {
  if (ms == null) return `<td class="num muted">—</td>`;
  const s = ms / 1000;
  const text = (s > 0 ? "+" : "") + (Math.abs(s) < 10 ? s.toFixed(1) : Math.round(s).toLocaleString()) + " s";
  return `<td class="num${Math.abs(ms) > 60000 ? " warn" : ""}" title="${esc(ms)} ms">${esc(text)}</td>`;
};

async function fleet() {
  const [r, agents] = await Promise.all([api("/v1/reports/daily"), api("/v1/agents")]);
  const skews = new Map(agents.map((a) => [a.agent_id, a.clock_skew_ms]));
  const silent = new Set(r.silent_warehouses.map((w) => w.warehouse));
  const rows = r.agents.map((a) => `<tr><td>${esc(a.warehouse)}</td><td>${esc(a.agent_id)}</td>
    <td>${state(silent.has(a.warehouse) ? "silent" : "online")}</td><td title="${esc(time(a.last_seen_ms))}">${ago(a.last_seen_ms)}</td>
    ${num(a.last_seq)}${num(a.backlog)}${skew(skews.get(a.agent_id))}</tr>`);
  return `<h1>Fleet</h1>${table("fleet", ["Warehouse", "Agent", "State", "Last batch", "#Last seq", "#Backlog", "#Clock skew"], rows, "No agent has sent anything yet.")}
    <p class="muted">A warehouse is silent after no batch for the configured time. Clock skew is the collector's receive time minus the agent's send time of its last batch (positive: the agent's clock is behind, or the batch was that long in transit).</p>`;
}

async function stock(params) {
  const loc = params.get("location");
  let list = "";
  if (loc) {
    const r = await api(`/v1/stock?location=${enc(loc)}`);
    list = table("stock", ["SKU", "Location", "#On hand", "#Available", "#Reserved"], r.items.map((s) =>
      `<tr><td>${skuLink(s.sku)}</td><td>${esc(s.warehouse)}${s.bin ? "/" + esc(s.bin) : ""}</td>${num(s.on_hand)}${num(s.available)}${num(s.reserved)}</tr>`));
  }
  return `<h1>Stock</h1><form class="filters" id="stock-form"><label>Location<input name="location" value="${esc(loc || "")}" placeholder="ams or ams/A-01"></label><button>Show</button></form>${list}
    <p class="muted">Search a SKU at the top right for its per-warehouse states and history.</p>`;
}

async function sku(name) {
  const [s, ex] = await Promise.all([
    api(`/v1/stock/${enc(name)}`),
    api(`/v1/exceptions?sku=${enc(name)}&limit=20`),
  ]);
  const rows = s.locations.map((l) => {
    const loc = l.warehouse + (l.bin ? "/" + l.bin : "");
    return `<tr><td>${esc(loc)}</td>${num(l.on_hand)}${num(l.available)}${num(l.reserved)}${num(l.damaged)}${num(l.quality_control)}${num(l.in_transit)}${num(l.incoming)}
      <td><a class="history" href="#/history/${enc(name)}/${enc(loc)}">history</a></td></tr>`;
  });
  return `<h1>SKU ${esc(name)}</h1>
    <p>On hand <strong id="sku-on-hand">${esc(s.on_hand)}</strong>, available <strong>${esc(s.total.available)}</strong>.</p>
    ${table("sku-locations", ["Location", "#On hand", "#Available", "#Reserved", "#Damaged", "#QC", "#In transit", "#Incoming", "History"], rows, "No stock recorded for this SKU.")}
    <h2>Exceptions (<a href="#/exceptions?sku=${enc(name)}">all ${esc(ex.total)}</a>)</h2>${exceptionRows(ex.items)}`;
}

async function history(name, loc) {
  const h = await api(`/v1/stock/${enc(name)}/history?location=${enc(loc)}`);
  const rows = h.movements.map((m) => {
    const note = m.drift ? `drift: expected ${m.drift.expected}, counted ${m.drift.counted}` : m.conflict ? `conflict: counted ${m.conflict.counted} (not applied)` : "";
    return `<tr><td>${esc(time(Date.parse(m.occurred_at)))}</td><td>${esc(m.kind)}</td>${num(m.quantity)}<td>${esc(m.source)}</td><td>${esc(m.treatment)}</td>
      ${num(m.after.on_hand)}${num(m.after.available)}<td>${esc(note)}</td><td class="muted">${esc(m.agent_id)} #${esc(m.seq)}</td></tr>`;
  });
  return `<h1>History of ${skuLink(name)} at ${esc(loc)}</h1>
    <p>Now: on hand <strong>${esc(h.current.on_hand)}</strong>, available <strong>${esc(h.current.available)}</strong>.
    ${h.explained ? '<span class="state ok">the movements explain the number</span>' : '<span class="state open">the movements do not explain the number</span>'}</p>
    ${table("history", ["Occurred", "Kind", "#Qty", "Source", "Treatment", "#On hand after", "#Available after", "Note", "Record"], rows, "No movements.")}
    <p><a href="#/exceptions?sku=${enc(name)}">Exceptions of ${esc(name)}</a></p>`;
}

function exceptionRows(items) {
  return table("exceptions", ["Kind", "Status", "SKU", "Where", "Reason", "#Count", "Last seen", ""], items.map((e) =>
    `<tr data-id="${esc(e.id)}"><td>${esc(e.kind)}</td><td>${state(e.status)}</td><td>${skuLink(e.sku)}</td>
     <td>${esc(e.warehouse || e.channel || "—")}</td><td>${esc(e.reason)}</td>${num(e.occurrences)}
     <td title="${esc(time(e.last_seen_ms))}">${ago(e.last_seen_ms)}</td><td><a class="open-exception" href="#/exception/${enc(e.id)}">open</a></td></tr>`), "No exceptions match.");
}

const KINDS = ["", "agent_reject", "collector_reject", "drift", "conflict", "discrepancy", "reversal", "shortfall", "channel_push", "backorder"];
const STATUSES = ["", "open", "retrying", "resolved", "ignored"];

async function exceptions(params) {
  if (!params.has("status")) params.set("status", "open");
  const q = new URLSearchParams([...params].filter(([, v]) => v));
  const r = await api(`/v1/exceptions?${q}&limit=200`);
  const sel = (name, opts) => `<label>${name}<select name="${name}">${opts.map((o) =>
    `<option value="${o}" ${params.get(name) === o ? "selected" : ""}>${o || "any"}</option>`).join("")}</select></label>`;
  return `<h1>Exceptions <span class="muted">(${esc(r.total)})</span></h1>
    <form class="filters" id="exception-filters">${sel("kind", KINDS)}${sel("status", STATUSES)}
      <label>SKU<input name="sku" value="${esc(params.get("sku") || "")}"></label>
      <label>Warehouse<input name="warehouse" value="${esc(params.get("warehouse") || "")}"></label>
      <button>Filter</button></form>${exceptionRows(r.items)}`;
}

async function exception(id) {
  const e = await api(`/v1/exceptions/${enc(id)}`);
  const log = e.log.map((l) => `<tr><td>${esc(time(l.at_ms))}</td><td>${esc(l.action)}</td><td>${esc(l.by)}</td><td>${esc(l.comment || "")}</td></tr>`);
  return `<h1>Exception ${esc(e.kind)} <span id="ex-status">${state(e.status)}</span></h1>
    <dl><dt>Id</dt><dd>${esc(e.id)}</dd><dt>SKU</dt><dd>${skuLink(e.sku)}</dd>
      <dt>Warehouse / channel</dt><dd>${esc(e.warehouse || e.channel || "—")}</dd><dt>Source</dt><dd>${esc(e.source)}</dd>
      <dt>Field</dt><dd>${esc(e.field || "—")}</dd><dt>Reason</dt><dd>${esc(e.reason)}</dd>
      <dt>Seen</dt><dd>${esc(e.occurrences)} time(s), first ${esc(time(e.first_seen_ms))}, last ${esc(time(e.last_seen_ms))}</dd>
      <dt>Retries</dt><dd id="ex-attempts">${esc(e.attempts)}</dd></dl>
    <h2>Act</h2>
    <form class="act" id="act"><label>By<input id="act-by" required value="${esc(localStorage.getItem("stocksync.by") || "")}"></label>
      <label>Comment (why)<input id="act-comment" required></label>
      <span><button type="button" id="retry" data-action="retry" title="Process the refused record again (once the catalog has its SKU)">Retry</button>
      <button type="button" class="primary" id="resolve" data-action="resolve">Resolve</button>
      <button type="button" id="ignore" data-action="ignore">Ignore</button>
      <button type="button" id="reopen" data-action="reopen">Reopen</button></span></form>
    <p id="act-error" class="error"></p>
    <h2>Log</h2>${table("log", ["When", "Action", "By", "Comment"], log)}
    <h2>Record as received</h2><pre>${esc(JSON.stringify(e.record, null, 2))}</pre>`;
}

async function channels() {
  const list = await api("/v1/channels");
  const rows = list.map((c) => {
    const targets = Object.entries(c.targets || {}).map(([t, s]) => `${esc(t)}: ${s.pending} pending${s.last_error ? ", " + esc(s.last_error) : ""}`).join("<br>") || "feed only";
    const frozen = c.state.mode !== "live";
    return `<tr data-channel="${esc(c.name)}"><td>${esc(c.name)}</td><td>${state(c.state.mode)}</td>${num(c.cursor)}${num(c.open_errors)}<td>${targets}</td>
      <td><button type="button" class="mode" data-channel="${esc(c.name)}" data-mode="${frozen ? "live" : "frozen"}">${frozen ? "Unfreeze" : "Freeze"}</button></td></tr>`;
  });
  return `<h1>Channels</h1>${table("channels", ["Channel", "Mode", "#Cursor", "#Open errors", "Targets", ""], rows, "No channels configured.")}`;
}

async function report(params) {
  const date = params.get("date") || "";
  const r = await api(`/v1/reports/daily${date ? "?date=" + enc(date) : ""}`);
  const un = r.exceptions.unresolved.map((u) => `<tr><td><a href="#/exceptions?kind=${enc(u.kind)}">${esc(u.kind)}</a></td>${num(u.count)}${num(u.age.under_1h)}${num(u.age["1h_to_24h"])}${num(u.age["1d_to_7d"])}${num(u.age.over_7d)}</tr>`);
  const opened = Object.entries(r.exceptions.opened_on_date).map(([k, n]) => `<tr><td>${esc(k)}</td>${num(n)}</tr>`);
  const sold = r.sold_out_listed.map((s) => `<tr><td>${skuLink(s.sku)}</td><td>${esc(s.channel)}</td>${num(s.available)}${num(s.published)}</tr>`);
  const silent = r.silent_warehouses.map((w) => `<tr><td>${esc(w.warehouse)}</td><td>${esc(time(w.last_seen_ms))}</td>${num(Math.round(w.silent_secs / 60))}</tr>`);
  const ch = r.channels.filter((c) => c.state !== "ok").map((c) => `<tr><td>${esc(c.channel)}/${esc(c.target)}</td><td>${state(c.state)}</td>${num(c.pending)}<td>${esc(time(c.failing_since_ms))}</td><td>${esc(c.last_error || "")}</td></tr>`);
  const recs = (items) => items.map((e) => `<tr><td>${skuLink(e.sku)}</td><td>${esc(e.warehouse)}</td><td>${esc(e.reason)}</td><td><a href="#/exception/${enc(e.id)}">open</a></td></tr>`);
  return `<h1>Daily report ${esc(r.date)} <span class="muted">(UTC day)</span></h1>
    <form class="filters" id="report-form"><label>Date<input name="date" type="date" value="${esc(date || r.date)}"></label><button>Show</button>
      <button type="button" id="report-csv" data-csv="/v1/reports/daily?format=csv${date ? "&date=" + enc(date) : ""}">CSV</button></form>
    <h2>Sold out but still listed</h2>${table("sold-out-listed", ["SKU", "Channel", "#Available", "#Published"], sold, "None.")}
    <h2>Silent warehouses</h2>${table("silent", ["Warehouse", "Last batch", "#Silent (min)"], silent, "None.")}
    <h2>Unresolved exceptions by age</h2>${table("unresolved", ["Kind", "#Open", "#< 1 h", "#1-24 h", "#1-7 d", "#> 7 d"], un, "None.")}
    <h2>Opened on ${esc(r.date)}</h2>${table("opened", ["Kind", "#Opened"], opened, "None.")}
    <h2>Open drift</h2>${table("open-drift", ["SKU", "Warehouse", "Reason", ""], recs(r.open_drift), "None.")}
    <h2>Open conflicts</h2>${table("open-conflicts", ["SKU", "Warehouse", "Reason", ""], recs(r.open_conflicts), "None.")}
    <h2>Channels not OK</h2>${table("channels-not-ok", ["Target", "State", "#Pending", "Failing since", "Last error"], ch, "All channel targets are up to date.")}`;
}

// ---- chrome ------------------------------------------------------------------------

async function refreshChrome() {
  try {
    const [open, alerts] = await Promise.all([api("/v1/exceptions?status=open&limit=1"), api("/v1/alerts")]);
    $("#open-count").textContent = open.total || "";
    const box = $("#alerts");
    box.hidden = !alerts.firing.length;
    box.innerHTML = alerts.firing.length ? `<strong>Firing alerts</strong><ul>${alerts.firing.map((a) =>
      `<li>${state("firing")} ${esc(a.rule)}: ${esc(a.subject)} since ${esc(time(a.fired_at_ms))}</li>`).join("")}</ul>` : "";
  } catch (e) { /* the page itself shows errors */ }
}

async function route() {
  const [path, query] = (location.hash.slice(1) || "/fleet").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === parts[0] || (parts[0] === "sku" && a.dataset.page === "stock") || (parts[0] === "exception" && a.dataset.page === "exceptions")));
  const page = $("#page");
  page.dataset.ready = "false";
  try {
    const views = {
      fleet: () => fleet(), stock: () => stock(params), sku: () => sku(parts[1]),
      history: () => history(parts[1], parts.slice(2).join("/")), exceptions: () => exceptions(params),
      exception: () => exception(parts[1]), channels: () => channels(), report: () => report(params),
    };
    page.innerHTML = await (views[parts[0]] || views.fleet)();
  } catch (e) {
    page.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
  await refreshChrome();
  page.dataset.ready = "true";
}

function formToHash(form, base) {
  const q = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
  location.hash = `${base}?${q}`;
}

document.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target;
  if (f.id === "token-form") { sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim()); $("#token").value = ""; showToken(); route(); }
  if (f.id === "search") { const s = $("#search-sku").value.trim(); if (s) location.hash = "#/sku/" + enc(s); }
  if (f.id === "exception-filters") formToHash(f, "#/exceptions");
  if (f.id === "stock-form") formToHash(f, "#/stock");
  if (f.id === "report-form") formToHash(f, "#/report");
});

// The CSV is fetched with the token and handed to the browser as a download.
async function downloadCsv(path) {
  const r = await fetch(path, withToken());
  if (!r.ok) throw new Error(r.status + " " + (await r.text()));
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = "stocksync-daily-report.csv";
  a.click();
}

function showToken() {
  $("#token").placeholder = sessionStorage.getItem(TOKEN_KEY) ? "API token (set)" : "API token";
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-action], button.mode, button[data-csv]");
  if (!b) return;
  try {
    if (b.dataset.csv) {
      await downloadCsv(b.dataset.csv);
      return;
    } else if (b.dataset.action) {
      const id = location.hash.split("/")[2];
      const by = $("#act-by").value.trim();
      localStorage.setItem("stocksync.by", by);
      await api(`/v1/exceptions/${id}/${b.dataset.action}`, {method: "POST", headers: {"content-type": "application/json"},
        body: JSON.stringify({by, comment: $("#act-comment").value})});
    } else {
      await api(`/v1/channels/${enc(b.dataset.channel)}/mode`, {method: "PUT", headers: {"content-type": "application/json"},
        body: JSON.stringify({mode: b.dataset.mode, set_by: localStorage.getItem("stocksync.by") || "dashboard", reason: "from the dashboard"})});
    }
    route();
  } catch (e) {
    const out = $("#act-error");
    if (out) out.textContent = e.message; else alert(e.message);
  }
});

$("#tz").textContent = Intl.DateTimeFormat().resolvedOptions().timeZone;
showToken();
window.addEventListener("hashchange", route);
route();
setInterval(refreshChrome, 15000);
