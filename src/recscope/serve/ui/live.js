// recscope live view (GET /ui): one shopper's live top-K, drawn by the report's renderer
// (report.js, loaded before this file: showData, drawWhy, hooks, el, clear, ...), with buttons on
// every item and a catalog search that adds to the history. Every request goes to this origin;
// data strings reach the page only through textContent, setAttribute and .value.
//
// Read-only unless the service runs with --ui-writes (the page's body says data-writes="on"): the
// buttons then ask "what if they bought it / were not interested" and the page sends GET requests
// only, the simulated actions riding along as add= and hide= and kept in this page. With writes on,
// View, Buy and Not interested post real events and feedback for the shopper shown.
"use strict";

const K = 10;
const WRITES = document.body.dataset.writes === "on";
const MAX_ITEMS = 100;  // items a GET carries as add= or hide= (serve/routes/ui.py): the newest ones
const SESSION = "recscope.anonymous";  // sessionStorage: the anonymous shopper's history and dismissals
const KEY = "recscope.apiKey";  // sessionStorage: the service's API key, once asked for
const VERBS = { view: "viewed", purchase: "bought", dismiss: "marked not interested:", add: "added" };
const WHAT_IF = { view: "viewed", purchase: "bought", dismiss: "were not interested in", add: "bought" };
const live = {
  user: null,  // the shopper's id; null: the anonymous session
  data: null,  // the last /ui/data answer (the report's data contract + "live")
  // the last action: { verb, item: { id, title }, before: [{ id, rank, title }], stored }
  action: null,
  sim: { add: [], hide: [] },  // a real shopper's simulated purchases and dismissals: this page only
  moves: new Map(),  // item id -> { kind: "new" | "up" | "down", by } against the list before the action
  pending: null,  // what to retry once the API key is given
  controls: false,  // the method, layer and head controls are drawn (once)
  busy: false,
  loads: 0,  // loads asked for: an answer to an older one is dropped (the shopper or method changed since)
};

// whether the buttons act as the shopper (stored) or ask "what if" (nothing leaves the page)
function stores() { return WRITES && live.user !== null; }

function byId(id) { return document.getElementById(id); }
function say(text, kind) {
  const node = byId("status");
  node.textContent = text || "";
  node.className = "status" + (kind === "info" ? " info" : "");
  node.hidden = !text;
}
// quoted and isolated (FSI ... PDI, its own direction controls closed first): a title's RTL ends with it
function quoted(title) { return `“\u2068${closeBidi(shorten(title, 60))}\u2069”`; }

// ------------------------------------------------------------------ the service
class ApiError extends Error {
  constructor(status, body) {
    let text = `the service answered ${status}`;
    if (body && body.error) text = body.error + (body.fix ? ` (${body.fix})` : "");
    else if (body && Array.isArray(body.detail)) text = body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    super(text);
    this.status = status;
  }
}

async function api(path, body) {
  const headers = { Accept: "application/json" };
  const init = { method: body === undefined ? "GET" : "POST", headers, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    if (!WRITES) throw new Error("this page is read-only: it sends no write request");  // never reached: a guard
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const key = sessionStorage.getItem(KEY);  // reads of shoppers' data may need it too (--read-key-env)
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, init);
  let answer = null;
  try { answer = await response.json(); } catch (e) { answer = null; }
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "ui-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION) || "null");
    if (s && Array.isArray(s.history) && Array.isArray(s.dismissed)) return s;
  } catch (e) { /* a damaged session starts again */ }
  return { history: [], dismissed: [] };
}
function saveSession(s) { sessionStorage.setItem(SESSION, JSON.stringify(s)); }

// ------------------------------------------------------------------ loading a shopper
// one GET: the shopper's live history with the simulated actions, or the anonymous session's
async function load() {
  const token = ++live.loads;
  const params = new URLSearchParams({ k: String(K) });
  if (state.method) params.set("method", state.method);
  let sim = live.sim;
  if (live.user !== null) params.set("user", live.user);
  else {
    const s = session();
    if (!s.history.length) { showEmptySession(); return; }
    sim = { add: s.history, hide: s.dismissed };
  }
  for (const id of sim.add.slice(-MAX_ITEMS)) params.append("add", id);
  for (const id of sim.hide.slice(-MAX_ITEMS)) params.append("hide", id);
  const data = await api(`/ui/data?${params}`);
  if (token === live.loads) show(data);
}

