// recscope report: draws the report's data contract as SVG. Data strings reach the page only
// through textContent and setAttribute (never innerHTML), so a title cannot become markup.
// The static report boots from the JSON in #data (bottom of this file); the live page
// (recscope/serve/ui/live.js, loaded after this file) calls showData() with what it fetched
// and sets the hooks.
"use strict";

let DATA = null;
const SVG_NS = "http://www.w3.org/2000/svg";
const UP = [43, 108, 176];
const DOWN = [197, 48, 48];
const FIELD_COLOURS = { brand: "#1f77b4", category: "#ff7f0e", price: "#2ca02c", text: "#d62728", id: "#9467bd" };
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"];
const state = { history: 0, method: "", rec: 0, layer: 0, head: "mean" };
// what a page around the renderer adds
const hooks = {
  recItem: null,  // (li, rec, j): called after each recommended item's row is drawn
  method: () => drawWhy(),  // the method control changed (state.method holds the new one)
};

function showData(data, method) {
  if (DATA === null) state.layer = data.layers - 1;  // the first data opens on the last layer
  DATA = data;
  state.method = method || data.default_method;
}

// ------------------------------------------------------------------ small helpers
// A direction control a data string leaves open (an RLO or RLI in a title) would reorder all the
// text after it, past the element's own isolation: close them where the string ends.
function closeBidi(text) {
  text = String(text);
  let embeddings = 0, isolates = 0;
  for (const ch of text) {
    if ("\u202a\u202b\u202d\u202e".includes(ch)) embeddings++;
    else if (ch === "\u202c") embeddings = Math.max(0, embeddings - 1);
    else if ("\u2066\u2067\u2068".includes(ch)) isolates++;
    else if (ch === "\u2069") isolates = Math.max(0, isolates - 1);
  }
  return embeddings + isolates ? text + "\u2069".repeat(isolates) + "\u202c".repeat(embeddings) : text;
}
function el(tag, attrs, parent, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = closeBidi(text);
  if (parent) parent.appendChild(node);
  return node;
}
function svgEl(tag, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = closeBidi(text);
  if (parent) parent.appendChild(node);
  return node;
}
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
function shorten(text, n) { text = String(text); return text.length > n ? text.slice(0, n - 1) + "…" : text; }
function fmt(x, digits) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  const d = digits === undefined ? 2 : digits;
  const s = Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(d);
  return x > 0 ? "+" + s : s;
}
function plain(x, digits) { return x === null || x === undefined || !isFinite(x) ? "–" : x.toFixed(digits === undefined ? 3 : digits); }
function pct(x) { return x === null || x === undefined || !isFinite(x) ? "–" : (100 * x).toFixed(1) + "%"; }
// a weight as its share of ``total`` (the sum of |weights| it is one of), signed: "+34%", "−5%";
// "<1%" (its colour or bar says which way) or "0%"
function share(w, total) {
  if (w === null || w === undefined || !isFinite(w) || !(total > 0)) return "–";
  const p = (100 * Math.abs(w)) / total;
  if (p < 0.5) return p > 0 ? "<1%" : "0%";
  return (w < 0 ? "−" : "+") + `${Math.round(p)}%`;
}
function absSum(values) { return values.reduce((s, v) => s + (v === null || !isFinite(v) ? 0 : Math.abs(v)), 0); }
function withTitle(node, text) { svgEl("title", {}, node, text); return node; }
function diverging(v, limit) {
  const t = Math.max(-1, Math.min(1, limit > 0 ? v / limit : 0));
  const c = t >= 0 ? UP : DOWN;
  const a = Math.abs(t);
  const mix = c.map((ch) => Math.round(255 + (ch - 255) * a));
  return { fill: `rgb(${mix.join(",")})`, ink: a > 0.55 ? "#ffffff" : "#1f2933" };
}
function textWidth(n) { return 6.2 * n; }  // 11px sans-serif, roughly

// ------------------------------------------------------------------ current selection
function current() { return DATA.histories[state.history]; }
function explained() { return current().explanations[state.method]; }
function methodInfo(name) { return DATA.methods.find((m) => m.name === name); }
function attrText(item) {
  return Object.entries(item.attrs || {}).map(([k, v]) => `${k}: ${v.join(", ")}`).join(" · ");
}
function itemTooltip(item) {
  const attrs = attrText(item);
  return `${item.title}\nid ${item.id}${attrs ? "\n" + attrs : ""}`;
}

// ------------------------------------------------------------------ header and tabs
function drawHeader() {
  const r = DATA.run;
  const parts = [`data ${r.data}`, `${r.users.toLocaleString()} users`, `${r.items.toLocaleString()} items`,
    `${r.events.toLocaleString()} events`];
  if (r.test) parts.push(`test NDCG@10 ${plain(r.test["NDCG@10"], 4)}, HR@10 ${plain(r.test["HR@10"], 4)}`);
  parts.push(`default method: ${DATA.default_method}`);
  document.getElementById("run-summary").textContent = parts.join(" · ");
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-selected", String(b === button));
      for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== "tab-" + button.dataset.tab;
    });
  }
}

