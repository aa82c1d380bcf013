// Demo frontend: calls the function URLs exactly as a deployed frontend would (cross-origin, CORS).
// One file, no build step: copy it (with index.html, style.css and vendor/) into your own frontend.
//   chat    POST /chat (stream: Server-Sent Events read from fetch), GET /chat, GET /chat/models
//   compile POST /compile          usage GET /usage          keys GET/POST /keys, DELETE /keys/<id>
// Libraries (vendor/, see the README): marked (Markdown), DOMPurify (sanitizing), Chart.js (usage chart).
"use strict";

const config = window.DEMO_CONFIG || { functionsUrl: "http://127.0.0.1:8080", demoToken: null };
const api = (path) => `${config.functionsUrl.replace(/\/$/, "")}/${path}`;
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};

const state = {
  auth: "out",              // "out" | "checking" | "in"
  token: null,
  session: sessionStorage.getItem("session"),
  knownSessions: new Set(),
  models: [],
  defaultModel: null,
  stream: null,             // the AbortController of the answer being streamed
  chart: null,
  page: "chat",
};

// -- calling the functions ------------------------------------------------------------------------
// Every failure is {"error": {code, message, request_id, details}} (README, "Errors").
class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || `http_${status}`;
    this.requestId = error?.request_id || null;
  }
}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(api(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { code: "network_error", message: `Could not reach the functions at ${config.functionsUrl}.` });
  }
  return readJson(response);
}

async function readJson(response) {
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const error = new ApiError(response.status, data?.error);
  if (response.status === 401 && state.auth === "in") signOut(error);  // the token expired or was revoked
  throw error;
}

// An error, where it happened: the sentence from the API, then code, status and request id in small print.
function showError(box, error) {
  if (!error) { box.hidden = true; box.replaceChildren(); return; }
  const facts = [error.code, error.status ? `HTTP ${error.status}` : null, error.requestId ? `request ${error.requestId}` : null]
    .filter(Boolean).join(" · ");
  box.replaceChildren(el("span", { className: "error-message", textContent: error.message || String(error) }),
    facts ? el("small", { className: "error-facts", textContent: facts }) : null);
  box.hidden = false;
}

const usd = (value, digits = 6) => `$${Number(value || 0).toFixed(digits)}`;
// Short money for chart labels: two significant digits below $1 ($0.00012), cents above.
function shortUsd(value) {
  const v = Number(value || 0);
  if (v === 0) return "$0";
  if (Math.abs(v) >= 1) return `$${v.toFixed(2)}`;
  const decimals = Math.min(8, Math.max(2, 1 - Math.floor(Math.log10(Math.abs(v)))));
  return `$${v.toFixed(decimals)}`;
}
const int = (value) => Number(value || 0).toLocaleString("en-US");

// -- account: sign in, sign out ---------------------------------------------------------------------
function whoFromToken(token) {
  if (token.startsWith("sk_")) return `API key ${token.slice(0, 11)}…`;
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return claims.email || claims.sub || "unknown user";
  } catch { return "unknown user"; }
}

function setAuth(mode, who) {
  state.auth = mode;
  document.body.dataset.auth = mode;
  $("nav").hidden = mode !== "in";
  $("sign-out").hidden = mode !== "in";
  $("whoami").textContent = mode === "in" ? `Signed in as ${who}` : mode === "checking" ? "Checking the token…" : "Signed out";
  $("token-signin").disabled = $("demo-signin").disabled = mode === "checking";
  if (mode === "in") showPage(state.page);
  else document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== "page-signin"; });
}

// A token counts as signed in only once a function accepted it: a refused token shows the refusal.
async function signIn(token) {
  state.token = token;
  setAuth("checking");
  showError($("signin-error"), null);
  let models;
  try {
    models = await call("GET", "chat/models");
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem("token");
    setAuth("out");
    error.message = `The token was not accepted. ${error.message}`;
    showError($("signin-error"), error);
    return;
  }
  sessionStorage.setItem("token", token);
  $("token").value = "";
  setAuth("in", whoFromToken(token));
  applyModels(models);
  loadSessions().catch((e) => showError($("sessions-error"), e));
}

