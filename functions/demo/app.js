// Demo frontend: calls the function URLs exactly as a deployed frontend would (cross-origin, CORS).
"use strict";

const config = window.DEMO_CONFIG || { functionsUrl: "http://127.0.0.1:8080", demoToken: null };
const api = (path) => `${config.functionsUrl.replace(/\/$/, "")}/${path}`;
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("token"), session: sessionStorage.getItem("session") };
const COLORS = ["#5b7cfa", "#f59f00", "#2f9e44", "#e64980", "#7950f2", "#1098ad"];

function showError(message) { $("error").textContent = message || ""; }

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(api(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(`${response.status} ${data.error.code}: ${data.error.message}`);
  return data;
}

function signIn(token) {
  state.token = token;
  sessionStorage.setItem("token", token);
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    $("whoami").textContent = claims.email || claims.sub;
  } catch { $("whoami").textContent = "signed in"; }
  loadSessions().catch((e) => showError(e.message));
}

// -- pages ---------------------------------------------------------------------------------------
document.querySelectorAll("nav button").forEach((button) => button.addEventListener("click", () => {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b === button));
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${button.dataset.page}`; });
  if (button.dataset.page === "usage") loadUsage().catch((e) => showError(e.message));
  if (button.dataset.page === "keys") loadKeys().catch((e) => showError(e.message));
  else hideNewKey();
}));

// -- chat ----------------------------------------------------------------------------------------
function addMessage(role, content, partial) {
  const li = document.createElement("li");
  li.className = role + (partial ? " partial" : "");
  li.textContent = content;
  $("messages").appendChild(li);
  return li;
}

async function loadSessions() {
  const { items } = await call("GET", "chat?limit=20");
  const list = $("sessions");
  list.replaceChildren();
  for (const s of items) {
    const li = document.createElement("li");
    li.textContent = s.title || s.id;
    li.dataset.id = s.id;
    li.classList.toggle("current", s.id === state.session);
    li.addEventListener("click", () => openSession(s.id));
    list.appendChild(li);
  }
  if (state.session) await openSession(state.session, true);
}

async function openSession(id, quiet) {
  state.session = id;
  sessionStorage.setItem("session", id);
  document.querySelectorAll("#sessions li").forEach((li) => li.classList.toggle("current", li.dataset.id === id));
  try {
    const { items } = await call("GET", `chat?session_id=${encodeURIComponent(id)}&limit=100`);
    $("messages").replaceChildren();
    for (const m of items.reverse()) addMessage(m.role, m.content, m.status === "partial");
  } catch (e) { if (!quiet) showError(e.message); }
}

$("new-session").addEventListener("click", () => {
  state.session = null;
  sessionStorage.removeItem("session");
  $("messages").replaceChildren();
  document.querySelectorAll("#sessions li").forEach((li) => li.classList.remove("current"));
});

// Streams the reply: Server-Sent Events read from fetch's body (EventSource cannot POST or send headers).
async function sendStreaming(message) {
  addMessage("user", message);
  const reply = addMessage("assistant", "");
  const body = { message, stream: true };
  if (state.session) body.session_id = state.session;
  const response = await fetch(api("chat"), {
    method: "POST",
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const data = await response.json();
    reply.remove();
    throw new Error(`${response.status} ${data.error.code}: ${data.error.message}`);
  }
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
      if (event === "delta") reply.textContent += data.text;
      if (event === "done") {
        reply.textContent = data.content;
        reply.classList.toggle("partial", data.partial);
        $("chat-meta").textContent =
          `${data.model} (${data.provider}) · ${data.usage.input_tokens} in / ${data.usage.output_tokens} out · $${data.usage.cost_usd} · balance $${data.balance_usd}`;
        if (state.session !== data.session_id) {
          state.session = data.session_id;
          sessionStorage.setItem("session", data.session_id);
          await loadSessions();
        }
      }
      if (event === "error") { reply.classList.add("partial"); throw new Error(`${data.code}: ${data.message}`); }
    }
  }
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("chat-input");
  const message = input.value.trim();
  if (!message) return;
  input.value = "";
  showError("");
  $("send").disabled = true;
  try { await sendStreaming(message); } catch (e) { showError(e.message); } finally { $("send").disabled = false; }
});

// -- compile -------------------------------------------------------------------------------------
$("compile-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  try {
    const result = await call("POST", "compile", { task: $("task").value, language: $("language").value });
    $("code").textContent = result.code;
    $("diagnostics").replaceChildren(...(result.diagnostics.length ? result.diagnostics : [{ message: "parses: no diagnostics" }])
      .map((d) => Object.assign(document.createElement("li"), {
        textContent: d.line ? `line ${d.line}, column ${d.column}: ${d.message}` : d.message,
      })));
    $("compile-meta").textContent = `${result.valid ? "valid" : "invalid"}${result.repaired ? " after one repair" : ""} · $${result.usage.cost_usd}`;
  } catch (e) { showError(e.message); }
});

// -- usage ---------------------------------------------------------------------------------------
async function loadUsage() {
  const data = await call("GET", "usage?group_by=day_model");
  const account = data.account;
  const used = account.month_spend_usd + account.held_usd;
  const percent = account.monthly_quota_usd > 0 ? Math.min(100, (100 * used) / account.monthly_quota_usd) : 0;
  $("quota-used").style.width = `${percent}%`;
  $("quota-used").dataset.percent = percent.toFixed(4);
  $("quota-text").textContent =
    `$${account.month_spend_usd.toFixed(6)} of $${account.monthly_quota_usd} this month · balance $${account.balance_usd.toFixed(6)}`;
  $("usage-total").textContent = `${data.totals.requests} requests · $${Number(data.totals.cost_usd).toFixed(6)}`;
  drawChart(data.rows, data.from, data.to);
}

function drawChart(rows, from, to) {
  const svg = $("chart");
  const width = +svg.getAttribute("width"), height = +svg.getAttribute("height"), pad = 30;
  const days = [];
  for (let d = new Date(`${from}T00:00:00Z`); d <= new Date(`${to}T00:00:00Z`); d.setUTCDate(d.getUTCDate() + 1)) {
    days.push(d.toISOString().slice(0, 10));
  }
  const models = [...new Set(rows.map((r) => r.model))];
  const perDay = Object.fromEntries(days.map((d) => [d, {}]));
  for (const r of rows) if (perDay[r.day]) perDay[r.day][r.model] = (perDay[r.day][r.model] || 0) + r.cost_usd;
  const max = Math.max(1e-9, ...days.map((d) => Object.values(perDay[d]).reduce((a, b) => a + b, 0)));
  const barWidth = (width - 2 * pad) / days.length;
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  days.forEach((day, i) => {
    let y = height - pad;
    models.forEach((model, m) => {
      const cost = perDay[day][model] || 0;
      if (!cost) return;
      const h = ((height - 2 * pad) * cost) / max;
      const rect = document.createElementNS(ns, "rect");
      Object.entries({ x: pad + i * barWidth + 1, y: y - h, width: Math.max(1, barWidth - 2), height: h,
                       fill: COLORS[m % COLORS.length], "data-day": day, "data-model": model, "data-cost": cost })
        .forEach(([k, v]) => rect.setAttribute(k, v));
      const title = document.createElementNS(ns, "title");
      title.textContent = `${day} ${model}: $${cost.toFixed(6)}`;
      rect.appendChild(title);
      svg.appendChild(rect);
      y -= h;
    });
  });
  const axis = document.createElementNS(ns, "line");
  Object.entries({ x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#889" })
    .forEach(([k, v]) => axis.setAttribute(k, v));
  svg.appendChild(axis);
  $("legend").replaceChildren(...models.map((model, m) => {
    const li = document.createElement("li");
    li.innerHTML = `<span style="background:${COLORS[m % COLORS.length]}"></span>`;
    li.append(model || "(none)");
    return li;
  }));
}

// -- API keys --------------------------------------------------------------------------------------
// The key is in the create answer only; it is kept in the page until the user leaves this screen.
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "never");

function hideNewKey() {
  $("new-key").hidden = true;
  $("new-key-value").textContent = "";
  $("copy-status").textContent = "";
}

async function loadKeys() {
  const { items } = await call("GET", "keys");
  $("keys").tBodies[0].replaceChildren(...items.map((k) => {
    const row = document.createElement("tr");
    row.dataset.id = k.id;
    row.className = k.status;
    for (const text of [k.name, `sk_${k.prefix}_…`, k.scopes.join(", "), k.status, when(k.expires_at),
                        k.last_used_at ? when(k.last_used_at) : "not yet", when(k.created_at)]) {
      row.appendChild(Object.assign(document.createElement("td"), { textContent: text }));
    }
    const cell = document.createElement("td");
    if (k.status === "active") {
      const revoke = Object.assign(document.createElement("button"), { type: "button", textContent: "Revoke" });
      revoke.className = "revoke";
      revoke.addEventListener("click", async () => {
        showError("");
        try { await call("DELETE", `keys/${encodeURIComponent(k.id)}`); await loadKeys(); } catch (e) { showError(e.message); }
      });
      cell.appendChild(revoke);
    }
    row.appendChild(cell);
    return row;
  }));
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  hideNewKey();
  const scopes = [...document.querySelectorAll("#key-form input[name=scope]:checked")].map((c) => c.value);
  const body = { name: $("key-name").value.trim(), scopes };
  if ($("key-expiry").value) body.expires_in_days = Number($("key-expiry").value);
  try {
    const created = await call("POST", "keys", body);
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    $("key-name").value = "";
    await loadKeys();
  } catch (e) { showError(e.message); }
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

// -- sign in -------------------------------------------------------------------------------------
$("signin").addEventListener("submit", (event) => { event.preventDefault(); signIn($("token").value.trim()); });
$("demo-signin").addEventListener("click", () => {
  if (!config.demoToken) { showError("no demo token: start the server with python -m functions.serve"); return; }
  signIn(config.demoToken);
});
$("demo-signin").hidden = !config.demoToken;
if (state.token) signIn(state.token);