function drawUsers() {
  const user = document.getElementById("user");
  DATA.histories.forEach((h, i) => el("option", { value: String(i) }, user, `${shorten(h.label, 60)} (${h.length} items)`));
  user.addEventListener("change", () => { state.history = Number(user.value); state.rec = 0; drawWhy(); });
}

function drawControls() {
  const method = document.getElementById("method");
  for (const m of DATA.methods) {
    const label = m.name + (m.name !== DATA.default_method ? "" : DATA.trust ? " (default: most faithful here)" : " (default)");
    el("option", { value: m.name }, method, label);
  }
  method.value = state.method;
  method.addEventListener("change", () => { state.method = method.value; hooks.method(); });
  const layer = document.getElementById("layer");
  for (let l = 0; l < DATA.layers; l++) el("option", { value: String(l) }, layer, `layer ${l + 1} of ${DATA.layers}`);
  layer.value = String(state.layer);
  layer.addEventListener("change", () => { state.layer = Number(layer.value); drawAttention(); });
  const head = document.getElementById("head");
  el("option", { value: "mean" }, head, "mean of heads");
  for (let h = 0; h < DATA.heads; h++) el("option", { value: String(h) }, head, headName(h));
  head.addEventListener("change", () => { state.head = head.value; drawAttention(); });
}

// ------------------------------------------------------------------ the "why" tab
function drawWhy() {
  const h = current();
  const info = methodInfo(state.method);
  const note = document.getElementById("method-note");
  note.textContent = info.description + (info.target_dependent ? "" : " — the same for every recommended item");
  drawTrust();
  document.getElementById("recs-title").textContent = `Top ${h.recs.length} for ${h.label}`;
  const caseNote = document.getElementById("case-note");
  caseNote.textContent = h.note || "";
  caseNote.hidden = !h.note;
  const list = clear(document.getElementById("recs"));
  if (!h.recs.length) el("li", { class: "empty" }, list, "nothing left to recommend");
  h.recs.forEach((r, j) => {
    const li = el("li", { "aria-selected": String(j === state.rec), "data-rank": String(r.rank), tabindex: "0" }, list);
    const head = el("div", { class: "head" }, li);
    el("span", { class: "rank" }, head, `#${r.rank}`);
    el("span", { class: "title", title: itemTooltip(r) }, head, r.title);
    el("span", { class: "score", title: "the model's score, in its own units: only the order matters" }, head,
      plain(r.score, 2));
    el("div", { class: "why" }, li, explained().sentences[j]);
    const pick = () => { state.rec = j; drawWhy(); };
    li.addEventListener("click", pick);
    li.addEventListener("keydown", (e) => {
      if (e.target === li && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); pick(); }
    });
    if (hooks.recItem) hooks.recItem(li, r, j);
  });
  drawDetail();
  drawHeatmap();
  drawAttention();
}

function drawDetail() {
  const h = current();
  const r = h.recs[state.rec];
  const title = document.getElementById("detail-title");
  const sentence = document.getElementById("sentence");
  const cfNode = document.getElementById("counterfactual");
  if (!r) { title.textContent = ""; sentence.textContent = ""; cfNode.textContent = ""; return; }
  const e = explained();
  const cf = e.counterfactuals[state.rec];
  title.textContent = `Why #${r.rank} “${shorten(r.title, 70)}”`;
  title.setAttribute("title", itemTooltip(r));
  sentence.textContent = e.sentences[state.rec];
  cfNode.textContent = counterfactualText(cf, h);
  cfNode.hidden = !cf;
  if (cf && cf.found) {
    cfNode.setAttribute("title", `its score ${plain(cf.score_before, 2)} → ${plain(cf.score_after, 2)} without them, ` +
      `against a cut-off of ${plain(cf.cutoff, 2)} (the model's score units)`);
  } else cfNode.removeAttribute("title");
  // the history bars come from the method the sentence was built with (attention and rollout: Shapley)
  const by = e.attributes_method;
  document.getElementById("attributes-note").textContent = `Each history token split into its fields (id, ` +
    `brand, category, price, text, ...), by ${by}` + (by === state.method ? "" : ` (${state.method} has no notion ` +
    `of fields, so these bars come from ${by})`) + ". The sentence names a shared attribute only where both its bars push up.";
  drawBars(document.getElementById("bars-history"), h.attributes[by][state.rec], 8);
  drawBars(document.getElementById("bars-candidate"), h.candidate_attributes[state.rec], 8);
  drawWords((e.words || [])[state.rec]);
}

