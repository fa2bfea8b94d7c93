// The page asks the service what any client would: POST /recommend for recommendations and GET /metrics for
// traffic; /ui/api/* adds what the API does not say (titles, a user's history, the models and their report).
"use strict";

const UI_API = new URL("api/", document.baseURI);   // /ui/api/
const ROOT = new URL("../", document.baseURI);      // the service: /recommend, /metrics
const PAGE = new URL(".", document.baseURI).pathname.replace(/\/$/, "");  // /ui: its own requests are not shown
const HEALTH = new Set(["/healthz", "/livez", "/readyz", "/metrics"]);
const COLD_START = {
  segment: "the most watched titles of their demographic segment (age, sex, kids)",
  kids_segment: "the most watched titles of households with the same kids flag",
  global: "the most watched titles overall (no demographics given, or their segment is too small)",
};

const $ = (selector) => document.querySelector(selector);
let candidatesPerUser = null;  // from the training report, once the model panel has loaded

// A DOM element with text content only (never HTML), so titles from the data cannot inject markup.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

// Status, parsed body and the raw text (which keeps ids above 2^53 exact, for showing).
async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { msg: `HTTP ${response.status}` };
  }
  return { ok: response.ok, status: response.status, body, text };
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function itemCells(item) {
  return [
    el("td", { class: "title" }, item.title ?? `item ${item.item_id}`),
    el("td", {}, (item.genres ?? []).join(", ")),
    el("td", {}, item.year ?? ""),
  ];
}

// ---- the model panel --------------------------------------------------------------------------------------

// What the training report says about the parameters (tuned or not), the epochs and the spread over seeds.
function modelNotes(report) {
  if (!report?.spread) return {};  // a pair trained before these were reported
  const measured = (report.claims ?? []).filter(([, , , , sd]) => sd);  // none with a single seed
  const claims = measured.map(([baseline, metric, gap, relative, sd, verdict]) =>
    `${baseline} ${metric}: ${gap} (${relative}, sd ${sd}) ${verdict}`);
  return {
    tuning: report.tuning ?? "not tuned: the settings' defaults (`recsys tune` searches them)",
    "LightFM epochs": report.epochs,
    "spread over seeds": [report.spread, ...claims].join("; "),
  };
}

