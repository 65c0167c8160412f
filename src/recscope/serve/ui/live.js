// recscope live view (GET /ui): one shopper's live top-K, drawn by the report's renderer
// (report.js, loaded before this file: showData, drawWhy, hooks, el, clear, ...), with View / Buy /
// Not interested on every item and a catalog search that adds to the history. Every request goes
// to this origin; data strings reach the page only through textContent, setAttribute and .value.
"use strict";

const K = 10;
const SESSION = "recscope.anonymous";  // sessionStorage: the anonymous shopper's history and dismissals
const KEY = "recscope.apiKey";  // sessionStorage: the service's API key, once asked for
const VERBS = { view: "viewed", purchase: "bought", dismiss: "marked not interested:", add: "added" };
const live = {
  user: null,  // the shopper's id; null: the anonymous session
  data: null,  // the last /ui/data answer (the report's data contract + "live")
  action: null,  // the last action: { verb, item: { id, title }, before: [{ id, rank, title }] }
  moves: new Map(),  // item id -> { kind: "new" | "up" | "down", by } against the list before the action
  pending: null,  // what to retry once the API key is given
  controls: false,  // the method, layer and head controls are drawn (once)
  busy: false,
};

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
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
    const key = sessionStorage.getItem(KEY);
    if (key) headers["X-API-Key"] = key;
  }
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
async function load() {
  let data;
  const method = state.method ? `&method=${encodeURIComponent(state.method)}` : "";
  if (live.user !== null) {
    data = await api(`/ui/data?user=${encodeURIComponent(live.user)}&k=${K}${method}`);
  } else {
    const s = session();
    if (!s.history.length) { showEmptySession(); return; }
    data = await api("/ui/data", { history: s.history, exclude: s.dismissed, k: K, method: state.method || null });
  }
  show(data);
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
  state.rec = 0;
  const url = user === null ? "/ui" : `/ui?user=${encodeURIComponent(user)}`;
  window.history.replaceState(null, "", url);
  byId("shopper").value = user === null ? "" : user;
  clear(byId("results"));
  byId("search").value = "";
  say("");
  try { await load(); } catch (e) { fail(e); }
}

function fail(e) {
  say(e instanceof ApiError ? e.message : `something went wrong: ${e.message}`);
}

// ------------------------------------------------------------------ what the shopper does
async function act(verb, item, fromList) {
  if (live.busy) return;
  live.busy = true;
  document.body.setAttribute("aria-busy", "true");
  const before = live.data && live.data.histories.length ? current().recs.map((r) => ({ id: r.id, rank: r.rank, title: r.title })) : [];
  try {
    await record(verb, item, fromList);
    live.action = { verb: fromList ? verb : "add", item: { id: item.id, title: item.title }, before };
    say("");
    await load();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) askKey(() => act(verb, item, fromList));
    else fail(e);
  } finally {
    live.busy = false;
    document.body.removeAttribute("aria-busy");
  }
}

// a known shopper's action is stored (an event; for a listed item, feedback on the list that showed
// it); an anonymous one is kept in this tab
async function record(verb, item, fromList) {
  if (live.user === null) {
    const s = session();
    if (verb === "dismiss") s.dismissed.push(item.id); else s.history.push(item.id);
    saveSession(s);
    return;
  }
  const request = { request_id: live.data ? live.data.live.request_id : "", user_id: live.user, item_id: item.id };
  if (verb === "dismiss") { await api("/feedback", { ...request, action: "dismiss" }); return; }
  await api("/events", { events: [{ event_id: newId(), user_id: live.user, item_id: item.id, event: verb }] });
  if (fromList) await api("/feedback", { ...request, action: verb === "purchase" ? "purchase" : "click" });
}

function askKey(retry) {
  live.pending = retry;
  byId("key-box").hidden = false;
  say("Recording this needs the service's API key: enter it above.", "info");
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
  for (const [label, verb] of [["View", "view"], ["Buy", "purchase"], ["Not interested", "dismiss"]]) {
    const button = el("button", { type: "button", "data-action": verb, "data-item": r.id }, actions, label);
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
    lead.textContent = "Use View, Buy or Not interested on an item, or add one from the catalog: the top " +
      `${K} is recomputed from the new history, and what moved is explained here.`;
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
  lead.textContent = `You ${VERBS[a.verb]} ${quoted(a.item.title)}. ` + (changed
    ? `The top ${after.length}: ${entered.length} new, ${left.length} gone, ${moved.length} moved.`
    : `The top ${after.length} did not change.`);
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
      reason = a.verb === "dismiss" ? "dismissed: never recommended to this shopper again"
        : "now in the history: items already owned are not recommended";
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
      if (push) el("span", { class: "kind" }, row, `${quoted(a.item.title)} ${fmt(push.weight)}`);
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
  return { weight: weights[t], place: 1 + weights.filter((v) => v > weights[t]).length, of: weights.length };
}

function because(r, a) {
  const push = pushOf(r, a);
  if (!push) return "";
  const among = `of the ${push.of} past items the model reads`;
  const place = push.place === 1 ? `the strongest push ${among}` : `the #${push.place} push ${among}`;
  const info = methodInfo(state.method);
  return `${quoted(a.item.title)} pushed it ${push.weight >= 0 ? "up" : "down"} ${fmt(push.weight)}: ${place} ` +
    `(${state.method}${info.target_dependent ? "" : ", the same for every item"}).`;
}

// ------------------------------------------------------------------ the shopper card
function drawShopper() {
  const l = live.data.live;
  const h = current();
  byId("shopper-title").textContent = l.user === null ? "Anonymous shopper" : `Shopper ${closeBidi(l.user)}`;
  const parts = [`${l.events} item${l.events === 1 ? "" : "s"} in the history`];
  if (l.user === null) parts.push("kept in this tab only");
  else if (!l.in_run) parts.push("new since training");
  if (h.length > h.history.length) parts.push(`the model reads the last ${h.history.length}`);
  if (l.unknown.length) parts.push(`${l.unknown.length} not in the trained catalog (skipped)`);
  if (l.dismissed.length) parts.push(`${l.dismissed.length} dismissed (never recommended)`);
  byId("shopper-note").textContent = parts.join(" · ");
  const recent = clear(byId("recent"));
  for (const item of l.recent) {
    const li = el("li", { title: `id ${item.id}` }, recent);
    el("span", {}, li, shorten(item.title, 60));
    const kind = item.source === "run" ? "in training data" : item.event;
    el("span", { class: `tag ${item.event}` }, li, kind);
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
      const add = el("button", { type: "button", "data-item": hit.item_id }, li, "Add to history");
      add.addEventListener("click", () => act("view", { id: hit.item_id, title: hit.title }, false));
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
  } catch (e) { return []; }
}

// ------------------------------------------------------------------ start
hooks.recItem = decorate;
hooks.method = () => { load().catch(fail); };
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

(async () => {
  const params = new URLSearchParams(window.location.search);
  const suggested = await suggestShoppers();
  const chips = byId("suggested");
  for (const u of suggested.slice(0, 6)) {
    const chip = el("button", { type: "button", class: "chip" }, chips, shorten(u, 30));
    chip.addEventListener("click", () => openShopper(u));
  }
  if (params.has("user") && params.get("user")) openShopper(params.get("user"));
  else if (session().history.length) openShopper(null);
})();