// each weighed title as its words, coloured by weight (blue: taking the word out lowers the score)
function drawWords(words) {
  const block = document.getElementById("words-block");
  const box = clear(document.getElementById("words"));
  block.hidden = !words;
  if (!words) return;
  document.getElementById("words-note").textContent = `Text carries ${pct(words.text_share)} of the positive ` +
    "field weight here. A word's weight is the item's score drop when that word is taken out of the title and " +
    "the title is encoded again.";
  words.texts.forEach((t) => {
    const row = el("p", { class: "words" }, box);
    el("span", { class: "words-label" }, row, t.index === null ? "its title: " : `“${shorten(t.title, 40)}”: `);
    t.words.forEach(([word, w]) => {
      const colour = diverging(w === null ? 0 : w, words.limit);
      el("span", { class: "word", style: `background:${colour.fill};color:${colour.ink}`,
        title: `${word}: ${fmt(w, 3)}` }, row, word);
      row.appendChild(document.createTextNode(" "));
    });
  });
}

function counterfactualText(cf, h) {
  if (!cf) return "";
  if (!cf.found) {
    return `Removing past items one by one (most pushing first) never dropped it out of the top ${cf.k}` +
      (cf.new_rank ? `; the best found still ranks it #${cf.new_rank}.` : ".");
  }
  const names = cf.removed.map((i) => `“${shorten(h.history[i].title, 50)}”`);
  const shown = names.length > 3 ? `${names.slice(0, 3).join(", ")} and ${names.length - 3} more` : names.join(" and ");
  if (cf.kind === "others_rose") {
    return `Removing ${shown} drops it to #${cf.new_rank}, but not because ${names.length > 1 ? "they" : "it"} ` +
      "carried it: its own score stays above the cut-off, other items rose past it. Checked by re-ranking.";
  }
  return `Without ${shown}, it would drop out of the top ${cf.k} (to #${cf.new_rank}), so ` +
    `${names.length > 1 ? "they are" : "it is"} what keeps it there. Checked by re-ranking.`;
}

// how far the method's weights can be trusted: the run's faithfulness measurements in words, the
// numbers themselves one click away (DATA.trust, from recscope/viz/plain.py)
function drawTrust() {
  const t = DATA.trust;
  const m = t ? t.methods[state.method] : null;
  const lead = document.getElementById("trust-lead");
  const numbers = document.getElementById("trust-numbers");
  if (!lead) return;
  numbers.hidden = !m;
  if (!m) {
    lead.textContent = t ? `${state.method} was not measured for this run.` :
      "Not measured for this run yet: `recscope explain-eval RUN` measures every method.";
    return;
  }
  lead.textContent = [m.lead, m.planted].filter(Boolean).join(" ");
  const table = clear(document.getElementById("trust-table"));
  for (const [label, value] of m.numbers) {
    const tr = el("tr", {}, table);
    el("th", {}, tr, label);
    el("td", {}, tr, value);
  }
  document.getElementById("trust-where").textContent = `Measured by recscope explain-eval over ${t.measured_on}.`;
}

// one horizontal bar per [label, weight]: blue pushes up, red down; the number beside a bar is
// its share of all the bars' push (the weight itself is in its tooltip)
function drawBars(container, pairs, top) {
  clear(container);
  const all = (pairs || []).filter((p) => p[1] !== null);
  const rows = all.slice(0, top);
  if (!rows.length) { el("p", { class: "empty" }, container, "no attributes"); return; }
  const total = absSum(all.map((p) => p[1]));
  const labelW = 230, barW = 260, rowH = 20, pad = 52;
  const limit = Math.max(...rows.map((p) => Math.abs(p[1]))) || 1;
  const width = labelW + barW + 2 * pad, height = rows.length * rowH + 8;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
  const zero = labelW + pad + barW / 2;
  svgEl("line", { x1: zero, x2: zero, y1: 0, y2: height, stroke: "#9aa5b1" }, svg);
  rows.forEach(([label, w], i) => {
    const y = 4 + i * rowH;
    const len = (Math.abs(w) / limit) * (barW / 2);
    const bar = svgEl("rect", { x: w >= 0 ? zero : zero - len, y: y + 3, width: Math.max(len, 0.5), height: rowH - 7,
      fill: w >= 0 ? "rgb(43,108,176)" : "rgb(197,48,48)" }, svg);
    withTitle(bar, `${label}: ${share(w, total)} of the push (${fmt(w, 3)} in the model's score units)`);
    withTitle(svgEl("text", { x: labelW - 4, y: y + rowH / 2 + 4, "text-anchor": "end" }, svg, shorten(label, 34)), label);
    svgEl("text", { x: w >= 0 ? zero + len + 4 : zero - len - 4, y: y + rowH / 2 + 4,
      "text-anchor": w >= 0 ? "start" : "end", class: "muted" }, svg, share(w, total));
  });
}