function signOut(reason) {
  state.stream?.abort();
  state.token = null;
  state.session = null;
  state.knownSessions.clear();
  sessionStorage.removeItem("token");
  sessionStorage.removeItem("session");
  $("messages").replaceChildren();
  $("sessions").replaceChildren();
  $("chat-meta").textContent = "";
  $("keys").tBodies[0].replaceChildren();
  hideNewKey();
  state.chart?.destroy();
  state.chart = null;
  setAuth("out");
  if (reason) {
    reason.message = `You were signed out: ${reason.message}`;
    showError($("signin-error"), reason);
  } else {
    showError($("signin-error"), null);
  }
}

$("signin").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token").value.trim()); });
$("demo-signin").addEventListener("click", () => signIn(config.demoToken));
$("demo-signin").hidden = !config.demoToken;
$("sign-out").addEventListener("click", () => signOut());

// -- screens --------------------------------------------------------------------------------------
function showPage(name) {
  state.page = name;
  document.querySelectorAll("#nav button").forEach((b) => {
    const active = b.dataset.page === name;
    b.classList.toggle("active", active);
    if (active) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  });
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${name}`; });
  if (name === "usage") loadUsage();
  if (name === "keys") loadKeys().catch((e) => showError($("keys-error"), e));
  else hideNewKey();  // the new key is forgotten when the user leaves the screen: it was shown once
}
document.querySelectorAll("#nav button").forEach((b) => b.addEventListener("click", () => showPage(b.dataset.page)));

// -- Markdown, sanitized --------------------------------------------------------------------------
// marked turns the model's Markdown into HTML; raw HTML in the answer is shown as text (escaped), images
// become links (a remote image would load by itself: a way to leak data through its URL), and DOMPurify
// removes anything executable that got through (event handlers, javascript: URLs, scripts).
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    html(token) { return token.block ? `<p>${escapeHtml(token.text)}</p>` : escapeHtml(token.text); },
    image(token) { return `<a href="${escapeHtml(token.href)}">${escapeHtml(token.text || token.href)}</a>`; },
  },
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer nofollow"); }
});

function renderMarkdown(container, text) {
  container.innerHTML = DOMPurify.sanitize(marked.parse(text), {
    USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select"],
  });
  container.querySelectorAll("pre").forEach((pre) => {
    const code = pre.querySelector("code") || pre;
    const language = /language-([\w+#-]+)/.exec(code.className || "")?.[1];
    const block = el("div", { className: "code-block" },
      el("div", { className: "code-head" }, el("span", { className: "code-lang", textContent: language || "code" }),
        copyButton(() => code.textContent)));
    pre.replaceWith(block);
    block.append(pre);
    pre.tabIndex = 0;  // scrollable: reachable by keyboard
  });
}

function copyButton(text) {
  const button = el("button", { type: "button", className: "btn btn-small btn-ghost copy", textContent: "Copy" });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and press Ctrl+C";  // no clipboard permission (plain http on another host)
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
  return button;
}

// -- chat -------------------------------------------------------------------------------------------
function applyModels({ items, default_model: defaultModel }) {
  state.models = items;
  state.defaultModel = defaultModel;
  const chosen = sessionStorage.getItem("model");
  const select = $("model");
  select.replaceChildren(...items.map((m) => el("option", {
    value: m.model, textContent: `${m.model} (${m.provider})${m.model === defaultModel ? " · default" : ""}`,
  })));
  const pick = items.some((m) => m.model === chosen) ? chosen : defaultModel;
  if (pick && items.some((m) => m.model === pick)) select.value = pick;
  showModelPrice();
}

function showModelPrice() {
  const m = state.models.find((x) => x.model === $("model").value);
  $("model-price").textContent = m
    ? `$${m.input_usd_per_mtok} in / $${m.output_usd_per_mtok} out per million tokens`
    : "";
}
$("model").addEventListener("change", () => { sessionStorage.setItem("model", $("model").value); showModelPrice(); });

// One turn: a label (who, which model, partial), the text, and the error of that turn if it failed.
function addTurn(role, content, { model = null, partial = false } = {}) {
  const body = el("div", { className: "turn-body" });
  const li = el("li", { className: `turn ${role}` },
    el("div", { className: "turn-head" },
      el("span", { className: "turn-label", textContent: role === "user" ? "You" : "Assistant" }),
      model ? el("span", { className: "turn-model", textContent: model }) : null,
      el("span", { className: "badge partial-badge", hidden: true })),
    body,
    el("div", { className: "error-box turn-error", hidden: true }));
  li.querySelector(".turn-error").setAttribute("role", "alert");
  setTurnText(li, content);
  if (partial) markPartial(li, "partial");
  $("messages").appendChild(li);
  if (body.scrollHeight > body.clientHeight) body.tabIndex = 0;
  return li;
}

function setTurnText(li, text) {
  const body = li.querySelector(".turn-body");
  if (li.classList.contains("user")) body.textContent = text;  // what the user typed, as typed
  else renderMarkdown(body, text);
  body.hidden = !text;
  if (li.isConnected && body.scrollHeight > body.clientHeight) body.tabIndex = 0;  // a long message scrolls: reachable by keyboard
}

function markPartial(li, label) {
  li.classList.add("partial");
  const badge = li.querySelector(".partial-badge");
  badge.textContent = label;
  badge.hidden = false;
}

function sessionTitle(s) { return s.title || s.name || `Session of ${new Date(s.created_at).toLocaleString()}`; }

async function loadSessions() {
  const { items } = await call("GET", "chat?limit=20");
  showError($("sessions-error"), null);
  state.knownSessions = new Set(items.map((s) => s.id));
  $("sessions").replaceChildren(...items.map((s) => {
    const title = sessionTitle(s);
    const button = el("button", { type: "button", className: "session", title },
      el("span", { className: "session-title", textContent: title }),
      el("span", { className: "session-meta", textContent: `${s.message_count} messages · ${new Date(s.last_message_at).toLocaleDateString()}` }));
    button.addEventListener("click", () => openSession(s.id));
    return el("li", { className: s.id === state.session ? "current" : "" }, button);
  }));
  $("sessions").querySelectorAll("li").forEach((li, i) => { li.dataset.id = items[i].id; });
  markCurrentSession();
  if (state.session && !$("messages").children.length) await openSession(state.session, true);
}

function markCurrentSession() {
  $("sessions").querySelectorAll("li").forEach((li) => {
    const current = li.dataset.id === state.session;
    li.classList.toggle("current", current);
    if (current) li.firstChild.setAttribute("aria-current", "true"); else li.firstChild.removeAttribute("aria-current");
  });
}

async function openSession(id, quiet) {
  if (state.stream) return;  // one answer at a time
  state.session = id;
  sessionStorage.setItem("session", id);
  markCurrentSession();
  $("chat-meta").textContent = "";
  try {
    const { items } = await call("GET", `chat?session_id=${encodeURIComponent(id)}&limit=100`);
    if (state.session !== id) return;  // another session (or a new chat) was opened while this one loaded
    $("messages").replaceChildren();
    for (const m of items.reverse()) {
      addTurn(m.role, m.content, { model: m.role === "assistant" ? m.model : null, partial: m.status === "partial" });
    }
  } catch (e) {
    if (state.session !== id) return;
    if (!quiet) showError($("sessions-error"), e);
    else { state.session = null; sessionStorage.removeItem("session"); }
  }
}

$("new-session").addEventListener("click", () => {
  if (state.stream) return;
  state.session = null;
  sessionStorage.removeItem("session");
  $("messages").replaceChildren();
  $("chat-meta").textContent = "";
  markCurrentSession();
  $("chat-input").focus();
});

// Streams the reply: Server-Sent Events read from fetch's body (EventSource cannot POST or send headers).
// Stop aborts the fetch; the backend then bills the delivered text and keeps it as a partial answer.
async function sendStreaming(message) {
  const model = $("model").value || null;
  addTurn("user", message);
  const reply = addTurn("assistant", "", { model });
  reply.classList.add("streaming");
  reply.setAttribute("aria-busy", "true");
  const controller = new AbortController();
  setStreaming(controller);
  const body = { message, stream: true };
  if (model) body.model = model;
  if (state.session) body.session_id = state.session;
  let text = "";
  let frame = 0;
  const paint = () => { frame = 0; setTurnText(reply, text); scrollToEnd(); };
  try {
    let response;
    try {
      response = await fetch(api("chat"), {
        method: "POST",
        headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, { code: "network_error", message: `Could not reach the functions at ${config.functionsUrl}.` });
    }
    if (!response.ok) await readJson(response);  // throws the API's error
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] || "null");
        if (event === "delta") {
          text += data.text;
          if (!frame) frame = requestAnimationFrame(paint);
        } else if (event === "done") {
          text = data.content;
          setTurnText(reply, text);
          if (data.partial) markPartial(reply, "partial");
          const u = data.usage;
          $("chat-meta").textContent = `${data.model} (${data.provider}) · ${int(u.input_tokens)} tokens in / ` +
            `${int(u.output_tokens)} out · ${usd(u.cost_usd)} · balance ${usd(data.balance_usd)}`;
          if (state.session !== data.session_id) {
            state.session = data.session_id;
            sessionStorage.setItem("session", data.session_id);
          }
          loadSessions().catch((e) => showError($("sessions-error"), e));
        } else if (event === "error") {
          throw new ApiError(0, data);
        }
      }
    }
  } catch (error) {
    if (frame) cancelAnimationFrame(frame);
    setTurnText(reply, text);
    if (error.name === "AbortError") {
      $("chat-meta").textContent = text
        ? "Stopped. The delivered part is kept as a partial answer and billed at about 4 characters a token."
        : "Stopped before any text arrived: nothing is billed.";
      if (text) markPartial(reply, "stopped · partial answer");
      else { reply.classList.add("failed"); showError(reply.querySelector(".turn-error"), { message: "Stopped before any text arrived." }); }
      adoptSessionAfterStop();
    } else {
      if (text) markPartial(reply, "partial");
      else reply.classList.add("failed");
      showError(reply.querySelector(".turn-error"), error);
      if (!text && !$("chat-input").value) $("chat-input").value = message;  // refused: let the user send it again
    }
  } finally {
    reply.classList.remove("streaming");
    reply.removeAttribute("aria-busy");
    setStreaming(null);
  }
}

// A stream stopped before its `done` event does not say which session it started; the backend saves the
// partial turn when it notices the closed connection, so look for the new session for a moment.
async function adoptSessionAfterStop() {
  const known = new Set(state.knownSessions);
  const wasNew = !state.session;
  for (let attempt = 0; attempt < 10 && state.auth === "in"; attempt += 1) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { items } = await call("GET", "chat?limit=20").catch(() => ({ items: [] }));
    const fresh = items.find((s) => !known.has(s.id));
    if (!wasNew || fresh) {
      if (wasNew && !state.stream && !state.session) { state.session = fresh.id; sessionStorage.setItem("session", fresh.id); }
      await loadSessions().catch(() => {});
      return;
    }
  }
}

function setStreaming(controller) {
  state.stream = controller;
  $("send").hidden = !!controller;
  $("stop").hidden = !controller;
  $("chat-input").disabled = !!controller;
  $("new-session").disabled = !!controller;
  if (controller) $("stop").focus(); else $("chat-input").focus();
}

function scrollToEnd() { $("messages").lastElementChild?.scrollIntoView({ block: "end" }); }

$("stop").addEventListener("click", () => state.stream?.abort());
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("chat-input");
  const message = input.value.trim();
  if (!message || state.stream) return;
  input.value = "";
  sendStreaming(message);
});
$("chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
});

// -- compile ------------------------------------------------------------------------------------------
$("compile-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError($("compile-error"), null);
  $("compile").disabled = true;
  try {
    const result = await call("POST", "compile", { task: $("task").value, language: $("language").value });
    $("code").textContent = result.code;
    const block = $("compile-result").querySelector(".code-block");
    block.querySelector(".code-head")?.remove();
    block.prepend(el("div", { className: "code-head" }, el("span", { className: "code-lang", textContent: result.language || $("language").value }),
      copyButton(() => $("code").textContent)));
    $("diagnostics").replaceChildren(...(result.diagnostics.length ? result.diagnostics : [{ message: "Parses: no diagnostics." }])
      .map((d) => el("li", { textContent: d.line ? `Line ${d.line}, column ${d.column}: ${d.message}` : d.message })));
    $("compile-meta").textContent = `${result.valid ? "Valid" : "Invalid"}${result.repaired ? " after one repair" : ""} · ${usd(result.usage.cost_usd)}`;
    $("compile-result").hidden = false;
  } catch (e) {
    showError($("compile-error"), e);
  } finally {
    $("compile").disabled = false;
  }
});

// -- usage -----------------------------------------------------------------------------------------------
// A distinct colour per model (Tableau 10, then hues spaced by the golden angle); the order is the model
// list's, so a model keeps its colour when the range or the grouping changes.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
function colours(names) {
  const order = [...new Set([...state.models.map((m) => m.model).sort(), ...[...names].sort()])];
  const index = (name) => order.indexOf(name);
  return (name) => {
    const i = index(name);
    return i < PALETTE.length ? PALETTE[i] : `hsl(${Math.round((i * 137.508) % 360)} 55% 45%)`;
  };
}

const GROUPS = {
  day_model: { title: "Cost per day and model (USD)", columns: ["Day", "Model"], axis: "Day (UTC)" },
  day: { title: "Cost per day (USD)", columns: ["Day"], axis: "Day (UTC)" },
  model: { title: "Cost per model (USD)", columns: ["Model"], axis: "Model" },
  operation: { title: "Cost per operation (USD)", columns: ["Operation"], axis: "Operation" },
  service: { title: "Cost per service (USD)", columns: ["Service"], axis: "Service" },
};
const isoDay = (d) => d.toISOString().slice(0, 10);
const dayLabel = (iso) => new Date(`${iso}T00:00:00Z`).toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
const modelName = (m) => m || "(no model)";

function setRange(days) {
  const to = new Date();
  $("usage-to").value = isoDay(to);
  $("usage-from").value = isoDay(new Date(to.getTime() - (days - 1) * 86400000));
}
setRange(30);
$("usage-form").addEventListener("change", () => loadUsage());
$("usage-form").addEventListener("submit", (event) => { event.preventDefault(); loadUsage(); });
document.querySelectorAll("#usage-form [data-days]").forEach((b) => b.addEventListener("click", () => {
  setRange(Number(b.dataset.days));
  loadUsage();
}));

let usageRequest = 0;
async function loadUsage() {
  const from = $("usage-from").value, to = $("usage-to").value;
  const group = document.querySelector("#group-by input:checked").value;
  const mine = ++usageRequest;  // a slower earlier answer must not overwrite a later one
  if (!from || !to || from > to) {
    showError($("usage-error"), { message: "Choose a start day on or before the end day." });
    return;
  }
  $("page-usage").setAttribute("aria-busy", "true");
  try {
    const data = await call("GET", `usage?group_by=${group}&from=${from}&to=${to}`);
    if (mine !== usageRequest) return;
    showError($("usage-error"), null);
    renderQuota(data.account);
    renderChart(data);
    renderTable(data);
  } catch (e) {
    if (mine === usageRequest) showError($("usage-error"), e);
  } finally {
    if (mine === usageRequest) $("page-usage").removeAttribute("aria-busy");
  }
}

// The used share stays visible when tiny: the bar has a minimum width and the exact percentage is printed.
function percentText(p) {
  if (p === 0) return "0%";
  if (p < 0.01) return "<0.01%";
  if (p < 10) return `${p.toFixed(2)}%`;
  return `${p.toFixed(1)}%`;
}

function renderQuota(account) {
  if (!account) { $("quota-text").textContent = "No billing account."; return; }
  const used = Number(account.month_spend_usd) + Number(account.held_usd);
  const quota = Number(account.monthly_quota_usd);
  const percent = quota > 0 ? Math.min(100, (100 * used) / quota) : 0;
  const bar = $("quota-used");
  bar.style.width = percent > 0 ? `max(6px, ${percent}%)` : "0";
  bar.dataset.percent = percent.toFixed(6);
  bar.className = percent >= 95 ? "danger" : percent >= 80 ? "warn" : "";
  $("quota-bar").setAttribute("aria-valuenow", percent.toFixed(4));
  $("quota-bar").setAttribute("aria-valuetext", `${percentText(percent)} used`);
  $("quota-percent").textContent = `${percentText(percent)} used`;
  $("quota-text").textContent = `${usd(account.month_spend_usd)} spent and ${usd(account.held_usd)} held of ` +
    `${usd(quota, 2)} this month · ${usd(account.quota_left_usd)} left · balance ${usd(account.balance_usd)} (plan ${account.plan})`;
}

function chartSeries(data) {
  const rows = data.rows;
  const group = data.group_by;
  if (group === "day" || group === "day_model") {
    const days = [];
    for (let d = new Date(`${data.from}T00:00:00Z`); isoDay(d) <= data.to; d.setUTCDate(d.getUTCDate() + 1)) days.push(isoDay(d));
    const index = new Map(days.map((d, i) => [d, i]));
    const series = new Map();
    for (const r of rows) {
      const name = group === "day" ? "Cost" : modelName(r.model);
      const day = group === "day" ? r.key : r.day;
      if (!series.has(name)) series.set(name, new Array(days.length).fill(0));
      if (index.has(day)) series.get(name)[index.get(day)] += Number(r.cost_usd);
    }
    return { keys: days, labels: days.map(dayLabel), series };
  }
  const named = rows.map((r) => (group === "model" ? modelName(r.key) : r.key || "(none)"));
  return { keys: named, labels: named, series: new Map(named.map((n, i) => [n, named.map((_, j) => (i === j ? Number(rows[i].cost_usd) : 0))])) };
}

// Chart.js plugin: the value on top of every bar (the day's total when stacked), so nothing needs a hover.
const barTotals = {
  id: "barTotals",
  afterDatasetsDraw(chart) {
    const { ctx } = chart;
    const metas = chart.data.datasets.map((_, i) => chart.getDatasetMeta(i)).filter((m) => !m.hidden);
    if (!metas.length) return;
    const count = chart.data.labels.length;
    chart.$barTotals = [];  // what was written, for tests and debugging
    ctx.save();
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#1d2433";
    for (let i = 0; i < count; i += 1) {
      const total = chart.data.datasets.reduce((sum, ds, d) => sum + (chart.getDatasetMeta(d).hidden ? 0 : ds.data[i] || 0), 0);
      if (!total) continue;
      const top = Math.min(...metas.map((m) => m.data[i]).filter((bar) => bar && bar.height > 0).map((bar) => bar.y));
      const bar = metas[0].data[i];
      const label = shortUsd(total);
      if (!Number.isFinite(top) || !bar) continue;
      chart.$barTotals[i] = label;
      if (bar.width >= ctx.measureText(label).width + 4) {
        ctx.textAlign = "center";
        ctx.textBaseline = "bottom";
        ctx.fillText(label, bar.x, top - 3);
      } else {  // narrow bars: the label stands upright above the bar
        ctx.save();
        ctx.translate(bar.x, top - 4);
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left";
        ctx.textBaseline = "middle";
        ctx.fillText(label, 0, 0);
        ctx.restore();
      }
    }
    ctx.restore();
  },
};

function renderChart(data) {
  const group = GROUPS[data.group_by] || GROUPS.day;
  const { keys, labels, series } = chartSeries(data);
  // What cost nothing is left out of the chart (and said so below it); the table still lists it.
  const charged = [...series].filter(([, values]) => values.some((v) => v > 0));
  const free = [...series].filter(([, values]) => !values.some((v) => v > 0)).map(([name]) => name);
  const byModel = data.group_by === "model" || data.group_by === "day_model";
  const colourOf = colours(charged.map(([name]) => name));
  const fallback = (i) => PALETTE[i % PALETTE.length];
  let datasets;
  let barLabels = labels;
  if (data.group_by === "day_model" || data.group_by === "day") {
    datasets = charged.map(([name, values], i) => ({
      label: name, data: values, backgroundColor: byModel ? colourOf(name) : fallback(i), stack: "cost",
    }));
  } else {  // one bar per key (model, operation or service), zero-cost keys left out
    const kept = keys.map((k, i) => i).filter((i) => charged.some(([name]) => name === keys[i]));
    barLabels = kept.map((i) => labels[i]);
    datasets = [{
      label: "Cost", data: kept.map((i) => series.get(keys[i])[i]),
      backgroundColor: kept.map((i, j) => (byModel ? colourOf(keys[i]) : fallback(j))),
    }];
  }
  $("chart-title").textContent = `${group.title}, ${dayLabel(data.from)} to ${dayLabel(data.to)}`;
  state.chart?.destroy();
  state.chart = new Chart($("chart"), {
    type: "bar",
    data: { labels: barLabels, datasets },
    plugins: [barTotals],
    options: {
      animation: false,
      maintainAspectRatio: false,
      layout: { padding: { top: 44 } },  // room for the upright value labels above the tallest bar
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${usd(c.raw)}` } } },
      scales: {
        x: { stacked: true, title: { display: true, text: group.axis }, ticks: { autoSkip: true, maxRotation: 90, autoSkipPadding: 4 }, grid: { display: false } },
        y: { stacked: true, beginAtZero: true, grace: "5%", title: { display: true, text: "Cost (USD)" }, ticks: { callback: (v) => shortUsd(v) } },
      },
    },
  });
  const total = Number(data.totals.cost_usd);
  $("chart").setAttribute("aria-label", `${group.title} from ${data.from} to ${data.to}: ${usd(total)} in total; the table below lists every number.`);
  // The legend, in the page (readable, and with each series' total).
  const legendItems = data.group_by === "day_model" || data.group_by === "model"
    ? charged.map(([name, values]) => ({ name, colour: colourOf(name), total: values.reduce((a, b) => a + b, 0) }))
    : data.group_by === "day"
      ? []
      : datasets[0].data.map((v, j) => ({ name: barLabels[j], colour: datasets[0].backgroundColor[j], total: v }));
  $("legend").replaceChildren(...legendItems.map((item) => {
    const li = el("li", {}, el("span", { className: "swatch" }), el("span", { className: "legend-name", textContent: item.name }),
      el("span", { className: "legend-total", textContent: usd(item.total) }));
    li.querySelector(".swatch").style.background = item.colour;
    li.dataset.name = item.name;
    li.dataset.colour = item.colour;
    return li;
  }));
  $("legend").hidden = !legendItems.length;
  const notes = [];
  if (!charged.length) notes.push("No cost in this range.");
  if (free.length && data.group_by !== "day") notes.push(`Not charted, no cost in this range: ${free.join(", ")}.`);
  $("chart-note").textContent = notes.join(" ");
}

