// sealfs console. No value is ever put in a URL, in the initial HTML, or
// kept after it is hidden. Every API request carries the page key (CSRF
// token), which the sign-in redirect put in this URL's fragment and this
// tab keeps in sessionStorage: the cookie alone, which the browser also
// sends to other ports of this host, opens nothing.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = "";
let entries = [];
let sort = { key: "ref", dir: 1 };
let revealed = null; // { ref, value, encoding }
let hideTimer = null;
let countdown = null;
let configPath = null; // the --config file, if any

function show(message, ok) {
  const box = $("message");
  box.textContent = message;
  box.className = ok ? "ok" : "";
  box.hidden = !message;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  opts.headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(path, opts);
  let data = {};
  try { data = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error(data.error || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function currentScope() {
  return $("scope").value;
}

async function loadScopes(select) {
  const { scopes } = await api("GET", "/api/scopes");
  const sel = $("scope");
  const keep = select || sel.value || "global";
  sel.replaceChildren();
  const all = new Set(scopes);
  all.add(keep);
  for (const s of [...all].sort()) {
    const o = document.createElement("option");
    o.value = s;
    o.textContent = s;
    sel.append(o);
  }
  sel.value = keep;
}

async function loadSecrets() {
  const scope = currentScope();
  const data = await api("GET", "/api/secrets?scope=" + encodeURIComponent(scope));
  entries = data.entries;
  render();
  if (!$("store-ref").value || $("store-ref").value.endsWith("/")) {
    $("store-ref").value = scope + "/";
  }
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function button(label, onClick, extra) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  if (extra) b.setAttribute("aria-label", extra);
  return b;
}

function render() {
  const filter = $("filter").value.trim().toLowerCase();
  const rows = entries
    .filter((e) => !filter || e.ref.toLowerCase().includes(filter))
    .sort((a, b) => {
      const x = a[sort.key], y = b[sort.key];
      return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
    });
  const body = $("secrets").querySelector("tbody");
  body.replaceChildren();
  for (const e of rows) {
    const tr = document.createElement("tr");
    tr.dataset.ref = e.ref;
    tr.append(cell(e.ref + (e.once ? " (read-once)" : "")), cell(String(e.length)),
      cell(e.created), cell(e.updated), cell(String(e.version)));
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.append(
      button("Inspect", () => inspect(e.ref), "Inspect " + e.ref),
            button("Reveal", () => reveal(e.ref, e.once), "Reveal " + e.ref),
      button("History", () => showHistory(e.ref), "History of " + e.ref),
      button("Delete", () => confirmDelete(e.ref), "Delete " + e.ref),
    );
    actions.lastChild.className = "danger";
    tr.append(actions);
    body.append(tr);
  }
  $("empty").hidden = rows.length > 0;
  for (const b of document.querySelectorAll("th button[data-sort]")) {
    const th = b.closest("th");
    if (b.dataset.sort === sort.key) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

async function inspect(ref) {
  try {
    const { entry } = await api("GET", "/api/inspect?ref=" + encodeURIComponent(ref));
    $("inspect-ref").textContent = ref;
    const dl = $("inspect-list");
    dl.replaceChildren();
    for (const [k, v] of Object.entries(entry)) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = String(v);
      dl.append(dt, dd);
    }
    $("inspect-panel").hidden = false;
  } catch (err) {
    show(err.message);
  }
}

async function showHistory(ref) {
  try {
    const { versions } = await api("GET", "/api/history?ref=" + encodeURIComponent(ref));
    $("history-ref").textContent = ref;
    const body = $("history").querySelector("tbody");
    body.replaceChildren();
    for (const v of [...versions].reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.version = String(v.version);
      const by = v.source ? [v.source, v.uid !== undefined ? "uid " + v.uid : "", v.exe || ""].filter(Boolean).join(", ") : "unknown";
      const notes = [];
      if (v.current) notes.push("current");
      if (v.restored_from !== undefined) notes.push("rollback to " + v.restored_from);
      tr.append(cell(String(v.version)), cell(String(v.length)), cell(v.written), cell(by), cell(notes.join(", ")));
      const actions = document.createElement("td");
      actions.className = "actions";
      if (!v.current) {
        actions.append(button("Roll back", () => confirmRollback(ref, v.version), `Roll back ${ref} to version ${v.version}`));
      }
      tr.append(actions);
      body.append(tr);
    }
    $("history-panel").hidden = false;
  } catch (err) {
    show(err.message);
  }
}

function confirmRollback(ref, version) {
  const dialog = $("confirm-rollback");
  $("rollback-ref").textContent = ref;
  $("rollback-version").textContent = String(version);
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "rollback") return;
    try {
      const data = await api("POST", "/api/rollback", { ref, to: version });
      if (revealed && revealed.ref === ref) hideValue();
      show(`Rolled ${ref} back: version ${data.entry.version} holds the value of version ${data.restored_from}.`, true);
      await refresh();
      await showHistory(ref);
    } catch (err) {
      show(err.message);
    }
  };
  dialog.showModal();
}

function hideValue() {
  revealed = null;
  clearTimeout(hideTimer);
  clearInterval(countdown);
  $("reveal-value").textContent = "";
  $("reveal-timer").textContent = "";
  $("reveal-panel").hidden = true;
}

async function reveal(ref, once) {
  if (once && !window.confirm(`${ref} is read-once: revealing it consumes it. Reveal?`)) return;
  try {
    const data = await api("POST", "/api/reveal", { ref });
    hideValue();
    revealed = { ref, value: data.value, encoding: data.encoding };
    $("reveal-ref").textContent = ref + (data.encoding === "base64" ? " (base64)" : "");
    $("reveal-value").textContent = "•".repeat(Math.min(data.value.length, 24));
    $("reveal-value").dataset.masked = "true";
    $("reveal-show").textContent = "Show";
    $("reveal-panel").hidden = false;
    let left = 30;
    $("reveal-timer").textContent = `hides in ${left} s`;
    countdown = setInterval(() => {
      left -= 1;
      $("reveal-timer").textContent = `hides in ${left} s`;
    }, 1000);
    hideTimer = setTimeout(hideValue, 30000);
    if (data.consumed) await refresh();
    else await loadAudit();
  } catch (err) {
    show(err.message);
    await loadAudit();
  }
}

function toggleShow() {
  if (!revealed) return;
  const out = $("reveal-value");
  if (out.dataset.masked === "true") {
    out.textContent = revealed.value;
    out.dataset.masked = "false";
    $("reveal-show").textContent = "Mask";
  } else {
    out.textContent = "•".repeat(Math.min(revealed.value.length, 24));
    out.dataset.masked = "true";
    $("reveal-show").textContent = "Show";
  }
}

async function copyValue() {
  if (!revealed) return;
  try {
    await navigator.clipboard.writeText(revealed.value);
    show(`Copied the value of ${revealed.ref}.`, true);
  } catch (_) {
    show("The browser did not allow copying; use Show and copy by hand.");
  }
}

function confirmDelete(ref) {
  const dialog = $("confirm-delete");
  $("confirm-ref").textContent = ref;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      await api("POST", "/api/delete", { ref });
      if (revealed && revealed.ref === ref) hideValue();
      show(`Deleted ${ref}.`, true);
      await refresh();
    } catch (err) {
      show(err.message);
    }
  };
  dialog.showModal();
}

