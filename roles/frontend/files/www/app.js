// halab's page: the todos, and a live view of which instance serves and which is sick.
// No framework, no build step. Talks to two kinds of paths on the load balancer:
//   /api/...            the todo API, load balanced (every answer names its instance: X-Instance);
//   /status/...         read-only status NGINX exposes for this page: each instance's health probed
//                       directly (no retry on the other instance), the share of recent
//                       requests from Prometheus (a fixed query, so no PromQL comes from browsers),
//                       each load balancer's VRRP state (keepalived's, asked of that node), and
//                       the Redis nodes' roles and the Sentinels (another fixed query), and the
//                       charts' series of the last minutes and the active alerts (fixed queries too).
// Every answer names the load balancer that sent it (X-Balancer): the one this page talks to.
// It never offers to repair a node: a request through the load balancer cannot reach a node the
// load balancer has isolated. It shows how an operator does it instead.
"use strict";

(() => {
  // Every setting (timings, the instances and their nodes, the operator's commands) comes from
  // config.json, which the frontend role renders from the system model: none is repeated here.
  // DEGRADED: the instance is fine and in rotation, but Redis does not answer it.
  const STATES = ["OK", "DEGRADED", "UNHEALTHY", "DOWN"];
  // A load balancer's state: keepalived's (MASTER holds the public address, BACKUP stands by,
  // FAULT, STOP), DOWN (it does not answer) or UNKNOWN (it has no state yet, or no answer at all).
  const LB_STATES = ["MASTER", "BACKUP", "FAULT", "STOP", "DOWN", "UNKNOWN"];

  let cfg = null;
  const cards = new Map(); // instance id -> {el, state, data}
  const recent = []; // X-Instance of this page's recent API answers
  const lbCards = new Map(); // load balancer name -> {el, state, seen}
  let talkingTo = null; // the load balancer that sent this page's last answer (X-Balancer)
  let announced = null; // {holders, talkingTo} as last announced
  const $ = (sel, root = document) => root.querySelector(sel);

  // ---------- small helpers ----------
  const clock = () => new Date().toLocaleTimeString([], { hour12: false });
  const fill = (tpl, inst) => tpl.replaceAll("{id}", inst.id).replaceAll("{node}", inst.node || `instance ${inst.id}`);

  function uuid() {
    // crypto.randomUUID() exists only in secure contexts (https, localhost); the lab's page is
    // plain http on the lab's address, so build the same v4 UUID from getRandomValues there.
    if (typeof crypto.randomUUID === "function") {
      try {
        return crypto.randomUUID();
      } catch (_) {
        /* not a secure context */
      }
    }
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function announce(text, where = "#cluster-live") {
    const live = $(where);
    live.textContent = "";
    // a fresh text node so screen readers announce a repeated message too
    setTimeout(() => (live.textContent = text), 50);
  }

  // ---------- the API, through the load balancer ----------
  async function api(method, path, body, headers = {}) {
    const t0 = performance.now();
    const init = { method, cache: "no-store", headers: { Accept: "application/json", ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      logRequest(method, path, "network error", null, performance.now() - t0);
      showBanner("The load balancer does not answer (network error).");
      return { ok: false, status: 0, data: null, instance: null };
    }
    showBanner("");
    const balancer = noteBalancer(res);
    const instance = res.headers.get("X-Instance");
    let data = null;
    if (res.status !== 204) {
      try {
        data = await res.json();
      } catch (_) {
        data = null;
      }
    }
    if (instance) {
      recent.push(instance);
      while (recent.length > cfg.recentWindow) recent.shift();
      renderLocalShares();
    }
    logRequest(method, path, res.status, instance, performance.now() - t0, balancer);
    return {
      ok: res.ok,
      status: res.status,
      data,
      instance,
      replayed: res.headers.get("Idempotent-Replayed") === "true",
      total: Number(res.headers.get("X-Total-Count")),
    };
  }

  function who(r) {
    return r.instance ? `instance ${r.instance}` : "no instance (the load balancer itself)";
  }

  function logRequest(method, path, status, instance, ms, balancer) {
    const ol = $("#requests");
    const li = document.createElement("li");
    li.dataset.instance = instance || "";
    const via = balancer ? ` via ${balancer}` : "";
    li.textContent = `${clock()} ${method} ${path} → ${status}${instance ? `, instance ${instance}` : ""}${via} (${Math.round(ms)} ms)`;
    ol.prepend(li);
    while (ol.children.length > 8) ol.lastElementChild.remove();
  }

  function showBanner(text) {
    const b = $("#lb-banner");
    b.textContent = text;
    b.hidden = !text;
  }

  function setActionStatus(text, kind) {
    const p = $("#action-status");
    p.textContent = text;
    p.dataset.kind = kind || "";
  }

  // ---------- todos ----------
  const todoItems = new Map(); // id -> li
  let pendingAdd = null; // {texto, key}: a submission not confirmed yet; retried with the same key
  let loading = false;
  let mutations = 0; // a list fetched while a change was in flight may predate it: not rendered

  async function loadTodos() {
    if (loading) return;
    loading = true;
    const seenMutations = mutations;
    try {
      // only what the page shows: the newest todosShown, newest first (the API pages the rest)
      const r = await api("GET", `/api/todos?limit=${cfg.todosShown}&order=newest`);
      if (r.ok && Array.isArray(r.data) && seenMutations === mutations) renderTodos(r.data, r.total);
    } finally {
      loading = false;
    }
  }

  function renderTodos(todos, total) {
    const ul = $("#todos");
    const more = $("#todos-more");
    more.hidden = !(total > todos.length);
    more.textContent = `Showing the latest ${todos.length} of ${total} todos, newest first.`;
    const seen = new Set();
    todos.forEach((t, i) => {
      seen.add(t.id);
      let li = todoItems.get(t.id);
      if (!li) {
        li = todoItem(t);
        todoItems.set(t.id, li);
      }
      updateTodoItem(li, t);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    for (const [id, li] of todoItems) {
      if (!seen.has(id)) {
        li.remove();
        todoItems.delete(id);
      }
    }
    $("#todos-empty").hidden = todos.length > 0;
  }

  function upsertTodo(t) {
    let li = todoItems.get(t.id);
    if (!li) {
      li = todoItem(t);
      todoItems.set(t.id, li);
      $("#todos").prepend(li); // newest first, as the list is fetched
    }
    updateTodoItem(li, t);
    $("#todos-empty").hidden = true;
  }

  function todoItem(t) {
    const li = document.createElement("li");
    li.className = "todo";
    li.dataset.id = t.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = `todo-${t.id}`;
    const label = document.createElement("label");
    label.htmlFor = box.id;
    label.className = "todo-text";
    const by = document.createElement("span");
    by.className = "todo-by";
    by.id = `todo-${t.id}-by`;
    box.setAttribute("aria-describedby", by.id);
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.textContent = "Delete";
    box.addEventListener("change", () => toggleTodo(li, box));
    del.addEventListener("click", () => deleteTodo(li, del));
    li.append(box, label, by, del);
    return li;
  }

  function updateTodoItem(li, t) {
    const box = li.querySelector("input");
    const label = li.querySelector("label");
    if (label.textContent !== t.texto) label.textContent = t.texto;
    if (!li.dataset.busy) box.checked = Boolean(t.completada);
    li.classList.toggle("done", Boolean(t.completada));
    li.querySelector(".todo-by").textContent = `added by ${t.instance}`;
    li.querySelector(".delete").setAttribute("aria-label", `Delete “${t.texto}”`);
    li.dataset.texto = t.texto;
  }

  async function addTodo(ev) {
    ev.preventDefault();
    const input = $("#new-todo");
    const texto = input.value.trim();
    if (!texto) {
      setActionStatus("Type a todo first.", "error");
      input.focus();
      return;
    }
    // Same text as an unconfirmed submission = the user's retry of it: same Idempotency-Key, so
    // the API stores it once even if the first attempt did reach an instance.
    if (!pendingAdd || pendingAdd.texto !== texto) pendingAdd = { texto, key: uuid() };
    const btn = $("#add-button");
    btn.disabled = true;
    mutations++;
    try {
      const r = await api("POST", "/api/todos", { texto }, { "Idempotency-Key": pendingAdd.key });
      if (r.ok && r.data && r.data.id) {
        pendingAdd = null;
        input.value = "";
        const replay = r.replayed ? " (a retry: it had been stored already, not stored twice)" : "";
        setActionStatus(`Added “${r.data.texto}”: answered by ${who(r)}${replay}.`, "ok");
        upsertTodo(r.data);
      } else {
        const why = (r.data && (r.data.error || r.data.detail)) || (r.status ? `HTTP ${r.status}` : "network error");
        setActionStatus(`Not added (${why}, ${who(r)}). Press Add again to retry the same submission.`, "error");
      }
    } finally {
      btn.disabled = false;
      input.focus();
    }
  }

  async function toggleTodo(li, box) {
    const completada = box.checked;
    li.dataset.busy = "1";
    mutations++;
    try {
      const r = await api("PATCH", `/api/todos/${encodeURIComponent(li.dataset.id)}`, { completada });
      if (r.ok && r.data) {
        updateTodoItem(li, r.data);
        setActionStatus(`Marked “${r.data.texto}” ${completada ? "done" : "not done"}: answered by ${who(r)}.`, "ok");
      } else {
        box.checked = !completada;
        setActionStatus(`Not changed (HTTP ${r.status || "error"}, ${who(r)}).`, "error");
      }
    } finally {
      delete li.dataset.busy;
    }
  }

  async function deleteTodo(li, btn) {
    const texto = li.dataset.texto;
    btn.disabled = true;
    mutations++;
    const r = await api("DELETE", `/api/todos/${encodeURIComponent(li.dataset.id)}`);
    if (r.ok || r.status === 404) {
      // focus moves to a neighbour, not to the top of the page
      const next = li.nextElementSibling || li.previousElementSibling;
      todoItems.delete(li.dataset.id);
      li.remove();
      $("#todos-empty").hidden = todoItems.size > 0;
      (next ? next.querySelector("button") : $("#new-todo")).focus();
      setActionStatus(`Deleted “${texto}”: answered by ${who(r)}${r.status === 404 ? " (it was already gone)" : ""}.`, "ok");
    } else {
      btn.disabled = false;
      setActionStatus(`Not deleted (HTTP ${r.status || "error"}, ${who(r)}).`, "error");
    }
  }

  // A card from a <template>: its heading (and a muted note after it) labels its article.
  function newCard(tplSel, key, heading, note) {
    const li = $(tplSel).content.firstElementChild.cloneNode(true);
    const title = `${key}-title`;
    li.querySelector("article").setAttribute("aria-labelledby", title);
    const h = li.querySelector("h3");
    h.id = title;
    h.textContent = heading;
    if (note) {
      const small = document.createElement("span");
      small.className = "node";
      small.textContent = ` ${note}`;
      h.append(small);
    }
    return li;
  }

  // ---------- the cluster panel ----------
  function buildCards() {
    const ul = $("#instances");
    for (const inst of cfg.instances) {
      const li = newCard("#instance-template", `instance-${inst.id}`, `Instance ${inst.id}`, inst.node && `on ${inst.node}`);
      li.dataset.instance = inst.id;
      const stepIn = (list) => (lead, cmd, tail) => {
        const s = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = cmd;
        s.append(lead, code, tail);
        list.append(s);
      };
      // UNHEALTHY: it answers, but sheds load (memory over its threshold).
      const step = stepIn(li.querySelector(".repair-steps"));
      step("From the controller: ", fill(cfg.recover, inst), " (frees a stress's memory; add -e recover_method=restart to restart the unit);");
      step(`or on the node (${fill(cfg.shell, inst)}): `, `systemctl restart todo-api@${inst.id}`, ";");
      step("or, if a stress holds its memory, on the node: ", `todo-apictl --instance ${inst.id} clear`, ".");
      // DOWN: no answer at all; the node tells whether its unit or the node itself is gone.
      const down = stepIn(li.querySelector(".down-steps"));
      down("From the controller: ", fill(cfg.status, inst), " (the unit's state; UNREACHABLE when the node itself does not answer);");
      down(`if the node answers (${fill(cfg.shell, inst)}), it says why the unit stopped: `, `journalctl -u todo-api@${inst.id} -n 50`, ";");
      down("and starts it again: ", `systemctl restart todo-api@${inst.id}`, ";");
      down("if the node does not answer: ", fill(cfg.nodeDown, inst), ` (${fill(cfg.nodeDownHint, inst)}).`);
      ul.append(li);
      cards.set(inst.id, { el: li, state: null, data: null });
    }
  }

  function logEvent(text) {
    const ol = $("#events");
    const li = document.createElement("li");
    li.textContent = `${clock()} ${text}`;
    ol.prepend(li);
    while (ol.children.length > 10) ol.lastElementChild.remove();
  }

  function describe(state, data) {
    if (state === "DOWN") return "DOWN: it does not answer";
    if (state === "UNKNOWN") return "unknown: the status path does not answer";
    let s = state;
    if (data && data.memoryPercent !== undefined) s += `, memory at ${data.memoryPercent}% of its limit`;
    if (data && Array.isArray(data.reasons) && data.reasons.length) s += ` (${data.reasons.join("; ")})`;
    return s;
  }

  function renderInstance(id, state, data) {
    const card = cards.get(id);
    const el = card.el;
    const prev = card.state;
    card.state = state;
    card.data = data;
    el.dataset.state = state;
    $(".state-text", el).textContent = state === "UNKNOWN" ? "UNKNOWN" : state;
    const mem = $(".mem-text", el);
    const hasMem = data && typeof data.usedMB === "number" && typeof data.limitMB === "number";
    if (hasMem) {
      const pct = Number(data.memoryPercent);
      mem.textContent = `${Math.round(data.usedMB)} of ${Math.round(data.limitMB)} MB (${pct.toFixed(0)}%; unhealthy at ${data.thresholdPercent}%)`;
      $(".mem-fill", el).style.width = `${Math.min(100, Math.max(0, pct))}%`;
      $(".mem-fill", el).classList.toggle("over", pct >= Number(data.thresholdPercent));
      $(".mem-mark", el).style.left = `${data.thresholdPercent}%`;
      $(".mem-mark", el).hidden = false;
    } else {
      mem.textContent = state === "DOWN" ? "– (no answer)" : "–";
      $(".mem-fill", el).style.width = "0";
      $(".mem-mark", el).hidden = true;
    }
    $(".repair", el).hidden = state !== "UNHEALTHY";
    $(".repair-down", el).hidden = state !== "DOWN";
    if (prev !== state) {
      el.dataset.since = String(Date.now()); // when this page first saw the state (tests read it)
      if (prev === null) {
        logEvent(`Instance ${id}: ${describe(state, data)}`);
      } else {
        const msg = `Instance ${id}: ${prev} → ${describe(state, data)}`;
        logEvent(msg);
        const out = state === "UNHEALTHY" || state === "DOWN";
        const why = state === "DEGRADED" ? ". It still serves; its storage (Redis) does not answer." : "";
        announce(msg + (out ? ". It is out of the load balancer; see how to repair it." : why));
      }
    }
  }

  // One status path: {state, data}. `field` of its JSON when it is one of `known`; DOWN when NGINX
  // could not reach the target itself (502/504); UNKNOWN when the load balancer this page talks to
  // does not answer at all (nothing can be told then).
  async function readStatus(path, field, known) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), cfg.probeTimeoutMs);
    let state = "UNKNOWN";
    let data = null;
    try {
      const res = await fetch(path, { cache: "no-store", signal: ctrl.signal, headers: { Accept: "application/json" } });
      noteBalancer(res);
      try {
        data = await res.json();
      } catch (_) {
        data = null;
      }
      if (data && known.includes(data[field])) state = data[field];
      else if (res.status === 502 || res.status === 504) state = "DOWN";
    } catch (_) {
      state = "UNKNOWN";
    } finally {
      clearTimeout(timer);
    }
    return { state, data };
  }

  async function probe(inst) {
    const { state, data } = await readStatus(inst.status, "status", STATES);
    renderInstance(inst.id, state, data);
    $("#last-check").textContent = clock();
  }

  // fn every pollMs (its own time included), slower while the page is hidden
  function pollEvery(fn) {
    const loop = async () => {
      const t0 = performance.now();
      if (!document.hidden) {
        try {
          await fn();
        } catch (_) {
          /* shown where it matters; keep polling */
        }
      }
      const wait = document.hidden ? cfg.pollMs * 4 : Math.max(0, cfg.pollMs - (performance.now() - t0));
      setTimeout(loop, wait);
    };
    loop();
  }

  // ---------- the load balancers panel ----------
  // Each load balancer's state file, asked of THAT node by the one this page talks to
  // (/status/balancers/<name>); all of them every pollMs, together, so the holder is one snapshot.
  function balancerName(header) {
    // X-Balancer is the node's hostname: its inventory name, or that name plus a domain
    const h = String(header).trim().toLowerCase();
    const b = (cfg.balancers || []).find((x) => h === x.name.toLowerCase() || h.startsWith(`${x.name.toLowerCase()}.`));
    return b ? b.name : h;
  }

  function noteBalancer(res) {
    const header = res.headers.get("X-Balancer");
    if (!header) return null;
    talkingTo = balancerName(header);
    return talkingTo;
  }

  function ago(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 1) return "just now";
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h ago`;
  }

  function holdsText(data) {
    return `holds ${(data && data.floating_address) || cfg.publicAddress}`;
  }

  function badge(state, data) {
    if (state === "MASTER") return holdsText(data);
    if (state === "BACKUP") return "standby";
    return state;
  }

  function explain(state, data) {
    switch (state) {
      case "MASTER":
        return "MASTER: answers on the public address";
      case "BACKUP":
        return "BACKUP: takes the address over if the holder fails";
      case "FAULT":
        return "FAULT: keepalived sees a problem here and will not take the address";
      case "STOP":
        return "STOP: keepalived stopped on this node";
      case "DOWN":
        return "DOWN: it does not answer";
      default:
        return data && data.state === "UNKNOWN"
          ? "UNKNOWN: keepalived has written no state on it yet"
          : "UNKNOWN: its status path does not answer";
    }
  }

  function buildBalancers() {
    const ul = $("#balancers");
    $("#public-address").textContent = cfg.publicAddress || "–";
    for (const b of cfg.balancers || []) {
      const li = newCard("#balancer-template", `balancer-${b.name}`, b.name, b.address);
      li.dataset.balancer = b.name;
      ul.append(li);
      lbCards.set(b.name, { el: li, state: null, seen: 0 });
    }
  }

  function renderBalancer(b, state, data) {
    const card = lbCards.get(b.name);
    const el = card.el;
    const prev = card.state;
    if (prev !== state) {
      card.seen = Date.now();
      logEvent(prev === null ? `Load balancer ${b.name}: ${explain(state, data)}` : `Load balancer ${b.name}: ${prev} → ${explain(state, data)}`);
    }
    card.state = state;
    el.dataset.state = state;
    $(".state-text", el).textContent = badge(state, data);
    const since = $(".balancer-since", el);
    since.textContent = `${explain(state, data)}. `;
    const t = document.createElement("time");
    if (data && typeof data.since === "number" && LB_STATES.slice(0, 4).includes(state)) {
      // the node's own clock (keepalived's notify hook); the page's for the relative time
      const at = new Date(data.since * 1000);
      t.dateTime = at.toISOString();
      t.textContent = at.toLocaleTimeString([], { hour12: false });
      since.append("Since ", t, ` (${ago(Date.now() / 1000 - data.since)}).`);
      el.dataset.sinceEpoch = String(data.since);
    } else {
      const at = new Date(card.seen);
      t.dateTime = at.toISOString();
      t.textContent = at.toLocaleTimeString([], { hour12: false });
      since.append("Seen so by this page since ", t, ` (${ago((Date.now() - card.seen) / 1000)}).`);
      delete el.dataset.sinceEpoch;
    }
  }

  function renderTalkingTo(holders) {
    const ul = $("#balancers");
    ul.dataset.holders = holders.join(",");
    ul.dataset.you = talkingTo || "";
    $("#balancer-you-name").textContent = talkingTo || "…";
    let note = "";
    if (talkingTo && holders.length === 1 && holders[0] === talkingTo) note = `, which holds ${cfg.publicAddress}.`;
    else if (talkingTo && holders.length === 1) note = `, not the holder (${holders[0]}): this page was opened at its own address.`;
    else if (holders.length === 0) note = `. No load balancer holds ${cfg.publicAddress} right now.`;
    else if (holders.length > 1) note = `. ${holders.join(" and ")} all claim ${cfg.publicAddress} (split brain).`;
    $("#balancer-you-note").textContent = note;
    $("#balancer-you").dataset.kind = holders.length === 1 ? "ok" : "error";
    for (const [name, card] of lbCards) {
      const you = $(".balancer-you", card.el);
      you.hidden = name !== talkingTo;
      you.textContent = `you are talking to ${name}`;
      card.el.classList.toggle("talking", name === talkingTo);
    }
  }

  function announceBalancers(holders) {
    const now = { holders: holders.join(","), talkingTo };
    const parts = [];
    if (announced && now.holders !== announced.holders) {
      const was = announced.holders ? ` (was ${announced.holders.replaceAll(",", " and ")})` : "";
      if (holders.length === 1) parts.push(`${holders[0]} now holds ${cfg.publicAddress}${was}.`);
      else if (holders.length === 0) parts.push(`No load balancer holds ${cfg.publicAddress} now${was}.`);
      else parts.push(`${holders.join(" and ")} all claim ${cfg.publicAddress}${was}.`);
    }
    if (announced && now.talkingTo && now.talkingTo !== announced.talkingTo) parts.push(`This page now talks to ${now.talkingTo}.`);
    if (parts.length) {
      logEvent(parts.join(" "));
      announce(parts.join(" "), "#balancers-live");
    }
    announced = now;
  }

  async function pollBalancers() {
    const results = await Promise.all(cfg.balancers.map(async (b) => ({ b, ...(await readStatus(b.status, "state", LB_STATES)) })));
    for (const r of results) renderBalancer(r.b, r.state, r.data);
    const holders = results.filter((r) => r.state === "MASTER").map((r) => r.b.name);
    renderTalkingTo(holders);
    announceBalancers(holders);
  }

  function renderLocalShares() {
    const n = recent.length;
    for (const [id, card] of cards) {
      const k = recent.filter((x) => x === id).length;
      $(".local-text", card.el).textContent = `${k} of the last ${n} API answers`;
      card.el.dataset.localCount = String(k);
      if (!card.promShare) {
        const pct = n ? Math.round((100 * k) / n) : 0;
        $(".share-text", card.el).textContent = n ? `${pct}% of this page's last ${n} requests (Prometheus not reachable)` : "–";
        $(".share-fill", card.el).style.width = `${pct}%`;
      }
    }
  }

  // One of nginx_lb's fixed Prometheus paths: the query's result (a list of series), or null when
  // there is none to show (an error status, a network error, not JSON, not a success); given
  // timeoutMs, a request still unanswered by then is abandoned.
  async function readPrometheus(path, timeoutMs = 0) {
    const ctrl = new AbortController();
    const timer = timeoutMs > 0 ? setTimeout(() => ctrl.abort(), timeoutMs) : null;
    try {
      const res = await fetch(path, { cache: "no-store", signal: ctrl.signal, headers: { Accept: "application/json" } });
      const body = await res.json();
      if (res.ok && body && body.status === "success" && body.data && Array.isArray(body.data.result)) return body.data.result;
    } catch (_) {
      /* no answer to show */
    } finally {
      clearTimeout(timer);
    }
    return null;
  }

  async function loadShares() {
    const result = await readPrometheus(cfg.sharesPath);
    const rates = result && new Map(result.map((r) => [String(r.metric.todo_api_instance || r.metric.instance), Number(r.value && r.value[1]) || 0]));
    const total = rates ? [...rates.values()].reduce((a, b) => a + b, 0) : 0;
    for (const [id, card] of cards) {
      card.promShare = rates !== null;
      if (!rates) continue;
      const rate = rates.get(id) || 0;
      const pct = total > 0 ? Math.round((100 * rate) / total) : 0;
      $(".share-text", card.el).textContent = `${pct}% (${rate.toFixed(2)} req/s over the last minute, all clients)`;
      $(".share-fill", card.el).style.width = `${pct}%`;
    }
    if (!rates) renderLocalShares();
  }

  // ---------- storage: the Redis nodes' roles and lag, the Sentinels (one fixed query) ----------
  const storageCards = new Map(); // Redis node -> {el, role}

  function buildStorage() {
    const ul = $("#storage-nodes");
    for (const { name: node } of cfg.storage.nodes) {
      const li = document.createElement("li");
      li.className = "balancer storage-node";
      li.dataset.node = node;
      li.dataset.state = "UNKNOWN";
      const h = document.createElement("h3");
      h.textContent = node;
      const state = document.createElement("span");
      state.className = "state state-text";
      state.textContent = "…";
      const detail = document.createElement("p");
      detail.className = "balancer-since";
      li.append(h, state, detail);
      ul.append(li);
      storageCards.set(node, { el: li, role: null });
    }
    $("#storage-ms").textContent = String(cfg.sharesRefreshMs);
    $("#storage").hidden = false;
  }

  async function loadStorage() {
    const result = await readPrometheus(cfg.storage.path);
    const roles = new Map();
    const lags = new Map(); // replica -> bytes behind, as its primary last heard (by its address)
    const byAddress = new Map(cfg.storage.nodes.map((n) => [n.address, n.name]));
    let sentinelsUp = 0;
    for (const r of result || []) {
      const node = r.metric.node;
      if (r.metric.series === "role") roles.set(node, r.metric.role);
      else if (r.metric.series === "lag_bytes") lags.set(byAddress.get(r.metric.slave_ip), Number(r.value[1]));
      else if (r.metric.series === "sentinel" && Number(r.value[1]) === 1) sentinelsUp += 1;
    }
    for (const [node, card] of storageCards) {
      const role = result === null ? "UNKNOWN" : roles.get(node) === "master" ? "PRIMARY" : roles.get(node) === "slave" ? "REPLICA" : "DOWN";
      if (card.role !== null && card.role !== role) {
        logEvent(`Redis on ${node}: ${card.role} → ${role}`);
        if (role === "PRIMARY") announce(`Redis on ${node} is now the primary.`, "#storage-live");
      }
      card.role = role;
      card.el.dataset.state = role;
      $(".state-text", card.el).textContent = role.toLowerCase();
      const lag = lags.get(node);
      $(".balancer-since", card.el).textContent =
        result === null ? "Prometheus not reachable." :
        role === "PRIMARY" ? "Takes every write; a write is acknowledged once the replica has it." :
        role === "REPLICA" ? (lag ? `${lag} bytes behind the primary.` : "In step with the primary.") :
        "Does not answer its exporter.";
    }
    const sentinels = $("#storage-sentinels");
    sentinels.textContent = result === null ? "Sentinels: Prometheus not reachable." :
      `Sentinels: ${sentinelsUp} of ${cfg.storage.sentinels} answer (${cfg.storage.quorum} needed to replace a primary).`;
    sentinels.dataset.kind = result !== null && sentinelsUp >= cfg.storage.quorum ? "ok" : "error";
  }

  // ---------- charts: the last minutes from Prometheus, drawn by uPlot ----------
  // nginx_lb answers {charts.path}/{name} with one fixed range subquery each (no PromQL comes from
  // browsers, as for the shares): a Prometheus matrix, one series per label set, sampled every 3 s.
  // Series may have gaps or start late, so each chart's series are aligned here onto one time axis,
  // null where a series has no sample: uPlot draws a gap there, never a line Prometheus did not see.
  // The "states" answer is no chart of its own: its changes (an instance's state, an alert firing)
  // are marked on the time axis of every chart and listed in text under them.
  const MB = 1024 * 1024;
  const charts = new Map(); // chart name -> {spec, fig, plot, note, readout, legend, summary, u, lines, labels, data, hidden}
  let marks = []; // [{t, text, detail, kind}], oldest first: drawn on every chart
  // What the browser test reads: exactly what each chart plots (uPlot's aligned data) and the marks.
  window.halabCharts = {};
  window.halabMarks = [];

  const fmtNum = (v) => {
    const a = Math.abs(v);
    if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
    if (a >= 1e4) return `${Math.round(v / 1e3)}k`;
    if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
    return String(+v.toFixed(a >= 10 ? 0 : 2));
  };
  const fmtBytes = (v) => (Math.abs(v) >= MB ? `${+(v / MB).toFixed(1)} MB` : Math.abs(v) >= 1024 ? `${+(v / 1024).toFixed(1)} kB` : `${fmtNum(v)} B`);
  const fmtClock = (sec, seconds = true) =>
    new Date(sec * 1000).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", ...(seconds ? { second: "2-digit" } : {}) });
  const stateName = (v) => STATES[v] || `state ${v}`;

  // Colours come from style.css (--chart-N, --ok...), one set per colour scheme: read them when a
  // plot is made, and make the plots again when the scheme changes (canvas colours do not follow CSS).
  function palette() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      series: [1, 2, 3, 4, 5, 6].map((i) => v(`--chart-${i}`)),
      fg: v("--fg"), muted: v("--muted"), line: v("--line"), card: v("--card"), ok: v("--ok"), bad: v("--bad"), warn: v("--warn"),
    };
  }
  const colour = (pal, key) => (typeof key === "number" ? pal.series[key % pal.series.length] : pal[key]);

  // The ids or nodes a chart shows: the configured ones first (a stable legend, even without data),
  // then any other the answer names (an instance added since config.json was written).
  function members(result, label, known) {
    const seen = new Set(known.map(String));
    const extra = [];
    for (const r of result) {
      const v = r.metric && r.metric[label];
      if (v !== undefined && !seen.has(String(v))) {
        seen.add(String(v));
        extra.push(String(v));
      }
    }
    extra.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    return [...known.map(String), ...extra];
  }
  const instanceIds = (result) => members(result, "todo_api_instance", cfg.instances.map((i) => i.id));
  const redisNodes = (result) => members(result, "node", cfg.storage ? cfg.storage.nodes.map((n) => n.name) : []);
  const balancerNodes = (result) => members(result, "node", (cfg.balancers || []).map((b) => b.name));
  const is = (series, label, value) => (m) => m.series === series && (label === undefined || String(m[label]) === value);
  const toMB = (v) => Math.round((v / MB) * 10) / 10;
  const inMB = (v) => `${fmtNum(v)} MB`;
  const perSecond = (v) => `${fmtNum(v)} req/s`;
  const opsPerSecond = (v) => `${fmtNum(v)}/s`;
  const role = (v) => (v === 1 ? "primary" : "replica");
  const holds = (v) => (v === 1 ? "holds" : "standby");

  // y scales: from 0 (rates, bytes), or a fixed 0..1 for the step series (primary, holder)
  const fromZero = { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] };
  const zeroOne = { range: () => [-0.15, 1.15] };
  const twoValues = (no, yes) => ({ splits: () => [0, 1], values: (u, splits) => splits.map((v) => (v === 1 ? yes : no)) });

  // One spec per chart. lines(result) says what to plot: label (what the legend and the test read),
  // which series of the answer (match), how to convert its values (conv) and write them (fmt),
  // colour (an index into the palette, or ok/bad/warn), dash, step (a state: it holds until the next sample).
  const CHART_SPECS = [
    {
      name: "memory",
      source: "memory",
      title: "Memory of each instance (as the kernel counts it)",
      scales: { MB: fromZero },
      axes: [{ scale: "MB", values: (u, splits) => splits.map((v) => `${fmtNum(v)} MB`) }],
      lines: (result) =>
        instanceIds(result).flatMap((id, i) => [
          { label: `instance ${id} used`, who: id, kind: "used", match: is("used", "todo_api_instance", id), conv: toMB, fmt: inMB, colour: i, scale: "MB" },
          { label: `instance ${id} threshold`, who: id, kind: "threshold", match: is("threshold", "todo_api_instance", id), conv: toMB, fmt: inMB, colour: i, scale: "MB", dash: [7, 4], width: 1.5 },
          { label: `instance ${id} limit`, who: id, kind: "limit", match: is("limit", "todo_api_instance", id), conv: toMB, fmt: inMB, colour: i, scale: "MB", dash: [2, 3], width: 1.5 },
        ]),
      summary: (lines, last) =>
        [...new Set(lines.map((l) => l.who))]
          .map((id) => {
            const used = last(`instance ${id} used`);
            if (used === null) return `instance ${id}: no data`;
            const limit = last(`instance ${id} limit`);
            const threshold = last(`instance ${id} threshold`);
            return `instance ${id}: ${fmtNum(used)} MB${limit !== null ? ` of ${fmtNum(limit)} MB` : ""}${threshold !== null ? `, threshold ${fmtNum(threshold)} MB` : ""}`;
          })
          .join("; "),
    },
    {
      name: "traffic",
      source: "traffic",
      title: "Requests per second through the load balancers",
      scales: { rps: fromZero },
      axes: [{ scale: "rps", values: (u, splits) => splits.map((v) => `${fmtNum(v)}/s`) }],
      lines: (result) => [
        ...instanceIds(result).map((id, i) => ({ label: `instance ${id} served`, match: is("served", "todo_api_instance", id), fmt: perSecond, colour: i, scale: "rps" })),
        { label: "retried", match: is("retried"), fmt: perSecond, colour: "warn", scale: "rps", dash: [7, 4] },
        { label: "5xx", match: is("5xx"), fmt: perSecond, colour: "bad", scale: "rps", dash: [2, 3] },
      ],
      summary: (lines, last) =>
        lines.map((l) => `${l.label} ${last(l.label) === null ? "no data" : `${fmtNum(last(l.label))} req/s`}`).join(", "),
    },
    {
      name: "redis",
      source: "redis",
      title: "Redis: commands per second, and which node is the primary",
      scales: { ops: fromZero, role: zeroOne },
      axes: [
        { scale: "ops", values: (u, splits) => splits.map((v) => `${fmtNum(v)}/s`) },
        { scale: "role", side: 1, grid: { show: false }, ...twoValues("replica", "primary") },
      ],
      lines: (result) =>
        redisNodes(result).flatMap((node, i) => [
          { label: `${node} ops`, who: node, match: is("ops", "node", node), fmt: opsPerSecond, colour: i, scale: "ops" },
          { label: `${node} primary`, who: node, match: is("primary", "node", node), fmt: role, colour: i, scale: "role", step: true, dash: [7, 3], width: 2.5 },
        ]),
      summary: (lines, last) =>
        [...new Set(lines.map((l) => l.who))]
          .map((node) => {
            const ops = last(`${node} ops`);
            const primary = last(`${node} primary`);
            return `${node}: ${ops === null ? "no data" : `${fmtNum(ops)} commands/s`}, ${primary === null ? "role unknown" : role(primary)}`;
          })
          .join("; "),
    },
    {
      name: "redis-lag",
      source: "redis",
      title: "Redis: how far each replica is behind its primary",
      scales: { bytes: fromZero },
      axes: [{ scale: "bytes", values: (u, splits) => splits.map(fmtBytes) }],
      lines: (result) => redisNodes(result).map((node, i) => ({ label: `${node} lag`, who: node, match: is("lag_bytes", "node", node), fmt: fmtBytes, colour: i, scale: "bytes" })),
      summary: (lines, last) => {
        const behind = lines.filter((l) => last(l.label) !== null).map((l) => `${l.who} ${fmtBytes(last(l.label))} behind`);
        return behind.length ? behind.join("; ") : "no replica's lag reported";
      },
    },
    {
      name: "balancers",
      source: "balancers",
      title: "Which load balancer holds the public address",
      scales: { holder: zeroOne },
      axes: [{ scale: "holder", ...twoValues("standby", "holds") }],
      lines: (result) => balancerNodes(result).map((node, i) => ({ label: `${node} holder`, who: node, match: is("holder", "node", node), fmt: holds, colour: i, scale: "holder", step: true })),
      summary: (lines, last) =>
        lines.map((l) => `${l.who} ${last(l.label) === null ? "no data" : last(l.label) === 1 ? `holds ${cfg.publicAddress}` : "standby"}`).join("; "),
    },
  ];

  // Timestamps of the answer (ms, so float seconds compare exactly) on one axis; where every series
  // skips a sample the regular step is filled in, so a gap shows as a gap and not as a straight line.
  function timeAxis(keys) {
    keys.sort((a, b) => a - b);
    if (keys.length < 2) return keys;
    let step = Infinity;
    for (let i = 1; i < keys.length; i++) step = Math.min(step, keys[i] - keys[i - 1]);
    const first = keys[0];
    const last = keys[keys.length - 1];
    if (!(step > 0) || (last - first) / step > 2000) return keys;
    const all = new Set(keys);
    for (let k = first + step; k < last; k += step) all.add(k);
    return [...all].sort((a, b) => a - b);
  }

  function align(result, lines) {
    const keys = new Set();
    const values = lines.map(() => new Map());
    for (const r of result) {
      const m = r.metric || {};
      lines.forEach((line, i) => {
        if (!line.match(m)) return;
        for (const [t, v] of r.values || []) {
          const k = Math.round(Number(t) * 1000);
          if (!Number.isFinite(k)) continue;
          const y = line.conv ? line.conv(Number(v)) : Number(v);
          keys.add(k);
          values[i].set(k, Number.isFinite(y) ? y : null); // NaN, +Inf: no value
        }
      });
    }
    const xs = timeAxis([...keys]);
    return [xs.map((k) => k / 1000), ...values.map((map) => xs.map((k) => (map.has(k) ? map.get(k) : null)))];
  }

  // The marks: each change of an instance's state, each alert starting and ending, within the answer.
  function computeMarks(result) {
    const out = [];
    let t0 = Infinity;
    let t1 = -Infinity;
    let step = Infinity;
    const runs = [];
    for (const r of result) {
      const m = r.metric || {};
      const pts = (r.values || []).map(([t, v]) => [Number(t), Number(v)]).filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v));
      pts.sort((a, b) => a[0] - b[0]);
      for (let i = 0; i < pts.length; i++) {
        t0 = Math.min(t0, pts[i][0]);
        t1 = Math.max(t1, pts[i][0]);
        if (i) step = Math.min(step, pts[i][0] - pts[i - 1][0]);
      }
      if (m.series === "state") {
        const id = String(m.todo_api_instance);
        for (let i = 1; i < pts.length; i++) {
          const [t, v] = pts[i];
          const was = pts[i - 1][1];
          if (v === was) continue;
          out.push({ t, text: `${id} ${stateName(v)}`, detail: `Instance ${id}: ${stateName(was)} → ${stateName(v)}`, kind: v === 0 ? "ok" : v === 1 ? "warn" : "bad" });
        }
      } else if (m.series === "alert") {
        runs.push({ m, pts: pts.filter(([, v]) => v > 0) });
      }
    }
    if (!(step > 0 && step < Infinity)) step = 3;
    // An alert's series exists only while it fires: a run of samples is one firing. A run that starts
    // with the window (or ends with it) started before it (or still fires): no mark at that edge.
    const gap = step * 1.5;
    for (const { m, pts } of runs) {
      const name = m.alertname || "alert";
      const where = m.todo_api_instance !== undefined ? ` (instance ${m.todo_api_instance})` : m.node ? ` (${m.node})` : "";
      for (let i = 0; i < pts.length; i++) {
        const t = pts[i][0];
        const starts = i === 0 ? t - t0 > gap : t - pts[i - 1][0] > gap;
        const ends = i === pts.length - 1 ? t1 - t > gap : pts[i + 1][0] - t > gap;
        if (starts) out.push({ t, text: `alert ${name}`, detail: `Alert ${name}${where} firing`, kind: "bad" });
        if (ends) out.push({ t: t + step, text: `alert ${name} resolved`, detail: `Alert ${name}${where} resolved`, kind: "ok" });
      }
    }
    const seen = new Set();
    return out
      .sort((a, b) => a.t - b.t)
      .filter((k) => {
        const key = `${k.t} ${k.text}`;
        if (seen.has(key)) return false;
        seen.add(key);
        return true;
      });
  }

  function renderMarks(result) {
    marks = result ? computeMarks(result) : [];
    window.halabMarks = marks.map(({ t, text, detail }) => ({ t, text, detail }));
    const ol = $("#marks");
    ol.textContent = "";
    for (const k of marks.slice(-20).reverse()) {
      const li = document.createElement("li");
      li.dataset.t = String(k.t);
      li.dataset.text = k.text;
      li.dataset.kind = k.kind;
      const time = document.createElement("time");
      time.dateTime = new Date(k.t * 1000).toISOString();
      time.textContent = fmtClock(k.t);
      li.append(time, ` ${k.detail}`);
      ol.append(li);
    }
    const note = $("#marks-note");
    note.dataset.kind = result ? "" : "error";
    note.hidden = Boolean(result) && marks.length > 0 && marks.length <= 20;
    note.textContent = !result
      ? "No data from Prometheus: the state changes and alerts are unknown."
      : marks.length
        ? `${marks.length} in the window; the newest 20 are listed.`
        : `None in the last ${cfg.charts.windowMinutes} minutes.`;
  }

  // uPlot's draw hook: a thin vertical line at each mark, on every chart, and its short label in the
  // band kept free above the plot (MARK_ROWS rows), so labels never hide the data. Labels are placed
  // left to right on the first row with room; one that fits no row is left out (its line stays, and
  // the list under the charts has it).
  const MARK_ROWS = 2;
  const MARK_ROW_H = 12; // CSS px
  function drawMarks(u) {
    const { min, max } = u.scales.x;
    const shown = marks.filter((k) => k.t >= min && k.t <= max);
    if (!shown.length) return;
    const pal = palette();
    const { ctx, bbox } = u;
    const px = uPlot.pxRatio || 1;
    const rowH = MARK_ROW_H * px;
    const band = bbox.top - MARK_ROWS * rowH - 2 * px;
    const ends = new Array(MARK_ROWS).fill(-Infinity); // where the last label of each row ends
    ctx.save();
    ctx.font = `${Math.round(10 * px)}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    ctx.textAlign = "left"; // uPlot leaves the context as its last axis set it
    ctx.lineWidth = px;
    ctx.setLineDash([]);
    for (const k of shown) {
      const x = Math.round(u.valToPos(k.t, "x", true)) + 0.5;
      const c = colour(pal, k.kind);
      const w = ctx.measureText(k.text).width;
      const tx = Math.max(bbox.left, Math.min(x + 2 * px, bbox.left + bbox.width - w));
      const row = ends.findIndex((end) => tx > end + 6 * px);
      ctx.strokeStyle = c;
      ctx.beginPath();
      ctx.moveTo(x, row >= 0 ? band + row * rowH : bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
      if (row < 0) continue;
      ends[row] = tx + w;
      ctx.fillStyle = c;
      ctx.fillText(k.text, tx, band + row * rowH + px);
    }
    ctx.restore();
  }

  function plotSize(chart) {
    const width = Math.max(120, Math.floor(chart.plot.clientWidth || 300));
    return { width, height: width < 480 ? 180 : 220 };
  }

  // y axes as wide as their longest value (uPlot's own fixed 50 px wastes a phone's width or clips "1.2k MB")
  function axisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
    u.ctx.font = axis.font[0];
    return Math.ceil(axis.ticks.size + axis.gap + u.ctx.measureText(longest).width / (uPlot.pxRatio || 1)) + 6;
  }

  function makePlot(chart) {
    const pal = palette();
    const focused = chart.legend.contains(document.activeElement) ? document.activeElement.dataset.series : null;
    if (chart.u) chart.u.destroy();
    chart.plot.textContent = "";
    const axis = (o) => ({
      stroke: pal.fg,
      font: "11px system-ui, sans-serif",
      grid: { stroke: pal.line, width: 1 },
      ticks: { stroke: pal.line, width: 1 },
      ...o,
    });
    const series = chart.lines.map((line) => {
      const s = { label: line.label, scale: line.scale, stroke: colour(pal, line.colour), width: line.width || 2, points: { show: false }, show: !chart.hidden.has(line.label) };
      if (line.dash) s.dash = line.dash;
      if (line.step) s.paths = uPlot.paths.stepped({ align: 1 }); // a state holds until the next sample
      return s;
    });
    const win = cfg.charts.windowMinutes * 60;
    const opts = {
      ...plotSize(chart),
      legend: { show: false }, // replaced by buttons (keyboard) and the readout line
      // no drag-to-zoom: every refresh would undo it
      cursor: { drag: { x: false, y: false, setScale: false } },
      padding: [MARK_ROWS * MARK_ROW_H + 6, null, null, null], // the marks' labels go there
      scales: {
        // the whole window, ending now (or at the newest sample, if the browser's clock is behind)
        x: { time: true, range: (u, min, max) => { const end = Math.max(Date.now() / 1000, max || 0); return [end - win, end]; } },
        ...chart.spec.scales,
      },
      axes: [
        axis({ space: 55, values: (u, splits, ai, space, incr) => splits.map((v) => fmtClock(v, incr < 60)) }),
        ...chart.spec.axes.map((a) => axis({ size: axisSize, ...a })),
      ],
      series: [{}, ...series],
      hooks: { draw: [drawMarks], setCursor: [(u) => readout(chart, u)] },
    };
    chart.u = new uPlot(opts, chart.data, chart.plot);
    buildLegend(chart, pal);
    if (focused) {
      const again = [...chart.legend.children].find((b) => b.dataset.series === focused);
      if (again) again.focus();
    }
  }

  // The legend: one toggle button per line (Tab reaches it, Enter and Space press it; uPlot's own
  // legend rows take clicks only). aria-pressed = the line is shown.
  function buildLegend(chart, pal) {
    chart.legend.textContent = "";
    chart.lines.forEach((line, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.series = line.label;
      b.setAttribute("aria-pressed", String(!chart.hidden.has(line.label)));
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      swatch.style.borderTopColor = colour(pal, line.colour);
      swatch.style.borderTopStyle = !line.dash ? "solid" : line.dash[0] <= 2 ? "dotted" : "dashed";
      b.append(swatch, line.label);
      b.addEventListener("click", () => {
        const show = chart.hidden.has(line.label);
        if (show) chart.hidden.delete(line.label);
        else chart.hidden.add(line.label);
        b.setAttribute("aria-pressed", String(show));
        chart.u.setSeries(i + 1, { show });
      });
      chart.legend.append(b);
    });
  }

  // The values under the pointer, in text (uPlot's legend would do it, but it is replaced).
  function readout(chart, u) {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined || !chart.data[0].length) {
      chart.readout.textContent = "";
      return;
    }
    const parts = chart.lines
      .map((line, i) => [line, chart.data[i + 1][idx]])
      .filter(([line, v]) => v !== null && v !== undefined && !chart.hidden.has(line.label))
      .map(([line, v]) => `${line.label} ${line.fmt(v)}`);
    chart.readout.textContent = `${fmtClock(chart.data[0][idx])}: ${parts.join(", ") || "no data"}`;
  }

  function buildChart(spec) {
    const id = `chart-${spec.name}`;
    const fig = document.createElement("figure");
    fig.className = "chart";
    fig.dataset.chart = spec.name;
    fig.dataset.points = "0";
    const cap = document.createElement("figcaption");
    cap.id = `${id}-title`;
    cap.textContent = spec.title;
    const note = document.createElement("p");
    note.className = "chart-note";
    note.hidden = true;
    const plot = document.createElement("div");
    plot.className = "chart-plot";
    // the canvas is a picture to assistive technology; the sentence below says what it shows
    plot.setAttribute("role", "img");
    plot.setAttribute("aria-labelledby", cap.id);
    plot.setAttribute("aria-describedby", `${id}-summary`);
    const readoutEl = document.createElement("p");
    readoutEl.className = "chart-readout";
    readoutEl.setAttribute("aria-hidden", "true");
    const legend = document.createElement("div");
    legend.className = "chart-legend";
    legend.setAttribute("role", "group");
    legend.setAttribute("aria-label", `Show or hide lines: ${spec.title}`);
    const summary = document.createElement("p");
    summary.className = "visually-hidden chart-summary";
    summary.id = `${id}-summary`;
    summary.textContent = "Waiting for the first answer.";
    fig.append(cap, note, plot, readoutEl, legend, summary);
    $("#charts-list").append(fig);
    return { spec, fig, plot, note, readout: readoutEl, legend, summary, u: null, lines: [], labels: [], data: [[]], hidden: new Set() };
  }

  function renderChart(chart, result) {
    const lines = chart.spec.lines(result || []);
    const labels = lines.map((l) => l.label);
    chart.data = result ? align(result, lines) : [[], ...lines.map(() => [])];
    if (!chart.u || labels.join("\n") !== chart.labels.join("\n")) {
      chart.lines = lines;
      chart.labels = labels;
      makePlot(chart);
    } else {
      chart.u.setData(chart.data);
    }
    window.halabCharts[chart.spec.name] = { labels, data: chart.data };
    const fig = chart.fig;
    fig.dataset.state = result ? "ok" : "nodata";
    chart.note.hidden = Boolean(result);
    chart.note.textContent = "No data from Prometheus (trying again).";
    // a series' value at the newest samples (the last 3: one may lag behind the others); older is
    // no "latest": a node whose series stopped has no value now
    const last = (label) => {
      const i = labels.indexOf(label);
      const ys = i < 0 ? [] : chart.data[i + 1];
      for (let k = ys.length - 1; k >= Math.max(0, ys.length - 3); k--) if (ys[k] !== null) return ys[k];
      return null;
    };
    chart.summary.textContent = result
      ? `The last ${cfg.charts.windowMinutes} minutes. Latest: ${chart.spec.summary(lines, last) || "nothing reported"}.`
      : "No data from Prometheus.";
    fig.dataset.points = String(chart.data[0].length);
    fig.dataset.updated = String(Date.now());
  }

  // A chart's fixed path: a Prometheus matrix, or null (no data: shown on the chart).
  const readMatrix = (name) =>
    readPrometheus(`${cfg.charts.path}/${encodeURIComponent(name)}`, Math.max(cfg.probeTimeoutMs, cfg.charts.refreshMs));

  // Alertmanager's /api/v2/alerts, through nginx_lb: every alert it holds, newest first.
  async function loadAlerts() {
    let alerts = null;
    try {
      const res = await fetch(cfg.charts.alertsPath, { cache: "no-store", headers: { Accept: "application/json" } });
      const body = await res.json();
      if (res.ok && Array.isArray(body)) alerts = body;
    } catch (_) {
      alerts = null;
    }
    const ul = $("#alerts-list");
    const note = $("#alerts-note");
    ul.textContent = "";
    note.dataset.kind = alerts ? "" : "error";
    note.hidden = Boolean(alerts && alerts.length);
    note.textContent = alerts ? "None." : "Alertmanager does not answer: the active alerts are unknown.";
    if (!alerts) return;
    alerts.sort((a, b) => String(b.startsAt).localeCompare(String(a.startsAt)));
    for (const a of alerts) {
      const labels = a.labels || {};
      const state = (a.status && a.status.state) || "active";
      const li = document.createElement("li");
      li.dataset.alertname = labels.alertname || "";
      li.dataset.severity = labels.severity || "";
      li.dataset.state = state;
      const name = document.createElement("strong");
      name.textContent = labels.alertname || "(no name)";
      li.append(name);
      if (labels.severity) li.append(` (${labels.severity})`);
      const summary = a.annotations && a.annotations.summary;
      if (summary) li.append(`: ${summary}`);
      const since = Date.parse(a.startsAt);
      if (Number.isFinite(since)) {
        const t = document.createElement("time");
        t.dateTime = new Date(since).toISOString();
        t.textContent = fmtClock(since / 1000);
        li.append(". Since ", t, ` (${ago((Date.now() - since) / 1000)})`);
      }
      if (state !== "active") li.append(` [${state}]`);
      li.append(".");
      ul.append(li);
    }
  }

  async function refreshCharts() {
    const answers = new Map(await Promise.all(cfg.charts.names.map(async (n) => [n, await readMatrix(n)])));
    // the marks first: every chart draws them when its data is set
    if (answers.has("states")) renderMarks(answers.get("states"));
    for (const chart of charts.values()) {
      try {
        renderChart(chart, answers.get(chart.spec.source) || null);
      } catch (err) {
        console.error(`chart ${chart.spec.name}:`, err); // one bad answer must not stop the others
      }
    }
  }

  function startCharts() {
    // No uPlot (the role did not copy it, or it failed to load) or no charts in config.json: the
    // panel stays hidden and the rest of the page works as before.
    if (!cfg.charts || !Array.isArray(cfg.charts.names) || typeof uPlot !== "function") return;
    $("#charts").hidden = false;
    $("#charts-ms").textContent = String(cfg.charts.refreshMs);
    $("#charts-window").textContent = String(cfg.charts.windowMinutes);
    for (const spec of CHART_SPECS) if (cfg.charts.names.includes(spec.source)) charts.set(spec.name, buildChart(spec));
    const hasStates = cfg.charts.names.includes("states");
    for (const sel of ["#marks-title", "#marks-note", "#marks"]) $(sel).hidden = !hasStates;
    for (const sel of ["#alerts-title", "#alerts-note", "#alerts-list"]) $(sel).hidden = !cfg.charts.alertsPath;
    let resizing = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        for (const c of charts.values()) {
          const size = plotSize(c);
          if (c.u && (size.width !== c.u.width || size.height !== c.u.height)) c.u.setSize(size);
        }
      }, 150);
    });
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      for (const c of charts.values()) if (c.u) makePlot(c);
    });
    every(cfg.charts.refreshMs, () => Promise.all([refreshCharts(), cfg.charts.alertsPath ? loadAlerts() : null]));
  }

  function every(ms, fn) {
    const loop = async () => {
      if (!document.hidden) {
        try {
          await fn();
        } catch (_) {
          /* shown where it matters; keep polling */
        }
      }
      setTimeout(loop, ms);
    };
    loop();
  }

  async function start() {
    try {
      const res = await fetch("config.json", { cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      cfg = await res.json();
    } catch (err) {
      const p = document.createElement("p");
      p.setAttribute("role", "alert");
      p.className = "error";
      p.textContent = `This page cannot start: config.json (written by the frontend role) did not load (${err.message}).`;
      document.body.prepend(p);
      return;
    }
    $("#poll-ms").textContent = String(cfg.pollMs);
    document.querySelectorAll(".poll-ms").forEach((el) => (el.textContent = String(cfg.pollMs)));
    buildBalancers();
    buildCards();
    renderLocalShares();
    $("#add-form").addEventListener("submit", addTodo);
    cfg.instances.forEach((inst) => pollEvery(() => probe(inst)));
    if (cfg.balancers && cfg.balancers.length) pollEvery(pollBalancers);
    every(cfg.todosRefreshMs, loadTodos);
    if (cfg.sharesPath) every(cfg.sharesRefreshMs, loadShares);
    if (cfg.storage) {
      buildStorage();
      every(cfg.sharesRefreshMs, loadStorage);
    }
    try {
      startCharts();
    } catch (err) {
      // the charts are extra: whatever fails there, the rest of the page keeps working
      $("#charts").hidden = true;
      console.error("charts:", err);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) loadTodos();
    });
  }

  start();
})();
