// The Sigil dashboard: a client of the admin API (/v1/openapi.json), with no build step
// and no dependencies. Views are chosen by the URL's hash; live changes arrive as
// server-sent events (/v1/events, /v1/runs/{id}/events). Every piece of text from the API
// is set as text, never as HTML.

const TOKEN_KEY = "sigil.admin-token";
const main = document.getElementById("main");
const state = { token: sessionStorage.getItem(TOKEN_KEY), view: null, cleanup: [] };

// ---------- small helpers ----------

/** An element: `h("a", {href: "#"}, "text", child)`. */
function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "text", "path", "title", "defs", "marker"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces `el`'s children (arrays flattened, absent ones skipped). */
function put(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function toast(message) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (state.token && (options.method || "GET") !== "GET") headers.authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const text = await response.text();
  if (!response.ok) {
    const error = new Error(text.trim() || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return text ? JSON.parse(text) : null;
}

function ago(ms) {
  if (!ms) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

function duration(ms) {
  if (ms === undefined || ms === null) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function short(key) {
  return key && key.length > 16 ? `${key.slice(0, 8)}…${key.slice(-6)}` : key || "";
}

function status(s) {
  return h("span", { class: `status ${s}` }, s);
}

function pretty(value) {
  return h("pre", {}, JSON.stringify(value, null, 2));
}

function signedIn() {
  return Boolean(state.token);
}

/** A button for a change: disabled, with a hint, until the token is given. */
function changeButton(label, onclick, cls = "") {
  return h("button", {
    type: "button",
    class: cls,
    disabled: !signedIn(),
    title: signedIn() ? undefined : "Sign in with the admin token to do this",
    onclick,
  }, label);
}

// ---------- session ----------

function showSession() {
  document.getElementById("sign-in").hidden = signedIn();
  document.getElementById("sign-out").hidden = !signedIn();
}

document.getElementById("sign-in").addEventListener("click", () => {
  document.getElementById("token-error").hidden = true;
  document.getElementById("token-dialog").showModal();
});
document.getElementById("token-cancel").addEventListener("click", () => document.getElementById("token-dialog").close());
document.getElementById("sign-out").addEventListener("click", () => {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showSession();
  route();
});
document.getElementById("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token-input").value.trim();
  const response = await fetch("/v1/auth", { headers: { authorization: `Bearer ${token}` } });
  if (response.status !== 204) {
    const error = document.getElementById("token-error");
    error.textContent = "That is not this host's admin token.";
    error.hidden = false;
    return;
  }
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("token-input").value = "";
  document.getElementById("token-dialog").close();
  showSession();
  route();
});

// ---------- live events ----------

const listeners = new Set();
function connectEvents() {
  const live = document.getElementById("live");
  const source = new EventSource("/v1/events");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  for (const name of ["step", "run", "lattice", "denial", "host"]) {
    source.addEventListener(name, (e) => {
      let data = null;
      try { data = JSON.parse(e.data); } catch { return; }
      for (const l of listeners) l(name, data);
    });
  }
}

/** Calls `fn` on each event while the current view lasts. */
function onEvent(fn) {
  listeners.add(fn);
  state.cleanup.push(() => listeners.delete(fn));
}

/** Runs `fn` at most once per `ms`, however often it is asked. */
function throttled(fn, ms = 500) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}

// ---------- views ----------

async function overview() {
  const [hosts, denials] = await Promise.all([api("/v1/hosts"), api("/v1/denials")]);
  const rates = h("div", { class: "stats" });
  const hostsGrid = h("div", { class: "grid" },
    hosts.map((host) => h("article", { class: "card", "aria-label": `host ${host.name}` },
      h("h3", {}, host.name, host.draining ? h("span", { class: "badge warn" }, "draining") : null),
      h("dl", {},
        h("dt", {}, "ID"), h("dd", { class: "mono", title: host.id }, short(host.id)),
        h("dt", {}, "Labels"), h("dd", {}, Object.keys(host.labels).length
          ? h("span", { class: "chips" }, Object.entries(host.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)))
          : "none"),
        h("dt", {}, "Up for"), h("dd", {}, duration(host.uptime_ms)),
        h("dt", {}, "In flight"), h("dd", {}, host.in_flight),
        h("dt", {}, "Actors"), h("dd", {}, host.actors.length),
        h("dt", {}, "Providers"), h("dd", {}, host.providers.map((p) =>
          h("span", { class: "chip", title: p.contract }, `${p.name} ${p.healthy ? "✓" : "✗ unhealthy"}`))),
        h("dt", {}, "Links"), h("dd", {}, host.links.length),
        h("dt", {}, "Version"), h("dd", {}, host.version)))));
  put(main, 
    h("h1", {}, "Overview"),
    rates,
    h("h2", {}, `Hosts (${hosts.length})`),
    hostsGrid,
    h("h2", {}, "Recent policy denials"),
    denials.length
      ? h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Point"), h("th", {}, "What"), h("th", {}, "Why"))),
          h("tbody", {}, denials.slice().reverse().map((d) => h("tr", {},
            h("td", {}, ago(d.at_ms)), h("td", {}, d.point), h("td", {}, d.what), h("td", {}, d.reason))))))
      : h("p", { class: "empty" }, "No denials."));
  // Invocations per second and error rate, from the Prometheus counters sampled here.
  let previous = null;
  const sample = async () => {
    const text = await (await fetch("/metrics")).text();
    let total = 0, errors = 0;
    for (const line of text.split("\n")) {
      const m = line.match(/^sigil_invocations_total\{([^}]*)\}\s+([0-9.e+]+)/);
      if (!m) continue;
      const n = Number(m[2]);
      total += n;
      if (!/outcome="Ok"/.test(m[1])) errors += n;
    }
    const now = Date.now();
    let rate = "—", errorRate = total > 0 ? `${((100 * errors) / total).toFixed(1)} %` : "0 %";
    if (previous) {
      const dt = (now - previous.at) / 1000;
      const dn = total - previous.total, de = errors - previous.errors;
      rate = (dn / dt).toFixed(1);
      errorRate = dn > 0 ? `${((100 * de) / dn).toFixed(1)} %` : "0 %";
    }
    previous = { at: now, total, errors };
    put(rates, 
      h("div", { class: "stat" }, h("div", { class: "value" }, rate), h("div", { class: "label" }, "invocations / s (last 5 s)")),
      h("div", { class: "stat" }, h("div", { class: "value" }, errorRate), h("div", { class: "label" }, "error rate")),
      h("div", { class: "stat" }, h("div", { class: "value" }, total), h("div", { class: "label" }, "invocations since start")));
  };
  await sample();
  const timer = setInterval(() => sample().catch(() => {}), 5000);
  state.cleanup.push(() => clearInterval(timer));
  const refresh = throttled(() => { if (state.view === "overview") route(); }, 3000);
  onEvent((name) => { if (name === "lattice" || name === "host" || name === "denial") refresh(); });
}