function renderTable(data) {
  const group = GROUPS[data.group_by] || GROUPS.day;
  const table = $("usage-table");
  const head = [...group.columns, "Requests", "Failures", "Input tokens", "Cached input", "Output tokens", "Cost (USD)"];
  table.tHead.replaceChildren(el("tr", {}, ...head.map((h, i) => {
    const th = el("th", { scope: "col", textContent: h });
    if (i >= group.columns.length) th.className = "num";
    return th;
  })));
  const keyCells = (r) => {
    if (data.group_by === "day_model") return [r.day, modelName(r.model)];
    if (data.group_by === "model") return [modelName(r.key)];
    return [r.key || "(none)"];
  };
  const numbers = (r) => [int(r.requests), int(r.failures), int(r.input_tokens), int(r.cached_input_tokens), int(r.output_tokens), usd(r.cost_usd)];
  table.tBodies[0].replaceChildren(...data.rows.map((r) => {
    const tr = el("tr", {}, ...keyCells(r).map((text) => el("td", { textContent: text })),
      ...numbers(r).map((text) => el("td", { className: "num", textContent: text })));
    tr.dataset.cost = r.cost_usd;
    if (!Number(r.cost_usd)) tr.classList.add("zero-cost");
    return tr;
  }));
  if (!data.rows.length) {
    table.tBodies[0].replaceChildren(el("tr", {}, el("td", { colSpan: head.length, className: "meta", textContent: "No usage in this range." })));
  }
  const totalRow = el("tr", {}, el("th", { scope: "row", colSpan: group.columns.length, textContent: "Total" }),
    ...numbers(data.totals).map((text) => el("td", { className: "num", textContent: text })));
  table.tFoot.replaceChildren(totalRow);
  $("usage-caption").textContent = `${group.columns.join(" and ")}: usage from ${data.from} to ${data.to} (UTC)`;
  $("usage-total").textContent = `${int(data.totals.requests)} requests · ${usd(data.totals.cost_usd)}`;
}