// the page is aria-busy (its buttons inert) while ``work`` runs
async function busyWhile(work) {
  live.busy = true;
  document.body.setAttribute("aria-busy", "true");
  try { await work(); } finally {
    live.busy = false;
    document.body.removeAttribute("aria-busy");
  }
}

function show(data) {
  showData(data, data.live.method);
  live.data = data;
  if (!live.controls) { drawHeader(); drawControls(); live.controls = true; }
  byId("method").value = state.method;
  byId("version").textContent = `model ${data.live.model_version}`;
  byId("intro").hidden = true;
  byId("live").hidden = false;
  byId("why-view").hidden = false;
  drawChanges();
  const recs = current().recs;
  state.rec = Math.min(state.rec, Math.max(recs.length - 1, 0));
  drawShopper();
  drawWhy();
  loadVersions(live.user).catch(fail);
}

// the "Model versions" panel: every version with its helpful shares and, for a real shopper, what
// the serving version changed against its parent (GET /ui/versions; read-only)
async function loadVersions(user) {
  const params = new URLSearchParams({ k: String(K) });
  if (state.method) params.set("method", state.method);
  if (user !== null) params.set("user", user);
  const token = live.loads;
  const v = await api(`/ui/versions?${params}`);
  if (token !== live.loads || user !== live.user) return;  // the shopper or method changed since
  drawVersions(v, 0);
  if (user === null) byId("movers-lead").textContent = "Open a shopper by id to see what the versions changed for them.";
  byId("versions-view").hidden = false;
}

function showEmptySession() {
  byId("intro").hidden = true;
  byId("live").hidden = false;
  byId("why-view").hidden = true;
  byId("shopper-title").textContent = "Anonymous shopper";
  byId("shopper-note").textContent = "A new session with an empty history: add an item from the catalog below to start.";
  clear(byId("recent"));
  live.data = null;
  live.action = null;
  drawChanges();
  byId("search").focus();
}

async function openShopper(user) {
  live.user = user;
  live.action = null;
  live.sim = { add: [], hide: [] };
  state.rec = 0;
  const url = user === null ? "/ui" : `/ui?user=${encodeURIComponent(user)}`;
  window.history.replaceState(null, "", url);
  byId("shopper").value = user === null ? "" : user;
  clear(byId("results"));
  byId("search").value = "";
  say("");
  try { await busyWhile(load); } catch (e) {
    if (e instanceof ApiError && e.status === 401) askKey(() => openShopper(user), false);
    else fail(e);
  }
}

function fail(e) {
  say(e instanceof ApiError ? e.message : `something went wrong: ${e.message}`);
}

// ------------------------------------------------------------------ what the shopper does
async function act(verb, item, fromList) {
  if (live.busy) return;
  await busyWhile(() => acting(verb, item, fromList));
}

async function acting(verb, item, fromList) {
  const before = live.data && live.data.histories.length ? current().recs.map((r) => ({ id: r.id, rank: r.rank, title: r.title })) : [];
  const stored = stores();
  const undo = { sim: { add: [...live.sim.add], hide: [...live.sim.hide] }, session: session() };
  try {
    if (stored) await record(verb, item, fromList);
    else simulate(verb, item);
    live.action = { verb: fromList ? verb : "add", item: { id: item.id, title: item.title }, before, stored };
    say("");
    await load();
  } catch (e) {
    if (!stored) { live.sim = undo.sim; if (live.user === null) saveSession(undo.session); }
    if (e instanceof ApiError && e.status === 401) askKey(() => act(verb, item, fromList), stored);
    else fail(e);
  }
}

// not stored: a real shopper's "what if" is kept in this page, an anonymous session in this tab
function simulate(verb, item) {
  if (live.user === null) {
    const s = session();
    if (verb === "dismiss") s.dismissed.push(item.id); else s.history.push(item.id);
    saveSession(s);
    return;
  }
  if (verb === "dismiss") live.sim.hide.push(item.id); else live.sim.add.push(item.id);
}