const SOON = 7 * 24 * 3600;

function identityCard(host, actor) {
  const now = Date.now() / 1000;
  let expiry = h("span", {}, "never");
  let badge = h("span", { class: "badge ok" }, "valid");
  if (actor.expires) {
    const left = actor.expires - now;
    expiry = h("span", {}, new Date(actor.expires * 1000).toLocaleString());
    if (left <= 0) badge = h("span", { class: "badge bad" }, "expired");
    else if (left < SOON) badge = h("span", { class: "badge warn" }, `expires in ${duration(left * 1000)}`);
  }
  const scale = h("input", { type: "number", min: 1, value: actor.max_concurrent || 1, "aria-label": `most invocations of ${actor.name} at once` });
  const local = host.local;
  return h("article", { class: "card identity", "aria-label": `actor ${actor.name}` },
    h("h3", {}, actor.name, badge, actor.kind === "wasi" ? h("span", { class: "chip" }, "WASI") : null),
    h("div", { class: "signed" }, "signed by ", h("span", { class: "mono", title: actor.issuer }, short(actor.issuer))),
    h("dl", {},
      h("dt", {}, "Module key"), h("dd", { class: "mono", title: actor.subject }, short(actor.subject)),
      h("dt", {}, "May use"), h("dd", {}, actor.caps.length
        ? h("span", { class: "chips" }, actor.caps.map((c) => h("span", { class: "chip" }, c)))
        : "no capabilities"),
      actor.tags.length ? [h("dt", {}, "Tags"), h("dd", {}, actor.tags.join(", "))] : null,
      h("dt", {}, "Revision"), h("dd", {}, `${actor.rev ?? "—"}${actor.ver ? ` (${actor.ver})` : ""}`),
      actor.call_alias ? [h("dt", {}, "Alias"), h("dd", {}, actor.call_alias)] : null,
      h("dt", {}, "Issued"), h("dd", {}, actor.issued_at ? new Date(actor.issued_at * 1000).toLocaleString() : "—"),
      h("dt", {}, "Expires"), h("dd", {}, expiry),
      h("dt", {}, "Module"), h("dd", { class: "mono" }, actor.module || "sent over the control interface"),
      h("dt", {}, "Hash"), h("dd", { class: "mono", title: actor.module_hash }, short(actor.module_hash)),
      h("dt", {}, "Host"), h("dd", {}, host.name),
      h("dt", {}, "At once"), h("dd", {}, actor.max_concurrent ?? "host limit")),
    local ? h("div", { class: "actions" },
      scale,
      changeButton("Scale", async () => {
        try {
          await api(`/v1/actors/${encodeURIComponent(actor.subject)}/scale`, { method: "POST", body: { max_concurrent: Number(scale.value) } });
          toast(`${actor.name}: at most ${scale.value} at once`);
          route();
        } catch (e) { toast(e.message); }
      }, "secondary"),
      changeButton("Stop", async () => {
        if (!confirm(`Stop actor ${actor.name}? Its links are removed.`)) return;
        try {
          await api(`/v1/actors/${encodeURIComponent(actor.subject)}`, { method: "DELETE" });
          toast(`${actor.name} stopped`);
          route();
        } catch (e) { toast(e.message); }
      }, "danger")) : null);
}

