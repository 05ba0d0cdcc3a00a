// nometer savings dashboard: reads /v1/nometer/report and /readyz, draws tables and SVG charts.
// No dependencies, no build step, nothing loaded from outside the gateway.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, not a download
  const KEY = "nometer.key";
  const REFRESH_MS = 30000;
  const BACKENDS_MS = 5000;
  const EST_TITLE = "estimated: the provider publishes no tokenizer; counts are o200k times a documented factor";
  const UNPRICED_TITLE = "the price table has no price for this model: unpriced, never counted as $0";

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const testid = (id) => $(`[data-testid="${id}"]`);

  const params = new URLSearchParams(location.search);
  const state = {
    since: params.has("since") ? params.get("since") : "30d",
    ref: params.get("ref"),
    mode: "daily",
    reports: null,
    key: null,
  };

  // A key in the URL (?key=...) moves to this tab's session storage and out of the address bar.
  if (params.has("key")) {
    sessionStorage.setItem(KEY, params.get("key"));
    params.delete("key");
  }
  state.key = sessionStorage.getItem(KEY);

  // -- formatting ----------------------------------------------------------------------------

  /** A decimal string (the report's money) as dollars, rounded half-up exactly like
   * `nometer report`: 2 places from $1, 4 from $0.01, else 6. Exact: no float arithmetic. */
  function usd(value) {
    if (value === null || value === undefined) return null;
    let s = String(value);
    const neg = s[0] === "-";
    if (neg || s[0] === "+") s = s.slice(1);
    let [ip, fp = ""] = s.split(".");
    ip = ip.replace(/^0+(?=\d)/, "") || "0";
    if (ip === "0" && /^0*$/.test(fp)) return "$0.00";
    const dp = ip !== "0" ? 2 : /^(?:[1-9]|0[1-9])/.test(fp) ? 4 : 6;
    const scaled = BigInt(ip + fp.padEnd(dp + 1, "0").slice(0, dp + 1));
    const rounded = (scaled + 5n) / 10n;
    if (rounded === 0n) return neg ? "-<$0.000001" : "<$0.000001"; // not zero: too small to write
    const t = rounded.toString().padStart(dp + 1, "0");
    const whole = t.slice(0, -dp).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (neg ? "-" : "") + "$" + whole + "." + t.slice(-dp);
  }

  /** Short axis labels: $0, $0.05, $1.2, $35, $1.2k. */
  function usdShort(v) {
    const a = Math.abs(v);
    const sign = v < 0 ? "-" : "";
    if (a === 0) return "$0";
    if (a >= 1e6) return `${sign}$${+(a / 1e6).toPrecision(3)}M`;
    if (a >= 1e3) return `${sign}$${+(a / 1e3).toPrecision(3)}k`;
    return `${sign}$${a.toLocaleString("en-US", { maximumSignificantDigits: 3, maximumFractionDigits: 12 })}`;
  }

  const int = (n) => Number(n).toLocaleString("en-US");
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumSignificantDigits: 3 });
  const dayLabel = (d) => new Date(`${d}T00:00:00Z`).toLocaleDateString("en-US",
    { month: "short", day: "numeric", timeZone: "UTC" });

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function svg(tag, attrs = {}, parent = null) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.append(e);
    return e;
  }

  /** A money figure: data-value keeps the report's exact string ("" when unpriced). */
  function money(value, { estimated = false, unpriced = 0, signed = false } = {}) {
    const wrap = el("span", { class: "money", "data-value": value ?? "", "data-estimated": estimated ? "true" : null });
    if (value === null || value === undefined) {
      wrap.append(el("span", { class: "v unpriced", title: UNPRICED_TITLE, text: "unpriced" }));
      return wrap;
    }
    if (estimated) wrap.append(el("span", { class: "est", title: EST_TITLE, text: "≈" }));
    const cls = signed && value.startsWith("-") ? "v neg" : "v";
    wrap.append(el("span", { class: cls, text: usd(value) }));
    if (unpriced) wrap.append(el("span", { class: "partial", title: UNPRICED_TITLE, text: ` +${unpriced} unpriced` }));
    return wrap;
  }

  /** A reference a group has no figure for at all (hosted or failed requests only): not metered. */
  function refMoney(dict, ref, opts) {
    if (ref && Object.hasOwn(dict, ref)) return money(dict[ref], opts);
    return el("span", { class: "money", "data-value": "", "data-absent": "true" },
      el("span", { class: "v dim", title: "no locally served request here to compare", text: "–" }));
  }

  function setMoney(target, value, opts) {
    target.replaceChildren(money(value, opts));
    target.dataset.value = value ?? "";
  }

  // -- data ------------------------------------------------------------------------------------

  class AuthError extends Error {}

  async function get(path, { allow = [] } = {}) {
    const headers = { accept: "application/json" };
    if (state.key) headers.authorization = `Bearer ${state.key}`;
    const r = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch { /* not JSON */ }
    const msg = body && body.error ? body.error.message : `${path}: HTTP ${r.status}`;
    if (r.status === 401) throw new AuthError(msg);
    if (!r.ok && !allow.includes(r.status)) throw new Error(msg);
    return body;
  }

  function reportUrl(by) {
    const q = new URLSearchParams({ by });
    if (state.since) q.set("since", state.since);
    if (by !== "day") q.set("integrity", "0"); // the proof block is the same for all four: ask once
    return `v1/nometer/report?${q}`;
  }

  async function load() {
    try {
      const [day, team, model, tag] = await Promise.all(["day", "team", "model", "tag"].map((b) => get(reportUrl(b))));
      state.reports = { day, team, model, tag };
      hideKeyForm();
      render();
      document.body.dataset.state = "ready";
      $("main").setAttribute("aria-busy", "false");
    } catch (err) {
      if (err instanceof AuthError) return askForKey(state.key ? `That key was refused: ${err.message}` : null);
      showMessage(`Could not load the report: ${err.message}`);
      for (const p of $$("[data-testid=loading]")) p.textContent = "No data: the report could not be loaded.";
      document.body.dataset.state = state.reports ? "ready" : "error";
      $("main").setAttribute("aria-busy", "false");
    }
  }

  async function loadBackends() {
    try {
      renderBackends(await get("readyz", { allow: [503] }));
    } catch (err) {
      if (!(err instanceof AuthError)) testid("backends").replaceChildren(el("p", { class: "empty", text: err.message }));
    }
  }

  // -- key prompt ------------------------------------------------------------------------------

  function askForKey(message) {
    document.body.dataset.state = "need-key";
    const form = testid("key-form");
    form.hidden = false;
    showMessage(message);
    $("input", form).focus();
  }

  function hideKeyForm() {
    testid("key-form").hidden = true;
    showMessage(null);
  }

  function showMessage(text) {
    const m = testid("message");
    m.hidden = !text;
    m.textContent = text || "";
  }

  // -- rendering -------------------------------------------------------------------------------

  function render() {
    const { day } = state.reports;
    const refs = day.references;
    if (!refs.includes(state.ref)) state.ref = refs.includes(day.payback.reference) ? day.payback.reference : refs[0] || null;
    renderControls(refs);
    renderKpis(day);
    renderChart();
    renderReferences(day);
    renderTable("team", state.reports.team, { empty: "(no team)" });
    renderTable("model", state.reports.model, { empty: "(unknown)" });
    renderTable("tag", state.reports.tag, { empty: null, top: 10 });
    renderCauses(day.totals.hosted_spend_by_cause);
    renderFacts(day);
    renderProof(day);
    testid("updated").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")} · refreshes every ${REFRESH_MS / 1000} s`;
  }

  function renderControls(refs) {
    const select = testid("reference-select");
    const want = refs.join("\n");
    if (select.dataset.refs !== want) {
      select.replaceChildren(...refs.map((r) => el("option", { value: r, text: r })));
      select.dataset.refs = want;
    }
    select.value = state.ref ?? "";
    select.disabled = refs.length === 0;
    for (const b of $$("[data-since]")) b.setAttribute("aria-pressed", String(b.dataset.since === state.since));
    for (const b of $$("[data-mode]")) b.setAttribute("aria-pressed", String(b.dataset.mode === state.mode));
    for (const s of $$("[data-ref-label]")) s.textContent = state.ref ? `vs ${state.ref}` : "";
    const team = state.reports.day.team;
    const scope = testid("scope");
    scope.textContent = team ? `team ${team}` : "all teams";
    scope.dataset.team = team ?? "";
    const q = new URLSearchParams();
    if (state.since) q.set("since", state.since);
    $("[data-link=json]").href = `v1/nometer/report?${q}`;
    q.set("format", "csv");
    $("[data-link=csv]").href = `v1/nometer/report?${q}`;
    $(".foot .raw").hidden = !!state.key; // a link cannot carry the key: it would only get a 401
  }

  function renderKpis(rep) {
    const t = rep.totals;
    const ref = state.ref;
    const est = !!(ref && t.cloud_tokens[ref] && t.cloud_tokens[ref].estimated);
    const unpriced = ref ? t.unpriced_requests[ref] || 0 : 0;
    const cloud = ref ? t.cloud_cost_usd[ref] : null;
    // the headline is all-in (what owning the box cost in the period); marginal is shown beside it
    const allIn = !!t.all_in_cost_usd;
    const savings = ref ? (allIn ? t.all_in_savings_usd[ref] : t.savings_usd[ref]) : null;
    const marginalSavings = ref ? t.savings_usd[ref] : null;
    if (ref) {
      setMoney(testid("kpi-savings"), savings, { estimated: est, signed: true });
      setMoney(testid("kpi-cloud"), cloud, { estimated: est });
    } else { // nothing metered yet: no reference to compare with
      for (const id of ["kpi-savings", "kpi-cloud"]) testid(id).replaceChildren(el("span", { class: "v", text: "–" }));
    }
    // an empty period has no local cost entries at all: that is $0, not "unpriced"
    const own = allIn ? t.all_in_cost_usd : { total: t.local_cost_usd.total, hardware: t.local_cost_usd.hardware, idle_energy: "0", busy_energy: t.local_cost_usd.energy };
    setMoney(testid("kpi-local"), own.total ?? "0");
    setMoney(testid("kpi-local-energy"), own.busy_energy ?? "0");
    setMoney(testid("kpi-local-idle"), own.idle_energy ?? "0");
    setMoney(testid("kpi-local-hardware"), own.hardware ?? "0");
    setMoney(testid("kpi-marginal"), t.local_cost_usd.total ?? "0");
    setMoney(testid("kpi-hosted"), t.hosted_spend_usd);
    testid("kpi-requests").textContent = int(t.requests);
    testid("kpi-local-requests").textContent = int(t.local_requests);
    testid("kpi-hosted-requests").textContent = int(t.hosted_requests);

    const sNote = testid("kpi-savings-note");
    if (cloud !== null && savings !== null && Number(cloud) > 0) {
      const pct = Math.floor((1000 * Number(savings)) / Number(cloud)) / 10; // never rounds up to 100%
      sNote.textContent = pct >= 0 ? `${pct.toFixed(1)}% less than the cloud bill` : "local cost more than the cloud bill";
    } else {
      sNote.textContent = ref ? "no priced requests in this period" : "no local requests in this period";
    }
    if (unpriced) sNote.textContent += ` · ${int(unpriced)} unpriced`;
    if (allIn && marginalSavings !== null && marginalSavings !== undefined) sNote.textContent += ` · marginal ${usd(marginalSavings)}`;
    const ct = ref && t.cloud_tokens[ref];
    testid("kpi-cloud-note").textContent = ct
      ? `${est ? "≈ " : ""}${int(ct.input)} in · ${int(ct.output)} out tokens${est ? " (estimated)" : ""}`
      : "\u00a0";

    const pb = rep.payback;
    const days = testid("payback-days");
    const note = testid("payback-note");
    days.dataset.value = pb.days_to_payback ?? "";
    const box = usd(pb.hardware_usd).replace(/\.00$/, "");
    const mp = pb.marginal;
    const marginalNote = mp ? ` · marginal: ${mp.days_to_payback !== null ? `${mp.days_to_payback.toLocaleString("en-US")} days` : "no payback"}` : "";
    const net = (pb.net_per_day_usd !== null ? ` · net ${usd(pb.net_per_day_usd)}/day vs ${pb.reference}${allIn ? " (all-in)" : ""}` : "") + marginalNote;
    if (pb.days_to_payback !== null) {
      days.textContent = pb.payback_date ? `${pb.days_to_payback.toLocaleString("en-US")} days` : "100+ years";
      note.textContent = `${pb.payback_date ? `by ${pb.payback_date} · ` : ""}${box} box${net}`;
    } else if (pb.net_per_day_usd !== null) {
      days.textContent = "not at this rate";
      note.textContent = `${box} box${net}`;
    } else {
      days.textContent = "–";
      note.textContent = `${box} box · no priced requests yet`;
    }
    note.dataset.reference = pb.reference ?? "";
  }

  // -- the time chart --------------------------------------------------------------------------

  function dayRange(rep) {
    const keys = rep.groups.map((g) => g.key).filter(Boolean).sort();
    const today = new Date().toISOString().slice(0, 10);
    const first = rep.period.from ? rep.period.from.slice(0, 10) : keys[0] || today;
    const last = rep.period.to ? rep.period.to.slice(0, 10) : (keys.at(-1) > today ? keys.at(-1) : today);
    const out = [];
    for (let t = Date.parse(`${first}T00:00:00Z`); t <= Date.parse(`${last}T00:00:00Z`); t += 86400000) {
      out.push(new Date(t).toISOString().slice(0, 10));
    }
    return out;
  }

  function series(rep, ref) {
    const byDay = new Map(rep.groups.map((g) => [g.key, g]));
    return dayRange(rep).map((d) => {
      const g = byDay.get(d);
      const n = (v) => (v === null || v === undefined ? 0 : Number(v));
      return {
        day: d,
        requests: g ? g.requests : 0,
        cloud: g && ref ? n(g.cloud_cost_usd[ref]) : 0,
        local: g ? n(g.local_cost_usd.total) : 0,
        savings: g && ref ? n(g.savings_usd[ref]) : 0,
        raw: g && ref ? { cloud: g.cloud_cost_usd[ref], local: g.local_cost_usd.total, savings: g.savings_usd[ref] } : null,
      };
    });
  }

  function niceTicks(lo, hi, count = 4) {
    if (hi <= lo) hi = lo + 1;
    const raw = (hi - lo) / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const ticks = [];
    for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
    if (ticks.at(-1) < hi) ticks.push(+(ticks.at(-1) + step).toPrecision(12));
    return ticks;
  }

  function renderChart() {
    const host = testid("chart-savings");
    const rep = state.reports.day;
    const pts = series(rep, state.ref);
    const cumulative = state.mode === "cumulative";
    let acc = { cloud: 0, local: 0, savings: 0 };
    const rows = pts.map((p) => {
      if (!cumulative) return p;
      acc = { cloud: acc.cloud + p.cloud, local: acc.local + p.local, savings: acc.savings + p.savings };
      return { ...p, ...acc };
    });

    const W = Math.max(host.clientWidth || 720, 320);
    const H = 300;
    const vals = rows.flatMap((r) => [r.cloud, r.local, r.savings]);
    const ticks = niceTicks(Math.min(0, ...vals), Math.max(0, ...vals));
    const m = { l: Math.max(48, 14 + 6.5 * Math.max(...ticks.map((t) => usdShort(t).length))), r: 16, t: 12, b: 28 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const y0 = ticks[0];
    const y1 = ticks.at(-1);
    const n = rows.length;
    const band = pw / n;
    const x = (i) => m.l + band * (i + 0.5);
    const y = (v) => m.t + ph - ((v - y0) / (y1 - y0)) * ph;

    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": `${cumulative ? "cumulative" : "daily"} cloud-equivalent cost, local cost and savings`,
      "data-mode": state.mode, "data-points": n });
    const grid = svg("g", { class: "grid" }, root);
    for (const t of ticks) {
      svg("line", { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t), class: t === 0 ? "zero" : "" }, grid);
      svg("text", { x: m.l - 8, y: y(t) + 4, "text-anchor": "end", class: "axis" }, grid).textContent = usdShort(t);
    }
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 80))));
    for (let i = 0; i < n; i += every) {
      svg("text", { x: x(i), y: H - 8, "text-anchor": "middle", class: "axis" }, grid).textContent = dayLabel(rows[i].day);
    }

    const line = (key) => rows.map((r, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(r[key]).toFixed(1)}`).join("");
    const area = (key) => `${line(key)}L${x(n - 1).toFixed(1)},${y(0).toFixed(1)}L${x(0).toFixed(1)},${y(0).toFixed(1)}Z`;

    if (cumulative) {
      svg("path", { d: area("cloud"), class: "area cloud" }, root);
      svg("path", { d: area("savings"), class: "area savings" }, root);
    } else {
      const bw = Math.max(2, Math.min(28, band * 0.62));
      const bars = svg("g", { class: "bars" }, root);
      rows.forEach((r, i) => {
        const top = y(Math.max(0, r.savings));
        svg("rect", { x: (x(i) - bw / 2).toFixed(1), y: top.toFixed(1), width: bw.toFixed(1),
          height: Math.max(0, Math.abs(y(r.savings) - y(0))).toFixed(1), rx: Math.min(3, bw / 4),
          class: r.savings < 0 ? "bar neg" : "bar", "data-day": r.day }, bars);
      });
    }
    svg("path", { d: line("cloud"), class: "series cloud", "data-series": "cloud" }, root);
    svg("path", { d: line("local"), class: "series local", "data-series": "local" }, root);
    if (cumulative) svg("path", { d: line("savings"), class: "series savings", "data-series": "savings" }, root);
    const dots = svg("g", { class: "points" }, root);
    rows.forEach((r, i) => {
      if (!r.requests && !cumulative) return;
      svg("circle", { cx: x(i).toFixed(1), cy: y(r.cloud).toFixed(1), r: n > 45 ? 2 : 3, class: "pt cloud",
        "data-day": r.day, "data-value": r.raw ? r.raw.cloud ?? "" : "0" }, dots);
    });

    const guide = svg("line", { class: "guide", y1: m.t, y2: m.t + ph, x1: m.l, x2: m.l }, root);
    const hit = svg("rect", { x: m.l, y: m.t, width: pw, height: ph, class: "hit" }, root);
    const tip = testid("tooltip");
    hit.addEventListener("mousemove", (ev) => {
      const box = root.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * W;
      const i = Math.min(n - 1, Math.max(0, Math.floor((px - m.l) / band)));
      const r = rows[i];
      guide.setAttribute("x1", x(i));
      guide.setAttribute("x2", x(i));
      guide.classList.add("on");
      tip.replaceChildren(
        el("b", { text: `${dayLabel(r.day)}${cumulative ? " (running total)" : ""}` }),
        el("div", {}, el("i", { class: "sw cloud" }), `cloud ${usdShort(r.cloud)}`),
        el("div", {}, el("i", { class: "sw local" }), `local ${usdShort(r.local)}`),
        el("div", {}, el("i", { class: "sw savings" }), `saved ${usdShort(r.savings)}`),
        el("div", { class: "muted", text: `${int(pts[i].requests)} requests` }));
      tip.hidden = false;
      tip.style.left = `${Math.min(ev.clientX + 14, innerWidth - 190)}px`;
      tip.style.top = `${ev.clientY + 14}px`;
    });
    hit.addEventListener("mouseleave", () => { tip.hidden = true; guide.classList.remove("on"); });
    host.replaceChildren(root);

    const est = state.ref && rep.totals.cloud_tokens[state.ref] && rep.totals.cloud_tokens[state.ref].estimated;
    testid("chart-legend").replaceChildren(
      el("span", {}, el("i", { class: "sw savings" }), cumulative ? "saved, running total" : "saved per day"),
      el("span", {}, el("i", { class: "sw cloud" }), `${est ? "≈ " : ""}${state.ref ?? "cloud"} would have billed`),
      el("span", {}, el("i", { class: "sw local" }), "local cost (energy + hardware)"));
  }

  // -- references, tables, causes, backends ------------------------------------------------------

  function renderReferences(rep) {
    const t = rep.totals;
    const host = testid("references");
    if (!rep.references.length) return host.replaceChildren(el("p", { class: "empty", text: "No metered requests yet." }));
    const max = Math.max(Number(t.local_cost_usd.total), ...rep.references.map((r) => Number(t.cloud_cost_usd[r] ?? 0))) || 1;
    const localW = (100 * Number(t.local_cost_usd.total ?? 0)) / max;
    const rows = rep.references.map((ref) => {
      const cost = t.cloud_cost_usd[ref];
      const est = !!(t.cloud_tokens[ref] && t.cloud_tokens[ref].estimated);
      const bar = el("div", { class: "rbar" });
      if (cost !== null) {
        const fill = el("i", { class: "fill" });
        fill.style.width = `${Math.max(0.5, (100 * Number(cost)) / max)}%`;
        const loc = el("i", { class: "loc", title: `local cost ${usd(t.local_cost_usd.total ?? "0")}` });
        loc.style.width = `${Math.max(0.4, localW)}%`;
        bar.append(fill, loc);
      }
      const row = el("button", { type: "button", class: `rrow${ref === state.ref ? " on" : ""}`, "data-ref": ref,
        "data-testid": "reference-row" },
      el("span", { class: "rname", text: ref }),
      el("span", { class: "rcost" }, money(cost, { estimated: est, unpriced: t.unpriced_requests[ref] || 0 })),
      bar,
      el("span", { class: "rsave" }, "saves ", money(t.savings_usd[ref], { estimated: est, signed: true })));
      row.addEventListener("click", () => { state.ref = ref; render(); });
      return row;
    });
    const legend = el("p", { class: "legend small" }, el("span", {}, el("i", { class: "sw cloud" }), "cloud bill"),
      el("span", {}, el("i", { class: "sw local" }), `local cost ${usd(t.local_cost_usd.total ?? "0")}`));
    host.replaceChildren(...rows, legend);
  }

  function renderTable(dim, rep, { empty, top = 0 }) {
    const host = testid(`table-${dim}`);
    const ref = state.ref;
    const sav = (g) => (ref && g.savings_usd[ref] !== null && g.savings_usd[ref] !== undefined ? Number(g.savings_usd[ref]) : -Infinity);
    let groups = rep.groups.slice();
    let untagged = null;
    if (empty === null) {
      untagged = groups.find((g) => g.key === null) || null;
      groups = groups.filter((g) => g.key !== null);
    }
    groups.sort((a, b) => sav(b) - sav(a) || b.requests - a.requests || String(a.key).localeCompare(String(b.key)));
    const shown = top ? groups.slice(0, top) : groups;
    if (!shown.length) {
      host.replaceChildren(el("p", { class: "empty", text: dim === "tag" ? "No tagged requests in this period." : "No requests in this period." }));
      return;
    }
    const max = Math.max(...shown.map((g) => Math.max(0, sav(g)))) || 1;
    const head = el("tr", {}, el("th", { text: dim }), el("th", { class: "num", text: "requests" }),
      el("th", { class: "num", text: "tokens in/out", title: "local tokens: prompt / completion" }), el("th", { class: "num", text: "local" }),
      el("th", { class: "num", text: ref ? `${ref}` : "cloud" }), el("th", { class: "num", text: "saved" }),
      el("th", { class: "barcol", "aria-hidden": "true" }));
    const body = shown.map((g) => {
      const est = !!(ref && g.cloud_tokens[ref] && g.cloud_tokens[ref].estimated);
      const bar = el("i");
      bar.style.width = `${Math.max(0, (100 * Math.max(0, sav(g))) / max)}%`;
      return el("tr", { "data-key": g.key ?? "" },
        el("td", { class: g.key === null ? "key none" : "key", "data-col": "key", text: g.key ?? empty, title: g.key ?? empty }),
        el("td", { class: "num", "data-col": "requests", text: int(g.requests) }),
        el("td", { class: "num dim", "data-col": "tokens", title: `${int(g.local_tokens.prompt)} in / ${int(g.local_tokens.completion)} out`,
          text: `${compact.format(g.local_tokens.prompt)} / ${compact.format(g.local_tokens.completion)}` }),
        el("td", { class: "num", "data-col": "local" }, money(g.local_cost_usd.total)),
        el("td", { class: "num", "data-col": "cloud" }, refMoney(g.cloud_cost_usd, ref, { estimated: est, unpriced: g.unpriced_requests[ref] || 0 })),
        el("td", { class: "num strong", "data-col": "savings" }, refMoney(g.savings_usd, ref, { estimated: est, signed: true })),
        el("td", { class: "barcol" }, el("span", { class: "cellbar" }, bar)));
    });
    const table = el("div", { class: "scroll" }, el("table", { class: "tbl" }, el("thead", {}, head), el("tbody", {}, ...body)));
    const foot = [];
    if (top && groups.length > top) foot.push(`${groups.length - top} more tags`);
    if (untagged) foot.push(`untagged: ${int(untagged.requests)} requests`);
    host.replaceChildren(table, ...(foot.length ? [el("p", { class: "hint", "data-testid": `table-${dim}-foot`, text: foot.join(" · ") })] : []));
  }

  function renderCauses(causes) {
    const host = testid("hosted-causes");
    const entries = Object.entries(causes);
    if (!entries.length) {
      host.replaceChildren(el("p", { class: "empty", text: "None: every request in this period was served locally." }));
      return;
    }
    const max = Math.max(...entries.map(([, v]) => Number(v.usd))) || 1;
    host.replaceChildren(el("table", { class: "tbl" },
      el("thead", {}, el("tr", {}, el("th", { text: "cause" }), el("th", { class: "num", text: "requests" }),
        el("th", { class: "num", text: "spend" }), el("th", { class: "barcol" }))),
      el("tbody", {}, ...entries.map(([cause, v]) => {
        const bar = el("i", { class: "hosted" });
        bar.style.width = `${(100 * Number(v.usd)) / max}%`;
        return el("tr", { "data-key": cause }, el("td", { class: "key", "data-col": "key", text: cause.replaceAll("_", " ") }),
          el("td", { class: "num", "data-col": "requests", text: int(v.requests) }),
          el("td", { class: "num", "data-col": "usd" }, money(v.usd)),
          el("td", { class: "barcol" }, el("span", { class: "cellbar" }, bar)));
      }))));
  }

  function renderBackends(ready) {
    const host = testid("backends");
    const list = (ready && ready.backends) || [];
    if (!list.length) {
      host.replaceChildren(el("p", { class: "empty", text: "No backend configured." }));
    } else {
      const maxOut = Math.max(4, ...list.map((b) => b.outstanding));
      host.replaceChildren(...list.map((b) => {
        const load = el("i");
        load.style.width = `${(100 * b.outstanding) / maxOut}%`;
        return el("div", { class: "backend", "data-testid": "backend", "data-name": b.name, "data-healthy": String(b.healthy) },
          el("span", { class: `dot ${b.healthy ? "up" : "down"}`, title: b.healthy ? "healthy" : "unhealthy" }),
          el("div", { class: "bmain" },
            el("div", { class: "bname" }, el("b", { text: b.name }), b.managed ? el("span", { class: "tag", text: "managed" }) : null,
              el("span", { class: `state ${b.healthy ? "up" : "down"}`, "data-testid": "backend-state", text: b.healthy ? "healthy" : "down" })),
            el("div", { class: "bmodels", text: b.models.join(", ") || (b.error ? b.error : "no models") }),
            el("div", { class: "bload" }, el("span", { class: "cellbar" }, load),
              el("span", { "data-testid": "backend-outstanding", text: `${int(b.outstanding)} in flight` })),
            vllmLine(b)));
      }));
    }
    testid("backends-updated").textContent = ready ? ready.status : "";
  }

  // vLLM's own numbers, scraped by the gateway from the backend's /metrics (absent: not vLLM)
  function vllmLine(b) {
    const parts = [];
    if (b.waiting != null) parts.push(`${int(b.waiting)} queued`);
    if (b.kv_cache_usage != null) parts.push(`KV ${Math.round(100 * b.kv_cache_usage)}%`);
    if (b.prefix_hit_rate != null) parts.push(`prefix hits ${Math.round(100 * b.prefix_hit_rate)}%`);
    if (b.ejected_s > 0) parts.push(`ejected ${Math.ceil(b.ejected_s)} s`);
    return parts.length ? el("div", { class: "bmodels", "data-testid": "backend-vllm", text: parts.join(" · ") }) : null;
  }

  function renderFacts(rep) {
    testid("price-tables").textContent = rep.price_tables.join(", ") || "–";
    testid("cache-modes").textContent = rep.cache_modes.join(", ") || "–";
    const p = rep.period;
    testid("period-range").textContent = `${p.from ? p.from.replace("T", " ").slice(0, 16) : "start of ledger"} → ${p.to ? p.to.replace("T", " ").slice(0, 16) : "now"} UTC`;
    testid("hardware").textContent = `${usd(rep.payback.hardware_usd).replace(/\.00$/, "")} hardware; payback vs ${rep.payback.reference ?? "–"}`;
  }

  const PROOF = {
    verified: "verified",
    partly_verified: "partly verified",
    failed: "verification failed",
    unverified: "not verified",
  };

  /** The period's proof: verify state, rows outside the chain, and the chain heads it rests on. */
  function renderProof(rep) {
    const p = rep.integrity;
    const host = testid("proof");
    host.hidden = !p;
    if (!p) return;
    const last = p.last_verification;
    const badge = testid("proof-state");
    badge.textContent = PROOF[p.verify_state] || p.verify_state;
    badge.dataset.state = p.verify_state;
    const when = last ? last.at.replace("T", " ").slice(0, 16) + " UTC" : "";
    testid("proof-note").textContent = {
      verified: `by nometer verify, ${when}: ${last && int(last.rows_checked)} rows, ${last && int(last.receipts)} receipts`,
      partly_verified: `up to ${when}; rows were written since: run nometer verify`,
      failed: `${last && int(last.findings)} finding(s) at ${when}: run nometer verify to see them`,
      unverified: "run nometer verify to check this period",
    }[p.verify_state] || "";
    if (p.verify_state === "failed") showMessage("The ledger failed verification: some rows were altered after they were written.");
    const u = p.unchained;
    const warn = testid("proof-unchained");
    warn.hidden = !(u.requests || u.cost_rows);
    warn.dataset.requests = u.requests;
    if (!warn.hidden) {
      const sav = state.ref && u.savings_usd[state.ref] !== undefined ? `, savings ${usd(u.savings_usd[state.ref])} vs ${state.ref}` : "";
      warn.textContent = `${int(u.requests)} requests outside the hash chain (written before it existed, or inserted)${sav}: `
        + "included in the figures above, not proven.";
    }
    const heads = testid("chain-heads");
    if (!p.chain_heads.length) {
      heads.replaceChildren(el("p", { class: "empty", text: "No chained rows in this period." }));
      return;
    }
    heads.replaceChildren(el("table", { class: "tbl" },
      el("thead", {}, el("tr", {}, el("th", { text: "chain (one per gateway process)" }), el("th", { class: "num", text: "requests" }),
        el("th", { class: "num", text: "seq" }), el("th", { text: "head digest" }))),
      el("tbody", {}, ...p.chain_heads.map((h) => el("tr", { "data-testid": "chain-head", "data-chain": h.chain_id,
        "data-seq": h.head_seq, "data-digest": h.head_digest ?? "" },
      el("td", { class: "key", text: h.chain_id }),
      el("td", { class: "num", text: int(h.requests) }),
      el("td", { class: "num dim", text: `${int(h.first_seq)}–${int(h.head_seq)}` }),
      el("td", { class: "digest", title: h.head_digest ?? "", text: h.head_digest ? `${h.head_digest.slice(0, 16)}…` : "–" }))))));
  }

  // -- wiring ------------------------------------------------------------------------------------

  function remember() {
    const q = new URLSearchParams();
    if (state.since !== "30d") q.set("since", state.since);
    if (state.ref) q.set("ref", state.ref);
    history.replaceState(null, "", location.pathname + (q.toString() ? `?${q}` : ""));
  }

  document.addEventListener("DOMContentLoaded", () => {
    remember();
    for (const b of $$("[data-since]")) {
      b.addEventListener("click", () => { state.since = b.dataset.since; remember(); load(); });
    }
    for (const b of $$("[data-mode]")) {
      b.addEventListener("click", () => { state.mode = b.dataset.mode; if (state.reports) render(); });
    }
    testid("reference-select").addEventListener("change", (ev) => { state.ref = ev.target.value; remember(); render(); });
    testid("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = new FormData(ev.target).get("key").trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      state.key = key;
      load();
      loadBackends();
    });
    let resize = 0;
    addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(() => state.reports && renderChart(), 150); });
    load();
    loadBackends();
    setInterval(() => { if (!document.hidden && state.reports) load(); }, REFRESH_MS);
    setInterval(() => { if (!document.hidden) loadBackends(); }, BACKENDS_MS);
  });
})();
