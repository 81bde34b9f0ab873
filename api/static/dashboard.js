// The dashboard: reads the JSON read API (aggregates only) every few
// seconds and the live feed as server-sent events. No framework, no build.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const FEED_MAX = 100;
  const token = new URLSearchParams(location.search).get("access_token");
  const $ = id => document.getElementById(id);
  const fmt = Charts.fmt;
  let tz = "UTC";

  class ApiError extends Error {}

  async function api(path) {
    const resp = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (!resp.ok) throw new ApiError(body.error || `HTTP ${resp.status}`);
    return body;
  }

  function cell(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  const pct = v => (v == null ? "–" : `${(v * 100).toFixed(1)}%`);
  const money = v => (v == null ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  // The event time the figures are counted up to (the KPIs' as_of_ms): the
  // page's "now", which relative times count back from.
  let asOfMs = null;

  // Absolute in the rules' time zone (labelled), e.g. "2024-03-05 14:02 Europe/Paris".
  function absolute(ms) {
    const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      hourCycle: "h23" }).formatToParts(new Date(ms)).map(p => [p.type, p.value]));
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute} ${tz}`;
  }

  // Relative to the data's "now" (event time, not the wall clock: a replayed history is years old).
  function relative(ms) {
    if (asOfMs == null) return "";
    const days = (asOfMs - ms) / 86400000;
    if (Math.abs(days) < 1 / 24) return "just now";
    const [n, unit] = Math.abs(days) >= 2 ? [Math.round(Math.abs(days)), "days"]
      : [Math.round(Math.abs(days) * 24), "hours"];
    return days >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
  }

  // A time as people read it: "3 days ago · 2024-03-05 14:02 UTC"; ISO strings and epoch ms alike.
  function when(t) {
    if (t == null || t === "") return "–";
    const ms = typeof t === "number" ? t : Date.parse(t);
    if (Number.isNaN(ms)) return String(t);
    const rel = relative(ms);
    return rel ? `${rel} · ${absolute(ms)}` : absolute(ms);
  }

  function empty(text) { return cell("p", text, { class: "note empty" }); }

  // -- members now -----------------------------------------------------
  // From the same read as every other panel: the latest period's members
  // at its end, i.e. at the figures' as-of time (a separate read of the live
  // membership once disagreed with the table below by a few users).
  function renderCounts(kpis) {
    const latest = kpis.periods[kpis.periods.length - 1];
    $("now-asof").textContent = asOfMs == null ? "" : `as of ${absolute(asOfMs)} (event time); the tables below ` +
      "are read at the same moment";
    $("now-asof").dataset.asOf = asOfMs ?? "";
    for (const [id, kind] of [["tier-counts", "tiers"], ["stage-counts", "stages"]]) {
      const box = $(id);
      const entries = latest ? Object.entries(latest[kind]).map(([name, f]) => [name, f.members]) : [];
      if (!entries.some(([, n]) => n > 0)) {
        box.replaceChildren(empty(kind === "tiers" ? "No users yet: send events to tierstream.events." : ""));
        continue;
      }
      const top = Math.max(1, ...entries.map(([, n]) => n));
      box.replaceChildren(...entries.flatMap(([name, n], k) => {
        const bar = cell("div", null, { class: "bar", role: "presentation" });
        bar.style.width = `${(100 * n) / top}%`;
        bar.style.background = Charts.colour(name, k);
        return [cell("span", name), cell("div", null).appendChild(bar).parentNode,
          cell("span", fmt(n), { class: "n", "data-segment": `${kind}:${name}`, "data-count": n })];
      }));
    }
  }

  // -- members over time, KPI tables ------------------------------------
  function renderMembership(kpis, kind) {
    const rows = kpis.periods;
    const names = rows.length ? Object.keys(rows[rows.length - 1][kind]) : [];
    const series = names.map(name => ({ name, values: rows.map(r => r[kind][name].members) }));
    const box = $("membership-chart");
    if (!rows.length) {
      box.replaceChildren(empty("No periods yet: the chart starts with the first event."));
      return;
    }
    box.replaceChildren(Charts.stackedArea(rows.map(r => r.period), series,
      `${kind === "tiers" ? "Tier" : "Stage"} members per ${kpis.grain}`), Charts.legend(series));
  }

  const OVERALL = [
    ["active users", "active_users", fmt], ["new users", "new_users", fmt], ["buyers", "buyers", fmt],
    ["orders", "orders", fmt], ["revenue", "revenue", money], ["AOV", "aov", money],
    ["repurchase rate", "repurchase_rate", pct], ["signup → order", "signup_conversion", pct],
    ["cart → order", "cart_conversion", pct], ["entered at risk", "entered_at_risk", fmt],
    ["churned", "entered_churned", fmt], ["churn rate", "churn_rate", pct], ["reactivated", "reactivated", fmt],
  ];

  // The period the tables show: the last one the stream has moved past
  // (the current one has only just begun), or the only one there is.
  function shownPeriod(rows) {
    if (rows.length > 1 && !rows[rows.length - 1].closed) return rows[rows.length - 2];
    return rows[rows.length - 1];
  }

  function renderKpis(kpis, kind) {
    const rows = kpis.periods;
    const latest = shownPeriod(rows);
    const caption = $("kpi-overall").querySelector("caption");
    caption.textContent = latest ? `All users, ${latest.period}` +
      (latest.closed ? " (closed)" : " (open: late events and conversions may still change it)") : "All users";
    $("kpi-overall").tBodies[0].replaceChildren(...OVERALL.map(([name, key, show]) => {
      const tr = cell("tr", null, { "data-kpi": key });
      tr.append(cell("th", name, { scope: "row" }), cell("td", latest ? show(latest[key]) : "–", { "data-value": latest ? latest[key] ?? "" : "" }),
        cell("td").appendChild(Charts.sparkline(rows.map(r => r[key]), name)).parentNode);
      return tr;
    }));
    const names = latest ? Object.keys(latest[kind]) : [];
    $("kpi-segments").querySelector("caption").textContent = latest
      ? `Per ${kind === "tiers" ? "tier" : "stage"}, ${latest.period}: members at its end, its revenue and AOV`
      : "Per segment: no period yet";
    if (!latest) {
      $("kpi-overall").tBodies[0].replaceChildren(cell("tr", null).appendChild(
        cell("td", "No periods yet.", { colspan: 3, class: "empty" })).parentNode);
    }
    $("kpi-segments").tBodies[0].replaceChildren(...names.map(name => {
      const tr = cell("tr", null, { "data-segment": name });
      tr.append(cell("th", name, { scope: "row" }));
      for (const [key, show] of [["members", fmt], ["revenue", money], ["mean_ltv", money], ["aov", money]]) {
        const td = cell("td", null, { "data-field": key, "data-value": latest[kind][name][key] ?? "" });
        td.append(cell("span", show(latest[kind][name][key])), " ",
          Charts.sparkline(rows.map(r => r[kind][name][key]), `${name} ${key}`, 56));
        tr.append(td);
      }
      return tr;
    }));
  }

  // -- flows -------------------------------------------------------------
  // The latest period, until the operator picks one.
  let flowPicked = false;

  function fillPeriods(kpis) {
    const select = $("flow-period");
    const labels = kpis.periods.map(r => r.period).reverse();
    const current = [...select.options].map(o => o.value);
    if (labels.join() === current.join()) return;
    const chosen = select.value;
    select.replaceChildren(...labels.map(l => cell("option", l, { value: l })));
    if (flowPicked && labels.includes(chosen)) select.value = chosen;
    else if (labels.length) select.value = shownPeriod(kpis.periods).period;
  }

  async function renderFlows(grain, tiers) {
    const period = $("flow-period").value;
    if (!period) {
      $("flow-empty").textContent = "No periods yet.";
      return;
    }
    const flows = await api(`v1/metrics/flows?grain=${grain}&period=${encodeURIComponent(period)}`);
    $("flow-empty").textContent = flows.flows.length ? "" : `No tier changed in ${period}.`;
    const from = ["-", ...tiers];
    const top = Math.max(1, ...flows.flows.map(f => f.users));
    const table = $("flow-matrix");
    const head = cell("tr", null);
    head.append(cell("th", "from \\ to", { scope: "col" }), ...tiers.map(t => cell("th", t, { scope: "col" })));
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...from.map(f => {
      const tr = cell("tr");
      tr.append(cell("th", f === "-" ? "– (first)" : f, { scope: "row" }));
      for (const t of tiers) {
        const n = (flows.matrix[f] || {})[t] || 0;
        const colours = Charts.heat(n / top);
        const td = cell("td", n ? fmt(n) : "", { "data-from": f, "data-to": t, "data-users": n });
        td.style.background = n ? colours.bg : "";
        td.style.color = colours.fg;
        tr.append(td);
      }
      return tr;
    }));
  }

  // -- cohorts -----------------------------------------------------------
  async function renderCohorts() {
    const by = $("cohort-by").value, grain = $("cohort-grain").value;
    const doc = await api(`v1/metrics/cohorts?grain=${grain}&by=${by}&periods=12`);
    const width = Math.max(0, ...doc.cohorts.map(c => c.retention.length));
    const table = $("cohort-heatmap");
    const head = cell("tr");
    head.append(cell("th", "cohort", { scope: "col" }), cell("th", "users", { scope: "col" }),
      ...Array.from({ length: width }, (_, k) => cell("th", `${grain[0]}${k}`, { scope: "col" })));
    table.tHead.replaceChildren(head);
    // Cohorts nobody joined (before the first event, or a quiet week) are left out.
    const joined = doc.cohorts.filter(c => c.size > 0);
    $("cohort-empty").textContent = joined.length ? "" : "No cohort yet: cohorts start with users' first events.";
    table.tBodies[0].replaceChildren(...joined.map(c => {
      const tr = cell("tr", null, { "data-cohort": c.cohort });
      tr.append(cell("th", c.cohort, { scope: "row" }), cell("td", fmt(c.size)));
      c.retention.forEach((r, k) => {
        const colours = Charts.heat(r);
        const td = cell("td", pct(r), { "data-rate": r ?? "", title: `${c.active[k]} of ${c.size} active` });
        td.style.background = colours.bg;
        td.style.color = colours.fg;
        tr.append(td);
      });
      return tr;
    }));
  }

  // -- campaigns ---------------------------------------------------------
  function renderCampaigns(doc) {
    const list = $("campaign-list");
    if (!doc.campaigns.length) {
      list.replaceChildren(cell("p", "No campaigns configured (TIERSTREAM_CAMPAIGNS).", { class: "note" }));
      return;
    }
    list.replaceChildren(...doc.campaigns.map(c => {
      const box = cell("div", null, { class: "campaign", "data-campaign": c.name });
      box.append(cell("h3", `${c.name}`), cell("p", `trigger ${c.trigger} · holdout ${pct(c.holdout)} · ` +
        `open windows ${fmt(c.open.treatment + c.open.control)}`, { class: "note" }));
      const table = cell("table");
      const head = cell("tr");
      head.append(...["arm", "assigned", "closed", "converted", "rate", "revenue / user"].map(h => cell("th", h, { scope: "col" })));
      table.append(cell("thead").appendChild(head).parentNode);
      const body = cell("tbody");
      for (const arm of ["treatment", "control"]) {
        const a = c[arm];
        const tr = cell("tr", null, { "data-arm": arm });
        tr.append(cell("th", arm, { scope: "row" }), cell("td", fmt(c.assigned[arm])), cell("td", fmt(a.assigned)),
          cell("td", fmt(a.converted)), cell("td", pct(a.conversion_rate), { "data-rate": a.conversion_rate ?? "" }),
          cell("td", money(a.revenue_per_user)));
        body.append(tr);
      }
      table.append(body);
      box.append(table);
      const line = cell("p", null, { "data-field": "uplift" });
      if (c.uplift == null) {
        line.textContent = "uplift: not yet measurable (no closed window in one of the arms)";
      } else {
        // ROI as docs/metrics.md defines it: from the measured incremental
        // revenue, shown beside it; the value-per-conversion figure is labelled.
        const roi = (c.roi != null ? ` · incremental revenue ${money(c.incremental_revenue)} for a cost of ` +
          `${money(c.cost)}: ROI ${pct(c.roi)}` : "") +
          (c.roi_at_value_per_conversion != null ? ` · ROI at ${money(c.value_per_conversion)} per conversion ` +
          `${pct(c.roi_at_value_per_conversion)}` : "");
        line.append(`uplift ${(c.uplift * 100).toFixed(1)} points, 95% interval ${pct(c.uplift_ci95[0])} to ` +
          `${pct(c.uplift_ci95[1])}, p = ${c.p_value.toFixed(3)}` + roi,
          cell("br"), Charts.intervalBar(c.uplift, c.uplift_ci95[0], c.uplift_ci95[1], "%"));
      }
      box.append(line);
      return box;
    }));
  }

  // -- acquisition: LTV against CAC per channel ------------------------------
  function renderAcquisition(doc) {
    const rows = doc.rows;
    $("acq-empty").textContent = rows.length ? "" : "No customers acquired yet.";
    $("acq-observed").textContent = doc.observed_through ? `Observed through ${doc.observed_through}.` : "";
    const ratio = v => (v == null ? "–" : `${Number(v).toFixed(2)}×`);
    $("acq-table").tBodies[0].replaceChildren(...rows.map(r => {
      const name = r.channel || "(unattributed)";
      const tr = cell("tr", null, { "data-channel": name, "data-customers": r.new_customers, "data-cac": r.cac ?? "",
        "data-payback-days": r.payback_days ?? "" });
      tr.append(cell("th", name, { scope: "row" }), cell("td", fmt(r.new_customers)), cell("td", money(r.spend)),
        cell("td", money(r.cac)), cell("td", money(r.ltv["90"])), cell("td", money(r.ltv["365"])),
        cell("td", ratio(r.ltv_cac["90"])), cell("td", ratio(r.ltv_cac["365"])),
        cell("td", r.payback_days != null ? `${r.payback_days} day${r.payback_days === 1 ? "" : "s"}` : r.payback,
          { "data-field": "payback" }));
      return tr;
    }));
    $("acq-chart").replaceChildren(Charts.paybackCurves(
      rows.map(r => ({ name: r.channel || "(unattributed)", points: r.curve || [] })),
      "LTV:CAC by days since acquisition, per channel; paid back above 1×"));
  }

  // -- live feed ----------------------------------------------------------
  const shown = new Set();

  function describe(kind, r) {
    if (kind === "churn_alert") {
      return [cell("span", r.level.replace("_", " "), { class: `tag alert-${r.level}` }),
        ` ${r.user_id} · ${r.days_inactive} days quiet · tier ${r.tier} · LTV ${money(r.ltv)}`];
    }
    const parts = [];
    if (r.from_tier !== r.to_tier) parts.push(`tier ${r.from_tier || "–"} → ${r.to_tier}`);
    if (r.from_stage !== r.to_stage) parts.push(`stage ${r.from_stage || "–"} → ${r.to_stage}`);
    return [`${r.user_id}: ${parts.join(", ")}${r.correction ? " (correction)" : ""}`];
  }

  function onFeed(kind, e) {
    const r = JSON.parse(e.data);
    const id = r.change_id || r.alert_id;
    if (shown.has(id)) return; // re-derived after a crash: same id, already shown
    shown.add(id);
    const li = cell("li", null, { class: "fresh", "data-id": id, "data-kind": kind, "data-user": r.user_id });
    li.append(cell("time", when(r.at_ms), { datetime: r.at }), cell("span"));
    li.lastChild.append(...describe(kind, r));
    const feed = $("feed");
    $("feed-empty").hidden = true;
    feed.prepend(li);
    while (feed.children.length > FEED_MAX) shown.delete(feed.lastChild.dataset.id), feed.lastChild.remove();
  }

  function connectFeed() {
    const source = new EventSource(`v1/feed${token ? `?access_token=${encodeURIComponent(token)}` : ""}`);
    source.addEventListener("tier_change", e => onFeed("tier_change", e));
    source.addEventListener("churn_alert", e => onFeed("churn_alert", e));
    source.onopen = () => { $("feed-state").textContent = "connected"; };
    source.onerror = () => { $("feed-state").textContent = "reconnecting…"; };
  }

  // -- user lookup -----------------------------------------------------------
  async function lookup(event) {
    event.preventDefault();
    const id = $("lookup-id").value.trim();
    const out = $("lookup-result");
    if (!id) return;
    try {
      const [user, changes] = await Promise.all([api(`v1/users/${encodeURIComponent(id)}`),
        api(`v1/changes/${encodeURIComponent(id)}`)]);
      const churn = user.churn && user.churn.p_alive != null
        ? `P(alive) ${pct(user.churn.p_alive)} · ${user.churn.expected_orders.toFixed(2)} orders expected in the next ` +
          `${user.churn.horizon_days} days`
        : (user.churn ? "no order yet" : "not fitted yet (or the churn model is off)");
      const rows = [
        ["tier", `${user.tier} since ${when(user.tier_since)}`], ["stage", `${user.stage} since ${when(user.stage_since)}`],
        ["churn model", churn],
        ["RFM scores", user.rfm ? `R ${user.rfm.r} · F ${user.rfm.f} · M ${user.rfm.m}` : "–"],
        ["engagement", user.engagement ? `${user.engagement.score} (${user.engagement.actions} actions)` : "not scored"],
        ["recency", `${fmt(user.recency_days)} days since last order`], ["inactive", `${fmt(user.days_inactive)} days`],
        ["orders", `${fmt(user.frequency)} in the window, ${fmt(user.lifetime_orders)} in all`],
        ["monetary", money(user.monetary)], ["LTV", money(user.ltv)], ["AOV", money(user.aov)],
        ["first seen", when(user.first_seen)], ["last active", when(user.last_active)], ["last order", when(user.last_order)],
      ];
      const dl = cell("dl", null, { class: "user", "data-user": user.user_id });
      for (const [k, v] of rows) dl.append(cell("dt", k), cell("dd", v, { "data-field": k }));
      const list = cell("ol", null, { class: "changes" });
      for (const c of changes.changes) {
        list.append(cell("li", `${when(c.at_ms)}: ` + (c.kind === "churn_alert" ? `${c.level.replace("_", " ")} alert`
          : [c.from_tier !== c.to_tier ? `tier ${c.from_tier || "–"} → ${c.to_tier}` : null,
            c.from_stage !== c.to_stage ? `stage ${c.from_stage || "–"} → ${c.to_stage}` : null].filter(Boolean).join(", ")),
          { "data-id": c.id }));
      }
      out.replaceChildren(dl, cell("h3", "Latest changes"), changes.changes.length ? list : cell("p", "none kept", { class: "note" }));
    } catch (err) {
      out.replaceChildren(cell("p", err.message, { class: "error", role: "alert" }));
    }
  }

  // -- refresh loop -------------------------------------------------------------
  async function refresh() {
    const grain = $("grain").value, kind = $("kind").value;
    try {
      const [kpis, campaigns, acquisition] = await Promise.all([api(`v1/metrics/kpis?grain=${grain}`),
        api("v1/campaigns"), api("v1/metrics/acquisition?grain=month&by=channel")]);
      tz = kpis.timezone;
      asOfMs = kpis.as_of_ms;
      document.querySelectorAll(".tz").forEach(n => { n.textContent = tz; });
      renderCounts(kpis);
      renderMembership(kpis, kind);
      renderKpis(kpis, kind);
      renderCampaigns(campaigns);
      renderAcquisition(acquisition);
      fillPeriods(kpis);
      const tiers = kpis.periods.length ? Object.keys(kpis.periods[kpis.periods.length - 1].tiers) : [];
      await Promise.all([renderFlows(grain, tiers), renderCohorts()]);
      $("status").textContent = (asOfMs == null ? "no data yet" : `data as of ${absolute(asOfMs)} (event time)`) +
        ` · updated ${new Date().toLocaleTimeString()}`;
      $("status").classList.remove("error");
      if (!document.body.dataset.loaded) {
        document.body.dataset.loaded = "true";
        document.body.dataset.firstRenderMs = Math.round(performance.now()); // bench/dashboard_render.py reads it
      }
    } catch (err) {
      $("status").textContent = `could not refresh: ${err.message}`;
    }
  }

  for (const id of ["grain", "kind", "flow-period", "cohort-by", "cohort-grain"]) {
    $(id).addEventListener("change", () => {
      if (id === "grain") { $("flow-period").replaceChildren(); flowPicked = false; }
      if (id === "flow-period") flowPicked = true;
      refresh();
    });
  }
  $("lookup-form").addEventListener("submit", lookup);
  connectFeed();
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