async function actors() {
  const hosts = await api("/v1/hosts");
  hosts.forEach((host, i) => (host.local = i === 0));
  const cards = hosts.flatMap((host) => host.actors.map((a) => identityCard(host, a)));
  put(main, 
    h("h1", {}, "Actors"),
    h("p", { class: "hint" }, "Each card is an actor's verified, signed claims: who signed it, what it may do, and until when."),
    cards.length ? h("div", { class: "grid" }, cards) : h("p", { class: "empty" }, "No actors."));
  onEvent(throttled(() => { if (state.view === "actors") route(); }, 2000));
}

async function links() {
  const hosts = await api("/v1/hosts");
  const names = new Map();
  for (const host of hosts) for (const a of host.actors) names.set(a.subject, a.name);
  const rows = hosts.flatMap((host) => host.links.map((l) => h("tr", {},
    h("td", {}, names.get(l.actor) || short(l.actor)),
    h("td", {}, l.contract),
    h("td", {}, l.name),
    h("td", {}, l.provider),
    h("td", {}, host.name))));
  put(main, 
    h("h1", {}, "Links"),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, ["Actor", "Contract", "Link name", "Provider", "Host"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows)))
      : h("p", { class: "empty" }, "No links."));
  onEvent(throttled(() => { if (state.view === "links") route(); }, 2000));
}

async function runs(params) {
  const filter = params.get("status") || "";
  const query = new URLSearchParams({ limit: "100" });
  if (filter) query.set("status", filter);
  const [list, workflows] = await Promise.all([api(`/v1/runs?${query}`), api("/v1/workflows")]);
  const select = h("select", { "aria-label": "Show runs in status", onchange: () => { location.hash = select.value ? `#/runs?status=${select.value}` : "#/runs"; } },
    ["", "running", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s, selected: s === filter }, s || "all statuses")));
  const starters = workflows.map((w) => changeButton(`Start ${w.name}…`, () => startDialog(w)));
  const body = h("tbody", {}, list.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, short(r.id))),
    h("td", {}, r.workflow),
    h("td", {}, status(r.status)),
    h("td", {}, `${r.steps_done}/${r.steps}`),
    h("td", {}, ago(r.created_ms)),
    h("td", {}, r.finished_ms ? duration(r.finished_ms - r.created_ms) : "—"),
    h("td", {}, r.error || ""))));
  put(main, 
    h("h1", {}, "Workflow runs"),
    h("div", { class: "toolbar" }, select, starters,
      workflows.length ? null : h("span", { class: "hint" }, "List spec files in [workflows] specs to start runs here.")),
    list.length
      ? h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Steps", "Started", "Took", "Error"].map((t) => h("th", { scope: "col" }, t)))),
          body))
      : h("p", { class: "empty" }, "No runs yet."));
  onEvent(throttled(() => { if (state.view === "runs") route(); }, 700));
}

