// avrec dashboard: policies, rewards over time, model versions, off-policy estimates and coverage,
// from GET /dashboard/data (plain JavaScript and inline SVG, no build step, nothing from a CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#0a66c2", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#1098ad"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "className") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (x, digits = 4) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits));
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
const when = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
const td = (text, className = "") => el("td", { className }, String(text));

function policyColors(names) {
  const out = {};
  names.forEach((n, i) => { out[n] = COLORS[i % COLORS.length]; });
  return out;
}

function renderPolicies(data, colors) {
  const rows = Object.entries(data.policies).map(([name, p]) => el("tr", { "data-policy": name },
    el("td", {}, el("span", { className: "swatch", style: `background:${colors[name]}` }), " ", name),
    td(p.impressions, "num"), td(p.slots, "num"), td(pct(p.slots ? p.explored_slots / p.slots : 0), "num"),
    td(p.rewarded_slots, "num"), td(fmt(p.reward, 2), "num"), td(fmt(p.reward_rate), "num reward-rate")));
  $("policy-table").tBodies[0].replaceChildren(...rows);
  const served = data.policy || {};
  $("policy-note").textContent = rows.length
    ? `Serving ${served.name || "?"} now. Reward rate = rewards per shown slot (like/play = 1, skip = 0).`
    : "No impressions logged yet: open the user page and ask for recommendations.";
}

// One line per policy over the buckets; y from 0 to the largest value.
function lineChart(node, series, key, colors, bucket) {
  const W = 560, H = 220, L = 46, R = 10, T = 10, B = 28;
  node.replaceChildren();
  const times = [...new Set(series.map((s) => s.t))].sort((a, b) => a - b);
  if (!times.length) {
    node.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const t0 = times[0], t1 = Math.max(times[times.length - 1], t0 + bucket);
  const ymax = Math.max(...series.map((s) => s[key]), 1e-9) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / ymax) * (H - T - B);
  node.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  node.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const frac of [0, 0.5, 1]) {
    const v = (ymax / 1.1) * frac;
    node.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, key === "reward_rate" ? v.toFixed(2) : Math.round(v)));
  }
  node.append(svg("text", { x: L, y: H - 8 }, when(t0).slice(5, 16)));
  node.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, when(t1).slice(5, 16)));
  const byPolicy = {};
  for (const s of series) (byPolicy[s.policy] = byPolicy[s.policy] || []).push(s);
  for (const [policy, points] of Object.entries(byPolicy)) {
    points.sort((a, b) => a.t - b.t);
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    node.append(svg("path", { d, class: "series", stroke: colors[policy], "data-policy": policy }));
    for (const p of points) {
      const dot = svg("circle", { cx: x(p.t).toFixed(1), cy: y(p[key]).toFixed(1), r: 3, fill: colors[policy] });
      dot.append(svg("title", {}, `${policy} ${when(p.t)}: ${key === "reward_rate" ? fmt(p[key]) : p[key]}`));
      node.append(dot);
    }
  }
}

function renderCharts(data, colors) {
  const names = { 60: "minute", 3600: "hour", 86400: "day" };
  for (const n of document.querySelectorAll(".bucket-name")) n.textContent = names[data.bucket] || `${data.bucket} s`;
  lineChart($("chart-impressions"), data.series, "impressions", colors, data.bucket);
  lineChart($("chart-reward"), data.series, "reward_rate", colors, data.bucket);
  $("legend").replaceChildren(...Object.entries(colors).map(([name, c]) =>
    el("span", {}, el("span", { className: "swatch", style: `background:${c}` }), name)));
}

function renderVersions(data) {
  const v = data.versions;
  $("versions-note").textContent = v.versioned
    ? `Serving ${v.serving} (pointer: ${v.current}). \`avrec update\` writes a version; the forgetting guard refuses one whose probe NDCG@10 drops too far.`
    : "A plain model folder: the first `avrec update MODEL_DIR --store STORE` makes it v0001 and adds versions.";
  $("versions-table").tBodies[0].replaceChildren(...[...v.versions].reverse().map((row) => el("tr",
    { className: row.current ? "current" : "", "data-version": row.name },
    td(row.current ? "▶" : ""), td(row.name), td(when(row.created)),
    td(row.status + (row.on_disk ? "" : " (pruned)"), `status-${row.status}`),
    td(fmt(row.probe_ndcg), "num"), td(row.how || row.reason || ""))));
  $("history-list").replaceChildren(...[...v.history].reverse().slice(0, 20).map((h) => el("li",
    { "data-action": h.action }, `${when(h.ts)} · ${h.action} ${h.version}${h.from ? ` (from ${h.from})` : ""}: ${h.reason || ""}`)));
}

function renderOpe(data) {
  const ope = data.ope;
  const head = $("ope-table").tHead, body = $("ope-table").tBodies[0];
  if (!ope) {
    $("ope-note").textContent = "No estimates yet: run `avrec ope STORE --policy greedy --policy thompson` (it keeps its latest results in the store).";
    head.replaceChildren(); body.replaceChildren();
    return;
  }
  const shown = ["dm", "ips", "snips", "dr", "switch-dr"];
  const first = Object.values(ope.policies)[0];
  const est = shown.filter((e) => first && first.estimates[e]);
  $("ope-note").textContent = `${ope.impressions} impressions, estimated ${when(ope.ts)}; logged reward per list ${fmt(first ? first.logged_value : null)}.`;
  head.replaceChildren(el("tr", {}, el("th", {}, "policy"), ...est.map((e) => el("th", {}, e)), el("th", {}, "ESS slate")));
  body.replaceChildren(...Object.entries(ope.policies).map(([name, p]) => el("tr", { "data-policy": name },
    td(name), ...est.map((e) => el("td", { className: "num" }, fmt(p.estimates[e].value),
      el("div", { className: "ci" }, `[${fmt(p.estimates[e].ci_low, 3)}, ${fmt(p.estimates[e].ci_high, 3)}]`))),
    td(fmt(p.ess_slate, 1), "num"))));
}

function renderCoverage(data) {
  const c = data.coverage;
  $("coverage-note").textContent = `${c.items_shown} of ${c.catalog_items} catalogue items shown (${pct(c.coverage)}); Gini of exposure ${fmt(c.gini, 3)}.`;
  $("coverage-table").tBodies[0].replaceChildren(...Object.entries(c.by_policy).map(([name, p]) => el("tr",
    { "data-policy": name }, td(name), td(p.items_shown, "num"), td(pct(p.coverage), "num"), td(fmt(p.gini, 3), "num"))));
  $("most-shown").replaceChildren(...c.most_shown.map((m) => el("li", { "data-item-id": m.item_id }, `${m.title || m.item_id} · shown ${m.shown}×`)));
}

async function load() {
  const status = $("status");
  status.textContent = "Loading…";
  try {
    const response = await fetch(`/dashboard/data?bucket=${$("bucket").value}`, { headers: { Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) throw new Error((data && data.error) || response.statusText);
    const colors = policyColors(Object.keys(data.policies));
    $("model-info").textContent = `${data.model}${data.version ? ` · ${data.version}` : ""}`;
    renderPolicies(data, colors);
    renderCharts(data, colors);
    renderVersions(data);
    renderOpe(data);
    renderCoverage(data);
    $("dashboard").dataset.loaded = String(Number($("dashboard").dataset.loaded) + 1);
    status.textContent = `Updated ${when(data.generated_at)} UTC.`;
    status.className = "";
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
  }
}

$("refresh").addEventListener("click", load);
$("bucket").addEventListener("change", load);
load();