async function store(ev) {
  ev.preventDefault();
  const ref = $("store-ref").value.trim();
  const valueField = $("store-value");
  const value = valueField.value;
  try {
    try {
      await api("POST", "/api/secrets", { ref, value });
    } catch (err) {
      // A session another uid created through the mount: that uid can
      // read what is stored there, so the operator confirms first.
      if (err.status !== 409 || !window.confirm(`${err.message}\n\nStore it anyway?`)) throw err;
      await api("POST", "/api/secrets", { ref, value, into_others_session: true });
    }
    valueField.value = "";
    show(`Stored ${ref}.`, true);
    const scope = ref.split("/")[0];
    await loadScopes(scope);
    await refresh();
  } catch (err) {
    valueField.value = "";
    show(err.message);
  }
}

async function loadConfig() {
  const path = configPath;
  if (!path) return;
  $("config-section").hidden = false;
  $("config-path").textContent = path;
  try {
    const { fields } = await api("GET", "/api/config");
    const body = $("config").querySelector("tbody");
    body.replaceChildren();
    for (const f of fields) {
      const tr = document.createElement("tr");
      const status = cell(f.status);
      status.className = "status-" + f.status;
      tr.append(cell(f.field), cell(f.ref || ""), status, cell(f.detail || ""));
      body.append(tr);
    }
  } catch (err) {
    show(err.message);
  }
}

async function loadAudit() {
  try {
    const { events, path } = await api("GET", "/api/audit?limit=50");
    $("audit-path").textContent = path;
    const body = $("audit").querySelector("tbody");
    body.replaceChildren();
    for (const e of events.reverse()) {
      const tr = document.createElement("tr");
      tr.append(cell(e.time), cell(e.source), cell(e.op), cell(e.ref), cell(String(e.uid)),
        cell(e.outcome + (e.detail ? ` (${e.detail})` : "")));
      body.append(tr);
    }
  } catch (err) {
    show(err.message);
  }
}

async function refresh() {
  try {
    await loadSecrets();
  } catch (err) {
    show(err.message);
  }
  await loadAudit();
  await loadConfig();
}

// The page key: from the sign-in redirect's fragment (then kept in this
// tab and removed from the address bar), or kept from before a reload.
function takeKey() {
  const m = /^#csrf=([0-9a-f]+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("sealfs-csrf", m[1]);
    history.replaceState(null, "", "/");
  }
  return sessionStorage.getItem("sealfs-csrf") || "";
}

async function useScope() {
  const s = $("new-scope").value.trim();
  if (!s) return;
  try {
    // The server checks the name before the picker offers it.
    await api("GET", "/api/secrets?scope=" + encodeURIComponent(s));
    await loadScopes(s);
    $("store-ref").value = s + "/";
    $("new-scope").value = "";
    await refresh();
  } catch (err) {
    show(err.message);
  }
}

async function start() {
  // Listeners first, so nothing done before the data arrives falls
  // through to the browser's defaults.
  $("scope").addEventListener("change", () => { hideValue(); refresh(); });
  $("filter").addEventListener("input", render);
  $("use-scope").addEventListener("click", useScope);
  $("store-form").addEventListener("submit", store);
  $("store-fields").disabled = false;
  $("reveal-show").addEventListener("click", toggleShow);
  $("reveal-copy").addEventListener("click", copyValue);
  $("reveal-hide").addEventListener("click", hideValue);
  $("audit-refresh").addEventListener("click", loadAudit);
  for (const b of document.querySelectorAll("th button[data-sort]")) {
    b.addEventListener("click", () => {
      sort = { key: b.dataset.sort, dir: sort.key === b.dataset.sort ? -sort.dir : 1 };
      render();
    });
  }
  csrf = takeKey();
  if (!csrf) {
    show("This tab has no console key: open the URL `sealfs console` printed (start it again for a new one).");
    return;
  }
  try {
    const s = await api("GET", "/api/session");
    $("vault-dir").textContent = "Vault: " + s.vault_dir;
    configPath = s.config;
    await loadScopes("global");
    await refresh();
  } catch (err) {
    show(err.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