// -- API keys ------------------------------------------------------------------------------------------
// The key is in the create answer only; it is kept in the page until the user leaves this screen.
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "never");

function hideNewKey() {
  $("new-key").hidden = true;
  $("new-key-value").textContent = "";
  $("copy-status").textContent = "";
}

async function loadKeys() {
  const { items } = await call("GET", "keys");
  $("keys-empty").hidden = items.length > 0;
  $("keys").tBodies[0].replaceChildren(...items.map((k) => {
    const row = el("tr", { className: k.status });
    row.dataset.id = k.id;
    for (const text of [k.name, `sk_${k.prefix}_…`, k.scopes.join(", "), k.status, when(k.expires_at),
                        k.last_used_at ? when(k.last_used_at) : "not yet", when(k.created_at)]) {
      row.appendChild(el("td", { textContent: text }));
    }
    const cell = el("td");
    if (k.status === "active") {
      const revoke = el("button", { type: "button", className: "btn btn-small btn-danger revoke", textContent: "Revoke" });
      revoke.setAttribute("aria-label", `Revoke key ${k.name}`);
      revoke.addEventListener("click", async () => {
        showError($("keys-error"), null);
        revoke.disabled = true;
        try { await call("DELETE", `keys/${encodeURIComponent(k.id)}`); await loadKeys(); } catch (e) { showError($("keys-error"), e); revoke.disabled = false; }
      });
      cell.appendChild(revoke);
    }
    row.appendChild(cell);
    return row;
  }));
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError($("keys-error"), null);
  hideNewKey();
  const scopes = [...document.querySelectorAll("#key-form input[name=scope]:checked")].map((c) => c.value);
  const body = { name: $("key-name").value.trim(), scopes };
  if ($("key-expiry").value) body.expires_in_days = Number($("key-expiry").value);
  $("create-key").disabled = true;
  try {
    const created = await call("POST", "keys", body);
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    $("key-name").value = "";
    await loadKeys();
  } catch (e) {
    showError($("keys-error"), e);
  } finally {
    $("create-key").disabled = false;
  }
});

$("copy-key").addEventListener("click", async () => {
  const key = $("new-key-value").textContent;
  try {
    await navigator.clipboard.writeText(key);
  } catch {
    // No clipboard permission (plain http on another host): select the key so Ctrl+C copies it.
    const range = document.createRange();
    range.selectNodeContents($("new-key-value"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("copy-status").textContent = "Selected: press Ctrl+C to copy.";
    return;
  }
  $("copy-status").textContent = "Copied.";
});

// -- start ------------------------------------------------------------------------------------------------
setAuth("out");
const saved = sessionStorage.getItem("token");
if (saved) signIn(saved);