// rows x columns of coloured cells with values; one column may be selected
function drawGrid(container, opts) {
  clear(container);
  const { rows, cols, value, selected, onSelect, diverge, rowMarks } = opts;
  if (!rows.length || !cols.length) { el("p", { class: "empty" }, container, "nothing to show"); return; }
  const cellW = opts.cellW || 54, cellH = rows.length > 30 ? 16 : 20;
  const labelChars = 40, labelW = textWidth(labelChars) + 34;
  const colChars = 24, top = Math.min(170, textWidth(colChars) * 0.72 + 24);
  const width = Math.max(labelW + cols.length * cellW + top, labelW + 480), height = top + rows.length * cellH + 30;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
  const limit = opts.limit > 0 ? opts.limit : 1;  // from the data contract: the PNG figures use the same
  cols.forEach((c, j) => {
    const x = labelW + j * cellW + cellW / 2;
    const t = svgEl("text", { x, y: top - 6, transform: `rotate(-40 ${x} ${top - 6})`,
      "font-weight": j === selected ? "700" : "400", cursor: onSelect ? "pointer" : "default" }, svg, shorten(c.label, colChars));
    withTitle(t, c.tooltip || c.label);
    if (onSelect) t.addEventListener("click", () => onSelect(j));
  });
  rows.forEach((r, i) => {
    const y = top + i * cellH;
    const mark = rowMarks && rowMarks.has(i);
    const t = svgEl("text", { x: labelW - 8, y: y + cellH / 2 + 4, "text-anchor": "end",
      "font-weight": mark ? "700" : "400" }, svg, `${mark ? "✂ " : ""}${shorten(r.label, labelChars)}`);
    withTitle(t, r.tooltip || r.label);
    cols.forEach((c, j) => {
      const v = value(i, j);
      const colour = diverge ? diverging(v, limit) : sequential(v, limit);
      const cell = svgEl("rect", { x: labelW + j * cellW, y, width: cellW - 1, height: cellH - 1, fill: colour.fill,
        "data-row": String(i), "data-col": String(j), cursor: onSelect ? "pointer" : "default" }, svg);
      withTitle(cell, `${r.label}\n→ ${c.label}\n${opts.tooltip ? opts.tooltip(i, j, v) : diverge ? fmt(v, 3) : plain(v, 3)}`);
      if (onSelect) cell.addEventListener("click", () => onSelect(j));
      if (cellW >= 36) {
        svgEl("text", { x: labelW + j * cellW + cellW / 2, y: y + cellH / 2 + 4, "text-anchor": "middle",
          fill: colour.ink, "font-size": cellH < 20 ? "9.5" : "10.5", "pointer-events": "none" },
        svg, opts.text ? opts.text(i, j, v) : diverge ? fmt(v) : plain(v, limit < 0.1 ? 3 : 2));
      }
    });
  });
  if (selected !== null && selected !== undefined && selected < cols.length) {
    svgEl("rect", { x: labelW + selected * cellW - 1, y: top - 1, width: cellW + 1, height: rows.length * cellH + 1,
      fill: "none", stroke: "#1f2933", "stroke-width": 2.5, class: "selected-column",
      "data-col": String(selected), "pointer-events": "none" }, svg);
  }
  const legend = opts.legend;
  if (legend) svgEl("text", { x: labelW, y: top + rows.length * cellH + 20, class: "muted" }, svg, legend(limit));
}

function sequential(v, limit) {
  const a = Math.max(0, Math.min(1, limit > 0 ? v / limit : 0));
  const c = [49, 54, 149].map((ch) => Math.round(255 + (ch - 255) * a));
  return { fill: `rgb(${c.join(",")})`, ink: a > 0.55 ? "#ffffff" : "#1f2933" };
}

function historyRows(h) {
  const offset = h.length - h.history.length;
  // a dismissal the model reads is a row of the history, never to be taken for a purchase
  const said = (item) => (item.event === "dismiss" ? `dismissed: ${item.title}` : item.title);
  return h.history.map((item, t) => ({ label: `${offset + t + 1}. ${said(item)}`, tooltip: itemTooltip(item) }));
}

function drawHeatmap() {
  const h = current();
  const e = explained();
  const info = methodInfo(state.method);
  const cf = e.counterfactuals[state.rec] || null;
  const hidden = h.length - h.history.length;
  document.getElementById("heatmap-note").textContent =
    `Rows: the shopper's past items, oldest first${hidden ? ` (the model reads the last ${h.history.length}; ` +
    `${hidden} older items are not shown)` : ""}. Columns: the top ${h.recs.length}. Each cell: that past item's ` +
    `share of all that moved the recommendation, by ${state.method}; blue pushed it up, red down (hover for the ` +
    `weight in the model's score units). Click a column to explain it; ✂ marks the counterfactual's items.` +
    (info.target_dependent ? "" : " This method gives every column the same values.");
  const totals = e.weights.map(absSum);  // per recommended item: all its past items' push
  drawGrid(document.getElementById("heatmap"), {
    rows: historyRows(h),
    cols: h.recs.map((r) => ({ label: `#${r.rank} ${r.title}`, tooltip: itemTooltip(r) })),
    value: (i, j) => e.weights[j][i],
    text: (i, j, v) => share(v, totals[j]),
    tooltip: (i, j, v) => `${share(v, totals[j])} of what moved it (${fmt(v, 3)} in the model's score units)`,
    selected: state.rec,
    onSelect: (j) => { state.rec = j; drawWhy(); },
    diverge: true,
    rowMarks: cf && cf.found ? new Set(cf.removed) : null,
    limit: e.scale.high,
    legend: () => e.scale.note,
  });
}