function showModel(info) {
  $("#version").textContent = `models ${info.version}`;
  const summary = info.dataset_summary ?? {};
  const facts = {
    models: info.models.map((m) => `${m.tag} (saved ${m.created})`).join(", "),
    dataset: `${info.dataset}: ${summary.interactions} interactions, ${summary.users} users, ${summary.items} items, `
      + `${summary.start} to ${summary.end} (fingerprint ${info.dataset_fingerprint})`,
    "trained at": `${info.trained_at} in ${info.training_seconds} s; features as of ${info.features_as_of}`,
    "first level": `LightFM ${JSON.stringify(info.params?.lightfm ?? {})}`,
    "candidate mix": `${JSON.stringify(info.params?.candidates ?? {})}`,
    "second level": `CatBoost ${JSON.stringify(info.params?.ranker ?? {})}`,
    ...modelNotes(info.report),
    libraries: Object.entries(info.libraries ?? {}).map(([name, version]) => `${name} ${version}`).join(", "),
  };
  $("#model-facts").replaceChildren(...Object.entries(facts).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  if (info.showcase_missing) {
    $("#showcase-missing").textContent = info.showcase_missing;
    $("#showcase-missing").hidden = false;
    return;
  }
  const report = info.report;
  const ev = report.evaluation;
  candidatesPerUser = ev.skipped ? null : Math.round(ev.candidates_per_user);
  const reranker = `The reranker learned from ${report.ranker.rows} rows (best iteration ${report.ranker.best_iteration}).`;
  $("#evaluation-note").textContent = ev.skipped ? `Offline evaluation skipped: ${ev.skipped}. ${reranker}`
    : `Holdout window, ${ev.users} warm users, top ${ev.k}, watched titles left out; `
      + `${ev.cold_users} holdout users without history are served by popularity. ${reranker}`;
  $("#offline-metrics thead").replaceChildren(el("tr", {}, ...report.metrics.header.map((h) => el("th", {}, h))));
  fill($("#offline-metrics tbody"), report.metrics.rows.map((row) => el("tr", {}, ...row.map((c) => el("td", {}, c)))));
  $("#candidate-recall").textContent = ev.skipped ? "" : `Candidate recall (share of holdout items among about `
    + `${candidatesPerUser} candidates per user): `
    + Object.entries(report.candidate_recall).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ");
  $("#plots").replaceChildren(...info.plots.map((name) => el("img", { src: new URL(`plot?name=${name}`, UI_API), alt: name })));
  $("#sample-users").replaceChildren(...info.sample_users.map((id) => el("option", { value: id })));
  $("#new-user").dataset.userId = info.new_user_id;
  for (const [field, values] of Object.entries(report.demographics)) {
    const select = field === "kids_flg" ? null : $(`#${field}`);
    select?.append(...values.map((v) => el("option", { value: v }, v)));
  }
}

// ---- live traffic from Prometheus ---------------------------------------------------------------------------

function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = line.match(/^(\w+)\{(.*)\}\s+(\S+)$/);
    if (!match) continue;
    const labels = Object.fromEntries([...match[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function bucketBound(buckets, count, share) {
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const hit = sorted.find(([, cumulative]) => cumulative >= share * count);
  return hit && Number.isFinite(hit[0]) ? (hit[0] * 1000).toFixed(0) : "";
}

async function showTraffic() {
  const response = await fetch(new URL("metrics", ROOT));
  const rows = new Map();
  for (const { name, labels, value } of parsePrometheus(await response.text())) {
    const endpoint = labels.endpoint ?? "";
    if (!name.startsWith("bentoml_service_request_") || HEALTH.has(endpoint) || endpoint === PAGE
        || endpoint.startsWith(`${PAGE}/`)) continue;
    const key = `${labels.service_name} ${endpoint}`;
    const row = rows.get(key) ?? { service: labels.service_name, endpoint, requests: 0, errors: 0,
                                   seconds: 0, timed: 0, buckets: new Map() };
    rows.set(key, row);
    if (name === "bentoml_service_request_total") {
      row.requests += value;
      if (Number(labels.http_response_code) >= 400) row.errors += value;
    } else if (name === "bentoml_service_request_duration_seconds_sum") {
      row.seconds += value;
    } else if (name === "bentoml_service_request_duration_seconds_count") {
      row.timed += value;
    } else if (name === "bentoml_service_request_duration_seconds_bucket") {
      const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
      row.buckets.set(le, (row.buckets.get(le) ?? 0) + value);
    }
  }
  const active = [...rows.values()].filter((r) => r.requests > 0).sort((a, b) => b.requests - a.requests);
  fill($("#traffic tbody"), active.map((r) => el("tr", { "data-endpoint": r.endpoint, "data-service": r.service },
    el("td", {}, r.service), el("td", {}, r.endpoint), el("td", {}, r.requests), el("td", {}, r.errors),
    el("td", {}, r.timed ? (1000 * r.seconds / r.timed).toFixed(1) : ""),
    el("td", {}, bucketBound(r.buckets, r.timed, 0.5)), el("td", {}, bucketBound(r.buckets, r.timed, 0.95)))));
}

// ---- one user ---------------------------------------------------------------------------------------------

// The JSON body for POST /recommend. The user id goes in as typed: ids up to 2^63 - 1 are valid, and a JavaScript
// number would round those above 2^53.
function requestBody(userId) {
  const rest = { top_k: Number($("#top-k").value), exclude_seen: $("#exclude-seen").checked };
  const features = { age: $("#age").value, sex: $("#sex").value, income: $("#income").value };
  const profile = Object.fromEntries(Object.entries(features).filter(([, v]) => v));
  if ($("#kids").value) profile.kids_flg = Number($("#kids").value);
  if (Object.keys(profile).length) rest.user_features = profile;
  return `{"user_id":${userId},${JSON.stringify(rest).slice(1)}`;
}

function showError(message) {
  $("#error").textContent = message;
  $("#error").hidden = false;
  document.body.dataset.state = "error";
}

function showHistory(answer) {
  if (!answer.ok) {
    $("#profile").textContent = answer.body.msg;
    fill($("#history tbody"), []);
    return;
  }
  const user = answer.body;
  const profile = Object.entries(user.profile).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`).join(", ");
  $("#profile").textContent = `${user.watched} titles watched, the latest ${user.history.length} shown`
    + (profile ? `; ${profile}` : "");
  fill($("#history tbody"), user.history.map((h) => el("tr", { "data-item-id": h.item_id },
    el("td", {}, h.watched_at), ...itemCells(h), el("td", {}, `${h.watched_pct}%`))));
}

async function showRecommendations(userId, answer) {
  const recs = answer.recommendations;
  const ids = recs.map((r) => r.item_id);
  const details = ids.length ? await fetchJSON(new URL(`items?ids=${ids.join(",")}`, UI_API)) : { body: { items: [] } };
  const byId = new Map((details.body.items ?? []).map((item) => [item.item_id, item]));
  fill($("#recommendations tbody"), recs.map((r, i) => el("tr", { "data-item-id": r.item_id },
    el("td", {}, i + 1), ...itemCells(byId.get(r.item_id) ?? { item_id: r.item_id }),
    el("td", {}, r.score === null ? "–" : r.score.toFixed(3)), el("td", {}, r.retrieved_by.length ? r.retrieved_by.join(" + ") : r.source))));
  const perUser = candidatesPerUser ? ` (about ${candidatesPerUser} per user offline)` : "";
  $("#recommendations-note").textContent = answer.cold_start ? ""
    : `LightFM, recent popularity and co-occurrence propose the candidates${perUser}; CatBoost ranks them.`;
  const notice = $("#cold-start");
  notice.hidden = !answer.cold_start;
  if (answer.cold_start) {
    const source = recs[0]?.source ?? "global";
    notice.textContent = `Cold start: the models do not know user ${userId}, so these are `
      + `${COLD_START[source] ?? source} (source "${source}").`;
  }
}

async function recommend(event) {
  event?.preventDefault();
  document.body.dataset.state = "loading";
  $("#error").hidden = true;
  const userId = $("#user-id").value.trim();
  if (!/^\d+$/.test(userId)) return showError("The user id is a whole number, 0 or more.");
  history.replaceState(null, "", `?user=${userId}`);
  const url = new URL("recommend", ROOT);
  const body = requestBody(userId);
  $("#request").textContent = `curl -s -X POST ${url} -H 'Content-Type: application/json' -d '${body}'`;
  try {
    const [answer, past] = await Promise.all([
      fetchJSON(url, { method: "POST", headers: { "Content-Type": "application/json" }, body }),
      fetchJSON(new URL(`history?user_id=${userId}`, UI_API)),
    ]);
    $("#response").textContent = answer.text;
    if (!answer.ok) return showError(`POST /recommend answered ${answer.status}: ${answer.body.msg}`);
    showHistory(past);
    await showRecommendations(userId, answer.body);
  } catch (error) {
    return showError(`The service did not answer: ${error}`);
  }
  $("#recommendations").dataset.userId = userId;
  document.body.dataset.state = "ready";
  showTraffic();
}

async function start() {
  $("#ask").addEventListener("submit", recommend);
  $("#new-user").addEventListener("click", () => { $("#user-id").value = $("#new-user").dataset.userId ?? ""; });
  $("#refresh-traffic").addEventListener("click", showTraffic);
  const info = await fetchJSON(new URL("model", UI_API));
  if (info.ok) showModel(info.body);
  showTraffic();
  const user = new URLSearchParams(location.search).get("user");
  if (user !== null) {
    $("#user-id").value = user;
    await recommend();
  } else {
    document.body.dataset.state = "ready";
  }
}

start();
