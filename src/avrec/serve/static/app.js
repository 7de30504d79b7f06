// avrec web page: plain JavaScript against the same HTTP API other programs use (no build step).
"use strict";

const state = { user: null, profile: "", writes: "", key: localStorage.getItem("avrec-api-key") || "" };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.write && state.key) headers["X-API-Key"] = state.key;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return data;
}

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

// `&profile=NAME` when a content profile is chosen (the selector or ?profile= in the URL), else "".
function profileParam() {
  return state.profile ? `&profile=${encodeURIComponent(state.profile)}` : "";
}

// The page's URL: ?user= and ?profile= as chosen, so a reload or a shared link shows the same lists.
function updateUrl() {
  const params = new URLSearchParams();
  if (state.user) params.set("user", state.user);
  if (state.profile) params.set("profile", state.profile);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

// An explored slot (the policy showed it to learn, not because the model ranks it first) gets a quiet
// "new for you" mark; like/skip send the list's impression id so the reward joins that slot.
function itemCard(item, withActions, impressionId = null) {
  const meta = [item.media_type, (item.genres || []).join(", "), item.year].filter(Boolean).join(" · ");
  const li = el("li", { className: item.explored ? "card explored" : "card", "data-item-id": item.item_id },
    el("div", { className: "title" }, item.title || item.item_id,
      item.explored ? el("span", { className: "new-for-you", title: "Picked to explore: tell us if it fits" },
        "new for you") : null),
    meta ? el("div", { className: "meta" }, meta) : null,
    item.explanation ? el("p", { className: "explanation" }, item.explanation) : null,
  );
  if (withActions) {
    const like = el("button", { className: "like", type: "button", title: "Like" }, "Like");
    const skip = el("button", { className: "skip", type: "button", title: "Skip" }, "Skip");
    like.addEventListener("click", () => sendFeedback(item.item_id, "like", impressionId));
    skip.addEventListener("click", () => sendFeedback(item.item_id, "skip", impressionId));
    li.append(el("div", { className: "actions" }, like, skip));
  }
  return li;
}

async function loadRecommendations() {
  const list = $("rec-list");
  const data = await api(
    `/recommend?user_id=${encodeURIComponent(state.user)}&k=10&explain=true&details=true${profileParam()}`);
  list.replaceChildren(...data.items.map((it) => itemCard(it, true, data.impression_id)));
  list.dataset.impression = data.impression_id || "";
  list.dataset.version = String(Number(list.dataset.version || "0") + 1);
  list.dataset.user = state.user;
  list.dataset.profile = state.profile;
  $("rec-note").textContent = data.fallback
    ? "New here: popular picks. Like or skip a few to personalise."
    : `Personalised for ${state.user}.`;
}

async function loadHistory() {
  const list = $("history-list");
  try {
    const data = await api(`/users/${encodeURIComponent(state.user)}/history?limit=30${profileParam()}`);
    list.replaceChildren(...data.items.map((it) => el("li", { className: it.source, "data-item-id": it.item_id },
      el("span", { className: "badge" }, it.event || "watched"), " ", it.title)));
    $("history-note").textContent = `${data.n_feedback} feedback event(s), ${data.n_train} from training data.`
      + (state.profile ? ` Items the ${state.profile} profile blocks are hidden.` : "");
  } catch (e) {
    if (e.status !== 404) throw e;
    list.replaceChildren();
    $("history-note").textContent = "No history yet.";
  }
}

async function refresh() {
  if (!state.user) return;
  $("rec-user").textContent = `for ${state.user}`;
  setStatus("Loading…");
  try {
    await Promise.all([loadRecommendations(), loadHistory()]);
    setStatus("Ready.");
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function sendFeedback(itemId, event, impressionId = null) {
  if (!state.user) { setStatus("Pick a user first.", true); return; }
  const body = { user_id: state.user, item_id: itemId, event };
  if (impressionId) body.impression_id = impressionId;
  try {
    await api("/feedback", { method: "POST", write: true, body });
    setStatus(`${event === "like" ? "Liked" : "Skipped"} ${itemId}; updating…`);
    await refresh();
  } catch (e) {
    setStatus(`Feedback not saved: ${e.message}`, true);
  }
}

function selectUser(id) {
  state.user = id;
  $("user-input").value = id;
  updateUrl();
  refresh();
}

async function search(query) {
  const params = new URLSearchParams({ q: query, k: "10", details: "true" });
  if (state.user) params.set("user_id", state.user);
  if (state.profile) params.set("profile", state.profile);
  $("search-note").textContent = "Searching…";
  try {
    const data = await api(`/search?${params}`);
    $("search-results").replaceChildren(...data.items.map((it) => itemCard(it, true, data.impression_id)));
    $("search-note").textContent = data.items.length
      ? `Results for “${data.query}”${data.personalised ? `, tuned to ${data.user_id}` : ""}.`
      : "Nothing matched.";
    $("search-results").dataset.profile = state.profile;
  } catch (e) {
    $("search-note").textContent = e.message;
  }
}

// A real user id to try (the model's first user), as the input's placeholder and a link beside it.
function suggestUser(id) {
  if (!id) return;
  $("user-input").placeholder = `user id, e.g. ${id}`;
  const link = document.querySelector("#user-hint a.try-user");
  link.textContent = id;
  link.href = `?user=${encodeURIComponent(id)}`;
  link.addEventListener("click", (e) => { e.preventDefault(); selectUser(id); });
  $("user-hint").hidden = false;
}

// The content profiles the server knows (from /health), as the selector's options; hidden when none.
function showProfiles(names, fromUrl) {
  const select = $("profile-select");
  select.replaceChildren(el("option", { value: "" }, "none"), ...names.map((n) => el("option", { value: n }, n)));
  if (fromUrl && names.includes(fromUrl)) state.profile = fromUrl;
  else if (fromUrl) setStatus(`Unknown profile “${fromUrl}”; showing everything.`, true);
  select.value = state.profile;
  $("profile-box").hidden = names.length === 0;
}

async function init() {
  $("api-key").value = state.key;
  $("api-key").addEventListener("change", (e) => {
    state.key = e.target.value;
    localStorage.setItem("avrec-api-key", state.key);
  });
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("user-input").value.trim();
    if (id) selectUser(id);
  });
  $("new-user").addEventListener("click", () => {
    const id = "web-" + Math.random().toString(36).slice(2, 10);
    selectUser(id);
  });
  $("profile-select").addEventListener("change", (e) => {
    state.profile = e.target.value;
    updateUrl();
    refresh();
    const q = $("search-input").value.trim();
    if (q && $("search-results").children.length) search(q);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("search-input").value.trim();
    if (q) search(q);
  });
  try {
    const health = await api("/health");
    state.writes = health.writes;
    $("model-info").textContent = `${health.model} · ${health.n_items} items · search ${health.search}`;
    $("key-box").hidden = health.writes !== "api-key";
    showProfiles(health.profiles || [], new URLSearchParams(location.search).get("profile"));
    const users = await api("/users?limit=200");
    $("user-list").replaceChildren(...users.users.map((u) => el("option", { value: u })));
    suggestUser(users.users[0]);
  } catch (e) {
    setStatus(e.message, true);
  }
  const fromUrl = new URLSearchParams(location.search).get("user");
  if (fromUrl) selectUser(fromUrl);
}

init();