// A model of several towers (model.towers) has each tower's heads in turn: name the tower too.
function headName(k) {
  const towers = DATA.towers || 1;
  const per = DATA.heads / towers;
  return towers > 1 ? `tower ${Math.floor(k / per) + 1} head ${(k % per) + 1}` : `head ${k + 1}`;
}

function drawAttention() {
  const h = current();
  const heads = state.head === "mean" ? [...Array(DATA.heads).keys()] : [Number(state.head)];
  const cols = [];
  for (let l = 0; l < DATA.layers; l++) {
    for (let k = 0; k < DATA.heads; k++) cols.push({ label: `layer ${l + 1} ${headName(k)}`, l, k });
  }
  const chosen = cols.findIndex((c) => c.l === state.layer && (state.head === "mean" ? c.k === 0 : c.k === heads[0]));
  const mean = (i) => heads.reduce((s, k) => s + h.attention[state.layer][k][i], 0) / heads.length;
  const allCols = [...cols, { label: `layer ${state.layer + 1}, ${state.head === "mean" ? "mean of heads" : headName(heads[0])}` }];
  drawGrid(document.getElementById("attention"), {
    rows: historyRows(h),
    cols: allCols,
    value: (i, j) => (j < cols.length ? h.attention[cols[j].l][cols[j].k][i] : mean(i)),
    selected: state.head === "mean" ? allCols.length - 1 : chosen,
    onSelect: (j) => {
      if (j >= cols.length) return;
      state.layer = cols[j].l; state.head = String(cols[j].k);
      document.getElementById("layer").value = String(state.layer);
      document.getElementById("head").value = state.head;
      drawAttention();
    },
    diverge: false,
    cellW: 48,
    limit: h.attention_scale.high,
    legend: () => `attention weight of the final position (each column sums to 1); ${h.attention_scale.note}`,
  });
}

// ------------------------------------------------------------------ faithfulness tab
const FAITH_COLUMNS = [
  ["comprehensiveness", "comprehensiveness_random", "Comprehensiveness ↑", "mean score drop when the top 1..5 items are removed"],
  ["sufficiency", "sufficiency_random", "Sufficiency ↓", "mean score drop when only the top 1..5 items are kept"],
  ["topk_exit_rate", "topk_exit_rate_random", "Top-K exit ↑", "share of items that leave the top-K when the top 3 are removed"],
  ["kendall_tau_loo", null, "Kendall τ vs leave-one-out", ""],
  ["planted_hit@1", null, "Planted hit@1", "share of single-cause events whose planted cause is ranked first"],
  ["planted_hit@3", null, "Planted hit@3", ""],
  ["ms_per_explanation", null, "ms / item", "mean milliseconds per explanation"],
];

function drawFaithfulness() {
  const f = DATA.faithfulness;
  const t = DATA.trust;
  const note = document.getElementById("faith-note");
  const words = clear(document.getElementById("faith-words"));
  const table = clear(document.getElementById("faith-table"));
  document.getElementById("faith-details").hidden = !f;
  if (!f || !t) {
    note.textContent = "Not measured for this run yet: run `recscope explain-eval RUN` and write the report again.";
    return;
  }
  note.textContent = `This run's own measurements (recscope explain-eval, over ${t.measured_on}): take away the ` +
    `past items a method weighs most and see whether the recommendation falls out of the top ${t.k}. Where ` +
    `a method's weights are right, it falls far more often than when as many random past items are taken ` +
    `away. The default method, ${f.default}, is the one these measurements favour.`;
  for (const name of [f.default, ...Object.keys(t.methods).filter((n) => n !== f.default)]) {
    const m = t.methods[name];
    if (!m) continue;
    const li = el("li", { "data-method": name }, words);
    el("b", {}, li, name);
    if (name === f.default) el("span", { class: "badge" }, li, "default");
    el("span", {}, li, " " + [m.lead, m.planted].filter(Boolean).join(" "));
  }
  document.getElementById("faith-numbers-note").textContent = `Measured by recscope explain-eval over the ` +
    `top-${f.k} of ${f.users} test users (${f.data}); grey numbers are the same measure for random choices of ` +
    "history items. Score drops are in the model's score units.";
  const cols = FAITH_COLUMNS.filter(([key]) => Object.values(f.methods).some((m) => m[key] !== undefined));
  const head = el("tr", {}, el("thead", {}, table));
  el("th", {}, head, "method");
  for (const [, , label, help] of cols) el("th", { title: help }, head, label);
  const body = el("tbody", {}, table);
  for (const [name, m] of Object.entries(f.methods)) {
    const tr = el("tr", { class: name === f.default ? "default" : "" }, body);
    const first = el("td", {}, tr, name);
    if (name === f.default) el("span", { class: "badge" }, first, "default");
    if (m.target_dependent === false) el("span", { class: "badge warn", title: "the same weights for every item" }, first, "target-independent");
    for (const [key, random] of cols) {
      const td = el("td", {}, tr, plain(m[key], key.startsWith("ms") ? 1 : 3));
      if (random && m[random] !== undefined) el("span", { class: "vs" }, td, ` vs ${plain(m[random], 3)}`);
    }
  }
  drawDeletion(f);
}