function resetSimulation() {
  live.sim = { add: [], hide: [] };
  live.action = null;
  say("");
  busyWhile(load).catch(fail);
}

// with writes on, a known shopper's action is stored: an event and, for a listed item, feedback
// on the list that showed it
async function record(verb, item, fromList) {
  const request = { request_id: live.data ? live.data.live.request_id : "", user_id: live.user, item_id: item.id };
  if (verb === "dismiss") { await api("/feedback", { ...request, action: "dismiss" }); return; }
  await api("/events", { events: [{ event_id: newId(), user_id: live.user, item_id: item.id, event: verb }] });
  if (fromList) await api("/feedback", { ...request, action: verb === "purchase" ? "purchase" : "click" });
}

function askKey(retry, writing) {
  live.pending = retry;
  byId("key-box").hidden = false;
  say(writing ? "Recording this needs the service's API key: enter it above."
    : "Showing shoppers' data needs the service's key (its read key or API key): enter it above.", "info");
  byId("api-key").focus();
}

function useKey() {
  const key = byId("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  byId("api-key").value = "";
  byId("key-box").hidden = true;
  const retry = live.pending;
  live.pending = null;
  say("");
  if (retry) retry();
}

// the buttons under each recommended item (called by report.js's drawWhy for every row)
function decorate(li, r) {
  const move = live.moves.get(r.id);
  if (move) {
    if (move.kind === "new") li.classList.add("entered");
    const text = move.kind === "new" ? "new" : move.kind === "up" ? `▲ ${move.by}` : `▼ ${move.by}`;
    el("span", { class: `move ${move.kind}`, title: "since the last action" }, li.querySelector(".head"), text);
  }
  const actions = el("div", { class: "actions" }, li);
  const buttons = stores() ? [
    ["View", "view", "store a view of this item by this shopper"],
    ["Buy", "purchase", "store a purchase of this item by this shopper"],
    ["Not interested", "dismiss", "store a dismissal: never recommended to this shopper again"],
  ] : [
    ["What if they buy it?", "purchase", "simulate the purchase: nothing is stored"],
    ["What if not interested?", "dismiss", "simulate the dismissal: nothing is stored"],
  ];
  if (!WRITES && live.user === null) buttons.forEach((b) => { b[2] = b[2].replace("nothing is stored", "kept in this tab only"); });
  if (WRITES && live.user === null) {  // an anonymous session is this tab's own: its buttons build it
    buttons.splice(0, buttons.length, ["Buy", "purchase", "add it to this tab's history (not stored)"],
      ["Not interested", "dismiss", "hide it in this tab (not stored)"]);
  }
  for (const [label, verb, help] of buttons) {
    const button = el("button", { type: "button", "data-action": verb, "data-item": r.id, title: help }, actions, label);
    button.addEventListener("click", (e) => { e.stopPropagation(); act(verb, r, true); });
  }
}

// ------------------------------------------------------------------ what changed, and why
function drawChanges() {
  const list = clear(byId("changes"));
  const lead = byId("changes-lead");
  live.moves = new Map();
  const a = live.action;
  if (!a || !live.data) {
    lead.textContent = (stores() ? "Use View, Buy or Not interested on an item, or add one from the catalog: "
      : "Ask “what if they buy it?” or “what if not interested?” of an item, or of one from the catalog: ") +
      `the top ${K} is recomputed from the new history, and what moved is explained here.`;
    return;
  }
  const after = current().recs;
  const was = new Map(a.before.map((r) => [r.id, r.rank]));
  const now = new Map(after.map((r) => [r.id, r.rank]));
  const entered = after.filter((r) => !was.has(r.id));
  const left = a.before.filter((r) => !now.has(r.id));
  const moved = after.filter((r) => was.has(r.id) && was.get(r.id) !== r.rank);
  entered.forEach((r) => live.moves.set(r.id, { kind: "new" }));
  moved.forEach((r) => {
    const by = was.get(r.id) - r.rank;
    live.moves.set(r.id, { kind: by > 0 ? "up" : "down", by: Math.abs(by) });
  });
  const changed = entered.length || left.length || moved.length;
  if (WRITES) {  // acting as the shopper (an anonymous one is this tab's own: nothing to store)
    lead.textContent = `You ${VERBS[a.verb]} ${quoted(a.item.title)}. ` + (changed
      ? `The top ${after.length}: ${entered.length} new, ${left.length} gone, ${moved.length} moved.`
      : `The top ${after.length} did not change.`) + (a.stored ? "" : " Kept in this tab only.");
  } else {
    const who = live.user === null ? "this anonymous shopper" : `shopper ${closeBidi(live.user)}`;
    lead.textContent = `What if ${who} ${WHAT_IF[a.verb]} ${quoted(a.item.title)}? ` + (changed
      ? `The top ${after.length} would have ${entered.length} new, ${left.length} gone, ${moved.length} moved.`
      : `The top ${after.length} would not change.`) +
      (live.user === null ? " Kept in this tab only." : " Simulated: nothing was stored.");
  }
  for (const r of entered) {
    const li = el("li", { class: "entered", "data-item": r.id }, list);
    el("div", {}, li, `New at #${r.rank}: ${quoted(r.title)}`);
    const why = because(r, a);
    if (why) el("div", { class: "because" }, li, why);
    // the item's own sentence cites a past item only above a quarter of all the push (see
    // explain/text.py), so it may name none even where the purchase pushed hard: say whose words
    el("div", { class: "sentence-small" }, li, `Its explanation: ${explained().sentences[after.indexOf(r)]}`);
  }
  for (const r of left) {
    const li = el("li", { class: "left", "data-item": r.id }, list);
    let reason = "pushed below the top " + after.length;
    if (r.id === a.item.id) {
      reason = a.verb !== "dismiss" ? "now in the history: items already owned are not recommended"
        : a.stored ? "dismissed: never recommended to this shopper again"
          : live.user === null ? "dismissed in this tab" : "hidden, as a dismissal would hide it";
    }
    el("div", {}, li, `Gone from #${r.rank}: ${quoted(r.title)}`);
    el("div", { class: "sentence-small" }, li, reason);
  }
  if (moved.length) {
    const li = el("li", { class: "moved" }, list);
    el("div", {}, li, "Moved:");
    for (const r of moved) {
      const row = el("div", { class: "sentence-small", "data-item": r.id }, li, `#${was.get(r.id)} → #${r.rank} ${quoted(r.title)}`);
      const push = pushOf(r, a);
      if (push) {
        el("span", { class: "kind", title: `${fmt(push.weight, 3)} in the model's score units` }, row,
          `· ${quoted(a.item.title)}: ${share(push.weight, push.total)} of what moved it`);
      }
    }
  }
  // open the first new item's explanation: its column, sentence and counterfactual
  if (entered.length) state.rec = after.indexOf(entered[0]);
}

// how much the item just added to the history pushed a recommended item: its weight, and its
// place among the past items the model reads (null when the action added nothing to the history)
function pushOf(r, a) {
  if (a.verb === "dismiss") return null;
  const h = current();
  let t = -1;
  h.history.forEach((item, i) => { if (item.id === a.item.id) t = i; });
  if (t < 0) return null;
  const weights = explained().weights[h.recs.indexOf(r)];
  return { weight: weights[t], total: absSum(weights), place: 1 + weights.filter((v) => v > weights[t]).length,
    of: weights.length };
}

// the push of the item just added, as its share of all that moved the recommended item (the heatmap's numbers)
function because(r, a) {
  const push = pushOf(r, a);
  if (!push) return "";
  const among = `of the ${push.of} past items the model reads`;
  const place = push.place === 1 ? `the strongest push ${among}` : `the #${push.place} push ${among}`;
  const info = methodInfo(state.method);
  return `${quoted(a.item.title)} pushed it ${push.weight >= 0 ? "up" : "down"} (${share(push.weight, push.total)} ` +
    `of what moved it): ${place} (${state.method}${info.target_dependent ? "" : ", the same for every item"}).`;
}

// ------------------------------------------------------------------ the shopper card
function drawShopper() {
  const l = live.data.live;
  const h = current();
  byId("shopper-title").textContent = l.user === null ? "Anonymous shopper" : `Shopper ${closeBidi(l.user)}`;
  const sim = l.simulated;
  const simulated = sim ? sim.add.length : 0;
  const parts = [`${l.events} item${l.events === 1 ? "" : "s"} in the history` +
    (simulated ? ` (${simulated} simulated)` : "")];
  if (l.user === null) parts.push("kept in this tab only");
  else if (!l.in_run) parts.push("new since training");
  if (h.length > h.history.length) parts.push(`the model reads the last ${h.history.length}`);
  if (l.unknown.length) parts.push(`${l.unknown.length} not in the trained catalog (skipped)`);
  if (l.dismissed.length) parts.push(`${l.dismissed.length} dismissed (never recommended)`);
  byId("shopper-note").textContent = parts.join(" · ");
  const simulating = sim && (sim.add.length || sim.hide.length);
  byId("simulation").hidden = !simulating;
  if (simulating) {
    const what = [];
    if (sim.add.length) what.push(`${sim.add.length} purchase${sim.add.length === 1 ? "" : "s"}`);
    if (sim.hide.length) what.push(`${sim.hide.length} dismissal${sim.hide.length === 1 ? "" : "s"}`);
    byId("simulation-note").textContent = `Simulating ${what.join(" and ")} (nothing is stored): this is what ` +
      `shopper ${closeBidi(l.user)} would be recommended, not what they are.`;
  }
  const recent = clear(byId("recent"));
  for (const item of l.recent) {
    const li = el("li", { title: `id ${item.id}` }, recent);
    el("span", {}, li, shorten(item.title, 60));
    const what = item.source === "request" && l.user !== null;  // a simulated purchase
    const kind = item.source === "run" ? "in training data" : what ? "what if: bought" : item.event;
    el("span", { class: `tag ${what ? "simulated" : item.event}` }, li, kind);
  }
}

// ------------------------------------------------------------------ search boxes
function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

async function searchItems() {
  const q = byId("search").value.trim();
  const list = clear(byId("results"));
  if (!q) return;
  try {
    const hits = await api(`/ui/items?q=${encodeURIComponent(q)}&limit=12`);
    if (byId("search").value.trim() !== q) return;  // a newer query is on its way
    clear(list);
    if (!hits.length) el("li", { class: "empty" }, list, "no item of the catalog matches");
    for (const hit of hits) {
      const li = el("li", {}, list);
      el("span", { class: "rtitle", title: hit.title }, li, hit.title);
      el("span", { class: "rid" }, li, hit.item_id);
      const label = stores() || (WRITES && live.user === null) ? "Add to history" : "What if they buy it?";
      const add = el("button", { type: "button", "data-item": hit.item_id }, li, label);
      add.addEventListener("click", () => act(stores() ? "view" : "purchase", { id: hit.item_id, title: hit.title }, false));
    }
  } catch (e) { fail(e); }
}

async function suggestShoppers() {
  const q = byId("shopper").value.trim();
  try {
    const users = await api(`/ui/shoppers?q=${encodeURIComponent(q)}&limit=12`);
    const list = clear(byId("shoppers"));
    for (const u of users) el("option", { value: u }, list);
    return users;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && !live.pending) askKey(() => start(), false);
    return [];
  }
}

// ------------------------------------------------------------------ start
hooks.recItem = decorate;
hooks.method = () => { busyWhile(load).catch(fail); };
byId("shopper-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = byId("shopper").value.trim();
  if (user) openShopper(user);
});
byId("shopper").addEventListener("input", debounce(suggestShoppers, 200));
byId("anonymous").addEventListener("click", () => { saveSession({ history: [], dismissed: [] }); openShopper(null); });
byId("key-use").addEventListener("click", useKey);
byId("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); useKey(); } });
byId("search").addEventListener("input", debounce(searchItems, 200));
byId("reset-simulation").addEventListener("click", resetSimulation);

async function start() {
  const params = new URLSearchParams(window.location.search);
  const suggested = await suggestShoppers();
  const chips = clear(byId("suggested"));
  for (const u of suggested.slice(0, 6)) {
    const chip = el("button", { type: "button", class: "chip" }, chips, shorten(u, 30));
    chip.addEventListener("click", () => openShopper(u));
  }
  if (params.has("user") && params.get("user")) openShopper(params.get("user"));
  else if (session().history.length) openShopper(null);
}
start();
