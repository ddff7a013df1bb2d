// The dashboard page: plain JavaScript, no library. It fetches JSON from /api/* and builds every element
// with createElement / createElementNS and textContent. No value from the data ever goes through innerHTML,
// insertAdjacentHTML, document.write or an attribute that runs code, so markup in review text, brands or
// titles is shown as text. Charts are small SVG drawings made here.
"use strict";

(function () {
  const POLL_MS = 3000;
  const SVGNS = "http://www.w3.org/2000/svg";
  const COLORS = ["#3b6ea5", "#e0823d", "#5a9e6f", "#b5525c", "#8a6bb8", "#7f7f7f", "#c9a227", "#4aa3b5"];
  const NAMED = {negative: "#c0504d", neutral: "#9e9e9e", positive: "#4f9d69", verified: "#3b6ea5",
    "not verified": "#e0823d", "from rating": "#3b6ea5", "from model": "#8a6bb8"};
  const FILTER_NAMES = {time: "time range", main_cat: "main category", brand: "brand", verified: "verified only"};

  const state = {metaLoaded: Promise.resolve(), root: 0, page: "insights", params: {}, version: null, recVersion: null, meta: null,
    renderSeq: 0, dead: {offset: 0, reason: "", stage: "", record_type: "", q: ""}};

  // ---------------------------------------------------------------------------------------- DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) throw new Error("event handlers are added with addEventListener");
      if (k === "class") node.setAttribute("class", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function append(node, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  // ---------------------------------------------------------------------------------------- formatting

  function fmt(v, kind) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v !== "number") return String(v);
    switch (kind) {
      case "pct": return (v * 100).toFixed(1) + " %";
      case "num2": return v.toFixed(2);
      case "money": return "$" + v.toFixed(2);
      case "int": return Math.round(v).toLocaleString("en-US");
      default: return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(3).replace(/\.?0+$/, "");
    }
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.abs(seconds);
    const sign = seconds < 0 ? "-" : "";
    if (s < 90) return sign + s.toFixed(0) + " s";
    if (s < 5400) return sign + (s / 60).toFixed(0) + " min";
    if (s < 172800) return sign + (s / 3600).toFixed(1) + " h";
    if (s < 3 * 365 * 86400) return sign + (s / 86400).toFixed(0) + " days";
    return sign + (s / (365.25 * 86400)).toFixed(1) + " years";
  }

  function when(iso) {
    if (!iso) return "–";
    if (/T00:00:00(\.0+)?Z$/.test(iso)) return iso.slice(0, 10);
    return iso.replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:00Z$/, "Z");
  }

  function color(name, i) {
    return NAMED[name] || COLORS[i % COLORS.length];
  }

  // ---------------------------------------------------------------------------------------- API

  async function api(path, params) {
    const q = new URLSearchParams({root: String(state.root)});
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const res = await fetch(path + "?" + q.toString(), {headers: {Accept: "application/json"}});
    const body = await res.json().catch(() => ({error: res.status + " " + res.statusText}));
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  }

  function setStatus(text, cls) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.className = cls || "";
  }

  // ---------------------------------------------------------------------------------------- charts

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function legend(series) {
    if (series.length < 2) return null;
    return el("div", {class: "legend"}, series.map((s, i) =>
      el("span", {class: "key"}, swatch(color(s.name, i)), s.name)));
  }

  function swatch(c) {
    const s = svg("svg", {width: 10, height: 10, class: "swatch"});
    s.appendChild(svg("rect", {width: 10, height: 10, fill: c}));
    return s;
  }

  function barChart(chart) {
    const labels = chart.labels, series = chart.series;
    const W = 520, H = 220, L = 52, B = 34, T = 14, R = 8;
    const stacked = !!chart.stacked;
    let max = 0;
    labels.forEach((_, i) => {
      if (stacked) max = Math.max(max, series.reduce((a, s) => a + (s.values[i] || 0), 0));
      else series.forEach(s => { max = Math.max(max, s.values[i] || 0); });
    });
    max = niceMax(max);
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": chart.title});
    axis(root, L, T, W - L - R, H - T - B, max, false);
    const band = (W - L - R) / Math.max(1, labels.length);
    const inner = band * 0.8;
    const y = v => T + (H - T - B) * (1 - v / max);
    labels.forEach((label, i) => {
      const x0 = L + band * i + band * 0.1;
      let acc = 0;
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        const title = svg("title", {}, `${label} · ${s.name}: ${fmt(v)}`);
        if (stacked) {
          root.appendChild(svg("rect", {x: x0, y: y(acc + v), width: inner, height: y(acc) - y(acc + v),
            fill: color(s.name, j)}, title));
          acc += v;
        } else {
          const w = inner / series.length;
          root.appendChild(svg("rect", {x: x0 + w * j, y: y(v), width: Math.max(1, w - 1), height: y(0) - y(v),
            fill: color(s.name, j)}, title));
          if (series.length === 1 && labels.length <= 16)
            root.appendChild(svg("text", {x: x0 + inner / 2, y: y(v) - 3, class: "val", "text-anchor": "middle"},
              fmt(v)));
        }
      });
      if (labels.length <= 24 || i % Math.ceil(labels.length / 24) === 0)
        root.appendChild(svg("text", {x: x0 + inner / 2, y: H - B + 14, class: "tick", "text-anchor": "middle"},
          short(label, Math.max(4, Math.floor(band / 6)))));
    });
    return root;
  }

  function axis(root, x, y, w, h, max, horizontal) {
    for (let k = 0; k <= 4; k++) {
      const v = max * k / 4;
      if (horizontal) {
        const xx = x + w * k / 4;
        root.appendChild(svg("line", {x1: xx, x2: xx, y1: y, y2: y + h, class: "grid"}));
      } else {
        const yy = y + h * (1 - k / 4);
        root.appendChild(svg("line", {x1: x, x2: x + w, y1: yy, y2: yy, class: "grid"}));
        root.appendChild(svg("text", {x: x - 4, y: yy + 4, class: "tick", "text-anchor": "end"}, fmt(v)));
      }
    }
  }

  function short(text, n) {
    text = String(text);
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function hbarChart(chart) {
    const labels = chart.labels, series = chart.series;
    const rowH = series.length > 1 ? 22 : 18, L = 170, R = 60, T = 6;
    const W = 520, H = T + rowH * labels.length + 6;
    let max = 0;
    series.forEach(s => s.values.forEach(v => { max = Math.max(max, v || 0); }));
    max = niceMax(max);
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": chart.title});
    const w = W - L - R;
    labels.forEach((label, i) => {
      const y0 = T + i * rowH;
      root.appendChild(svg("text", {x: L - 6, y: y0 + rowH / 2 + 4, class: "tick", "text-anchor": "end"},
        svg("title", {}, label), short(label, 26)));
      const h = (rowH - 4) / series.length;
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        root.appendChild(svg("rect", {x: L, y: y0 + 2 + h * j, width: Math.max(1, w * v / max), height: h - 1,
          fill: color(s.name, j)}, svg("title", {}, `${label} · ${s.name}: ${fmt(v)}`)));
        root.appendChild(svg("text", {x: L + w * v / max + 4, y: y0 + 2 + h * j + h - 3, class: "val"}, fmt(v)));
      });
    });
    return root;
  }

  function lineChart(chart) {
    const labels = chart.labels, s1 = chart.series[0], s2 = chart.series2;
    const W = 520, H = 220, L = 52, B = 34, T = 14, R = s2 ? 40 : 22;
    const vals = s1.values.filter(v => v !== null);
    const lo = chart.y_min !== undefined ? chart.y_min : 0;
    const hi = chart.y_max !== undefined ? chart.y_max : niceMax(Math.max(0, ...vals));
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": chart.title});
    const ih = H - T - B, iw = W - L - R;
    for (let k = 0; k <= 4; k++) {
      const yy = T + ih * (1 - k / 4);
      root.appendChild(svg("line", {x1: L, x2: L + iw, y1: yy, y2: yy, class: "grid"}));
      root.appendChild(svg("text", {x: L - 4, y: yy + 4, class: "tick", "text-anchor": "end"},
        fmt(lo + (hi - lo) * k / 4)));
      if (s2) root.appendChild(svg("text", {x: L + iw + 4, y: yy + 4, class: "tick"}, fmt(1 + 4 * k / 4)));
    }
    const x = i => L + (labels.length < 2 ? iw / 2 : iw * i / (labels.length - 1));
    const path = (values, a, b, c) => {
      let d = "", pen = false;
      values.forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        const yy = T + ih * (1 - (v - a) / (b - a));
        d += (pen ? "L" : "M") + x(i).toFixed(1) + "," + yy.toFixed(1);
        pen = true;
      });
      root.appendChild(svg("path", {d: d, fill: "none", stroke: c, "stroke-width": 2}));
      if (values.length <= 40) values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        root.appendChild(svg("circle", {cx: x(i), cy: T + ih * (1 - (v - a) / (b - a)), r: 2.5, fill: c},
          svg("title", {}, `${labels[i]}: ${fmt(v)}`)));
      });
    };
    path(s1.values, lo, hi, color(s1.name, 0));
    if (s2) path(s2.values, 1, 5, color(s2.name, 1));
    const widest = Math.max(1, ...labels.map(l => String(l).length));
    const step = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(iw / (widest * 6.5 + 10)))));
    labels.forEach((label, i) => {
      if (i % step === 0 || i === labels.length - 1)
        root.appendChild(svg("text", {x: x(i), y: H - B + 14, class: "tick", "text-anchor": "middle"}, label));
    });
    return root;
  }

  function sparkline(values, highlightLast) {
    const W = 140, H = 28, n = values.length;
    const max = Math.max(1, ...values);
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "spark", role: "img",
      "aria-label": "daily counts " + values.join(", ")});
    const bw = W / n;
    values.forEach((v, i) => {
      const h = (H - 2) * v / max;
      root.appendChild(svg("rect", {x: i * bw + 1, y: H - h, width: Math.max(1, bw - 2), height: Math.max(h, 0.5),
        fill: highlightLast && i === n - 1 ? "#e0823d" : "#3b6ea5"}, svg("title", {}, String(v))));
    });
    return root;
  }

  // data table under a chart: exact numbers, with data-* hooks (label, series, raw value)
  function dataTable(chart) {
    const series = chart.series.concat(chart.series2 ? [chart.series2] : []);
    const extra = chart.extra || {};
    const head = el("tr", {}, el("th", {}, ""), series.map(s => el("th", {}, s.name)),
      Object.keys(extra).map(k => el("th", {}, k)), chart.shares ? el("th", {}, "share") : null,
      chart.totals ? el("th", {}, "total") : null);
    const body = chart.labels.map((label, i) => el("tr", {},
      el("th", {scope: "row"}, label),
      series.map(s => el("td", {"data-label": label, "data-series": s.name,
        "data-value": s.values[i] === null ? "" : s.values[i]}, fmt(s.values[i]))),
      Object.entries(extra).map(([k, vals]) => el("td", {"data-label": label, "data-series": k,
        "data-value": vals[i] === null ? "" : vals[i]}, fmt(vals[i], k === "share" ? "pct" : "num2"))),
      chart.shares ? el("td", {}, fmt(chart.shares[i], "pct")) : null,
      chart.totals ? el("td", {}, fmt(chart.totals[i], "int")) : null));
    return el("details", {class: "data"}, el("summary", {}, "numbers"),
      el("table", {class: "grid"}, el("thead", {}, head), el("tbody", {}, body)));
  }

  function tableView(columns, rows, formats, opts) {
    opts = opts || {};
    const t = el("table", {class: "grid"});
    t.appendChild(el("thead", {}, el("tr", {}, columns.map(c => el("th", {}, c)))));
    const body = el("tbody", {});
    rows.forEach((r, i) => {
      const tr = el("tr", {"data-row": i});
      r.forEach((v, j) => {
        const f = formats ? formats[j] : undefined;
        const td = el("td", {"data-col": columns[j], "data-value": v === null || typeof v === "object" ? "" : v,
          class: typeof v === "number" ? "num" : null});
        if (opts.cell) opts.cell(td, v, j, r);
        else td.textContent = fmt(v, f);
        tr.appendChild(td);
      });
      if (opts.row) opts.row(tr, r);
      body.appendChild(tr);
    });
    t.appendChild(body);
    return t;
  }

  // where a chart's numbers come from and which of the active filters it applied; a table with none of the
  // filters' columns says "all time, not filtered", one that honours some names the ones it left out
  function sourceLine(chart) {
    const names = list => list.map(f => FILTER_NAMES[f]).join(", ");
    const applied = chart.applied || [], ignored = chart.ignored || [], honours = chart.honours || [];
    const parts = [el("span", {class: "src"}, "from ", el("code", {}, chart.source || "?"))];
    if (applied.length) parts.push(el("span", {class: "applied"}, " · filtered by " + names(applied)));
    else if (!ignored.length) parts.push(el("span", {}, " · all time"));
    if (ignored.length && !honours.length)
      parts.push(el("span", {class: "ignored"}, " · all time, not filtered (this table has no column for " +
        names(ignored) + ")"));
    else if (ignored.length)
      parts.push(el("span", {class: "ignored"}, " · not filtered by " + names(ignored) + " (it honours " +
        names(honours) + ")"));
    if (chart.note) parts.push(el("div", {class: "note"}, chart.note));
    return el("div", {class: "meta"}, parts);
  }

  function missingNote(note) {
    return el("p", {class: "missing"}, note);
  }

  function card(chart) {
    const c = el("section", {class: "card kind-" + (chart.kind || "none"), "data-chart": chart.id});
    c.appendChild(el("h3", {}, chart.title));
    if (chart.subtitle) c.appendChild(el("p", {class: "subtitle"}, chart.subtitle));
    if (chart.kind === "missing") {
      c.appendChild(missingNote(chart.note));
      return c;
    }
    switch (chart.kind) {
      case "kpis":
        c.appendChild(el("div", {class: "kpi-row"}, chart.items.map(it => el("div", {class: "kpi", "data-kpi": it.label},
          el("div", {class: "v", "data-value": it.value === null ? "" : it.value},
            fmt(it.value, it.label === "mean rating" || it.label === "images per product" ? "num2" : "int")),
          el("div", {class: "l"}, it.label)))));
        break;
      case "bars":
        c.appendChild(barChart(chart));
        c.appendChild(legend(chart.series) || el("span"));
        c.appendChild(dataTable(chart));
        break;
      case "hbars":
        c.appendChild(hbarChart(chart));
        c.appendChild(legend(chart.series) || el("span"));
        c.appendChild(dataTable(chart));
        if (chart.link === "reviewer") c.appendChild(el("p", {class: "hint"}, "Open one in the Reviewer view: ",
          chart.labels.slice(0, 5).map(id => [reviewerLink(id), " "])));
        break;
      case "line":
        c.appendChild(lineChart(chart));
        c.appendChild(legend(chart.series.concat(chart.series2 ? [chart.series2] : [])) || el("span"));
        c.appendChild(dataTable(chart));
        break;
      case "table":
        c.appendChild(el("div", {class: "scroll"}, tableView(chart.columns, chart.rows, chart.formats)));
        if (chart.missing_note) c.appendChild(el("p", {class: "missing"}, "Model-predicted sentiment: " + chart.missing_note));
        break;
      case "groups":
        c.appendChild(el("div", {class: "groups"}, chart.groups.map((g, i) => el("div", {class: "group", "data-group": g.name},
          el("h4", {}, g.name),
          hbarChart({title: g.name, labels: g.labels, series: [{name: g.name, values: g.values}]}),
          dataTable({labels: g.labels, series: [{name: g.name, values: g.values}]})))));
        break;
      default:
        c.appendChild(el("p", {}, "unknown chart kind " + chart.kind));
    }
    c.appendChild(sourceLine(chart));
    return c;
  }

  function reviewerLink(id) {
    const a = el("a", {href: "#reviewer?id=" + encodeURIComponent(id), class: "reviewer-link"}, id);
    return a;
  }

  // ---------------------------------------------------------------------------------------- pages

  function filterParams() {
    const p = {};
    const v = id => document.getElementById(id).value.trim();
    if (v("f-from")) p.from = v("f-from");
    if (v("f-to")) p.to = v("f-to");
    if (v("f-main_cat")) p.main_cat = document.getElementById("f-main_cat").value;
    if (document.getElementById("f-brand").value !== "") p.brand = document.getElementById("f-brand").value;
    if (document.getElementById("f-verified").checked) p.verified = "1";
    return p;
  }

  async function pageInsights(main, seq) {
    const data = await api("/api/insights", filterParams());
    if (seq !== state.renderSeq) return;
    state.activeFilters = data.active;
    const head = el("div", {class: "page-head"}, el("h2", {}, "Review insights"),
      el("p", {class: "hint", id: "filter-summary"}, data.active.length
        ? "Filtered by " + data.active.map(f => FILTER_NAMES[f]).join(", ") + ": counted from silver/reviews."
        : "All time, from the gold tables."));
    const grid = el("div", {class: "cards"}, data.charts.map(card));
    clear(main).append(head, grid);
  }

  async function pageTrending(main, seq) {
    const day = state.params.day || "";
    const data = await api("/api/trending", {day: day});
    if (seq !== state.renderSeq) return;
    const select = el("select", {id: "trend-day"});
    data.days.slice().reverse().forEach(d => {
      const o = el("option", {value: d}, d);
      if (d === data.day) o.selected = true;
      select.appendChild(o);
    });
    select.addEventListener("change", () => { location.hash = "#trending?day=" + encodeURIComponent(select.value); });
    const head = el("div", {class: "page-head"}, el("h2", {}, "Trending"),
      data.days.length ? el("label", {}, "Day ", select, ` (${data.days.length} days with trends)`) : null,
      el("p", {class: "hint"}, "Keys whose review count on the chosen day stands out against the days before it " +
        "(the job's trending rule, by event time). The small chart: reviews per day over the " +
        data.spark_days.length + " days ending on that day (orange)."));
    const sections = [];
    for (const [kind, title] of [["products", "Products"], ["brands", "Brands"], ["main_cats", "Main categories"]]) {
      const k = data.kinds[kind];
      const sec = el("section", {class: "card wide", "data-trending": kind}, el("h3", {}, "Trending " + title.toLowerCase()));
      if (k.kind === "missing") {
        sec.appendChild(missingNote(k.note));
      } else if (!k.rows.length) {
        sec.appendChild(el("p", {class: "empty"}, `Nothing trending on ${data.day || "this day"} (${k.n_days} days ` +
          `in ${k.table} have trends).`));
      } else {
        const cols = k.columns.concat(["daily reviews"]);
        const formats = k.columns.map(c => c === "baseline" || c === "score" ? "num2" : undefined);
        sec.appendChild(el("div", {class: "scroll"}, tableView(cols, k.rows.map(r => r.concat([null])), formats, {
          cell: (td, v, j, r) => {
            if (j === cols.length - 1) td.appendChild(sparkline(k.series[String(r[1])] || [], true));
            else td.textContent = fmt(v, formats[j]);
          }})));
      }
      sec.appendChild(el("div", {class: "meta"}, "from ", el("code", {}, k.table),
        k.rule ? " · rule " + k.rule : "", k.series_source ? [" · daily counts from ", el("code", {}, k.series_source)] : ""));
      sections.push(sec);
    }
    clear(main).append(head, el("div", {class: "cards"}, sections));
  }

  async function pageReviewer(main, seq) {
    const id = state.params.id || "";
    const sugg = await api("/api/reviewers");
    if (seq !== state.renderSeq) return;
    const input = el("input", {type: "text", id: "reviewer-id", value: id, placeholder: "reviewer id",
      list: "reviewer-list", autocomplete: "off"});
    const list = el("datalist", {id: "reviewer-list"}, sugg.reviewers.map(r => el("option", {value: r.reviewer_id})));
    const go = el("button", {type: "submit", id: "reviewer-go"}, "Show");
    const form = el("form", {class: "inline"}, el("label", {}, "Reviewer ", input), list, go);
    form.addEventListener("submit", ev => {
      ev.preventDefault();
      location.hash = "#reviewer?id=" + encodeURIComponent(input.value.trim());
    });
    const chips = el("p", {class: "hint"}, "Most active: ", sugg.reviewers.slice(0, 10).map(r =>
      [reviewerLink(r.reviewer_id), ` (${r.n_reviews}) `]));
    const head = el("div", {class: "page-head"}, el("h2", {}, "Reviewer"), form, chips);
    clear(main).append(head);
    if (!id) {
      main.appendChild(el("p", {class: "empty"}, "Pick a reviewer above."));
      return;
    }
    const r = await api("/api/reviewer", {id: id});
    if (seq !== state.renderSeq) return;
    const cards = el("div", {class: "cards"});
    // recent brands
    const rb = el("section", {class: "card", "data-section": "recent_brands"}, el("h3", {}, "Recent brands (newest first)"));
    if (r.recent_brands.kind === "missing") rb.appendChild(missingNote(r.recent_brands.note));
    else if (!r.recent_brands.items.length) rb.appendChild(el("p", {class: "empty"}, "No brands for this reviewer."));
    else rb.appendChild(el("ol", {class: "brands"}, r.recent_brands.items.map(it =>
      el("li", {"data-brand": it.brand}, el("span", {class: "brand"}, it.brand), " ", el("span", {class: "when"}, when(it.time))))));
    if (r.recent_brands.source) rb.appendChild(el("div", {class: "meta"}, "from ", el("code", {}, r.recent_brands.source)));
    cards.appendChild(rb);
    // recommendations
    const rec = el("section", {class: "card", "data-section": "recommendations"}, el("h3", {}, "Recommendations"));
    if (r.recommendations.kind === "missing") rec.appendChild(missingNote(r.recommendations.note));
    else {
      r.recommendations.models.forEach(m => {
        const box = el("div", {class: "model", "data-model": m.model}, el("h4", {}, m.model));
        if (!m.rows.length) box.appendChild(el("p", {class: "empty"}, "No recommendations from this model for this reviewer."));
        else box.appendChild(tableView(r.recommendations.columns, m.rows, [undefined, undefined, undefined, "num2"]));
        rec.appendChild(box);
      });
      rec.appendChild(el("div", {class: "meta"}, "from ", el("code", {}, r.recommendations.source),
        " · titles from ", el("code", {}, "silver/products")));
    }
    cards.appendChild(rec);
    // history
    const h = el("section", {class: "card wide", "data-section": "history"});
    if (r.history.kind === "missing") h.append(el("h3", {}, "History"), missingNote(r.history.note));
    else {
      h.appendChild(el("h3", {}, `History: ${r.history.n.toLocaleString("en-US")} reviews`));
      h.appendChild(el("div", {class: "scroll"}, tableView(r.history.columns, r.history.rows, null, {
        cell: (td, v, j) => {
          if (j === 0) td.textContent = when(v);
          else if (r.history.columns[j] === "text") {
            td.textContent = short(v || "", 160);
            if (v && v.length > 160) td.setAttribute("title", v);
          } else td.textContent = fmt(v);
        }})));
      h.appendChild(el("div", {class: "meta"}, "from ", el("code", {}, r.history.source), r.history.n > r.history.rows.length
        ? ` · the newest ${r.history.rows.length}` : ""));
    }
    cards.appendChild(h);
    main.appendChild(cards);
  }

  async function pageHealth(main, seq) {
    const [h, dl] = await Promise.all([api("/api/health"), api("/api/dead_letters", deadParams())]);
    if (seq !== state.renderSeq) return;
    const head = el("div", {class: "page-head"}, el("h2", {}, "Pipeline health"),
      el("p", {class: "hint"}, `Event log version ${h.events_version}; now ${when(h.now)}.`));
    const cards = el("div", {class: "cards"});
    // freshness
    const f = h.freshness;
    const fr = el("section", {class: "card", "data-section": "freshness"}, el("h3", {}, "Freshness"));
    fr.appendChild(el("dl", {class: "facts"},
      el("dt", {}, "latest event time (silver)"), el("dd", {id: "latest-event"}, when(f.latest_event_time)),
      el("dt", {}, "behind now by"), el("dd", {}, duration(f.latest_event_lag_s))));
    if (f.stream.kind === "missing") fr.appendChild(missingNote(f.stream.note));
    else {
      const s = f.stream;
      fr.appendChild(el("dl", {class: "facts"},
        el("dt", {}, "hub / consumer group"), el("dd", {}, s.checkpoint_key || "– (an unbounded run's firing)"),
        el("dt", {}, "last streaming commit"), el("dd", {}, when(s.committed_at) + " (" + duration(s.commit_age_s) + " ago)"),
        el("dt", {}, "events on the hub not read yet"), el("dd", {id: "lag-events"}, fmt(s.lag_events, "int")),
        el("dt", {}, "watermark"), el("dd", {id: "watermark"}, when(s.watermark)),
        el("dt", {}, "watermark behind now by"), el("dd", {}, duration(s.watermark_lag_s))));
      fr.appendChild(el("div", {class: "scroll", id: "partitions"}, tableView(
        ["partition", "last sequence number read", "hub's last sequence number", "lag (events)", "hub's last event enqueued",
          "watermark", "event-time lag"],
        s.partitions.map(p => [p.partition, p.sequence_number, p.hub_last_sequence_number, p.lag_events,
          when(p.hub_last_enqueued), when(p.watermark), duration(p.lag_s)]), [undefined, "int", "int", "int"])));
      fr.appendChild(el("p", {class: "hint"}, "Lag in events: events enqueued on the hub and not read yet, per " +
        "partition (the hub's last sequence number minus the last one read), as the hub reported them at that " +
        "commit. Event-time lag: the watermark behind the wall clock (replayed old reviews lag by years). The next " +
        "read of a partition starts after its last sequence number read."));
    }
    cards.appendChild(fr);
    // dead letters by reason
    const dr = el("section", {class: "card", "data-section": "dead_by_reason"}, el("h3", {}, "Dead letters by reason"));
    if (h.dead_letters.kind === "missing") dr.appendChild(missingNote(h.dead_letters.note));
    else {
      dr.appendChild(el("p", {}, `${h.dead_letters.total.toLocaleString("en-US")} dead letters in all. Pick a reason to browse them.`));
      dr.appendChild(tableView(["record type", "stage", "reason", "rows"], h.dead_letters.by_reason, null, {
        row: (tr, r) => {
          tr.classList.add("clickable");
          tr.addEventListener("click", () => {
            Object.assign(state.dead, {record_type: r[0], stage: r[1], reason: r[2], offset: 0});
            render();
          });
        }}));
    }
    cards.appendChild(dr);
    // run history
    const rh = el("section", {class: "card wide", "data-section": "runs"}, el("h3", {}, `Run history (${h.runs.length} commits, newest first)`));
    rh.appendChild(el("div", {class: "scroll"}, tableView(
      ["committed at", "mode", "source", "run id", "seconds", "reviews read", "silver rows", "dead letters", "duplicates",
        "reconciled", "details"],
      h.runs.map(r => [r.at, r.mode, r.source, r.run_id, r.duration_s, r.reviews_read !== undefined ? r.reviews_read : r.events_read,
        r.silver_rows, r.dead_letters, r.duplicates, r.reconciled, null]),
      null, {cell: (td, v, j, row) => {
        if (j === 0) td.textContent = when(v);
        else if (j === 4) td.textContent = fmt(v, "num2");
        else if (j === 10) td.appendChild(runDetails(h.runs.find(x => x.run_id === row[3] && x.at === row[0])));
        else td.textContent = fmt(v);
      }})));
    cards.appendChild(rh);
    // browse dead letters
    cards.appendChild(deadBrowser(dl));
    clear(main).append(head, cards);
  }

  function runDetails(run) {
    const d = el("details", {}, el("summary", {}, "open"));
    const kv = (title, obj, f) => {
      const entries = Object.entries(obj || {});
      return el("div", {class: "kv"}, el("h5", {}, title), entries.length
        ? el("ul", {}, entries.map(([k, v]) => el("li", {}, el("code", {}, k), ": ", f ? f(v) : fmt(v))))
        : el("p", {class: "empty"}, "none"));
    };
    d.append(kv("dead letters by reason", run.dead_by_reason),
      kv("expectations", run.expectations, v => `${v.action}, ${fmt(v.failed_rows)} rows`),
      kv("files", run.files, v => typeof v === "object" ? Object.entries(v).map(([a, b]) => `${a} ${b}`).join(", ") : fmt(v)),
      kv("table versions", run.table_versions));
    return d;
  }

  function deadParams() {
    const d = state.dead;
    return {reason: d.reason, stage: d.stage, record_type: d.record_type, q: d.q, offset: d.offset, limit: 25};
  }

  function deadBrowser(dl) {
    const sec = el("section", {class: "card wide", "data-section": "dead_letters"}, el("h3", {}, "Dead letters"));
    if (dl.kind === "missing") { sec.appendChild(missingNote(dl.note)); return sec; }
    const d = state.dead;
    const search = el("input", {type: "search", id: "dead-q", value: d.q, placeholder: "text in payload or detail"});
    const form = el("form", {class: "inline"}, el("label", {}, "Search ", search), el("button", {type: "submit"}, "Find"));
    form.addEventListener("submit", ev => { ev.preventDefault(); d.q = search.value; d.offset = 0; render(); });
    const active = [d.record_type, d.stage, d.reason].filter(Boolean).join(" / ");
    const clearBtn = el("button", {type: "button", id: "dead-clear"}, "show all");
    clearBtn.addEventListener("click", () => { Object.assign(d, {reason: "", stage: "", record_type: "", q: "", offset: 0}); render(); });
    sec.append(form, el("p", {id: "dead-range"}, active ? `Reason ${active}: ` : "",
      `${dl.total ? dl.offset + 1 : 0}–${Math.min(dl.total, dl.offset + dl.rows.length)} of ${dl.total}`, " ",
      active || d.q ? clearBtn : null));
    const payload = el("pre", {class: "payload", id: "dead-payload"}, "Click a row to see its raw payload.");
    const cols = dl.columns.filter(c => c !== "payload");
    const pi = dl.columns.indexOf("payload");
    sec.appendChild(el("div", {class: "scroll"}, tableView(cols, dl.rows.map(r => cols.map(c => r[dl.columns.indexOf(c)])), null, {
      row: (tr, r) => {
        tr.classList.add("clickable");
        tr.addEventListener("click", () => {
          const full = dl.rows.find(x => cols.every((c, i) => x[dl.columns.indexOf(c)] === r[i]));
          payload.textContent = full ? full[pi] : "";
          document.querySelectorAll("[data-section=dead_letters] tr.selected").forEach(x => x.classList.remove("selected"));
          tr.classList.add("selected");
        });
      }})));
    const prev = el("button", {type: "button", id: "dead-prev", disabled: dl.offset === 0}, "← previous");
    const next = el("button", {type: "button", id: "dead-next", disabled: dl.offset + dl.rows.length >= dl.total}, "next →");
    prev.addEventListener("click", () => { d.offset = Math.max(0, d.offset - 25); render(); });
    next.addEventListener("click", () => { d.offset += 25; render(); });
    sec.append(el("div", {class: "pager"}, prev, " ", next), el("h4", {}, "Raw payload"), payload);
    return sec;
  }

  // ---------------------------------------------------------------------------------------- routing, refresh

  const PAGES = {insights: pageInsights, trending: pageTrending, reviewer: pageReviewer, health: pageHealth};

  function parseHash() {
    const h = location.hash.replace(/^#/, "");
    const [page, query] = h.split("?");
    state.page = PAGES[page] ? page : "insights";
    state.params = Object.fromEntries(new URLSearchParams(query || ""));
  }

  async function render(quiet) {
    const seq = ++state.renderSeq;
    const main = document.getElementById("page");
    document.querySelectorAll("#nav a").forEach(a => a.classList.toggle("active", a.dataset.page === state.page));
    document.getElementById("filters").hidden = state.page !== "insights";
    document.body.dataset.page = state.page;
    if (!quiet) setStatus("loading…", "busy");
    try {
      await PAGES[state.page](main, seq);
      await state.metaLoaded;
      if (seq === state.renderSeq) {
        document.body.dataset.ready = state.page + ":" + state.version;
        performance.mark("dashboard-ready");
        setStatus(`event log v${state.version}` + (state.updated ? ` · updated ${state.updated}` : ""), "ok");
      }
    } catch (err) {
      if (seq !== state.renderSeq) return;
      clear(main).appendChild(el("p", {class: "error", role: "alert"}, "Could not load: " + err.message));
      setStatus("error", "error");
      document.body.dataset.ready = state.page + ":error";
    }
  }

  async function loadMeta() {
    const meta = await api("/api/meta");
    state.meta = meta;
    state.version = meta.events_version;
    const mc = document.getElementById("f-main_cat");
    const keep = mc.value;
    clear(mc).appendChild(el("option", {value: ""}, "all"));
    meta.main_cats.forEach(c => mc.appendChild(el("option", {value: c}, c)));
    mc.value = meta.main_cats.includes(keep) ? keep : "";
    const bl = clear(document.getElementById("brand-list"));
    meta.brands.forEach(b => bl.appendChild(el("option", {value: b})));
    const [lo, hi] = meta.time_range;
    for (const id of ["f-from", "f-to"]) {
      const input = document.getElementById(id);
      if (lo) input.min = lo;
      if (hi) input.max = hi;
    }
  }

  async function poll() {
    try {
      const v = await api("/api/version");
      if (v.events_version !== state.version || v.recommendations_version !== state.recVersion) {
        const first = state.version === null;
        state.recVersion = v.recommendations_version;
        if (!first) {
          await loadMeta();
          state.updated = new Date().toLocaleTimeString();
          await render(true);
        }
      }
    } catch (err) {
      setStatus("cannot reach the dashboard server: " + err.message, "error");
    }
  }

  async function start() {
    const roots = (await (await fetch("/api/roots")).json()).roots;
    const sel = document.getElementById("root");
    roots.forEach(r => sel.appendChild(el("option", {value: r.index, title: r.path}, r.name)));
    const saved = Number(new URLSearchParams(location.search).get("root") || 0);
    state.root = roots[saved] ? saved : 0;
    sel.value = String(state.root);
    sel.addEventListener("change", async () => {
      state.root = Number(sel.value);
      state.dead = {offset: 0, reason: "", stage: "", record_type: "", q: ""};
      await loadMeta();
      const v = await api("/api/version");
      state.recVersion = v.recommendations_version;
      render();
    });
    document.querySelectorAll("#filters input, #filters select").forEach(i =>
      i.addEventListener("change", () => render()));
    document.getElementById("f-clear").addEventListener("click", () => {
      document.querySelectorAll("#filters input[type=date], #filters input[type=text]").forEach(i => { i.value = ""; });
      document.getElementById("f-main_cat").value = "";
      document.getElementById("f-verified").checked = false;
      render();
    });
    window.addEventListener("hashchange", () => { parseHash(); render(); });
    parseHash();
    // the filter choices and the first page load side by side: the first view waits for neither in turn
    state.metaLoaded = loadMeta();
    const version = api("/api/version").then(v => { state.recVersion = v.recommendations_version; });
    await Promise.all([state.metaLoaded, version, render()]);
    setInterval(poll, POLL_MS);
  }

  start().catch(err => {
    clear(document.getElementById("page")).appendChild(el("p", {class: "error", role: "alert"}, "Could not start: " + err.message));
    document.body.dataset.ready = "error";
  });
})();