function drawDeletion(f) {
  const container = clear(document.getElementById("deletion"));
  const methods = Object.entries(f.methods).filter(([, m]) => Array.isArray(m.deletion_curve));
  if (!methods.length) { el("p", { class: "empty" }, container, "no deletion curves in this measurement"); return; }
  const random = methods[0][1].deletion_curve_random || [];
  const all = methods.flatMap(([, m]) => m.deletion_curve).concat(random).filter((v) => isFinite(v));
  const lo = Math.min(0, ...all), hi = Math.max(...all) || 1;
  const n = Math.max(...methods.map(([, m]) => m.deletion_curve.length));
  const W = 640, H = 320, L = 56, R = 190, T = 12, B = 42;
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" }, container);
  const x = (i) => L + (i / Math.max(n, 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo || 1)) * (H - T - B);
  for (let tick = 0; tick <= 4; tick++) {
    const v = lo + ((hi - lo) * tick) / 4;
    svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eef0f2" }, svg);
    svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "muted" }, svg, v.toFixed(1));
  }
  for (let i = 0; i <= n; i++) svgEl("text", { x: x(i), y: H - B + 16, "text-anchor": "middle", class: "muted" }, svg, String(i));
  svgEl("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "muted" }, svg, "history items removed (most attributed first)");
  svgEl("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle", class: "muted" }, svg, "mean score drop");
  const line = (curve, colour, dash, label, bold) => {
    const pts = [[0, 0], ...curve.map((v, i) => [i + 1, v])].map(([i, v]) => `${x(i)},${y(v)}`).join(" ");
    withTitle(svgEl("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": bold ? 3 : 1.8,
      "stroke-dasharray": dash ? "5 4" : "none" }, svg), label);
  };
  const legend = [];
  methods.forEach(([name, m], i) => {
    const colour = PALETTE[i % PALETTE.length];
    line(m.deletion_curve, colour, false, name, name === f.default);
    legend.push([name + (name === f.default ? " (default)" : ""), colour, false]);
  });
  if (random.length) { line(random, "#8c8c8c", true, "random"); legend.push(["random items", "#8c8c8c", true]); }
  legend.forEach(([label, colour, dash], i) => {
    const ly = T + 10 + i * 18;
    svgEl("line", { x1: W - R + 14, x2: W - R + 36, y1: ly, y2: ly, stroke: colour, "stroke-width": 2.5, "stroke-dasharray": dash ? "5 4" : "none" }, svg);
    svgEl("text", { x: W - R + 42, y: ly + 4 }, svg, label);
  });
}

// ------------------------------------------------------------------ merchant tab
// which method weighed a merchant view, in words
function weighedBy(v) {
  let text = v.method === v.default_method
    ? `${v.method}, the run's default method${DATA.trust ? " (the most faithful in its measurements)" : ""}`
    : `${v.method} (chosen; the run's default is ${v.default_method})`;
  if (v.fields_method && v.fields_method !== v.method) {
    text += `; ${v.method} has no notion of attribute values, so they are weighed by ${v.fields_method}`;
  }
  return text;
}

