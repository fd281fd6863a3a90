"use strict";
// initaudit HTML report: draws every section from the JSON block #initaudit-data.
// No request ever leaves the page (the CSP forbids it); errors are written into #page-errors so
// that a headless browser's DOM dump shows them.
(function () {
  const errorList = document.getElementById("page-errors");
  function recordError(text) {
    const li = document.createElement("li");
    li.textContent = String(text);
    errorList.appendChild(li);
    errorList.hidden = false;
    document.body.dataset.errors = String(errorList.children.length);
  }
  window.addEventListener("error", (e) => recordError("error: " + (e.message || e.type) +
    (e.filename ? " at " + e.filename + ":" + e.lineno : "")));
  window.addEventListener("unhandledrejection", (e) => recordError("unhandled rejection: " + e.reason));
  document.addEventListener("securitypolicyviolation", (e) =>
    recordError("blocked by the Content-Security-Policy: " + e.violatedDirective + " " + e.blockedURI));
  const consoleError = console.error.bind(console);
  console.error = function (...args) { recordError("console.error: " + args.join(" ")); consoleError(...args); };

  const SVG = "http://www.w3.org/2000/svg";
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    return fill(node, attrs, kids);
  }
  function sv(tag, attrs, ...kids) {
    const node = document.createElementNS(SVG, tag);
    return fill(node, attrs, kids);
  }
  function fill(node, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.appendChild(typeof kid === "string" ? document.createTextNode(kid) : kid);
    }
    return node;
  }
  const ok = (x) => typeof x === "number" && isFinite(x);
  function fmt(x) {
    if (!ok(x)) return "–";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(1).replace("e+", "e");
    if (a >= 100) return x.toFixed(0);
    return String(Number(x.toPrecision(3)));
  }
  const pct = (x) => (ok(x) ? (x * 100 < 1 && x > 0 ? "<1%" : Math.round(x * 100) + "%") : "–");
  const plural = (n, w) => n + " " + w + (n === 1 ? "" : "s");

  // ---- histograms ------------------------------------------------------------------------
  const DEAD_POST = { relu: 0, relu6: 0, hardswish: 0 };
  // Output range of the bounded activations: their post-activation histograms span all of it.
  const BOUNDS = { sigmoid: [0, 1], tanh: [-1, 1], hardtanh: [-1, 1], hardsigmoid: [0, 1], softsign: [-1, 1] };
  function regionsFor(act, stage) {
    const R = DATA.regions, out = [];
    if (!act) return out;
    const sat = (stage === "pre" ? R.sat_pre : R.sat_post)[act];
    if (sat) out.push({ lo: -Infinity, hi: sat[0], kind: "sat" }, { lo: sat[1], hi: Infinity, kind: "sat" });
    if (stage === "pre" && act in R.dead) out.push({ lo: -Infinity, hi: R.dead[act], kind: "dead" });
    return out;
  }
  function histSvg(hist, opt) {
    const W = opt.W || 200, H = opt.H || 92, top = 6, bottom = opt.axis === false ? 2 : 16, plotH = H - top - bottom;
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "hist " + (opt.cls || ""), role: "img",
                            "aria-label": opt.label || "histogram" });
    svg.appendChild(sv("rect", { x: 0, y: top, width: W, height: plotH, fill: "#fbfcfd", stroke: "#e6ebf0" }));
    const counts = hist.c, n = counts.length, lo = hist.lo, hi = hist.hi;
    const total = counts.reduce((a, b) => a + b, 0);
    let peak = Math.max(1, ...counts);
    const single = !(hi > lo);
    const bw = single ? 0 : (hi - lo) / n;
    // The x axis spans the values, or a wider domain (an activation's output range, or the range
    // shared by the layers of one figure) so that a collapse shows as a spike.
    let d0 = lo, d1 = hi;
    if (opt.domain) { d0 = Math.min(opt.domain[0], lo); d1 = Math.max(opt.domain[1], hi); }
    const wide = d1 > d0;
    const X = (v) => (wide ? ((v - d0) / (d1 - d0)) * W : W / 2);
    let density = null;
    if (opt.density && wide) {
      density = [];
      for (let i = 0; i <= 100; i++) {
        const v = d0 + ((d1 - d0) * i) / 100;
        density.push([v, opt.density(v) * total * (bw || (d1 - d0) / n)]);
      }
      peak = Math.max(peak, ...density.map((d) => d[1]));
    }
    const Y = (c) => top + plotH - (c / peak) * (plotH - 2);
    for (const r of opt.regions || []) {
      if (!wide) break;
      const a = Math.max(d0, r.lo), b = Math.min(d1, r.hi);
      if (b < a) continue;
      const x0 = X(a), w = Math.max(2, X(b) - x0);
      svg.appendChild(sv("rect", { x: Math.min(x0, W - 2), y: top, width: w, height: plotH,
                                   class: "region-" + r.kind, fill: r.kind === "sat" ? "var(--sat)" : "var(--dead)" },
        sv("title", { text: r.kind === "sat" ? "flat (saturated) region of the activation" :
                                               "zero region: the activation outputs 0 here" })));
    }
    counts.forEach((c, i) => {
      const a = single ? lo : lo + i * bw, b = single ? hi : a + bw;
      let color = "var(--bar)";
      for (const r of opt.regions || []) {
        const overlap = Math.min(b, r.hi) - Math.max(a, r.lo);
        // a pre-activation bin mostly inside the region; a post-activation bin reaching into it
        // (the flat region of an output is a thin strip at its ends: sigmoid < 0.01, > 0.99)
        if (single ? (a >= r.lo && a <= r.hi) : (opt.post ? overlap > 0 : overlap >= 0.5 * bw))
          color = r.kind === "sat" ? "var(--sat-bar)" : "var(--dead-bar)";
      }
      if (opt.zeroBin && a <= 0 && 0 <= b) color = "var(--dead-bar)";
      const x = single ? Math.max(0, Math.min(W - 4, X(lo) - 2)) : X(a);
      const w = single ? 4 : Math.max(2, (X(b) - X(a)) * 0.9);
      svg.appendChild(sv("rect", { x, y: Y(c), width: w, height: top + plotH - Y(c), fill: color, class: "bar" },
        sv("title", { text: `[${fmt(a)}, ${fmt(b)}): ${c}` })));
    });
    if (density) {
      const d = density.map(([v, c], i) => (i ? "L" : "M") + X(v).toFixed(1) + " " + Y(c).toFixed(1)).join(" ");
      svg.appendChild(sv("path", { d, fill: "none", stroke: "var(--density)", "stroke-width": 1.6, class: "density" }));
    }
    svg.appendChild(sv("title", { text: `${opt.label || "histogram"}: ${total} values in [${fmt(lo)}, ${fmt(hi)}]` }));
    if (opt.axis === false) return svg;
    svg.appendChild(sv("text", { x: 2, y: H - 4, text: fmt(d0) }));
    svg.appendChild(sv("text", { x: W - 2, y: H - 4, "text-anchor": "end", text: fmt(d1) }));
    if (wide && d0 < 0 && d1 > 0) {
      svg.appendChild(sv("line", { x1: X(0), x2: X(0), y1: top, y2: top + plotH, stroke: "#afb8c1", "stroke-dasharray": "2 2" }));
      svg.appendChild(sv("text", { x: X(0), y: H - 4, "text-anchor": "middle", text: "0" }));
    }
    return svg;
  }
  function weightDensity(layer) {
    const s = layer.expected_std;
    if (!ok(s) || s <= 0) return null;
    if (layer.w_shape === "uniform") {
      const b = Math.sqrt(3) * s;
      return (v) => (Math.abs(v) <= b ? 1 / (2 * b) : 0);
    }
    return (v) => Math.exp(-0.5 * (v / s) ** 2) / (s * Math.sqrt(2 * Math.PI));
  }

  // ---- log-axis charts -------------------------------------------------------------------
  function logScale(values, lo0, hi0, y0, y1) {
    const vs = values.filter((v) => ok(v) && v > 0);
    let lo = Math.min(lo0, ...vs), hi = Math.max(hi0, ...vs);
    lo = Math.pow(10, Math.floor(Math.log10(lo))); hi = Math.pow(10, Math.ceil(Math.log10(hi)));
    if (!(hi > lo)) hi = lo * 10;
    const f = (v) => y1 - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (y1 - y0);
    f.lo = lo; f.hi = hi;
    return f;
  }
  function decades(svg, Y, x0, x1) {
    for (let e = Math.round(Math.log10(Y.lo)); e <= Math.round(Math.log10(Y.hi)); e++) {
      const y = Y(Math.pow(10, e));
      svg.appendChild(sv("line", { x1: x0, x2: x1, y1: y, y2: y, stroke: "#e6ebf0" }));
      svg.appendChild(sv("text", { x: x0 - 6, y: y + 4, "text-anchor": "end", text: "1e" + e }));
    }
  }
  function xLabels(svg, n, X, y, names) {
    const every = Math.max(1, Math.ceil(n / 24));
    for (let i = 0; i < n; i++) {
      if ((i % every && i !== n - 1) || (i !== n - 1 && n - 1 - i < every * 0.6)) continue;
      svg.appendChild(sv("text", { x: X(i), y, "text-anchor": "middle", text: String(i + 1) }, sv("title", { text: names[i] })));
    }
  }
  function profileChart(signal) {
    const W = 1000, H = 320, m = { l: 56, r: 14, t: 10, b: 36 };
    const n = signal.length, cw = (W - m.l - m.r) / n;
    const B = DATA.bands, van = B.vanishing, exp = B.exploding;
    const origin = signal.map((s) => (ok(s.ratio) && s.ratio > 0 && ok(s.predicted_std) ? s.predicted_std / s.ratio : 1));
    const vals = signal.flatMap((s) => [s.predicted_std, s.measured_std]);
    const Y = logScale(vals, Math.min(...origin) * van.error * 0.3, Math.max(...origin) * exp.error * 3, m.t, H - m.b);
    const X = (i) => m.l + (i + 0.5) * cw;
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart profile", role: "img",
                            "aria-label": "predicted and measured activation std per layer" });
    signal.forEach((s, i) => {
      const o = origin[i], x = m.l + i * cw;
      const band = (a, b, cls, fillv, what) => {
        const ya = Math.max(m.t, Math.min(H - m.b, Y(Math.min(Y.hi, Math.max(Y.lo, a)))));
        const yb = Math.max(m.t, Math.min(H - m.b, Y(Math.min(Y.hi, Math.max(Y.lo, b)))));
        if (Math.abs(yb - ya) < 0.5) return;
        svg.appendChild(sv("rect", { x, width: cw + 0.3, y: Math.min(ya, yb), height: Math.abs(yb - ya), fill: fillv, class: cls },
          sv("title", { text: what })));
      };
      band(o * van.warn, o * van.error, "band-warn", "var(--band-warn)", `${van.rules.join("/")} warning: below ${van.warn}x the segment start`);
      band(o * van.error, Y.lo, "band-error", "var(--band-error)", `${van.rules.join("/")} error: below ${van.error}x the segment start`);
      band(o * exp.warn, o * exp.error, "band-warn", "var(--band-warn)", `${exp.rules.join("/")} warning: above ${exp.warn}x the segment start`);
      band(o * exp.error, Y.hi, "band-error", "var(--band-error)", `${exp.rules.join("/")} error: above ${exp.error}x the segment start`);
    });
    decades(svg, Y, m.l, W - m.r);
    const line = (key, color, cls, dash) => {
      let d = "", pen = false;
      signal.forEach((s, i) => {
        const v = s[key];
        if (ok(v) && v > 0) { d += (pen ? "L" : "M") + X(i).toFixed(1) + " " + Y(v).toFixed(1); pen = true; } else pen = false;
      });
      if (d) svg.appendChild(sv("path", { d, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash }));
      signal.forEach((s, i) => {
        const v = s[key];
        if (!(ok(v) && v > 0)) return;
        const tip = `${s.layer} (${s.param}): ${key === "predicted_std" ? "predicted" : "measured"} std ${fmt(v)}` +
          `, ${fmt(key === "predicted_std" ? s.ratio : s.measured_ratio)}x its value at ${s.origin}`;
        const hollow = cls === "pt-pred", r = n > 80 ? (hollow ? 2.2 : 1.6) : (hollow ? 5 : 3.6);
        svg.appendChild(sv("circle", { cx: X(i), cy: Y(v), r, fill: hollow ? "none" : color, stroke: color,
                                       "stroke-width": hollow ? (n > 80 ? 1 : 1.8) : 0, class: cls, "data-layer": s.param },
          sv("title", { text: tip })));
      });
    };
    line("measured_std", "var(--meas)", "pt-meas", null);
    line("predicted_std", "var(--pred)", "pt-pred", "6 4");
    xLabels(svg, n, X, H - m.b + 16, signal.map((s) => s.layer));
    svg.appendChild(sv("text", { x: m.l + (W - m.l - m.r) / 2, y: H - 4, "text-anchor": "middle", text: "weight layer (forward order)" }));
    return svg;
  }
  function gradientChart(layers) {
    const rows = layers.map((l, i) => [l, i]).filter(([l]) => ok(l.grad_ratio) && l.grad_ratio > 0);
    const W = 1000, H = 260, m = { l: 56, r: 14, t: 10, b: 36 }, n = rows.length, cw = (W - m.l - m.r) / n;
    const ref = [...rows].reverse().find(([l]) => l.kind !== "norm" && l.kind !== "embedding");
    const r0 = ref ? ref[0].grad_ratio : rows[rows.length - 1][0].grad_ratio;
    const G = DATA.grad_bands;
    const Y = logScale(rows.map(([l]) => l.grad_ratio), r0 * G.vanishing.warn, r0 * G.exploding.warn, m.t, H - m.b);
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart gradients", role: "img", "aria-label": "gradient-to-weight ratio per layer" });
    const zone = (a, b, fillv, what) => {
      const ya = Y(Math.min(Y.hi, Math.max(Y.lo, a))), yb = Y(Math.min(Y.hi, Math.max(Y.lo, b)));
      if (Math.abs(yb - ya) >= 0.5) svg.appendChild(sv("rect", { x: m.l, width: W - m.l - m.r, y: Math.min(ya, yb), height: Math.abs(ya - yb), fill: fillv }, sv("title", { text: what })));
    };
    zone(r0 * G.vanishing.warn, Y.lo, "var(--band-warn)", `${G.vanishing.rules[0]}: below ${G.vanishing.warn}x the layer nearest the output`);
    zone(r0 * G.exploding.warn, Y.hi, "var(--band-warn)", `${G.exploding.rules[0]}: above ${G.exploding.warn}x the layer nearest the output`);
    decades(svg, Y, m.l, W - m.r);
    rows.forEach(([l], j) => {
      const y = Y(l.grad_ratio), x = m.l + j * cw + cw * 0.15;
      svg.appendChild(sv("rect", { x, width: Math.max(1, cw * 0.7), y, height: H - m.b - y, class: "grad-bar",
                                   fill: l.flags.some((c) => c === "IA206" || c === "IA207") ? "var(--sat-bar)" : "var(--bar)", "data-layer": l.param },
        sv("title", { text: `${l.param}: |dL/dW| / |W| = ${fmt(l.grad_ratio)}` })));
    });
    xLabels(svg, n, (j) => m.l + (j + 0.5) * cw, H - m.b + 16, rows.map(([l]) => l.param));
    svg.appendChild(sv("text", { x: m.l + (W - m.l - m.r) / 2, y: H - 4, "text-anchor": "middle", text: "parameter (forward order)" }));
    return svg;
  }
  function legend(items) {
    return el("div", { class: "legend" }, items.map(([color, text]) => el("span", {}, el("i", { style: "background:" + color }), text)));
  }

  // ---- report sections -------------------------------------------------------------------
  let DATA = null;
  const layerIndex = new Map();
  function layerLink(name) {
    const i = layerIndex.get(name);
    return i === undefined ? el("span", { class: "mono" }, name)
      : el("a", { class: "layer mono", href: "#L" + i, text: name });
  }
  function header(d) {
    const s = d.summary, failed = s.failed;
    const p = d.probe;
    const probe = p.ran ? `probe: batch ${p.batch_size}, seed ${p.seed}${p.grads ? ", forward + backward" : ", forward only"}`
      : "probe did not run: " + p.reason;
    return el("header", { class: "verdict" },
      el("div", { class: "badge " + (failed ? "fail" : "pass"), id: "verdict", text: failed ? "FAIL" : "PASS" }),
      el("div", {},
        el("h1", { class: "mono", text: d.target }),
        el("div", { class: "counts" },
          el("span", { style: "color:var(--error)", text: plural(s.errors, "error") }),
          el("span", { style: "color:#9a6700", text: plural(s.warnings, "warning") }),
          el("span", { style: "color:var(--info)", text: s.infos + " info" }),
          el("span", { class: "meta", text: `fail-on ${s.fail_on}` })),
        el("div", { class: "meta", text: `${d.format} · ${d.parameters.toLocaleString("en")} parameters · ${d.layers.length} weight layers · stage ${d.stage} (${d.stage_reason}) · ${probe}` })));
  }
  const SHOWN_FINDINGS = 8;  // per rule; the rest (a long model's repeated blocks) fold into one line
  function findingList(items) {
    const SEV = { error: 0, warning: 1, info: 2 };
    const order = items.map((f, k) => [f, k]).sort((a, b) => (SEV[a[0].severity] ?? 3) - (SEV[b[0].severity] ?? 3) || a[1] - b[1]).map(([f]) => f);
    const li = (f) => el("li", { class: "finding", "data-severity": f.severity },
      el("span", { class: "sev " + f.severity, text: f.severity }), " ", layerLink(f.layer), ": ", f.message,
      f.fix ? el("div", { class: "fix" }, "fix: ", el("code", { text: f.fix })) : null);
    const cut = order.length > SHOWN_FINDINGS + 2 ? SHOWN_FINDINGS : order.length;
    const rest = order.slice(cut);
    return el("ul", {}, order.slice(0, cut).map(li),
      rest.length ? el("li", { class: "more" }, el("details", { class: "more" },
        el("summary", { text: `${rest.length} more ${items[0].rule} findings (${[...new Set(rest.map((f) => f.severity))].join(", ")})` }),
        el("ul", {}, rest.map(li)))) : null);
  }
  function findingsSection(d) {
    const sec = el("section", { id: "findings" }, el("h2", { text: "Findings by rule" }));
    if (!d.findings.length) { sec.appendChild(el("p", { class: "empty", text: "No findings." })); return sec; }
    const groups = new Map();
    for (const f of d.findings) { if (!groups.has(f.rule)) groups.set(f.rule, []); groups.get(f.rule).push(f); }
    for (const [code, items] of groups) {
      const meta = d.rules[code] || {};
      const bySev = {};
      items.forEach((f) => (bySev[f.severity] = (bySev[f.severity] || 0) + 1));
      sec.appendChild(el("div", { class: "rule", id: "rule-" + code, "data-rule": code },
        el("div", { class: "head" },
          el("h3", { class: "mono", text: `${code} ${meta.name || items[0].name || ""}` }),
          el("span", { class: "meta", text: meta.category || items[0].category }),
          Object.entries(bySev).map(([sev, k]) => el("span", { class: "sev " + sev, text: `${k} ${sev}` })),
          el("span", { class: "summary", text: meta.summary || "" })),
        findingList(items),
        meta.doc ? el("details", { class: "doc" }, el("summary", { text: `Rule documentation: ${code} ${meta.name || ""}` }),
                      el("pre", { text: meta.doc })) : null));
    }
    return sec;
  }
  function notesSection(d) {
    const items = [...d.rule_errors.map((e) => "rule error: " + e), ...d.notes];
    if (!items.length) return null;
    return el("section", { id: "notes" }, el("details", {}, el("summary", { text: `Notes (${items.length})` }),
      el("ul", {}, items.map((t) => el("li", { text: t })))));
  }
  function profileSection(d) {
    const sec = el("section", { id: "profile" }, el("h2", { text: "Depth profile: activation std per layer" }));
    if (!d.signal.length) { sec.appendChild(el("p", { class: "empty", text: "No depth profile: the model's dataflow is unknown (a checkpoint without --model)." })); return sec; }
    if (!d.probe.ran) sec.appendChild(el("p", { class: "notice", text: "Static prediction only: the probe did not run (" + d.probe.reason + "), so there is no measured std." }));
    const B = d.bands;
    sec.appendChild(profileChart(d.signal));
    sec.appendChild(legend([["var(--pred)", "predicted std (mean-field, before any forward pass)"], ["var(--meas)", "measured std (probe batch)"],
      ["var(--band-warn)", `warning bands: below ${B.vanishing.warn}x or above ${B.exploding.warn}x the segment's start (${B.vanishing.rules.join(", ")}, ${B.exploding.rules.join(", ")})`],
      ["var(--band-error)", `error bands: below ${B.vanishing.error}x or above ${B.exploding.error}x`]]));
    return sec;
  }
  function layerCard(l, i) {
    const act = l.site_act_name || null;
    const figs = [];
    const cap = (t) => el("div", { class: "cap", text: t });
    if (l.pre) figs.push(el("div", { class: "fig" }, histSvg(l.pre, { cls: "hist-act hist-pre", regions: regionsFor(act, "pre"), label: "pre-activation of " + l.param }),
      cap(`pre-activation · std ${fmt(l.measured_std)}`)));
    if (l.post) figs.push(el("div", { class: "fig" }, histSvg(l.post, { cls: "hist-act hist-post", regions: regionsFor(act, l.pre ? "post" : null), post: true, zeroBin: l.pre && act in DEAD_POST,
                           domain: l.pre ? BOUNDS[act] : null, label: "output of " + l.param }),
      cap(l.pre ? `after ${l.site_act}` + (ok(l.saturated) ? ` · ${pct(l.saturated)} saturated` : "") + (ok(l.dead) ? ` · ${pct(l.dead)} dead` : "")
                : `output · std ${fmt(l.measured_std)}`)));
    // weights on an axis wide enough for the expected density too (+-3 expected std)
    const wDomain = ok(l.expected_std) && l.expected_std > 0 ? [-3 * l.expected_std, 3 * l.expected_std] : null;
    if (l.site && !l.post && DATA.probe.histograms)
      figs.push(el("div", { class: "fig note", text: "no activation histogram: the output at this site is non-finite or empty" }));
    if (l.w) figs.push(el("div", { class: "fig" }, histSvg(l.w, { cls: "hist-w", density: weightDensity(l), domain: wDomain, label: "weights of " + l.param }),
      cap(`weights · std ${fmt(l.std)}` + (l.scheme ? ` vs ${l.scheme} ${fmt(l.expected_std)}` : ""))));
    return el("div", { class: "card" + (l.flags.length ? " flagged" : ""), id: "L" + i, "data-layer": l.param },
      el("div", { class: "title" }, el("span", { class: "mono", text: l.param }),
        el("span", { class: "meta" }, `${l.op} ${l.shape.join("×")}` + (l.act ? ` → ${l.act}` : ""), l.flags.map((c) => el("a", { class: "flag", href: "#rule-" + c, text: c })))),
      figs.length ? el("div", { class: "figs" }, figs) : el("div", { class: "empty", text: "no histogram for this layer" }));
  }
  // ---- repeated blocks: one row per layer of the block, its figures across the repeats ----
  const OVERVIEW = [
    ["weight std", (l) => l.std], ["measured std", (l) => l.measured_std], ["predicted std", (l) => l.predicted_std],
    ["|dW|/|W|", (l) => l.grad_ratio], ["dead", (l) => l.dead, pct], ["saturated", (l) => l.saturated, pct],
  ];
  function sparkline(values, flagged, label, show) {
    // values[r] for repeat r (null where missing); a log axis when all are positive (std, ratios)
    const W = 150, H = 26, pad = 3;
    const fin = values.filter(ok), log = fin.every((v) => v > 0);
    const f = (v) => (log ? Math.log10(v) : v);
    let lo = Math.min(...fin.map(f)), hi = Math.max(...fin.map(f));
    // a spread under 25% (log axis) or 10% of the magnitude draws as a nearly flat line
    const floor = log ? Math.log10(1.25) : 0.1 * Math.max(Math.abs(lo), Math.abs(hi));
    if (hi - lo < floor) { const mid = (hi + lo) / 2; lo = mid - floor / 2; hi = mid + floor / 2; }
    const X = (r) => pad + (values.length > 1 ? (r / (values.length - 1)) * (W - 2 * pad) : (W - 2 * pad) / 2);
    const Y = (v) => (hi > lo ? H - pad - ((f(v) - lo) / (hi - lo)) * (H - 2 * pad) : H / 2);
    let d = "", pen = false;
    values.forEach((v, r) => { if (ok(v)) { d += (pen ? "L" : "M") + X(r).toFixed(1) + " " + Y(v).toFixed(1); pen = true; } else pen = false; });
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", "data-n": fin.length, role: "img", "aria-label": label },
      sv("path", { d, fill: "none", stroke: "var(--meas)", "stroke-width": 1.4 }));
    values.forEach((v, r) => { if (ok(v) && flagged[r]) svg.appendChild(sv("circle", { cx: X(r), cy: Y(v), r: 2.2, fill: "var(--error)", class: "spark-flag" })); });
    const iMin = values.indexOf(Math.min(...fin)), iMax = values.indexOf(Math.max(...fin));
    svg.appendChild(sv("title", { text: `${label}: min ${show(values[iMin])} (repeat ${iMin + 1}), max ${show(values[iMax])} (repeat ${iMax + 1})` }));
    return svg;
  }
  function blockOverview(run) {
    const first = run[0], R = run.length;
    const pattern = first.name.replace(/\d+$/, "*");
    const layers = run.reduce((a, g) => a + g.items.length, 0);
    const flaggedBlocks = run.filter((g) => g.items.some(([l]) => l.flags.length)).length;
    const cols = OVERVIEW.filter(([, get]) => run.some((g) => g.items.some(([l]) => ok(get(l)))));
    const rows = first.items.map(([l0], j) => {
      const suffix = l0.param.startsWith(first.name) ? l0.param.slice(first.name.length) : l0.param;
      const at = run.map((g) => g.items[j][0]);
      return el("tr", { "data-position": suffix },
        el("td", { class: "mono", text: pattern + suffix }), el("td", { text: `${l0.op} ${l0.shape.join("×")}` }),
        cols.map(([label, get, show]) => {
          const values = at.map((l) => (ok(get(l)) ? get(l) : null)), fin = values.filter(ok);
          if (!fin.length) return el("td", { class: "num", text: "–" });
          const fmtv = show || fmt, lo = Math.min(...fin), hi = Math.max(...fin);
          return el("td", { class: "num", "data-min": lo, "data-max": hi },
            sparkline(values, at.map((l) => l.flags.length > 0), `${label} of ${pattern + suffix} across ${R} repeats`, fmtv),
            el("div", { class: "range", text: lo === hi ? fmtv(lo) : `${fmtv(lo)} – ${fmtv(hi)}` }));
        }),
        el("td", { text: [...new Set(at.flatMap((l) => l.flags))].join(" ") || "–" }));
    });
    return el("div", { class: "overview", "data-run": `${first.name}–${run[R - 1].name}`, "data-repeats": R },
      el("h3", {}, `${pattern}: ${R} repeats of one block`,
        el("span", { class: "meta", text: ` ${plural(first.items.length, "layer")} each, ${plural(layers, "layer")} in all` +
                                            (flaggedBlocks ? ` · ${plural(flaggedBlocks, "block")} with findings` : " · no findings") +
                                            ` · each line runs over the repeats ${first.name} → ${run[R - 1].name}` })),
      el("div", { class: "tablewrap" }, el("table", { class: "overview-table" },
        el("thead", {}, el("tr", {}, ["layer", "op", ...cols.map(([label]) => label), "findings"].map((t) => el("th", { text: t })))),
        el("tbody", {}, rows))));
  }
  function histogramSection(d) {
    const sec = el("section", { id: "histograms" }, el("h2", { text: "Histograms per layer" }));
    const p = d.probe;
    if (!p.ran) sec.appendChild(el("p", { class: "notice", text: `No activation histograms: the probe did not run (${p.reason}).` + (d.layers.some((l) => l.w) ? " Weight histograms come from the static pass." : "") }));
    else if (!p.histograms) sec.appendChild(el("p", { class: "notice", text: "No activation histograms: they were not collected (run with --histograms or --html)." }));
    sec.appendChild(legend([["var(--bar)", "values"], ["var(--sat)", "flat region of the activation (saturated)"], ["var(--dead)", "zero region (ReLU family off)"], ["var(--density)", "expected density of the scheme (weights)"]]));
    const groups = [];
    d.layers.forEach((l, i) => {
      if (!groups.length || groups[groups.length - 1].name !== l.block) groups.push({ name: l.block, items: [] });
      groups[groups.length - 1].items.push([l, i]);
    });
    // Runs of blocks with the same structure (the same layer names after the block's prefix,
    // the same ops): the first open_blocks stay in view, the rest fold into one line.
    const signature = (g) => g.items.map(([l]) => (l.param.startsWith(g.name) ? l.param.slice(g.name.length) : l.param) + ":" + l.op).join("|");
    const blockView = (g, open) => {
      const flagged = g.items.filter(([l]) => l.flags.length).length;
      return el("details", { class: "block", open: open || flagged > 0, "data-block": g.name },
        el("summary", {}, g.name, el("span", { class: "meta", text: `${plural(g.items.length, "layer")}` + (flagged ? ` · ${flagged} with findings` : "") })),
        el("div", { class: "cards" }, g.items.map(([l, i]) => layerCard(l, i))));
    };
    for (let k = 0; k < groups.length;) {
      let end = k + 1;
      while (end < groups.length && groups[k].items.length > 1 && signature(groups[end]) === signature(groups[k])) end++;
      const run = groups.slice(k, end);
      // A run that folds is first shown once, as its block's layers with their spread over the repeats.
      if (run.length > d.open_blocks) sec.appendChild(blockOverview(run));
      run.slice(0, d.open_blocks).forEach((g) => sec.appendChild(blockView(g, true)));
      // The rest fold into one line per stretch of clean blocks; a block with findings stays in view.
      let fold = [];
      const flush = () => {
        if (fold.length === 1) sec.appendChild(blockView(fold[0], false));
        else if (fold.length > 1) {
          const layers = fold.reduce((a, g) => a + g.items.length, 0);
          sec.appendChild(el("details", { class: "block run", "data-run": `${fold[0].name}–${fold[fold.length - 1].name}` },
            el("summary", {}, `${fold[0].name} … ${fold[fold.length - 1].name}`,
               el("span", { class: "meta", text: `${fold.length} more blocks of the same structure (${plural(layers, "layer")}), no findings` })),
            el("div", { class: "runbody" }, fold.map((g) => blockView(g, false)))));
        }
        fold = [];
      };
      for (const g of run.slice(d.open_blocks)) {
        if (g.items.some(([l]) => l.flags.length)) { flush(); sec.appendChild(blockView(g, true)); } else fold.push(g);
      }
      flush();
      k = end;
    }
    return sec;
  }
  function gradientSection(d) {
    const sec = el("section", { id: "gradients" }, el("h2", { text: "Gradient-to-weight ratio |dL/dW| / |W| per layer" }));
    if (!d.layers.some((l) => ok(l.grad_ratio) && l.grad_ratio > 0)) {
      sec.appendChild(el("p", { class: "empty", text: !d.probe.ran ? `No gradients: the probe did not run (${d.probe.reason}).`
        : d.probe.grads ? "No finite, non-zero gradient-to-weight ratio to draw (see the findings)." : "No gradients: the probe ran forward only (ONNX, or the backward pass failed: see the notes)." }));
      return sec;
    }
    sec.appendChild(gradientChart(d.layers));
    sec.appendChild(legend([["var(--bar)", "one backward pass of the probe's synthetic loss"], ["var(--sat-bar)", "flagged by IA206/IA207"],
      ["var(--band-warn)", `where ${d.grad_bands.vanishing.rules[0]} / ${d.grad_bands.exploding.rules[0]} warn, relative to the layer nearest the output`]]));
    return sec;
  }
  const COLUMNS = [
    ["#", (l, i) => i + 1, true], ["parameter", (l) => l.param], ["op", (l) => l.op], ["shape", (l) => l.shape.join("×")],
    ["fan in→out", (l) => (l.fan_in ? `${l.fan_in}→${l.fan_out}` : "–")], ["next", (l) => l.act || (l.norm_after ? "norm" : l.output ? "output" : "–")],
    ["schemes", (l) => l.schemes.join(", ") || "–"], ["std", (l) => l.std, true],
    ["expected", (l) => l.expected_std, true, (v, l) => (l.scheme ? `${l.scheme} ${fmt(v)}` : fmt(v))], ["ratio", (l) => l.ratio, true], ["predicted std", (l) => l.predicted_std, true],
    ["measured std", (l) => l.measured_std, true], ["dead", (l) => l.dead, true, pct], ["saturated", (l) => l.saturated, true, pct],
    ["|dW|/|W|", (l) => l.grad_ratio, true], ["findings", (l) => l.flags.join(" ")],
  ];
  function tableSection(d) {
    const sec = el("section", { id: "layers" }, el("h2", { text: "Per-layer table" }));
    const search = el("input", { type: "search", placeholder: "filter: name, op, activation, scheme, rule…", "aria-label": "filter layers" });
    const onlyFlagged = el("input", { type: "checkbox", id: "only-flagged" });
    const shown = el("span", { class: "meta" });
    sec.appendChild(el("div", { class: "tools" }, search, el("label", {}, onlyFlagged, " only layers with findings"), shown));
    const tbody = el("tbody");
    const rows = d.layers.map((l, i) => {
      const cells = COLUMNS.map(([, get, num, f]) => { const v = get(l, i); return [v, num ? (f || fmt)(v, l) : v]; });
      cells[0][1] = String(i + 1);
      const tr = el("tr", { class: l.flags.length ? "flagged" : null, "data-layer": l.param },
        cells.map(([, text], j) => el("td", { class: COLUMNS[j][2] ? "num" : null, text: String(text) })));
      tr.addEventListener("click", () => reveal("L" + i));
      tbody.appendChild(tr);
      return { tr, l, cells, text: [l.param, l.name, l.op, l.act, l.scheme, l.schemes.join(" "), l.flags.join(" "), l.block].join(" ").toLowerCase() };
    });
    let sortCol = 0, sortDir = 1;
    const ths = COLUMNS.map(([label], j) => el("th", { text: label, on: { click: () => { sortDir = sortCol === j ? -sortDir : 1; sortCol = j; resort(); } } }));
    function resort() {
      const num = COLUMNS[sortCol][2];
      const key = (r) => r.cells[sortCol][0];
      rows.sort((a, b) => {
        let x = key(a), y = key(b);
        if (num) { x = ok(x) ? x : -Infinity; y = ok(y) ? y : -Infinity; return (x - y) * sortDir; }
        return String(x).localeCompare(String(y), "en", { numeric: true }) * sortDir;
      });
      rows.forEach((r) => tbody.appendChild(r.tr));
      ths.forEach((th, j) => th.className = j === sortCol ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "");
    }
    function refilter() {
      const q = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      let k = 0;
      for (const r of rows) {
        const show = q.every((w) => r.text.includes(w)) && (!onlyFlagged.checked || r.l.flags.length > 0);
        r.tr.hidden = !show; k += show;
      }
      shown.textContent = `${k} of ${rows.length} layers`;
    }
    search.addEventListener("input", refilter); onlyFlagged.addEventListener("change", refilter);
    sec.appendChild(el("div", { class: "tablewrap" }, el("table", { class: "layers" }, el("thead", {}, el("tr", {}, ths)), tbody)));
    // A view can be linked: report.html#q=attn&flagged=1&sort=measured%20std&dir=desc
    if (location.hash.includes("=")) {
      const params = new URLSearchParams(location.hash.slice(1));
      search.value = params.get("q") || "";
      onlyFlagged.checked = params.get("flagged") === "1";
      const j = COLUMNS.findIndex(([label]) => label === params.get("sort"));
      if (j >= 0) { sortCol = j; sortDir = params.get("dir") === "desc" ? -1 : 1; }
    }
    resort(); refilter();
    return sec;
  }
  function reveal(id) {
    // A layer's card may sit in a folded block inside a folded run: open every enclosing fold.
    const card = document.getElementById(id);
    if (!card) return false;
    for (let n = card.parentElement; n; n = n.parentElement) if (n.tagName === "DETAILS") n.open = true;
    card.scrollIntoView({ block: "center" });
    return true;
  }
  function renderReport(d) {
    d.layers.forEach((l, i) => { for (const k of [l.param, l.name, l.site]) if (k && !layerIndex.has(k)) layerIndex.set(k, i); });
    document.title = "initaudit: " + d.target + (d.summary.failed ? " (FAIL)" : " (PASS)");
    const app = document.getElementById("app");
    app.replaceChildren(...[header(d),
      el("nav", { class: "toc" }, [["#findings", "Findings"], ["#profile", "Depth profile"], ["#histograms", "Histograms"], ["#gradients", "Gradients"], ["#layers", "Layers"]]
        .map(([href, text]) => el("a", { href, text }))),
      findingsSection(d), notesSection(d), profileSection(d), histogramSection(d), gradientSection(d), tableSection(d),
      el("p", { class: "meta", text: `initaudit ${d.version} · this page is self-contained: it makes no network request.` })]
      .filter(Boolean));
    // a link to a layer (report.html#L57, the findings' layer links) opens the folds around it
    const openHash = () => { if (/^#L\d+$/.test(location.hash)) reveal(location.hash.slice(1)); };
    window.addEventListener("hashchange", openHash);
    openHash();
  }

  // ---- several reports as one figure -----------------------------------------------------
  function renderGrid(d) {
    const app = document.getElementById("app");
    const grid = el("div", { class: "grid", style: `grid-template-columns: 136px repeat(${d.cols.length}, 1fr)` });
    grid.appendChild(el("div", { class: "colhead meta", style: "font-size:11px;font-weight:400", text: "layers 1 → 5" }));
    d.cols.forEach((c) => grid.appendChild(el("div", { class: "colhead", text: c })));
    const cells = new Map(d.cells.map((c) => [c.row + "\u0000" + c.col, c]));
    for (const r of d.rows) {
      grid.appendChild(el("div", { class: "rowhead", text: r }));
      for (const c of d.cols) {
        const cell = cells.get(r + "\u0000" + c);
        if (!cell) { grid.appendChild(el("div", { class: "gcell" })); continue; }
        // One x range per cell for the hidden layers (the activation's output range when
        // bounded): a layer that collapses shows as a spike, one that explodes as a spread.
        const hidden = cell.layers.filter((l) => l.pre && l.post);
        const act0 = hidden.length ? hidden[0].site_act_name : null;
        const domain = BOUNDS[act0] || (hidden.length ? [Math.min(...hidden.map((l) => l.post.lo)), Math.max(...hidden.map((l) => l.post.hi))] : null);
        const hists = cell.layers.map((l, k) => {
          const act = l.site_act_name;
          const h = l.post || l.pre;
          return el("div", { class: "fig", "data-layer": l.param },
            h ? histSvg(h, { cls: "hist-act hist-post", W: 120, H: 100, axis: false, post: true, regions: regionsFor(act, l.pre ? "post" : null),
                             domain: l.pre && l.site_act_name === act0 ? domain : null,
                             zeroBin: l.pre && act in DEAD_POST, label: `layer ${k + 1}: ${l.pre ? "after " + l.site_act : "output"}` })
              : el("div", { class: "empty", text: "–" }),
            el("div", { class: "cap" }, `σ ${fmt(l.measured_std)}`, el("br"),
               ok(l.saturated) ? `${pct(l.saturated)} sat` : ok(l.dead) ? `${pct(l.dead)} dead` : "\u00a0"));
        });
        const s = cell.summary;
        grid.appendChild(el("div", { class: "gcell " + (s.failed ? "fail" : "pass"), "data-cell": r + " × " + c },
          el("div", { class: "hists" }, hists),
          el("div", { class: "verdict" }, cell.findings.length ? cell.findings.map((f) => el("span", { class: "sev " + f.severity, text: `${f.rule} ${f.name}` }))
                                                              : el("span", { class: "sev", style: "background:var(--pass)", text: "clean" }))));
      }
    }
    document.title = d.title;
    app.replaceChildren(el("header", { class: "verdict" }, el("div", {}, el("h1", { text: d.title }), el("div", { class: "meta", text: d.subtitle }))),
      el("section", {}, grid, legend([["var(--bar)", "layer output after its activation (the last layer: its output)"], ["var(--sat-bar)", "in the flat region of sigmoid/tanh (saturated)"],
        ["var(--dead-bar)", "zero: ReLU off"]])),
      el("p", { class: "meta", text: `initaudit ${d.version} · drawn from initaudit's own report data · self-contained, no network request.` }));
  }

  try {
    DATA = JSON.parse(document.getElementById("initaudit-data").textContent);
    if (DATA.kind === "grid") renderGrid(DATA); else renderReport(DATA);
    document.body.dataset.rendered = "1";
  } catch (e) {
    recordError("render failed: " + (e && e.stack ? e.stack : e));
  }
})();
