// Small SVG charts for the dashboard: stacked areas, sparklines and
// interval bars. Hand-written on purpose (docs/dashboard.md says why): five
// simple shapes, about 150 lines, no dependency to vendor or update, and SVG
// elements that carry their numbers (data-values, <title>) for screen
// readers, tooltips and the browser tests.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = {
    high_value: "#1b7f3b", potential: "#2f6fdb", mid_value: "#7b55c7", low_value: "#d08a00", dormant: "#7d8590",
    new: "#2f6fdb", active: "#1b7f3b", at_risk: "#d08a00", churned: "#a4161a", reactivated: "#7b55c7",
  };
  const SPARE = ["#0f766e", "#be185d", "#4d7c0f", "#9a3412", "#1e3a8a"];

  function colour(name, i) { return PALETTE[name] || SPARE[i % SPARE.length]; }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c);
    return node;
  }

  function title(text) { const t = svg("title"); t.textContent = text; return t; }

  function label(x, y, text, anchor) {
    const t = svg("text", { x, y, "text-anchor": anchor || "start" });
    t.textContent = text;
    return t;
  }

  function fmt(n) { return n == null ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 }); }

  // series: [{name, values: [number per period]}], stacked in the given order.
  function stackedArea(periods, series, caption) {
    const W = 640, H = 220, L = 46, R = 8, T = 8, B = 24;
    const n = periods.length;
    const totals = periods.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
    const top = Math.max(1, ...totals);
    const x = i => L + (n <= 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
    const y = v => T + (H - T - B) * (1 - v / top);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: "0", "data-chart": "stacked-area",
      "aria-label": `${caption}. Latest period ${periods[n - 1] || "none"}: ` +
        series.map(s => `${s.name} ${fmt(s.values[n - 1])}`).join(", ") });
    root.append(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }),
      svg("line", { x1: L, x2: W - R, y1: y(top), y2: y(top), class: "axis" }),
      label(L - 4, y(top) + 4, fmt(top), "end"), label(L - 4, y(0) + 4, "0", "end"));
    const below = periods.map(() => 0);
    series.forEach((s, k) => {
      const upper = below.map((b, i) => b + (s.values[i] || 0));
      const pts = upper.map((v, i) => `${x(i)},${y(v)}`).concat(
        below.map((v, i) => `${x(i)},${y(v)}`).reverse());
      root.append(svg("polygon", { points: pts.join(" "), fill: colour(s.name, k), "fill-opacity": "0.85",
        "data-series": s.name, "data-values": s.values.join(",") },
        title(`${s.name}: ${fmt(s.values[n - 1])} at the end of ${periods[n - 1]}`)));
      upper.forEach((v, i) => { below[i] = v; });
    });
    const ticks = n <= 1 ? [0] : [0, Math.floor((n - 1) / 2), n - 1];
    for (const i of new Set(ticks)) {
      if (periods[i] !== undefined) root.append(label(x(i), H - 6, periods[i], i === 0 ? "start" : i === n - 1 ? "end" : "middle"));
    }
    return root;
  }

  function legend(series) {
    const div = document.createElement("div");
    div.className = "legend";
    series.forEach((s, k) => {
      const item = document.createElement("span");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = colour(s.name, k);
      item.append(sw, `${s.name} ${fmt(s.values[s.values.length - 1])}`);
      div.append(item);
    });
    return div;
  }

  function sparkline(values, name, width) {
    const W = width || 90, H = 22;
    const nums = values.map(v => (v == null ? null : Number(v)));
    const present = nums.filter(v => v != null);
    const lo = Math.min(0, ...present), hi = Math.max(lo + 1e-9, ...present);
    const x = i => (nums.length <= 1 ? W / 2 : (i * (W - 2)) / (nums.length - 1) + 1);
    const y = v => H - 2 - ((H - 4) * (v - lo)) / (hi - lo);
    const pts = nums.map((v, i) => (v == null ? null : `${x(i)},${y(v)}`)).filter(Boolean);
    return svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "data-chart": "sparkline",
      "data-values": nums.map(v => (v == null ? "" : v)).join(","), "aria-label": `${name} over the periods shown` },
      svg("polyline", { points: pts.join(" "), fill: "none", stroke: "#2f6fdb", "stroke-width": "1.5" }));
  }

  // An estimate with its interval on a scale that always shows zero.
  function intervalBar(estimate, lo, hi, unit) {
    const W = 300, H = 30, P = 10;
    const span = Math.max(Math.abs(lo), Math.abs(hi), Math.abs(estimate), 1e-6) * 1.15;
    const x = v => P + ((W - 2 * P) * (v + span)) / (2 * span);
    const pct = v => `${(v * 100).toFixed(1)}${unit}`;
    return svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", tabindex: "0",
      "data-chart": "interval", "data-estimate": estimate, "data-lo": lo, "data-hi": hi,
      "aria-label": `uplift ${pct(estimate)}, 95% interval ${pct(lo)} to ${pct(hi)}` },
      svg("line", { x1: x(0), x2: x(0), y1: 2, y2: H - 2, stroke: "#5b6472", "stroke-dasharray": "3 2" }),
      svg("rect", { x: x(lo), y: 9, width: Math.max(1, x(hi) - x(lo)), height: 10, rx: 2,
        fill: lo > 0 ? "#1b7f3b" : hi < 0 ? "#a4161a" : "#7d8590", "fill-opacity": "0.6" }),
      svg("circle", { cx: x(estimate), cy: 14, r: 4, fill: "#1d2430" }),
      label(x(lo), H - 1, pct(lo), "middle"), label(x(hi), H - 1, pct(hi), "middle"));
  }

  // Payback curves: LTV:CAC against days since acquisition, one line per
  // channel ([{name, points: [{days, ltv_cac}]}]), on a log scale (ratios:
  // 0.5x and 2x are as far from paying back; one channel at 50x must not
  // flatten the others); the dashed line at 1x is "paid back". Channels
  // without spend have no ratio and no line.
  function paybackCurves(channels, caption) {
    const W = 660, H = 240, L = 44, R = 130, T = 8, B = 24;
    const lines = channels.map(c => ({ name: c.name, points: c.points.filter(p => p.ltv_cac != null) }))
      .filter(c => c.points.length);
    const ratios = lines.flatMap(c => c.points.map(p => p.ltv_cac)).filter(v => v > 0);
    const lo = Math.pow(10, Math.floor(Math.log10(Math.min(0.5, ...ratios))));
    const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(2, ...ratios))));
    const maxDays = Math.max(7, ...lines.flatMap(c => c.points.map(p => p.days)));
    const x = d => L + ((W - L - R) * d) / maxDays;
    const y = v => T + (H - T - B) * (1 - (Math.log10(Math.max(lo, v)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: "0", "data-chart": "payback",
      "aria-label": `${caption}. ` + lines.map(c => `${c.name}: ${fmt(c.points[c.points.length - 1].ltv_cac)}× at ` +
        `${c.points[c.points.length - 1].days} days`).join(", ") });
    for (let v = lo; v <= hi * 1.001; v *= 10) {
      root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }), label(L - 4, y(v) + 4, `${fmt(v)}×`, "end"));
    }
    root.append(svg("line", { x1: L, x2: W - R, y1: y(1), y2: y(1), stroke: "#1d2430", "stroke-dasharray": "4 3" }),
      label(L, H - 6, "0 days"), label(W - R, H - 6, `${maxDays} days since acquisition`, "end"));
    // End labels, moved apart where lines end close together.
    const ends = lines.map((c, k) => ({ c, k, at: y(c.points[c.points.length - 1].ltv_cac) })).sort((a, b) => a.at - b.at);
    ends.forEach((e, i) => { if (i && e.at - ends[i - 1].at < 12) e.at = ends[i - 1].at + 12; });
    for (const { c, k, at } of ends) {
      const last = c.points[c.points.length - 1];
      root.append(svg("polyline", { points: c.points.map(p => `${x(p.days)},${y(p.ltv_cac)}`).join(" "), fill: "none",
        stroke: colour(c.name, k), "stroke-width": "2", "data-series": c.name,
        "data-values": c.points.map(p => `${p.days}:${p.ltv_cac}`).join(",") },
        title(`${c.name}: LTV:CAC ${fmt(last.ltv_cac)}× after ${last.days} days`)),
        label(x(last.days) + 4, at + 4, `${c.name} ${fmt(last.ltv_cac)}×`));
    }
    return root;
  }

  // 0..1 -> a blue whose text stays readable.
  function heat(rate) {
    if (rate == null) return { bg: "transparent", fg: "#5b6472" };
    const t = Math.max(0, Math.min(1, rate));
    const mix = (a, b) => Math.round(a + (b - a) * t);
    return { bg: `rgb(${mix(240, 26)},${mix(245, 95)},${mix(255, 208)})`, fg: t > 0.45 ? "#fff" : "#1d2430" };
  }

  return { stackedArea, legend, sparkline, intervalBar, paybackCurves, heat, colour, fmt };
})();
