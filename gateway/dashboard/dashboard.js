// Tollgate's dashboard: reads the admin API (the source of truth) and draws it.
// No framework: a few fetches, tables and canvas line charts.
"use strict";

const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("tollgate-admin-token");
if (token) localStorage.setItem("tollgate-admin-token", token);

async function api(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`;
    throw new Error(`${path}: ${message}`);
  }
  return body;
}

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function row(cells, attrs = {}) {
  const tr = el("tr", null, attrs);
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.append(c); else td.textContent = c === undefined || c === null ? "–" : String(c);
    tr.append(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

// Atto-units (1e-18 of the fee token), as decimal strings, to token units.
function units(atto) {
  if (atto === undefined || atto === null) return "–";
  const v = BigInt(atto);
  const whole = v / 10n ** 18n;
  const frac = (v % 10n ** 18n).toString().padStart(18, "0").replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : `${whole}`;
}

const short = (h) => (h && h.length > 18 ? `${h.slice(0, 10)}…${h.slice(-6)}` : h);
const fixed = (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

function placement(n) {
  if (n.chain) {
    const spares = n.chain.spares.reduce((a, s) => a + s.length, 0);
    return `pipeline: ${n.chain.stages.join(" → ")} (${spares} spares)`;
  }
  if (n.kind === "embedded") return `whole model in the gateway (${n.hardware})`;
  return `whole model on the node (${n.hardware})`;
}

function speed(h) {
  if (!h.tokens_per_s) return "not measured";
  return h.ttft_ms ? `${fixed(h.tokens_per_s)} tok/s, ttft ${fixed(h.ttft_ms, 0)} ms` : `${fixed(h.tokens_per_s)} tok/s`;
}

// Drops nulls and empty lists and maps, so a policy reads as it was written.
function pruned(v) {
  if (Array.isArray(v)) return v.map(pruned);
  if (v && typeof v === "object") {
    const out = {};
    for (const [k, x] of Object.entries(v)) {
      const p = pruned(x);
      const empty = p === null || (Array.isArray(p) && p.length === 0) ||
        (typeof p === "object" && p !== null && !Array.isArray(p) && Object.keys(p).length === 0);
      if (!empty) out[k] = p;
    }
    return out;
  }
  return v;
}

function health(n) {
  if (n.quarantined) return "quarantined";
  if (!n.reachable) return "unreachable";
  const h = n.health || {};
  return h.available ? `up (circuit ${h.circuit})` : `down (circuit ${h.circuit})`;
}

async function refreshStatus() {
  const s = await api("/admin/status");
  $("generation").textContent = `generation ${s.generation} · ${s.nodes.length} nodes`;
  fill("nodes", s.nodes.map((n) => row([
    n.id, n.kind, n.region, n.hardware,
    `${n.prices.input_per_1m} / ${n.prices.output_per_1m}`,
    fixed(n.trust, 3), health(n),
    speed(n.health || {}),
    placement(n), (n.models || []).join(", "),
  ], { "data-node": n.id })));
  fill("accounts", s.accounts.map((a) => row([a.id, a.spent, a.budget ?? "none", a.requests_per_min ?? "no limit"], { "data-account": a.id })));
  const errors = (s.reload && s.reload.last_errors) || [];
  $("reload-error").hidden = errors.length === 0;
  $("reload-error").textContent = errors.length ? `last reload refused: ${errors.join("; ")}` : "";
  $("reload-ok").hidden = errors.length !== 0;
}

async function refreshPolicy() {
  const p = await api("/admin/policies");
  $("policy-files").textContent = (p.files || []).map((f) => f.split("/").pop()).join(", ");
  $("policy").textContent = JSON.stringify(pruned({ policies: p.policies, aliases: p.aliases }), null, 2);
}

// A line chart of one series; the canvas carries what it drew, for tests and tooling.
function chart(canvasId, values, color) {
  const c = $(canvasId);
  const g = c.getContext("2d");
  const w = c.width, h = c.height, pad = 24;
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values);
  g.strokeStyle = "#d9dde6";
  g.fillStyle = "#6b7385";
  g.font = "10px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = pad + ((h - 2 * pad) * i) / 4;
    g.beginPath(); g.moveTo(pad, y); g.lineTo(w - 4, y); g.stroke();
    g.fillText(fixed((max * (4 - i)) / 4, max < 10 ? 1 : 0), 2, y + 3);
  }
  g.strokeStyle = color;
  g.lineWidth = 2;
  g.beginPath();
  values.forEach((v, i) => {
    const x = pad + ((w - pad - 4) * i) / Math.max(1, values.length - 1);
    const y = h - pad - ((h - 2 * pad) * v) / max;
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  c.dataset.total = String(values.reduce((a, b) => a + b, 0));
  c.dataset.draws = String(Number(c.dataset.draws) + 1);
}

async function refreshTraffic() {
  const t = await api("/admin/traffic?seconds=120");
  const s = t.seconds;
  chart("chart-requests", s.map((x) => x.requests), "#2f6fe4");
  chart("chart-latency", s.map((x) => x.mean_latency_ms), "#8a4bd6");
  chart("chart-errors", s.map((x) => x.errors), "#c62f2f");
  const last = s.slice(-5);
  $("requests-now").textContent = fixed(last.reduce((a, x) => a + x.requests, 0) / last.length);
  const busy = last.filter((x) => x.requests > 0);
  $("latency-now").textContent = busy.length ? fixed(busy.reduce((a, x) => a + x.mean_latency_ms, 0) / busy.length, 0) : "–";
  $("errors-now").textContent = fixed(last.reduce((a, x) => a + x.errors, 0) / last.length);
}

let invoicesShown = "";

async function refreshInvoices() {
  let inv;
  try {
    inv = await api("/admin/invoices");
  } catch (e) {
    $("invoices-note").textContent = e.message;
    return;
  }
  const state = new Map((inv.ledger || []).map((b) => [b.batch_id, b.state]));
  const key = JSON.stringify(inv.onchain.map((i) => i.batch_id).concat([...state.values()]));
  if (key === invoicesShown) return;
  invoicesShown = key;
  $("invoices-note").textContent = `${inv.onchain.length} invoices on chain`;
  fill("invoices", inv.onchain.map((i) => {
    const tr = row([short(i.batch_id), i.receipt_count, units(i.billed), units(i.paid), i.block, short(i.tx_hash),
      state.get(i.batch_id) || "on chain only"], { class: "clickable", "data-batch": i.batch_id });
    tr.addEventListener("click", () => showInvoice(i.batch_id).catch(report));
    return tr;
  }));
}

async function showInvoice(batch) {
  const r = await api(`/admin/invoices/${batch}/receipts`);
  $("invoice-id").textContent = batch;
  fill("receipts", r.receipts.map((x) => {
    const tr = row([x.request_id, x.account, x.node, x.model, `${x.prompt_tokens} / ${x.completion_tokens}`, units(x.amount)],
      { class: "clickable", "data-request": x.request_id });
    tr.addEventListener("click", () => showProof(x.request_id).catch(report));
    return tr;
  }));
  $("invoice").hidden = false;
}

async function showProof(requestId) {
  const p = await api(`/admin/invoices/proof/${encodeURIComponent(requestId)}`);
  $("proof-request").textContent = p.request_id;
  $("proof-verified").textContent = p.verified_on_chain ? "yes: the Settlement contract accepted this path to the root" : "NO";
  $("proof-verified").className = p.verified_on_chain ? "good" : "bad";
  $("proof-batch").textContent = p.batch_id;
  $("proof-index").textContent = p.index;
  $("proof-leaf").textContent = p.leaf;
  $("proof-root").textContent = p.merkle_root;
  $("proof-amount").textContent = `${units(p.amount)} / ${units(p.amount_from_prices)}`;
  $("proof-path").replaceChildren(...p.proof.map((h) => el("li", h)));
  $("proof").hidden = false;
}

function report(e) {
  $("error").hidden = false;
  $("error").textContent = e.message;
}

async function tick() {
  try {
    await Promise.all([refreshStatus(), refreshTraffic()]);
    $("error").hidden = true;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    report(e);
  }
}

tick();
refreshPolicy().catch(report);
refreshInvoices();
setInterval(tick, 1000);
setInterval(() => refreshPolicy().catch(report), 5000);
setInterval(refreshInvoices, 3000);
