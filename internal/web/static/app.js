// pedal dashboard. Reads pedal's public API only, every 2 s:
//   /readyz and /metrics (public), /v1/pipeline/status, /v1/ads/top,
//   /v1/ads/{ad_id}/clicks, /v1/traffic/quality and /v1/metadata/... (bearer
//   token). Rates of counters are computed here, from two successive answers.
// Text from the API is always set with textContent, never parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 2000;
  const HISTORY = 300; // samples kept for the live charts (10 minutes at 2 s)
  const TOKEN_KEY = "pedal.token";
  const TASKS_KEY = "pedal.tasks";
  const AD_KEY = "pedal.ad";
  const MAX_TASKS = 8;

  const $ = (id) => document.getElementById(id);
  const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

  // ---- storage ----------------------------------------------------------

  function load(key, fallback) {
    try {
      const v = window.localStorage.getItem(key);
      return v === null ? fallback : v;
    } catch (e) {
      return fallback;
    }
  }
  function store(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (e) {
      // Storage may be disabled: the dashboard still works for this visit.
    }
  }

  const state = {
    token: load(TOKEN_KEY, ""),
    needToken: false,
    ad: load(AD_KEY, ""),
    adPinned: load(AD_KEY, "") !== "",
    tasks: parseTasks(load(TASKS_KEY, "[]")),
    prev: null, // previous /metrics sample {t, counters}
    history: { t: [], ingest: [], aggIn: [], aggOut: [], lag: [], fresh: [] },
    charts: {},
  };

  function parseTasks(s) {
    try {
      const v = JSON.parse(s);
      return Array.isArray(v) ? v.filter((t) => t && typeof t.id === "string").slice(0, MAX_TASKS) : [];
    } catch (e) {
      return [];
    }
  }

  // ---- the API ----------------------------------------------------------

  class APIError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // problemDetail reads an RFC 9457 problem's detail, or the status text.
  async function problemDetail(resp) {
    try {
      const p = await resp.json();
      if (p && typeof p.detail === "string") return p.detail;
    } catch (e) {
      // not JSON
    }
    return resp.status + " " + resp.statusText;
  }

  // api calls a protected endpoint with the token and returns its JSON.
  async function api(path, options) {
    if (!state.token) throw new APIError(401, "no token");
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json", Authorization: "Bearer " + state.token }, opts.headers);
    opts.cache = "no-store";
    const resp = await fetch(path, opts);
    if (resp.status === 401) {
      const detail = await problemDetail(resp);
      askForToken("The server refused the token: " + detail + ".");
      throw new APIError(401, detail);
    }
    if (!resp.ok) throw new APIError(resp.status, await problemDetail(resp));
    return resp.json();
  }

  // tokenSubject returns the sub claim of a JWT, without verifying it (the
  // server does): metadata tasks are requested by the token's subject.
  function tokenSubject(tok) {
    try {
      const part = tok.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
      return typeof claims.sub === "string" ? claims.sub : "";
    } catch (e) {
      return "";
    }
  }

  // ---- Prometheus text format --------------------------------------------

  // parseMetrics reads the Prometheus text exposition format into
  // {name: [{labels: {...}, value}]}, for the families the dashboard uses.
  function parseMetrics(text, wanted) {
    const out = {};
    for (const line of text.split("\n")) {
      if (line === "" || line[0] === "#") continue;
      let i = 0;
      while (i < line.length && line[i] !== "{" && line[i] !== " ") i++;
      const name = line.slice(0, i);
      if (!wanted.has(name)) continue;
      const labels = {};
      if (line[i] === "{") {
        i++;
        while (i < line.length && line[i] !== "}") {
          let j = line.indexOf("=", i);
          if (j < 0) break; // not the exposition format: ignore the rest of the line
          const key = line.slice(i, j).trim();
          j += 2; // past ="
          let val = "";
          while (j < line.length && line[j] !== '"') {
            if (line[j] === "\\" && j + 1 < line.length) {
              const c = line[j + 1];
              val += c === "n" ? "\n" : c;
              j += 2;
            } else {
              val += line[j++];
            }
          }
          labels[key] = val;
          i = j + 1;
          if (line[i] === ",") i++;
        }
        i++; // past }
      }
      const value = parseFloat(line.slice(i).trim().split(" ")[0]);
      if (!Number.isNaN(value)) (out[name] = out[name] || []).push({ labels: labels, value: value });
    }
    return out;
  }

  const METRICS = new Set([
    "pedal_ingest_clicks_accepted_total",
    "pedal_redirect_clicks_total",
    "pedal_gateway_breaker_state",
    "pedal_gateway_breaker_transitions_total",
    "pedal_gateway_rejections_total",
    "pedal_metadata_breaker_open_hosts",
    "pedal_metadata_tasks_total",
    "pedal_metadata_tasks_running",
    "pedal_metadata_tasks_waiting",
  ]);

  function sum(samples, match) {
    let s = 0, found = false;
    for (const x of samples || []) {
      if (!match || match(x.labels)) {
        s += x.value;
        found = true;
      }
    }
    return found ? s : null;
  }

  // rate is the per-second increase of a counter between two samples (null
  // without an earlier sample, or when the counter was reset).
  function rate(now, prev, key) {
    if (!prev || now.counters[key] == null || prev.counters[key] == null) return null;
    const d = now.counters[key] - prev.counters[key];
    const dt = (now.t - prev.t) / 1000;
    return d < 0 || dt <= 0 ? null : d / dt;
  }

  // ---- DOM helpers --------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function setText(id, v) {
    const e = $(id);
    if (e.textContent !== v) e.textContent = v;
  }

  function fmtRate(x) {
    if (x == null) return "–";
    return x < 10 ? nf1.format(x) : nf0.format(x);
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function fillRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // ---- charts -------------------------------------------------------------

  function chartOpts(el, series, extra) {
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid") } };
    return Object.assign(
      {
        width: Math.max(el.clientWidth, 200),
        height: 200,
        series: [{}].concat(series),
        axes: [Object.assign({}, axis), Object.assign({ size: 60 }, axis)],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      },
      extra || {},
    );
  }

  function makeCharts() {
    for (const c of Object.values(state.charts)) c.destroy();
    state.charts = {};
    const rates = $("chart-rates");
    state.charts.rates = new uPlot(
      chartOpts(rates, [
        { label: "ingested/s", stroke: cssVar("--c-ingest"), width: 2, value: (u, v) => fmtRate(v) },
        { label: "aggregated in/s", stroke: cssVar("--c-in"), width: 1.5, dash: [6, 4], value: (u, v) => fmtRate(v) },
        { label: "aggregated out/s", stroke: cssVar("--c-out"), width: 2, value: (u, v) => fmtRate(v) },
      ]),
      [[], [], [], []],
      rates,
    );
    const lag = $("chart-lag");
    state.charts.lag = new uPlot(
      chartOpts(
        lag,
        [
          { label: "lag (records)", stroke: cssVar("--c-lag"), width: 2, scale: "rec", value: (u, v) => (v == null ? "–" : nf0.format(v)) },
          { label: "freshness (s)", stroke: cssVar("--c-fresh"), width: 2, scale: "s", value: (u, v) => (v == null ? "–" : nf2.format(v)) },
        ],
        {
          axes: [
            { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid") } },
            { scale: "rec", size: 60, stroke: cssVar("--c-lag"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid") } },
            { scale: "s", side: 1, size: 50, stroke: cssVar("--c-fresh"), grid: { show: false }, ticks: { stroke: cssVar("--grid") } },
          ],
          scales: { rec: { range: (u, lo, hi) => [0, Math.max(hi, 10)] }, s: { range: (u, lo, hi) => [0, Math.max(hi, 1)] } },
        },
      ),
      [[], [], []],
      lag,
    );
    const series = $("chart-series");
    const bars = (align) => uPlot.paths.bars({ size: [0.45, 24], align: align });
    state.charts.series = new uPlot(
      chartOpts(series, [
        { label: "valid", stroke: cssVar("--c-valid"), fill: cssVar("--c-valid"), width: 0, paths: bars(-1), points: { show: false } },
        { label: "invalid", stroke: cssVar("--c-invalid"), fill: cssVar("--c-invalid"), width: 0, paths: bars(1), points: { show: false } },
      ], {
        scales: {
          // Half a minute of room on each side, for the bars of the first and last minutes.
          x: { time: true, range: (u, lo, hi) => [lo - 30, hi + 30] },
          y: { range: (u, lo, hi) => [0, Math.max(hi, 1)] },
        },
      }),
      [[], [], []],
      series,
    );
    drawLive();
    if (state.seriesData) state.charts.series.setData(state.seriesData);
  }

  function resizeCharts() {
    for (const [name, c] of Object.entries(state.charts)) {
      const box = $("chart-" + name);
      if (box && box.clientWidth > 0 && box.clientWidth !== c.width) c.setSize({ width: box.clientWidth, height: 200 });
    }
  }

  function drawLive() {
    const h = state.history;
    if (state.charts.rates) {
      state.charts.rates.setData([h.t, h.ingest, h.aggIn, h.aggOut]);
      $("chart-rates").dataset.points = String(h.t.length);
    }
    if (state.charts.lag) {
      state.charts.lag.setData([h.t, h.lag, h.fresh]);
      $("chart-lag").dataset.points = String(h.t.length);
    }
  }

  // ---- panels -------------------------------------------------------------

  async function pollHealth() {
    const pill = $("health");
    try {
      const resp = await fetch("/readyz", { cache: "no-store" });
      const text = (await resp.text()).trim();
      pill.textContent = text || resp.status + "";
      pill.className = "pill " + (resp.ok ? "ok" : "bad");
    } catch (e) {
      pill.textContent = "unreachable";
      pill.className = "pill bad";
    }
  }

  async function pollMetrics() {
    const resp = await fetch("/metrics", { cache: "no-store", headers: { Accept: "text/plain" } });
    if (!resp.ok) throw new APIError(resp.status, "/metrics: " + resp.status);
    const m = parseMetrics(await resp.text(), METRICS);
    const now = {
      t: performance.now(),
      counters: {
        ingest: sum(m.pedal_ingest_clicks_accepted_total),
        redirect: sum(m.pedal_redirect_clicks_total, (l) => l.outcome === "recorded"),
      },
    };
    for (const r of m.pedal_gateway_rejections_total || []) {
      now.counters["rej/" + r.labels.route + "/" + r.labels.reason] = r.value;
    }
    const prev = state.prev;
    state.prev = now;
    const ingestRate = rate(now, prev, "ingest");
    const redirectRate = rate(now, prev, "redirect");
    setText("rate-ingest", fmtRate(ingestRate == null ? null : ingestRate + (redirectRate || 0)));
    setText("rate-redirect", fmtRate(redirectRate));
    setText("total-ingest", now.counters.ingest == null ? "–" : nf0.format(now.counters.ingest + (now.counters.redirect || 0)));

    // Breakers: one row per cluster.
    const transitions = {};
    for (const x of m.pedal_gateway_breaker_transitions_total || []) {
      transitions[x.labels.cluster] = (transitions[x.labels.cluster] || 0) + x.value;
    }
    const states = ["closed", "open", "half-open"];
    const rows = (m.pedal_gateway_breaker_state || [])
      .slice()
      .sort((a, b) => a.labels.cluster.localeCompare(b.labels.cluster))
      .map((x) => {
        const st = states[x.value] || String(x.value);
        const cls = x.value === 0 ? "ok" : x.value === 1 ? "bad" : "warn";
        return el(
          "tr",
          { dataset: { cluster: x.labels.cluster, state: st } },
          el("td", { class: "mono" }, x.labels.cluster),
          el("td", {}, el("span", { class: "badge " + cls }, st)),
          el("td", { class: "num" }, nf0.format(transitions[x.labels.cluster] || 0)),
        );
      });
    fillRows($("breakers").tBodies[0], rows);

    // Rejections by route and reason, with their rate.
    const rej = (m.pedal_gateway_rejections_total || [])
      .filter((x) => x.value > 0)
      .sort((a, b) => b.value - a.value || a.labels.route.localeCompare(b.labels.route));
    fillRows(
      $("rejections").tBodies[0],
      rej.map((x) => {
        const r = rate(now, prev, "rej/" + x.labels.route + "/" + x.labels.reason);
        return el(
          "tr",
          { dataset: { route: x.labels.route, reason: x.labels.reason } },
          el("td", { class: "mono" }, x.labels.route || "(no route)"),
          el("td", {}, x.labels.reason),
          el("td", { class: "num" }, nf0.format(x.value)),
          el("td", { class: "num" }, fmtRate(r)),
        );
      }),
    );
    $("rejections").hidden = rej.length === 0;
    $("rejections-empty").hidden = rej.length !== 0;

    const openHosts = sum(m.pedal_metadata_breaker_open_hosts);
    setText("md-open-hosts", openHosts == null ? "–" : nf0.format(openHosts));
    // A process with the metadata role exports its gauges; its counter of
    // finished tasks has a series per status only once one finished.
    const metadata = m.pedal_metadata_tasks_running != null;
    const v = (name, match) => {
      const s = sum(m[name], match);
      return s != null ? nf0.format(s) : metadata ? "0" : "–";
    };
    setText("md-running", v("pedal_metadata_tasks_running"));
    setText("md-waiting", v("pedal_metadata_tasks_waiting"));
    setText("md-succeeded", v("pedal_metadata_tasks_total", (l) => l.status === "succeeded"));
    setText("md-failed", v("pedal_metadata_tasks_total", (l) => l.status === "failed"));
    return ingestRate == null ? null : ingestRate + (redirectRate || 0);
  }

  async function pollStatus() {
    const st = await api("/v1/pipeline/status");
    let lag = 0, maxLag = 0;
    for (const p of st.partitions) {
      lag += p.lag;
      maxLag = Math.max(maxLag, p.lag);
    }
    setText("rate-in", fmtRate(st.events_in_per_second));
    setText("rate-out", fmtRate(st.events_out_per_second));
    setText("freshness", st.freshness_seconds == null ? "–" : nf2.format(st.freshness_seconds));
    setText("lag-total", nf0.format(lag));
    setText("oldest-age", nf2.format(st.oldest_unprocessed_event_age_seconds));
    fillRows(
      $("partitions").tBodies[0],
      st.partitions.map((p) => {
        const bar = el("div", { class: "bar lag" });
        bar.style.width = maxLag > 0 ? (100 * p.lag) / maxLag + "%" : "0";
        return el(
          "tr",
          { dataset: { partition: String(p.partition) } },
          el("td", {}, String(p.partition)),
          el("td", { class: "num" }, nf0.format(p.log_end_offset)),
          el("td", { class: "num" }, nf0.format(p.committed_offset)),
          el("td", { class: "num" }, nf0.format(p.lag)),
          el("td", { class: "mono" }, p.watermark ? p.watermark.replace("T", " ").replace("Z", "") : "–"),
        );
      }),
    );
    return st;
  }

  async function pollTop() {
    const top = await api("/v1/ads/top?window=5m&limit=10");
    const maxClicks = top.ads.length ? top.ads[0].clicks : 0;
    fillRows(
      $("top-ads").tBodies[0],
      top.ads.map((a, i) => {
        const bar = el("div", { class: "bar" });
        bar.style.width = maxClicks > 0 ? (100 * a.clicks) / maxClicks + "%" : "0";
        const pick = el("button", { class: "link", type: "button", title: "Show this ad's clicks" }, a.ad_id);
        pick.addEventListener("click", () => selectAd(a.ad_id, true));
        return el(
          "tr",
          { class: a.ad_id === state.ad ? "selected" : "", dataset: { ad: a.ad_id, clicks: String(a.clicks) } },
          el("td", { class: "muted" }, String(i + 1)),
          el("td", {}, pick),
          el("td", { class: "num" }, nf0.format(a.clicks)),
          el("td", {}, bar),
        );
      }),
    );
    $("top-empty").hidden = top.ads.length !== 0;
    if (!state.adPinned && top.ads.length && state.ad !== top.ads[0].ad_id) {
      selectAd(top.ads[0].ad_id, false);
    }
  }

  async function pollQuality() {
    const q = await api("/v1/traffic/quality");
    const rows = [
      ["valid", q.valid, "--c-valid"],
      ["bot user agent", q.invalid.bot_user_agent, "--c-bot"],
      ["ip rate", q.invalid.ip_rate, "--c-iprate"],
      ["duplicates", q.duplicates, "--c-dup"],
      ["too late", q.too_late, "--c-late"],
    ];
    const total = rows.reduce((s, r) => s + r[1], 0);
    const share = (n) => (total > 0 ? nf1.format((100 * n) / total) + " %" : "–");
    fillRows(
      $("quality").tBodies[0],
      rows.map(([name, n, color]) => {
        const sw = el("span", { class: "swatch" });
        sw.style.background = cssVar(color);
        return el("tr", { dataset: { kind: name, count: String(n) } }, el("td", {}, sw, name), el("td", { class: "num" }, nf0.format(n)), el("td", { class: "num" }, share(n)));
      }),
    );
    $("quality-bar").replaceChildren(
      ...rows
        .filter((r) => r[1] > 0)
        .map(([name, n, color]) => {
          const d = el("div", { title: name + ": " + nf0.format(n) });
          d.style.width = (100 * n) / total + "%";
          d.style.background = cssVar(color);
          return d;
        }),
    );
    setText("valid-share", total > 0 ? nf1.format((100 * q.valid) / total) : "–");
    setText("valid-total", nf0.format(q.valid));
    setText("classified-total", nf0.format(total));
  }

  function selectAd(ad, pinned) {
    state.ad = ad;
    state.adPinned = pinned;
    if (pinned) store(AD_KEY, ad);
    $("ad-input").value = ad;
    for (const tr of $("top-ads").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.ad === ad);
    pollSeries().catch(showError);
  }

  async function pollSeries() {
    const box = $("chart-series");
    if (!state.ad) {
      setText("series-summary", "No ad selected yet.");
      return;
    }
    const ad = state.ad;
    const s = await api("/v1/ads/" + encodeURIComponent(ad) + "/clicks?granularity=1m");
    if (ad !== state.ad) return; // another ad was picked meanwhile
    // Every minute whose window starts in [from, to), with 0 where the API
    // has no bucket (a missing bucket means no click).
    const from = Math.ceil(Date.parse(s.from) / 60000) * 60;
    const to = Date.parse(s.to) / 1000;
    const byMinute = new Map(s.points.map((p) => [Date.parse(p.window_start) / 1000, p]));
    const xs = [], valid = [], invalid = [];
    for (let t = from; t < to; t += 60) {
      const p = byMinute.get(t);
      xs.push(t);
      valid.push(p ? p.clicks : 0);
      invalid.push(p ? p.invalid_clicks : 0);
    }
    let sv = 0, si = 0;
    for (const p of s.points) {
      sv += p.clicks;
      si += p.invalid_clicks;
    }
    state.seriesData = [xs, valid, invalid];
    state.charts.series.setData(state.seriesData);
    box.dataset.points = String(s.points.length);
    box.dataset.ad = ad;
    const summary = $("series-summary");
    summary.replaceChildren(
      el("strong", {}, s.ad_id),
      ": ",
      el("span", { id: "series-valid" }, nf0.format(sv)),
      " valid, ",
      el("span", { id: "series-invalid" }, nf0.format(si)),
      " invalid clicks in the last hour",
    );
  }

  // ---- metadata tasks -----------------------------------------------------

  function saveTasks() {
    store(TASKS_KEY, JSON.stringify(state.tasks.map((t) => ({ id: t.id, url: t.url }))));
  }

  async function submitCollect(ev) {
    ev.preventDefault();
    const err = $("collect-error");
    err.hidden = true;
    const url = $("collect-url").value.trim();
    if (!state.token) {
      askForToken("Submitting a URL needs a token.");
      return;
    }
    try {
      const task = await api("/v1/metadata/collect", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ target_url: url, requested_by: tokenSubject(state.token) }),
      });
      state.tasks.unshift({ id: task.task_id, url: url, task: task });
      state.tasks = state.tasks.slice(0, MAX_TASKS);
      saveTasks();
      $("collect-url").value = "";
      renderTasks();
    } catch (e) {
      if (e.status !== 401) {
        err.textContent = "Not accepted: " + e.message;
        err.hidden = false;
      }
    }
  }

  async function pollTasks() {
    const open = state.tasks.filter((t) => !t.task || (t.task.status !== "SUCCEEDED" && t.task.status !== "FAILED"));
    await Promise.all(
      open.map(async (t) => {
        try {
          t.task = await api("/v1/metadata/tasks/" + encodeURIComponent(t.id));
        } catch (e) {
          if (e.status === 404) t.task = { status: "UNKNOWN", error: { code: "not_found", message: e.message } };
          else throw e;
        }
      }),
    );
    renderTasks();
  }

  function renderTasks() {
    const badge = { SUCCEEDED: "ok", FAILED: "bad", RUNNING: "warn", QUEUED: "idle" };
    $("tasks").replaceChildren(
      ...state.tasks.map((t) => {
        const task = t.task || { status: "…" };
        const li = el(
          "li",
          { dataset: { task: t.id, status: task.status } },
          el("span", { class: "badge " + (badge[task.status] || "idle") }, task.status),
          " ",
          el("span", { class: "url" }, t.url),
        );
        const r = task.result;
        if (r) {
          if (r.title) li.append(el("div", { class: "title" }, r.title));
          if (r.description) li.append(el("div", { class: "desc" }, r.description));
          const facts = [];
          if (r.http_status) facts.push("HTTP " + r.http_status);
          if (r.content_type) facts.push(r.content_type);
          if (r.bytes_read != null) facts.push(nf0.format(r.bytes_read) + " bytes" + (r.truncated ? " (truncated)" : ""));
          if (r.images && r.images.length) facts.push(r.images.length + " image" + (r.images.length > 1 ? "s" : ""));
          if (task.final_url && task.final_url !== t.url) facts.push("→ " + task.final_url);
          li.append(el("div", { class: "sub" }, facts.join(" · ")));
        }
        if (task.error) li.append(el("div", { class: "error" }, task.error.code + ": " + task.error.message));
        if (task.attempts != null) li.append(el("div", { class: "sub" }, t.id + " · " + task.attempts + " attempt" + (task.attempts === 1 ? "" : "s")));
        return li;
      }),
    );
  }

  // ---- the token ----------------------------------------------------------

  function askForToken(reason) {
    state.needToken = true;
    setText("token-reason", reason);
    $("token-panel").hidden = false;
    $("token-input").focus();
  }

  function showWho() {
    const sub = tokenSubject(state.token);
    setText("whoami", state.token ? (sub ? "as " + sub : "token set") : "");
  }

  function useToken(tok) {
    state.token = tok;
    state.needToken = false;
    store(TOKEN_KEY, tok || null);
    $("token-panel").hidden = true;
    $("token-input").value = "";
    showWho();
  }

  // ---- the loop -------------------------------------------------------------

  function showError(e) {
    const box = $("api-error");
    if (!e || e.status === 401) return;
    box.textContent = "Could not read the API: " + (e.message || String(e));
    box.hidden = false;
  }

  // One poll at a time: poke() during a poll asks for another right after it.
  let timer = 0, polling = false, again = false;
  function poke() {
    if (polling) {
      again = true;
      return;
    }
    clearTimeout(timer);
    tick();
  }

  async function tick() {
    polling = true;
    try {
      await poll();
    } finally {
      polling = false;
      timer = setTimeout(tick, again ? 0 : POLL_MS);
      again = false;
    }
  }

  async function poll() {
    $("api-error").hidden = true;
    const jobs = [pollHealth(), pollMetrics()];
    if (state.token && !state.needToken) {
      jobs.push(pollStatus(), pollTop(), pollQuality(), pollSeries(), pollTasks());
    }
    const results = await Promise.allSettled(jobs);
    results.filter((r) => r.status === "rejected").forEach((r) => showError(r.reason));

    // One sample of the live charts per poll.
    const ingest = results[1].status === "fulfilled" ? results[1].value : null;
    const st = results.length > 2 && results[2].status === "fulfilled" ? results[2].value : null;
    const h = state.history;
    h.t.push(Date.now() / 1000);
    h.ingest.push(ingest);
    h.aggIn.push(st ? st.events_in_per_second : null);
    h.aggOut.push(st ? st.events_out_per_second : null);
    h.lag.push(st ? st.partitions.reduce((s, p) => s + p.lag, 0) : null);
    h.fresh.push(st ? st.freshness_seconds : null);
    for (const k of Object.keys(h)) if (h[k].length > HISTORY) h[k].shift();
    drawLive();
    setText("updated", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  }

  function start() {
    $("token-open").addEventListener("click", () => askForToken(state.token ? "Replace the token this dashboard uses." : "The dashboard reads pedal's API, which needs a bearer token."));
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const tok = $("token-input").value.trim();
      if (tok) {
        useToken(tok);
        poke();
      }
    });
    $("token-forget").addEventListener("click", () => {
      useToken("");
      askForToken("The token was forgotten. Paste another to read the API.");
    });
    $("ad-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const ad = $("ad-input").value.trim();
      if (ad) selectAd(ad, true);
      else {
        store(AD_KEY, null);
        state.adPinned = false;
      }
    });
    $("collect-form").addEventListener("submit", submitCollect);

    makeCharts();
    if (window.ResizeObserver) new ResizeObserver(resizeCharts).observe(document.querySelector(".grid"));
    const dark = window.matchMedia("(prefers-color-scheme: dark)");
    if (dark.addEventListener) dark.addEventListener("change", makeCharts);

    showWho();
    renderTasks();
    if (state.ad) $("ad-input").value = state.ad;
    if (!state.token) askForToken("The dashboard reads pedal's API, which needs a bearer token.");
    tick();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