function startDialog(workflow) {
  const dialog = document.getElementById("start-dialog");
  const fields = document.getElementById("start-fields");
  const error = document.getElementById("start-error");
  error.hidden = true;
  document.getElementById("start-title").textContent = `Start ${workflow.name}`;
  const inputs = Object.entries(workflow.inputs);
  put(fields, 
    workflow.description ? h("p", {}, workflow.description) : null,
    inputs.length ? null : h("p", { class: "hint" }, "This workflow takes no inputs."),
    inputs.map(([name, input]) => [
      h("label", { for: `input-${name}` }, name, input.required ? " (required)" : ""),
      h("textarea", { id: `input-${name}`, name, required: input.required, placeholder: input.default !== undefined ? `default: ${JSON.stringify(input.default)}` : "" }),
      input.description ? h("div", { class: "hint" }, input.description) : null,
    ]));
  const form = document.getElementById("start-form");
  form.onsubmit = async (event) => {
    event.preventDefault();
    const values = {};
    for (const [name] of inputs) {
      const v = form.elements[name].value;
      if (v !== "") values[name] = v;
    }
    try {
      const started = await api(`/v1/workflows/${encodeURIComponent(workflow.name)}/runs`, { method: "POST", body: { inputs: values } });
      dialog.close();
      location.hash = `#/runs/${encodeURIComponent(started.run)}`;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  };
  document.getElementById("start-cancel").onclick = () => dialog.close();
  dialog.showModal();
}

/** The SVG of a run's graph; nodes are focusable buttons that open the step. */
function drawGraph(graph, runId) {
  const svg = h("svg", { class: "graph", width: graph.width, height: graph.height, viewBox: `0 0 ${graph.width} ${graph.height}`, role: "group", "aria-label": "the run's steps and what each waits for" });
  const at = new Map(graph.nodes.map((n) => [n.step, n]));
  svg.append(h("defs", {}, h("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    h("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8b93a1" }))));
  for (const e of graph.edges) {
    const a = at.get(e.from), b = at.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + a.width / 2, y1 = a.y + a.height, x2 = b.x + b.width / 2, y2 = b.y;
    const my = (y1 + y2) / 2;
    svg.append(h("path", { class: "edge", d: `M ${x1} ${y1} C ${x1} ${my}, ${x2} ${my}, ${x2} ${y2}`, "marker-end": "url(#arrow)" }));
  }
  for (const n of graph.nodes) {
    const open = () => stepDialog(runId, n.step);
    const g = h("g", {
      class: `node ${n.status}`, tabindex: 0, role: "button", "data-step": n.step,
      "aria-label": `step ${n.step}: ${n.status}`,
      onclick: open,
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } },
    },
    h("title", {}, `${n.step} (${n.status})`),
    h("rect", { x: n.x, y: n.y, width: n.width, height: n.height }),
    h("text", { x: n.x + 12, y: n.y + 21 }, n.step.length > 20 ? `${n.step.slice(0, 19)}…` : n.step),
    h("text", { class: "sub", x: n.x + 12, y: n.y + 39 }, subline(n.status, n.actor)));
    svg.append(g);
  }
  return svg;
}

/** The second line of a step's box: its status and actor, cut to fit. */
function subline(status, actor) {
  const text = `${status} · ${actor}`;
  return text.length > 26 ? `${text.slice(0, 25)}…` : text;
}

function paint(svg, run, actors) {
  for (const [name, s] of Object.entries(run.steps)) {
    const g = svg.querySelector(`g[data-step="${CSS.escape(name)}"]`);
    if (!g) continue;
    g.setAttribute("class", `node ${s.status}`);
    g.setAttribute("aria-label", `step ${name}: ${s.status}`);
    const sub = g.querySelector("text.sub");
    if (sub) sub.textContent = subline(s.status, actors.get(name) || "");
    const title = g.querySelector("title");
    if (title) title.textContent = `${name} (${s.status})`;
  }
}

async function runView(id) {
  const [run, graph] = await Promise.all([api(`/v1/runs/${encodeURIComponent(id)}`), api(`/v1/runs/${encodeURIComponent(id)}/graph`)]);
  const svg = drawGraph(graph, id);
  const actors = new Map(graph.nodes.map((n) => [n.step, n.actor]));
  const summary = h("dl", {});
  const head = h("h1", {}, "Run ", h("span", { class: "mono" }, id));
  const statusLine = h("p", { id: "run-status" });
  const cancel = changeButton("Cancel run", async () => {
    try {
      await api(`/v1/runs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      toast("run cancelled");
    } catch (e) { toast(e.message); }
  }, "danger");
  const show = (r) => {
    put(statusLine, "Status: ", status(r.status), r.error ? h("span", { class: "error" }, ` — ${r.error}`) : null);
    put(summary, 
      h("dt", {}, "Workflow"), h("dd", {}, r.workflow),
      h("dt", {}, "Started"), h("dd", {}, new Date(r.created_ms).toLocaleString()),
      h("dt", {}, "Took"), h("dd", {}, r.finished_ms ? duration(r.finished_ms - r.created_ms) : "running"),
      h("dt", {}, "Inputs"), h("dd", {}, pretty(r.inputs)),
      r.outputs !== undefined && r.outputs !== null ? [h("dt", {}, "Outputs"), h("dd", {}, pretty(r.outputs))] : null);
    cancel.hidden = r.status !== "running";
    paint(svg, r, actors);
  };
  put(main, 
    h("p", {}, h("a", { href: "#/runs" }, "← All runs")),
    head, statusLine,
    h("div", { class: "toolbar" }, cancel, h("span", { class: "hint" }, "Select a step to see its input, output, error and attempts.")),
    h("div", { class: "graph-wrap" }, svg),
    h("section", { class: "card", "aria-label": "run details" }, summary));
  show(run);
  if (run.status === "running" || Object.values(run.steps).some((s) => s.status === "running")) {
    const source = new EventSource(`/v1/runs/${encodeURIComponent(id)}/events`);
    const update = (e) => { try { show(JSON.parse(e.data)); } catch { /* ignore */ } };
    source.addEventListener("run", update);
    source.addEventListener("end", (e) => { update(e); source.close(); });
    state.cleanup.push(() => source.close());
  }
}

async function stepDialog(runId, step) {
  const dialog = document.getElementById("step-dialog");
  const body = document.getElementById("step-body");
  document.getElementById("step-title").textContent = `Step ${step}`;
  put(body, h("p", {}, "Loading…"));
  if (!dialog.open) dialog.showModal();
  try {
    const d = await api(`/v1/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(step)}`);
    const s = d.state;
    put(body, 
      h("p", {}, "Status: ", status(s.status)),
      h("dl", {},
        h("dt", {}, "Actor"), h("dd", {}, `${d.actor} · ${d.operation}`),
        h("dt", {}, "Attempts"), h("dd", { "data-field": "attempts" }, `${s.attempts} of ${s.max_attempts} (${s.failures} failed)`),
        h("dt", {}, "Host"), h("dd", {}, s.host || "—"),
        h("dt", {}, "Took"), h("dd", {}, s.started_ms && s.finished_ms ? duration(s.finished_ms - s.started_ms) : "—")),
      s.error ? [h("h3", {}, "Error"), h("pre", { class: "step-error" }, s.error)] : null,
      h("h3", {}, "Input"), d.input !== undefined ? pretty(d.input) : h("p", { class: "hint" }, d.input_note || "not built yet"),
      h("h3", {}, "Output"), s.output !== undefined && s.output !== null ? pretty(s.output) : h("p", { class: "hint" }, "none yet"));
  } catch (e) {
    put(body, h("p", { class: "error" }, e.message));
  }
}
document.getElementById("step-close").addEventListener("click", () => document.getElementById("step-dialog").close());

// ---------- routing ----------

async function route() {
  for (const c of state.cleanup.splice(0)) c();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] === "runs" && parts[1] ? "run" : parts[0] || "overview";
  state.view = view;
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.dataset.view === view || (view === "run" && a.dataset.view === "runs");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    if (view === "overview") await overview();
    else if (view === "actors") await actors();
    else if (view === "links") await links();
    else if (view === "runs") await runs(params);
    else if (view === "run") await runView(decodeURIComponent(parts[1]));
    else put(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Overview")));
  } catch (e) {
    put(main, h("h1", {}, "Cannot show this"), h("p", { class: "error" }, e.message));
  }
}

async function start() {
  showSession();
  try {
    const status = await api("/v1/status");
    document.getElementById("host-name").textContent = status.host;
    document.title = `Sigil · ${status.host}`;
  } catch { /* the views say what is wrong */ }
  if (state.token) {
    const check = await fetch("/v1/auth", { headers: { authorization: `Bearer ${state.token}` } });
    if (check.status !== 204) { state.token = null; sessionStorage.removeItem(TOKEN_KEY); showSession(); }
  }
  connectEvents();
  window.addEventListener("hashchange", () => { route(); main.focus(); });
  await route();
}

start();