function drawMerchant() {
  const v = DATA.merchant;
  const note = document.getElementById("merchant-note");
  if (!v) { note.textContent = "No merchant view: the report was built from histories without users."; return; }
  const whole = v.drivers.filter((d) => d.field === "id" || d.field === "text");
  const recs = v.users * v.k;
  note.textContent = `Over the top ${v.k} of ${v.users.toLocaleString()} shoppers: which attribute values pushed ` +
    "the recommendations, in the shoppers' histories and on the recommended items. A bar is the value's share of " +
    "all that pushed them (below zero: it pushed them down); beside it, the share of the recommendations it " +
    `took part in. Weighed by ${weighedBy(v)}.` + (whole.length ? " Beside these, of all the push, " +
    whole.map((d) => `${pct(d.share)} comes from the items' ${d.field === "id" ? "own identity (learned from " +
      "behaviour)" : "title text"}`).join(" and ") + "." : "");
  document.getElementById("merchant-method").textContent = `Weighed by ${v.method}`;
  const drivers = v.drivers.filter((d) => d.field !== "id" && d.field !== "text").slice(0, 15);
  const container = clear(document.getElementById("drivers"));
  if (!Object.keys(v.recommended).length) {
    const none = "This run has no catalog attributes: train with --catalog FILE (brand, category, price, ...) " +
      "to see which of them drive recommendations and how the recommended mix compares with the catalog.";
    el("p", { class: "empty" }, container, none);
    el("p", { class: "empty" }, clear(document.getElementById("mix")), none);
    document.getElementById("mix-field").disabled = true;
  }
  const fields = [...new Set(drivers.map((d) => d.field))];
  const colour = (field) => FIELD_COLOURS[field] || PALETTE[(fields.indexOf(field) + 5) % PALETTE.length];
  if (drivers.length) drawBarRows(container, drivers.map((d) => ({ label: d.label,
    values: [d.weight < 0 ? -d.share : d.share], colours: [colour(d.field)],
    tooltip: `${d.label}\n${pct(d.share)} of all the push, in ${d.count.toLocaleString()} of ${recs.toLocaleString()} ` +
      `recommendations\nmean push ${fmt(d.weight, 3)} per recommendation (the model's score units)`,
    note: `· in ${Math.round((100 * d.count) / recs)}% of recs` })),
    { format: pct, legend: fields.map((f) => [f, colour(f)]) });

  const select = clear(document.getElementById("mix-field"));
  for (const field of Object.keys(v.recommended)) el("option", { value: field }, select, field);
  select.onchange = () => drawMix(select.value);
  if (select.options.length) drawMix(select.value);

  const c = v.coverage;
  document.getElementById("coverage").textContent = `${c.recommended_items.toLocaleString()} distinct items ` +
    `recommended, ${pct(c.share)} of the ${c.catalog_items.toLocaleString()} in the catalog. Items are ranked by ` +
    `training interactions; a recommender that only repeats best-sellers piles its bars into “top 1%”.`;
  const p = v.popularity;
  drawBarRows(clear(document.getElementById("popularity")), p.labels.map((label, i) => ({
    label, values: [p.recommended[i], p.interactions[i]], colours: ["rgb(43,108,176)", "#bdbdbd"],
    tooltip: `${label} most popular items: ${pct(p.recommended[i])} of recommendations, ${pct(p.interactions[i])} of interactions`,
  })), { format: pct, legend: [["share of recommendations", "rgb(43,108,176)"], ["share of interactions", "#bdbdbd"]] });
}

function drawMix(field) {
  const v = DATA.merchant;
  const rec = v.recommended[field] || {};
  const cat = v.catalog[field] || {};
  const total = (o) => Object.values(o).reduce((a, b) => a + b, 0) || 1;
  const rt = total(rec), ct = total(cat);
  const keys = [...new Set([...Object.keys(rec), ...Object.keys(cat)])];
  keys.sort((a, b) => Math.max((rec[b] || 0) / rt, (cat[b] || 0) / ct) - Math.max((rec[a] || 0) / rt, (cat[a] || 0) / ct));
  const shown = keys.slice(0, 12).sort((a, b) => (rec[b] || 0) - (rec[a] || 0));
  const rest = keys.slice(12);
  const rows = shown.map((k) => ({ label: `${field}=${k}`, values: [(rec[k] || 0) / rt, (cat[k] || 0) / ct],
    colours: ["rgb(43,108,176)", "#bdbdbd"],
    tooltip: `${field}=${k}: ${rec[k] || 0} recommendations (${pct((rec[k] || 0) / rt)}), ${cat[k] || 0} catalog items (${pct((cat[k] || 0) / ct)})` }));
  if (rest.length) {
    const r = rest.reduce((s, k) => s + (rec[k] || 0), 0) / rt, c = rest.reduce((s, k) => s + (cat[k] || 0), 0) / ct;
    rows.push({ label: `other (${rest.length} values)`, values: [r, c], colours: ["rgb(43,108,176)", "#bdbdbd"], tooltip: rest.join(", ") });
  }
  drawBarRows(clear(document.getElementById("mix")), rows,
    { format: pct, legend: [["share of recommendations", "rgb(43,108,176)"], ["share of catalog items", "#bdbdbd"]] });
}

// labelled rows of one or more horizontal bars each (grouped), zero at the left unless values go negative
function drawBarRows(container, rows, opts) {
  if (!rows.length) { el("p", { class: "empty" }, container, "nothing to show"); return; }
  const labelW = 250, barW = 380, group = rows[0].values.length, barH = group > 1 ? 11 : 16, rowH = group * barH + 10;
  const legendH = opts.legend ? 24 : 0;
  const all = rows.flatMap((r) => r.values);
  const lo = Math.min(0, ...all), hi = Math.max(0, ...all) || 1;
  const width = labelW + barW + (rows.some((r) => r.note) ? 190 : 110), height = legendH + rows.length * rowH + 6;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
  const x = (v) => labelW + ((v - lo) / (hi - lo || 1)) * barW;
  let lx = labelW;
  for (const [label, colour] of opts.legend || []) {
    svgEl("rect", { x: lx, y: 4, width: 12, height: 12, fill: colour }, svg);
    svgEl("text", { x: lx + 17, y: 14 }, svg, label);
    lx += 17 + textWidth(label.length) + 18;
  }
  svgEl("line", { x1: x(0), x2: x(0), y1: legendH, y2: height, stroke: "#9aa5b1" }, svg);
  rows.forEach((r, i) => {
    const y = legendH + i * rowH + 5;
    withTitle(svgEl("text", { x: labelW - 8, y: y + (group * barH) / 2 + 4, "text-anchor": "end" }, svg, shorten(r.label, 38)), r.tooltip || r.label);
    r.values.forEach((v, g) => {
      const x0 = Math.min(x(0), x(v)), w = Math.max(Math.abs(x(v) - x(0)), 0.5);
      withTitle(svgEl("rect", { x: x0, y: y + g * barH, width: w, height: barH - 2, fill: r.colours[g] }, svg), r.tooltip || r.label);
      // values sit right of the bar, or right of the zero line for a negative bar (never over the labels)
      svgEl("text", { x: (v >= 0 ? x0 + w : x(0)) + 4, y: y + g * barH + barH / 2 + 3, class: "muted", "font-size": "10" },
        svg, opts.format(v) + (g === 0 && r.note ? `  ${r.note}` : ""));
    });
  });
}

