// halab's page: the todos, and a live view of which instance serves and which is sick.
// No framework, no build step. Talks to two kinds of paths on the load balancer:
//   /api/...            the todo API, load balanced (every answer names its instance: X-Instance);
//   /status/...         read-only status NGINX exposes for this page: each instance's health probed
//                       directly (no retry on the other instance), the share of recent
//                       requests from Prometheus (a fixed query, so no PromQL comes from browsers),
//                       each load balancer's VRRP state (keepalived's, asked of that node), and
//                       the Redis nodes' roles and the Sentinels (another fixed query).
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

  async function loadShares() {
    let rates = null;
    try {
      const res = await fetch(cfg.sharesPath, { cache: "no-store", headers: { Accept: "application/json" } });
      const body = await res.json();
      if (res.ok && body.status === "success" && body.data && Array.isArray(body.data.result)) {
        rates = new Map();
        for (const r of body.data.result) {
          const id = r.metric.todo_api_instance || r.metric.instance;
          rates.set(String(id), Number(r.value[1]) || 0);
        }
      }
    } catch (_) {
      rates = null;
    }
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
    let result = null;
    try {
      const res = await fetch(cfg.storage.path, { cache: "no-store", headers: { Accept: "application/json" } });
      const body = await res.json();
      if (res.ok && body.status === "success" && body.data && Array.isArray(body.data.result)) result = body.data.result;
    } catch (_) {
      result = null;
    }
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
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) loadTodos();
    });
  }

  start();
})();