// ------------------------------------------------------------------ versions (the loop made visible)
// ``v``: the versions contract (recscope.viz.versions); ``n``: the case whose movers to draw (its
// index in v.movers). Drawn into #versions-note, #versions-table and #movers, on both pages.
function when(t) { return t ? new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "–"; }
function sharesText(rows) {
  if (rows === null || rows === undefined) return "no store: no feedback to read";
  const voted = rows.filter((r) => r.votes > 0);
  if (!voted.length) return rows.length ? "no votes yet" : "no lists served";
  return voted.map((r) => `${r.method === null ? "no explanation" : r.method}: ${pct(r.share)} helpful of ${r.votes}`
    + ` vote${r.votes === 1 ? "" : "s"}`).join("; ");
}
function rankText(r) { return r === null || r === undefined ? "not ranked" : "#" + r; }
function drawVersions(v, n) {
  document.getElementById("versions-note").textContent = v.note;
  const table = clear(document.getElementById("versions-table"));
  const head = el("tr", {}, el("thead", {}, table));
  for (const h of ["Version", "Parent", "Made", "Verdict", "Explanation helpful (per method)"]) el("th", {}, head, h);
  const body = el("tbody", {}, table);
  for (const r of v.versions.slice().reverse()) {  // newest first
    const tr = el("tr", { "data-version": r.id, class: r.serving ? "serving" : "" }, body);
    const id = el("td", {}, tr);
    el("code", {}, id, r.id);
    if (r.serving) el("span", { class: "badge" }, id, "serving");
    el("td", {}, tr, r.parent === null ? "–" : r.parent);
    el("td", {}, tr, `${when(r.created)} (${r.source})`);
    el("td", {}, tr, (r.verdict || (r.source === "train" ? "trained" : "–")) + (r.reason ? `: ${r.reason}` : ""));
    el("td", { class: "shares" }, tr, sharesText(r.helpful));
  }
  const list = clear(document.getElementById("movers"));
  const found = v.movers[n] || [];
  const lead = document.getElementById("movers-lead");
  if (v.parent === null) { lead.textContent = ""; return; }
  lead.textContent = found.length
    ? `Items whose rank moved most for this shopper from ${v.parent} to ${v.serving}, and why, in each version's own `
      + `explanation (${v.method}).`
    : `No item of either version's top-${DATA ? DATA.k : 10} moved for this shopper between ${v.parent} and ${v.serving}.`;
  for (const m of found) {
    const li = el("li", { "data-item": m.id }, list);
    const top = el("div", { class: "mover-head" }, li);
    el("span", { class: "mover-title" }, top, m.title);
    const arrow = m.moved === null ? (m.before === null ? "new" : "gone") : (m.moved > 0 ? `▲ ${m.moved}` : `▼ ${-m.moved}`);
    el("span", { class: "mover-rank " + (m.moved === null || m.moved > 0 ? "up" : "down") }, top,
      `${rankText(m.before)} → ${rankText(m.after)} (${arrow})`);
    const dl = el("dl", { class: "mover-why" }, li);
    el("dt", {}, dl, `before (${v.parent})`);
    el("dd", { class: "before" }, dl, m.sentence_before || "not ranked by this version");
    el("dt", {}, dl, `now (${v.serving})`);
    el("dd", { class: "after" }, dl, m.sentence_after || "not ranked by this version");
  }
}

// ------------------------------------------------------------------ about tab
function drawAbout() {
  const dl = document.getElementById("methods-about");
  for (const m of DATA.methods) {
    el("dt", {}, dl, m.name + (m.name === DATA.default_method ? " (default)" : ""));
    el("dd", {}, dl, m.description + (m.target_dependent ? "." : "; the same weights for every recommended item."));
  }
}

const embedded = document.getElementById("data");
if (embedded) {
  showData(JSON.parse(embedded.textContent));
  drawHeader();
  drawUsers();
  drawControls();
  drawWhy();
  drawFaithfulness();
  drawMerchant();
  drawAbout();
  if (DATA.versions) {
    drawVersions(DATA.versions, state.history);
    document.getElementById("user").addEventListener("change", () => drawVersions(DATA.versions, state.history));
  }
}
